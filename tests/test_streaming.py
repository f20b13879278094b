"""Streaming mode (``--streaming``): TestStream-driven pipelines, exact panes.

The pipelines and expected results of the first tests are Beam's own, from
``apache_beam/testing/test_stream_test.py`` (apache-beam 2.77.0): there they
build their ``TestPipeline`` with explicit options, which pins them to the
DirectRunner, so they are ported here to run on ferrobeam. Each names the
test it comes from. Later tests are ours.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream as ts
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
from apache_beam.testing.util import equal_to_per_window
from apache_beam.transforms import trigger
from apache_beam.transforms import window
from apache_beam.transforms.window import FixedWindows
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils import timestamp


def _pipeline(*extra: str) -> beam.Pipeline:
    return beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", "--streaming", *extra]))


class _Record(beam.DoFn):
    def process(self, element: Any, ts: Any = beam.DoFn.TimestampParam) -> Iterator[tuple[Any, Any]]:
        yield element, ts


def _beams_basic_stream() -> ts.TestStream:
    """The stream of test_basic_execution and test_gbk_execution_no_triggers."""
    return (ts.TestStream()
            .advance_watermark_to(10)
            .add_elements(["a", "b", "c"])
            .advance_watermark_to(20)
            .add_elements(["d"])
            .add_elements(["e"])
            .advance_processing_time(10)
            .advance_watermark_to(300)
            .add_elements([TimestampedValue("late", 12)])
            .add_elements([TimestampedValue("last", 310)])
            .advance_watermark_to_infinity())  # yapf: disable


def test_basic_execution() -> None:
    # test_stream_test.TestStreamTest.test_basic_execution
    stream = _beams_basic_stream()
    with _pipeline() as p:
        records = p | stream | beam.ParDo(_Record())
        assert_that(records, equal_to([
            ("a", timestamp.Timestamp(10)),
            ("b", timestamp.Timestamp(10)),
            ("c", timestamp.Timestamp(10)),
            ("d", timestamp.Timestamp(20)),
            ("e", timestamp.Timestamp(20)),
            ("late", timestamp.Timestamp(12)),
            ("last", timestamp.Timestamp(310)),
        ]))


def test_gbk_execution_no_triggers() -> None:
    # test_stream_test.TestStreamTest.test_gbk_execution_no_triggers
    stream = _beams_basic_stream()
    with _pipeline() as p:
        records = (
            p
            | stream
            | beam.WindowInto(FixedWindows(15), allowed_lateness=300)
            | beam.Map(lambda x: ("k", x))
            | beam.GroupByKey())
        assert_that(records, equal_to_per_window({
            window.IntervalWindow(0, 15): [("k", ["a", "b", "c"]), ("k", ["late"])],
            window.IntervalWindow(15, 30): [("k", ["d", "e"])],
            window.IntervalWindow(300, 315): [("k", ["last"])],
        }), label="assert per window")


def test_gbk_execution_after_watermark_trigger() -> None:
    # test_stream_test.TestStreamTest.test_gbk_execution_after_watermark_trigger
    stream = (ts.TestStream()
              .advance_watermark_to(10)
              .add_elements([TimestampedValue("a", 11)])
              .advance_watermark_to(20)
              .add_elements([TimestampedValue("b", 21)])
              .advance_watermark_to_infinity())  # yapf: disable
    with _pipeline() as p:
        records = (
            p
            | stream
            | beam.WindowInto(
                FixedWindows(15),
                trigger=trigger.AfterWatermark(early=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING)
            | beam.Map(lambda x: ("k", x))
            | beam.GroupByKey())
        assert_that(records, equal_to_per_window({
            window.IntervalWindow(0, 15): [("k", ["a"]), ("k", [])],
            window.IntervalWindow(15, 30): [("k", ["b"]), ("k", [])],
        }), label="assert per window")


def test_gbk_execution_after_processing_trigger_fired() -> None:
    # test_stream_test.TestStreamTest.test_gbk_execution_after_processing_trigger_fired
    stream = (ts.TestStream()
              .advance_watermark_to(10)
              .add_elements(["a"])
              .advance_processing_time(5.1)
              .advance_watermark_to_infinity())  # yapf: disable
    with _pipeline("--allow_unsafe_triggers") as p:
        records = (
            p
            | stream
            | beam.WindowInto(
                FixedWindows(15),
                trigger=trigger.AfterProcessingTime(5),
                accumulation_mode=trigger.AccumulationMode.DISCARDING)
            | beam.Map(lambda x: ("k", x))
            | beam.GroupByKey())
        assert_that(records, equal_to_per_window({
            window.IntervalWindow(0, 15): [("k", ["a"])],
        }), label="assert per window")


def test_multiple_outputs_with_watermark_advancement() -> None:
    # test_stream_test.TestStreamTest.test_multiple_outputs_with_watermark_advancement
    letters_elements = [
        TimestampedValue("a", 6),
        TimestampedValue("b", 7),
        TimestampedValue("c", 8),
    ]
    numbers_elements = [
        TimestampedValue("1", 11),
        TimestampedValue("2", 12),
        TimestampedValue("3", 13),
    ]
    stream = (ts.TestStream()
              .advance_watermark_to(5, tag="letters")
              .add_elements(letters_elements, tag="letters")
              .advance_watermark_to(10, tag="numbers")
              .add_elements(numbers_elements, tag="numbers"))  # yapf: disable
    with _pipeline() as p:
        main = p | stream
        letters = main["letters"] | "record letters" >> beam.ParDo(_Record())
        numbers = main["numbers"] | "record numbers" >> beam.ParDo(_Record())
        assert_that(letters, equal_to([("a", timestamp.Timestamp(6)), ("b", timestamp.Timestamp(7)),
                                        ("c", timestamp.Timestamp(8))]), label="assert letters")
        assert_that(numbers, equal_to([("1", timestamp.Timestamp(11)), ("2", timestamp.Timestamp(12)),
                                        ("3", timestamp.Timestamp(13))]), label="assert numbers")


class _Panes(beam.DoFn):
    """(key, sorted values, pane timing, pane index, is_last) of each pane."""

    def process(self, kv: Any, pane: Any = beam.DoFn.PaneInfoParam,
                win: Any = beam.DoFn.WindowParam) -> Iterator[tuple[Any, ...]]:
        key, values = kv
        yield (key, int(win.start), sorted(values), pane.timing, pane.index, pane.is_last)


def test_early_on_time_and_late_panes_accumulating() -> None:
    from apache_beam.utils.windowed_value import PaneInfoTiming as T
    stream = (ts.TestStream()
              .add_elements([TimestampedValue(1, 1), TimestampedValue(2, 2)])
              .add_elements([TimestampedValue(3, 3)])
              .advance_watermark_to(10)
              .advance_watermark_to(12)
              .add_elements([TimestampedValue(4, 4)])
              .advance_watermark_to(200)
              .add_elements([TimestampedValue(5, 5)])
              .advance_watermark_to_infinity())  # yapf: disable
    with _pipeline() as p:
        panes = (
            p
            | stream
            | beam.WindowInto(
                FixedWindows(10),
                trigger=trigger.AfterWatermark(early=trigger.AfterCount(2), late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                allowed_lateness=100)
            | beam.Map(lambda x: ("k", x))
            | beam.GroupByKey()
            | beam.ParDo(_Panes()))
        assert_that(panes, equal_to([
            ("k", 0, [1, 2], T.EARLY, 0, False),
            # The watermark reaches 10: the window [0, 10) is complete.
            ("k", 0, [1, 2, 3], T.ON_TIME, 1, False),
            ("k", 0, [1, 2, 3, 4], T.LATE, 2, False),
            # 5 arrives after the window expired (9 + 100 < 200): dropped.
        ]))


class _BufferUntilTimer(beam.DoFn):
    """Buffers each key's values; an event-time timer at the end of the
    window emits them (stateful DoFn and timers in streaming)."""

    BUFFER = beam.transforms.userstate.BagStateSpec("buffer", beam.coders.VarIntCoder())
    FLUSH = beam.transforms.userstate.TimerSpec("flush", beam.transforms.userstate.TimeDomain.WATERMARK)

    def process(self, kv: Any, win: Any = beam.DoFn.WindowParam,
                buffer: Any = beam.DoFn.StateParam(BUFFER),
                flush: Any = beam.DoFn.TimerParam(FLUSH)) -> Iterator[Any]:
        buffer.add(kv[1])
        flush.set(win.max_timestamp())
        return iter(())

    @beam.transforms.userstate.on_timer(FLUSH)
    def on_flush(self, key: Any = beam.DoFn.KeyParam, win: Any = beam.DoFn.WindowParam,
                 buffer: Any = beam.DoFn.StateParam(BUFFER)) -> Iterator[Any]:
        yield key, int(win.start), sorted(buffer.read())
        buffer.clear()


def test_event_time_timers_fire_as_the_watermark_passes() -> None:
    stream = (ts.TestStream()
              .add_elements([TimestampedValue(("a", 1), 1), TimestampedValue(("b", 2), 2)])
              .advance_watermark_to(5)
              .add_elements([TimestampedValue(("a", 3), 3), TimestampedValue(("a", 11), 11)])
              .advance_watermark_to(10)
              .add_elements([TimestampedValue(("a", 12), 12)])
              .advance_watermark_to_infinity())  # yapf: disable
    with _pipeline() as p:
        out = p | stream | beam.WindowInto(FixedWindows(10)) | beam.ParDo(_BufferUntilTimer())
        assert_that(out, equal_to([("a", 0, [1, 3]), ("b", 0, [2]), ("a", 10, [11, 12])]))


@pytest.mark.parametrize("streaming", [False, True])
def test_bounded_pipelines_give_the_same_result_in_both_modes(streaming: bool) -> None:
    options = ["--runner=ferrobeam.FerrobeamRunner"] + (["--streaming"] if streaming else [])
    with beam.Pipeline(options=PipelineOptions(options)) as p:
        counts = (
            p
            | beam.Create([("a", 1), ("b", 2), ("a", 3)])
            | beam.CombinePerKey(sum))
        assert_that(counts, equal_to([("a", 4), ("b", 2)]))


class _ProcessingTimeFlush(beam.DoFn):
    """Buffers values; a processing-time timer at 5 s flushes them (driven
    by TestStream's processing-time events: its clock starts at 0)."""

    BUFFER = beam.transforms.userstate.BagStateSpec("buffer", beam.coders.VarIntCoder())
    FLUSH = beam.transforms.userstate.TimerSpec("flush", beam.transforms.userstate.TimeDomain.REAL_TIME)

    def process(self, kv: Any, buffer: Any = beam.DoFn.StateParam(BUFFER),
                flush: Any = beam.DoFn.TimerParam(FLUSH)) -> Iterator[Any]:
        if not list(buffer.read()):
            flush.set(5)
        buffer.add(kv[1])
        return iter(())

    @beam.transforms.userstate.on_timer(FLUSH)
    def on_flush(self, key: Any = beam.DoFn.KeyParam,
                 buffer: Any = beam.DoFn.StateParam(BUFFER)) -> Iterator[Any]:
        yield key, sorted(buffer.read())
        buffer.clear()


def test_processing_time_timers_follow_test_stream_processing_time() -> None:
    # TestStream's processing-time clock starts at 0 (as on the DirectRunner)
    # and only moves with its processing-time events, so the timer at 5 s
    # fires at the first advance past it, between the two batches; the
    # second batch sets it in the past, so it fires at once.
    # The stream's default (pickling) coder: the runner re-encodes its
    # elements into the key-value coder the stateful ParDo needs.
    stream = (ts.TestStream()
              .add_elements([("k", 1), ("k", 2)])
              .advance_processing_time(60)
              .add_elements([("k", 3)])
              .advance_watermark_to_infinity())  # yapf: disable
    with _pipeline() as p:
        out = p | stream | beam.ParDo(_ProcessingTimeFlush())
        assert_that(out, equal_to([("k", [1, 2]), ("k", [3])]))


def test_side_inputs_from_a_bounded_source() -> None:
    stream = (ts.TestStream()
              .add_elements([TimestampedValue(1, 1), TimestampedValue(2, 2)])
              .advance_watermark_to(10)
              .add_elements([TimestampedValue(3, 12)])
              .advance_watermark_to_infinity())  # yapf: disable
    with _pipeline() as p:
        factor = p | "factor" >> beam.Create([10])
        out = p | stream | beam.Map(lambda x, f: x * f, f=beam.pvalue.AsSingleton(factor))
        assert_that(out, equal_to([10, 20, 30]))
