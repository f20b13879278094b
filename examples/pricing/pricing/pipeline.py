"""The dynamic pricing pipeline, as it ships.

Ride events (a rider requesting a ride, a driver becoming available) are
keyed by the geohash of where they happen; each area's supply and demand
are counted in one-minute event-time windows, with early results while a
window is open and corrections for late events; a Python model turns
supply and demand into a price multiplier; the prices are written out::

    python -m pricing.pipeline --rides 'rides/*.jsonl' --output prices/ \\
        --runner=ferrobeam.FerrobeamRunner

or from and to Kafka topics (run natively by ferrobeam, no Java)::

    python -m pricing.pipeline --rides kafka://localhost:9092/rides \\
        --output kafka://localhost:9092/prices --runner=ferrobeam.FerrobeamRunner

(in Kafka, each ride is one record: key the geohash, value the JSON event,
timestamp its event time; each price likewise).

Events are JSON objects: ``{"ride_id": "r1", "geohash": "u4pruy",
"kind": "request" | "driver", "ts": 1700000000.5}`` (``ts`` is event time in
seconds). ``examples/pricing/generate.py`` writes realistic streams of them.

The transforms a test replaces have stable names: ``ReadRides`` (the
source), ``Score`` (the model) and ``WritePrices`` (the sink). See
``examples/pricing/tests`` for tests that run this module unchanged.
"""

from __future__ import annotations

import argparse
import json
import math
import typing
from typing import Any, Iterable, Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
from apache_beam.transforms import trigger, window
from apache_beam.utils.windowed_value import PaneInfoTiming

from ferrobeam.io.kafka import ReadFromKafka, WriteToKafka

WINDOW_SECONDS = 60
ALLOWED_LATENESS_SECONDS = 300

_TIMING = {PaneInfoTiming.EARLY: "EARLY", PaneInfoTiming.ON_TIME: "ON_TIME",
           PaneInfoTiming.LATE: "LATE", PaneInfoTiming.UNKNOWN: "UNKNOWN"}


def kafka_topic(address: str) -> Optional[tuple[str, str]]:
    """``kafka://SERVERS/TOPIC`` as (bootstrap servers, topic), else None."""
    if not address.startswith("kafka://"):
        return None
    servers, _, topic = address[len("kafka://"):].partition("/")
    if not servers or not topic:
        raise ValueError("expected kafka://HOST:PORT/TOPIC, got %r" % address)
    return servers, topic


class ReadRides(beam.PTransform):
    """Ride events from JSON-lines files or a Kafka topic, stamped with
    their event time."""

    def __init__(self, source: str, max_records: Optional[int] = None) -> None:
        super().__init__()
        self._source = source
        self._max_records = max_records

    def expand(self, pbegin: Any) -> Any:
        kafka = kafka_topic(self._source)
        if kafka:
            servers, topic = kafka
            lines = (pbegin
                     | "Kafka" >> ReadFromKafka({"bootstrap.servers": servers, "auto.offset.reset": "earliest"},
                                                [topic], timestamp_policy="CreateTime",
                                                max_num_records=self._max_records)
                     | "Values" >> beam.Map(lambda kv: kv[1].decode("utf-8")))  # yapf: disable
        else:
            lines = pbegin | "Lines" >> beam.io.ReadFromText(self._source, validate=False)
        return (lines
                | "Parse" >> beam.Map(json.loads)
                | "Stamp" >> beam.Map(lambda e: window.TimestampedValue(e, e["ts"])))  # yapf: disable


class SupplyDemand(beam.CombineFn):
    """Counts (requests, drivers) of one area's events."""

    def create_accumulator(self) -> tuple[int, int]:
        return (0, 0)

    def add_input(self, acc: tuple[int, int], kind: str) -> tuple[int, int]:
        return (acc[0] + (kind == "request"), acc[1] + (kind == "driver"))

    def merge_accumulators(self, accs: Iterable[tuple[int, int]]) -> tuple[int, int]:
        requests = drivers = 0
        for r, d in accs:
            requests += r
            drivers += d
        return (requests, drivers)

    def extract_output(self, acc: tuple[int, int]) -> tuple[int, int]:
        return acc


