"""Kafka -> Python Map -> Kafka on ferrobeam: throughput, latency, and the
runner's share of the CPU.

    python examples/benchmarks/kafka.py                  # starts its own broker
    python examples/benchmarks/kafka.py --messages 200000 --rate 5000 --seconds 20

1. Throughput: ``--messages`` records of ``--size`` bytes are produced to a
   topic first; the pipeline reads them (``max_num_records``), maps each in
   Python, and writes them to another topic; messages/s is counted from job
   start to its end (every record acknowledged by the broker).
2. Latency: with the pipeline running, records are produced at ``--rate``
   per second for ``--seconds``, each carrying its send time; a consumer of
   the output topic prints p50/p99/max of (receive - send) after the first
   second.
3. The floor: the same producer and consumer, at the same rate, on one topic
   with nothing in between (one broker hop; the pipeline makes two). The
   runner's latency is printed as a ratio to twice the floor, so runs on
   machines of different speed or load compare.

The job runs on a ``ferrobeam job-server`` process of its own, so the
server's CPU time (the runner) and its SDK workers' (the Python stage) are
measured apart. No DirectRunner comparison: Beam's Python Kafka IO needs a
Java expansion service and a Java SDK harness, which this machine's
DirectRunner setup does not have.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import typing
import uuid
from typing import Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from ferrobeam.io.kafka import ReadFromKafka, WriteToKafka

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)
KAFKA_SH = os.path.join(REPO, "scripts", "kafka", "kafka.sh")


def _stat(pid: int) -> Optional[list[str]]:
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


class TreeCpu:
    """CPU seconds of a process and, apart, of all its descendants (SDK
    workers), sampled every 0.2 s so workers that exit are counted too."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        stats = {int(n): _stat(int(n)) for n in os.listdir("/proc") if n.isdigit()}
        parents = {pid: int(st[1]) for pid, st in stats.items() if st}
        for pid, st in stats.items():
            if st and (pid == self.root or self._descends(pid, parents)):
                # Exited processes keep their last sample.
                self.seen[pid] = (int(st[11]) + int(st[12])) / tick

    def _descends(self, pid: int, parents: dict[int, int]) -> bool:
        for _ in range(64):
            pid = parents.get(pid, 0)
            if pid == self.root:
                return True
            if pid <= 1:
                return False
        return False

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __enter__(self) -> "TreeCpu":
        self._sample()
        self.start = dict(self.seen)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def used(self) -> tuple[float, float]:
        """(root's CPU seconds, descendants') since entering."""
        root = self.seen.get(self.root, 0.0) - self.start.get(self.root, 0.0)
        rest = sum(v - self.start.get(p, 0.0) for p, v in self.seen.items() if p != self.root)
        return root, rest


