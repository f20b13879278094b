"""A streaming job whose user state is larger than the memory it may use.

``--keys`` keys each keep a ``--value_bytes`` value (deterministic bytes
derived from the key) in state. Once the input is exhausted, an event-time
timer per key reads its value back and writes ``key,ok`` or ``key,BAD`` to
``--output``. Run inside a memory limit (``--memory_limit``, a cgroup v1
memory group this script creates; needs root) to show that RocksDB keeps
state on disk: the same job with ``--state_backend=memory`` is killed.

    python tests/big_state_pipeline.py --keys 20000000 --value_bytes 100 \\
        --memory_limit 2G --output /tmp/big/out --state_backend=rocksdb

prints the figures (elements/s, state size, peak memory of the group).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.userstate import TimerSpec
from apache_beam.transforms.userstate import on_timer
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

import ferrobeam.io
from recovery_pipeline import EventRange

CGROUP_ROOT = "/sys/fs/cgroup/memory"
END = Timestamp(seconds=10_000_000)


def value_of(key: str, size: int) -> bytes:
    """The deterministic value of ``key``."""
    seed = hashlib.blake2b(key.encode(), digest_size=32).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Keys(beam.DoFn):
    """For an element ``n``: keys ``k0 .. k{n-1}``, 5,000 per call."""

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        n: int,
        tracker: Any = beam.DoFn.RestrictionParam(EventRange()),
        estimator: Any = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ) -> Iterator[TimestampedValue]:
        position = tracker.current_restriction().start
        stop = min(tracker.current_restriction().stop, position + 5000)
        while position < stop and tracker.try_claim(position):
            yield TimestampedValue(("k%d" % position, position), Timestamp(seconds=position // 1000))
            position += 1
        estimator.set_watermark(Timestamp(seconds=position // 1000))
        if position < tracker.current_restriction().stop:
            tracker.defer_remainder()


class Remember(beam.DoFn):
    """Keeps each key's value in state; at the end checks it."""

    VALUE = ReadModifyWriteStateSpec("value", BytesCoder())
    CHECK = TimerSpec("check", TimeDomain.WATERMARK)

    def __init__(self, size: int) -> None:
        self._size = size

    def process(self, element: tuple[str, int], value: Any = beam.DoFn.StateParam(VALUE),
                check: Any = beam.DoFn.TimerParam(CHECK)) -> Iterator[str]:
        key, _ = element
        value.write(value_of(key, self._size))
        check.set(END)
        return iter(())

    @on_timer(CHECK)
    def on_check(self, key: str = beam.DoFn.KeyParam, value: Any = beam.DoFn.StateParam(VALUE)) -> Iterator[str]:
        ok = value.read() == value_of(key, self._size)
        yield "%s,%s" % (key, "ok" if ok else "BAD")


def build(p: beam.Pipeline, keys: int, size: int, output: str) -> None:
    _ = (p
         | "Start" >> beam.Create([keys])
         | "Keys" >> beam.ParDo(Keys()).with_output_types(tuple[str, int])
         | "Remember" >> beam.ParDo(Remember(size)).with_output_types(str)
         | "Write" >> ferrobeam.io.WriteLines(output))  # yapf: disable


def parse_bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1:].upper() in units:
        return int(float(text[:-1]) * units[text[-1:].upper()])
    return int(text)


def cgroup_available() -> bool:
    return os.access(CGROUP_ROOT, os.W_OK) and os.path.exists(os.path.join(CGROUP_ROOT, "memory.limit_in_bytes"))


def run_limited(argv: Sequence[str], limit: int, timeout: float) -> tuple[int, int, str]:
    """Runs this script (without ``--memory_limit``) in a new memory cgroup
    of ``limit`` bytes, swap included; returns (exit status, peak bytes,
    output tail). The group is removed afterwards."""
    group = os.path.join(CGROUP_ROOT, "ferrobeam-big-state-%d" % os.getpid())
    os.makedirs(group)
    try:
        for name, value in [("memory.limit_in_bytes", limit), ("memory.memsw.limit_in_bytes", limit)]:
            path = os.path.join(group, name)
            if os.path.exists(path):
                with open(path, "w", encoding="ascii") as f:
                    f.write(str(value))

        def enter() -> None:
            with open(os.path.join(group, "cgroup.procs"), "w", encoding="ascii") as f:
                f.write(str(os.getpid()))

        run = subprocess.run([sys.executable, os.path.abspath(__file__), *argv], preexec_fn=enter,
                             capture_output=True, text=True, timeout=timeout, check=False)
        with open(os.path.join(group, "memory.max_usage_in_bytes"), encoding="ascii") as f:
            peak = int(f.read())
        # The figures are on stdout; the workers' warnings fill stderr.
        return run.returncode, peak, run.stderr[-2000:] + run.stdout[-2000:]
    finally:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.rmdir(group)
                break
            except OSError:
                time.sleep(0.2)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--value_bytes", type=int, default=10_000)
    parser.add_argument("--output", required=True)
    parser.add_argument("--memory_limit", default=None,
                        help="run in a memory cgroup of this size (e.g. 900M); needs root and cgroup v1")
    args, beam_args = parser.parse_known_args(argv)
    if args.memory_limit:
        if not cgroup_available():
            print("big_state_pipeline: no writable cgroup v1 memory controller at %s" % CGROUP_ROOT)
            return 3
        inner: list[str] = []
        given = iter(argv if argv is not None else sys.argv[1:])
        for arg in given:
            if arg == "--memory_limit":
                next(given, None)  # and its value
            elif not arg.startswith("--memory_limit="):
                inner.append(arg)
        limit = parse_bytes(args.memory_limit)
        started = time.monotonic()
        status, peak, tail = run_limited(inner, limit, timeout=24 * 3600)
        print(tail)
        print("big_state_pipeline: exit %d, peak memory %.0f MiB of %.0f MiB, %.1f s" % (
            status, peak / 2**20, limit / 2**20, time.monotonic() - started))
        return status
    shutil.rmtree(args.output, ignore_errors=True)
    options = PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", "--streaming", *beam_args])
    started = time.monotonic()
    with beam.Pipeline(options=options) as p:
        build(p, args.keys, args.value_bytes, args.output)
    elapsed = time.monotonic() - started
    ok, other = verify(args.output, args.keys)
    print("big_state_pipeline: %d keys x %d bytes = %.0f MiB of state in %.1f s (%.0f keys/s); %d ok, %d other" % (
        args.keys, args.value_bytes, args.keys * args.value_bytes / 2**20, elapsed, args.keys / elapsed, ok, other))
    return 0 if ok == args.keys and other == 0 else 1


def verify(output: str, keys: int) -> tuple[int, int]:
    """(keys with exactly one ``,ok`` line, other lines), reading the
    output file by file: 20M lines would not fit the memory limit as a
    list."""
    seen = bytearray(keys)
    ok = other = 0
    for path in ferrobeam.io.committed_files(output):
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, verdict = line.rstrip("\n").partition(",")
                index = int(key[1:]) if key[1:].isdigit() else -1
                if verdict == "ok" and 0 <= index < keys and not seen[index]:
                    seen[index] = 1
                    ok += 1
                else:
                    other += 1
    return ok, other

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    import big_state_pipeline  # pylint: disable=import-self
    sys.exit(big_state_pipeline.main())
