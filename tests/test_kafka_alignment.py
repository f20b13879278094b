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


def produce_spread(broker: str, topic: str, spans: dict[int, tuple[int, int]]) -> None:
    """For each partition, (count, start): that many records stamped evenly
    from ``start`` up to now, in offset order, keyed over ``KEYS`` keys."""
    now = int(time.time() * 1000)
    # Idempotent: a retried batch (a slow broker on a loaded machine) must
    # not land after the next one. A partition's watermark is the latest
    # timestamp it has read, so out-of-order batches would be late, and
    # dropped, whatever the alignment (seen here: whole 10k batches missing).
    producer = confluent_kafka.Producer({"bootstrap.servers": broker, "linger.ms": 50,
                                         "enable.idempotence": True,
                                         "queue.buffering.max.messages": 1_000_000})
    for partition, (count, start) in spans.items():
        step = (now - start) / count
        for i in range(count):
            producer.produce(topic, key=b"k%d" % (i % KEYS), value=b"", partition=partition,
                             timestamp=int(start + i * step))
    assert producer.flush(60) == 0


@pytest.fixture(scope="module")
def skewed_topic(broker: str) -> str:
    """Head partitions: records stamped over the last 10 minutes; the
    partition behind: stamped from 2 hours ago up to now."""
    topic = new_topic(broker, partitions=4)
    now = int(time.time() * 1000)
    spans = {p: (PER_HEAD, now - 600_000) for p in HEAD_PARTITIONS}
    spans[BEHIND_PARTITION] = (BEHIND, now - 7_200_000)
    produce_spread(broker, topic, spans)
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


def missing(records: set[str]) -> str:
    """Missing "partition:offset" records, as offset ranges by partition."""
    by_partition: dict[int, list[int]] = {}
    for r in records:
        partition, offset = r.rsplit(":", 2)[-2:]
        by_partition.setdefault(int(partition), []).append(int(offset))
    ranges = []
    for partition, offsets in sorted(by_partition.items()):
        offsets.sort()
        start = prev = offsets[0]
        for o in offsets[1:] + [None]:
            if o != prev + 1 if o is not None else True:
                ranges.append("%d:%d-%d" % (partition, start, prev))
                if o is not None:
                    start = o
            if o is not None:
                prev = o
    return ", ".join(ranges[:20]) or "none"


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
            "%s: %d lines, %d distinct, missing: %s" % ("aligned" if aligned else "unaligned", len(lines),
                                                      len(set(lines)), missing(expected - set(lines))))
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


def test_a_whole_read_ahead_waits_for_the_read_behind(broker: str, tmp_path: Any) -> None:
    """Source-level alignment: two reads, one topic at the head and one
    replayed from far behind. The head topic's partitions are all alike, so
    aligning them with each other holds nothing back; only the least
    watermark over both reads does."""
    head, behind = new_topic(broker, partitions=2), new_topic(broker)
    now = int(time.time() * 1000)
    counts = {head: 30_000, behind: 20_000}
    produce_spread(broker, head, {0: (counts[head], now - 600_000), 1: (counts[head], now - 600_000)})
    produce_spread(broker, behind, {0: (counts[behind], now - 7_200_000)})
    out = str(tmp_path / "out")
    p = beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", "--streaming"]))
    reads = [
        p | "Read " + name >> ReadFromKafka(
            {"bootstrap.servers": broker, "auto.offset.reset": "earliest"}, [topic], with_metadata=True,
            max_num_records=records, idle_partition_timeout_ms=500, max_drift_ms=MAX_DRIFT_MS,
            timestamp_policy=beam_kafka.ReadFromKafka.create_time_policy)
        for name, topic, records in (("head", head, 2 * counts[head]), ("behind", behind, counts[behind]))
    ]
    _ = (reads
         | beam.Flatten()
         | beam.Map(lambda r: (r.key, "%s:%d:%d" % (r.topic, r.partition, r.offset)))
         | beam.WindowInto(window.FixedWindows(WINDOW_S))
         | beam.GroupByKey()
         | beam.FlatMap(lambda kv: kv[1])
         | ferrobeam.io.WriteLines(out))
    result = p.run()
    assert result.wait_until_finish() == PipelineState.DONE
    peak = gauges(result)["gbk_buffered_values_peak"]
    print("skew test across reads, aligned, max_drift_ms=%d: peak %d values buffered" % (MAX_DRIFT_MS, peak))
    lines = ferrobeam.io.read_lines(out)
    expected = {"%s:%d:%d" % (head, partition, o) for partition in (0, 1) for o in range(counts[head])}
    expected |= {"%s:0:%d" % (behind, o) for o in range(counts[behind])}
    assert len(lines) == len(expected) and set(lines) == expected
    # The head topic alone holds 60,000 records; the ceiling's reckoning
    # (see CEILING) gives less here (100 records per second of event time).
    assert peak <= CEILING, "peak %d over the ceiling %d: the read ahead was not held" % (peak, CEILING)
