"""Every user state kind of the Python SDK, end to end, against the DirectRunner.

One pipeline holds a stateful DoFn per state kind - bag, set, combining
value, read-modify-write and ordered list - each also clearing its state,
plus variants with several windows per key and with values bigger than one
State API page. It runs once on the DirectRunner and on ferrobeam (with the
SDK's state cache off and on, so cache tokens are exercised), and every
kind's output must equal the DirectRunner's and an expectation computed
here in plain Python.

Outputs must not depend on the order in which a key's elements arrive (it
differs between runners), so each element carries how many elements its
key (and window) has; a DoFn reports its state only when it has seen them
all.
"""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path
from typing import Any, Iterator

import pytest

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.coders import StrUtf8Coder
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import python_urns
from apache_beam.transforms import combiners
from apache_beam.transforms import window
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.transforms.userstate import CombiningValueStateSpec
from apache_beam.transforms.userstate import OrderedListStateSpec
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.userstate import SetStateSpec
from apache_beam.utils.timestamp import Timestamp

from conftest import read_output_lines

KEYS = ["k%02d" % i for i in range(12)]
#: Sizes of the "large" values: more than one 2 MiB State API page per key
#: in total, and larger than the SDK's 10 MB append flush, so the set below
#: is written in several appends and read back in several pages.
LARGE_VALUE_BYTES = 400_000
LARGE_VALUES_PER_KEY = 30


def _elements() -> list[tuple[str, tuple[int, int]]]:
    """(key, (value, count of the key's elements)), shuffled, with repeats."""
    rng = random.Random(7)
    out = []
    for i, key in enumerate(KEYS):
        n = 1 + (i * 5) % 17
        values = [rng.randrange(0, 10) for _ in range(n)]  # repeats for the set
        out.extend((key, (v, n)) for v in values)
    rng.shuffle(out)
    return out


ELEMENTS = _elements()


class _Counted(beam.DoFn):
    """Base: counts the key's elements, so subclasses know when all arrived."""

    SEEN = CombiningValueStateSpec("seen", VarIntCoder(), combiners.CountCombineFn())

    @staticmethod
    def last(seen: Any, n: int) -> bool:
        seen.add(1)
        return seen.read() == n


class BagFn(_Counted):
    BAG = BagStateSpec("bag", VarIntCoder())

    def process(self, kv, bag=beam.DoFn.StateParam(BAG), seen=beam.DoFn.StateParam(_Counted.SEEN)) -> Iterator:
        key, (value, n) = kv
        bag.add(value)
        if self.last(seen, n):
            yield key, sorted(bag.read())
            bag.clear()
            yield key, "after clear", list(bag.read())
            bag.add(-1)
            yield key, "after re-add", list(bag.read())


class BagEveryThreeFn(_Counted):
    """Clears the bag whenever it holds three values."""

    BAG = BagStateSpec("bag", VarIntCoder())

    def process(self, kv, bag=beam.DoFn.StateParam(BAG), seen=beam.DoFn.StateParam(_Counted.SEEN)) -> Iterator:
        key, (value, n) = kv
        bag.add(value)
        held = len(list(bag.read()))
        if held == 3:
            yield key, "flushed", held
            bag.clear()
        if self.last(seen, n):
            yield key, "left", len(list(bag.read()))


class SetFn(_Counted):
    SET = SetStateSpec("set", VarIntCoder())

    def process(self, kv, s=beam.DoFn.StateParam(SET), seen=beam.DoFn.StateParam(_Counted.SEEN)) -> Iterator:
        key, (value, n) = kv
        s.add(value)
        if self.last(seen, n):
            yield key, sorted(s.read())
            s.clear()
            s.add(100)
            yield key, "after clear", sorted(s.read())


class MeanFn(beam.CombineFn):
    """A mean whose merge accepts no accumulators (Beam's MeanCombineFn does not)."""

    def create_accumulator(self) -> tuple[int, int]:
        return (0, 0)

    def add_input(self, acc: tuple[int, int], value: int) -> tuple[int, int]:
        return (acc[0] + value, acc[1] + 1)

    def merge_accumulators(self, accs: Any) -> tuple[int, int]:
        total = count = 0
        for t, c in accs:
            total += t
            count += c
        return (total, count)

    def extract_output(self, acc: tuple[int, int]) -> float:
        return acc[0] / acc[1] if acc[1] else float("nan")


class CombiningFn(_Counted):
    TOTAL = CombiningValueStateSpec("total", combine_fn=sum)
    MEAN = CombiningValueStateSpec("mean", combine_fn=MeanFn())

    def process(
        self,
        kv,
        total=beam.DoFn.StateParam(TOTAL),
        mean=beam.DoFn.StateParam(MEAN),
        seen=beam.DoFn.StateParam(_Counted.SEEN),
    ) -> Iterator:
        key, (value, n) = kv
        total.add(value)
        mean.add(value)
        if self.last(seen, n):
            yield key, total.read(), round(mean.read(), 6)
            total.clear()
            yield key, "after clear", total.read()


