"""Shared fixtures for ferrobeam's Python integration tests.

The tests need the compiled extension (``ferrobeam._native``). When it is
missing, every test that needs it *fails* with instructions; nothing is
skipped silently.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

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


def get_json(url: str) -> Any:
    """GETs ``url`` and parses its JSON (checking it says it is JSON)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers.get_content_type() == "application/json"
        return json.loads(response.read())


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Calls ``check`` until it returns something true, and returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.25)


def stage_of(job: dict[str, Any], kind: str, name_part: str = "") -> dict[str, Any]:
    """The one stage of ``kind`` (and with ``name_part`` in its name) in a
    dashboard job's JSON."""
    matches = [s for s in job["stages"] if s["kind"] == kind and name_part in s["name"]]
    assert len(matches) == 1, (kind, name_part, [(s["kind"], s["name"]) for s in job["stages"]])
    return dict(matches[0])


# --- The dashboard (docs/dashboard-api.md): the session job server's, a
# finished batch job and a live streaming job to look at. Shared by
# test_dashboard_api.py and test_dashboard_browser.py.


@pytest.fixture(scope="session")
def dashboard(job_server: object, job_endpoint: str) -> str:
    """Base URL of the session job server's dashboard (no trailing slash)."""
    url = getattr(job_server, "dashboard_url")
    assert url and url.startswith("http://127.0.0.1:"), url
    return str(url).rstrip("/")


def _beam() -> Any:
    import apache_beam  # pylint: disable=import-outside-toplevel
    return apache_beam


def _count_and_measure() -> Any:
    """A DoFn counting its elements (``demo/seen``) and their sizes
    (``demo/size``), made on first use so conftest imports no Beam."""
    from apache_beam.metrics import Metrics  # pylint: disable=import-outside-toplevel
    beam = _beam()

    class CountAndMeasure(beam.DoFn):
        def __init__(self) -> None:
            self.seen = Metrics.counter("demo", "seen")
            self.sizes = Metrics.distribution("demo", "size")

        def process(self, x: int) -> Iterator[int]:
            self.seen.inc()
            self.sizes.update(x % 10)
            yield x

    return CountAndMeasure()


@pytest.fixture(scope="session")
def batch_job(job_endpoint: str, dashboard: str) -> dict[str, Any]:
    """A finished batch job (``dash-batch``): 1000 elements through
    ParDo(CountAndMeasure), 7 keys grouped; its ``/api/jobs/ID`` JSON."""
    beam = _beam()
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
    from apache_beam.runners.portability.portable_runner import PortableRunner  # pylint: disable=import-outside-toplevel
    from apache_beam.runners.runner import PipelineState  # pylint: disable=import-outside-toplevel

    options = PipelineOptions(["--job_endpoint=" + job_endpoint, "--environment_type=LOOPBACK",
                               "--job_name=dash-batch"])
    p = beam.Pipeline(runner=PortableRunner(), options=options)
    _ = (p
         | beam.Create(range(1000))
         | "ParDo(CountAndMeasure)" >> beam.ParDo(_count_and_measure())
         | "Key" >> beam.Map(lambda x: (x % 7, x))
         | beam.GroupByKey()
         | "Sizes" >> beam.Map(lambda kv: (kv[0], len(kv[1]))))  # yapf: disable
    result = p.run()
    assert result.wait_until_finish() == PipelineState.DONE
    job_id = result._job_id  # pylint: disable=protected-access
    return dict(get_json("%s/api/jobs/%s" % (dashboard, job_id)))


@dataclasses.dataclass
class LiveJob:
    """A streaming job running on the session job server."""
    result: Any
    job_id: str
    url: str  # its /api/jobs/ID

    def wait_counting(self, timeout: float = 90) -> dict[str, Any]:
        """Waits until the job runs and its GroupByKey counts elements;
        returns the job's JSON then."""
        def live() -> Any:
            job = get_json(self.url)
            gbk = [s for s in job["stages"] if s["kind"] == "gbk"]
            return job if job["state"] == "RUNNING" and gbk and gbk[0]["elements_in"] else None

        return dict(wait_until(live, timeout, "the streaming job to count elements"))


@pytest.fixture
def streaming_job(job_endpoint: str, dashboard: str, tmp_path: Path) -> Iterator[LiveJob]:
    """A streaming job (``dash-stream``) for as long as the test runs:
    ticks every 50 ms, counted (``demo/ticks``), keyed three ways, summed
    per key in one-second windows, a checkpoint a second. Cancelled
    afterwards."""
    beam = _beam()
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
    from apache_beam.transforms import window  # pylint: disable=import-outside-toplevel
    from apache_beam.transforms.periodicsequence import PeriodicImpulse  # pylint: disable=import-outside-toplevel
    from apache_beam.utils.timestamp import Timestamp  # pylint: disable=import-outside-toplevel

    options = PipelineOptions([
        "--runner=ferrobeam.FerrobeamRunner", "--job_endpoint=" + job_endpoint, "--streaming",
        "--job_name=dash-stream", "--checkpoint_dir=" + str(tmp_path / "ckpt"),
        "--checkpoint_interval=1", "--ferrobeam_no_inprocess_worker"])
    p = beam.Pipeline(options=options)
    now = time.time()
    _ = (p
         | PeriodicImpulse(start_timestamp=Timestamp.of(now), stop_timestamp=Timestamp.of(now + 3600),
                           fire_interval=0.05)
         | "Key" >> beam.ParDo(_key_ticks())
         | beam.WindowInto(window.FixedWindows(1))
         | beam.CombinePerKey(sum))  # yapf: disable
    result = p.run()
    job_id = result.job_id()
    try:
        yield LiveJob(result, job_id, "%s/api/jobs/%s" % (dashboard, job_id))
    finally:
        result.cancel()
        with pytest.raises(RuntimeError, match="CANCELLED"):
            result.wait_until_finish(duration=30_000)


def _key_ticks() -> Any:
    """A DoFn keying PeriodicImpulse's ticks three ways, counting them
    (``demo/ticks``)."""
    from apache_beam.metrics import Metrics  # pylint: disable=import-outside-toplevel
    beam = _beam()

    class KeyTicks(beam.DoFn):
        def __init__(self) -> None:
            self.ticks = Metrics.counter("demo", "ticks")

        def process(self, t: float) -> Iterator[tuple[str, int]]:
            self.ticks.inc()
            yield "k%d" % (int(t * 20) % 3), 1

    return KeyTicks()


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
