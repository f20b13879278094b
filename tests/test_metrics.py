"""Metrics end to end: what ``result.metrics()`` and ``GetJobMetrics`` return.

User metrics of every kind (counters, distributions, gauges, string sets,
bounded tries) are checked against the DirectRunner running the same
pipeline, both as attempted and as committed. System metrics (element counts
and sampled byte sizes per PCollection, execution times per transform) are
checked against what the pipeline is known to produce.

Pipelines run with ``FerrobeamRunner`` on the session's job server and its
worker processes, with enough elements and a Reshuffle so that every metric
is merged across several bundles.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics import monitoring_infos
from apache_beam.metrics.metric import MetricResults
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability.portable_runner import PortableMetrics
from apache_beam.runners.runner import PipelineState

NS = "ferrobeam.test"
ELEMENTS = 600
TRIE_BOUND = 100  # Beam's default bound for bounded tries


def ferrobeam_pipeline(job_endpoint: str) -> beam.Pipeline:
    return beam.Pipeline(runner="ferrobeam.FerrobeamRunner", options=PipelineOptions(["--job_endpoint=" + job_endpoint]))


class RecordAll(beam.DoFn):
    """Updates one metric of every kind per element."""

    def __init__(self) -> None:
        self.counter = Metrics.counter(NS, "elements")
        self.sum = Metrics.counter(NS, "sum")
        self.dist = Metrics.distribution(NS, "values")
        self.constant_gauge = Metrics.gauge(NS, "constant")
        self.gauge = Metrics.gauge(NS, "last_value")
        self.strings = Metrics.string_set(NS, "residues")
        self.small_trie = Metrics.bounded_trie(NS, "small_trie")
        self.big_trie = Metrics.bounded_trie(NS, "big_trie")

    def process(self, x: int) -> Iterator[int]:
        self.counter.inc()
        self.sum.inc(x)
        self.dist.update(x - 100)  # some negative values
        self.constant_gauge.set(42)
        self.gauge.set(x)
        self.strings.add("r%d" % (x % 7))
        self.small_trie.add(("lineage", "r%d" % (x % 3), "q%d" % (x % 2)))
        self.big_trie.add(("all", "b%d" % (x % 4), str(x)))  # 600 paths: truncated
        yield x


class CountPerKey(beam.DoFn):
    """A second step with metrics of the same names (a different step)."""

    def __init__(self) -> None:
        self.counter = Metrics.counter(NS, "elements")
        self.dist = Metrics.distribution(NS, "group_sizes")

    def process(self, kv: tuple[int, list[int]]) -> Iterator[int]:
        self.counter.inc()
        self.dist.update(len(kv[1]))
        yield len(kv[1])


def build_all_kinds(p: beam.Pipeline) -> None:
    _ = (
        p
        | "Create" >> beam.Create(list(range(ELEMENTS)))
        | "Spread" >> beam.Reshuffle()
        | "Record" >> beam.ParDo(RecordAll())
        | "Key" >> beam.Map(lambda x: (x % 5, x))
        | "Group" >> beam.GroupByKey()
        | "PerKey" >> beam.ParDo(CountPerKey())
    )


def by_key(results: dict[str, list[Any]]) -> dict[tuple[str, str, str, str], Any]:
    """{(kind, step, namespace, name): MetricResult} for our namespace."""
    out = {}
    for kind, metrics in results.items():
        for m in metrics:
            if m.key.metric.namespace == NS:
                key = (kind, m.key.step, m.key.metric.namespace, m.key.metric.name)
                assert key not in out, "duplicate metric %s" % (key,)
                out[key] = m
    return out


@pytest.fixture(scope="module")
def direct_results() -> dict:
    p = beam.Pipeline("DirectRunner")
    build_all_kinds(p)
    result = p.run()
    result.wait_until_finish()
    return by_key(result.metrics().query())


@pytest.fixture(scope="module")
def ferrobeam_run(job_endpoint: str) -> tuple[Any, float, float]:
    p = ferrobeam_pipeline(job_endpoint)
    build_all_kinds(p)
    started = time.time()
    result = p.run()
    assert result.wait_until_finish() == PipelineState.DONE
    return result, started, time.time()


@pytest.fixture(scope="module")
def ferrobeam_results(ferrobeam_run: tuple[Any, float, float]) -> dict:
    return by_key(ferrobeam_run[0].metrics().query())


def test_same_metrics_as_direct_runner(direct_results: dict, ferrobeam_results: dict) -> None:
    assert sorted(ferrobeam_results) == sorted(direct_results)
    # Both steps are reported under the names the user gave them.
    assert {k[1] for k in ferrobeam_results} == {"Record", "PerKey"}


def test_attempted_equals_committed(ferrobeam_results: dict) -> None:
    for key, m in ferrobeam_results.items():
        assert m.attempted == m.committed, key


@pytest.mark.parametrize("kind", [MetricResults.COUNTERS, MetricResults.DISTRIBUTIONS, MetricResults.STRINGSETS])
def test_mergeable_metrics_equal_direct_runner(kind: str, direct_results: dict, ferrobeam_results: dict) -> None:
    keys = [k for k in direct_results if k[0] == kind]
    assert keys
    for key in keys:
        assert ferrobeam_results[key].committed == direct_results[key].committed, key


def test_counter_and_distribution_values(ferrobeam_results: dict) -> None:
    counters = MetricResults.COUNTERS
    assert ferrobeam_results[(counters, "Record", NS, "elements")].committed == ELEMENTS
    assert ferrobeam_results[(counters, "Record", NS, "sum")].committed == sum(range(ELEMENTS))
    assert ferrobeam_results[(counters, "PerKey", NS, "elements")].committed == 5
    dist = ferrobeam_results[(MetricResults.DISTRIBUTIONS, "Record", NS, "values")].committed
    assert (dist.count, dist.sum, dist.min, dist.max) == (ELEMENTS, sum(range(ELEMENTS)) - 100 * ELEMENTS, -100, ELEMENTS - 101)


def test_gauges_keep_the_latest_value(
    direct_results: dict, ferrobeam_results: dict, ferrobeam_run: tuple[Any, float, float]
) -> None:
    _, started, finished = ferrobeam_run
    constant = ferrobeam_results[(MetricResults.GAUGES, "Record", NS, "constant")].committed
    assert constant.value == direct_results[(MetricResults.GAUGES, "Record", NS, "constant")].committed.value == 42
    # Bundles run in parallel, so which element came last differs from the
    # DirectRunner's; it must be an element, set during the run.
    latest = ferrobeam_results[(MetricResults.GAUGES, "Record", NS, "last_value")].committed
    assert 0 <= latest.value < ELEMENTS
    assert started - 1 <= latest.timestamp <= finished + 1, (started, latest.timestamp, finished)


def test_bounded_tries(direct_results: dict, ferrobeam_results: dict) -> None:
    tries = MetricResults.BOUNDED_TRIES
    small = ferrobeam_results[(tries, "Record", NS, "small_trie")].committed
    assert small.get_result() == direct_results[(tries, "Record", NS, "small_trie")].committed.get_result()
    assert small.get_result() == {("lineage", "r%d" % r, "q%d" % q, False) for r in range(3) for q in range(2)}
    # 600 paths do not fit: the merged trie is cut down to the bound, and
    # still covers every path (as a truncated prefix).
    big = ferrobeam_results[(tries, "Record", NS, "big_trie")].committed
    assert 1 <= big.size() <= TRIE_BOUND
    assert any(path[-1] is True for path in big.get_result()), "expected truncated paths"
    for x in range(ELEMENTS):
        assert big.contains(("all", "b%d" % (x % 4), str(x))), x


def test_query_filters_by_step_name(ferrobeam_run: tuple[Any, float, float]) -> None:
    result = ferrobeam_run[0]
    counters = result.metrics().query(MetricsFilter().with_step("PerKey").with_name("elements"))["counters"]
    assert [(c.key.step, c.committed) for c in counters] == [("PerKey", 5)]


# ---------------------------------------------------------------------------
# System metrics, straight from GetJobMetrics.
# ---------------------------------------------------------------------------


def job_metrics(result: Any) -> beam_job_api_pb2.MetricResults:
    return result._job_service.GetJobMetrics(  # pylint: disable=protected-access
        beam_job_api_pb2.GetJobMetricsRequest(job_id=result._job_id)).metrics  # pylint: disable=protected-access


def job_pipeline(result: Any) -> Any:
    return result._job_service.GetPipeline(  # pylint: disable=protected-access
        beam_job_api_pb2.GetJobPipelineRequest(job_id=result._job_id)).pipeline  # pylint: disable=protected-access


def output_pcollection(pipeline: Any, unique_name: str) -> str:
    (transform,) = [t for t in pipeline.components.transforms.values() if t.unique_name == unique_name]
    (pcoll,) = transform.outputs.values()
    return pcoll


def system(infos: Any, urn: str) -> dict[str, Any]:
    """{label value: info} for the system metric ``urn``."""
    out = {}
    for mi in infos:
        if mi.urn == urn:
            label = mi.labels.get(monitoring_infos.PCOLLECTION_LABEL) or mi.labels.get(monitoring_infos.PTRANSFORM_LABEL)
            assert label not in out, "%s reported twice for %s" % (urn, label)
            out[label] = mi
    return out


def element_counts(result: Any) -> dict[str, int]:
    infos = system(job_metrics(result).committed, monitoring_infos.ELEMENT_COUNT_URN)
    return {k: monitoring_infos.extract_counter_value(v) for k, v in infos.items()}


def test_element_counts_per_pcollection(ferrobeam_run: tuple[Any, float, float]) -> None:
    result = ferrobeam_run[0]
    pipeline = job_pipeline(result)
    counts = element_counts(result)
    for step, expected in [("Record", ELEMENTS), ("Key", ELEMENTS), ("Group", 5), ("PerKey", 5)]:
        assert counts[output_pcollection(pipeline, step)] == expected, step


def test_sampled_byte_sizes(ferrobeam_run: tuple[Any, float, float]) -> None:
    result = ferrobeam_run[0]
    pipeline = job_pipeline(result)
    sizes = system(job_metrics(result).committed, monitoring_infos.SAMPLED_BYTE_SIZE_URN)
    for step, elements in [("Record", ELEMENTS), ("Group", 5)]:
        count, total, low, high = monitoring_infos.extract_distribution(sizes[output_pcollection(pipeline, step)])
        # The SDK samples sizes, so at most every element is measured once.
        assert 0 < count <= elements and 0 < low <= high and total >= count * low, step


def test_execution_times_name_user_transforms(ferrobeam_run: tuple[Any, float, float]) -> None:
    committed = job_metrics(ferrobeam_run[0]).committed
    for urn in (
        monitoring_infos.START_BUNDLE_MSECS_URN,
        monitoring_infos.PROCESS_BUNDLE_MSECS_URN,
        monitoring_infos.FINISH_BUNDLE_MSECS_URN,
        monitoring_infos.TOTAL_MSECS_URN,
    ):
        steps = system(committed, urn)
        assert "Record" in steps and "PerKey" in steps, (urn, sorted(steps))
        # Transforms ferrobeam adds to each stage (data source and sinks)
        # are not the user's and are not reported.
        assert not [s for s in steps if re.fullmatch(r".*/(source|sink\d+)", s)], sorted(steps)


def test_job_metrics_attempted_and_committed_agree(ferrobeam_run: tuple[Any, float, float]) -> None:
    metrics = job_metrics(ferrobeam_run[0])
    key = lambda mi: (mi.urn, sorted(mi.labels.items()), mi.payload)  # noqa: E731
    assert metrics.committed and sorted(map(key, metrics.attempted)) == sorted(map(key, metrics.committed))


class Sleepy(beam.DoFn):
    def process(self, x: int) -> Iterator[int]:
        time.sleep(0.05)
        yield x


def test_execution_time_is_measured(job_endpoint: str) -> None:
    p = ferrobeam_pipeline(job_endpoint)
    _ = p | beam.Create(list(range(30))) | "Sleepy" >> beam.ParDo(Sleepy())
    result = p.run()
    result.wait_until_finish()
    total = monitoring_infos.extract_counter_value(
        system(job_metrics(result).committed, monitoring_infos.TOTAL_MSECS_URN)["Sleepy"])
    # 30 x 50 ms of sleep; the SDK measures by sampling every 200 ms.
    assert total >= 800, total


class Tag(beam.DoFn):
    def __init__(self) -> None:
        self.counter = Metrics.counter(NS, "tagged")

    def process(self, kv: tuple[int, int]) -> Iterator[tuple[int, int]]:
        self.counter.inc()
        yield kv


class StatefulCount(beam.DoFn):
    """A stateful DoFn: its stage reads its input partitioned by key."""

    SEEN = beam.transforms.userstate.CombiningValueStateSpec("seen", sum)

    def process(self, kv: tuple[int, int], seen: Any = beam.DoFn.StateParam(SEEN)) -> Iterator[int]:
        seen.add(1)
        yield kv[1]


def test_pcollection_read_by_another_stage_is_counted_once(job_endpoint: str) -> None:
    p = ferrobeam_pipeline(job_endpoint)
    _ = (
        p
        | beam.Create(list(range(100)))
        | "Pairs" >> beam.Map(lambda x: (x % 10, x))
        | "Tag" >> beam.ParDo(Tag())
        | "Stateful" >> beam.ParDo(StatefulCount())
    )
    result = p.run()
    result.wait_until_finish()
    pipeline = job_pipeline(result)
    counts = element_counts(result)
    assert counts[output_pcollection(pipeline, "Tag")] == 100
    assert counts[output_pcollection(pipeline, "Stateful")] == 100


# ---------------------------------------------------------------------------
# Metrics while a job runs, and after it failed.
# ---------------------------------------------------------------------------


class WaitForFile(beam.DoFn):
    """Blocks the second stage until the test has seen the first stage's metrics."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, x: Any) -> Iterator[Any]:
        deadline = time.time() + 60
        while not os.path.exists(self.path) and time.time() < deadline:
            time.sleep(0.05)
        yield x


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_metrics_are_published_while_the_job_runs(job_endpoint: str, tmp_path: Path) -> None:
    release = tmp_path / "release"
    p = ferrobeam_pipeline(job_endpoint)
    counter = Metrics.counter(NS, "before_group")
    _ = (
        p
        | beam.Create(list(range(50)))
        | "Count" >> beam.Map(lambda x: (counter.inc(), (x % 2, x))[1])
        | beam.GroupByKey()
        | "Wait" >> beam.ParDo(WaitForFile(str(release)))
    )
    result = p.run()
    try:
        def counted() -> bool:
            # A fresh GetJobMetrics each time: result.metrics() caches its first answer.
            live = PortableMetrics(beam_job_api_pb2.GetJobMetricsResponse(metrics=job_metrics(result)))
            found = live.query(MetricsFilter().with_name("before_group"))["counters"]
            return bool(found) and found[0].attempted == 50

        seen_while_running = wait_for(counted)
        state_then = result.state
    finally:
        release.touch()
    assert result.wait_until_finish() == PipelineState.DONE
    assert seen_while_running, "the first stage's counter never reached 50 while the job ran"
    assert state_then == PipelineState.RUNNING


class FailOnKey(beam.DoFn):
    def process(self, kv: tuple[int, Any]) -> Iterator[Any]:
        raise ValueError("ferrobeam-test: failing after the group")


def test_metrics_survive_a_failed_job(job_endpoint: str) -> None:
    p = ferrobeam_pipeline(job_endpoint)
    counter = Metrics.counter(NS, "before_failure")
    _ = (
        p
        | beam.Create(list(range(40)))
        | "Count" >> beam.Map(lambda x: (counter.inc(), (0, x))[1])
        | beam.GroupByKey()
        | "Fail" >> beam.ParDo(FailOnKey())
    )
    result = p.run()
    with pytest.raises(Exception, match="failing after the group"):
        result.wait_until_finish()
    (found,) = result.metrics().query(MetricsFilter().with_name("before_failure"))["counters"]
    assert (found.committed, found.attempted) == (40, 40)
