"""Run one pipeline on ferrobeam and on Beam's DirectRunner and compare.

Each output element is recorded with its timestamp, window and pane, so the
comparison covers what triggers, timers and windowing decide, not only values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

Build = Callable[[beam.Pipeline], beam.PCollection]


class _Describe(beam.DoFn):
    """Appends each element, with its timestamp, window and pane, to a file
    as one JSON line.  (A side effect rather than a sink: Beam's file sinks
    refuse the unbounded output of a TestStream on the DirectRunner.  Lines
    are short, and O_APPEND writes of them do not interleave.)"""

    def __init__(self, path: str) -> None:
        self._path = path

    def process(
        self,
        element: Any,
        timestamp: Any = beam.DoFn.TimestampParam,
        window: Any = beam.DoFn.WindowParam,
        pane: Any = beam.DoFn.PaneInfoParam,
    ):
        win = "global" if isinstance(window, beam.transforms.window.GlobalWindow) else [
            float(window.start), float(window.end)]
        line = json.dumps({
            "value": _plain(element),
            # Portable runners carry milliseconds; the DirectRunner keeps
            # microseconds (a window of a TestStream ends at x.999999 there).
            "timestamp": (timestamp.micros // 1000) / 1000,
            "window": win,
            "pane": [pane.is_first, pane.is_last, pane.timing, pane.index, pane.nonspeculative_index],
        }, sort_keys=True)
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _plain(v: Any) -> Any:
    """JSON-able, order-insensitive where Beam leaves order unspecified (grouped values)."""
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, (list, set, frozenset)) or type(v).__name__ == "_UnwindowedValues":
        return sorted((_plain(x) for x in v), key=json.dumps)
    return v


def run_and_describe(build: Build, runner: str, out_dir: Path, *flags: str) -> list[dict]:
    """Runs ``build`` on ``runner`` and returns its described output, sorted."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ("%s.jsonl" % runner.replace(".", "_"))
    path.unlink(missing_ok=True)
    # Both runners refuse triggers that may finish (and so drop late data)
    # unless told that is intended.
    options = PipelineOptions(["--runner=%s" % runner, "--allow_unsafe_triggers", *flags])
    with beam.Pipeline(options=options) as p:
        _ = build(p) | beam.ParDo(_Describe(str(path)))
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [json.loads(line) for line in sorted(lines)]


def compare_with_direct_runner(build: Build, out_dir: Path) -> list[dict]:
    """Asserts ferrobeam's output equals the DirectRunner's; returns it."""
    direct = run_and_describe(build, "DirectRunner", out_dir)
    ours = run_and_describe(build, "ferrobeam.FerrobeamRunner", out_dir)
    assert ours == direct, "ferrobeam:\n%s\nDirectRunner:\n%s" % (
        "\n".join(map(str, ours)), "\n".join(map(str, direct)))
    assert ours, "the pipeline produced nothing: the comparison proves nothing"
    return ours

