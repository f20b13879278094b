"""Windowing end to end: every pipeline runs on ferrobeam and on Beam's
DirectRunner, and the outputs must agree in values, timestamps and windows.

Covers custom window functions (non-merging with a window type the runner
cannot decode, merging through the SDK's merge_windows), sessions, sliding
and fixed windows under each timestamp combiner, and side inputs windowed
differently from their main input.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

import apache_beam as beam
from apache_beam import coders
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner_test import CustomMergingWindowFn
from apache_beam.portability import python_urns
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
from apache_beam.transforms import window
from apache_beam.transforms.window import TimestampCombiner
from apache_beam.utils.timestamp import Timestamp

from conftest import load_native

COMBINERS = {
    "end_of_window": TimestampCombiner.OUTPUT_AT_EOW,
    "earliest": TimestampCombiner.OUTPUT_AT_EARLIEST,
    "latest": TimestampCombiner.OUTPUT_AT_LATEST,
}

# Element timestamps in seconds; the value is its own timestamp.
TIMESTAMPS = [1, 2, 3, 7, 12, 14, 25, 31, 100, 101, 102]


@pytest.fixture(autouse=True)
def _needs_native() -> None:
    load_native()


# --- Custom windows (module level, so SDK workers can unpickle them) --------


class ColoredWindow(window.BoundedWindow):
    """A window whose coder the runner cannot read: ten-second buckets,
    split by the parity of the second."""

    def __init__(self, end: Timestamp, color: str) -> None:
        super().__init__(end)
        self.color = color

    def __hash__(self) -> int:
        return hash((self.end, self.color))

    def __eq__(self, other: object) -> bool:
        return type(self) == type(other) and (self.end, self.color) == (other.end, other.color)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return "ColoredWindow(%s, %s)" % (self.end, self.color)


class ColoredWindowCoder(coders.Coder):
    _parts = coders.TupleCoder([coders.TimestampCoder(), coders.StrUtf8Coder()])

    def encode(self, w: ColoredWindow) -> bytes:
        return self._parts.encode((w.end, w.color))

    def decode(self, encoded: bytes) -> ColoredWindow:
        return ColoredWindow(*self._parts.decode(encoded))

    def is_deterministic(self) -> bool:
        return True


class ColoredWindows(window.NonMergingWindowFn):
    def assign(self, context: window.WindowFn.AssignContext) -> list[ColoredWindow]:
        ts = context.timestamp
        return [ColoredWindow(ts - ts % 10 + 10, "odd" if ts.micros // 1000000 % 2 else "even")]

    def get_window_coder(self) -> coders.Coder:
        return ColoredWindowCoder()


class ColoredSessions(window.WindowFn):
    """Merging windows of a type the runner cannot read: per color, windows
    that overlap merge (sessions with a five-second gap, split by parity)."""

    def assign(self, context: window.WindowFn.AssignContext) -> list[ColoredWindow]:
        ts = context.timestamp
        return [ColoredWindow(ts + 5, "odd" if ts.micros // 1000000 % 2 else "even")]

    def merge(self, merge_context: window.WindowFn.MergeContext) -> None:
        by_color: dict[str, list[ColoredWindow]] = {}
        for w in merge_context.windows:
            by_color.setdefault(w.color, []).append(w)
        for color, ws in by_color.items():
            ws.sort(key=lambda w: w.end)
            run = [ws[0]]
            for w in ws[1:]:
                # Each window spans [end - 5, end): overlapping when closer than 5s.
                if w.end - run[-1].end < 5:
                    run.append(w)
                    continue
                if len(run) > 1:
                    merge_context.merge(run, ColoredWindow(run[-1].end, color))
                run = [w]
            if len(run) > 1:
                merge_context.merge(run, ColoredWindow(run[-1].end, color))

    def get_window_coder(self) -> coders.Coder:
        return ColoredWindowCoder()


# --- Running one pipeline on both runners ------------------------------------


def describe_window(w: Any) -> str:
    if isinstance(w, window.GlobalWindow):
        return "global"
    if isinstance(w, window.IntervalWindow):
        return "[%s, %s)" % (w.start, w.end)
    if isinstance(w, ColoredWindow):
        return "colored(%s, %s)" % (w.end, w.color)
    return repr(w)


class Describe(beam.DoFn):
    """Turns each output element into one comparable string."""

    def process(self, element: Any, ts: Any = beam.DoFn.TimestampParam, w: Any = beam.DoFn.WindowParam) -> Any:
        key, values = element
        yield "%s %s @%s in %s" % (key, sorted(values), ts, describe_window(w))


def timestamped(p: beam.Pipeline, key: str = "k") -> beam.PCollection:
    return (
        p
        | "Create" >> beam.Create(TIMESTAMPS)
        | "Stamp" >> beam.Map(lambda t, key=key: window.TimestampedValue((key, t), t))
    )


Build = Callable[[beam.Pipeline], beam.PCollection]


# The DirectRunner runs in this process: its output lands here (functions
# are pickled by reference to this module, so they share this list).
_DIRECT_OUTPUT: list[str] = []


def _collect(line: str) -> None:
    _DIRECT_OUTPUT.append(line)


def run_direct(build: Build) -> list[str]:
    """The DirectRunner's output."""
    _DIRECT_OUTPUT.clear()
    with beam.Pipeline(runner="DirectRunner") as p:
        _ = build(p) | beam.Map(_collect)
    assert _DIRECT_OUTPUT, "the DirectRunner produced nothing"
    return sorted(_DIRECT_OUTPUT)


