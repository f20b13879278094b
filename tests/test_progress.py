"""Progress in the terminal (``--ferrobeam_progress``, ferrobeam/progress.py)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import window
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.utils.timestamp import Timestamp

from ferrobeam import progress

BATCH_SCRIPT = """
import sys, time
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

def slow(x):
    time.sleep(0.002)
    return x

options = PipelineOptions(["--runner=ferrobeam.FerrobeamRunner"] + sys.argv[1:])
with beam.Pipeline(options=options) as p:
    _ = (p
         | beam.Create(range(1500))
         | beam.Map(slow)
         | "Key" >> beam.Map(lambda x: (x % 7, x))
         | beam.GroupByKey()
         | "Count" >> beam.Map(lambda kv: (kv[0], len(kv[1]))))
print("PIPELINE-END")
"""


def run_batch(tmp_path: Path, tty: bool, *args: str) -> str:
    """Runs the batch script with stdout and stderr on a terminal or a pipe."""
    script = tmp_path / "batch.py"
    script.write_text(BATCH_SCRIPT)
    command = [sys.executable, str(script), *args]
    if not tty:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout + proc.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the program ended
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert proc.wait(timeout=30) == 0, output.decode(errors="replace")[-3000:]
    return output.decode(errors="replace")


def progress_lines(output: str) -> list[str]:
    """The progress lines, redrawn ones split apart."""
    return [part.replace("\x1b[2K", "").strip()
            for line in output.splitlines() for part in line.split("\r")
            if "ferrobeam: " in part]  # yapf: disable


def test_batch_job_in_a_terminal_shows_progress_then_a_summary(tmp_path: Path) -> None:
    output = run_batch(tmp_path, tty=True)
    assert "PIPELINE-END" in output
    lines = progress_lines(output)
    assert lines, output[-2000:]
    final = lines[-1]
    # 6 stages: Impulse, Create's expansion, the reshuffle, the Maps, GroupByKey, Count.
    assert final.startswith("ferrobeam: DONE · stages 6/6 done · "), final
    assert "elements" in final
    assert "\r\x1b[2K" in output, "a terminal line is redrawn in place"
    running = [l for l in lines if "RUNNING" in l]
    assert all("running: " in l for l in running), running


def test_batch_job_without_a_terminal_is_quiet(tmp_path: Path) -> None:
    output = run_batch(tmp_path, tty=False)
    assert "PIPELINE-END" in output
    assert progress_lines(output) == []


def test_progress_off_is_quiet_even_in_a_terminal(tmp_path: Path) -> None:
    output = run_batch(tmp_path, True, "--ferrobeam_progress=off")
    assert "PIPELINE-END" in output
    assert progress_lines(output) == []


def test_streaming_job_prints_the_dashboard_and_status_lines(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(progress, "STREAMING_STATUS_EVERY", 1.0)
    options = PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", "--streaming",
                               "--ferrobeam_progress=on", "--job_name=progress-stream"])
    now = time.time()
    with beam.Pipeline(options=options) as p:
        _ = (p
             | PeriodicImpulse(start_timestamp=Timestamp.of(now), stop_timestamp=Timestamp.of(now + 5),
                               fire_interval=0.05)
             | beam.Map(lambda t: ("k", 1))
             | beam.WindowInto(window.FixedWindows(1))
             | beam.CombinePerKey(sum))  # yapf: disable
    err = capfd.readouterr().err
    lines = progress_lines(err)
    assert lines and lines[0].startswith("ferrobeam: dashboard http://127.0.0.1:"), lines
    assert "/#/jobs/" in lines[0]
    status = [l for l in lines[1:] if l.startswith("ferrobeam: progress-stream")]
    assert len(status) >= 3, lines
    assert any(" RUNNING " in l and "elements" in l and "workers" in l for l in status), status
    assert "DONE" in status[-1], status[-1]


def test_status_line_figures() -> None:
    job = {
        "name": "j", "state": "RUNNING", "duration_ms": 75_000, "now_ms": 10_000,
        "stages": [
            {"state": "running", "name": "a", "elements_in": None, "output_watermark_ms": 4_000},
            {"state": "running", "name": "b", "elements_in": 1500, "output_watermark_ms": 7_000},
        ],
        "workers": [{"state": "running"}, {"state": "lost"}],
        "checkpoints": [{"kind": "checkpoint", "id": 3, "ok": True}],
    }
    earlier = dict(job, now_ms=8_000, stages=[{"elements_in": 500}])
    assert progress.format_streaming(job, earlier) == (
        "ferrobeam: j RUNNING · 1:15 · 1,500 elements (500/s) · watermark 6.0 s behind"
        " · 1 workers (1 lost) · checkpoint 3 ok")
    assert progress.format_batch(dict(job, duration_ms=1200)) == (
        "ferrobeam: RUNNING · stages 0/2 done, running: a · 1,500 elements · 1.2 s")
