"""A streaming pipeline for crash-and-restore tests (and its output check).

A rate-limited source emits ``--events`` deterministic events: event ``i``
is ``(f"k{i % keys}", i)`` at event time :func:`event_time` ``(i)``. A
stateful DoFn keeps each key's running count and total and writes a line
``"{key},{count},{total}"`` per event, and, once the input is exhausted (an
event-time timer far beyond the last event), ``"{key},final,{total}"``.
Everything goes through :class:`ferrobeam.io.WriteLines` to ``--output``.
With ``--window_output``, a GroupByKey over fixed event-time windows of
:data:`WINDOW_SECONDS` also writes ``"{window start},{key},{count},{sum}"``
per window and key there (its buffered values are state a checkpoint must
keep too).

Run it with checkpoints and kill it at any time; rerunning the same command
restores from the latest checkpoint, and once a run exits 0,
:func:`check_output` on ``ferrobeam.io.read_lines(output)`` must find no
problem::

    python tests/recovery_pipeline.py --events 3000 --keys 10 --rate 100 \\
        --output /tmp/rec/out --runner=ferrobeam.FerrobeamRunner --streaming \\
        --checkpoint_dir /tmp/rec/checkpoints --checkpoint_interval 0.5

Other arguments are Beam pipeline options. The DoFns live in this module,
which the workers import by name (ferrobeam gives them this program's
``sys.path``), so the pipeline proto is the same on every run.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
from typing import Any, Iterable, Iterator, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.coders import TupleCoder
from apache_beam.coders import VarIntCoder
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.io.restriction_trackers import OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.userstate import TimerSpec
from apache_beam.transforms.userstate import on_timer
from apache_beam.transforms.window import FixedWindows
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration
from apache_beam.utils.timestamp import Timestamp

import ferrobeam.io
from ferrobeam.options import CheckpointOptions

#: Event time of event 0 (2024-01-01T00:00:00Z); events are 10 ms apart.
EPOCH_S = 1_704_067_200
#: The windows of ``--window_output``: 300 events each.
WINDOW_SECONDS = 3


def event_time(i: int) -> Timestamp:
    """The event time of event ``i``."""
    return Timestamp(micros=EPOCH_S * 1_000_000 + i * 10_000)


def final_time(events: int) -> Timestamp:
    """When the per-key "final" timers fire: an hour of event time after the
    last event, so only the end of the input (the watermark jumping to the
    end of time) reaches it."""
    return event_time(events) + Duration(seconds=3600)


class EventRange(RestrictionProvider):
    """For an element ``n`` (the number of events), the offsets ``[0, n)``,
    never split up front."""

    def initial_restriction(self, element: int) -> OffsetRange:
        return OffsetRange(0, element)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element: Any, restriction: OffsetRange) -> int:
        return restriction.size()


class RateLimitedEvents(beam.DoFn):
    """For an element ``n``, emits events ``[0, n)`` at about ``rate`` per
    second: a few per call (50 ms worth), then ``defer_remainder`` until the
    next few are due. The watermark follows the last emitted event's time."""

    def __init__(self, keys: int, rate: float) -> None:
        self._keys = keys
        self._per_call = max(1, int(rate * 0.05)) if rate > 0 else 100
        self._delay = Duration(micros=int(1e6 * self._per_call / rate)) if rate > 0 else Duration(micros=0)

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: int,
        tracker: Any = beam.DoFn.RestrictionParam(EventRange()),
        estimator: Any = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ) -> Iterator[TimestampedValue]:
        restriction = tracker.current_restriction()
        position = restriction.start
        end = min(restriction.stop, position + self._per_call)
        while position < end:
            if not tracker.try_claim(position):
                return
            timestamp = event_time(position)
            yield TimestampedValue(("k%d" % (position % self._keys), position), timestamp)
            estimator.set_watermark(timestamp)
            position += 1
        if position < restriction.stop:
            tracker.defer_remainder(self._delay)


