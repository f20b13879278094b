"""A checkpointed job from a Kafka topic to committed files, for the Kafka
crash tests: it reads ``--records`` records (values ``r<n>``) with
``max_num_records``, slowly enough to be killed mid-way, and writes each
value to ``--output`` with :class:`ferrobeam.io.WriteLines`, or with
``--output_topic`` to that topic with a transactional
:class:`ferrobeam.io.kafka.WriteToKafka` (``--transactional_id``)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

import ferrobeam.io
from ferrobeam.io.kafka import ReadFromKafka, WriteToKafka


def slow_value(kv: tuple[bytes, bytes]) -> str:
    time.sleep(0.001)  # ~1k records/s per worker: a run lasts tens of seconds
    return kv[1].decode()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--output")
    parser.add_argument("--output_topic")
    parser.add_argument("--transactional_id")
    parser.add_argument("--rate", type=int, help="max_records_per_second of the read")
    args, beam_args = parser.parse_known_args(argv)
    with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
        values = (p | ReadFromKafka({"bootstrap.servers": args.bootstrap, "auto.offset.reset": "earliest"},
                                    [args.topic], max_num_records=args.records,
                                    max_records_per_second=args.rate)
                  | beam.Map(slow_value))
        if args.output_topic:
            _ = (values
                 | beam.Map(lambda v: (b"", v.encode())).with_output_types(Tuple[bytes, bytes])
                 | WriteToKafka({"bootstrap.servers": args.bootstrap, "transactional.id": args.transactional_id},
                                args.output_topic))
        else:
            _ = values | ferrobeam.io.WriteLines(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
