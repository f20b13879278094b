"""Savepoints, stateful upgrade and rescaling (issue 5).

The pipeline is :mod:`recovery_pipeline`'s (a rate-limited source, per-key
running totals in state with a final event-time timer, ``WriteLines``). A
run is stopped with a savepoint part-way, and a later run (changed, or with
another number of workers) restores from it; the combined output must be
exactly what one uninterrupted run writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

import ferrobeam.io
import recovery_pipeline

EVENTS = 1200
KEYS = 6
RATE = 400.0


class TagV2(beam.DoFn):
    """The transform v2 adds after the running totals: marks its lines."""

    def process(self, line: str) -> Iterator[str]:
        yield "v2|" + line


def build(p: beam.Pipeline, output: str, rate: float, version: int) -> None:
    """v1 is recovery_pipeline's pipeline; v2 changes the source (another
    rate) and adds a transform after the stateful one."""
    lines = (p
             | "Start" >> beam.Create([EVENTS])
             | "Events" >> beam.ParDo(recovery_pipeline.RateLimitedEvents(KEYS, rate)).with_output_types(
                 tuple[str, int])
             | "RunningTotals" >> beam.ParDo(recovery_pipeline.RunningTotals(EVENTS)).with_output_types(str))
    if version == 2:
        lines = lines | "TagV2" >> beam.ParDo(TagV2()).with_output_types(str)
    _ = lines | "Write" >> ferrobeam.io.WriteLines(output)


def options(*extra: str) -> PipelineOptions:
    return PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", "--streaming", *extra])


def wait_for_lines(output: Path, at_least: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = len(ferrobeam.io.read_lines(str(output))) if output.exists() else 0
        if n >= at_least:
            return n
        time.sleep(0.05)
    raise AssertionError("fewer than %d lines in %s after %.0f s" % (at_least, output, timeout))


def run_until_savepoint(p: beam.Pipeline, output: Path, savepoint: Path, at_least: int) -> dict[str, Any]:
    """Runs ``p`` until ``at_least`` lines are out, then stops it with a
    savepoint; returns the savepoint's manifest."""
    result = p.run()
    try:
        wait_for_lines(output, at_least)
        written = result.savepoint(str(savepoint), stop=True)
    except BaseException:
        result.cancel()
        _wait(result)
        raise
    state = _wait(result)
    assert written == str(savepoint)
    assert state == PipelineState.CANCELLED, state
    return json.loads((savepoint / "MANIFEST.json").read_text())


def _wait(result: Any) -> str:
    try:
        return result.wait_until_finish()
    except Exception:  # CANCELLED raises, as with every Beam runner
        return str(result.state)


def untagged(lines: list[str]) -> list[str]:
    return [line[3:] if line.startswith("v2|") else line for line in lines]


def test_upgrade_from_a_savepoint_keeps_the_state(tmp_path: Path) -> None:
    output, savepoint = tmp_path / "out", tmp_path / "savepoint"
    with_v1 = beam.Pipeline(options=options("--job_name=upgrade-v1"))
    build(with_v1, str(output), RATE, version=1)
    manifest = run_until_savepoint(with_v1, output, savepoint, at_least=200)
    assert manifest["kind"] == "savepoint"
    assert "totals" in manifest["transforms"]["RunningTotals"]["user_state"]
    before = ferrobeam.io.read_lines(str(output))
    assert 200 <= len(before) < EVENTS, len(before)

    # v2: a faster source (changed) and a tagging step (added) after the
    # stateful transform, fused into its stage.
    with beam.Pipeline(options=options("--job_name=upgrade-v2", "--restore_from=%s" % savepoint)) as v2:
        build(v2, str(output), RATE * 4, version=2)
    lines = ferrobeam.io.read_lines(str(output))
    tagged = [l for l in lines if l.startswith("v2|")]
    # v2 continued where v1 stopped: its counts go on from v1's, and with
    # v1's lines they are exactly one run's output.
    assert len(tagged) == len(lines) - len(before) > 0
    problems = recovery_pipeline.check_output(untagged(lines), EVENTS, KEYS)
    assert not problems, "\n".join(problems)
    # The savepoint is intact: a second restore from it works as well.
    assert (savepoint / "MANIFEST.json").exists()


def test_rescale_two_workers_to_one_and_back(tmp_path: Path) -> None:
    output = tmp_path / "out"
    workers = ["--ferrobeam_no_inprocess_worker"]
    first = beam.Pipeline(options=options("--ferrobeam_workers=2", *workers))
    build(first, str(output), RATE, version=1)
    run_until_savepoint(first, output, tmp_path / "sp1", at_least=150)
    second = beam.Pipeline(options=options("--ferrobeam_workers=1", "--restore_from=%s" % (tmp_path / "sp1"), *workers))
    build(second, str(output), RATE, version=1)
    n = len(ferrobeam.io.read_lines(str(output)))
    run_until_savepoint(second, output, tmp_path / "sp2", at_least=n + 150)
    with beam.Pipeline(options=options("--ferrobeam_workers=2", "--restore_from=%s" % (tmp_path / "sp2"),
                                       *workers)) as third:
        build(third, str(output), RATE * 4, version=1)
    problems = recovery_pipeline.check_output(ferrobeam.io.read_lines(str(output)), EVENTS, KEYS)
    assert not problems, "\n".join(problems)


