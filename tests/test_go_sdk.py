"""Pipelines from Beam's Go SDK (github.com/apache/beam/sdks/v2, the same
version as the Python SDK) run on ferrobeam's standalone job server with
``--runner=universal``: LOOPBACK (the Go program serves its own workers)
and PROCESS (ferrobeam runs Beam's own Go boot program, which fetches the
staged worker binary through our provision and artifact services).

The Go word count (examples/go/wordcount) must give exactly the Python
example's output on Beam's DirectRunner. Go builds are cached under the
user's home (Go's module and build caches, and ~/.cache/ferrobeam-go).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from conftest import EXAMPLES_DIR, free_port, read_output_lines, run_python, wait_for_job_service
from test_cli import ferrobeam_command

BEAM_GO_MODULE = "github.com/apache/beam/sdks/v2"
GO = shutil.which("go")
pytestmark = pytest.mark.skipif(GO is None, reason="Go is not installed (needed to build Go SDK pipelines)")

BUILD_DIR = Path.home() / ".cache" / "ferrobeam-go"
WORDCOUNT_SRC = EXAMPLES_DIR / "go" / "wordcount"
INPUT = EXAMPLES_DIR / "data" / "river.txt"


def _go_build(output: Path, package: str) -> Path:
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([GO, "build", "-o", str(output), package], cwd=WORDCOUNT_SRC,
                          capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, "go build %s failed:\n%s" % (package, proc.stderr[-5000:])
    return output


@pytest.fixture(scope="module")
def go_wordcount() -> Path:
    return _go_build(BUILD_DIR / "wordcount", ".")


@pytest.fixture(scope="module")
def go_boot() -> Path:
    """Beam's Go container boot program, from the module the pipeline uses."""
    return _go_build(BUILD_DIR / "boot", BEAM_GO_MODULE + "/go/container")


@pytest.fixture(scope="module")
def job_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("go-job-server") / "job-server.log"
    with open(log_path, "w+", encoding="utf-8") as log:
        proc = subprocess.Popen(ferrobeam_command() + ["job-server", "--port", str(port), "--no_dashboard"],
                                stdout=log, stderr=subprocess.STDOUT)
        endpoint = "localhost:%d" % port
        try:
            wait_for_job_service(endpoint, timeout=60, proc=proc)
            yield endpoint
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def python_counts(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("py-wordcount") / "counts"
    run_python([str(EXAMPLES_DIR / "wordcount.py"), "--runner=DirectRunner", "--input", str(INPUT),
                "--output", str(out)])
    return read_output_lines(out)


def _run_go(binary: Path, endpoint: str, output: Path, *environment: str) -> None:
    # In the output's directory: Beam's Go launcher may write files where it runs.
    proc = subprocess.run([str(binary), "--runner=universal", "--endpoint=" + endpoint, *environment,
                           "--input", str(INPUT), "--output", str(output)],
                          capture_output=True, text=True, timeout=300, check=False, cwd=output.parent)
    # Beam's Go runner waits for the job's end and exits non-zero when it
    # FAILED; the output is compared by the caller.
    assert proc.returncode == 0, "the Go pipeline failed:\n%s" % (proc.stdout[-3000:] + proc.stderr[-5000:])


def test_go_wordcount_loopback(go_wordcount: Path, job_server: str, python_counts: list[str],
                               tmp_path: Path) -> None:
    out = tmp_path / "counts.txt"
    _run_go(go_wordcount, job_server, out, "--environment_type=LOOPBACK")
    assert read_output_lines(out) == python_counts
    assert len(python_counts) > 300


def test_go_wordcount_process(go_wordcount: Path, go_boot: Path, job_server: str, python_counts: list[str],
                              tmp_path: Path) -> None:
    out = tmp_path / "counts.txt"
    # --worker_binary: stage this very (linux/amd64) binary for the workers,
    # rather than have the SDK cross-compile the program's source again.
    _run_go(go_wordcount, job_server, out, "--environment_type=PROCESS",
            "--environment_config=" + json.dumps({"command": str(go_boot)}),
            "--worker_binary=" + str(go_wordcount))
    assert read_output_lines(out) == python_counts
    # Beam's Go boot program writes pipeline_options.json where it runs: in
    # the worker's directory, not the job server's working directory.
    assert not (Path.cwd() / "pipeline_options.json").exists()


def test_missing_go_boot_program_is_refused_at_prepare(go_wordcount: Path, job_server: str,
                                                        tmp_path: Path) -> None:
    missing = tmp_path / "boot"
    proc = subprocess.run([str(go_wordcount), "--runner=universal", "--endpoint=" + job_server,
                           "--environment_type=PROCESS",
                           "--environment_config=" + json.dumps({"command": str(missing)}),
                           "--worker_binary=" + str(go_wordcount),
                           "--input", str(INPUT), "--output", str(tmp_path / "counts.txt")],
                          capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert proc.returncode != 0
    said = proc.stdout + proc.stderr
    # Refused before staging and running, with the command that builds it.
    assert "beam:env:process:v1" in said and "does not exist" in said, said[-3000:]
    assert "go build -o %s github.com/apache/beam/sdks/v2/go/container" % missing in said, said[-3000:]
    assert "Submitted job" not in said
