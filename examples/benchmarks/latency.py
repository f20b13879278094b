"""Streaming latency: generated events -> a Python Map -> a recording sink.

A ``PeriodicImpulse`` generates events at a steady rate (5,000 per second by
default), each stamped with the time it was due; a ``Map`` turns it into a
small record; the sink notes, for every event, how long after its due time it
arrived. Runs with ``--streaming`` for ``--seconds`` and prints p50, p90,
p99 and max of event-to-sink latency, after a warm-up that is not counted::

    python examples/benchmarks/latency.py                   # 5k ev/s, 20 s
    python examples/benchmarks/latency.py --rate 10000 --seconds 60
    python examples/benchmarks/latency.py --reshuffle       # + a runner hop
    python examples/benchmarks/latency.py --runners ferrobeam,direct  # and the ratio

``--reshuffle`` puts a ``Reshuffle`` between the Map and the sink, so every
event also crosses the runner between two SDK stages. The target for the
plain pipeline is p99 < 10 ms on a 2-core machine. Results can also be
written as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from typing import Any, Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.utils.timestamp import Timestamp

RUNNERS = {
    "ferrobeam": "ferrobeam.FerrobeamRunner",
    "direct": "DirectRunner",
    "prism": "PrismRunner",
}


class RecordLatency(beam.DoFn):
    """Collects (due time, arrival time) per event; writes them per bundle."""

    def __init__(self, out_dir: str) -> None:
        self._out_dir = out_dir
        self._rows: list[tuple[float, float]] = []

    def process(self, record: tuple[float, int]) -> Iterator[None]:
        self._rows.append((record[0], time.time()))
        return iter(())

    def finish_bundle(self) -> None:
        if not self._rows:
            return
        path = os.path.join(self._out_dir, "latency-%d.jsonl" % os.getpid())
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(self._rows) + "\n")
        self._rows = []


def build(p: beam.Pipeline, start: float, seconds: float, rate: float, reshuffle: bool, out_dir: str) -> None:
    events = (p
              | PeriodicImpulse(
                  start_timestamp=Timestamp(start),
                  stop_timestamp=Timestamp(start + seconds),
                  fire_interval=1.0 / rate)
              | "Enrich" >> beam.Map(lambda t: (float(t), int(float(t) * rate) % 997)))  # yapf: disable
    if reshuffle:
        events = events | beam.Reshuffle()
    _ = events | beam.ParDo(RecordLatency(out_dir))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def run(runner: str, rate: float, seconds: float, warmup: float, reshuffle: bool, lead: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ferrobeam-latency-") as out_dir:
        # The generator starts `lead` seconds ahead, so job start-up is not
        # counted as latency; the first `warmup` seconds are dropped too.
        start = time.time() + lead
        options = PipelineOptions(["--runner=" + RUNNERS[runner], "--streaming"])
        t0 = time.time()
        with beam.Pipeline(options=options) as p:
            build(p, start, warmup + seconds, rate, reshuffle, out_dir)
        wall = time.time() - t0
        rows: list[tuple[float, float]] = []
        for name in os.listdir(out_dir):
            with open(os.path.join(out_dir, name), encoding="utf-8") as f:
                for line in f:
                    rows.extend(tuple(r) for r in json.loads(line))
    expected = int(round((warmup + seconds) * rate))
    counted = sorted((arrived - due) * 1000.0 for due, arrived in rows if due >= start + warmup)
    return {
        "runner": runner,
        "rate_per_s": rate,
        "seconds": seconds,
        "reshuffle": reshuffle,
        "events": len(rows),
        "expected_events": expected,
        "counted": len(counted),
        "p50_ms": percentile(counted, 0.50),
        "p90_ms": percentile(counted, 0.90),
        "p99_ms": percentile(counted, 0.99),
        "max_ms": counted[-1] if counted else math.nan,
        "mean_ms": statistics.fmean(counted) if counted else math.nan,
        "job_wall_s": wall,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runners", default="ferrobeam",
                        help="comma-separated, run one after the other: %s (default ferrobeam)" % ",".join(RUNNERS))
    parser.add_argument("--rate", type=float, default=5000.0, help="events per second (default 5000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds not counted (default 3)")
    parser.add_argument("--lead", type=float, default=5.0,
                        help="seconds between submission and the first event, for job start-up (default 5)")
    parser.add_argument("--reshuffle", action="store_true", help="add a Reshuffle before the sink")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    unknown = [r for r in runners if r not in RUNNERS]
    if unknown:
        parser.error("unknown runner(s): %s" % ", ".join(unknown))
    results = []
    status = 0
    for runner in runners:
        result = run(runner, args.rate, args.seconds, args.warmup, args.reshuffle, args.lead)
        results.append(result)
        print("runner=%(runner)s rate=%(rate_per_s).0f/s reshuffle=%(reshuffle)s events=%(events)d/%(expected_events)d "
              "counted=%(counted)d" % result)
        print("latency ms: p50=%(p50_ms).2f p90=%(p90_ms).2f p99=%(p99_ms).2f max=%(max_ms).2f mean=%(mean_ms).2f"
              % result)
        if result["events"] != result["expected_events"]:
            print("ERROR: expected %(expected_events)d events, the sink saw %(events)d" % result)
            status = 1
    by_runner = {r["runner"]: r for r in results}
    if "ferrobeam" in by_runner and "direct" in by_runner:
        ours, theirs = by_runner["ferrobeam"], by_runner["direct"]
        print("ferrobeam / DirectRunner: " + " ".join(
            "%s=%.2fx" % (q, ours[q + "_ms"] / theirs[q + "_ms"]) for q in ("p50", "p90", "p99", "max")))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return status

if __name__ == "__main__":
    raise SystemExit(main())
