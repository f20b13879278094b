"""Soak test: a streaming job at a steady rate; is its memory flat?

Runs a windowed, stateful streaming pipeline on ferrobeam (in a child
process, with the embedded job server) for ``--minutes`` (default 10) at
``--rate`` events per second, samples the resident memory of the job's
process and of its SDK worker processes every few seconds, and compares the
end with minute 2. The pipeline exercises what must be garbage-collected in
a job that runs forever: GroupByKey buffers per window, user state and
event-time timers per key and window, deferred splittable-DoFn work::

    python examples/benchmarks/soak.py                 # 10 minutes
    python examples/benchmarks/soak.py --minutes 3     # a quick look

Prints the samples and exits non-zero when the resident memory at the end
is more than 10% above minute 2 (``--tolerance``). It is not part of CI: it
takes as long as it says.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any, Iterator, Optional, Sequence

KEYS = 1000


def pipeline_main(rate: float, seconds: float) -> None:
    """The job (runs in the child process)."""
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    from apache_beam.coders import VarIntCoder  # pylint: disable=import-outside-toplevel
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
    from apache_beam.transforms import window  # pylint: disable=import-outside-toplevel
    from apache_beam.transforms.periodicsequence import PeriodicImpulse  # pylint: disable=import-outside-toplevel
    from apache_beam.transforms.userstate import (  # pylint: disable=import-outside-toplevel
        CombiningValueStateSpec, TimerSpec, on_timer)
    from apache_beam.transforms.timeutil import TimeDomain  # pylint: disable=import-outside-toplevel
    from apache_beam.utils.timestamp import Timestamp  # pylint: disable=import-outside-toplevel

    class CountPerWindow(beam.DoFn):
        """Counts each key's events per window in state; emits at window end."""
        COUNT = CombiningValueStateSpec("count", VarIntCoder(), beam.combiners.CountCombineFn())
        FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

        def process(self, kv: Any, count: Any = beam.DoFn.StateParam(COUNT),
                    flush: Any = beam.DoFn.TimerParam(FLUSH),
                    w: Any = beam.DoFn.WindowParam) -> Iterator[Any]:
            count.add(1)
            flush.set(w.max_timestamp())
            return iter(())

        @on_timer(FLUSH)
        def on_flush(self, key: Any = beam.DoFn.KeyParam, count: Any = beam.DoFn.StateParam(COUNT)) -> Iterator[Any]:
            yield key, count.read()
            count.clear()

    start = time.time() + 3
    options = PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        keyed = (p
                 | PeriodicImpulse(start_timestamp=Timestamp(start), stop_timestamp=Timestamp(start + seconds),
                                   fire_interval=1.0 / rate)
                 | "Key" >> beam.Map(lambda t: (int(float(t) * rate) % KEYS, 1))
                 | beam.WindowInto(window.FixedWindows(1)))  # yapf: disable
        _ = keyed | "Stateful" >> beam.ParDo(CountPerWindow())
        _ = keyed | "Grouped" >> beam.CombinePerKey(sum)


def rss_kib(pid: int) -> int:
    try:
        with open("/proc/%d/status" % pid, encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        c, parent = (int(x) for x in line.split())
        children.setdefault(parent, []).append(c)
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="events per second (default 2000)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--baseline", type=float, default=2.0, help="minute compared against (default 2)")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed growth (default 0.10)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    if args.child:
        pipeline_main(args.rate, seconds)
        return 0
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", "--minutes", str(args.minutes),
                              "--rate", str(args.rate)])
    t0 = time.time()
    samples: list[tuple[float, int, int]] = []
    print("minute  job-process-MiB  with-workers-MiB")
    while child.poll() is None and time.time() - t0 < seconds + 60:
        time.sleep(args.every)
        server = rss_kib(child.pid)
        total = server + sum(rss_kib(p) for p in descendants(child.pid))
        minute = (time.time() - t0) / 60
        samples.append((minute, server, total))
        print("%6.2f  %15.1f  %16.1f" % (minute, server / 1024, total / 1024), flush=True)
    if child.poll() is None:
        child.terminate()
    child.wait()
    running = [s for s in samples if s[0] <= args.minutes]
    base = [s for s in running if s[0] >= args.baseline]
    if len(base) < 2:
        print("not enough samples after minute %.1f" % args.baseline)
        return 1
    first, last = base[0], base[-1]
    ok = True
    for name, i in (("job process", 1), ("with workers", 2)):
        growth = last[i] / first[i] - 1 if first[i] else float("inf")
        ok &= growth <= args.tolerance
        print("%s: %.1f MiB at minute %.2f, %.1f MiB at minute %.2f: %+.1f%%"
              % (name, first[i] / 1024, first[0], last[i] / 1024, last[0], growth * 100))
    print("child exit status:", child.returncode)
    return 0 if ok and child.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
