"""Kafka IO against a real broker (see ``kafka_broker.py``): Beam's
ReadFromKafka / WriteToKafka expanded by ferrobeam and run natively, with no
Java beyond the broker itself."""

from __future__ import annotations

import os
import subprocess
import time
import typing
from typing import Any, Iterator

import pytest

import apache_beam as beam
from apache_beam.io import kafka as beam_kafka
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import window

import ferrobeam.io
from ferrobeam.io.kafka import ReadFromKafka, WriteToKafka

from kafka_broker import consume, new_topic, produce, running_broker

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A single-node broker for this module's tests."""
    yield from running_broker(tmp_path_factory.mktemp("kafka"))


def options(*extra: str) -> PipelineOptions:
    return PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", *extra])


def consumer_config(addr: str) -> dict[str, str]:
    return {"bootstrap.servers": addr, "auto.offset.reset": "earliest"}


def test_write_then_read_round_trip(broker: str, tmp_path: Any) -> None:
    topic = new_topic(broker, partitions=3)
    pairs = [(b"k%d" % i, b"v%d" % i) for i in range(300)]
    with beam.Pipeline(options=options()) as p:
        _ = (p | beam.Create(pairs).with_output_types(typing.Tuple[bytes, bytes])
             | WriteToKafka({"bootstrap.servers": broker}, topic))
    written = consume(broker, topic, len(pairs))
    assert sorted((m.key(), m.value()) for m in written) == sorted(pairs)

    out = str(tmp_path / "read")
    with beam.Pipeline(options=options()) as p:
        _ = (p | ReadFromKafka(consumer_config(broker), [topic], max_num_records=len(pairs))
             | beam.Map(lambda kv: "%s=%s" % (kv[0].decode(), kv[1].decode()))
             | beam.io.WriteToText(out))
    lines = sorted(line.strip() for f in os.listdir(tmp_path) if f.startswith("read")
                   for line in open(tmp_path / f, encoding="utf-8"))
    assert lines == sorted("%s=%s" % (k.decode(), v.decode()) for k, v in pairs)


def test_read_with_metadata_matches_the_broker(broker: str, tmp_path: Any) -> None:
    topic = new_topic(broker, partitions=2)
    produce(broker, topic, [(b"a", b"1", 0, 1_000), (b"b", b"2", 1, 2_000), (b"c", b"3", 0, 3_000)])
    out = str(tmp_path / "meta")
    with beam.Pipeline(options=options()) as p:
        _ = (p | ReadFromKafka(consumer_config(broker), [topic], max_num_records=3, with_metadata=True,
                               timestamp_policy=beam_kafka.ReadFromKafka.create_time_policy)
             | beam.Map(lambda r: "|".join(
                 map(str, [r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, r.timestampTypeName])))
             | beam.io.WriteToText(out))
    lines = sorted(line.strip() for f in os.listdir(tmp_path) for line in open(tmp_path / f, encoding="utf-8"))
    assert lines == sorted([
        f"{topic}|0|0|b'a'|b'1'|1000|CreateTime",
        f"{topic}|0|1|b'c'|b'3'|3000|CreateTime",
        f"{topic}|1|0|b'b'|b'2'|2000|CreateTime",
    ])


def test_write_with_headers(broker: str) -> None:
    topic = new_topic(broker, partitions=2)
    rows = [beam.Row(key=b"k", value=b"v", headers=[beam.Row(key="h", value=b"x")], partition=1,
                     timestamp=42_000)]
    with beam.Pipeline(options=options()) as p:
        _ = p | beam.Create(rows) | WriteToKafka({"bootstrap.servers": broker}, topic, with_headers=True)
    [m] = consume(broker, topic, 1)
    assert (m.key(), m.value(), m.partition(), m.headers(), m.timestamp()[1]) == (b"k", b"v", 1, [("h", b"x")],
                                                                                   42_000)


def test_event_time_windows_over_create_time(broker: str, tmp_path: Any) -> None:
    topic = new_topic(broker, partitions=2)
    # 10 s windows: [0, 10) gets 3 records, [10, 20) gets 2, [20, 30) gets 1,
    # spread over both partitions and out of order within each.
    records = [(b"x", b"", 0, 9_000), (b"x", b"", 1, 1_000), (b"x", b"", 0, 5_000), (b"x", b"", 1, 15_000),
               (b"x", b"", 0, 12_000), (b"x", b"", 1, 25_000)]
    produce(broker, topic, records)
    out = str(tmp_path / "windows")
    with beam.Pipeline(options=options()) as p:
        _ = (p | ReadFromKafka(consumer_config(broker), [topic], max_num_records=len(records),
                               timestamp_policy=beam_kafka.ReadFromKafka.create_time_policy)
             | beam.WindowInto(window.FixedWindows(10))
             | beam.Map(lambda _: 1)
             | beam.CombineGlobally(sum).without_defaults()
             | beam.ParDo(_WithWindowStart())
             | beam.io.WriteToText(out))
    lines = sorted(line.strip() for f in os.listdir(tmp_path) for line in open(tmp_path / f, encoding="utf-8"))
    assert lines == ["0:3", "10:2", "20:1"]


