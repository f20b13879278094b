"""The pricing pipeline, tested unchanged with its source, model and sink replaced.

``pricing.pipeline.run`` is the production entry point; these tests only
give it arguments. The ``replacements`` and ``ferrobeam_args`` fixtures come
from ferrobeam's pytest plugin.
"""

from __future__ import annotations

import os
from typing import Any

import apache_beam as beam
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.transforms.window import IntervalWindow, TimestampedValue

from ferrobeam.testing import Capture
from pricing import pipeline as pricing

DATA = os.path.join(os.path.dirname(__file__), "data")


def price(geohash: str, start: float, requests: int, drivers: int, multiplier: float, pane: str) -> dict[str, Any]:
    return {"geohash": geohash, "window_start": start, "window_end": start + 60, "requests": requests,
            "drivers": drivers, "multiplier": multiplier, "pane": pane}


def ride(ride_id: str, kind: str, ts: float, geohash: str = "u4pruy") -> TimestampedValue:
    return TimestampedValue({"ride_id": ride_id, "geohash": geohash, "kind": kind, "ts": ts}, ts)


def production_args(ferrobeam_args: list[str], tmp_path: Any) -> list[str]:
    # The production flags, pointing nowhere: the source and sink are replaced.
    return ferrobeam_args + ["--rides", str(tmp_path / "no-rides-*.jsonl"), "--output", str(tmp_path / "prices")]


def test_prices_from_a_jsonl_file(replacements, ferrobeam_args, tmp_path):
    replacements.source("ReadRides", jsonl=os.path.join(DATA, "rides.jsonl"), timestamp="ts")
    prices = replacements.capture("WritePrices")

    pricing.run(production_args(ferrobeam_args, tmp_path))

    # Batch: every window's trigger fires once, on time.
    assert sorted(prices.values(), key=lambda p: (p["window_start"], p["geohash"])) == [
        price("u4prux", 0.0, 1, 2, 1.0, "ON_TIME"),
        price("u4pruy", 0.0, 3, 1, 1.79, "ON_TIME"),
        price("u4pruy", 60.0, 1, 1, 1.0, "ON_TIME"),
    ]
    assert not os.path.exists(tmp_path / "prices"), "the real sink must not have run"


def test_early_on_time_and_late_prices_from_a_test_stream(replacements, ferrobeam_args, tmp_path):
    events = (BeamTestStream()
              .add_elements([ride("r1", "request", 5), ride("d1", "driver", 6), ride("r2", "request", 7)])
              .advance_processing_time(11)          # the early trigger (10 s) fires
              .add_elements([ride("r3", "request", 30)])
              .advance_watermark_to(60)             # the window closes: on-time pane
              .add_elements([ride("r4", "request", 40)])  # late, within the allowed lateness
              .advance_watermark_to(60 + 300 + 1)   # past the allowed lateness: window collected
              .add_elements([ride("r5", "request", 50)])  # too late: dropped
              .advance_watermark_to_infinity())  # yapf: disable
    replacements.source("ReadRides", test_stream=events)
    prices = replacements.capture("WritePrices")

    pricing.run(production_args(ferrobeam_args, tmp_path) + ["--streaming"])

    window = IntervalWindow(0, 60)
    assert prices.panes() == [
        (window, "EARLY", price("u4pruy", 0.0, 2, 1, 1.5, "EARLY")),
        (window, "ON_TIME", price("u4pruy", 0.0, 3, 1, 1.79, "ON_TIME")),
        (window, "LATE", price("u4pruy", 0.0, 4, 1, 2.0, "LATE")),
    ]
    # Panes carry their timestamps: the end of the window for each.
    assert {float(r.timestamp) for r in prices.records()} == {59.999}


def test_the_model_replaced_by_a_fixed_price(replacements, ferrobeam_args, tmp_path):
    replacements.source("ReadRides", jsonl=os.path.join(DATA, "rides.jsonl"), timestamp="ts")
    replacements.transform("Score", beam.Map(lambda area: {"geohash": area[0], "multiplier": 9.99}))
    prices = replacements.capture("WritePrices")

    pricing.run(production_args(ferrobeam_args, tmp_path))

    assert sorted(p["geohash"] for p in prices.values()) == ["u4prux", "u4pruy", "u4pruy"]
    assert {p["multiplier"] for p in prices.values()} == {9.99}


def test_replacements_given_as_pipeline_options(ferrobeam_args, tmp_path):
    captured = str(tmp_path / "captured")
    pricing.run(production_args(ferrobeam_args, tmp_path) + [
        "--ferrobeam_replace", "ReadRides=jsonl:%s;timestamp=ts" % os.path.join(DATA, "rides.jsonl"),
        "--ferrobeam_replace", "WritePrices=capture:%s" % captured,
    ])
    prices = Capture("WritePrices", captured)
    assert sorted((p["geohash"], p["window_start"], p["requests"]) for p in prices.values()) == [
        ("u4prux", 0.0, 1), ("u4pruy", 0.0, 3), ("u4pruy", 60.0, 1)]
