"""Progress of a running job in the terminal.

A batch job run from :class:`ferrobeam.FerrobeamRunner` in a terminal
shows one line that updates in place: stages done and running, elements
processed and the time so far, then a summary when it ends. A streaming
job prints the dashboard's address, then a one-line status every
``STREAMING_STATUS_EVERY`` seconds. Nothing is printed when stderr is not a
terminal, or with ``--ferrobeam_progress=off`` (``on`` prints even when it
is not a terminal, as plain lines).

The figures come from the job server's dashboard API (``/api/jobs/ID``), the
same the web page shows; see ``docs/dashboard-api.md``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Optional, TextIO

__all__ = ["ProgressReporter", "STREAMING_STATUS_EVERY", "format_batch", "format_streaming"]

#: Seconds between the status lines of a streaming job.
STREAMING_STATUS_EVERY = 10.0
#: Seconds between two looks at a batch job.
_BATCH_POLL = 0.5
_TERMINAL = {"DONE", "FAILED", "CANCELLED", "DRAINED", "UPDATED"}
# Beam's watermark bounds in milliseconds.
_WATERMARK_BOUND = 9223372036854775


def _elements(job: dict[str, Any]) -> int:
    """Elements the job's stages have taken in, summed over stages."""
    return sum(s.get("elements_in") or 0 for s in job.get("stages", []))


def _seconds(job: dict[str, Any]) -> float:
    return (job.get("duration_ms") or 0) / 1000.0


def _duration(seconds: float) -> str:
    if seconds < 60:
        return "%.1f s" % seconds
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return "%d:%02d:%02d" % (hours, minutes, secs) if hours else "%d:%02d" % (minutes, secs)


def format_batch(job: dict[str, Any]) -> str:
    """One line on a batch job: stages, elements, time.

    Args:
      job: The job as ``/api/jobs/ID`` serves it.

    Returns:
      The line, without a newline.
    """
    stages = job.get("stages", [])
    done = sum(1 for s in stages if s.get("state") == "done")
    running = [s for s in stages if s.get("state") == "running"]
    text = "ferrobeam: %s · stages %d/%d done" % (job.get("state", "?"), done, len(stages))
    if running and job.get("state") not in _TERMINAL:
        text += ", running: %s" % _short(running[0].get("name", "?"))
    return text + " · %s elements · %s" % (format(_elements(job), ","), _duration(_seconds(job)))


def format_streaming(job: dict[str, Any], previous: Optional[dict[str, Any]] = None) -> str:
    """One status line on a streaming job.

    Args:
      job: The job as ``/api/jobs/ID`` serves it.
      previous: The same, an interval earlier (for a rate), or None.

    Returns:
      The line, without a newline.
    """
    text = "ferrobeam: %s %s · %s" % (
        job.get("name") or job.get("id", "?"),
        job.get("state", "?"),
        _duration(_seconds(job)),
    )
    elements = _elements(job)
    text += " · %s elements" % format(elements, ",")
    if previous is not None:
        span = (job.get("now_ms", 0) - previous.get("now_ms", 0)) / 1000.0
        if span > 0:
            text += " (%s/s)" % format(int((elements - _elements(previous)) / span), ",")
    lag = _watermark_lag(job)
    if lag is not None:
        text += " · watermark %s behind" % _duration(lag)
    workers = job.get("workers", [])
    lost = sum(1 for w in workers if w.get("state") == "lost")
    text += " · %d workers%s" % (len(workers) - lost, " (%d lost)" % lost if lost else "")
    checkpoints = [c for c in job.get("checkpoints", []) if c.get("kind") == "checkpoint"]
    if checkpoints:
        last = checkpoints[-1]
        text += " · checkpoint %s %s" % (last.get("id"), "ok" if last.get("ok") else "FAILED")
    return text


def _watermark_lag(job: dict[str, Any]) -> Optional[float]:
    """How far the least output watermark of the job's stages is behind now."""
    marks = [
        s["output_watermark_ms"]
        for s in job.get("stages", [])
        if s.get("output_watermark_ms") is not None
        and abs(s["output_watermark_ms"]) < _WATERMARK_BOUND
    ]
    if not marks:
        return None
    return max(0.0, (job.get("now_ms", 0) - min(marks)) / 1000.0)


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


class ProgressReporter:
    """Polls one job and prints its progress until it ends.

    Args:
      dashboard_url: The job server's dashboard, ``http://HOST:PORT/``.
      job_id: The job to follow.
      streaming: Whether it is a streaming job (status lines) or batch (one
        updating line).
      out: Where to print (stderr by default).
      interactive: Whether ``out`` is a terminal: a batch line is then
        redrawn in place, else printed once per change of stage.
    """

    def __init__(
        self,
        dashboard_url: str,
        job_id: str,
        streaming: bool,
        out: Optional[TextIO] = None,
        interactive: Optional[bool] = None,
    ) -> None:
        self._url = dashboard_url.rstrip("/") + "/api/jobs/" + job_id
        self._dashboard = dashboard_url.rstrip("/") + "/#/jobs/" + job_id
        self._streaming = streaming
        self._out = out or sys.stderr
        self._interactive = self._out.isatty() if interactive is None else interactive
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last_line = ""
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="ferrobeam-progress", daemon=True)

    @staticmethod
    def wanted(mode: Optional[str], out: Optional[TextIO] = None) -> bool:
        """Whether to report, given ``--ferrobeam_progress`` (auto/on/off)."""
        if mode == "off":
            return False
        if mode == "on":
            return True
        stream = out or sys.stderr
        return bool(getattr(stream, "isatty", lambda: False)())

    def start(self) -> None:
        if self._streaming:
            self._print_line("ferrobeam: dashboard %s" % self._dashboard)
        self._thread.start()

    def finish(self) -> None:
        """Stops polling and prints the final figures (once)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        with self._lock:
            if self._finished:
                return
            self._finished = True
        job = self._fetch()
        if job is not None:
            line = format_batch(job) if not self._streaming else format_streaming(job)
            self._show(line, final=True)

    def _fetch(self) -> Optional[dict[str, Any]]:
        try:
            with urllib.request.urlopen(self._url, timeout=2) as response:
                return json.loads(response.read().decode("utf-8"))
        except (urllib.error.URLError, OSError, ValueError):
            # The server went away or is busy: progress is best effort.
            return None

    def _run(self) -> None:
        previous: Optional[dict[str, Any]] = None
        next_status = time.monotonic() + STREAMING_STATUS_EVERY
        while not self._stop.wait(_BATCH_POLL):
            job = self._fetch()
            if job is None:
                continue
            if job.get("state") in _TERMINAL:
                return
            if not self._streaming:
                self._show(format_batch(job), final=False)
            elif time.monotonic() >= next_status:
                next_status += STREAMING_STATUS_EVERY
                self._print_line(format_streaming(job, previous))
                previous = job

    def _show(self, line: str, final: bool) -> None:
        """A batch line: redrawn in place on a terminal, else printed when
        it changes (ignoring the clock)."""
        with self._lock:
            if self._interactive:
                self._out.write("\r\x1b[2K" + line + ("\n" if final else ""))
                self._out.flush()
            else:
                key = line.rsplit(" · ", 1)[0]
                if final or key != self._last_line:
                    self._out.write(line + "\n")
                    self._out.flush()
                self._last_line = key

    def _print_line(self, line: str) -> None:
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()
