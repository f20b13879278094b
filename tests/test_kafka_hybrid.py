"""The hybrid source: history from files, then the Kafka head, with no gap
and no duplicate at the cut-over (real broker, see ``kafka_broker.py``)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

import ferrobeam.io
from ferrobeam.io.kafka import KafkaBackfill, ReadFromKafka

from kafka_broker import confluent_kafka, kafka_admin, new_topic, produce, running_broker

pytestmark = pytest.mark.timeout(300)

BASE = 1_700_000_000_000  # record i has CreateTime BASE + 10 * i


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A single-node broker for this module's tests."""
    yield from running_broker(tmp_path_factory.mktemp("kafka"))


def fill(broker: str, topic: str, count: int, partitions: int) -> dict[int, list[tuple[int, int]]]:
    """Produces records ``v<i>`` (i < count) round-robin over partitions;
    returns, per partition, its (offset, i) in order."""
    produce(broker, topic, [(b"k%d" % i, b"v%d" % i, i % partitions, BASE + 10 * i) for i in range(count)])
    return {p: [(n, i) for n, i in enumerate(range(p, count, partitions))] for p in range(partitions)}


def archive(path: Path, topic: str, placed: dict[int, list[tuple[int, int]]], keep: Any) -> None:
    """Writes the records ``keep(partition, offset, i)`` accepts as JSON
    lines, an archive of the topic (two files per partition, so files are
    read in time order, not name order)."""
    path.mkdir(parents=True, exist_ok=True)
    for p, records in placed.items():
        kept = [(o, i) for o, i in records if keep(p, o, i)]
        half = len(kept) // 2
        for name, part in (("z-%d-early" % p, kept[:half]), ("a-%d-late" % p, kept[half:])):
            with open(path / ("%s.jsonl" % name), "w", encoding="utf-8") as f:
                for o, i in part:
                    f.write(json.dumps({"topic": topic, "partition": p, "offset": o, "ts": BASE + 10 * i,
                                        "key": "k%d" % i, "value": "v%d" % i}) + "\n")


def delete_before(broker: str, topic: str, offsets: dict[int, int]) -> None:
    """Deletes each partition's records before ``offsets[p]``, as retention
    would."""
    admin = kafka_admin.AdminClient({"bootstrap.servers": broker})
    futures = admin.delete_records([confluent_kafka.TopicPartition(topic, p, o) for p, o in offsets.items()])
    for f in futures.values():
        f.result(timeout=30)


def run(broker: str, topic: str, backfill: KafkaBackfill, records: int, out: Path) -> list[str]:
    with beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner"])) as p:
        _ = (p | ReadFromKafka({"bootstrap.servers": broker, "auto.offset.reset": "earliest"}, [topic],
                               max_num_records=records, timestamp_policy="CreateTime", backfill=backfill)
             | beam.Map(lambda kv: "%s=%s" % (kv[0].decode(), kv[1].decode()))
             | ferrobeam.io.WriteLines(str(out)))
    return ferrobeam.io.read_lines(out)


def expected(indices: Any) -> list[str]:
    return sorted("k%d=v%d" % (i, i) for i in indices)


def test_time_cutover_joins_files_and_kafka_without_gap_or_duplicate(broker: str, tmp_path: Path) -> None:
    """Kafka lost its oldest records to retention; the archive holds those
    and overlaps Kafka by a wide margin.  With a cut-over time, records
    before it come from the files only, the rest from Kafka only, and
    records produced while the job runs follow (the head)."""
    topic = new_topic(broker, partitions=2)
    placed = fill(broker, topic, 1_000, 2)
    delete_before(broker, topic, {0: 100, 1: 100})  # records 0..199 are only in the archive
    archive(tmp_path / "history", topic, placed, lambda p, o, i: i < 700)
    cutover = BASE + 10 * 500
    live = threading.Timer(3.0, lambda: produce(
        broker, topic, [(b"k%d" % i, b"v%d" % i, i % 2, BASE + 10 * i) for i in range(1_000, 1_100)]))
    live.start()
    try:
        lines = run(broker, topic, KafkaBackfill(str(tmp_path / "history" / "*.jsonl"), timestamp_field="ts",
                                                 key_field="key", value_field="value", cutover_time_ms=cutover),
                    1_100, tmp_path / "out")
    finally:
        live.join()
    assert sorted(lines) == expected(range(1_100)), (
        "%d lines, %d distinct" % (len(lines), len(set(lines))))


def test_offset_cutover_continues_after_the_archive(broker: str, tmp_path: Path) -> None:
    """Without a cut-over time, each partition continues in Kafka right
    after the last offset the archive holds of it (here: different for the
    two partitions)."""
    topic = new_topic(broker, partitions=2)
    placed = fill(broker, topic, 600, 2)
    delete_before(broker, topic, {0: 50, 1: 80})
    ends = {0: 120, 1: 200}  # the archive holds offsets below these
    archive(tmp_path / "history", topic, placed, lambda p, o, i: o < ends[p])
    lines = run(broker, topic, KafkaBackfill(str(tmp_path / "history" / "*.jsonl"), timestamp_field="ts",
                                             key_field="key", value_field="value"),
                600, tmp_path / "out")
    assert sorted(lines) == expected(range(600))


def test_a_gap_between_archive_and_kafka_fails_the_job(broker: str, tmp_path: Path) -> None:
    topic = new_topic(broker, partitions=1)
    placed = fill(broker, topic, 300, 1)
    delete_before(broker, topic, {0: 150})
    archive(tmp_path / "history", topic, placed, lambda p, o, i: o < 100)  # 100..149 are nowhere
    with pytest.raises(Exception, match=r"gap at the cut-over: the files end at offset 99 of .*/0"):
        run(broker, topic, KafkaBackfill(str(tmp_path / "history" / "*.jsonl"), timestamp_field="ts"),
            300, tmp_path / "out")


def test_backfill_settings_are_checked_when_the_pipeline_is_built(broker: str) -> None:
    with pytest.raises(Exception, match="ProcessingTime cannot be combined with a backfill"):
        with beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner"])) as p:
            _ = p | ReadFromKafka({"bootstrap.servers": broker}, ["t"], timestamp_policy="ProcessingTime",
                                  backfill=KafkaBackfill("/tmp/none/*.jsonl"))