def test_state_with_no_place_in_the_new_pipeline_is_refused(tmp_path: Path) -> None:
    output, savepoint = tmp_path / "out", tmp_path / "savepoint"
    v1 = beam.Pipeline(options=options())
    build(v1, str(output), RATE, version=1)
    run_until_savepoint(v1, output, savepoint, at_least=100)

    def renamed(p: beam.Pipeline) -> None:
        _ = (p
             | "Start" >> beam.Create([EVENTS])
             | "Events" >> beam.ParDo(recovery_pipeline.RateLimitedEvents(KEYS, RATE)).with_output_types(
                 tuple[str, int])
             | "Totals" >> beam.ParDo(recovery_pipeline.RunningTotals(EVENTS)).with_output_types(str)
             | "Write" >> ferrobeam.io.WriteLines(str(output)))

    p = beam.Pipeline(options=options("--restore_from=%s" % savepoint))
    renamed(p)
    with pytest.raises(Exception) as refused:
        p.run().wait_until_finish()
    message = str(refused.value)
    assert "'RunningTotals' state 'totals'" in message, message
    assert "--allow_non_restored_state" in message, message

    # Allowed: the job runs, its renamed transform starting from empty state.
    out2 = tmp_path / "out2"
    p = beam.Pipeline(options=options("--restore_from=%s" % savepoint, "--allow_non_restored_state"))
    _ = (p
         | "Start" >> beam.Create([EVENTS])
         | "Events" >> beam.ParDo(recovery_pipeline.RateLimitedEvents(KEYS, RATE * 4)).with_output_types(
             tuple[str, int])
         | "Totals" >> beam.ParDo(recovery_pipeline.RunningTotals(EVENTS)).with_output_types(str)
         | "Write" >> ferrobeam.io.WriteLines(str(out2)))
    assert p.run().wait_until_finish() == PipelineState.DONE


def test_savepoint_cli_and_inspect(tmp_path: Path) -> None:
    output, savepoint = tmp_path / "out", tmp_path / "sp"
    p = beam.Pipeline(options=options("--job_name=inspected"))
    build(p, str(output), RATE, version=1)
    result = p.run()
    try:
        wait_for_lines(output, 100)
        endpoint = result._ferrobeam_job_endpoint
        cli = [sys.executable, "-m", "ferrobeam.cli"]
        taken = subprocess.run(cli + ["savepoint", result.job_id(), str(savepoint), "--job_endpoint", endpoint],
                               capture_output=True, text=True, timeout=60)
        assert taken.returncode == 0, taken.stderr
        assert taken.stdout.strip() == str(savepoint)
        # Not into a directory that has something in it.
        again = subprocess.run(cli + ["savepoint", result.job_id(), str(savepoint), "--job_endpoint", endpoint],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "not empty" in again.stderr, again.stderr
        unknown = subprocess.run(cli + ["savepoint", "no-such-job", str(tmp_path / "x"), "--job_endpoint", endpoint],
                                 capture_output=True, text=True, timeout=60)
        assert unknown.returncode == 3, unknown.stderr
    finally:
        result.cancel()
        _wait(result)
    shown = subprocess.run([sys.executable, "-m", "ferrobeam.cli", "checkpoint", "inspect", str(savepoint)],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "savepoint 0 of job 'inspected'" in shown.stdout, shown.stdout
    assert "RunningTotals / totals: %d cells" % KEYS in shown.stdout, shown.stdout
    missing = subprocess.run([sys.executable, "-m", "ferrobeam.cli", "checkpoint", "inspect", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no checkpoint at" in missing.stderr, missing.stderr


def test_job_server_checkpoint_flags_apply_to_jobs_that_do_not_set_their_own(tmp_path: Path) -> None:
    from conftest import free_port, wait_for_job_service
    from test_cli import ferrobeam_command

    port, root, output = free_port(), tmp_path / "checkpoints", tmp_path / "out"
    log = open(tmp_path / "server.log", "w+", encoding="utf-8")  # pylint: disable=consider-using-with
    server = subprocess.Popen(ferrobeam_command() + ["job-server", "--port", str(port), "--checkpoint_dir", str(root),
                                                     "--checkpoint_interval", "0.3"],
                              stdout=log, stderr=subprocess.STDOUT)
    endpoint = "localhost:%d" % port
    try:
        wait_for_job_service(endpoint, timeout=60, proc=server)

        def run() -> str:
            p = beam.Pipeline(options=options("--job_endpoint=" + endpoint, "--job_name=nightly"))
            build(p, str(output), RATE * 4, version=1)
            return p.run().wait_until_finish()

        assert run() == PipelineState.DONE
        assert sorted((root / "nightly").glob("chk-*/MANIFEST.json")), list(root.rglob("*"))[:20]
        lines = ferrobeam.io.read_lines(str(output))
        problems = recovery_pipeline.check_output(lines, EVENTS, KEYS)
        assert not problems, "\n".join(problems)
        # The same job name again restores the finished job: nothing is
        # written twice.
        assert run() == PipelineState.DONE
        assert sorted(ferrobeam.io.read_lines(str(output))) == sorted(lines)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