def run_ferrobeam(build: Build, expected: list[str], job_endpoint: str) -> None:
    options = PipelineOptions(
        runner="PortableRunner", job_endpoint=job_endpoint, environment_type=python_urns.EMBEDDED_PYTHON
    )
    with beam.Pipeline(options=options) as p:
        assert_that(build(p), equal_to(expected))


def grouped(window_fn: window.WindowFn, combiner: str) -> Build:
    def build(p: beam.Pipeline) -> beam.PCollection:
        return (
            timestamped(p)
            | beam.WindowInto(window_fn, timestamp_combiner=COMBINERS[combiner])
            | beam.GroupByKey()
            | beam.ParDo(Describe())
        )

    return build


def check(build: Build, job_endpoint: str) -> list[str]:
    expected = run_direct(build)
    run_ferrobeam(build, expected, job_endpoint)
    return expected


# --- Tests -------------------------------------------------------------------


@pytest.mark.parametrize("combiner", ["earliest", "latest"])
def test_custom_non_merging_windows(job_endpoint: str, combiner: str) -> None:
    out = check(grouped(ColoredWindows(), combiner), job_endpoint)
    assert any("colored(" in line for line in out), out


def test_custom_non_merging_windows_end_of_window(job_endpoint: str) -> None:
    # The runner cannot read a ColoredWindow's end, so a group comes out at
    # its latest input timestamp instead (docs/design.md); values and
    # windows are the DirectRunner's.
    build = grouped(ColoredWindows(), "end_of_window")
    direct = run_direct(build)

    def latest_instead(line: str) -> str:
        head, rest = line.split(" @", 1)
        values = [int(v) for v in head[head.index("[") + 1:head.index("]")].split(",")]
        return "%s @%s in %s" % (head, Timestamp(max(values)), rest.split(" in ", 1)[1])

    expected = sorted(latest_instead(line) for line in direct)
    assert expected != direct
    run_ferrobeam(build, expected, job_endpoint)


@pytest.mark.parametrize("combiner", sorted(COMBINERS))
def test_custom_merging_windows(job_endpoint: str, combiner: str) -> None:
    # Beam's own merging test WindowFn: [t, t + 1000s) windows, and all those
    # starting on an even second merge into one.
    out = check(grouped(CustomMergingWindowFn(), combiner), job_endpoint)
    assert any("[2, 12, 14, 100, 102]" in line for line in out), out


def reference_merged_groups(window_fn: window.WindowFn, combiner: str) -> list[str]:
    """What grouping TIMESTAMPS under key "k" in a merging `window_fn` must
    give, computed here: the DirectRunner cannot merge windows of a custom
    type (its merge sees opaque stand-ins without the windows' fields)."""
    assigned = {t: window_fn.assign(window.WindowFn.AssignContext(Timestamp(t)))[0] for t in TIMESTAMPS}
    merged_into: dict[Any, Any] = {}

    class Context(window.WindowFn.MergeContext):
        def merge(self, to_be_merged: Any, merge_result: Any) -> None:
            for w in to_be_merged:
                merged_into[w] = merge_result

    window_fn.merge(Context(list(set(assigned.values()))))
    groups: dict[Any, list[int]] = {}
    for t, w in assigned.items():
        groups.setdefault(merged_into.get(w, w), []).append(t)
    pick = {"earliest": min, "latest": max}[combiner]
    return sorted(
        "k %s @%s in %s" % (sorted(ts), Timestamp(pick(ts)), describe_window(w)) for w, ts in groups.items()
    )


