"""Stopping running jobs: ``result.drain()``, ``result.cancel()`` and
:func:`ferrobeam.drain_job` / :func:`ferrobeam.cancel_job`.

Jobs are kept running by a DoFn that sleeps in small steps (it records the
process it runs in, so the test can check that cancelling stopped that
process) until a stop file appears or a generous limit passes, so a test that
goes wrong still ends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.utils.timestamp import Timestamp

import ferrobeam
from crash_harness import is_alive
from ferrobeam import FerrobeamRunner


class SleepUntilStopped(beam.DoFn):
    """Writes its worker's pid to ``<marker_dir>/<pid>``, then sleeps until
    ``<marker_dir>/stop`` exists or ``limit`` seconds have passed."""

    def __init__(self, marker_dir: str, limit: float = 120.0) -> None:
        self._marker_dir = marker_dir
        self._limit = limit

    def process(self, element: int) -> Iterator[int]:
        Path(self._marker_dir, str(os.getpid())).touch()
        deadline = time.monotonic() + self._limit
        while time.monotonic() < deadline and not Path(self._marker_dir, "stop").exists():
            time.sleep(0.05)
        yield element


def sleeping_pipeline(p: beam.Pipeline, marker_dir: Path) -> None:
    _ = p | beam.Create([1]) | beam.ParDo(SleepUntilStopped(str(marker_dir)))


def worker_pids(marker_dir: Path) -> set[int]:
    return {int(f.name) for f in marker_dir.iterdir() if f.name.isdigit()}


def wait_for_workers(marker_dir: Path, timeout: float = 60.0) -> set[int]:
    """The pids of the processes running the sleeping DoFn, once there are any."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = worker_pids(marker_dir)
        if pids:
            return pids
        time.sleep(0.05)
    raise AssertionError("the sleeping DoFn did not start within %.0fs" % timeout)


def options(*extra: str) -> PipelineOptions:
    # All user code in worker processes, none in this one, so cancelling has
    # processes to stop and this process never runs the sleeping DoFn.
    return PipelineOptions(["--ferrobeam_no_inprocess_worker", *extra])


def test_cancel_running_streaming_job_stops_its_workers(tmp_path: Path) -> None:
    p = beam.Pipeline(runner=FerrobeamRunner(), options=options("--streaming"))
    sleeping_pipeline(p, tmp_path)
    result = p.run()
    try:
        pids = wait_for_workers(tmp_path)
        assert os.getpid() not in pids
        assert result.state == PipelineState.RUNNING
        started = time.monotonic()
        result.cancel()
        with pytest.raises(RuntimeError, match="CANCELLED"):
            result.wait_until_finish()
        took = time.monotonic() - started
        assert result.state == PipelineState.CANCELLED
        assert took < 10, "cancelling took %.1fs" % took
        deadline = time.monotonic() + 10
        while any(is_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if is_alive(pid)], "the job's SDK workers outlived it"
    finally:
        (tmp_path / "stop").touch()


def test_drain_of_batch_job_lets_it_finish(tmp_path: Path) -> None:
    p = beam.Pipeline(runner=FerrobeamRunner(), options=options())
    sleeping_pipeline(p, tmp_path)
    result = p.run()
    assert isinstance(result, ferrobeam.FerrobeamPipelineResult)
    try:
        wait_for_workers(tmp_path)
        assert result.drain() == PipelineState.RUNNING
        assert result.state == PipelineState.RUNNING
    finally:
        (tmp_path / "stop").touch()
    assert result.wait_until_finish() == PipelineState.DONE


def test_drain_job_and_cancel_job_by_id(tmp_path: Path) -> None:
    p = beam.Pipeline(runner=FerrobeamRunner(), options=options("--streaming"))
    sleeping_pipeline(p, tmp_path)
    result = p.run()
    endpoint = ferrobeam.runner.embedded_job_endpoint(options())
    try:
        wait_for_workers(tmp_path)
        # The sleeping DoFn does not let the job finish, whatever the engine
        # does with the drain, so the job stays DRAINING until cancelled.
        assert ferrobeam.drain_job(endpoint, result.job_id()) == "DRAINING"
        assert result.state == PipelineState.DRAINING
        assert ferrobeam.cancel_job(endpoint, result.job_id()) in ("CANCELLING", "CANCELLED")
        with pytest.raises(RuntimeError, match="CANCELLED"):
            result.wait_until_finish()
        # Both leave a finished job alone.
        assert ferrobeam.drain_job(endpoint, result.job_id()) == "CANCELLED"
        assert ferrobeam.cancel_job(endpoint, result.job_id()) == "CANCELLED"
    finally:
        (tmp_path / "stop").touch()


def test_drain_job_of_unknown_job_is_not_found() -> None:
    endpoint = ferrobeam.runner.embedded_job_endpoint(options())
    with pytest.raises(grpc.RpcError) as raised:
        ferrobeam.drain_job(endpoint, "no-such-job")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-job" in raised.value.details()


def _touch_and_key(_: object, path: str) -> tuple[str, int]:
    Path(path).touch()
    return ("k", 1)


def test_drain_unbounded_streaming_job_ends_drained(tmp_path: Path) -> None:
    # An hour-long PeriodicImpulse counted in day-long windows: only a drain
    # (source truncated, watermark to the end) can fire the window early.
    p = beam.Pipeline(runner=FerrobeamRunner(), options=options("--streaming"))
    now = time.time()
    ticks = (p
             | PeriodicImpulse(start_timestamp=Timestamp.of(now), stop_timestamp=Timestamp.of(now + 3600),
                               fire_interval=0.5)
             | beam.Map(_touch_and_key, str(tmp_path / "ticks")))  # yapf: disable
    _ = (ticks
         | beam.WindowInto(window.FixedWindows(86400))
         | beam.CombinePerKey(sum)
         | beam.Map(lambda kv: Path(str(tmp_path), "count").write_text(str(kv[1]))))  # yapf: disable
    result = p.run()
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ticks").exists():
            assert time.monotonic() < deadline, "PeriodicImpulse never fired"
            assert not PipelineState.is_terminal(result.state), result.state
            time.sleep(0.1)
        assert result.drain() in (PipelineState.DRAINING, PipelineState.DRAINED)
        assert result.wait_until_finish(duration=30_000) == PipelineState.DRAINED
        # The pending window fired on the way out, with every tick so far.
        assert int((tmp_path / "count").read_text()) >= 1
    finally:
        if not PipelineState.is_terminal(result.state):
            result.cancel()
