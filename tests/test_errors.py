"""Errors are clear, bad input does not kill the server, and nothing is lost.

Covers issue 2's error requirements:

* an exception in a user DoFn fails the job, and ``wait_until_finish()``
  raises with the Python traceback and the failing transform's name;
* an unknown transform URN is refused at submission, naming the transform
  and the URN, before any work runs;
* garbage on the job server's port gets an error (or a closed connection),
  and the server keeps serving;
* a worker killed in the middle of a bundle: the bundle is retried and the
  output has no loss and no duplicates.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

import apache_beam as beam
from apache_beam.options.pipeline_options import DebugOptions
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import PortableOptions
from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.portability.api import beam_job_api_pb2_grpc
from apache_beam.runners.portability.portable_runner import PortableRunner
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from conftest import read_output_lines

ENVIRONMENTS = {
    "embedded": python_urns.EMBEDDED_PYTHON,
    "loopback": "LOOPBACK",
}
UNKNOWN_URN = "beam:transform:does_not_exist:v1"
JOB_SERVICE = "/org.apache.beam.model.job_management.v1.JobService/"
ARTIFACT_STAGING = "/org.apache.beam.model.job_management.v1.ArtifactStagingService/"


def portable_options(endpoint: str, environment_type: str, *extra: str) -> PipelineOptions:
    """Options for Beam's PortableRunner against ``endpoint``."""
    return PipelineOptions([
        "--job_endpoint=" + endpoint,
        "--environment_type=" + environment_type,
        *extra,
    ])


# ---------------------------------------------------------------------------
# A failing DoFn
# ---------------------------------------------------------------------------


class Explode(beam.DoFn):
    """Fails on element 3."""

    def process(self, element: int) -> Iterator[int]:
        if element == 3:
            raise ValueError("ferrobeam-test-boom on element %d" % element)
        yield element


def _assert_mentions_user_failure(text: str) -> None:
    assert "ExplodeOnPurpose" in text, text  # the failing transform's name
    assert "ferrobeam-test-boom on element 3" in text, text  # the exception
    assert "Traceback (most recent call last)" in text, text
    # The traceback's line for the user's raise statement, with its source.
    assert "test_errors.py" in text, text
    assert 'raise ValueError("ferrobeam-test-boom on element %d" % element)' in text, text


@pytest.mark.parametrize("env", sorted(ENVIRONMENTS))
def test_dofn_exception_fails_job_with_traceback(job_endpoint: str, env: str) -> None:
    p = beam.Pipeline(runner=PortableRunner(), options=portable_options(job_endpoint, ENVIRONMENTS[env]))
    _ = p | beam.Create([1, 2, 3, 4]) | "ExplodeOnPurpose" >> beam.ParDo(Explode())
    result = p.run()
    with pytest.raises(Exception) as excinfo:
        result.wait_until_finish()
    _assert_mentions_user_failure(str(excinfo.value))
    assert result.state == "FAILED"


def test_dofn_exception_raises_at_pipeline_exit_with_ferrobeam_runner() -> None:
    from ferrobeam import FerrobeamRunner  # pylint: disable=import-outside-toplevel

    with pytest.raises(Exception) as excinfo:
        with beam.Pipeline(runner=FerrobeamRunner(), options=PipelineOptions([])) as p:
            _ = p | beam.Create([1, 2, 3, 4]) | "ExplodeOnPurpose" >> beam.ParDo(Explode())
    _assert_mentions_user_failure(str(excinfo.value))


# ---------------------------------------------------------------------------
# An unknown transform URN
# ---------------------------------------------------------------------------


class DoesNotExist(beam.PTransform):
    """A leaf transform whose URN no runner knows."""

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return beam.pvalue.PCollection.from_(pcoll)

    def to_runner_api_parameter(self, unused_context: object) -> tuple[str, None]:
        return UNKNOWN_URN, None


class TouchFile(beam.DoFn):
    """Creates a file, proving that the pipeline ran."""

    def __init__(self, path: str) -> None:
        self._path = path

    def process(self, element: int) -> Iterator[int]:
        Path(self._path).touch()
        yield element


def _pipeline_with_unknown_urn(p: beam.Pipeline, marker: Path) -> None:
    _ = p | "Numbers" >> beam.Create([1, 2]) | "MysteryTransform" >> DoesNotExist()
    # An independent branch that would run if the job were started at all.
    _ = p | "Other" >> beam.Create([1]) | "Touch" >> beam.ParDo(TouchFile(str(marker)))


