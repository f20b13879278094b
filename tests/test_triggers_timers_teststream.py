"""Triggers, timers and TestStream end to end, checked against the DirectRunner.

Every pipeline here runs on ferrobeam and on Beam's DirectRunner; outputs are
compared with their timestamps, windows and panes (tests/runner_compare.py).
Where Beam's model and the Python DirectRunner disagree, the test says so and
asserts the model.
"""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing import test_stream
from apache_beam.transforms import trigger, userstate, window
from apache_beam.coders import coders
from apache_beam.utils.timestamp import Duration, Timestamp

from runner_compare import compare_with_direct_runner, run_and_describe

DISCARDING = trigger.AccumulationMode.DISCARDING
ACCUMULATING = trigger.AccumulationMode.ACCUMULATING


def _events(p: beam.Pipeline) -> beam.PCollection:
    """Three keys with timestamped values over two 10 s windows."""
    data = [("a", i) for i in range(7)] + [("b", i) for i in (1, 12, 13)] + [("c", 15)]
    return (p | beam.Create(data)
            | beam.Map(lambda kv: window.TimestampedValue(kv, kv[1] * 1.5)))


def _grouped(trig: trigger.TriggerFn, mode, win=None, lateness: int = 0, combiner=None):
    def build(p: beam.Pipeline) -> beam.PCollection:
        kwargs = {"timestamp_combiner": combiner} if combiner else {}
        return (_events(p)
                | beam.WindowInto(win or window.FixedWindows(10), trigger=trig, accumulation_mode=mode,
                                  allowed_lateness=lateness, **kwargs)
                | beam.GroupByKey())
    return build


TRIGGERS = {
    "after_count_once": (trigger.AfterCount(1), DISCARDING),
    "early_count_then_on_time": (trigger.AfterWatermark(early=trigger.AfterCount(1)), DISCARDING),
    "or_finally": (trigger.OrFinally(trigger.Repeatedly(trigger.AfterCount(1)), trigger.AfterWatermark()), DISCARDING),
    "after_any": (trigger.AfterAny(trigger.AfterCount(100), trigger.AfterWatermark()), DISCARDING),
    "after_all": (trigger.AfterAll(trigger.AfterCount(1), trigger.AfterWatermark()), DISCARDING),
}


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_trigger_panes_match_the_direct_runner(name: str, tmp_path: Path) -> None:
    trig, mode = TRIGGERS[name]
    compare_with_direct_runner(_grouped(trig, mode), tmp_path)


def test_sliding_windows_with_early_firings(tmp_path: Path) -> None:
    build = _grouped(trigger.AfterWatermark(early=trigger.AfterCount(2)), ACCUMULATING, win=window.SlidingWindows(10, 5))
    out = compare_with_direct_runner(build, tmp_path)
    timings = {tuple(o["pane"][2:3]) for o in out}
    assert len(timings) == 2, "early and on-time panes: %s" % timings


def test_unfired_data_gets_a_final_pane_where_the_direct_runner_drops_it(tmp_path: Path) -> None:
    """AfterCount(3) never fires for windows with fewer elements. Beam's model
    emits their data in a final pane when the window expires (closing
    behaviour FIRE_IF_NON_EMPTY); Python's DirectRunner drops it."""
    ours = run_and_describe(_grouped(trigger.AfterCount(3), DISCARDING), "ferrobeam.FerrobeamRunner", tmp_path)
    by_key = {(o["value"][0], o["window"][0]): o for o in ours}
    assert len(by_key) == len(ours) == 4, ours
    assert by_key[("a", 0.0)]["pane"] == [True, True, 0, 0, -1], "fired early with all 7, then closed"
    assert by_key[("b", 0.0)]["pane"] == [True, True, 1, 0, 0], "never fired: the on-time final pane"
    assert by_key[("b", 0.0)]["value"] == ["b", [1]]


