"""Running, watching and killing :mod:`recovery_pipeline` processes.

Shared by ``test_checkpoint_recovery.py`` and ``scripts/crash_soak.py``.
Each run is a process in its own session (so its process group is its
pid); a kill is SIGKILL to that group and to every descendant found in
``/proc`` first, in case one left the group.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Callable, Optional, Sequence

TESTS_DIR = Path(__file__).resolve().parent
SCRIPT = TESTS_DIR / "recovery_pipeline.py"


def command(output: os.PathLike | str, events: int, keys: int, rate: float, *beam_args: str) -> list[str]:
    """The command line running :mod:`recovery_pipeline` with this interpreter."""
    return [sys.executable, str(SCRIPT), "--events", str(events), "--keys", str(keys),
            "--rate", str(rate), "--output", str(output), *beam_args]


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (all its threads'), per ``/proc``."""
    found: list[int] = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, task), encoding="ascii") as f:
                found.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, breadth first."""
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children(queue.pop(0)):
            if child not in found:
                found.append(child)
                queue.append(child)
    return found


def is_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper is not)."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii") as f:
            # "pid (comm) state ...": the state follows the last ')'.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def cmdline(pid: int) -> bytes:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def sdk_workers(pid: int, pid_dir: Optional[os.PathLike | str] = None) -> list[int]:
    """The live Python SDK worker processes below ``pid`` (ferrobeam starts
    them with ``python -c`` code that runs Beam's ``sdk_worker_main``).

    With ``pid_dir`` (``recovery_pipeline.py --pid_dir``), only those that
    have set up the pipeline's stateful DoFn: connected workers running
    bundles, not ones still starting.
    """
    workers = [p for p in descendants(pid) if b"sdk_worker_main" in cmdline(p) and is_alive(p)]
    if pid_dir is not None:
        try:
            marked = set(os.listdir(pid_dir))
        except FileNotFoundError:
            marked = set()
        workers = [p for p in workers if str(p) in marked]
    return workers


def committed(output: os.PathLike | str) -> set[str]:
    """Names of the committed ``part-*.txt`` files in ``output``."""
    try:
        return {n for n in os.listdir(output) if n.startswith("part-") and n.endswith(".txt")}
    except FileNotFoundError:
        return set()


def pending(output: os.PathLike | str) -> set[str]:
    """Names of the sink's hidden pending files in ``output``."""
    try:
        return {n for n in os.listdir(output) if n.startswith(".pending-")}
    except FileNotFoundError:
        return set()


def tree_snapshot(root: os.PathLike | str) -> dict[str, str]:
    """Every entry under ``root`` (relative path -> sha256 of a file,
    ``"dir"`` or ``"link -> target"``), to compare before and after."""
    root = Path(root)
    if not root.exists():
        return {}
    snapshot: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            snapshot[rel] = "link -> %s" % os.readlink(path)
        elif path.is_dir():
            snapshot[rel] = "dir"
        else:
            snapshot[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return snapshot


class PipelineRun:
    """One run of a command in its own session, output to ``log``."""

    def __init__(self, cmd: Sequence[str], log: Path, env: Optional[dict[str, str]] = None) -> None:
        self.cmd = list(cmd)
        self.log = log
        self.started = time.monotonic()
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=env)
        self.pid = self.proc.pid

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def wait(self, timeout: float) -> int:
        """The exit status; the whole tree is killed if it takes longer than
        ``timeout`` (and AssertionError raised)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_tree()
            raise AssertionError("%s did not finish within %.0fs\n%s" % (
                " ".join(self.cmd), timeout, self.log_tail())) from None

    def kill_tree(self, timeout: float = 30.0) -> None:
        """SIGKILLs the run's process group and every descendant, and waits
        until none of them is alive."""
        victims = descendants(self.pid)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while any(is_alive(p) for p in victims):
            if time.monotonic() > deadline:
                raise AssertionError("processes %s survived SIGKILL" % [p for p in victims if is_alive(p)])
            time.sleep(0.02)

    def log_tail(self, chars: int = 6000) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "--- %s (last %d chars)\n%s" % (self.log, chars, text[-chars:])


def wait_for_new_part(run: PipelineRun, output: os.PathLike | str, seen: set[str], timeout: float) -> Optional[float]:
    """Waits until ``output`` holds a committed file not in ``seen``.

    Returns:
      The time (``time.monotonic()``) it was seen, or None if the run ended
      first.

    Raises:
      AssertionError: If neither happens within ``timeout`` seconds (the run
        is killed).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if committed(output) - seen:
            return time.monotonic()
        if run.poll() is not None:
            # One last look: the run may have committed and ended since.
            return time.monotonic() if committed(output) - seen else None
        time.sleep(0.02)
    run.kill_tree()
    raise AssertionError("no new committed output in %s within %.0fs\n%s" % (output, timeout, run.log_tail()))


@dataclass
class CrashLoop:
    """What :func:`kill_and_restart` did."""

    kills: int = 0
    #: Kills at a random moment of start-up or restore.
    early: int = 0
    runs: int = 0
    #: Per restart that got to commit new output: seconds from its start.
    recoveries: list[float] = field(default_factory=list)
    #: The run left going (started after the last kill), to wait for.
    last: Optional[PipelineRun] = None


def kill_and_restart(start: Callable[[], PipelineRun], output: os.PathLike | str, rng: random.Random, kills: int,
                     early_kill_chance: float, timeout: float,
                     progress: Optional[Callable[[CrashLoop], None]] = None) -> CrashLoop:
    """Starts the job, SIGKILLs its process tree at random moments and
    restarts it, ``kills`` times (fewer if it finishes first): after the run
    has committed new output, plus 0-1.5 s; or, with ``early_kill_chance``,
    at a random moment of start-up or restore.  The run after the last kill
    is left going in ``last``."""
    loop = CrashLoop()
    seen: set[str] = set()
    run: Optional[PipelineRun] = None
    while loop.kills < kills:
        run = start()
        loop.runs += 1
        if rng.random() < early_kill_chance:
            time.sleep(rng.uniform(0.3, 3.0))
            loop.early += 1
        else:
            appeared = wait_for_new_part(run, output, seen, timeout=timeout)
            if appeared is None:
                break
            if loop.runs > 1:
                loop.recoveries.append(appeared - run.started)
            time.sleep(rng.uniform(0.0, 1.5))
        if run.poll() is not None:
            break
        run.kill_tree()
        loop.kills += 1
        seen = committed(output)
        run = None
        if progress is not None:
            progress(loop)
    if run is None:
        run = start()
        loop.runs += 1
        appeared = wait_for_new_part(run, output, seen, timeout=timeout)
        if appeared is not None:
            loop.recoveries.append(appeared - run.started)
    loop.last = run
    return loop
