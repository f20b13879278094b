#!/usr/bin/env python3
"""Crash soak: kill a checkpointing streaming job many times, then check
that its output is exact.

The long version of ``tests/test_checkpoint_recovery.py`` (not run in CI).
It runs ``tests/recovery_pipeline.py`` with ``--checkpoint_dir``, SIGKILLs
the whole process tree at random moments (after the run has committed new
output, plus 0-1.5 s; or, one time in five, at a random moment of start-up
or restore), reruns the same command (which restores from the latest
checkpoint), and after ``--kills`` kills lets the last run finish. Then it
checks every line with ``recovery_pipeline.check_output`` and prints:

* kills and restores (runs after the first), how many were early;
* time to recover: from a restart to its first newly committed output
  (min / median / p95 / max);
* total time, lines verified, leftover pending files.

Usage::

    python scripts/crash_soak.py                       # 100 kills
    python scripts/crash_soak.py --kills 20 --seed 7 --workdir /tmp/soak --keep

Exit status 0 if the output is exact, 1 if not (the problems are printed),
2 if a run failed or hung.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from crash_harness import CrashLoop  # noqa: E402
from crash_harness import PipelineRun  # noqa: E402
from crash_harness import command  # noqa: E402
from crash_harness import committed  # noqa: E402
from crash_harness import kill_and_restart  # noqa: E402
from crash_harness import pending  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100, help="how many times to kill the job (default 100)")
    parser.add_argument("--events", type=int, default=0,
                        help="events to emit (default: 2 s worth per kill at --rate, plus 10 s)")
    parser.add_argument("--keys", type=int, default=10, help="keys (default 10)")
    parser.add_argument("--rate", type=float, default=100.0, help="events per second (default 100)")
    parser.add_argument("--checkpoint_interval", type=float, default=0.5, help="seconds (default 0.5)")
    parser.add_argument("--early_kill_chance", type=float, default=0.2,
                        help="share of kills at a random moment of start-up/restore (default 0.2)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument("--workdir", default=None, help="where outputs, checkpoints and logs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary work dir afterwards (a given --workdir, or a failed run's, is always kept)")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds a run may take to commit new output, or the last run to finish (default 180)")
    parser.add_argument("beam_args", nargs="*", help="extra pipeline options, after --")
    args = parser.parse_args()

    # The pipeline's modules must import in the runs' workers as here.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(REPO / "tests"), os.environ.get("PYTHONPATH", "")] if p)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    events = args.events or int(args.rate * (2 * args.kills + 10))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ferrobeam-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    output, checkpoints, logs = workdir / "out", workdir / "checkpoints", workdir / "logs"
    for d in (output, checkpoints):
        if d.exists() and any(d.iterdir()):
            print("%s is not empty; give a fresh --workdir" % d, file=sys.stderr)
            return 2
    logs.mkdir(exist_ok=True)
    print("seed %d: %d kills, %d events, %d keys, %.0f events/s, checkpoints every %.2fs, in %s" % (
        seed, args.kills, events, args.keys, args.rate, args.checkpoint_interval, workdir), flush=True)

    runs = 0
    began = time.monotonic()

    def start() -> PipelineRun:
        nonlocal runs
        runs += 1
        cmd = command(output, events, args.keys, args.rate,
                      "--runner=ferrobeam.FerrobeamRunner", "--streaming",
                      "--checkpoint_dir=%s" % checkpoints, "--checkpoint_interval=%s" % args.checkpoint_interval,
                      "--ferrobeam_work_dir=%s" % (workdir / "work" / ("%03d" % runs)), *args.beam_args)
        return PipelineRun(cmd, logs / ("run-%03d.log" % runs))

    def progress(loop: CrashLoop) -> None:
        if loop.kills % 10 == 0:
            print("  %d kills, %.0fs, %d committed files" % (
                loop.kills, time.monotonic() - began, len(committed(output))), flush=True)

    try:
        loop = kill_and_restart(start, output, rng, args.kills, args.early_kill_chance, args.timeout, progress)
        assert loop.last is not None
        run = loop.last
        status = run.wait(timeout=args.timeout + events / max(args.rate, 1.0))
    except AssertionError as e:
        print("FAILED: %s\nseed %d; logs in %s" % (e, seed, logs), file=sys.stderr)
        return 2
    total = time.monotonic() - began
    if status != 0:
        print("FAILED: the last run exited with %d\n%s\nseed %d" % (status, run.log_tail(), seed), file=sys.stderr)
        return 2

    # Imported late: it imports Beam, which the kill loop does not need.
    from ferrobeam.io import read_lines  # pylint: disable=import-outside-toplevel
    from recovery_pipeline import check_output  # pylint: disable=import-outside-toplevel
    lines = read_lines(output)
    problems = check_output(lines, events, args.keys)

    print("kills:              %d (%d during start-up or restore)%s" % (
        loop.kills, loop.early, "" if loop.kills == args.kills else "; the job finished first: raise --events"))
    print("restores:           %d (runs after the first)" % (loop.runs - 1))
    if loop.recoveries:
        ordered = sorted(loop.recoveries)
        p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
        print("time to recover:    min %.2fs, median %.2fs, p95 %.2fs, max %.2fs (restart to next committed output, "
              "%d restarts)" % (ordered[0], statistics.median(ordered), p95, ordered[-1], len(ordered)))
    print("total time:         %.1fs" % total)
    print("lines verified:     %d in %d files (%d events, %d keys)" % (
        len(lines), len(committed(output)), events, args.keys))
    print("pending files left: %d" % len(pending(output)))
    if problems:
        print("NOT EXACT (seed %d, work dir kept: %s):\n  %s" % (seed, workdir, "\n  ".join(problems)))
        return 1
    print("output exact (seed %d)" % seed)
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