def test_final_pane_follows_the_model_where_the_direct_runner_does_not(tmp_path: Path) -> None:
    """Repeatedly(AfterCount(1)), accumulating: after the early pane the window
    expires with the on-time behaviour FIRE_ALWAYS, so Beam's model (Java's
    ReduceFnRunner, Flink, Dataflow) emits an on-time final pane repeating the
    accumulated values. Python's DirectRunner stops after the early pane."""
    build = _grouped(trigger.Repeatedly(trigger.AfterCount(1)), ACCUMULATING)
    ours = run_and_describe(build, "ferrobeam.FerrobeamRunner", tmp_path)
    for key_window in {(o["value"][0], tuple(o["window"])) for o in ours}:
        panes = [o for o in ours if (o["value"][0], tuple(o["window"])) == key_window]
        assert [p["pane"] for p in panes] in ([[True, False, 0, 0, -1], [False, True, 1, 1, 0]],
                                              [[False, True, 1, 1, 0], [True, False, 0, 0, -1]]), panes
        assert panes[0]["value"] == panes[1]["value"]


class _BufferUntilTimer(beam.DoFn):
    """Buffers values per key and window; an event-time timer at the end of
    the window flushes them; a dynamic timer family reports too."""

    BUFFER = userstate.BagStateSpec("buffer", coders.VarIntCoder())
    COUNT = userstate.CombiningValueStateSpec("count", sum)
    FLUSH = userstate.TimerSpec("flush", userstate.TimeDomain.WATERMARK)
    TAGGED = userstate.TimerSpec("tagged", userstate.TimeDomain.WATERMARK)

    def process(self, kv, ts=beam.DoFn.TimestampParam, w=beam.DoFn.WindowParam,
                buffer=beam.DoFn.StateParam(BUFFER), count=beam.DoFn.StateParam(COUNT),
                flush=beam.DoFn.TimerParam(FLUSH), tagged=beam.DoFn.TimerParam(TAGGED)):
        buffer.add(kv[1])
        count.add(1)
        flush.set(w.max_timestamp())
        # One dynamic timer per value parity, set again by every value of
        # that parity (to a time that does not depend on arrival order).
        odd = kv[1] % 2
        tagged.set(w.start + (1 if odd else 2), dynamic_timer_tag="odd" if odd else "even")

    @userstate.on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, ts=beam.DoFn.TimestampParam,
                 buffer=beam.DoFn.StateParam(BUFFER), count=beam.DoFn.StateParam(COUNT)):
        yield ("flush", key, sorted(buffer.read()), count.read(), float(ts))
        buffer.clear()

    @userstate.on_timer(TAGGED)
    def on_tagged(self, key=beam.DoFn.KeyParam, tag=beam.DoFn.DynamicTimerTagParam,
                  ts=beam.DoFn.TimestampParam):
        yield ("tagged", key, tag, float(ts))


def test_event_time_and_dynamic_timers_match_the_direct_runner(tmp_path: Path) -> None:
    def build(p: beam.Pipeline) -> beam.PCollection:
        return _events(p) | beam.WindowInto(window.FixedWindows(10)) | beam.ParDo(_BufferUntilTimer())
    out = compare_with_direct_runner(build, tmp_path)
    kinds = {o["value"][0] for o in out}
    assert kinds == {"flush", "tagged"}, kinds


class _IdleReport(beam.DoFn):
    """A processing-time timer per key, reset by every element."""

    COUNT = userstate.CombiningValueStateSpec("count", sum)
    IDLE = userstate.TimerSpec("idle", userstate.TimeDomain.REAL_TIME)

    def process(self, kv, count=beam.DoFn.StateParam(COUNT), idle=beam.DoFn.TimerParam(IDLE)):
        count.add(1)
        idle.set(Timestamp.now() + Duration(seconds=3600))

    @userstate.on_timer(IDLE)
    def on_idle(self, key=beam.DoFn.KeyParam, count=beam.DoFn.StateParam(COUNT)):
        yield (key, count.read())