class ReadModifyWriteFn(_Counted):
    MAX = ReadModifyWriteStateSpec("max", VarIntCoder())

    def process(self, kv, biggest=beam.DoFn.StateParam(MAX), seen=beam.DoFn.StateParam(_Counted.SEEN)) -> Iterator:
        key, (value, n) = kv
        current = biggest.read()
        if current is None or value > current:
            biggest.write(value)
        if self.last(seen, n):
            yield key, biggest.read()
            biggest.clear()
            yield key, "after clear", biggest.read()


class OrderedListFn(_Counted):
    """Sort keys are the values (with repeats); the payload names the value."""

    LIST = OrderedListStateSpec("list", StrUtf8Coder())

    def process(self, kv, ol=beam.DoFn.StateParam(LIST), seen=beam.DoFn.StateParam(_Counted.SEEN)) -> Iterator:
        key, (value, n) = kv
        ol.add((Timestamp(micros=value - 5), "v%d" % value))
        if self.last(seen, n):
            yield key, "all", [(t.micros, v) for t, v in ol.read()]
            yield key, "range", [(t.micros, v) for t, v in ol.read_range(Timestamp(micros=-2), Timestamp(micros=3))]
            ol.clear_range(Timestamp(micros=-3), Timestamp(micros=2))
            yield key, "after clear_range", [(t.micros, v) for t, v in ol.read()]
            ol.clear()
            ol.add((Timestamp(micros=42), "new"))
            yield key, "after clear", [(t.micros, v) for t, v in ol.read()]


class WindowedCountFn(beam.DoFn):
    """State is per key and window: counts and sums each (key, window)."""

    COUNT = CombiningValueStateSpec("count", VarIntCoder(), combiners.CountCombineFn())
    VALUES = BagStateSpec("values", VarIntCoder())

    def process(
        self,
        kv,
        w=beam.DoFn.WindowParam,
        count=beam.DoFn.StateParam(COUNT),
        values=beam.DoFn.StateParam(VALUES),
    ) -> Iterator:
        key, (value, n) = kv
        count.add(1)
        values.add(value)
        if count.read() == n:
            yield key, int(w.start), sorted(values.read())


class LargeSetFn(_Counted):
    """A set of large strings: written and read back through several pages."""

    SET = SetStateSpec("big", PickleCoder())

    def process(self, kv, s=beam.DoFn.StateParam(SET), seen=beam.DoFn.StateParam(_Counted.SEEN)) -> Iterator:
        key, (value, n) = kv
        s.add(str(value) * LARGE_VALUE_BYTES)
        if self.last(seen, n):
            contents = sorted(s.read())
            yield key, len(contents), [(v[0], len(v)) for v in contents]


class LargeBagFn(_Counted):
    BAG = BagStateSpec("big", PickleCoder())

    def process(self, kv, bag=beam.DoFn.StateParam(BAG), seen=beam.DoFn.StateParam(_Counted.SEEN)) -> Iterator:
        key, (value, n) = kv
        bag.add("%d" % value * LARGE_VALUE_BYTES)
        if self.last(seen, n):
            contents = list(bag.read())
            yield key, len(contents), sum(len(v) for v in contents)


