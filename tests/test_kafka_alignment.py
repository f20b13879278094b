"""The Kafka skew test: one partition is replayed from far behind while the
others are at the head.

Without watermark alignment the read runs the head partitions as fast as it
can; their records wait in the GroupByKey's windows for the watermark,
which the partition behind holds back, so what the pipeline buffers grows
with everything read ahead. With ``max_drift_ms`` the reader holds the head
partitions back (and pauses them) until the partition behind catches up, and
what is buffered stays under a ceiling that does not depend on how much is
ahead.

What is measured is the runner's own count of values buffered in the
streaming GroupByKey (the ``ferrobeam`` gauges ``gbk_buffered_values``, the
current count, and ``gbk_buffered_values_peak``, the most held at once),
read through Beam's ``PipelineResult.metrics()``.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest

import apache_beam as beam
from apache_beam.io import kafka as beam_kafka
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms import window

import ferrobeam.io
from ferrobeam.io.kafka import ReadFromKafka

from kafka_broker import confluent_kafka, new_topic, running_broker

pytestmark = pytest.mark.timeout(300)

HEAD_PARTITIONS = (0, 1, 2)
BEHIND_PARTITION = 3
#: Records in each head partition, stamped over the last 10 minutes.
PER_HEAD = 40_000
#: Records in the partition behind, stamped over the last 2 hours.
BEHIND = 30_000
KEYS = 8
WINDOW_S = 10
MAX_DRIFT_MS = 10_000
#: What may be buffered with alignment, whatever is ahead. Every partition
#: stays within the drift of the least watermark, but the one holding it,
#: which stays within the drift of the second least: what is read lies
#: within 2 drifts past the watermark, and windows it has not passed hold
#: up to one window before it, 30 s of event time in all, at most 6,100
#: records here (the head partitions hold 200 records per second of event
#: time, the one behind 4). Plus one epoch's take (5,000 records), which
#: the GroupByKey holds before the watermark it brings fires its windows.
#: So 11,100, with some margin. The head partitions hold 120,000 records.
CEILING = 15_000


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from running_broker(tmp_path_factory.mktemp("kafka-align"))


@pytest.fixture(scope="module")
def skewed_topic(broker: str) -> str:
    """Head partitions: records stamped over the last 10 minutes; the
    partition behind: stamped from 2 hours ago up to now."""
    topic = new_topic(broker, partitions=4)
    now = int(time.time() * 1000)
    producer = confluent_kafka.Producer({"bootstrap.servers": broker, "linger.ms": 50,
                                         "queue.buffering.max.messages": 1_000_000})
    spans = {p: (PER_HEAD, now - 600_000) for p in HEAD_PARTITIONS}
    spans[BEHIND_PARTITION] = (BEHIND, now - 7_200_000)
    for partition, (count, start) in spans.items():
        step = (now - start) / count
        for i in range(count):
            producer.produce(topic, key=b"k%d" % (i % KEYS), value=b"", partition=partition,
                             timestamp=int(start + i * step))
    assert producer.flush(60) == 0
    return topic


def gauges(result: Any) -> dict[str, int]:
    """The runner's ``ferrobeam`` gauges of the running job, by name
    (summed over transforms)."""
    # Beam's portable result caches the first metrics it gets; a running
    # job's gauges move, so ask again each time.
    result._metrics = None  # pylint: disable=protected-access
    found = result.metrics().query(MetricsFilter().with_namespace("ferrobeam"))["gauges"]
    out: dict[str, int] = {}
    for g in found:
        value = g.committed or g.attempted
        if value is not None:
            out[g.key.metric.name] = out.get(g.key.metric.name, 0) + value.value
    return out


def run(broker: str, topic: str, out: str, aligned: bool) -> dict[str, Any]:
    """Runs the skew pipeline to the end; returns its buffered-values
    samples, the runner's peak and the most partitions seen paused."""
    total = PER_HEAD * len(HEAD_PARTITIONS) + BEHIND
    p = beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", "--streaming"]))
    extra = {"max_drift_ms": MAX_DRIFT_MS} if aligned else {}
    _ = (p
         | ReadFromKafka({"bootstrap.servers": broker, "auto.offset.reset": "earliest"}, [topic],
                         with_metadata=True, max_num_records=total, idle_partition_timeout_ms=500,
                         timestamp_policy=beam_kafka.ReadFromKafka.create_time_policy, **extra)
         | beam.Map(lambda r: (r.key, "%d:%d" % (r.partition, r.offset)))
         | beam.WindowInto(window.FixedWindows(WINDOW_S))
         | beam.GroupByKey()
         | beam.FlatMap(lambda kv: kv[1])
         | ferrobeam.io.WriteLines(out))
    started = time.monotonic()
    result = p.run()
    samples: list[int] = []
    paused = 0
    while not PipelineState.is_terminal(result.state):
        g = gauges(result)
        samples.append(g.get("gbk_buffered_values", 0))
        paused = max(paused, g.get("kafka_paused_partitions", 0))
        time.sleep(0.2)
    assert result.wait_until_finish() == PipelineState.DONE
    final = gauges(result)
    return {"samples": samples, "peak": final["gbk_buffered_values_peak"], "paused": paused,
            "end": final["gbk_buffered_values"], "seconds": time.monotonic() - started}


