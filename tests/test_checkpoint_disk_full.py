"""A full disk during checkpoints (issue 5): the checkpoint that does not fit
fails, the job goes on, and the previous checkpoint stays intact and usable.

The checkpoint directory is a small tmpfs (mounted by the test; needs root)
that a ballast file fills once the first checkpoint is there.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

import ferrobeam.io
import recovery_pipeline

TMPFS_BYTES = 3 << 20
EVENTS = 1200
KEYS = 6
RATE = 400.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % TMPFS_BYTES, "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): %s" % made.stderr.strip())
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def pipeline(output: Path, *extra: str) -> beam.Pipeline:
    p = beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", "--streaming", *extra]))
    recovery_pipeline.build(p, EVENTS, KEYS, RATE, str(output))
    return p


def fill(disk: Path) -> None:
    """Writes a ballast file until the disk is full."""
    with open(disk / "ballast", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_a_checkpoint_that_does_not_fit_fails_alone(small_disk: Path, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    checkpoints, output = small_disk / "checkpoints", tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        result = pipeline(output, "--checkpoint_dir=%s" % checkpoints, "--checkpoint_interval=0.1",
                          "--state_backend=memory", "--checkpoints_retained=1").run()
        try:
            deadline = time.monotonic() + 60
            while not list(checkpoints.glob("chk-*/MANIFEST.json")):
                assert time.monotonic() < deadline, "no checkpoint within 60 s"
                time.sleep(0.02)
            fill(small_disk)
        except BaseException:
            result.cancel()
            raise
        with pytest.raises(Exception) as failed:
            result.wait_until_finish()
    # The job could not commit its end, and says so.
    assert "final checkpoint failed" in str(failed.value), failed.value
    failures = [r.getMessage() for r in caplog.records if "checkpoint failed" in r.getMessage()]
    assert any("No space left" in f for f in failures), failures[:3]
    # What is left is complete checkpoints only, and the latest is usable.
    left = sorted(os.listdir(checkpoints))
    assert left and all((checkpoints / d / "MANIFEST.json").exists() for d in left), left
    shown = subprocess.run([sys.executable, "-m", "ferrobeam.cli", "checkpoint", "inspect", str(checkpoints)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    # Resumed from it (checkpointing to a roomier disk), the job finishes
    # and its output, with what the first run published, is exact.
    resumed = pipeline(output, "--restore_from=%s" % checkpoints, "--checkpoint_dir=%s" % (tmp_path / "roomy"))
    assert resumed.run().wait_until_finish() == PipelineState.DONE
    problems = recovery_pipeline.check_output(ferrobeam.io.read_lines(str(output)), EVENTS, KEYS)
    assert not problems, "\n".join(problems)