def _windowed_elements() -> list[tuple[str, tuple[int, int], int]]:
    """(key, (value, count in its window), timestamp) over three windows."""
    groups: dict[tuple[str, int], list[int]] = collections.defaultdict(list)
    for i in range(90):
        key = KEYS[i % 4]
        ts = (i * 7) % 30  # windows [0, 10), [10, 20), [20, 30)
        groups[(key, ts // 10 * 10)].append(ts)
    return [(key, (ts, len(tss)), ts) for (key, _), tss in groups.items() for ts in tss]


def _large_elements() -> list[tuple[str, tuple[int, int]]]:
    return [(key, (v, LARGE_VALUES_PER_KEY)) for key in ("big-a", "big-b") for v in range(LARGE_VALUES_PER_KEY)]


def build(p: beam.Pipeline, output: str) -> None:
    data = p | "Create" >> beam.Create(ELEMENTS)
    outputs = {
        "bag": data | "Bag" >> beam.ParDo(BagFn()),
        "bag_every_three": data | "BagEveryThree" >> beam.ParDo(BagEveryThreeFn()),
        "set": data | "Set" >> beam.ParDo(SetFn()),
        "combining": data | "Combining" >> beam.ParDo(CombiningFn()),
        "read_modify_write": data | "ReadModifyWrite" >> beam.ParDo(ReadModifyWriteFn()),
        "ordered_list": data | "OrderedList" >> beam.ParDo(OrderedListFn()),
        "windows": (
            p
            | "CreateWindowed" >> beam.Create(_windowed_elements())
            | "Stamp" >> beam.Map(lambda e: window.TimestampedValue((e[0], e[1]), e[2]))
            | "Fixed" >> beam.WindowInto(window.FixedWindows(10))
            | "Windowed" >> beam.ParDo(WindowedCountFn())
            | "Unwindow" >> beam.WindowInto(window.GlobalWindows())
        ),
    }
    large = p | "CreateLarge" >> beam.Create(_large_elements())
    outputs["large_set"] = large | "LargeSet" >> beam.ParDo(LargeSetFn())
    outputs["large_bag"] = large | "LargeBag" >> beam.ParDo(LargeBagFn())
    tagged = [
        pc | "Tag_" + name >> beam.Map(lambda x, name=name: json.dumps([name, x], sort_keys=True))
        for name, pc in outputs.items()
    ]
    _ = tagged | beam.Flatten() | "Write" >> beam.io.WriteToText(output)


def _run(options: list[str], out_dir: Path) -> dict[str, list[str]]:
    prefix = out_dir / "state"
    with beam.Pipeline(options=PipelineOptions(options)) as p:
        build(p, str(prefix))
    results: dict[str, list[str]] = collections.defaultdict(list)
    for line in read_output_lines(prefix):
        name, value = json.loads(line)
        results[name].append(json.dumps(value, sort_keys=True))
    return {k: sorted(v) for k, v in results.items()}


def _expected() -> dict[str, list[str]]:
    """What every DoFn must output, computed without Beam."""
    by_key: dict[str, list[int]] = collections.defaultdict(list)
    for key, (value, _) in ELEMENTS:
        by_key[key].append(value)
    exp: dict[str, list[Any]] = collections.defaultdict(list)
    for key, values in by_key.items():
        n = len(values)
        exp["bag"] += [[key, sorted(values)], [key, "after clear", []], [key, "after re-add", [-1]]]
        exp["bag_every_three"] += [[key, "flushed", 3]] * (n // 3) + [[key, "left", n % 3]]
        exp["set"] += [[key, sorted(set(values))], [key, "after clear", [100]]]
        exp["combining"] += [[key, sum(values), round(sum(values) / n, 6)], [key, "after clear", 0]]
        exp["read_modify_write"] += [[key, max(values)], [key, "after clear", None]]
        entries = sorted((v - 5, "v%d" % v) for v in values)
        exp["ordered_list"] += [
            [key, "all", entries],
            [key, "range", [e for e in entries if -2 <= e[0] < 3]],
            [key, "after clear_range", [e for e in entries if not -3 <= e[0] < 2]],
            [key, "after clear", [[42, "new"]]],
        ]
    windows: dict[tuple[str, int], list[int]] = collections.defaultdict(list)
    for key, (ts, _), _ in _windowed_elements():
        windows[(key, ts // 10 * 10)].append(ts)
    exp["windows"] = [[key, start, sorted(v)] for (key, start), v in windows.items()]
    for key in ("big-a", "big-b"):
        strings = sorted(str(v) * LARGE_VALUE_BYTES for v in range(LARGE_VALUES_PER_KEY))
        exp["large_set"].append([key, LARGE_VALUES_PER_KEY, [[s[0], len(s)] for s in strings]])
        exp["large_bag"].append([key, LARGE_VALUES_PER_KEY, sum(len(s) for s in strings)])
    # Entries are lists after the JSON round trip.
    return {k: sorted(json.dumps(json.loads(json.dumps(v)), sort_keys=True) for v in vs) for k, vs in exp.items()}


KINDS = ["bag", "bag_every_three", "set", "combining", "read_modify_write", "ordered_list", "windows", "large_set", "large_bag"]


@pytest.fixture(scope="module")
def direct_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    return _run(["--runner=DirectRunner"], tmp_path_factory.mktemp("direct"))


@pytest.fixture(scope="module", params=["no-cache", "cache"])
def ferrobeam_results(
    request: pytest.FixtureRequest, job_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[str]]:
    cache_mb = "0" if request.param == "no-cache" else "16"
    return _run(
        [
            "--runner=PortableRunner",
            "--job_endpoint=" + job_endpoint,
            "--environment_type=" + python_urns.EMBEDDED_PYTHON,
            "--max_cache_memory_usage_mb=" + cache_mb,
        ],
        tmp_path_factory.mktemp("ferrobeam-" + request.param),
    )


def test_expectations_cover_every_kind() -> None:
    assert sorted(_expected()) == sorted(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_direct_runner_agrees_with_plain_python(kind: str, direct_results: dict[str, list[str]]) -> None:
    # Keeps the reference honest: the DirectRunner does what we expect.
    assert direct_results.get(kind) == _expected()[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_ferrobeam_matches_direct_runner(
    kind: str, ferrobeam_results: dict[str, list[str]], direct_results: dict[str, list[str]]
) -> None:
    assert ferrobeam_results.get(kind) == direct_results.get(kind)
    assert ferrobeam_results.get(kind) == _expected()[kind]