def test_alignment_bounds_what_a_replayed_partition_makes_the_pipeline_buffer(broker: str, skewed_topic: str,
                                                                                tmp_path: Any) -> None:
    expected = {"%d:%d" % (p, o) for p in HEAD_PARTITIONS for o in range(PER_HEAD)}
    expected |= {"%d:%d" % (BEHIND_PARTITION, o) for o in range(BEHIND)}
    runs = {}
    for aligned in (False, True):
        out = str(tmp_path / ("aligned" if aligned else "unaligned"))
        runs[aligned] = r = run(broker, skewed_topic, out, aligned)
        print("skew test, %s: peak %d values buffered (largest sample %d of %d), at most %d partitions paused, %.1f s" %
              ("aligned, max_drift_ms=%d" % MAX_DRIFT_MS if aligned else "unaligned", r["peak"],
               max(r["samples"], default=0), len(r["samples"]), r["paused"], r["seconds"]))
        lines = ferrobeam.io.read_lines(out)
        # Every record read, once: none lost to a pause, none dropped late.
        assert len(lines) == len(expected) and set(lines) == expected, (
            "%d lines, %d distinct, %d missing" % (len(lines), len(set(lines)), len(expected - set(lines))))
        assert r["end"] == 0, "every window fired at the end"
        # The runner's peak misses nothing the samples saw.
        assert max(r["samples"], default=0) <= r["peak"]
    unaligned, aligned = runs[False]["peak"], runs[True]["peak"]
    head = PER_HEAD * len(HEAD_PARTITIONS)
    # Without alignment what is buffered grows with what is read ahead...
    assert unaligned >= head // 2, "only %d of the %d head records were ever buffered at once" % (unaligned, head)
    # ...with it, it stays under a ceiling that does not.
    assert aligned <= CEILING, "aligned peak %d over the ceiling %d" % (aligned, CEILING)
    assert aligned * 5 <= unaligned, "aligned peak %d not clearly below the unaligned %d" % (aligned, unaligned)


@pytest.mark.parametrize("settings, refusal", [
    ({"max_drift_ms": -1, "timestamp_policy": beam_kafka.ReadFromKafka.create_time_policy},
     "max_drift_ms must be >= 0, got -1"),
    ({"max_drift_ms": 1_000}, "max_drift_ms aligns event-time watermarks: it needs timestamp_policy CreateTime"),
])
def test_a_drift_that_cannot_be_honoured_is_refused_at_construction(settings: dict, refusal: str) -> None:
    p = beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner"]))
    with pytest.raises(RuntimeError, match=refusal):
        _ = p | ReadFromKafka({"bootstrap.servers": "localhost:1"}, ["t"], **settings)
