"""Captures: a sink replacement that records what reaches it.

The capturing DoFn runs in SDK workers, which are other processes, so it
writes what it saw to files in a directory the test owns: one file per
bundle, written under a temporary name and renamed, so a reader (the test,
during a streaming run or after it) only ever sees whole bundles. Each
record keeps the element's value, timestamp, window and pane.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.internal import pickler
from apache_beam.transforms.window import BoundedWindow, GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

__all__ = ["Capture", "Captured"]

_TIMING_NAMES = {
    PaneInfoTiming.EARLY: "EARLY",
    PaneInfoTiming.ON_TIME: "ON_TIME",
    PaneInfoTiming.LATE: "LATE",
    PaneInfoTiming.UNKNOWN: "UNKNOWN",
}

#: Suffix of finished bundle files; anything else in the directory is ignored.
_BUNDLE_SUFFIX = ".bundle"


@dataclass(frozen=True)
class Captured:
    """One element as it reached a captured sink.

    Attributes:
      value: The element.
      timestamp: Its event timestamp.
      window: The window it was in (an element in several windows is
        captured once per window, as Beam's runners process it).
      pane: Beam's ``PaneInfo`` of the element.
    """

    value: Any
    timestamp: Timestamp
    window: BoundedWindow
    pane: PaneInfo

    @property
    def timing(self) -> str:
        """``"EARLY"``, ``"ON_TIME"``, ``"LATE"`` or ``"UNKNOWN"``."""
        return _TIMING_NAMES.get(self.pane.timing, str(self.pane.timing))

    @property
    def pane_index(self) -> int:
        return int(self.pane.index)

    @property
    def is_last(self) -> bool:
        return bool(self.pane.is_last)


class Capture:
    """What a captured sink received; read it during or after the run.

    A capture is empty until the pipeline runs. Reading is cheap enough to
    poll while a streaming job runs (see :meth:`wait_for`).
    """

    def __init__(self, label: str, directory: str) -> None:
        self.label = label
        self.directory = directory

    def __repr__(self) -> str:
        return "Capture(%r, %d records)" % (self.label, len(self.records()))

    def records(self) -> list[Captured]:
        """Every captured element, in the order its bundles finished."""
        if not os.path.isdir(self.directory):
            return []
        out: list[Captured] = []
        # File names start with a nanosecond clock, so sorting them orders
        # bundles by when they finished.
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(_BUNDLE_SUFFIX):
                continue
            with open(os.path.join(self.directory, name), "rb") as f:
                rows = pickler.loads(f.read())
            for value, micros, window, pane in rows:
                out.append(Captured(value, Timestamp(micros=micros), window, PaneInfo(*pane)))
        return out

    def values(self) -> list[Any]:
        """The captured values, in arrival order."""
        return [r.value for r in self.records()]

    def timestamped(self) -> list[tuple[Any, float]]:
        """``(value, timestamp in seconds)`` pairs, in arrival order."""
        return [(r.value, float(r.timestamp)) for r in self.records()]

    def by_window(self) -> dict[BoundedWindow, list[Any]]:
        """Values per window, each window's values in pane order."""
        grouped: dict[BoundedWindow, list[Captured]] = {}
        for r in self.records():
            grouped.setdefault(r.window, []).append(r)
        return {w: [r.value for r in sorted(rs, key=lambda r: r.pane_index)] for w, rs in grouped.items()}

    def panes(self, where: Optional[Callable[[Any], bool]] = None) -> list[tuple[BoundedWindow, str, Any]]:
        """``(window, timing, value)`` per captured element, ready to compare.

        Sorted by window (end, then start) and, within a window, by pane
        index, so early, on-time and late panes of one window come in the
        order Beam fired them. ``where`` keeps only the values it accepts
        (for example, one key).
        """
        rows = [r for r in self.records() if where is None or where(r.value)]
        rows.sort(key=lambda r: (_window_sort_key(r.window), r.pane_index))
        return [(r.window, r.timing, r.value) for r in rows]

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Captured]:
        """Waits until at least ``count`` records arrived (streaming runs).

        Raises:
          TimeoutError: If they did not arrive within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            records = self.records()
            if len(records) >= count:
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(
                    "capture %r has %d records after %.0f s, expected at least %d"
                    % (self.label, len(records), timeout, count))
            time.sleep(0.05)


def _window_sort_key(window: BoundedWindow) -> tuple[int, int]:
    if isinstance(window, GlobalWindow):
        return (1 << 62, 0)
    start = getattr(window, "start", None)
    return (window.max_timestamp().micros, start.micros if start is not None else 0)


class _CaptureDoFn(beam.DoFn):
    """Records each element with its timestamp, window and pane."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._rows: list[tuple[Any, int, BoundedWindow, tuple[Any, ...]]] = []

    def start_bundle(self) -> None:
        self._rows = []

    def process(self, element: Any, timestamp: Any = beam.DoFn.TimestampParam,
                window: Any = beam.DoFn.WindowParam, pane: Any = beam.DoFn.PaneInfoParam) -> Iterator[Any]:
        pane_fields = (pane.is_first, pane.is_last, pane.timing, pane.index, pane.nonspeculative_index)
        self._rows.append((element, int(timestamp.micros), window, pane_fields))
        return iter(())

    def finish_bundle(self) -> None:
        if not self._rows:
            return
        os.makedirs(self._directory, exist_ok=True)
        name = "%020d-%d-%d-%s" % (time.time_ns(), os.getpid(), threading.get_ident(), uuid.uuid4().hex[:8])
        tmp = os.path.join(self._directory, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(pickler.dumps(self._rows))
        os.replace(tmp, os.path.join(self._directory, name + _BUNDLE_SUFFIX))
        self._rows = []


class CaptureSink(beam.PTransform):
    """Stands in for a sink: records its input, outputs nothing.

    ``output_tags`` are the tags of the replaced transform's outputs: each
    gets an empty PCollection, so whatever read the sink's results (file
    names, say) still has an input.
    """

    def __init__(self, directory: str, output_tags: Sequence[Optional[str]]) -> None:
        super().__init__()
        self._directory = directory
        self._output_tags = list(output_tags)

    def expand(self, pcoll: Any) -> Any:
        done = pcoll | "Capture" >> beam.ParDo(_CaptureDoFn(self._directory))
        if not self._output_tags:
            return pvalue.PDone(pcoll.pipeline)
        if self._output_tags == [None]:
            return done
        return {tag: pcoll | ("Empty[%s]" % tag) >> beam.FlatMap(lambda _: ()) for tag in self._output_tags}
