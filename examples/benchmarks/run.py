"""Benchmarks: the same pipelines on the DirectRunner and on ferrobeam.

Generates its inputs deterministically (seeded) in a temporary directory,
runs every workload on both runners in this one invocation, checks that both
runners produce the same result, and prints wall times and the ratio
ferrobeam / DirectRunner (below 1.0 means ferrobeam is faster)::

    python examples/benchmarks/run.py                  # full size
    python examples/benchmarks/run.py --scale 0.1      # quick run
    python examples/benchmarks/run.py --only wordcount --repeat 3

Workloads (sizes at ``--scale 1``):

* ``wordcount``: ReadFromText of a ~30 MB generated text (about 2.9M words
  drawn from a 10k-word vocabulary), split, CombinePerKey(sum), format,
  WriteToText.
* ``groupbykey``: GroupByKey of 2M (int, int) pairs over 100k keys.
* ``map``: ``Map(x + 1)`` over 5M ints.
* ``windowed``: per-key sums over 500k events and 100 keys in 10-minute
  windows sliding every minute, with early firings every 50 elements
  (accumulating); every pane is compared between the runners.
* ``state``: a stateful DoFn counting 2M (int, int) pairs over 100k keys in
  a ``CombiningValueStateSpec``, emitting each key's count whenever it
  reaches a power of two.
* ``startup``: a 3-element pipeline, timed as a whole fresh Python process.

Large inputs are not built with a giant ``beam.Create`` (which would make the
DirectRunner side pathological): text is read from a file, and integers are
generated inside the pipeline from a few range shards. Both runners run the
identical pipeline. The embedded ferrobeam job server is started before the
in-process workloads are timed (its cost is part of ``startup``).

Results are also written as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import logging
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import trigger, window
from apache_beam.transforms.userstate import CombiningValueStateSpec

_LOG = logging.getLogger("ferrobeam.benchmarks")

SEED = 20261121
DIRECT = "direct"
FERROBEAM = "ferrobeam"
RUNNER_FLAGS = {
    DIRECT: ["--runner=DirectRunner"],
    FERROBEAM: ["--runner=ferrobeam.FerrobeamRunner"],
}

# Full-size parameters (multiplied by --scale).
WORDCOUNT_WORDS = 2_900_000
WORDCOUNT_VOCABULARY = 10_000
GBK_PAIRS = 2_000_000
GBK_KEYS = 100_000
MAP_INTS = 5_000_000
STATE_PAIRS = 2_000_000
STATE_KEYS = 100_000
RANGE_SHARDS = 16
WINDOWED_EVENTS = 500_000
WINDOWED_KEYS = 100

WORD_RE = re.compile(r"[\w']+")


# ---------------------------------------------------------------------------
# Data generation
# ---------------------------------------------------------------------------


def _vocabulary(size: int, rng: random.Random) -> list[str]:
    """Returns ``size`` distinct pseudo-words (lower-case letters)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < size:
        length = rng.randint(4, 15)
        words.add("".join(rng.choice(letters) for _ in range(length)))
    return sorted(words)


def generate_text(path: str, num_words: int, vocabulary_size: int, seed: int) -> dict[str, Any]:
    """Writes a text of ``num_words`` words drawn (Zipf-like) from a vocabulary.

    Args:
      path: File to write.
      num_words: Number of words to write.
      vocabulary_size: Number of distinct words to draw from.
      seed: Random seed; equal seeds give byte-identical files.

    Returns:
      A description of the file (size, words, lines).
    """
    rng = random.Random(seed)
    vocab = _vocabulary(vocabulary_size, rng)
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(vocab))]
    words = rng.choices(vocab, weights=weights, k=num_words)
    lines = 0
    with open(path, "w", encoding="utf-8") as f:
        i = 0
        while i < num_words:
            n = rng.randint(6, 18)
            f.write(" ".join(words[i:i + n]))
            f.write("\n")
            i += n
            lines += 1
    return {"path": path, "bytes": os.path.getsize(path), "words": num_words, "lines": lines}


# ---------------------------------------------------------------------------
# Pipelines (identical for both runners)
# ---------------------------------------------------------------------------


