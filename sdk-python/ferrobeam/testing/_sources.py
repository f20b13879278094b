"""Source replacements: elements from a list, a file or a TestStream.

Each builds a PTransform that starts from ``PBegin``; the replacement
machinery gives its output the replaced source's element type, so the
rest of the pipeline decodes it with the coder it always used.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import apache_beam as beam
from apache_beam.transforms import window as beam_window
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

__all__ = ["ListSource", "FileSource", "TimestampSpec"]

#: How a file record's timestamp is found: a field name of a JSON object, or
#: a function of the parsed record returning seconds (or a ``Timestamp``).
TimestampSpec = Union[str, Callable[[Any], Any], None]


def _to_timestamp(value: Any) -> Timestamp:
    if isinstance(value, Timestamp):
        return value
    if isinstance(value, str):
        return Timestamp.from_rfc3339(value)
    return Timestamp.of(value)


class _EmitAsGiven(beam.DoFn):
    """Emits a list element as written: plain, timestamped or windowed.

    A ``TimestampedValue`` gets its timestamp; a ``WindowedValue`` keeps its
    timestamp, windows and pane (the SDK's DoFn runner passes a yielded
    ``WindowedValue`` through unchanged).
    """

    def process(self, element: Any) -> Iterator[Any]:
        yield element


class ListSource(beam.PTransform):
    """The given elements, each optionally a ``TimestampedValue`` or ``WindowedValue``."""

    def __init__(self, elements: Iterable[Any]) -> None:
        super().__init__()
        self.elements = list(elements)

    @staticmethod
    def value_of(element: Any) -> Any:
        """The user value inside a (possibly timestamped or windowed) element."""
        if isinstance(element, (beam_window.TimestampedValue, WindowedValue)):
            return element.value
        return element

    def expand(self, pbegin: Any) -> Any:
        # Create pickles the wrappers; _EmitAsGiven unwraps them in the worker.
        return (pbegin
                | "Elements" >> beam.Create(self.elements, reshuffle=False).with_output_types(Any)
                | "Emit" >> beam.ParDo(_EmitAsGiven()))  # yapf: disable


class _ParseRecords(beam.DoFn):
    def __init__(self, parse: Callable[[str], Any], timestamp: TimestampSpec) -> None:
        self._parse = parse
        self._timestamp = timestamp

    def process(self, line: str) -> Iterator[Any]:
        if not line.strip():
            return
        record = self._parse(line)
        if self._timestamp is None:
            yield record
        elif callable(self._timestamp):
            yield beam_window.TimestampedValue(record, _to_timestamp(self._timestamp(record)))
        else:
            yield beam_window.TimestampedValue(record, _to_timestamp(record[self._timestamp]))


class FileSource(beam.PTransform):
    """Records read from a file: JSON lines, text lines, or a named parser.

    Args:
      path: File (or glob) to read.
      format: ``"jsonl"`` (each line a JSON value) or ``"text"`` (each line a
        string); ignored when ``parse`` is given.
      parse: A function turning one line into a record, for other formats.
      timestamp: Where each record's event time comes from: the name of a
        field (seconds since the epoch, or an RFC 3339 string), or a
        function of the record; without it, records get the minimum
        timestamp, as a bounded read's output does.
    """

    FORMATS = ("jsonl", "text")

    def __init__(self, path: str, format: str = "jsonl",  # pylint: disable=redefined-builtin
                 parse: Optional[Callable[[str], Any]] = None, timestamp: TimestampSpec = None) -> None:
        super().__init__()
        if parse is None and format not in self.FORMATS:
            raise ValueError("file format %r is not one of %s; pass parse= for other formats"
                             % (format, ", ".join(self.FORMATS)))
        self.path = path
        self.parse: Callable[[str], Any] = parse or (json.loads if format == "jsonl" else _identity)
        self.timestamp = timestamp

    def expand(self, pbegin: Any) -> Any:
        return (pbegin
                | "Lines" >> beam.io.ReadFromText(self.path)
                | "Parse" >> beam.ParDo(_ParseRecords(self.parse, self.timestamp)))  # yapf: disable


def _identity(line: str) -> str:
    return line
