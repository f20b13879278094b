"""Issue 9, security: who may talk to a job server, and what it accepts.

* A non-loopback bind needs ``--allow-remote`` *and* a token; without a
  token it is refused, naming ``--auth_token_file``.
* With a token, every gRPC service (Job API, artifact staging, expansion,
  the Fn API's control, data, state, logging, provision and artifact
  retrieval) answers UNAUTHENTICATED to calls without it or with a wrong
  one, and the dashboard and ``/metrics`` answer 401; with the token they
  work, and a real pipeline runs end to end (its workers authenticate
  through ferrobeam's harness hook).
* Artifact staging refuses a staged name with ``../`` and stops reading an
  artifact at ``--max_artifact_bytes`` (a 2 GB artifact, generated on the
  fly), and the server stays healthy.

The servers here bind 0.0.0.0 (that is the point) and are reached through
127.0.0.1.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import grpc
import pytest

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_artifact_api_pb2
from apache_beam.portability.api import beam_artifact_api_pb2_grpc
from apache_beam.portability.api import beam_expansion_api_pb2
from apache_beam.portability.api import beam_expansion_api_pb2_grpc
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.portability.api import beam_job_api_pb2_grpc
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.portability.api import beam_provision_api_pb2_grpc
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability import artifact_service
from apache_beam.transforms import environments

from conftest import free_port, read_output_lines, wait_for_job_service
from test_cli import ferrobeam_command, run_cli

import ferrobeam
from ferrobeam import _auth

MIB = 1 << 20
#: --max_artifact_bytes of the protected server.
ARTIFACT_LIMIT = 64 * MIB


def _write_token(path: Path, token: str) -> Path:
    path.write_text(token + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


class Server:
    """A ``ferrobeam job-server`` child process and its ports."""

    def __init__(self, proc: subprocess.Popen, log: Path, job_port: int, fn_port: int,
                 dashboard_port: int, work_dir: Path) -> None:
        self.proc = proc
        self.log = log
        self.job = "127.0.0.1:%d" % job_port
        self.fn = "127.0.0.1:%d" % fn_port
        self.dashboard = "http://127.0.0.1:%d" % dashboard_port
        self.work_dir = work_dir


def _start(args: list[str], log: Path, env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    with open(log, "w", encoding="utf-8") as out:
        return subprocess.Popen(ferrobeam_command() + args, stdout=out, stderr=subprocess.STDOUT,
                                env=env)


def _stop(proc: subprocess.Popen, log: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    sys.stderr.write("--- %s (tail)\n%s\n" % (log.name, log.read_text(errors="replace")[-4000:]))


@pytest.fixture(scope="module")
def token() -> str:
    return secrets.token_hex(32)


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory, token: str) -> Path:
    return _write_token(tmp_path_factory.mktemp("token") / "token", token)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, token_file: Path) -> Iterator[Server]:
    """A job server on 0.0.0.0 with --allow-remote and a token."""
    tmp = tmp_path_factory.mktemp("secure-server")
    job_port, fn_port, dashboard_port = free_port(), free_port(), free_port()
    work_dir = tmp / "work"
    log = tmp / "job-server.log"
    env = dict(os.environ)
    env.pop(_auth.TOKEN_ENV, None)
    proc = _start(["job-server", "--host", "0.0.0.0", "--allow-remote",
                   "--auth_token_file", str(token_file),
                   "--port", str(job_port), "--fn_port", str(fn_port),
                   "--dashboard_port", str(dashboard_port), "--workers", "2",
                   "--max_artifact_bytes", "%dMiB" % (ARTIFACT_LIMIT // MIB),
                   "--work-dir", str(work_dir)], log, env=env)
    try:
        # Any answer but UNAVAILABLE means it is up (here: UNAUTHENTICATED).
        wait_for_job_service("127.0.0.1:%d" % job_port, timeout=60, proc=proc)
        yield Server(proc, log, job_port, fn_port, dashboard_port, work_dir)
    finally:
        _stop(proc, log)


# --- binding -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["job-server", "expansion-service"])
def test_non_loopback_bind_without_token_is_refused(command: str) -> None:
    env = dict(os.environ)
    env.pop(_auth.TOKEN_ENV, None)
    for extra in (["--allow-remote"], []):
        proc = subprocess.run(ferrobeam_command() + [command, "--host", "0.0.0.0", "--port", "0"] + extra,
                              capture_output=True, text=True, timeout=60, check=False, env=env)
        assert proc.returncode != 0, proc.stdout
        assert "--auth_token_file" in proc.stderr, proc.stderr
        assert "refusing to bind 0.0.0.0" in proc.stderr, proc.stderr
        assert "listening" not in proc.stdout


def test_a_short_or_empty_token_is_refused(tmp_path: Path) -> None:
    short = _write_token(tmp_path / "short", "abc")
    proc = run_cli("job-server", "--auth_token_file", str(short), "--port", "0")
    assert proc.returncode == 2
    assert "at least 16" in proc.stderr, proc.stderr
    env = dict(os.environ, **{_auth.TOKEN_ENV: " "})
    proc = subprocess.run(ferrobeam_command() + ["expansion-service", "--port", "0"],
                          capture_output=True, text=True, timeout=60, check=False, env=env)
    assert proc.returncode == 2
    assert "empty" in proc.stderr, proc.stderr


# --- every gRPC service checks the token ---------------------------------------


def _stream(*messages: Any) -> Iterator[Any]:
    yield from messages


def _first(responses: Iterator[Any]) -> Any:
    return next(iter(responses), None)


# (service, port: "job" or "fn", call on a channel)
CALLS: list[tuple[str, str, Callable[[grpc.Channel], Any]]] = [
    ("job api", "job", lambda ch: beam_job_api_pb2_grpc.JobServiceStub(ch).GetJobs(
        beam_job_api_pb2.GetJobsRequest(), timeout=10)),
    ("artifact staging", "job", lambda ch: _first(
        beam_artifact_api_pb2_grpc.ArtifactStagingServiceStub(ch).ReverseArtifactRetrievalService(
            _stream(beam_artifact_api_pb2.ArtifactResponseWrapper(staging_token="no-such-token")),
            timeout=10))),
    ("expansion", "job", lambda ch: beam_expansion_api_pb2_grpc.ExpansionServiceStub(ch).Expand(
        beam_expansion_api_pb2.ExpansionRequest(), timeout=10)),
    ("control", "fn", lambda ch: _first(beam_fn_api_pb2_grpc.BeamFnControlStub(ch).Control(
        _stream(), timeout=5))),
    ("data", "fn", lambda ch: _first(beam_fn_api_pb2_grpc.BeamFnDataStub(ch).Data(
        _stream(), timeout=5))),
    ("state", "fn", lambda ch: _first(beam_fn_api_pb2_grpc.BeamFnStateStub(ch).State(
        _stream(beam_fn_api_pb2.StateRequest(id="1")), timeout=5))),
    ("logging", "fn", lambda ch: _first(beam_fn_api_pb2_grpc.BeamFnLoggingStub(ch).Logging(
        _stream(beam_fn_api_pb2.LogEntry.List()), timeout=5))),
    ("provision", "fn", lambda ch: beam_provision_api_pb2_grpc.ProvisionServiceStub(ch).GetProvisionInfo(
        beam_provision_api_pb2.GetProvisionInfoRequest(), timeout=10)),
    ("artifact retrieval", "fn", lambda ch: beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(ch)
        .ResolveArtifacts(beam_artifact_api_pb2.ResolveArtifactsRequest(), timeout=10)),
]


def _code(call: Callable[[grpc.Channel], Any], target: str, token: Optional[str]) -> tuple[Optional[grpc.StatusCode], str]:
    """The status code of ``call`` (None for success) and its details."""
    with grpc.insecure_channel(target) as channel:
        try:
            call(_auth.authed_channel(channel, token))
            return None, ""
        except grpc.RpcError as e:
            return e.code(), e.details() or ""


@pytest.mark.parametrize("name,port,call", CALLS, ids=[c[0] for c in CALLS])
def test_every_service_needs_the_token(server: Server, token: str, name: str, port: str,
                                       call: Callable[[grpc.Channel], Any]) -> None:
    target = server.job if port == "job" else server.fn
    code, details = _code(call, target, None)
    assert code == grpc.StatusCode.UNAUTHENTICATED, (name, code, details)
    assert "--auth_token_file" in details and "authorization: Bearer" in details, details
    code, details = _code(call, target, "0" * 64)
    assert code == grpc.StatusCode.UNAUTHENTICATED, (name, code, details)
    # With the token the call reaches the service (which may still refuse
    # this made-up request, for its own reasons).
    code, details = _code(call, target, token)
    assert code != grpc.StatusCode.UNAUTHENTICATED, (name, details)


def test_standalone_expansion_service_needs_the_token(tmp_path: Path, token: str, token_file: Path) -> None:
    port = free_port()
    log = tmp_path / "expansion.log"
    proc = _start(["expansion-service", "--port", str(port), "--auth_token_file", str(token_file)], log)
    target = "127.0.0.1:%d" % port
    try:
        call = CALLS[2][2]
        deadline = time.monotonic() + 30
        code, details = _code(call, target, None)
        while code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline:
            time.sleep(0.2)
            code, details = _code(call, target, None)
        assert code == grpc.StatusCode.UNAUTHENTICATED, details
        assert _code(call, target, token)[0] != grpc.StatusCode.UNAUTHENTICATED
    finally:
        _stop(proc, log)


# --- the dashboard --------------------------------------------------------------


def _get(url: str, headers: Optional[dict[str, str]] = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


@pytest.mark.parametrize("path", ["/", "/metrics", "/api/jobs", "/app.js"])
def test_dashboard_needs_the_token(server: Server, token: str, path: str) -> None:
    status, headers, body = _get(server.dashboard + path)
    assert status == 401, body
    assert "token" in body and headers.get("www-authenticate", "").startswith("Bearer")
    assert _get(server.dashboard + path, {"Authorization": "Bearer " + "0" * 64})[0] == 401
    assert _get(server.dashboard + path, {"Cookie": "ferrobeam_token=" + "0" * 64})[0] == 401
    assert _get(server.dashboard + path + "?token=" + "0" * 64)[0] == 401
    assert _get(server.dashboard + path, {"Authorization": "Bearer " + token})[0] == 200


def test_dashboard_token_in_the_url_sets_a_cookie(server: Server, token: str) -> None:
    status, headers, _ = _get(server.dashboard + "/?token=" + token)
    assert status == 200
    cookie = headers.get("set-cookie", "")
    assert cookie.startswith("ferrobeam_token=") and "HttpOnly" in cookie, cookie
    # The page's own fetches then carry the cookie.
    status, _, body = _get(server.dashboard + "/api/jobs", {"Cookie": cookie.split(";")[0]})
    assert status == 200 and '"jobs"' in body
    status, _, body = _get(server.dashboard + "/metrics", {"Cookie": cookie.split(";")[0]})
    assert status == 200


# --- a real pipeline, and the clients --------------------------------------------


class _AddSide(beam.DoFn):
    """Reads a side input (the State API) in the worker."""

    def process(self, x: int, side: list[int]) -> Iterator[str]:
        yield "%d:%d" % (x, x + sum(side))


def _pipeline(p: beam.Pipeline, out: Path) -> None:
    side = p | "side" >> beam.Create([100, 1000])
    _ = (p
         | beam.Create(range(6))
         | beam.Map(lambda x: (x % 3, x))
         | beam.GroupByKey()
         | beam.MapTuple(lambda k, vs: k * 10 + sum(vs))
         | beam.ParDo(_AddSide(), beam.pvalue.AsList(side))
         | beam.io.WriteToText(str(out)))


EXPECTED = sorted("%d:%d" % (x, x + 1100) for x in (3, 15, 27))


@pytest.mark.parametrize("workers", ["server", "inprocess", "loopback"])
def test_pipeline_runs_on_a_protected_server(server: Server, token_file: Path, tmp_path: Path,
                                             workers: str) -> None:
    """Submitted with --ferrobeam_auth_token_file: Job API and staging carry
    the token; the workers (started by the server with the token in their
    environment, or in this process with the runner's token: the in-process
    worker, LOOPBACK) send it on control, data, state and logging."""
    out = tmp_path / "out"
    args = ["--job_endpoint=" + server.job, "--ferrobeam_auth_token_file=" + str(token_file)]
    if workers == "server":
        args.append("--ferrobeam_no_inprocess_worker")
    elif workers == "loopback":
        args.append("--environment_type=LOOPBACK")
    with beam.Pipeline(runner=ferrobeam.FerrobeamRunner(), options=PipelineOptions(args)) as p:
        _pipeline(p, out)
    assert read_output_lines(out) == EXPECTED


def test_submitting_without_the_token_is_refused(server: Server, tmp_path: Path) -> None:
    env_token = os.environ.pop(_auth.TOKEN_ENV, None)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            with beam.Pipeline(runner=ferrobeam.FerrobeamRunner(),
                               options=PipelineOptions(["--job_endpoint=" + server.job])) as p:
                _pipeline(p, tmp_path / "out")
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "--ferrobeam_auth_token_file" in raised.value.details()
    finally:
        if env_token is not None:
            os.environ[_auth.TOKEN_ENV] = env_token


def test_cli_clients_send_the_token(server: Server, token: str, token_file: Path) -> None:
    env = dict(os.environ)
    env.pop(_auth.TOKEN_ENV, None)
    proc = subprocess.run(ferrobeam_command() + ["jobs", "--job_endpoint", server.job],
                          capture_output=True, text=True, timeout=60, check=False, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "--auth_token_file" in proc.stderr and "FERROBEAM_AUTH_TOKEN" in proc.stderr, proc.stderr
    proc = subprocess.run(ferrobeam_command() + ["jobs", "--job_endpoint", server.job,
                                                 "--auth_token_file", str(token_file)],
                          capture_output=True, text=True, timeout=60, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(ferrobeam_command() + ["status", "no-such-job", "--job_endpoint", server.job],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=dict(env, **{_auth.TOKEN_ENV: token}))
    assert proc.returncode == 3, proc.stderr  # authenticated: the server looked for the job


def test_job_control_sends_the_token(server: Server, token: str) -> None:
    from ferrobeam import job_control  # pylint: disable=import-outside-toplevel
    with pytest.raises(grpc.RpcError) as raised:
        job_control.cancel_job(server.job, "no-such-job")
    assert raised.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND)
    _auth.remember_token(server.job, token)
    with pytest.raises(grpc.RpcError) as raised:
        job_control.cancel_job(server.job, "no-such-job")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(RuntimeError, match="no job|has no"):
        job_control.savepoint_job(server.job, "no-such-job", "/tmp/unused-savepoint", timeout=10)


# --- artifact staging -------------------------------------------------------------------


def _prepare(server: Server, token: str, staged_name: str, path: str) -> tuple[beam_job_api_pb2.PrepareJobResponse, grpc.Channel]:
    """Prepares a one-transform job whose environment has one file artifact."""
    p = beam.Pipeline()
    _ = p | beam.Create([1])
    env = environments.EmbeddedPythonEnvironment.default()
    proto = p.to_runner_api(default_environment=env)
    for environment in proto.components.environments.values():
        del environment.dependencies[:]
        environment.dependencies.append(beam_runner_api_pb2.ArtifactInformation(
            type_urn=common_urns.artifact_types.FILE.urn,
            type_payload=beam_runner_api_pb2.ArtifactFilePayload(path=path).SerializeToString(),
            role_urn=common_urns.artifact_roles.STAGING_TO.urn,
            role_payload=beam_runner_api_pb2.ArtifactStagingToRolePayload(
                staged_name=staged_name).SerializeToString()))
    channel = _auth.authed_channel(grpc.insecure_channel(server.job), token)
    response = beam_job_api_pb2_grpc.JobServiceStub(channel).Prepare(
        beam_job_api_pb2.PrepareJobRequest(pipeline=proto, job_name="security-test"), timeout=30)
    return response, channel


def _staging_stub(server: Server, token: str) -> beam_artifact_api_pb2_grpc.ArtifactStagingServiceStub:
    return beam_artifact_api_pb2_grpc.ArtifactStagingServiceStub(
        _auth.authed_channel(grpc.insecure_channel(server.job), token))


def _files_named(root: Path, name: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(name)]


@pytest.mark.parametrize("staged_name", ["../../../escaped-artifact.txt", "..", "a/../../escaped-artifact.txt"])
def test_artifact_path_traversal_is_rejected(server: Server, token: str, tmp_path: Path, staged_name: str) -> None:
    source = tmp_path / "payload.txt"
    source.write_text("not allowed out\n")
    response, _ = _prepare(server, token, staged_name, str(source))
    with pytest.raises(grpc.RpcError) as raised:
        artifact_service.offer_artifacts(
            _staging_stub(server, token),
            artifact_service.ArtifactRetrievalService(artifact_service.BeamFilesystemHandler(None).file_reader),
            response.staging_session_token)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert "not a plain file name" in raised.value.details()
    assert repr(staged_name)[1:-1] in raised.value.details() or staged_name in raised.value.details()
    # Nothing landed outside (or inside) the artifact directory.
    assert not _files_named(server.work_dir.parent, "escaped-artifact.txt")


class _Zeros:
    """``size`` bytes of zeros, made chunk by chunk as they are pulled
    (nothing on disk, one chunk in memory); counts what was pulled."""

    CHUNK = b"\0" * MIB

    def __init__(self, size: int) -> None:
        self.size = size
        self.produced = 0

    def __iter__(self) -> Iterator[bytes]:
        while self.produced < self.size:
            self.produced += len(self.CHUNK)
            yield self.CHUNK


def _offer_lazily(stub: Any, staging_token: str, data: Iterator[bytes]) -> None:
    """Beam's reverse artifact retrieval, answering the server's requests
    with ``data`` for every artifact.  Unlike Beam's ``offer_artifacts``
    (which queues chunks as fast as it can read them), gRPC pulls each
    chunk when it can send it, so what was made is what the server took."""
    import queue  # pylint: disable=import-outside-toplevel
    from_server: "queue.Queue[Any]" = queue.Queue()

    def responses() -> Iterator[Any]:
        yield beam_artifact_api_pb2.ArtifactResponseWrapper(staging_token=staging_token)
        while True:
            request = from_server.get()
            if request is None:
                return
            if request.HasField("resolve_artifact"):
                yield beam_artifact_api_pb2.ArtifactResponseWrapper(
                    resolve_artifact_response=beam_artifact_api_pb2.ResolveArtifactsResponse(
                        replacements=request.resolve_artifact.artifacts))
            elif request.HasField("get_artifact"):
                for chunk in data:
                    yield beam_artifact_api_pb2.ArtifactResponseWrapper(
                        get_artifact_response=beam_artifact_api_pb2.GetArtifactResponse(data=chunk))
                yield beam_artifact_api_pb2.ArtifactResponseWrapper(
                    get_artifact_response=beam_artifact_api_pb2.GetArtifactResponse(data=b""), is_last=True)

    try:
        for request in stub.ReverseArtifactRetrievalService(responses()):
            from_server.put(request)
    finally:
        from_server.put(None)


def test_a_2gb_artifact_is_refused_at_the_limit(server: Server, token: str, tmp_path: Path) -> None:
    response, _ = _prepare(server, token, "huge.bin", "/nonexistent/huge.bin")
    zeros = _Zeros(2 * 1024 * MIB)
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        _offer_lazily(_staging_stub(server, token), response.staging_session_token, iter(zeros))
    took = time.monotonic() - start
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, raised.value.details()
    assert "larger than the per-artifact limit of %d bytes" % ARTIFACT_LIMIT in raised.value.details()
    # The server stopped reading at the limit: the client made little more
    # than the limit (what the transport's buffers held), not 2 GB.
    assert ARTIFACT_LIMIT <= zeros.produced < ARTIFACT_LIMIT + 32 * MIB, zeros.produced
    assert took < 30, took
    # The partial file is gone.
    assert not _files_named(server.work_dir, "huge.bin")
    # And the server is healthy: a following job runs.
    out = tmp_path / "after"
    token_file = _write_token(tmp_path / "token", token)
    with beam.Pipeline(runner=ferrobeam.FerrobeamRunner(), options=PipelineOptions([
            "--job_endpoint=" + server.job, "--ferrobeam_auth_token_file=" + str(token_file),
            "--ferrobeam_no_inprocess_worker"])) as p:
        _pipeline(p, out)
    assert read_output_lines(out) == EXPECTED
    assert server.proc.poll() is None


def test_max_message_bytes_limits_the_job_api(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "small.log"
    proc = _start(["job-server", "--port", str(port), "--no_dashboard", "--workers", "1",
                   "--max_message_bytes", "64KiB", "--work-dir", str(tmp_path / "w")], log)
    try:
        wait_for_job_service("127.0.0.1:%d" % port, timeout=60, proc=proc)
        p = beam.Pipeline()
        _ = p | beam.Create([secrets.token_hex(500) for _ in range(300)])  # ~300 KB of proto
        proto = p.to_runner_api(default_environment=environments.EmbeddedPythonEnvironment.default())
        assert proto.ByteSize() > 64 * 1024
        with grpc.insecure_channel("127.0.0.1:%d" % port) as channel:
            with pytest.raises(grpc.RpcError) as raised:
                beam_job_api_pb2_grpc.JobServiceStub(channel).Prepare(
                    beam_job_api_pb2.PrepareJobRequest(pipeline=proto, job_name="big"), timeout=30)
        # tonic's own refusal: OUT_OF_RANGE, naming the limit.
        assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE, raised.value.details()
        assert "limit is: 65536 bytes" in raised.value.details()
        # The server goes on answering.
        wait_for_job_service("127.0.0.1:%d" % port, timeout=10, proc=proc)
    finally:
        _stop(proc, log)


# --- local pieces -----------------------------------------------------------------------


def test_state_socket_is_private(native: Any, tmp_path: Path) -> None:
    """The state socket (see _state_channel.py) takes no token: it must be
    reachable by this user only, in a directory nobody else may enter."""
    srv = native.start_job_server(host="127.0.0.1", port=0, python=sys.executable, workers=1,
                                  strict_environments=False, work_dir=str(tmp_path / "w"),
                                  dashboard_port=None)
    try:
        channel = srv.state_channel
        assert channel is not None
        directory = Path(channel[1]).parent
        mode = directory.stat().st_mode & 0o777
        assert mode & 0o077 == 0, oct(mode)
        assert directory.stat().st_uid == os.getuid()
    finally:
        srv.stop()


def test_python_token_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_auth.TOKEN_ENV, raising=False)
    assert _auth.load_token() is None
    good = "a" * 16
    assert _auth.load_token(str(_write_token(tmp_path / "t", good))) == good
    monkeypatch.setenv(_auth.TOKEN_ENV, " %s\n" % good)
    assert _auth.load_token() == good
    for bad in ("", "short", "a" * 15 + ";"):
        monkeypatch.setenv(_auth.TOKEN_ENV, bad)
        with pytest.raises(ValueError):
            _auth.load_token()
    assert good not in repr(_auth._BearerInterceptor(good))  # pylint: disable=protected-access


def test_kafka_expansion_on_a_protected_server_sends_the_token(server: Server, token_file: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """ferrobeam.io's Kafka transforms are expanded by the --job_endpoint
    server by default; with a token they send it (Beam would open the
    endpoint without metadata)."""
    from ferrobeam.io.kafka import ReadFromKafka  # pylint: disable=import-outside-toplevel
    monkeypatch.delenv(_auth.TOKEN_ENV, raising=False)
    args = ["--job_endpoint=" + server.job, "--streaming"]
    p = beam.Pipeline(options=PipelineOptions(args + ["--ferrobeam_auth_token_file=" + str(token_file)]))
    _ = p | ReadFromKafka({"bootstrap.servers": "127.0.0.1:1"}, ["topic"])  # expanded here
    p = beam.Pipeline(options=PipelineOptions(args))
    with pytest.raises(Exception, match="UNAUTHENTICATED|auth token"):
        _ = p | ReadFromKafka({"bootstrap.servers": "127.0.0.1:1"}, ["topic"])
