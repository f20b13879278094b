"""The pricing pipeline from and to Kafka topics, on a real broker: its
final prices equal those of the same rides read from a file."""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any, Iterator

import pytest

from kafka_broker import consume, new_topic, produce, running_broker
from pricing import pipeline as pricing

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))
import generate  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from running_broker(tmp_path_factory.mktemp("kafka"))


def final_prices(prices: list[dict[str, Any]]) -> dict[tuple[str, float], tuple[int, int, float]]:
    """Per (area, window): the counts and multiplier of its fullest pane
    (panes accumulate, so that one has every ride of the window)."""
    best: dict[tuple[str, float], tuple[int, int, float]] = {}
    for p in prices:
        key = (p["geohash"], p["window_start"])
        value = (p["requests"], p["drivers"], p["multiplier"])
        if key not in best or sum(value[:2]) > sum(best[key][:2]):
            best[key] = value
    return best


def test_kafka_prices_equal_the_file_run(broker: str, ferrobeam_args: list[str], tmp_path: Any) -> None:
    buffer = io.StringIO()
    count = generate.write(buffer, 1_700_000_000.0, 5 * 60, 5.0, seed=3, late_share=0.02, max_delay=90.0)
    lines = buffer.getvalue().splitlines()
    rides_file = tmp_path / "rides.jsonl"
    rides_file.write_text(buffer.getvalue(), encoding="utf-8")

    rides, prices = new_topic(broker, partitions=3), new_topic(broker)
    # In arrival order, each area in one partition, stamped with event time.
    events = [json.loads(line) for line in lines]
    produce(broker, rides, [(e["geohash"].encode(), line.encode(), generate.AREAS.index(e["geohash"]) % 3,
                             int(e["ts"] * 1000)) for e, line in zip(events, lines)])
    pricing.run(ferrobeam_args + ["--rides", "kafka://%s/%s" % (broker, rides), "--max_rides", str(count),
                                  "--output", "kafka://%s/%s" % (broker, prices)])
    from_kafka = [json.loads(m.value()) for m in consume(broker, prices, 10**9, timeout=15)]
    assert all(m["geohash"] for m in from_kafka)

    pricing.run(ferrobeam_args + ["--rides", str(rides_file), "--output", str(tmp_path / "prices")])
    from_file = [json.loads(line) for name in os.listdir(tmp_path / "prices") if not name.startswith(".")
                 for line in open(tmp_path / "prices" / name, encoding="utf-8")]
    assert final_prices(from_kafka) == final_prices(from_file)
    assert len(final_prices(from_file)) >= 40  # 10 areas x 5 windows, some may be empty
