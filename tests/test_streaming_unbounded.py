"""Streaming from unbounded sources on the real clock.

The sources are splittable DoFns that checkpoint themselves with
``defer_remainder`` (Beam's ``PeriodicImpulse``, and a source of ours that
stays empty). Every test checks exact results, and the timing tests check
*when* panes arrived relative to the sources, with wide margins: the
machines are small and noisy.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.io.restriction_trackers import OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
from apache_beam.transforms import trigger
from apache_beam.transforms import window
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.utils.timestamp import Duration
from apache_beam.utils.timestamp import Timestamp


def _pipeline(*extra: str) -> beam.Pipeline:
    return beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", "--streaming", *extra]))


def _aligned_start(lead: float = 1.5) -> float:
    """A whole second at least ``lead`` seconds ahead, so one-second windows
    hold whole intervals however long the job takes to start."""
    return float(math.ceil(time.time() + lead))


def _impulse(start: float, seconds: float, interval: float, windowed: bool = False) -> PeriodicImpulse:
    return PeriodicImpulse(
        start_timestamp=Timestamp(start),
        stop_timestamp=Timestamp(start + seconds),
        fire_interval=interval,
        apply_windowing=windowed,
    )


def _count_per_window(pcoll: beam.PCollection) -> beam.PCollection:
    return (pcoll
            | beam.WindowInto(window.FixedWindows(1))
            | beam.Map(lambda _: ("k", 1))
            | beam.CombinePerKey(sum)
            | beam.Values())  # yapf: disable


def test_periodic_impulse_runs_on_the_clock_and_ends() -> None:
    start = _aligned_start()
    with _pipeline() as p:
        ticks = p | _impulse(start, 2, 0.25, windowed=True)
        # One element per fire interval, at the scheduled timestamps...
        assert_that(
            ticks | "Offsets" >> beam.Map(lambda t: round(float(t) - start, 2)),
            equal_to([0.25 * i for i in range(8)]),
            label="offsets",
        )
        # ...and one-second windows close as the source's watermark passes them.
        assert_that(_count_per_window(ticks), equal_to([4, 4]), label="counts")
    assert time.time() >= start + 1.75, "elements were emitted before their time"


def test_flatten_of_two_unbounded_sources() -> None:
    # Prism hangs flattening unbounded collections; here both feed one window.
    start = _aligned_start()
    with _pipeline() as p:
        fast = p | "Fast" >> _impulse(start, 2, 0.25)
        slow = p | "Slow" >> _impulse(start, 2, 0.5)
        merged = (fast, slow) | beam.Flatten()
        assert_that(_count_per_window(merged), equal_to([6, 6]))


class _OffsetRestrictions(RestrictionProvider):
    """Every element gets the offsets ``[0, stop)``."""

    def __init__(self, stop: int) -> None:
        self._stop = stop

    def initial_restriction(self, element: Any) -> OffsetRange:
        return OffsetRange(0, self._stop)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element: Any, restriction: OffsetRange) -> int:
        return restriction.size()


class _QuietSource(beam.DoFn):
    """An unbounded source with nothing to read until ``until`` (wall time):
    it checkpoints every 200 ms, outputs nothing and never sets a watermark,
    then finishes."""

    def __init__(self, until: float) -> None:
        self._until = until

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: Any,
        tracker: Any = beam.DoFn.RestrictionParam(_OffsetRestrictions(1)),
        estimator: Any = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ) -> Iterator[Any]:
        if time.time() < self._until:
            tracker.defer_remainder(Duration(micros=200_000))
            return
        tracker.try_claim(0)
        yield from ()


class _StampArrival(beam.DoFn):
    """Appends each element with its wall-clock arrival time to a file."""

    def __init__(self, path: str) -> None:
        self._path = path

    def process(self, element: Any) -> Iterator[Any]:
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(json.dumps([element, time.time()]) + "\n")
        yield element


@pytest.mark.parametrize("idle_timeout", [1.0, 0.0], ids=["idle-after-1s", "idleness-off"])
def test_a_source_that_starts_empty_does_not_stall_the_watermark(idle_timeout: float, tmp_path: Path) -> None:
    # Prism deadlocks when an unbounded source starts empty: its watermark
    # holds every reader back forever.  With an idle timeout, a Flatten of an
    # active source and a quiet one follows the active one.
    arrivals = tmp_path / "arrivals.jsonl"
    start = _aligned_start()
    quiet_until = start + 9
    with _pipeline(f"--ferrobeam_source_idle_timeout={idle_timeout}") as p:
        active = p | _impulse(start, 2, 0.25)
        quiet = p | beam.Create([None]) | beam.ParDo(_QuietSource(quiet_until))
        counts = _count_per_window((active, quiet) | beam.Flatten()) | beam.ParDo(_StampArrival(str(arrivals)))
        assert_that(counts, equal_to([4, 4]))
    arrived = [json.loads(line)[1] for line in arrivals.read_text(encoding="utf-8").splitlines()]
    assert len(arrived) == 2
    if idle_timeout:
        # The active source's windows close long before the quiet one ends.
        assert max(arrived) < quiet_until - 3, (arrived, quiet_until)
    else:
        # Without idleness the quiet source holds them until it finishes.
        assert min(arrived) >= quiet_until, (arrived, quiet_until)


def test_slowly_updating_side_input() -> None:
    # Beam's "slowly updating side input using windowing" pattern: a
    # PeriodicImpulse reloads a "model" every second into one-second
    # windows; each main-input element sees the model of its own window.
    start = _aligned_start()
    with _pipeline() as p:
        models = (p
                  | "Reload" >> _impulse(start, 3, 1.0, windowed=True)
                  | "Load" >> beam.Map(lambda t: "model-%d" % round(float(t) - start)))  # yapf: disable
        scored = (p
                  | "Events" >> _impulse(start, 3, 0.5)
                  | beam.WindowInto(window.FixedWindows(1))
                  | "Score" >> beam.Map(
                      lambda t, ms: (round(float(t) - start, 1), sorted(ms)),
                      ms=beam.pvalue.AsList(models)))  # yapf: disable
        assert_that(scored, equal_to([(i / 2, ["model-%d" % (i // 2)]) for i in range(6)]))


class _NeverDefers(beam.DoFn):
    """Emits a number every 20 ms and never checkpoints by itself; stops
    (claiming the end of its restriction) once ``marker`` exists, which only
    a later stage writes, after seeing its output."""

    def __init__(self, marker: str) -> None:
        self._marker = marker

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: Any,
        tracker: Any = beam.DoFn.RestrictionParam(_OffsetRestrictions(10**9)),
    ) -> Iterator[int]:
        position = tracker.current_restriction().start
        while not Path(self._marker).exists():
            if not tracker.try_claim(position):
                return
            yield position
            position += 1
            time.sleep(0.02)
        tracker.try_claim(tracker.current_restriction().stop)


class _TouchMarker(beam.DoFn):
    """Writes the marker, and records each number it sees."""

    def __init__(self, marker: str) -> None:
        self._marker = marker

    def process(self, element: int) -> Iterator[int]:
        with open(self._marker + ".seen", "a", encoding="utf-8") as f:
            f.write("%d\n" % element)
        Path(self._marker).touch()
        yield element


def test_runner_checkpoints_a_splittable_dofn_that_never_defers(tmp_path: Path) -> None:
    # Outputs of a bundle are only committed when it ends, and this DoFn's
    # bundle would never end: the runner asks it to checkpoint after a
    # second, its output reaches the next stage (across a Reshuffle, a stage
    # boundary), which writes the marker the DoFn stops at when resumed.
    marker = str(tmp_path / "marker")
    started = time.time()
    with _pipeline() as p:
        _ = (p
             | beam.Create([None])
             | beam.ParDo(_NeverDefers(marker))
             | beam.Reshuffle()
             | beam.ParDo(_TouchMarker(marker)))  # yapf: disable
    assert time.time() - started < 60
    seen = [int(line) for line in Path(marker + ".seen").read_text(encoding="utf-8").split()]
    # No number twice (the checkpoint repeats nothing; the runner may also
    # split the huge restriction for parallelism, so the numbers need not
    # be contiguous), and the first second's output did get through.
    assert 0 in seen and len(set(seen)) == len(seen), seen
    assert len(seen) >= 10, seen


def test_a_triggered_unbounded_side_input_in_the_global_window_is_refused() -> None:
    # Its main input would wait for the end of the global window forever:
    # refused at submission, naming the transform and the way that works.
    from ferrobeam import PipelineRefusedError  # pylint: disable=import-outside-toplevel
    start = _aligned_start()
    with pytest.raises(PipelineRefusedError) as excinfo:
        with _pipeline() as p:
            models = (p
                      | "Reload" >> _impulse(start, 3, 1.0)
                      | beam.WindowInto(window.GlobalWindows(),
                                        trigger=trigger.Repeatedly(trigger.AfterCount(1)),
                                        accumulation_mode=trigger.AccumulationMode.DISCARDING))  # yapf: disable
            _ = (p
                 | "Events" >> _impulse(start, 3, 0.5)
                 | "Score" >> beam.Map(lambda t, ms: (t, ms), ms=beam.pvalue.AsList(models)))  # yapf: disable
    message = str(excinfo.value)
    assert "Score" in message and "global window" in message and "apply_windowing=True" in message, message