class RunningTotals(beam.DoFn):
    """Per key: a line ``key,count,total`` for every element, and
    ``key,final,total`` once the input is exhausted."""

    TOTALS = ReadModifyWriteStateSpec("totals", TupleCoder([VarIntCoder(), VarIntCoder()]))
    FINAL = TimerSpec("final", TimeDomain.WATERMARK)

    def __init__(self, events: int, pid_dir: Optional[str] = None) -> None:
        self._final_time = final_time(events)
        self._pid_dir = pid_dir

    def setup(self) -> None:
        if self._pid_dir:
            # Tells a test which processes run user code.
            os.makedirs(self._pid_dir, exist_ok=True)
            open(os.path.join(self._pid_dir, str(os.getpid())), "a", encoding="ascii").close()

    def process(
        self,
        element: tuple[str, int],
        totals: Any = beam.DoFn.StateParam(TOTALS),
        final: Any = beam.DoFn.TimerParam(FINAL),
    ) -> Iterator[str]:
        key, value = element
        count, total = totals.read() or (0, 0)
        count, total = count + 1, total + value
        totals.write((count, total))
        final.set(self._final_time)
        yield "%s,%d,%d" % (key, count, total)

    @on_timer(FINAL)
    def on_final(
        self,
        key: str = beam.DoFn.KeyParam,
        totals: Any = beam.DoFn.StateParam(TOTALS),
    ) -> Iterator[str]:
        _, total = totals.read() or (0, 0)
        yield "%s,final,%d" % (key, total)


