"""Checkpoint benchmark: a streaming job with about 1 GB of RocksDB state.

``--keys`` keys (100k) each keep a ``--value_bytes`` value (10 KB) in state,
so the state is about 1 GB once every key has been seen. The same job runs
twice in this one invocation: with a checkpoint every ``--interval`` seconds
(10) and without checkpoints. Reported:

* how long processing stood still for each checkpoint (the manifests'
  ``pause_ms``; target < 100 ms) and each checkpoint's total time;
* the time to restore from the last checkpoint (the engine's own figure,
  from its "restored from" message);
* throughput with checkpoints divided by throughput without (target ≥ 0.9).

    python examples/benchmarks/checkpoints.py               # full size (~1 GB)
    python examples/benchmarks/checkpoints.py --keys 10000  # quick run

Each element rewrites its key's value, so after the first ``--keys``
elements the state stays the same size while every checkpoint still has
fresh data to flush. Ratios, not absolute times, are what compare across
machines.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.io.restriction_trackers import OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

import ferrobeam.io


class _Range(RestrictionProvider):
    def initial_restriction(self, element: tuple[int, int]) -> OffsetRange:
        return OffsetRange(0, element[0])

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element: Any, restriction: OffsetRange) -> int:
        return restriction.size()


class Elements(beam.DoFn):
    """For ``(n, keys)``: elements ``(i % keys, i)`` for i in [0, n), 2,000 a call."""

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: tuple[int, int],
        tracker: Any = beam.DoFn.RestrictionParam(_Range()),
        estimator: Any = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ) -> Iterator[TimestampedValue]:
        _, keys = element
        position = tracker.current_restriction().start
        stop = min(tracker.current_restriction().stop, position + 2000)
        while position < stop and tracker.try_claim(position):
            yield TimestampedValue((position % keys, position), Timestamp(seconds=position // 1000))
            position += 1
        estimator.set_watermark(Timestamp(seconds=position // 1000))
        if position < tracker.current_restriction().stop:
            tracker.defer_remainder()


class Overwrite(beam.DoFn):
    """Rewrites the key's value; every 10,000th element reports progress."""

    VALUE = ReadModifyWriteStateSpec("value", BytesCoder())

    def __init__(self, size: int) -> None:
        self._size = size

    def process(self, element: tuple[int, int], value: Any = beam.DoFn.StateParam(VALUE)) -> Iterator[str]:
        key, i = element
        # Random bytes: RocksDB compresses with lz4, and the state should
        # be as large on disk as it says.
        value.write(os.urandom(self._size))
        if i % 10_000 == 0:
            yield str(i)


def run(options: list[str], elements: int, keys: int, size: int, output: str) -> float:
    """Runs the job; returns its wall time in seconds."""
    p = beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", "--streaming", *options]))
    _ = (p
         | beam.Create([(elements, keys)])
         | "Elements" >> beam.ParDo(Elements()).with_output_types(tuple[int, int])
         | "Overwrite" >> beam.ParDo(Overwrite(size)).with_output_types(str)
         | "Write" >> ferrobeam.io.WriteLines(output))  # yapf: disable
    started = time.monotonic()
    p.run().wait_until_finish()
    return time.monotonic() - started


class _Messages(logging.Handler):
    """Collects the job messages Beam's portable runner logs."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(record.getMessage())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--value_bytes", type=int, default=10_000)
    parser.add_argument("--elements", type=int, default=0, help="default: 4 x keys")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between checkpoints")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    elements = args.elements or 4 * args.keys
    work = args.workdir or tempfile.mkdtemp(prefix="ferrobeam-checkpoint-bench-")
    checkpoints = os.path.join(work, "checkpoints")
    shutil.rmtree(checkpoints, ignore_errors=True)
    print("checkpoint benchmark: %d keys x %d bytes = %.0f MiB of state, %d elements, checkpoint every %.0f s" % (
        args.keys, args.value_bytes, args.keys * args.value_bytes / 2**20, elements, args.interval))

    without = run(["--state_backend=rocksdb"], elements, args.keys, args.value_bytes, os.path.join(work, "out0"))
    with_ = run(["--checkpoint_dir=%s" % checkpoints, "--checkpoint_interval=%s" % args.interval,
                 "--checkpoints_retained=1000"], elements, args.keys, args.value_bytes, os.path.join(work, "out1"))
    manifests = [json.load(open(m, encoding="utf-8")) for m in sorted(glob.glob(os.path.join(checkpoints, "*",
                                                                                               "MANIFEST.json")))]
    pauses = [m["pause_ms"] for m in manifests]
    durations = [m["duration_ms"] for m in manifests]
    largest = max((m["bytes"] for m in manifests), default=0)

    # Restore: the last checkpoint is the one taken at the end, so the
    # restored job has nothing left to do; the engine reports how long
    # opening the state took.
    handler = _Messages()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    restore_wall = run(["--restore_from=%s" % checkpoints], elements, args.keys, args.value_bytes,
                       os.path.join(work, "out1"))
    logging.getLogger().removeHandler(handler)
    restored = [float(m.group(1)) for t in handler.texts for m in [re.search(r"restored from .* in (\d+) ms", t)] if m]

    def stats(values: list[int]) -> str:
        if not values:
            return "n/a"
        return "median %.0f ms, max %.0f ms (%d checkpoints)" % (statistics.median(values), max(values), len(values))

    print("without checkpoints: %.1f s (%.0f elements/s)" % (without, elements / without))
    print("with checkpoints:    %.1f s (%.0f elements/s)" % (with_, elements / with_))
    print("throughput ratio with/without checkpoints: %.2f (target >= 0.9)" % (without / with_))
    print("pause per checkpoint: %s (target < 100 ms)" % stats(pauses))
    print("checkpoint total time: %s; largest checkpoint %.0f MiB" % (stats(durations), largest / 2**20))
    print("restore: %s ms opening the state (job wall time %.1f s)" % (
        restored[0] if restored else "n/a", restore_wall))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import checkpoints as _self  # pylint: disable=import-self
    sys.exit(_self.main())
