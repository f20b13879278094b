"""Exactly-once Kafka writes: a ``WriteToKafka`` with ``transactional.id``
writes in transactions committed with checkpoints, and a consumer with
``isolation.level=read_committed`` finds every record once, also after the
job was killed and restored (real broker, see ``kafka_broker.py``)."""

from __future__ import annotations

import os
import random
import sys
import time
import typing
import uuid
from typing import Any, Iterator

import pytest

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from ferrobeam.io.kafka import WriteToKafka

from kafka_broker import confluent_kafka, consume_all, new_topic, produce, running_broker, transaction_marker

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A single-node broker for this module's tests."""
    yield from running_broker(tmp_path_factory.mktemp("kafka"))


def write(values: list[bytes], broker: str, topic: str, transactional_id: str, *extra: str) -> None:
    with beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", *extra])) as p:
        _ = (p | beam.Create(values)
             | beam.Map(lambda v: (b"", v)).with_output_types(typing.Tuple[bytes, bytes])
             | WriteToKafka({"bootstrap.servers": broker, "transactional.id": transactional_id}, topic))


def test_transactional_batch_write_commits_everything(broker: str) -> None:
    topic, txn = new_topic(broker), "batch-" + uuid.uuid4().hex[:8]
    write([b"v%d" % i for i in range(500)], broker, topic, txn)
    got = consume_all(broker, topic, 500)
    assert sorted(m.value() for m in got) == sorted(b"v%d" % i for i in range(500))
    # The commit moved the marker past the start's empty transaction (0).
    assert transaction_marker(broker, topic, txn) >= 1


def test_one_transactional_id_for_two_writes_is_refused(broker: str) -> None:
    topic = new_topic(broker)
    with pytest.raises(Exception, match=r'both write with\s+transactional.id "same"'):
        with beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner"])) as p:
            kvs = p | beam.Create([b"x"]) | beam.Map(lambda v: (b"", v)).with_output_types(
                typing.Tuple[bytes, bytes])
            config = {"bootstrap.servers": broker, "transactional.id": "same"}
            _ = kvs | "A" >> WriteToKafka(config, topic)
            _ = kvs | "B" >> WriteToKafka(config, topic)


def recovery_run(broker: str, source: str, sink: str, txn: str, records: int, tmp_path: Any, n: int,
                 env: dict[str, str], *extra: str) -> Any:
    """A run of ``kafka_recovery_pipeline.py`` from ``source`` to the
    transactional ``sink``, checkpointed every 0.5 s into ``tmp_path``."""
    from crash_harness import PipelineRun  # pylint: disable=import-outside-toplevel
    script = os.path.join(os.path.dirname(__file__), "kafka_recovery_pipeline.py")
    return PipelineRun([sys.executable, script, "--bootstrap", broker, "--topic", source, "--records",
                        str(records), "--output_topic", sink, "--transactional_id", txn,
                        "--runner=ferrobeam.FerrobeamRunner", "--streaming",
                        "--checkpoint_dir=%s" % (tmp_path / "checkpoints"), "--checkpoint_interval=0.5",
                        "--ferrobeam_work_dir=%s" % (tmp_path / ("work-%02d" % n)), *extra],
                       tmp_path / ("run-%02d.log" % n),
                       env={**os.environ, "RUST_LOG": "warn,ferrobeam_io_kafka=info", **env})


def test_a_crash_between_checkpoint_and_commit_sends_the_transaction_again(broker: str, tmp_path: Any) -> None:
    """The job dies right after a checkpoint completed and before its
    transaction committed (a failpoint): the broker aborts the transaction,
    and the restore sends its records again from the log the checkpoint
    carries; read_committed finds every record once."""
    records = 3_000
    source, sink = new_topic(broker, partitions=3), new_topic(broker)
    txn = "failpoint-" + uuid.uuid4().hex[:8]
    produce(broker, source, [(b"", b"r%d" % i, i % 3, 1_000 + i) for i in range(records)])
    first = recovery_run(broker, source, sink, txn, records, tmp_path, 0,
                         {"FERROBEAM_FAILPOINT": "before-kafka-commit"})
    assert first.wait(timeout=120) != 0, "the failpoint did not stop the job"
    first.kill_tree()  # SDK workers the aborted process left
    assert "failpoint \"before-kafka-commit\" reached" in first.log_tail()
    carried = list((tmp_path / "checkpoints").glob("chk-*/files/*.wal"))
    assert carried, "the checkpoint carries no transaction log"
    second = recovery_run(broker, source, sink, txn, records, tmp_path, 1, {})
    assert second.wait(timeout=180) == 0, second.log_tail()
    assert "sending again the records of a transaction that did not commit" in (
        tmp_path / "run-01.log").read_text(errors="replace")
    got = [m.value().decode() for m in consume_all(broker, sink, records)]
    assert sorted(got) == sorted("r%d" % i for i in range(records)), (
        "%d records, %d distinct" % (len(got), len(set(got))))