class PriceModel:
    """Surge multiplier from demand over supply: 1.0 when balanced, capped.

    A stand-in for a trained model: ``multiplier = clamp(1 + k * log2(ratio))``
    with ``ratio = requests / max(drivers, 1)``, loaded from JSON coefficients
    when ``--model`` is given.
    """

    def __init__(self, k: float = 0.5, floor: float = 1.0, cap: float = 3.0) -> None:
        self.k, self.floor, self.cap = k, floor, cap

    @classmethod
    def load(cls, path: Optional[str]) -> "PriceModel":
        if not path:
            return cls()
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))

    def predict(self, requests: int, drivers: int) -> float:
        if requests == 0:
            return self.floor
        ratio = requests / max(drivers, 1)
        return round(min(self.cap, max(self.floor, 1.0 + self.k * math.log2(ratio))), 2)


class ScorePrice(beam.DoFn):
    """Scores each area's window with the model (loaded once per worker)."""

    def __init__(self, model_path: Optional[str]) -> None:
        self._model_path = model_path
        self._model: Optional[PriceModel] = None

    def setup(self) -> None:
        self._model = PriceModel.load(self._model_path)

    def process(self, area: tuple[str, tuple[int, int]], w: Any = beam.DoFn.WindowParam,
                pane: Any = beam.DoFn.PaneInfoParam) -> Iterator[dict[str, Any]]:
        assert self._model is not None
        geohash, (requests, drivers) = area
        yield {
            "geohash": geohash,
            "window_start": float(w.start),
            "window_end": float(w.end),
            "requests": requests,
            "drivers": drivers,
            "multiplier": self._model.predict(requests, drivers),
            "pane": _TIMING.get(pane.timing, "UNKNOWN"),
        }


class WritePrices(beam.PTransform):
    """Prices as JSON lines, one set of files per window, or as records of a
    Kafka topic keyed by geohash."""

    def __init__(self, output: str) -> None:
        super().__init__()
        self._output = output

    def expand(self, prices: Any) -> Any:
        kafka = kafka_topic(self._output)
        if kafka:
            servers, topic = kafka
            return (prices
                    | "Record" >> beam.Map(lambda p: (p["geohash"].encode(), json.dumps(p, sort_keys=True).encode())
                                           ).with_output_types(typing.Tuple[bytes, bytes])
                    | "Kafka" >> WriteToKafka({"bootstrap.servers": servers}, topic))  # yapf: disable
        return (prices
                | "Json" >> beam.Map(lambda p: json.dumps(p, sort_keys=True))
                | "Files" >> fileio.WriteToFiles(path=self._output))  # yapf: disable


def build(p: beam.Pipeline, rides: str, output: str, model: Optional[str] = None,
          early_firing_seconds: int = 10, max_rides: Optional[int] = None) -> None:
    """Adds the pricing pipeline to ``p``."""
    _ = (p
         | "ReadRides" >> ReadRides(rides, max_rides)
         | "KeyByArea" >> beam.Map(lambda e: (e["geohash"], e["kind"]))
         | "Window" >> beam.WindowInto(
             window.FixedWindows(WINDOW_SECONDS),
             trigger=trigger.AfterWatermark(
                 early=trigger.AfterProcessingTime(early_firing_seconds),
                 late=trigger.AfterCount(1)),
             accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
             allowed_lateness=ALLOWED_LATENESS_SECONDS)
         | "SupplyDemand" >> beam.CombinePerKey(SupplyDemand())
         | "Score" >> beam.ParDo(ScorePrice(model))
         | "WritePrices" >> WritePrices(output))  # yapf: disable


def run(argv: Optional[Sequence[str]] = None) -> None:
    """Parses arguments, builds the pipeline and runs it to the end."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rides", required=True,
                        help="ride events: a JSON-lines file or glob, or kafka://HOST:PORT/TOPIC")
    parser.add_argument("--output", required=True, help="directory for the prices, or kafka://HOST:PORT/TOPIC")
    parser.add_argument("--max_rides", type=int, default=None,
                        help="Kafka: stop after this many rides (demos and tests; default: run until stopped)")
    parser.add_argument("--model", default=None, help="JSON file of PriceModel coefficients")
    parser.add_argument("--early_firing_seconds", type=int, default=10,
                        help="processing time between early results of an open window")
    known, pipeline_args = parser.parse_known_args(argv)
    options = PipelineOptions(pipeline_args)
    options.view_as(SetupOptions).save_main_session = False
    with beam.Pipeline(options=options) as p:
        build(p, known.rides, known.output, known.model, known.early_firing_seconds, known.max_rides)


if __name__ == "__main__":
    run()
