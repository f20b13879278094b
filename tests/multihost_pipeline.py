"""The pipeline of the multi-host test and the worker-pool benchmark.

Numbers cross a shuffle to the SDK workers, each costs some time in a
Python ``Map`` (sleeping, or burning CPU), and the sums per key are
written as JSON lines. Its output is exact, so a lost or doubled bundle
shows: see :func:`expected`.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

KEYS = 10


def expected(elements: int) -> Dict[int, Tuple[int, int]]:
    """Key -> (count, sum) of a correct run."""
    out: Dict[int, Tuple[int, int]] = {}
    for x in range(elements):
        count, total = out.get(x % KEYS, (0, 0))
        out[x % KEYS] = (count + 1, total + x)
    return out


def _work(x: int, sleep_ms: float, spin: int) -> Tuple[int, Tuple[int, int]]:
    if sleep_ms:
        time.sleep(sleep_ms / 1000.0)
    acc = 0
    for i in range(spin):  # CPU-bound work under the GIL
        acc = (acc * 31 + i) & 0xFFFF
    return x % KEYS, (1, x + 0 * acc)


def _add(pairs):
    pairs = list(pairs)
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", required=True)
    parser.add_argument("--elements", type=int, default=3000)
    parser.add_argument("--sleep_ms", type=float, default=0.0)
    parser.add_argument("--spin", type=int, default=0)
    known, rest = parser.parse_known_args(argv)
    with beam.Pipeline(options=PipelineOptions(rest)) as p:
        _ = (
            p
            | beam.Create(list(range(known.elements)), reshuffle=False)
            | beam.Reshuffle()
            | beam.Map(_work, known.sleep_ms, known.spin)
            | beam.CombinePerKey(_add)
            | beam.MapTuple(lambda k, cs: json.dumps([k, cs[0], cs[1]]))
            | beam.io.WriteToText(known.output, shard_name_template="")
        )


if __name__ == "__main__":
    main()
