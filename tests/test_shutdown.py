"""A Python program using the embedded job server exits cleanly.

The embedded server runs jobs on threads of the user's own process. When the
program ends, ``atexit`` stops the server, and the process must not exit
while a job still has a RocksDB database open: RocksDB's background threads
outlive ``main`` and lock mutexes that C++ static destructors have already
destroyed, and RocksDB then aborts the process ("pthread lock: Invalid
argument", exit status 134, seen at the end of a CI run).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import load_native

#: A streaming job whose windowed GroupByKey buffers in RocksDB, cancelled or
#: left running when the program ends (argv[2]: "cancel" or "exit"). The
#: handler registered first runs last, after ferrobeam's own ``atexit`` has
#: stopped the servers: it reports how many state databases are still open,
#: and how long the stop took.
_PROGRAM = textwrap.dedent("""
    import atexit, sys, time
    from ferrobeam import _native

    atexit.register(lambda: print("open at exit:", _native.open_state_databases(),
                                  "stopped in %.1f s" % (time.time() - exit_started[0]), flush=True))
    exit_started = [0.0]

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.transforms import window
    from apache_beam.transforms.periodicsequence import PeriodicImpulse
    from apache_beam.utils.timestamp import Timestamp

    now = time.time()
    p = beam.Pipeline(options=PipelineOptions([
        "--runner=ferrobeam.FerrobeamRunner", "--streaming", "--state_backend=rocksdb",
        "--ferrobeam_work_dir=" + sys.argv[1], "--ferrobeam_progress=off"]))
    _ = (p
         | PeriodicImpulse(start_timestamp=Timestamp(now), stop_timestamp=Timestamp(now + 600),
                           fire_interval=0.005)
         | beam.WindowInto(window.FixedWindows(60))
         | beam.Map(lambda t: (int(t * 1000) % 97, b"x" * 200))
         | beam.GroupByKey()
         | beam.Map(len))
    result = p.run()
    deadline = time.time() + 120
    while _native.open_state_databases() == 0 or str(result.state) != "RUNNING":
        if time.time() > deadline:
            sys.exit("the job never opened its RocksDB state: " + str(result.state))
        time.sleep(0.2)
    time.sleep(3)  # let it buffer and flush
    print("open while running:", _native.open_state_databases(), flush=True)
    if sys.argv[2] == "cancel":
        result.cancel()
        try:
            result.wait_until_finish()
        except RuntimeError:  # Beam raises for a job that ends CANCELLED
            pass
        deadline = time.time() + 10
        while _native.open_state_databases() and time.time() < deadline:
            time.sleep(0.1)
        print("open after cancel:", _native.open_state_databases(), flush=True)
    # Otherwise exit with the job still running. Registered last, this runs
    # first: the time ferrobeam's own handler takes is measured from here.
    atexit.register(lambda: exit_started.__setitem__(0, time.time()))
""")


def _run(work: Path, mode: str) -> str:
    """Runs the program to its end; returns what it printed, once it has
    checked that the job had its database open and the program exited 0."""
    load_native()
    run = subprocess.run([sys.executable, "-c", _PROGRAM, str(work), mode],
                         capture_output=True, text=True, timeout=200, check=False)
    out = run.stdout + run.stderr
    assert "open while running: 1" in run.stdout, out
    assert "pthread" not in out, out
    assert run.returncode == 0, out
    return out


@pytest.mark.timeout(240)
def test_exit_with_a_running_rocksdb_job_closes_its_state_first(tmp_path: Path) -> None:
    out = _run(tmp_path / "work", "exit")
    assert "open at exit: 0" in out, out
    # The program has two embedded servers (the one the runner warms up at
    # construction, and the one its --ferrobeam_work_dir asks for): stopping
    # the idle one must not wait out the grace period (30 s) for the other's
    # job, which only its own stop cancels.
    stopped_in = float(re.search(r"stopped in ([0-9.]+) s", out).group(1))  # type: ignore[union-attr]
    assert stopped_in < 15, out


@pytest.mark.timeout(240)
def test_a_cancelled_job_closes_its_state(tmp_path: Path) -> None:
    # A cancelled job's last bundle never returned: its state handler, and
    # through it the RocksDB database, stayed registered with the server.
    out = _run(tmp_path / "work", "cancel")
    assert "open after cancel: 0" in out, out


def test_stop_refuses_a_bad_timeout_and_can_be_repeated(tmp_path: Path) -> None:
    native = load_native()
    server = native.start_job_server(work_dir=tmp_path / "work", dashboard_port=None)
    with pytest.raises(RuntimeError, match="non-negative"):
        server.stop(timeout=-1.0)
    # A server with no jobs holds no state: these return the databases that
    # other servers of this process still have open, without waiting for them.
    assert isinstance(server.stop(timeout=0.0), int)
    assert isinstance(server.stop(timeout=0.0), int)