def test_unknown_urn_refused_at_submission(job_endpoint: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    p = beam.Pipeline(runner=PortableRunner(), options=portable_options(job_endpoint, "LOOPBACK"))
    _pipeline_with_unknown_urn(p, marker)
    with pytest.raises(Exception) as excinfo:
        p.run().wait_until_finish()
    text = str(excinfo.value)
    assert "MysteryTransform" in text, text
    assert UNKNOWN_URN in text, text
    time.sleep(1)
    assert not marker.exists(), "the refused pipeline ran anyway"


def test_unknown_urn_refused_by_ferrobeam_runner(tmp_path: Path) -> None:
    from ferrobeam import FerrobeamRunner, PipelineRefusedError  # pylint: disable=import-outside-toplevel

    marker = tmp_path / "ran"
    with pytest.raises(PipelineRefusedError) as excinfo:
        with beam.Pipeline(runner=FerrobeamRunner(), options=PipelineOptions([])) as p:
            _pipeline_with_unknown_urn(p, marker)
    text = str(excinfo.value)
    assert "MysteryTransform" in text, text
    assert UNKNOWN_URN in text, text
    assert not marker.exists(), "the refused pipeline ran anyway"


# ---------------------------------------------------------------------------
# Garbage on the wire
# ---------------------------------------------------------------------------


def _host_port(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.rsplit(":", 1)
    return host, int(port)


GARBAGE = [
    b"\x00\xff" * 512,
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    # An HTTP/2 preface followed by a nonsense frame.
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x99\x00\x00\x00\x00\x01garbage",
    os.urandom(64 * 1024),
]


@pytest.mark.parametrize("payload", GARBAGE, ids=["zeros-ff", "http1", "h2-bad-frame", "random-64k"])
def test_raw_garbage_does_not_kill_server(job_endpoint: str, payload: bytes) -> None:
    with socket.create_connection(_host_port(job_endpoint), timeout=10) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            while s.recv(4096):
                pass
        except OSError:
            pass  # the server may reset the connection; that is fine
    _assert_job_service_alive(job_endpoint)


def _raw_unary(channel: grpc.Channel, method: str, payload: bytes) -> grpc.RpcError:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as excinfo:
        call(payload, timeout=10)
    return excinfo.value


def test_malformed_grpc_calls_get_error_status(job_endpoint: str) -> None:
    with grpc.insecure_channel(job_endpoint) as channel:
        # A method that does not exist.
        err = _raw_unary(channel, "/no.such.Service/Nothing", b"")
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED, err
        # Bytes that are not a valid protobuf message.
        err = _raw_unary(channel, JOB_SERVICE + "Prepare", b"\xff\xff\xff\xff\x0f garbage")
        assert err.code() not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE), err
        err = _raw_unary(channel, JOB_SERVICE + "Run", b"\x0a\xff\xff\xff\xff")
        assert err.code() not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE), err
        # Well-formed requests that make no sense.
        stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
        for request, rpc in [
            (beam_job_api_pb2.RunJobRequest(preparation_id="no-such-preparation"), stub.Run),
            (beam_job_api_pb2.GetJobStateRequest(job_id="no-such-job"), stub.GetState),
            (beam_job_api_pb2.CancelJobRequest(job_id="no-such-job"), stub.Cancel),
            (beam_job_api_pb2.GetJobMetricsRequest(job_id="no-such-job"), stub.GetJobMetrics),
        ]:
            with pytest.raises(grpc.RpcError) as excinfo:
                rpc(request, timeout=10)
            assert excinfo.value.code() not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE)
        # A streaming call with garbage in it.
        stream = channel.stream_stream(
            ARTIFACT_STAGING + "ReverseArtifactRetrievalService",
            request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as excinfo:
            for _ in stream(iter([b"\xff\xfe garbage", b"\x00"]), timeout=10):
                pass
        assert excinfo.value.code() not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE)
    _assert_job_service_alive(job_endpoint)


def _assert_job_service_alive(endpoint: str) -> None:
    """Runs a small pipeline: the server must still accept and run jobs."""
    with beam.Pipeline(runner=PortableRunner(), options=portable_options(endpoint, "LOOPBACK")) as p:
        assert_that(p | beam.Create(["still", "alive"]) | beam.Map(str.upper), equal_to(["STILL", "ALIVE"]))


# ---------------------------------------------------------------------------
# A worker killed in the middle of a bundle
# ---------------------------------------------------------------------------


class KillWorkerOnce(beam.DoFn):
    """SIGKILLs its own worker process at ``victim``, the first time only.

    A marker file, created atomically, makes sure the kill happens once; it
    records the killed process id.
    """

    def __init__(self, marker: str, victim: int) -> None:
        self._marker = marker
        self._victim = victim

    def process(self, element: int) -> Iterator[int]:
        if element == self._victim:
            try:
                fd = os.open(self._marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass  # already killed once: this is the retry
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                # Give the data plane time to ship the outputs produced so far
                # (the time-based flush is set to 100 ms below), so the runner
                # really has partial output of the failed bundle to discard.
                time.sleep(1.5)
                os.kill(os.getpid(), signal.SIGKILL)
        yield element


def test_worker_killed_mid_bundle_loses_and_duplicates_nothing(job_endpoint: str, tmp_path: Path) -> None:
    n = 5000
    marker = tmp_path / "killed-pid"
    out = tmp_path / "out" / "numbers"
    options = portable_options(job_endpoint, python_urns.EMBEDDED_PYTHON)
    options.view_as(DebugOptions).add_experiment("data_buffer_time_limit_ms=100")
    with beam.Pipeline(runner=PortableRunner(), options=options) as p:
        _ = (
            p
            # No reshuffle: all elements reach KillWorkerOnce in one bundle.
            | beam.Create(list(range(n)), reshuffle=False)
            | "KillWorkerOnce" >> beam.ParDo(KillWorkerOnce(str(marker), victim=n // 2))
            # A shuffle right after the kill: outputs the failed bundle already
            # shipped must be discarded by the runner, not shuffled twice.
            | "AfterKill" >> beam.Reshuffle()
            | beam.Map(str)
            | beam.io.WriteToText(str(out))
        )
    assert marker.exists(), "the worker was never killed, so this proved nothing"
    killed_pid = int(marker.read_text())
    assert killed_pid != os.getpid()
    lines = read_output_lines(out)
    assert len(lines) == n, "expected %d lines, got %d (loss or duplicates)" % (n, len(lines))
    assert lines == sorted(str(i) for i in range(n))