def transform(kv: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    """The Python stage: a little real work per record (a checksum)."""
    key, value = kv
    return key, value[:8] + struct.pack(">I", sum(value[8:64]) & 0xFFFFFFFF) + value[12:]


def pipeline(job_endpoint: str, servers: str, source: str, sink: str, limit: int) -> beam.Pipeline:
    # Beam's default (DOCKER, Beam's own image) runs on ferrobeam's local workers.
    p = beam.Pipeline(options=PipelineOptions(["--runner=PortableRunner", "--job_endpoint=" + job_endpoint]))
    _ = (p
         | ReadFromKafka({"bootstrap.servers": servers, "auto.offset.reset": "earliest"}, [source],
                         max_num_records=limit, expansion_service=job_endpoint)
         | beam.Map(transform).with_output_types(typing.Tuple[bytes, bytes])
         | WriteToKafka({"bootstrap.servers": servers, "linger.ms": "1"}, sink,
                        expansion_service=job_endpoint))  # yapf: disable
    return p


class Latency(typing.NamedTuple):
    """End-to-end latencies of one run, in ms, after its first second."""
    p50: float
    p99: float
    max: float
    records: int


def _latencies(servers: str, producer: typing.Any, source: str, sink: str, args: argparse.Namespace,
               warm_up: float) -> Optional[Latency]:
    """Produces ``args.rate`` records a second for ``args.seconds`` to
    ``source``, each carrying its send time, while a consumer of ``sink``
    notes (receive - send); returns them after the first second, or None if
    nothing came back."""
    import confluent_kafka  # pylint: disable=import-outside-toplevel  (test extra)
    total = args.rate * args.seconds
    latencies: list[float] = []
    consumer_ready = threading.Event()

    def consume() -> None:
        c = confluent_kafka.Consumer({"bootstrap.servers": servers, "group.id": uuid.uuid4().hex,
                                      "auto.offset.reset": "earliest", "fetch.wait.max.ms": 5})
        c.subscribe([sink])
        consumer_ready.set()
        deadline = time.monotonic() + args.seconds + 60
        while len(latencies) < total and time.monotonic() < deadline:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                latencies.append(time.time() - struct.unpack(">d", m.value()[:8])[0])
        c.close()

    reader = threading.Thread(target=consume)
    reader.start()
    consumer_ready.wait()
    time.sleep(warm_up)  # the consumer (and the job's workers) are up
    body = os.urandom(args.size - 8)
    t0 = time.monotonic()
    for i in range(total):
        due = t0 + i / args.rate
        while time.monotonic() < due:
            producer.poll(0)
            time.sleep(max(0.0, min(0.0005, due - time.monotonic())))
        producer.produce(source, key=b"%d" % (i % 1000), value=struct.pack(">d", time.time()) + body)
    producer.flush(60)
    reader.join()
    steady = sorted(latencies[args.rate:])  # after the first second
    if not steady:
        return None
    q = statistics.quantiles(steady, n=100)
    return Latency(q[49] * 1000, q[98] * 1000, steady[-1] * 1000, len(steady))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=None, help="a running broker (default: start one)")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args(argv)
    import confluent_kafka  # pylint: disable=import-outside-toplevel  (test extra)
    from confluent_kafka import admin  # pylint: disable=import-outside-toplevel

    broker_dir = None
    servers = args.bootstrap
    if servers is None:
        broker_dir = tempfile.mkdtemp(prefix="kafka-bench-")
        servers = subprocess.run(["bash", KAFKA_SH, "start", "--dir", broker_dir], capture_output=True,
                                 text=True, check=True).stdout.strip()
    server = subprocess.Popen(["ferrobeam", "job-server", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        endpoint = line.rsplit(" ", 1)[1].strip()
        topics = ["bench-%s-%s" % (name, uuid.uuid4().hex[:6]) for name in ("in", "out", "lin", "lout", "floor")]
        a = admin.AdminClient({"bootstrap.servers": servers})
        for f in a.create_topics([admin.NewTopic(t, 2, 1) for t in topics]).values():
            f.result(timeout=30)
        producer = confluent_kafka.Producer({"bootstrap.servers": servers, "linger.ms": 5})
        payload = os.urandom(args.size)
        for i in range(args.messages):
            while True:
                try:
                    producer.produce(topics[0], key=b"%d" % (i % 1000), value=payload)
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.flush(60)

        # 1. Throughput.
        with TreeCpu(server.pid) as cpu:
            started = time.monotonic()
            pipeline(endpoint, servers, topics[0], topics[1], args.messages).run().wait_until_finish()
            elapsed = time.monotonic() - started
        runner_cpu, worker_cpu = cpu.used()
        print("throughput: %d messages of %d B in %.1f s = %.0f messages/s" % (
            args.messages, args.size, elapsed, args.messages / elapsed))
        print("CPU: runner %.1f s, Python workers %.1f s: runner share %.0f%% (of runner + workers)" % (
            runner_cpu, worker_cpu, 100 * runner_cpu / max(runner_cpu + worker_cpu, 1e-9)))

        # 2. Latency at a steady rate, through the pipeline.
        total = args.rate * args.seconds
        result = pipeline(endpoint, servers, topics[2], topics[3], total).run()
        through = _latencies(servers, producer, topics[2], topics[3], args, warm_up=5)
        result.wait_until_finish()
        # 3. The floor: producer -> broker -> consumer, nothing in between.
        floor = _latencies(servers, producer, topics[4], topics[4], args, warm_up=1)
        if not through or not floor:
            print("latency: no records came back", file=sys.stderr)
            return 1
        print("latency at %d messages/s for %d s (%d records): p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (
            args.rate, args.seconds, through.records, through.p50, through.p99, through.max))
        print("floor, one broker hop with no runner: p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (
            floor.p50, floor.p99, floor.max))
        print("pipeline latency / (2 x floor): p50 %.2f, p99 %.2f" % (
            through.p50 / (2 * floor.p50), through.p99 / (2 * floor.p99)))
        return 0
    finally:
        server.terminate()
        server.wait(30)
        if broker_dir:
            subprocess.run(["bash", KAFKA_SH, "stop", "--dir", broker_dir, "--purge"], check=False)


if __name__ == "__main__":
    sys.exit(main())

