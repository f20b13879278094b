"""A real Kafka broker for tests, and an independent client to check it.

The broker is Apache Kafka in KRaft mode, started by
``scripts/kafka/kafka.sh``; records are produced and read back with
``confluent_kafka`` (librdkafka's Python client), not with the code under
test.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka_admin = pytest.importorskip("confluent_kafka.admin")

KAFKA_SH = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "kafka", "kafka.sh")


def running_broker(directory: Path) -> Iterator[str]:
    """Starts a broker in ``directory``, yields its address, stops it."""
    addr = subprocess.run(["bash", KAFKA_SH, "start", "--dir", str(directory)], capture_output=True,
                          text=True, check=True).stdout.strip()
    try:
        yield addr
    finally:
        subprocess.run(["bash", KAFKA_SH, "stop", "--dir", str(directory), "--purge"], check=False)


def new_topic(addr: str, partitions: int = 1) -> str:
    """Creates a topic with a fresh name."""
    name = "t-" + uuid.uuid4().hex[:10]
    admin = kafka_admin.AdminClient({"bootstrap.servers": addr})
    for f in admin.create_topics([kafka_admin.NewTopic(name, partitions, 1)]).values():
        f.result(timeout=30)
    return name


def produce(addr: str, topic: str, records: list[tuple[bytes, bytes, int, int]]) -> None:
    """(key, value, partition, create time) records, acknowledged."""
    p = confluent_kafka.Producer({"bootstrap.servers": addr})
    for key, value, partition, ts in records:
        p.produce(topic, value=value, key=key, partition=partition, timestamp=ts)
    assert p.flush(30) == 0


def consume(addr: str, topic: str, count: int, timeout: float = 60) -> list[Any]:
    """The first ``count`` committed records of ``topic`` (all partitions),
    or fewer if the timeout passes first."""
    c = confluent_kafka.Consumer({
        "bootstrap.servers": addr,
        "group.id": "check-" + uuid.uuid4().hex,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    c.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                out.append(m)
    finally:
        c.close()
    return out


def consume_all(addr: str, topic: str, expected: int, quiet: float = 3.0, timeout: float = 90,
                isolation: str = "read_committed") -> list[Any]:
    """Every record of ``topic`` a consumer with ``isolation`` sees: read
    until ``expected`` arrived, then on until nothing more came for
    ``quiet`` seconds (so duplicates beyond ``expected`` are caught)."""
    c = confluent_kafka.Consumer({
        "bootstrap.servers": addr,
        "group.id": "check-" + uuid.uuid4().hex,
        "auto.offset.reset": "earliest",
        "isolation.level": isolation,
    })
    c.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                out.append(m)
                last = time.monotonic()
            elif len(out) >= expected and time.monotonic() - last >= quiet:
                break
    finally:
        c.close()
    return out


def transaction_marker(addr: str, topic: str, transactional_id: str) -> int:
    """The number of the last transaction a ferrobeam transactional sink
    committed to ``topic`` (its marker group's offset), or -1."""
    c = confluent_kafka.Consumer({
        "bootstrap.servers": addr,
        "group.id": "ferrobeam-txn." + transactional_id,
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    try:
        for attempt in range(20):
            try:
                return c.committed([confluent_kafka.TopicPartition(topic, 0)], timeout=10)[0].offset
            except confluent_kafka.KafkaException:  # e.g. the coordinator moved or is loading
                if attempt == 19:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")
    finally:
        c.close()
