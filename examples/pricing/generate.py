"""Writes a realistic stream of ride events for the pricing pipeline.

Areas (geohash cells around a city centre) get riders and drivers as
Poisson arrivals whose rates follow the time of day, with occasional surges
(a concert letting out: demand in one area jumps for a few minutes while
supply lags). Events are written in arrival order, and a small share
arrive late (their event time is up to ``--max_delay`` seconds before the
events around them), as on a real network::

    python examples/pricing/generate.py --minutes 30 --out rides.jsonl
    python -m pricing.pipeline --rides rides.jsonl --output prices/   # from examples/pricing

``--out kafka://HOST:PORT/TOPIC`` produces them to a Kafka topic instead
(key: the geohash, value: the JSON event, timestamp: its event time), with a
ferrobeam pipeline (``WriteToKafka``, no Java).

Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import sys
import typing
from typing import Iterator, TextIO

#: Geohash cells (precision 6, ~1.2 km) around a city centre, busiest first.
AREAS = ["u4pruy", "u4pruv", "u4prux", "u4pruw", "u4prut", "u4pruz", "u4prus", "u4pruq", "u4prum", "u4prug"]


def daily_factor(ts: float) -> float:
    """Demand multiplier by hour: quiet nights, morning and evening peaks."""
    hour = (ts / 3600.0) % 24
    return 0.3 + math.exp(-((hour - 8.5) ** 2) / 2) + 1.2 * math.exp(-((hour - 18) ** 2) / 3)


def events(start: float, seconds: float, rate: float, seed: int) -> Iterator[dict]:
    rng = random.Random(seed)
    surges: dict[str, tuple[float, float]] = {}
    step = 1.0
    t = start
    n = 0
    while t < start + seconds:
        if rng.random() < 1 / 600:  # about one surge per 10 minutes
            area = rng.choice(AREAS[:5])
            surges[area] = (t, t + rng.uniform(180, 600))
        for rank, area in enumerate(AREAS):
            weight = 1.0 / (1 + rank)  # busier near the centre
            demand = rate * weight * daily_factor(t) / 2
            supply = rate * weight * 0.3
            surge = surges.get(area)
            if surge and surge[0] <= t < surge[1]:
                demand *= 4
            for kind, lam in (("request", demand * step), ("driver", supply * step)):
                for _ in range(_poisson(rng, lam)):
                    n += 1
                    prefix = "r" if kind == "request" else "d"
                    yield {"ride_id": "%s%d" % (prefix, n), "geohash": area, "kind": kind,
                           "ts": round(t + rng.random() * step, 3)}
        t += step


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method is fine for the small rates per area and second used here.
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def write(out: TextIO, start: float, seconds: float, rate: float, seed: int, late_share: float,
          max_delay: float) -> int:
    """Writes events in arrival order (event time plus a network delay)."""
    rng = random.Random(seed + 1)
    pending: list[tuple[float, int, str]] = []
    count = 0
    for i, event in enumerate(events(start, seconds, rate, seed)):
        delay = rng.uniform(0, max_delay) if rng.random() < late_share else rng.uniform(0, 0.5)
        heapq.heappush(pending, (event["ts"] + delay, i, json.dumps(event)))
        while pending and pending[0][0] <= event["ts"]:
            out.write(heapq.heappop(pending)[2] + "\n")
            count += 1
    while pending:
        out.write(heapq.heappop(pending)[2] + "\n")
        count += 1
    return count


def produce_to_kafka(address: str, lines: list[str]) -> None:
    """Writes JSON events to ``kafka://SERVERS/TOPIC`` with ferrobeam."""
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel

    from ferrobeam.io.kafka import WriteToKafka  # pylint: disable=import-outside-toplevel

    beam.coders.registry.register_coder(RideRecord, beam.coders.RowCoder)

    servers, _, topic = address[len("kafka://"):].partition("/")

    def record(line: str) -> RideRecord:
        event = json.loads(line)
        return RideRecord(key=event["geohash"].encode(), value=line.encode(), timestamp=int(event["ts"] * 1000))

    with beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner"])) as p:
        _ = (p | beam.Create(lines) | beam.Map(record).with_output_types(RideRecord)
             | WriteToKafka({"bootstrap.servers": servers}, topic, with_headers=True))


#: A Kafka record of one ride (a schema'd row for ``WriteToKafka``). Built
#: with the functional form: under ``from __future__ import annotations`` the
#: class form's field types are strings Beam cannot turn into a schema.
RideRecord = typing.NamedTuple("RideRecord", [("key", bytes), ("value", bytes), ("timestamp", int)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="event time covered (default 10)")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second at the busiest area (default 20)")
    parser.add_argument("--start", type=float, default=1_700_000_000.0, help="event time of the first event")
    parser.add_argument("--late_share", type=float, default=0.02, help="share of events that arrive late")
    parser.add_argument("--max_delay", type=float, default=90.0, help="largest delay of a late event, seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="-", help="output file, or kafka://HOST:PORT/TOPIC (default: stdout)")
    args = parser.parse_args(argv)
    if args.out.startswith("kafka://"):
        import io  # pylint: disable=import-outside-toplevel
        buffer = io.StringIO()
        n = write(buffer, args.start, args.minutes * 60, args.rate, args.seed, args.late_share, args.max_delay)
        produce_to_kafka(args.out, buffer.getvalue().splitlines())
        print("produced %d events to %s" % (n, args.out), file=sys.stderr)
        return
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    try:
        n = write(out, args.start, args.minutes * 60, args.rate, args.seed, args.late_share, args.max_delay)
    finally:
        if out is not sys.stdout:
            out.close()
    print("wrote %d events" % n, file=sys.stderr)


if __name__ == "__main__":
    main()
