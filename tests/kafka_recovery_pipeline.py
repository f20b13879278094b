"""A checkpointed job from a Kafka topic to committed files, for the Kafka
crash test: it reads ``--records`` records (values ``r<n>``) with
``max_num_records``, slowly enough to be killed mid-way, and writes each
value to ``--output`` with :class:`ferrobeam.io.WriteLines`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

import ferrobeam.io
from ferrobeam.io.kafka import ReadFromKafka


def slow_value(kv: tuple[bytes, bytes]) -> str:
    time.sleep(0.001)  # ~1k records/s per worker: a run lasts tens of seconds
    return kv[1].decode()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--output", required=True)
    args, beam_args = parser.parse_known_args(argv)
    with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
        _ = (p | ReadFromKafka({"bootstrap.servers": args.bootstrap, "auto.offset.reset": "earliest"},
                               [args.topic], max_num_records=args.records)
             | beam.Map(slow_value)
             | ferrobeam.io.WriteLines(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