class FormatWindowSum(beam.DoFn):
    """``(key, values)`` of a window as ``"{window start s},{key},{count},{sum}"``."""

    def process(self, element: tuple[str, Iterable[int]], window: Any = beam.DoFn.WindowParam) -> Iterator[str]:
        key, values = element
        values = list(values)
        yield "%d,%s,%d,%d" % (window.start.micros // 1_000_000, key, len(values), sum(values))


def build(p: beam.Pipeline, events: int, keys: int, rate: float, output: str,
          pid_dir: Optional[str] = None, window_output: Optional[str] = None) -> None:
    """Adds the pipeline to ``p``; with ``pid_dir``, every process that
    runs the stateful DoFn creates a file there named by its pid; with
    ``window_output``, the windowed sums go there."""
    keyed = (p
             | "Start" >> beam.Create([events])
             | "Events" >> beam.ParDo(RateLimitedEvents(keys, rate)).with_output_types(Tuple[str, int]))
    _ = (keyed
         | "RunningTotals" >> beam.ParDo(RunningTotals(events, pid_dir)).with_output_types(str)
         | "Write" >> ferrobeam.io.WriteLines(output))
    if window_output:
        _ = (keyed
             | "Windows" >> beam.WindowInto(FixedWindows(WINDOW_SECONDS))
             | "Group" >> beam.GroupByKey()
             | "WindowSums" >> beam.ParDo(FormatWindowSum()).with_output_types(str)
             | "WriteWindows" >> ferrobeam.io.WriteLines(window_output))  # yapf: disable


def check_window_sums(lines: Iterable[str], events: int, keys: int, limit: int = 20) -> list[str]:
    """What is wrong with ``--window_output`` (nothing if every window and
    key has exactly one line with its count and sum)."""
    expected: dict[str, tuple[int, int]] = {}
    for i in range(events):
        start = event_time(i).micros // 1_000_000 // WINDOW_SECONDS * WINDOW_SECONDS
        name = "%d,k%d" % (start, i % keys)
        count, total = expected.get(name, (0, 0))
        expected[name] = (count + 1, total + i)
    seen: dict[str, list[str]] = collections.defaultdict(list)
    for line in lines:
        window, key, rest = (line.split(",", 2) + ["", ""])[:3]
        seen["%s,%s" % (window, key)].append(rest)
    problems = []
    missing = sorted(set(expected) - set(seen))
    unknown = sorted(set(seen) - set(expected))
    doubled = sorted(name for name, found in seen.items() if len(found) > 1)
    wrong = sorted(name for name, found in seen.items()
                   if name in expected and found[0] != "%d,%d" % expected[name])
    for what, names in [("missing", missing), ("unknown", unknown), ("more than once", doubled),
                        ("with a wrong count or sum", wrong)]:
        if names:
            problems.append("%d windowed sums %s: %s" % (len(names), what, names[:limit]))
    return problems


def expected_values(events: int, keys: int) -> dict[str, list[int]]:
    """Each key's values, in event order."""
    values: dict[str, list[int]] = collections.defaultdict(list)
    for i in range(events):
        values["k%d" % (i % keys)].append(i)
    return dict(values)


def check_output(lines: Iterable[str], events: int, keys: int, limit: int = 20) -> list[str]:
    """Returns what is wrong with the pipeline's output (nothing if it is
    exact), at most ``limit`` problems per kind.

    Exact means: for every key, the counts are exactly ``1..n_k``, each
    once; the differences between consecutive totals are exactly the key's
    values, each once (so each total is the running sum in the order the
    elements were processed, whatever that order was); and one final line
    carries the key's full sum. Unparsable and unknown lines are problems
    too.
    """
    expected = expected_values(events, keys)
    problems: list[str] = []
    rows: dict[str, collections.Counter] = {k: collections.Counter() for k in expected}
    finals: dict[str, list[int]] = {k: [] for k in expected}
    bad: list[str] = []
    for line in lines:
        parts = line.split(",")
        if len(parts) != 3 or parts[0] not in expected:
            bad.append(line)
            continue
        key, count, total = parts
        try:
            if count == "final":
                finals[key].append(int(total))
            else:
                rows[key][(int(count), int(total))] += 1
        except ValueError:
            bad.append(line)
    if bad:
        problems.append("%d unparsable or unknown lines, e.g. %r" % (len(bad), bad[:limit]))
    for key, values in sorted(expected.items(), key=lambda kv: int(kv[0][1:])):
        n = len(values)
        by_count: dict[int, list[int]] = collections.defaultdict(list)
        for (count, total), times in rows[key].items():
            by_count[count].extend([total] * times)
        doubled = sorted((c, ts) for c, ts in by_count.items() if len(ts) > 1)
        missing = [c for c in range(1, n + 1) if c not in by_count]
        extra = sorted(c for c in by_count if not 1 <= c <= n)
        if doubled:
            c, ts = max(doubled, key=lambda d: len(d[1]))
            problems.append("%s: %d counts appear more than once: %s (count %d %d times, with totals %s)" % (
                key, len(doubled), _ranges([d[0] for d in doubled], limit), c, len(ts), ts[:limit]))
        if missing:
            problems.append("%s: %d of %d counts missing: %s" % (key, len(missing), n, _ranges(missing, limit)))
        if extra:
            problems.append("%s: counts beyond 1..%d: %s" % (key, n, extra[:limit]))
        if not (doubled or missing or extra):
            totals = [by_count[c][0] for c in range(1, n + 1)]
            steps = [b - a for a, b in zip([0] + totals, totals)]
            if sorted(steps) != values:
                wrong = collections.Counter(steps) - collections.Counter(values)
                lost = collections.Counter(values) - collections.Counter(steps)
                problems.append("%s: running totals do not add the key's values once each: "
                                "added but not a value of the key (or twice): %s; never added: %s" % (
                                    key, sorted(wrong.elements())[:limit], sorted(lost.elements())[:limit]))
        if finals[key] != [sum(values)]:
            problems.append("%s: expected one final line with total %d, got %s" % (key, sum(values), finals[key]))
    return problems


def _ranges(numbers: Sequence[int], limit: int) -> str:
    """Sorted ``[1, 2, 3, 7]`` as ``"1-3, 7"`` (at most ``limit`` ranges)."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    ranges = [str(a) if a == b else "%d-%d" % (a, b) for a, b in spans]
    more = " and %d more ranges" % (len(ranges) - limit) if len(ranges) > limit else ""
    return ", ".join(ranges[:limit]) + more


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="number of events (default 3000)")
    parser.add_argument("--keys", type=int, default=10, help="number of keys (default 10)")
    parser.add_argument("--rate", type=float, default=300.0,
                        help="events per second, about (default 300; 0: as fast as possible)")
    parser.add_argument("--output", required=True, help="directory for the output's part-*.txt files")
    parser.add_argument("--window_output", default=None,
                        help="directory for windowed sums per key (a GroupByKey branch)")
    parser.add_argument("--pid_dir", default=None,
                        help="for tests: processes running the stateful DoFn create a file named by their pid here")
    args, beam_args = parser.parse_known_args(argv)
    options = PipelineOptions(beam_args)
    checkpoints = options.view_as(CheckpointOptions)
    logging.info("recovery_pipeline: %d events, %d keys, %.0f/s to %s; checkpoints: %s, restore from: %s",
                 args.events, args.keys, args.rate, args.output, checkpoints.checkpoint_dir, checkpoints.restore_from)
    with beam.Pipeline(options=options) as p:
        build(p, args.events, args.keys, args.rate, args.output, args.pid_dir, args.window_output)
    print("recovery_pipeline: done", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Run from the importable module, not __main__, so that the DoFns are
    # pickled by reference (workers import this module by name).
    import recovery_pipeline  # pylint: disable=import-self
    recovery_pipeline.main()