def test_processing_time_timers_fire_when_the_input_ends(tmp_path: Path) -> None:
    """In batch, processing time ends at +infinity with the input, so an hour-long
    idle timer fires once per key and window, after all its elements.  (Python's
    DirectRunner fails on processing-time timers in batch; the model decides.)"""
    out = run_and_describe(lambda p: _events(p) | beam.ParDo(_IdleReport()), "ferrobeam.FerrobeamRunner", tmp_path)
    assert sorted(tuple(o["value"]) for o in out) == [("a", 7), ("b", 3), ("c", 1)], out


def test_early_processing_time_firings_wait_for_the_end_in_batch(tmp_path: Path) -> None:
    """AfterProcessingTime(60) early firings cannot be due before a batch
    input ends; each window gets its one on-time pane.  (The DirectRunner
    has no processing-time clock in batch and fails.)"""
    build = _grouped(trigger.AfterWatermark(early=trigger.AfterProcessingTime(60)), ACCUMULATING)
    out = run_and_describe(build, "ferrobeam.FerrobeamRunner", tmp_path)
    assert len(out) == 4 and all(o["pane"] == [True, True, 1, 0, 0] for o in out), out


def test_multi_output_test_stream_with_triggers_matches_the_direct_runner(tmp_path: Path) -> None:
    def build(p: beam.Pipeline) -> beam.PCollection:
        stream = (p | test_stream.TestStream(coder=coders.TupleCoder([coders.StrUtf8Coder(), coders.VarIntCoder()]))
                  .add_elements([window.TimestampedValue(("k", 1), 1), window.TimestampedValue(("k", 2), 2)],
                                tag="left")
                  .advance_watermark_to(5, tag="left")
                  .add_elements([window.TimestampedValue(("k", 30), 6)], tag="left")
                  .add_elements([window.TimestampedValue(("j", 7), 7)], tag="right")
                  .advance_watermark_to_infinity(tag="left")
                  .advance_watermark_to_infinity(tag="right"))
        def windowed_sums(pcoll: beam.PCollection, label: str) -> beam.PCollection:
            return (pcoll
                    | "Window%s" % label >> beam.WindowInto(
                        window.FixedWindows(5), trigger=trigger.AfterWatermark(early=trigger.AfterCount(1)),
                        accumulation_mode=DISCARDING)
                    | "Sum%s" % label >> beam.CombinePerKey(sum))
        return (windowed_sums(stream["left"], "Left"), windowed_sums(stream["right"], "Right")) | beam.Flatten()
    compare_with_direct_runner(build, tmp_path)


def test_late_test_stream_data_is_refused_in_batch(tmp_path: Path) -> None:
    from ferrobeam.runner import PipelineRefusedError

    def build(p: beam.Pipeline) -> beam.PCollection:
        return (p | test_stream.TestStream(coder=coders.StrUtf8Coder()).advance_watermark_to(10)
                .add_elements([window.TimestampedValue("late", 2)]))
    with pytest.raises(PipelineRefusedError, match="late data"):
        run_and_describe(build, "ferrobeam.FerrobeamRunner", tmp_path)


def test_a_trigger_that_never_finishes_still_terminates_in_batch(tmp_path: Path) -> None:
    """Repeatedly(AfterProcessingTime) in the global window never finishes on
    its own; in batch the input ends, the window expires, and its data comes
    out once, in the final pane."""
    def build(p: beam.Pipeline) -> beam.PCollection:
        return (_events(p)
                | beam.WindowInto(window.GlobalWindows(),
                                  trigger=trigger.Repeatedly(trigger.AfterProcessingTime(1)),
                                  accumulation_mode=DISCARDING)
                | beam.GroupByKey())
    out = run_and_describe(build, "ferrobeam.FerrobeamRunner", tmp_path)
    assert sorted((o["value"][0], len(o["value"][1])) for o in out) == [("a", 7), ("b", 3), ("c", 1)], out
    assert all(o["pane"][1] for o in out), "each is its window's last pane"
