"""Shared fixtures for ferrobeam's Python integration tests.

The tests need the compiled extension (``ferrobeam._native``). When it is
missing, every test that needs it *fails* with instructions; nothing is
skipped silently.
"""

from __future__ import annotations

import collections
import glob
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Iterable, Iterator, Optional, Sequence

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
EXAMPLES_DIR = REPO_ROOT / "examples"

# SDK worker processes started by the job server inherit this process's
# environment. Putting the tests directory on their PYTHONPATH lets them
# unpickle DoFns that are defined at module level in these test files (the
# pickler refers to importable modules by name instead of by value).
_pythonpath = os.environ.get("PYTHONPATH", "")
if str(TESTS_DIR) not in _pythonpath.split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(TESTS_DIR), _pythonpath] if p)


def load_native() -> ModuleType:
    """Imports ``ferrobeam._native`` or fails the calling test with advice."""
    try:
        from ferrobeam import _native  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        pytest.fail(
            "ferrobeam._native is not importable (%s). Build it first: "
            "`pip install -e .` or `pip install .` from the repository root." % e,
            pytrace=False,
        )
    return _native


@pytest.fixture(scope="session")
def native() -> ModuleType:
    """The compiled extension module."""
    return load_native()


@pytest.fixture(scope="session")
def job_server(native: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One ferrobeam job server for the whole test session.

    Runs in this process (like the embedded runner does) with two SDK
    workers for the default environment, using this interpreter.
    """
    work_dir = tmp_path_factory.mktemp("job-server")
    server = native.start_job_server(
        host="127.0.0.1",
        port=0,
        python=sys.executable,
        workers=2,
        strict_environments=False,
        work_dir=str(work_dir),
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def job_endpoint(job_server: object) -> str:
    """``host:port`` of the session's job server, for ``--job_endpoint``."""
    endpoint = getattr(job_server, "endpoint")
    assert isinstance(endpoint, str) and endpoint.rsplit(":", 1)[-1].isdigit(), endpoint
    wait_for_job_service(endpoint)
    return endpoint


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """A fresh directory for pipeline outputs."""
    d = tmp_path / "out"
    d.mkdir()
    return d


def wait_for_job_service(endpoint: str, timeout: float = 60.0, proc: Optional[subprocess.Popen] = None) -> None:
    """Blocks until a Beam job service answers at ``endpoint``.

    Any answer other than UNAVAILABLE (for example NOT_FOUND for a made-up
    job id) proves the server is up.

    Raises:
      AssertionError: If the server does not answer in time, or ``proc``
        exits first.
    """
    import grpc  # pylint: disable=import-outside-toplevel
    from apache_beam.portability.api import beam_job_api_pb2  # pylint: disable=import-outside-toplevel
    from apache_beam.portability.api import beam_job_api_pb2_grpc  # pylint: disable=import-outside-toplevel

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(endpoint) as channel:
        stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
        last: Optional[Exception] = None
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise AssertionError("job server exited with %s before answering" % proc.returncode)
            try:
                stub.GetState(beam_job_api_pb2.GetJobStateRequest(job_id="[no-such-job]"), timeout=5)
                return
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    return
                last = e
            time.sleep(0.1)
    raise AssertionError("no job service at %s after %.0fs: %s" % (endpoint, timeout, last))


def free_port() -> int:
    """Returns a TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_output_lines(prefix: os.PathLike | str) -> list[str]:
    """Reads every shard written by WriteToText under ``prefix``, sorted."""
    shards = sorted(glob.glob(str(prefix) + "*"))
    lines: list[str] = []
    for shard in shards:
        with open(shard, encoding="utf-8") as f:
            lines.extend(line.rstrip("\n") for line in f)
    return sorted(lines)


def run_python(args: Sequence[str], timeout: float = 280, cwd: Optional[os.PathLike] = None) -> subprocess.CompletedProcess:
    """Runs ``python ARGS`` with this interpreter and fails on non-zero exit."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=str(cwd or REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, "python %s exited with %d\n--- stdout\n%s\n--- stderr\n%s" % (
        " ".join(args), proc.returncode, proc.stdout[-5000:], proc.stderr[-10000:])
    return proc


class ValidatesRunnerTally:
    """Outcomes of Beam's it_validatesrunner tests, per Beam module, for the
    summary printed at the end of the run (see test_validates_runner.py)."""

    def __init__(self) -> None:
        self.modules: dict[str, collections.Counter] = {}

    def add(self, module: str, results: dict[str, dict], excluded: Iterable[str]) -> None:
        excluded = set(excluded)
        counts: collections.Counter = collections.Counter()
        for test, r in results.items():
            if r["outcome"] == "passed":
                counts["passed"] += 1
            elif r["outcome"] in ("skipped", "xfailed"):
                counts["skipped by Beam"] += 1
            elif test in excluded:
                counts["excluded"] += 1
            else:
                counts["failed"] += 1
        self.modules[module] = counts

    def lines(self) -> list[str]:
        total: collections.Counter = sum(self.modules.values(), collections.Counter())
        n = sum(total.values())
        lines = ["Beam it_validatesrunner tests on ferrobeam: %d passed of %d (%s)" % (
            total["passed"], n, self._details(total))]
        for module, counts in sorted(self.modules.items()):
            lines.append("  %s: %d/%d passed (%s)" % (
                module, counts["passed"], sum(counts.values()), self._details(counts)))
        return lines

    @staticmethod
    def _details(counts: collections.Counter) -> str:
        return ", ".join("%d %s" % (counts[k], k) for k in ("excluded", "skipped by Beam", "failed"))


_VR_TALLY = pytest.StashKey[ValidatesRunnerTally]()


@pytest.fixture
def validates_runner_tally(request: pytest.FixtureRequest) -> ValidatesRunnerTally:
    """The session's tally of Beam it_validatesrunner outcomes."""
    return request.config.stash.setdefault(_VR_TALLY, ValidatesRunnerTally())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    tally = config.stash.get(_VR_TALLY, None)
    if tally is not None and tally.modules:
        terminalreporter.section("Beam it_validatesrunner")
        for line in tally.lines():
            terminalreporter.write_line(line)
