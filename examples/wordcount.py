"""Word count: the classic Beam example, run on ferrobeam by default.

Reads text files, splits them into words, counts each word and writes
``word: count`` lines::

    python examples/wordcount.py --input examples/data/river.txt \\
        --output /tmp/wordcount/counts

Without ``--runner`` the pipeline runs on ``ferrobeam.FerrobeamRunner`` (an
embedded Rust job server with local Python workers). Any Beam runner works::

    python examples/wordcount.py --runner=DirectRunner ...
    ferrobeam job-server --port 8099 &
    python examples/wordcount.py --runner=PortableRunner \\
        --job_endpoint=localhost:8099 --environment_type=LOOPBACK ...
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from typing import Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.io import ReadFromText
from apache_beam.io import WriteToText
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import SetupOptions
from apache_beam.options.pipeline_options import StandardOptions

DEFAULT_INPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "river.txt")
DEFAULT_OUTPUT = os.path.join("/tmp", "ferrobeam-wordcount", "counts")
DEFAULT_RUNNER = "ferrobeam.FerrobeamRunner"

WORD_RE = re.compile(r"[\w']+", re.UNICODE)


class ExtractWords(beam.DoFn):
    """Splits a line of text into lower-case words."""

    def process(self, line: str) -> Iterable[str]:
        for word in WORD_RE.findall(line):
            yield word.lower()


def format_count(word_count: tuple[str, int]) -> str:
    """Formats one ``(word, count)`` pair as an output line."""
    word, count = word_count
    return "%s: %d" % (word, count)


class CountWords(beam.PTransform):
    """Counts the occurrences of each word in a PCollection of lines."""

    def expand(self, lines: beam.PCollection) -> beam.PCollection:
        return (
            lines
            | "ExtractWords" >> beam.ParDo(ExtractWords()).with_output_types(str)
            | "PairWithOne" >> beam.Map(lambda word: (word, 1))
            | "SumPerWord" >> beam.CombinePerKey(sum)
        )


def build_options(pipeline_args: Sequence[str]) -> PipelineOptions:
    """Returns pipeline options, defaulting the runner to ferrobeam."""
    args = list(pipeline_args)
    if PipelineOptions(args).view_as(StandardOptions).runner is None:
        args.append("--runner=" + DEFAULT_RUNNER)
    options = PipelineOptions(args)
    # Ship this module's globals to the workers, like Beam's own example.
    options.view_as(SetupOptions).save_main_session = True
    return options


def run(argv: Optional[Sequence[str]] = None) -> None:
    """Builds and runs the word count pipeline.

    Args:
      argv: Command-line arguments; unknown ones are passed to Beam.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--input",
        default=DEFAULT_INPUT,
        help="File or glob pattern to read (default: the bundled sample).",
    )
    parser.add_argument(
        "--output",
        default=DEFAULT_OUTPUT,
        help="Output path prefix; shards are written as PREFIX-SSSSS-of-NNNNN.",
    )
    known_args, pipeline_args = parser.parse_known_args(argv)
    options = build_options(pipeline_args)

    with beam.Pipeline(options=options) as p:
        _ = (
            p
            | "Read" >> ReadFromText(known_args.input)
            | "CountWords" >> CountWords()
            | "Format" >> beam.Map(format_count)
            | "Write" >> WriteToText(known_args.output)
        )
    logging.info("Word counts written to %s-*", known_args.output)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
