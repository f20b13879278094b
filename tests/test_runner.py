"""FerrobeamRunner: defaults, server reuse, --job_endpoint, --streaming."""

from __future__ import annotations

import threading

import grpc
import pytest

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.portability.api import beam_job_api_pb2_grpc
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from conftest import load_native


@pytest.fixture(autouse=True)
def _needs_native() -> None:
    load_native()


def test_default_environment_is_ferrobeams_local_workers() -> None:
    from ferrobeam import FerrobeamRunner  # pylint: disable=import-outside-toplevel

    env = FerrobeamRunner().default_environment(PipelineOptions([]))
    assert env.to_runner_api(None).urn == python_urns.EMBEDDED_PYTHON


def test_explicit_environment_is_respected() -> None:
    from ferrobeam import FerrobeamRunner  # pylint: disable=import-outside-toplevel

    env = FerrobeamRunner().default_environment(PipelineOptions(["--environment_type=LOOPBACK"]))
    assert env.to_runner_api(None).urn == python_urns.EMBEDDED_PYTHON_LOOPBACK


def test_bad_option_values_are_rejected() -> None:
    from ferrobeam.runner import embedded_job_endpoint  # pylint: disable=import-outside-toplevel

    with pytest.raises(ValueError, match="ferrobeam_workers"):
        embedded_job_endpoint(PipelineOptions(["--ferrobeam_workers=-1"]))


def test_embedded_server_is_shared_and_thread_safe() -> None:
    from ferrobeam.runner import embedded_job_endpoint  # pylint: disable=import-outside-toplevel

    endpoints: list[str] = []
    errors: list[BaseException] = []

    def get() -> None:
        try:
            endpoints.append(embedded_job_endpoint())
        except BaseException as e:  # pylint: disable=broad-except
            errors.append(e)

    threads = [threading.Thread(target=get) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(endpoints) == 8 and len(set(endpoints)) == 1, endpoints


def test_two_pipelines_reuse_the_embedded_server() -> None:
    from ferrobeam import FerrobeamRunner  # pylint: disable=import-outside-toplevel
    from ferrobeam.runner import embedded_job_endpoint  # pylint: disable=import-outside-toplevel

    for n in (3, 4):
        with beam.Pipeline(runner=FerrobeamRunner(), options=PipelineOptions([])) as p:
            assert_that(p | beam.Create(range(n)) | beam.Map(lambda x: x * 2), equal_to([2 * i for i in range(n)]))
    endpoint = embedded_job_endpoint()
    with grpc.insecure_channel(endpoint) as channel:
        jobs = beam_job_api_pb2_grpc.JobServiceStub(channel).GetJobs(beam_job_api_pb2.GetJobsRequest(), timeout=30)
    assert len(jobs.job_info) >= 2, "both pipelines should have run on %s" % endpoint


def test_job_endpoint_option_uses_that_server(job_endpoint: str) -> None:
    from ferrobeam import FerrobeamRunner  # pylint: disable=import-outside-toplevel

    def job_ids() -> set[str]:
        # The server keeps a bounded history, so compare ids, not counts.
        with grpc.insecure_channel(job_endpoint) as channel:
            stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
            return {j.job_id for j in stub.GetJobs(beam_job_api_pb2.GetJobsRequest(), timeout=30).job_info}

    before = job_ids()
    options = PipelineOptions(["--job_endpoint=" + job_endpoint])
    with beam.Pipeline(runner=FerrobeamRunner(), options=options) as p:
        assert_that(p | beam.Create(["a", "b"]) | beam.Map(str.upper), equal_to(["A", "B"]))
    assert len(job_ids() - before) == 1


def test_streaming_flag_runs_a_bounded_pipeline() -> None:
    from ferrobeam import FerrobeamRunner  # pylint: disable=import-outside-toplevel

    with beam.Pipeline(runner=FerrobeamRunner(), options=PipelineOptions(["--streaming"])) as p:
        out = p | beam.Create([1, 2, 3]) | beam.Map(lambda x: (x % 2, x)) | beam.CombinePerKey(sum)
        assert_that(out, equal_to([(1, 4), (0, 2)]))


def test_runner_by_name() -> None:
    options = PipelineOptions(["--runner=ferrobeam.FerrobeamRunner"])
    with beam.Pipeline(options=options) as p:
        assert_that(p | beam.Create([1, 2, 3]) | beam.combiners.Count.Globally(), equal_to([3]))
    from ferrobeam import FerrobeamRunner  # pylint: disable=import-outside-toplevel
    assert isinstance(p.runner, FerrobeamRunner)


def test_job_longer_than_job_server_timeout_completes() -> None:
    """Beam opens the job's streams with --job_server_timeout; a job that runs
    longer than that must still complete (the streams get no deadline)."""
    from ferrobeam import FerrobeamRunner  # pylint: disable=import-outside-toplevel
    import time as _time  # pylint: disable=import-outside-toplevel

    def slow(x: int) -> int:
        _time.sleep(4)
        return x

    options = PipelineOptions(["--job_server_timeout=2"])
    with beam.Pipeline(runner=FerrobeamRunner(), options=options) as p:
        assert_that(p | beam.Create([1]) | beam.Map(slow), equal_to([1]))
