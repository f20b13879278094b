"""examples/wordcount.py gives the DirectRunner's output on ferrobeam."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest

from conftest import EXAMPLES_DIR, read_output_lines, run_python

WORDCOUNT = str(EXAMPLES_DIR / "wordcount.py")
SAMPLE = EXAMPLES_DIR / "data" / "river.txt"


def expected_counts(path: Path) -> list[str]:
    """Counts words in plain Python, the way the example defines words."""
    counts = collections.Counter(
        w.lower() for w in re.findall(r"[\w']+", path.read_text(encoding="utf-8")))
    return sorted("%s: %d" % kv for kv in counts.items())


@pytest.fixture(scope="module")
def big_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample repeated until it is big enough to be split (several MB)."""
    text = SAMPLE.read_text(encoding="utf-8")
    path = tmp_path_factory.mktemp("wc-input") / "big.txt"
    path.write_text(text * 1000, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def direct_output(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The DirectRunner's word counts for the bundled sample."""
    out = tmp_path_factory.mktemp("wc-direct") / "counts"
    run_python([WORDCOUNT, "--runner=DirectRunner", "--input", str(SAMPLE), "--output", str(out)])
    lines = read_output_lines(out)
    assert lines == expected_counts(SAMPLE)
    return lines


def test_sample_mentions_the_river_most(direct_output: list[str]) -> None:
    # The sample text claims this about itself; it keeps the fixture honest.
    counts = dict(line.split(": ") for line in direct_output)
    assert int(counts["river"]) > int(counts["miller"]) > int(counts["ferryman"]) > int(counts["teacher"])


def test_default_runner_is_ferrobeam(direct_output: list[str], out_dir: Path) -> None:
    """No --runner: the example runs on ferrobeam.FerrobeamRunner."""
    out = out_dir / "counts"
    proc = run_python([WORDCOUNT, "--input", str(SAMPLE), "--output", str(out)])
    assert read_output_lines(out) == direct_output
    # Beam logs the job state transitions of portable jobs; the DirectRunner
    # would not, so this shows the pipeline really went through a job server.
    assert "Job state changed to DONE" in proc.stderr, proc.stderr[-3000:]


def test_ferrobeam_runner_explicit(direct_output: list[str], out_dir: Path) -> None:
    out = out_dir / "counts"
    run_python([WORDCOUNT, "--runner=ferrobeam.FerrobeamRunner", "--input", str(SAMPLE),
                "--output", str(out), "--ferrobeam_workers=2"])
    assert read_output_lines(out) == direct_output


def test_portable_runner_loopback(direct_output: list[str], out_dir: Path, job_endpoint: str) -> None:
    out = out_dir / "counts"
    run_python([WORDCOUNT, "--runner=PortableRunner", "--job_endpoint=" + job_endpoint,
                "--environment_type=LOOPBACK", "--input", str(SAMPLE), "--output", str(out)])
    assert read_output_lines(out) == direct_output


def test_portable_runner_default_docker_environment(direct_output: list[str], out_dir: Path,
                                                    job_endpoint: str) -> None:
    """Beam's client asks for DOCKER by default; ferrobeam runs it locally."""
    out = out_dir / "counts"
    run_python([WORDCOUNT, "--runner=PortableRunner", "--job_endpoint=" + job_endpoint,
                "--input", str(SAMPLE), "--output", str(out)])
    assert read_output_lines(out) == direct_output


def test_large_input_split_across_workers(big_input: Path, out_dir: Path,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """A multi-megabyte input (several initial splits) counts the same."""
    direct = tmp_path_factory.mktemp("wc-big-direct") / "counts"
    run_python([WORDCOUNT, "--runner=DirectRunner", "--input", str(big_input), "--output", str(direct)])
    ours = out_dir / "counts"
    run_python([WORDCOUNT, "--input", str(big_input), "--output", str(ours), "--ferrobeam_workers=2"])
    expected = expected_counts(big_input)
    assert read_output_lines(direct) == expected
    assert read_output_lines(ours) == expected