@pytest.mark.timeout(480)
def test_killed_job_writes_every_record_exactly_once(broker: str, tmp_path: Any) -> None:
    """Topic (read at 800 records/s) -> slow Map -> transactional WriteToKafka, checkpointed every
    0.5 s; SIGKILL the whole job 5 times, each time after it committed a
    transaction and once records of the next, open one are on the broker,
    so each restore must drop what the dead run wrote since its last
    checkpoint.  A read_committed
    consumer then finds every input record exactly once."""
    records = 10_000
    source, sink = new_topic(broker, partitions=3), new_topic(broker)
    txn = "crash-" + uuid.uuid4().hex[:8]
    produce(broker, source, [(b"", b"r%d" % i, i % 3, 1_000 + i) for i in range(records)])
    rng = random.Random(11)
    ends = confluent_kafka.Consumer({"bootstrap.servers": broker, "group.id": "ends",
                                     "isolation.level": "read_uncommitted"})

    def end_offset() -> int:
        """The sink's end offset, committed or not (a commit adds a marker)."""
        return ends.get_watermark_offsets(confluent_kafka.TopicPartition(sink, 0), timeout=10, cached=False)[1]

    def start(n: int) -> Any:
        # A steady trickle (small epochs, many in each checkpoint interval),
        # so a transaction holds records for most of its life.
        return recovery_run(broker, source, sink, txn, records, tmp_path, n, {}, "--rate", "800")

    try:
        kills, marker, run = 0, -1, None
        for n in range(5):
            run = start(n)
            deadline = time.monotonic() + 120
            # Wait for this run to commit a transaction of its own.
            while run.poll() is None and time.monotonic() < deadline:
                now = transaction_marker(broker, sink, txn)
                if now > marker:
                    marker = now
                    break
                time.sleep(0.2)
            # Then wait until the transaction after it has records on the
            # broker (the end offset moved on, the marker did not).
            time.sleep(rng.uniform(0.0, 0.3))
            start_offset, in_flight = end_offset(), time.monotonic() + 20
            while run.poll() is None and time.monotonic() < in_flight:
                now = transaction_marker(broker, sink, txn)
                if now != marker:  # another commit: wait for the next one's records
                    marker, start_offset = now, end_offset()
                elif end_offset() >= start_offset + 10:
                    break
                time.sleep(0.01)
            if run.poll() is not None:
                break
            run.kill_tree()
            kills += 1
            run = None
        if run is None:
            run = start(5)
        assert kills == 5, "only %d kills before the job finished" % kills
        assert run.wait(timeout=240) == 0, run.log_tail()
        got = [m.value().decode() for m in consume_all(broker, sink, records)]
        want = {"r%d" % i for i in range(records)}
        assert len(got) == records and set(got) == want, (
            "%d records, %d distinct, %d missing" % (len(got), len(set(got)), len(want - set(got))))
        # The kills left aborted transactions behind: without isolation their
        # records show (so the check above is not vacuous).
        every = consume_all(broker, sink, records, isolation="read_uncommitted")
        resent = sum((tmp_path / ("run-%02d.log" % n)).read_text(errors="replace").count("sending again")
                     for n in range(6) if (tmp_path / ("run-%02d.log" % n)).exists())
        print("read_uncommitted sees %d records for %d inputs after %d kills; %d restores sent a lost "
              "transaction again" % (len(every), records, kills, resent))
        assert len(every) > records
    finally:
        ends.close()
