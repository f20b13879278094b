"""The ``ferrobeam`` command line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.portable_runner import PortableRunner

from conftest import EXAMPLES_DIR, free_port, load_native, read_output_lines, run_python, wait_for_job_service


def ferrobeam_command() -> list[str]:
    """The installed ``ferrobeam`` console script (next to this interpreter)."""
    load_native()  # fail with build instructions if the extension is missing
    candidate = Path(sys.executable).parent / "ferrobeam"
    found = str(candidate) if candidate.exists() else shutil.which("ferrobeam")
    assert found, "the `ferrobeam` console script is not installed (pip install .)"
    return [found]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(ferrobeam_command() + list(args), capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_help_lists_job_server() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert "job-server" in proc.stdout


def test_job_server_help_lists_port() -> None:
    proc = run_cli("job-server", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--port" in proc.stdout


def test_module_entry_point_matches_script() -> None:
    proc = run_python(["-m", "ferrobeam.cli", "--help"], timeout=60)
    assert "job-server" in proc.stdout


def test_unknown_subcommand_fails() -> None:
    proc = run_cli("no-such-subcommand")
    assert proc.returncode != 0
    assert proc.stderr.strip(), "an error should say what was wrong"


# Threads of Beam's SDK harness that LOOPBACK starts in this process.
_HARNESS_THREADS = ("run_worker", "read_state", "read_grpc_client_inputs")


def _wait_for_loopback_workers_to_disconnect(timeout: float = 10.0) -> None:
    """Lets LOOPBACK harness threads of finished jobs wind down.

    The server closes their streams when the job ends; stopping it before
    they notice would make them log spurious UNAVAILABLE errors.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
            t.name.startswith(_HARNESS_THREADS) for t in threading.enumerate()):
        time.sleep(0.1)