def _range_shards(total: int, shards: int) -> list[tuple[int, int]]:
    """Splits ``range(total)`` into ``shards`` contiguous (start, stop) pairs."""
    shards = max(1, min(shards, total or 1))
    step = -(-total // shards)
    return [(s, min(s + step, total)) for s in range(0, total, step)]


def _expand_range(shard: tuple[int, int]) -> Iterable[int]:
    return range(shard[0], shard[1])


def _read_lines(pattern: str) -> list[str]:
    lines: list[str] = []
    for name in sorted(glob.glob(pattern)):
        with open(name, encoding="utf-8") as f:
            lines.extend(line.rstrip("\n") for line in f)
    return sorted(lines)


def wordcount_pipeline(p: beam.Pipeline, input_path: str, output_prefix: str) -> None:
    """ReadFromText, split into words, count per word, format, WriteToText."""
    _ = (
        p
        | "Read" >> beam.io.ReadFromText(input_path)
        | "Split" >> beam.FlatMap(lambda line: WORD_RE.findall(line)).with_output_types(str)
        | "PairWithOne" >> beam.Map(lambda w: (w, 1))
        | "Count" >> beam.CombinePerKey(sum)
        | "Format" >> beam.MapTuple(lambda w, c: "%s: %d" % (w, c))
        | "Write" >> beam.io.WriteToText(output_prefix)
    )


class _GbkSummary(beam.CombineFn):
    """Summarises grouped values: (#keys, #values, sum of values, key checksum)."""

    def create_accumulator(self) -> tuple[int, int, int, int]:
        return (0, 0, 0, 0)

    def add_input(self, acc: tuple[int, int, int, int], row: tuple[int, int, int]) -> tuple[int, int, int, int]:
        key, count, total = row
        return (acc[0] + 1, acc[1] + count, acc[2] + total, (acc[3] + key * count) % (1 << 61))

    def merge_accumulators(self, accs: Iterable[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
        keys = values = total = check = 0
        for a in accs:
            keys += a[0]
            values += a[1]
            total += a[2]
            check = (check + a[3]) % (1 << 61)
        return (keys, values, total, check)

    def extract_output(self, acc: tuple[int, int, int, int]) -> str:
        return "keys=%d values=%d sum=%d check=%d" % acc


def _keyed_pair(i: int, num_keys: int) -> tuple[int, int]:
    # A fixed multiplicative hash spreads consecutive i over the keys.
    return ((i * 2654435761) % 4294967296 % num_keys, i)


def groupbykey_pipeline(p: beam.Pipeline, num_pairs: int, num_keys: int, output_prefix: str) -> None:
    """GroupByKey of ``num_pairs`` (int, int) pairs over ``num_keys`` keys."""
    _ = (
        p
        | "Shards" >> beam.Create(_range_shards(num_pairs, RANGE_SHARDS))
        | "Pairs" >> beam.FlatMap(lambda shard: (_keyed_pair(i, num_keys) for i in _expand_range(shard)))
        | "GroupByKey" >> beam.GroupByKey()
        | "PerKey" >> beam.MapTuple(lambda k, vs: (k, len(list(vs)), sum(vs)))
        | "Summary" >> beam.CombineGlobally(_GbkSummary())
        | "Write" >> beam.io.WriteToText(output_prefix)
    )


def map_pipeline(p: beam.Pipeline, num_ints: int, output_prefix: str) -> None:
    """``Map(x + 1)`` over ``num_ints`` ints (summed to check the result)."""
    _ = (
        p
        | "Shards" >> beam.Create(_range_shards(num_ints, RANGE_SHARDS))
        | "Ints" >> beam.FlatMap(_expand_range)
        | "PlusOne" >> beam.Map(lambda x: x + 1)
        | "Sum" >> beam.CombineGlobally(sum)
        | "Write" >> beam.io.WriteToText(output_prefix)
    )


def _windowed_event(i: int, num_keys: int) -> window.TimestampedValue:
    """Event i: key, a small value, and a timestamp spread over six hours."""
    return window.TimestampedValue((i % num_keys, i % 7), (i * 7919) % 21_600)


class _DescribePane(beam.DoFn):
    """One line per pane: timing, key, window start, sum."""

    def process(self, kv: tuple[int, int], w: Any = beam.DoFn.WindowParam,
                pane: Any = beam.DoFn.PaneInfoParam) -> Iterable[str]:
        yield "%d,%d,%d,%d" % (pane.timing, kv[0], int(w.start), kv[1])


def windowed_pipeline(p: beam.Pipeline, num_events: int, num_keys: int, output_prefix: str) -> None:
    """Per-key sums in 10-minute windows sliding every minute, with early
    firings every 50 elements, accumulating: a rolling feature with
    speculative results."""
    _ = (
        p
        | "Shards" >> beam.Create(_range_shards(num_events, RANGE_SHARDS))
        | "Events" >> beam.FlatMap(lambda shard: (_windowed_event(i, num_keys) for i in _expand_range(shard)))
        | "Window" >> beam.WindowInto(
            window.SlidingWindows(600, 60),
            trigger=trigger.AfterWatermark(early=trigger.AfterCount(50)),
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING)
        | "SumPerKey" >> beam.CombinePerKey(sum)
        | "Panes" >> beam.ParDo(_DescribePane())
        | "Rewindow" >> beam.WindowInto(window.GlobalWindows())
        | "Write" >> beam.io.WriteToText(output_prefix)
    )


class _CountPerKey(beam.DoFn):
    """Counts each key's elements in user state; emits (key, count) at powers of two."""

    COUNT = CombiningValueStateSpec("count", VarIntCoder(), beam.combiners.CountCombineFn())

    def process(self, kv: tuple[int, int], count: Any = beam.DoFn.StateParam(COUNT)) -> Iterable[tuple[int, int]]:
        count.add(1)
        c = count.read()
        if c & (c - 1) == 0:
            yield kv[0], c


class _StateSummary(beam.CombineFn):
    """Summarises (key, count) milestones: (#milestones, sum of counts, checksum)."""

    def create_accumulator(self) -> tuple[int, int, int]:
        return (0, 0, 0)

    def add_input(self, acc: tuple[int, int, int], kc: tuple[int, int]) -> tuple[int, int, int]:
        key, count = kc
        return (acc[0] + 1, acc[1] + count, (acc[2] + (key + 1) * count) % (1 << 61))

    def merge_accumulators(self, accs: Iterable[tuple[int, int, int]]) -> tuple[int, int, int]:
        n = total = check = 0
        for a in accs:
            n += a[0]
            total += a[1]
            check = (check + a[2]) % (1 << 61)
        return (n, total, check)

    def extract_output(self, acc: tuple[int, int, int]) -> str:
        return "milestones=%d sum=%d check=%d" % acc


def state_pipeline(p: beam.Pipeline, num_pairs: int, num_keys: int, output_prefix: str) -> None:
    """A stateful count per key over ``num_pairs`` pairs and ``num_keys`` keys."""
    _ = (
        p
        | "Shards" >> beam.Create(_range_shards(num_pairs, RANGE_SHARDS))
        | "Pairs" >> beam.FlatMap(lambda shard: (_keyed_pair(i, num_keys) for i in _expand_range(shard)))
        | "CountPerKey" >> beam.ParDo(_CountPerKey())
        | "Summary" >> beam.CombineGlobally(_StateSummary())
        | "Write" >> beam.io.WriteToText(output_prefix)
    )


STARTUP_SCRIPT = """
import sys
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
with beam.Pipeline(options=PipelineOptions(sys.argv[1:])) as p:
    out = p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 10)
    assert_that(out, equal_to([10, 20, 30]))
print("startup-ok")
"""


# ---------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Measurement:
    """The outcome of one workload on one runner."""

    seconds: Optional[float] = None
    all_seconds: list[float] = dataclasses.field(default_factory=list)
    result: Optional[list[str]] = None
    error: Optional[str] = None


@dataclasses.dataclass
class Workload:
    """A named benchmark: ``run(runner, out_dir)`` returns result lines."""

    name: str
    description: str
    run: Callable[[str, str], list[str]]
    expected: Optional[list[str]] = None


def _pipeline(runner: str, extra: Sequence[str]) -> beam.Pipeline:
    return beam.Pipeline(options=PipelineOptions(RUNNER_FLAGS[runner] + list(extra)))


def make_workloads(data_dir: str, scale: float, extra_args: Sequence[str]) -> list[Workload]:
    """Generates inputs into ``data_dir`` and returns the workloads."""
    n_words = max(1000, int(WORDCOUNT_WORDS * scale))
    vocab = max(100, min(WORDCOUNT_VOCABULARY, n_words // 10))
    n_pairs = max(1000, int(GBK_PAIRS * scale))
    n_keys = max(10, int(GBK_KEYS * scale))
    n_ints = max(1000, int(MAP_INTS * scale))
    n_state_pairs = max(1000, int(STATE_PAIRS * scale))
    n_state_keys = max(10, int(STATE_KEYS * scale))

    text_path = os.path.join(data_dir, "words.txt")
    t0 = time.perf_counter()
    info = generate_text(text_path, n_words, vocab, SEED)
    _LOG.info(
        "Generated %s: %.1f MB, %d words, %d lines in %.1fs",
        text_path, info["bytes"] / 1e6, n_words, info["lines"], time.perf_counter() - t0,
    )

    def run_wordcount(runner: str, out_dir: str) -> list[str]:
        prefix = os.path.join(out_dir, "counts")
        with _pipeline(runner, extra_args) as p:
            wordcount_pipeline(p, text_path, prefix)
        return _read_lines(prefix + "*")

    def run_gbk(runner: str, out_dir: str) -> list[str]:
        prefix = os.path.join(out_dir, "gbk")
        with _pipeline(runner, extra_args) as p:
            groupbykey_pipeline(p, n_pairs, n_keys, prefix)
        return _read_lines(prefix + "*")

    def run_map(runner: str, out_dir: str) -> list[str]:
        prefix = os.path.join(out_dir, "map")
        with _pipeline(runner, extra_args) as p:
            map_pipeline(p, n_ints, prefix)
        return _read_lines(prefix + "*")

    n_windowed = max(1000, int(WINDOWED_EVENTS * scale))
    n_windowed_keys = max(10, int(WINDOWED_KEYS * scale))

    def run_windowed(runner: str, out_dir: str) -> list[str]:
        prefix = os.path.join(out_dir, "windowed")
        with _pipeline(runner, extra_args) as p:
            windowed_pipeline(p, n_windowed, n_windowed_keys, prefix)
        return _read_lines(prefix + "*")

    def run_state(runner: str, out_dir: str) -> list[str]:
        prefix = os.path.join(out_dir, "state")
        with _pipeline(runner, extra_args) as p:
            state_pipeline(p, n_state_pairs, n_state_keys, prefix)
        return _read_lines(prefix + "*")

    def run_startup(runner: str, out_dir: str) -> list[str]:
        proc = subprocess.run(
            [sys.executable, "-c", STARTUP_SCRIPT] + RUNNER_FLAGS[runner] + list(extra_args),
            cwd=out_dir, capture_output=True, text=True, timeout=600, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                "startup pipeline exited with %d:\n%s" % (proc.returncode, proc.stderr[-4000:])
            )
        return [line for line in proc.stdout.splitlines() if line == "startup-ok"]

    # Independent expectations, computed without Beam where cheap.
    gbk_expected = _expected_gbk(n_pairs, n_keys)
    map_expected = ["%d" % (n_ints * (n_ints - 1) // 2 + n_ints)]
    return [
        Workload("wordcount", "word count, %.1f MB text, %d words, %d-word vocabulary"
                 % (info["bytes"] / 1e6, n_words, vocab), run_wordcount),
        Workload("groupbykey", "GroupByKey, %d pairs over %d keys" % (n_pairs, n_keys),
                 run_gbk, gbk_expected),
        Workload("map", "Map(x+1) over %d ints" % n_ints, run_map, map_expected),
        Workload("windowed", "sliding-window sums with early firings, %d events over %d keys"
                 % (n_windowed, n_windowed_keys), run_windowed),
        Workload("state", "stateful count, %d pairs over %d keys" % (n_state_pairs, n_state_keys),
                 run_state, _expected_state(n_state_pairs, n_state_keys)),
        Workload("startup", "3-element pipeline, whole fresh process", run_startup, ["startup-ok"]),
    ]


def _expected_gbk(n_pairs: int, n_keys: int) -> list[str]:
    counts: dict[int, int] = {}
    check = 0
    for i in range(n_pairs):
        k, _ = _keyed_pair(i, n_keys)
        counts[k] = counts.get(k, 0) + 1
    for k, c in counts.items():
        check = (check + k * c) % (1 << 61)
    return ["keys=%d values=%d sum=%d check=%d"
            % (len(counts), n_pairs, n_pairs * (n_pairs - 1) // 2, check)]


def _expected_state(n_pairs: int, n_keys: int) -> list[str]:
    counts: dict[int, int] = {}
    for i in range(n_pairs):
        k, _ = _keyed_pair(i, n_keys)
        counts[k] = counts.get(k, 0) + 1
    n = total = check = 0
    for k, c in counts.items():
        m = 1
        while m <= c:
            n += 1
            total += m
            check = (check + (k + 1) * m) % (1 << 61)
            m *= 2
    return ["milestones=%d sum=%d check=%d" % (n, total, check)]


def _prepare_runner(runner: str, extra_args: Sequence[str]) -> None:
    """Starts the embedded ferrobeam server outside the timed region."""
    if runner == FERROBEAM:
        from ferrobeam.runner import embedded_job_endpoint  # pylint: disable=import-outside-toplevel
        endpoint = embedded_job_endpoint(PipelineOptions(list(extra_args)))
        _LOG.info("Embedded ferrobeam job server at %s", endpoint)


def run_benchmarks(args: argparse.Namespace, extra_args: Sequence[str]) -> dict[str, Any]:
    """Runs the selected workloads on the selected runners."""
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    for r in runners:
        if r not in RUNNER_FLAGS:
            raise SystemExit("unknown runner %r (choose from %s)" % (r, ", ".join(RUNNER_FLAGS)))
    work_root = tempfile.mkdtemp(prefix="ferrobeam-bench-")
    data_dir = args.data_dir or os.path.join(work_root, "data")
    os.makedirs(data_dir, exist_ok=True)
    report: dict[str, Any] = {
        "scale": args.scale,
        "repeat": args.repeat,
        "runners": runners,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "beam": beam.__version__,
        },
        "workloads": [],
    }
    try:
        workloads = make_workloads(data_dir, args.scale, extra_args)
        if args.only:
            wanted = set(args.only)
            unknown = wanted - {w.name for w in workloads}
            if unknown:
                raise SystemExit("unknown workload(s): %s" % ", ".join(sorted(unknown)))
            workloads = [w for w in workloads if w.name in wanted]
        prepared: set[str] = set()
        for w in workloads:
            _LOG.info("=== %s: %s", w.name, w.description)
            results: dict[str, Measurement] = {}
            for runner in runners:
                m = Measurement()
                results[runner] = m
                try:
                    if runner not in prepared and w.name != "startup":
                        _prepare_runner(runner, extra_args)
                        prepared.add(runner)
                    for rep in range(args.repeat):
                        out_dir = os.path.join(work_root, "out", w.name, runner, str(rep))
                        os.makedirs(out_dir)
                        # Let background work from the previous run (ferrobeam
                        # refills its pre-started workers after each job) finish,
                        # so neither runner is timed on a busy machine.
                        time.sleep(args.settle)
                        t0 = time.perf_counter()
                        lines = w.run(runner, out_dir)
                        elapsed = time.perf_counter() - t0
                        m.all_seconds.append(elapsed)
                        m.result = lines
                        _LOG.info("%s on %s: %.2fs", w.name, runner, elapsed)
                    m.seconds = min(m.all_seconds)
                except Exception as e:  # pylint: disable=broad-except
                    m.error = "%s: %s" % (type(e).__name__, e)
                    _LOG.error("%s on %s failed: %s", w.name, runner, m.error)
            report["workloads"].append(_summarise(w, runners, results))
    finally:
        if not args.keep:
            shutil.rmtree(work_root, ignore_errors=True)
        else:
            _LOG.info("Kept work directory %s", work_root)
    return report


def _summarise(w: Workload, runners: list[str], results: dict[str, Measurement]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": w.name, "description": w.description, "runners": {}}
    ok_results = {r: m.result for r, m in results.items() if m.error is None}
    problems: list[str] = []
    if w.expected is not None:
        for r, res in ok_results.items():
            if res != w.expected:
                problems.append("%s result %s != expected %s" % (r, _short(res), _short(w.expected)))
    distinct = {json.dumps(res) for res in ok_results.values()}
    if len(distinct) > 1:
        problems.append("runners disagree: " + "; ".join(
            "%s=%s" % (r, _short(res)) for r, res in ok_results.items()))
    for r, res in ok_results.items():
        if not res:
            problems.append("%s produced no output" % r)
    for r in runners:
        m = results[r]
        entry["runners"][r] = {
            "seconds": m.seconds,
            "all_seconds": m.all_seconds,
            "error": m.error,
            "result_lines": len(m.result) if m.result is not None else None,
        }
    d = results.get(DIRECT)
    f = results.get(FERROBEAM)
    entry["ratio"] = (f.seconds / d.seconds) if (d and f and d.seconds and f.seconds) else None
    entry["results_match"] = not problems and len(ok_results) == len(runners)
    entry["problems"] = problems
    return entry


def _short(lines: Optional[list[str]]) -> str:
    if lines is None:
        return "None"
    if len(lines) <= 3:
        return repr(lines)
    return "[%d lines, first %r]" % (len(lines), lines[0])


def format_table(report: dict[str, Any]) -> str:
    """Renders the report as a plain-text table."""
    runners = report["runners"]
    header = ["workload"] + ["%s (s)" % r for r in runners]
    if DIRECT in runners and FERROBEAM in runners:
        header.append("ferrobeam/direct")
    header.append("results")
    rows = [header]
    for w in report["workloads"]:
        row = [w["name"]]
        for r in runners:
            info = w["runners"][r]
            row.append("%.2f" % info["seconds"] if info["seconds"] is not None else "FAILED")
        if DIRECT in runners and FERROBEAM in runners:
            row.append("%.2fx" % w["ratio"] if w["ratio"] is not None else "-")
        row.append("match" if w["results_match"] else "MISMATCH")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    out = []
    for i, r in enumerate(rows):
        out.append("  ".join(c.ljust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            out.append("  ".join("-" * wd for wd in widths))
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parses arguments, runs the benchmarks, prints and saves the report."""
    parser = argparse.ArgumentParser(
        description="Compare ferrobeam with the DirectRunner on the same generated data.",
        epilog="Unrecognised arguments are passed to both runners as pipeline options.",
    )
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this workload (repeatable): wordcount, groupbykey, map, state, startup")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply all input sizes by this factor (default 1.0)")
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds to wait before each timed run, so background work of the previous run does not skew it (default 5)",
    )
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each workload this many times per runner and report the fastest")
    parser.add_argument("--runners", default="%s,%s" % (DIRECT, FERROBEAM),
                        help="comma-separated runners to compare (default: direct,ferrobeam)")
    parser.add_argument("--json", default="benchmark-results.json",
                        help="where to write the JSON report (default: ./benchmark-results.json)")
    parser.add_argument("--data-dir", default=None,
                        help="directory for generated inputs (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    args, extra_args = parser.parse_known_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be positive")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    _LOG.setLevel(logging.INFO)

    report = run_benchmarks(args, extra_args)
    print()
    print(format_table(report))
    for w in report["workloads"]:
        for problem in w["problems"]:
            print("  %s: %s" % (w["name"], problem))
        for r, info in w["runners"].items():
            if info["error"]:
                print("  %s on %s failed: %s" % (w["name"], r, info["error"][:2000]))
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print("\nJSON report written to %s" % os.path.abspath(args.json))
    ok = all(w["results_match"] for w in report["workloads"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