class _WithWindowStart(beam.DoFn):

    def process(self, count: int, w: Any = beam.DoFn.WindowParam) -> Iterator[str]:
        yield "%d:%d" % (int(w.start), count)


def test_an_idle_partition_does_not_hold_windows_back(broker: str) -> None:
    """Partition 1 never gets a record; once it has been idle for the
    timeout, windows of partition 0 fire while the job keeps running."""
    source = new_topic(broker, partitions=2)
    sink = new_topic(broker)
    now = int(time.time() * 1000)
    start = now - now % 10_000 - 60_000
    produce(broker, source, [(b"x", b"", 0, start + i * 1_000) for i in range(25)])
    p = beam.Pipeline(options=options("--streaming"))
    _ = (p | ReadFromKafka(consumer_config(broker), [source], idle_partition_timeout_ms=500,
                           timestamp_policy=beam_kafka.ReadFromKafka.create_time_policy)
         | beam.WindowInto(window.FixedWindows(10))
         | beam.Map(lambda _: 1)
         | beam.CombineGlobally(sum).without_defaults()
         | beam.ParDo(_WithWindowStart())
         | beam.Map(lambda s: (b"", s.encode())).with_output_types(typing.Tuple[bytes, bytes])
         | WriteToKafka({"bootstrap.servers": broker}, sink))
    result = p.run()
    try:
        got = consume(broker, sink, 3, timeout=60)
    finally:
        result.cancel()
    assert sorted(m.value().decode() for m in got) == ["%d:10" % ((start + k * 10_000) // 1000) for k in (0, 1)] + [
        "%d:5" % ((start + 20_000) // 1000)
    ]


def test_offsets_survive_a_restore(broker: str, tmp_path: Any) -> None:
    """A read resumes from its checkpointed positions: the same job run
    again (restoring its last checkpoint) reads only what is new, once."""
    topic = new_topic(broker)
    produce(broker, topic, [(b"", b"first-%d" % i, 0, 1_000 + i) for i in range(5)])
    checkpoints = str(tmp_path / "ckpt")

    def run(count: int, out: str) -> list[str]:
        with beam.Pipeline(options=options("--streaming", "--checkpoint_dir=" + checkpoints)) as p:
            _ = (p | ReadFromKafka(consumer_config(broker), [topic], max_num_records=count)
                 | beam.Map(lambda kv: kv[1].decode())
                 | ferrobeam.io.WriteLines(out))
        return sorted(ferrobeam.io.read_lines(out))

    assert run(5, str(tmp_path / "one")) == ["first-%d" % i for i in range(5)]
    produce(broker, topic, [(b"", b"second-%d" % i, 0, 2_000 + i) for i in range(3)])
    # The limit counts from the restored count (5) up to 8: 3 more records.
    assert run(8, str(tmp_path / "two")) == ["second-%d" % i for i in range(3)]


def test_java_deserializers_are_refused_at_construction(broker: str) -> None:
    p = beam.Pipeline(options=options())
    with pytest.raises(RuntimeError, match="LongDeserializer.*ferrobeam runs no Java"):
        _ = p | ReadFromKafka(consumer_config(broker), ["t"],
                              key_deserializer="org.apache.kafka.common.serialization.LongDeserializer")


def test_untyped_write_input_is_refused_with_the_fix(broker: str) -> None:
    p = beam.Pipeline(options=options())
    with pytest.raises(RuntimeError, match=r"with_output_types\(typing.Tuple\[bytes, bytes\]\)"):
        _ = p | beam.Create([("a", 1)]) | WriteToKafka({"bootstrap.servers": broker}, "t")


def test_beams_own_transform_with_ferrobeams_address(broker: str, tmp_path: Any) -> None:
    """Beam's classes, unchanged, with expansion_service= a ferrobeam job server."""
    from ferrobeam.runner import embedded_job_endpoint  # pylint: disable=import-outside-toplevel
    topic = new_topic(broker)
    produce(broker, topic, [(b"k", b"v", 0, 1_000)])
    out = str(tmp_path / "beam")
    with beam.Pipeline(options=options()) as p:
        _ = (p | beam_kafka.ReadFromKafka(consumer_config(broker), [topic], max_num_records=1,
                                          expansion_service=embedded_job_endpoint())
             | beam.Map(lambda kv: kv[1].decode())
             | beam.io.WriteToText(out))
    lines = [line.strip() for f in os.listdir(tmp_path) for line in open(tmp_path / f, encoding="utf-8")]
    assert lines == ["v"]



def test_standalone_expansion_service(broker: str, tmp_path: Any) -> None:
    """`ferrobeam expansion-service` alone expands for Beam's classes."""
    server = subprocess.Popen(["ferrobeam", "expansion-service", "--port", "0"], stdout=subprocess.PIPE,
                              text=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        assert "listening on" in line, line
        address = line.rsplit(" ", 1)[1].strip()
        topic = new_topic(broker)
        produce(broker, topic, [(b"k", b"standalone", 0, 1_000)])
        out = str(tmp_path / "standalone")
        with beam.Pipeline(options=options()) as p:
            _ = (p | beam_kafka.ReadFromKafka(consumer_config(broker), [topic], max_num_records=1,
                                              expansion_service=address)
                 | beam.Map(lambda kv: kv[1].decode())
                 | beam.io.WriteToText(out))
        lines = [line.strip() for f in os.listdir(tmp_path) for line in open(tmp_path / f, encoding="utf-8")]
        assert lines == ["standalone"]
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.timeout(420)
def test_killed_job_reads_every_record_exactly_once(broker: str, tmp_path: Any) -> None:
    """SIGKILL the job (server, workers, all) 5 times while it reads a topic
    into committed files; after the restores every record is in the output
    exactly once: the checkpointed positions neither skip nor repeat."""
    import random  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    from crash_harness import PipelineRun, kill_and_restart  # pylint: disable=import-outside-toplevel

    records = 30_000
    topic = new_topic(broker, partitions=3)
    produce(broker, topic, [(b"", b"r%d" % i, i % 3, 1_000 + i) for i in range(records)])
    output, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    script = os.path.join(os.path.dirname(__file__), "kafka_recovery_pipeline.py")
    runs = 0

    def start() -> PipelineRun:
        nonlocal runs
        runs += 1
        return PipelineRun([sys.executable, script, "--bootstrap", broker, "--topic", topic, "--records",
                            str(records), "--output", str(output), "--runner=ferrobeam.FerrobeamRunner",
                            "--streaming", "--checkpoint_dir=%s" % checkpoints, "--checkpoint_interval=0.5",
                            "--ferrobeam_work_dir=%s" % (tmp_path / ("work-%02d" % runs))],
                           tmp_path / ("run-%02d.log" % runs))

    loop = kill_and_restart(start, output, random.Random(7), 5, 0.0, timeout=120)
    assert loop.last is not None and loop.kills == 5, "only %d kills before the job finished" % loop.kills
    assert loop.last.wait(timeout=180) == 0, loop.last.log_tail()
    lines = ferrobeam.io.read_lines(output)
    assert len(lines) == records and set(lines) == {"r%d" % i for i in range(records)}, (
        "%d lines, %d distinct, %d missing" % (len(lines), len(set(lines)),
                                              records - len(set(lines) & {"r%d" % i for i in range(records)})))


def test_a_rate_limited_read_takes_its_time(broker: str, tmp_path: Any) -> None:
    """600 records at max_records_per_second=200: with processing-time
    timestamps (stamped when the read takes a record), the records span
    at least two seconds (a second's worth may come at once), and none is
    lost.  Without the limit they all come in one epoch."""
    topic = new_topic(broker, partitions=2)
    produce(broker, topic, [(b"", b"r%d" % i, i % 2, 1_000 + i) for i in range(600)])
    out = tmp_path / "out"

    class Stamp(beam.DoFn):  # type: ignore[misc]
        def process(self, kv: tuple[bytes, bytes], t: Any = beam.DoFn.TimestampParam) -> Iterator[str]:
            yield "%s %d" % (kv[1].decode(), t.micros // 1000)

    with beam.Pipeline(options=options()) as p:
        _ = (p | ReadFromKafka(consumer_config(broker), [topic], max_num_records=600, max_records_per_second=200,
                               timestamp_policy="ProcessingTime")
             | beam.ParDo(Stamp()) | ferrobeam.io.WriteLines(str(out)))
    lines = [line.split() for line in ferrobeam.io.read_lines(out)]
    assert sorted(v for v, _ in lines) == sorted("r%d" % i for i in range(600))
    stamps = [int(t) for _, t in lines]
    span = (max(stamps) - min(stamps)) / 1000
    assert span >= 1.8, "600 records at 200/s were read within %.2f s" % span


def test_unreachable_brokers_fail_the_job_after_the_broker_timeout() -> None:
    import socket  # pylint: disable=import-outside-toplevel
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(Exception, match=r"127\.0\.0\.1:%d gave no partitions .* within 2000 ms" % port):
        with beam.Pipeline(options=options()) as p:
            _ = p | ReadFromKafka({"bootstrap.servers": "127.0.0.1:%d" % port}, ["t"], broker_timeout_ms=2000)
    assert time.monotonic() - started < 60