@pytest.fixture
def standalone_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``ferrobeam job-server --port P`` as a child process."""
    port = free_port()
    log = open(tmp_path / "job-server.log", "w+", encoding="utf-8")  # pylint: disable=consider-using-with
    proc = subprocess.Popen(ferrobeam_command() + ["job-server", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = "localhost:%d" % port
    try:
        wait_for_job_service(endpoint, timeout=60, proc=proc)
        yield endpoint, proc
    finally:
        _wait_for_loopback_workers_to_disconnect()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # graceful first, as a user would
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        log.seek(0)
        sys.stderr.write("--- ferrobeam job-server log (tail)\n" + log.read()[-5000:])
        log.close()


def test_job_server_runs_loopback_pipeline(standalone_server: tuple[str, subprocess.Popen], tmp_path: Path) -> None:
    endpoint, proc = standalone_server
    out = tmp_path / "out" / "squares"
    options = PipelineOptions(["--job_endpoint=" + endpoint, "--environment_type=LOOPBACK"])
    with beam.Pipeline(runner=PortableRunner(), options=options) as p:
        _ = (p
             | beam.Create(range(10))
             | beam.Map(lambda x: (x % 2, x * x))
             | beam.CombinePerKey(sum)
             | beam.MapTuple(lambda k, v: "%d:%d" % (k, v))
             | beam.io.WriteToText(str(out)))
    assert read_output_lines(out) == ["0:120", "1:165"]
    assert proc.poll() is None, "the job server exited after the job"


def test_job_server_runs_wordcount_example(standalone_server: tuple[str, subprocess.Popen], tmp_path: Path) -> None:
    endpoint, _ = standalone_server
    out = tmp_path / "counts"
    run_python([str(EXAMPLES_DIR / "wordcount.py"), "--runner=PortableRunner", "--job_endpoint=" + endpoint,
                "--environment_type=LOOPBACK", "--output", str(out)])
    counts = dict(line.split(": ") for line in read_output_lines(out))
    assert int(counts["river"]) == 14


def test_job_server_stops_on_sigterm(standalone_server: tuple[str, subprocess.Popen]) -> None:
    _, proc = standalone_server
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("ferrobeam job-server did not exit within 30 s of SIGTERM")
    # Handled, not killed by it: the server cancels its jobs and closes
    # their state, as on Ctrl-C (what Kubernetes relies on).
    assert proc.returncode == 0, proc.returncode


# ---------------------------------------------------------------------------
# ferrobeam drain / ferrobeam cancel
# ---------------------------------------------------------------------------


def test_drain_and_cancel_help_document_exit_codes() -> None:
    for command in ("drain", "cancel"):
        proc = run_cli(command, "--help")
        assert proc.returncode == 0, proc.stderr
        assert "--job_endpoint" in proc.stdout and "localhost:8099" in proc.stdout
        assert "3  the server knows no job" in proc.stdout
        assert "4  no job server answered" in proc.stdout


def test_drain_without_job_id_is_a_usage_error() -> None:
    proc = run_cli("drain")
    assert proc.returncode == 2
    assert "JOB_ID" in proc.stderr


def test_drain_then_cancel_running_streaming_job(job_endpoint: str, tmp_path: Path) -> None:
    from test_drain_cancel import sleeping_pipeline, wait_for_workers  # pylint: disable=import-outside-toplevel

    options = PipelineOptions(["--job_endpoint=" + job_endpoint, "--streaming",
                               "--environment_type=beam:env:embedded_python:v1"])
    p = beam.Pipeline(runner=PortableRunner(), options=options)
    sleeping_pipeline(p, tmp_path)
    result = p.run()
    job_id = result._job_id  # pylint: disable=protected-access
    try:
        wait_for_workers(tmp_path)
        # The sleeping DoFn keeps the job from finishing, so it stays DRAINING.
        drain = run_cli("drain", job_id, "--job_endpoint", job_endpoint)
        assert (drain.returncode, drain.stdout.strip()) == (0, "DRAINING"), drain.stderr
        assert result.state == "DRAINING"
        cancel = run_cli("cancel", job_id, "--job_endpoint", job_endpoint)
        assert cancel.returncode == 0, cancel.stderr
        assert cancel.stdout.strip() in ("CANCELLING", "CANCELLED")
        with pytest.raises(RuntimeError, match="CANCELLED"):
            result.wait_until_finish()
        # Asking again reports the final state.
        again = run_cli("drain", job_id, "--job_endpoint", job_endpoint)
        assert (again.returncode, again.stdout.strip()) == (0, "CANCELLED"), again.stderr
    finally:
        (tmp_path / "stop").touch()


def test_drain_unknown_job_exits_3(job_endpoint: str) -> None:
    for command in ("drain", "cancel"):
        proc = run_cli(command, "no-such-job", "--job_endpoint", job_endpoint)
        assert proc.returncode == 3, proc.stderr
        assert "no-such-job" in proc.stderr and job_endpoint in proc.stderr
        assert proc.stdout == ""


def test_drain_without_a_server_exits_4() -> None:
    endpoint = "localhost:%d" % free_port()
    for command in ("drain", "cancel"):
        started = time.monotonic()
        proc = run_cli(command, "some-job", "--job_endpoint", endpoint, "--timeout", "5")
        assert proc.returncode == 4, proc.stderr
        assert "cannot reach a job server at " + endpoint in proc.stderr
        assert time.monotonic() - started < 30


def test_drain_of_job_never_run_exits_5(job_endpoint: str) -> None:
    import grpc  # pylint: disable=import-outside-toplevel
    from google.protobuf import struct_pb2  # pylint: disable=import-outside-toplevel
    from apache_beam.portability.api import beam_job_api_pb2  # pylint: disable=import-outside-toplevel
    from apache_beam.portability.api import beam_job_api_pb2_grpc  # pylint: disable=import-outside-toplevel

    p = beam.Pipeline()
    _ = p | beam.Create([1])
    with grpc.insecure_channel(job_endpoint) as channel:
        prepared = beam_job_api_pb2_grpc.JobServiceStub(channel).Prepare(
            beam_job_api_pb2.PrepareJobRequest(pipeline=p.to_runner_api(), pipeline_options=struct_pb2.Struct(),
                                               job_name="never-run"), timeout=30)
    job_id = prepared.preparation_id
    drain = run_cli("drain", job_id, "--job_endpoint", job_endpoint)
    assert drain.returncode == 5, drain.stderr
    assert "has not been run" in drain.stderr
    # Cancel discards it.
    cancel = run_cli("cancel", job_id, "--job_endpoint", job_endpoint)
    assert (cancel.returncode, cancel.stdout.strip()) == (0, "CANCELLED"), cancel.stderr


def _portable_job(job_endpoint: str, name: str, fn) -> tuple[str, object]:
    """Runs a one-Map job on the session's server; returns its id and result."""
    options = PipelineOptions(["--job_endpoint=" + job_endpoint, "--job_name=" + name,
                               "--environment_type=beam:env:embedded_python:v1"])
    p = beam.Pipeline(runner=PortableRunner(), options=options)
    _ = p | beam.Create([1, 2]) | "Check" >> beam.Map(fn)
    result = p.run()
    return result._job_id, result  # pylint: disable=protected-access


def _fail_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("cli-boom on %d" % x)
    return x


