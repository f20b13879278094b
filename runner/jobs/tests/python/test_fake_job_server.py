"""End-to-end check of the Job API against Beam's real Python client.

Starts the `fake_job_server` example (its executor runs nothing: it sleeps,
reports a user counter and succeeds, or fails with --fail) and submits a tiny
pipeline with `--runner=PortableRunner --environment_type=LOOPBACK
--save_main_session`, in a separate `python -c` process exactly as a user
would.  This exercises Prepare, reverse artifact staging, the state and
message streams (which must close promptly), Run and GetJobMetrics.

Run:  pytest runner/jobs/tests/python
Uses $FERROBEAM_FAKE_JOB_SERVER if set, otherwise builds the example with
cargo (honouring $CARGO_TARGET_DIR).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("apache_beam")

from apache_beam.portability.api import beam_job_api_pb2  # noqa: E402
from apache_beam.portability.api import beam_job_api_pb2_grpc  # noqa: E402
from apache_beam.portability.api import beam_runner_api_pb2  # noqa: E402

REPO = Path(__file__).resolve().parents[4]
FILE_URN = "beam:artifact:type:file:v1"
STAGING_TO_URN = "beam:artifact:role:staging_to:v1"


def _server_binary():
    explicit = os.environ.get("FERROBEAM_FAKE_JOB_SERVER")
    if explicit:
        return explicit
    out = subprocess.run(
        ["cargo", "build", "-p", "ferrobeam-jobs", "--example", "fake_job_server",
         "--message-format=json-render-diagnostics"],
        cwd=REPO, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "fake_job_server":
            if msg.get("executable"):
                return msg["executable"]
    raise RuntimeError("cargo did not report the fake_job_server executable")


@pytest.fixture(scope="module")
def binary():
    return _server_binary()


class Server:
    def __init__(self, binary, root, *extra):
        self.root = root
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--root", str(root), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("LISTENING "), line + self.proc.stderr.read()
        self.endpoint = line.split()[1]
        self.port = int(self.endpoint.rsplit(":", 1)[1])
        self.channel = grpc.insecure_channel(self.endpoint)
        self.jobs = beam_job_api_pb2_grpc.JobServiceStub(self.channel)

    def stop(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the job server did not stop on SIGTERM")


@pytest.fixture
def server(binary, tmp_path):
    s = Server(binary, tmp_path / "root")
    yield s
    s.stop()


@pytest.fixture
def failing_server(binary, tmp_path):
    s = Server(binary, tmp_path / "root", "--fail")
    yield s
    s.stop()


PIPELINE = textwrap.dedent("""
    import json, logging, sys, time
    logging.basicConfig(level=logging.INFO)
    import apache_beam as beam
    from apache_beam.metrics import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    opts = PipelineOptions([
        "--runner=PortableRunner", "--job_endpoint=localhost:%d",
        "--environment_type=LOOPBACK", "--save_main_session"])
    p = beam.Pipeline(options=opts)
    _ = p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2)
    result = p.run()
    t0 = time.time()
    out = {}
    try:
        out["state"] = str(result.wait_until_finish())
    except Exception as e:
        out["state"] = str(result.state)
        out["error"] = str(e)
    out["wait_s"] = time.time() - t0
    counters = result.metrics().query(MetricsFilter())["counters"]
    out["counters"] = [[c.key.metric.namespace, c.key.metric.name, c.committed, c.attempted]
                       for c in counters]
    print("RESULT " + json.dumps(out))
""")


def submit(port):
    proc = subprocess.run(
        [sys.executable, "-c", PIPELINE % port],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120,
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, "pipeline produced no result:\n" + proc.stdout + proc.stderr
    return json.loads(lines[-1][len("RESULT "):]), proc.stderr


def test_real_client_runs_to_done(server):
    out, log = submit(server.port)
    assert out["state"] == "DONE", log
    # wait_until_finish joins the message thread for up to 10 s after the
    # terminal state; a prompt close keeps it near the fake's 0.3 s sleep.
    assert out["wait_s"] < 5, out
    assert out["counters"] == [["fake", "elements", 7, 7]]
    assert "Job state changed to DONE" in log

    jobs = server.jobs.GetJobs(beam_job_api_pb2.GetJobsRequest()).job_info
    assert len(jobs) == 1 and jobs[0].state == beam_job_api_pb2.JobState.DONE
    job_id = jobs[0].job_id

    # Staging pulled the client's artifacts into our directory and the
    # pipeline now points at them, roles intact.
    pipeline = server.jobs.GetPipeline(
        beam_job_api_pb2.GetJobPipelineRequest(job_id=job_id)).pipeline
    staged = {}
    for env in pipeline.components.environments.values():
        for dep in env.dependencies:
            assert dep.type_urn == FILE_URN
            path = Path(beam_runner_api_pb2.ArtifactFilePayload.FromString(dep.type_payload).path)
            assert path.is_file()
            assert (server.root / "artifacts" / job_id).resolve() in path.resolve().parents
            assert dep.role_urn == STAGING_TO_URN
            name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
                dep.role_payload).staged_name
            staged[name] = path
    assert "pickled_main_session" in staged, staged
    assert staged["pickled_main_session"].stat().st_size > 0

    # A late subscriber replays the history and the stream ends.
    start = time.time()
    replay = list(server.jobs.GetMessageStream(
        beam_job_api_pb2.JobMessagesRequest(job_id=job_id), timeout=10))
    assert time.time() - start < 2
    states = [m.state_response.state for m in replay if m.HasField("state_response")]
    assert states[0] == beam_job_api_pb2.JobState.STOPPED
    assert states[-1] == beam_job_api_pb2.JobState.DONE


def test_real_client_sees_failure_text(failing_server):
    out, log = submit(failing_server.port)
    assert out["state"] == "FAILED", (out, log)
    assert "ValueError: fake failure in step 'FakeStep'" in out["error"], out
    assert out["wait_s"] < 5, out


def test_unknown_job_streams_are_not_found(server):
    for call in (server.jobs.GetMessageStream, server.jobs.GetStateStream):
        req = (beam_job_api_pb2.JobMessagesRequest(job_id="nope")
               if call is server.jobs.GetMessageStream
               else beam_job_api_pb2.GetJobStateRequest(job_id="nope"))
        with pytest.raises(grpc.RpcError) as err:
            list(call(req, timeout=5))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        server.jobs.Run(beam_job_api_pb2.RunJobRequest(preparation_id="nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