@pytest.mark.parametrize("combiner", ["earliest", "latest"])
def test_custom_merging_windows_of_a_custom_type(job_endpoint: str, combiner: str) -> None:
    expected = reference_merged_groups(ColoredSessions(), combiner)
    assert "k [1, 3, 7] @%s in colored(Timestamp(12), odd)" % Timestamp(1 if combiner == "earliest" else 7) in expected
    assert any("[100, 102]" in line for line in expected), expected
    run_ferrobeam(grouped(ColoredSessions(), combiner), expected, job_endpoint)


@pytest.mark.parametrize("combiner", sorted(COMBINERS))
def test_sessions(job_endpoint: str, combiner: str) -> None:
    check(grouped(window.Sessions(5), combiner), job_endpoint)


@pytest.mark.parametrize("combiner", sorted(COMBINERS))
def test_sliding_windows(job_endpoint: str, combiner: str) -> None:
    check(grouped(window.SlidingWindows(10, 5), combiner), job_endpoint)


@pytest.mark.parametrize("combiner", sorted(COMBINERS))
def test_fixed_windows(job_endpoint: str, combiner: str) -> None:
    check(grouped(window.FixedWindows(10), combiner), job_endpoint)


class WithSide(beam.DoFn):
    def process(self, t: int, side: list, ts: Any = beam.DoFn.TimestampParam, w: Any = beam.DoFn.WindowParam) -> Any:
        yield "%s sees %s @%s in %s" % (t, sorted(side), ts, describe_window(w))


def with_side_input(main_fn: window.WindowFn, side_fn: window.WindowFn) -> Build:
    def build(p: beam.Pipeline) -> beam.PCollection:
        stamped = (
            p
            | "Create" >> beam.Create(TIMESTAMPS)
            | "Stamp" >> beam.Map(lambda t: window.TimestampedValue(t, t))
        )
        side = stamped | "SideWindows" >> beam.WindowInto(side_fn)
        return (
            stamped
            | "MainWindows" >> beam.WindowInto(main_fn)
            | beam.ParDo(WithSide(), beam.pvalue.AsList(side))
        )

    return build


@pytest.mark.parametrize(
    "main_fn,side_fn",
    [
        (window.FixedWindows(10), window.FixedWindows(30)),
        (window.SlidingWindows(10, 5), window.FixedWindows(20)),
        (window.FixedWindows(10), window.GlobalWindows()),
    ],
    ids=["fixed10-fixed30", "sliding-fixed20", "fixed-global"],
)
def test_side_input_windowed_differently(job_endpoint: str, main_fn: window.WindowFn, side_fn: window.WindowFn) -> None:
    out = check(with_side_input(main_fn, side_fn), job_endpoint)
    assert any("sees []" not in line for line in out), out


def test_side_input_in_custom_windows(job_endpoint: str) -> None:
    # The DirectRunner answers every lookup of a side input in custom windows
    # with an empty list, so the expectation is computed here: a main window
    # maps to the side window its max timestamp is assigned to (Beam's
    # default window mapping), and sees the side elements assigned there.
    fn = ColoredWindows()

    def assign(ts: Timestamp) -> ColoredWindow:
        return fn.assign(window.WindowFn.AssignContext(ts))[0]

    expected = []
    for t in TIMESTAMPS:
        main = assign(Timestamp(t))
        side = sorted(s for s in TIMESTAMPS if assign(Timestamp(s)) == assign(main.max_timestamp()))
        expected.append("%s sees %s @%s in %s" % (t, side, Timestamp(t), describe_window(main)))
    assert any("sees []" not in line for line in expected), expected
    run_ferrobeam(with_side_input(ColoredWindows(), ColoredWindows()), sorted(expected), job_endpoint)
