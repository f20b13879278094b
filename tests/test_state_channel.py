"""Which transport user state takes: ferrobeam's state socket or gRPC.

Workers ferrobeam starts itself (worker processes, and the worker inside
the submitting process) read and write user state through the job server's
Unix-domain state socket (``ferrobeam/_state_channel.py``); every other
worker keeps Beam's gRPC State API. These tests look inside the running
DoFn's state object to see which handler served it (white-box on purpose:
both transports give the same results, which ``test_state.py`` checks), and
check the counts, so a transport that loses or repeats a write fails here.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import combiners
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.transforms.userstate import CombiningValueStateSpec

from conftest import read_output_lines

KEYS = 40
PER_KEY = 25


class _CountAndReport(beam.DoFn):
    """Counts each key; when the key is complete, reports its count, the
    bag's contents and which state handler (and process) served it."""

    COUNT = CombiningValueStateSpec("count", VarIntCoder(), combiners.CountCombineFn())
    SEEN = BagStateSpec("seen", VarIntCoder())

    def process(
        self,
        kv: tuple[int, int],
        count: Any = beam.DoFn.StateParam(COUNT),
        seen: Any = beam.DoFn.StateParam(SEEN),
    ) -> Iterator[str]:
        key, value = kv
        count.add(1)
        seen.add(value)
        n = count.read()
        if n == PER_KEY:
            # CombiningValueRuntimeState -> bag state -> the SDK's caching
            # handler -> the transport underneath it.
            handler = count._underlying_bag_state._state_handler._underlying  # pylint: disable=protected-access
            yield json.dumps({
                "key": key,
                "count": n,
                "seen": sorted(seen.read()),
                "handler": type(handler).__name__,
                "pid": os.getpid(),
            })


def _run(options: list[str], out: Path) -> list[dict[str, Any]]:
    elements = [(k, k * 1000 + i) for i in range(PER_KEY) for k in range(KEYS)]
    with beam.Pipeline(options=PipelineOptions(options)) as p:
        _ = (
            p
            | beam.Create(elements, reshuffle=False)
            | beam.Reshuffle()
            | beam.ParDo(_CountAndReport())
            | beam.io.WriteToText(str(out / "report"))
        )
    return [json.loads(line) for line in read_output_lines(out / "report")]


def _check_counts(reports: list[dict[str, Any]]) -> None:
    assert sorted(r["key"] for r in reports) == list(range(KEYS))
    for r in reports:
        assert r["count"] == PER_KEY
        assert r["seen"] == [r["key"] * 1000 + i for i in range(PER_KEY)]


def test_workers_ferrobeam_starts_use_the_state_socket(tmp_path: Path) -> None:
    reports = _run(["--runner=ferrobeam.FerrobeamRunner", "--ferrobeam_workers=2"], tmp_path)
    _check_counts(reports)
    handlers = collections.Counter(r["handler"] for r in reports)
    assert handlers == {"SocketStateHandler": KEYS}, handlers


def test_other_workers_keep_grpc_state(job_endpoint: str, tmp_path: Path) -> None:
    # LOOPBACK workers live in this process, which registered the embedded
    # server's socket above; the session's job server is another server, so
    # its URL has no socket and its state goes over gRPC.
    reports = _run(
        ["--runner=PortableRunner", "--job_endpoint=" + job_endpoint, "--environment_type=LOOPBACK"],
        tmp_path,
    )
    _check_counts(reports)
    handlers = collections.Counter(r["handler"] for r in reports)
    assert handlers == {"GrpcStateHandler": KEYS}, handlers