def test_jobs_status_and_logs_show_finished_and_failed_jobs(job_endpoint: str) -> None:
    ok_id, ok = _portable_job(job_endpoint, "cli-ok", lambda x: x)
    ok.wait_until_finish()
    bad_id, bad = _portable_job(job_endpoint, "cli-bad", _fail_on_two)
    with pytest.raises(RuntimeError, match="FAILED"):
        bad.wait_until_finish()

    jobs = run_cli("jobs", "--job_endpoint", job_endpoint)
    assert jobs.returncode == 0, jobs.stderr
    listed = {line.split("\t")[0]: line.split("\t")[1:] for line in jobs.stdout.splitlines()}
    assert listed[ok_id][0] == "DONE" and listed[ok_id][1].startswith("cli-ok"), listed[ok_id]
    assert listed[bad_id][0] == "FAILED" and listed[bad_id][1].startswith("cli-bad"), listed[bad_id]

    for job_id, state in ((ok_id, "DONE"), (bad_id, "FAILED")):
        status = run_cli("status", job_id, "--job_endpoint", job_endpoint)
        assert (status.returncode, status.stdout.strip()) == (0, state), status.stderr

    logs = run_cli("logs", bad_id, "--job_endpoint", job_endpoint)
    assert logs.returncode == 0, logs.stderr
    assert "ValueError: cli-boom on 2" in logs.stdout, "the Python traceback is in the job's messages"
    assert logs.stdout.rstrip().splitlines()[-1].endswith("STATE FAILED")
    # --follow ends by itself once the job has ended.
    followed = run_cli("logs", "--follow", ok_id, "--job_endpoint", job_endpoint, timeout=60)
    assert followed.returncode == 0, followed.stderr
    assert [line.split()[-1] for line in followed.stdout.splitlines() if " STATE " in line][-1] == "DONE"


def test_status_and_logs_of_an_unknown_job_exit_3(job_endpoint: str) -> None:
    for command in ("status", "logs"):
        proc = run_cli(command, "no-such-job", "--job_endpoint", job_endpoint)
        assert proc.returncode == 3, (command, proc.stderr)
        assert "no job \"no-such-job\"" in proc.stderr and proc.stdout == ""


def test_jobs_status_and_logs_without_a_server_exit_4() -> None:
    endpoint = "localhost:%d" % free_port()
    for command in (["jobs"], ["status", "some-job"], ["logs", "some-job"], ["logs", "-f", "some-job"]):
        proc = run_cli(*command, "--job_endpoint", endpoint, "--timeout", "5")
        assert proc.returncode == 4, (command, proc.stderr)
        assert "cannot reach a job server at " + endpoint in proc.stderr


def test_savepoint_and_stop_of_an_unknown_job_exit_3(job_endpoint: str, tmp_path: Path) -> None:
    for command in (["savepoint", "no-such-job", str(tmp_path / "sp1")],
                    ["stop", "no-such-job", "--savepoint", str(tmp_path / "sp2")]):
        proc = run_cli(*command, "--job_endpoint", job_endpoint)
        assert proc.returncode == 3, (command, proc.stderr)
        assert "no-such-job" in proc.stderr and proc.stdout == ""
        assert not (tmp_path / "sp1").exists() and not (tmp_path / "sp2").exists()


def test_savepoint_and_stop_without_a_server_exit_4(tmp_path: Path) -> None:
    endpoint = "localhost:%d" % free_port()
    for command in (["savepoint", "some-job", str(tmp_path / "sp")],
                    ["stop", "some-job", "--savepoint", str(tmp_path / "sp")]):
        proc = run_cli(*command, "--job_endpoint", endpoint, "--timeout", "5")
        assert proc.returncode == 4, (command, proc.stderr)
        assert "cannot reach a job server at " + endpoint in proc.stderr


def test_savepoint_of_a_batch_job_is_refused_exit_5(job_endpoint: str, tmp_path: Path) -> None:
    job_id, result = _portable_job(job_endpoint, "cli-batch-savepoint", lambda x: x)
    result.wait_until_finish()
    proc = run_cli("savepoint", job_id, str(tmp_path / "sp"), "--job_endpoint", job_endpoint)
    assert proc.returncode == 5, proc.stderr
    assert job_id in proc.stderr or "running" in proc.stderr


def test_job_server_help_documents_dashboard_and_log_format() -> None:
    proc = run_cli("job-server", "--help")
    assert proc.returncode == 0, proc.stderr
    for flag in ("--dashboard_port", "--no_dashboard", "--log_format"):
        assert flag in proc.stdout, flag


def test_job_server_prints_its_dashboard(standalone_server: tuple[str, subprocess.Popen], tmp_path: Path) -> None:
    log = (tmp_path / "job-server.log").read_text()
    assert "dashboard: http://127.0.0.1:" in log, log
