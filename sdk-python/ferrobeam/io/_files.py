"""A line sink whose output is committed with ferrobeam's checkpoints.

On ferrobeam, :class:`WriteLines` is run by the runner itself: lines go to
hidden pending files in the target directory and are renamed to visible
``part-*.txt`` files when a checkpoint completes (and when a bounded job
ends), so after any number of crashes and restores the visible files hold
every element exactly once. On other runners the transform expands to a
plain DoFn (see :class:`WriteLines`).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Optional, Union

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.transforms.ptransform import PTransform

__all__ = ["WRITE_LINES_URN", "WriteLines", "committed_files", "read_lines"]

#: The URN under which ferrobeam runs the sink natively. The payload is
#: UTF-8 JSON: ``{"directory": "<absolute path>"}``. The transform's one
#: input is a ``PCollection[bytes]`` (``beam:coder:bytes:v1``): each element
#: is one line, UTF-8, without its newline.
WRITE_LINES_URN: str = "ferrobeam:transform:write_lines:v1"

_PART_PREFIX = "part-"
_PART_SUFFIX = ".txt"


@beam.typehints.with_input_types(Union[str, bytes])
class WriteLines(PTransform):
    """Writes a ``PCollection`` of lines (``str``, or UTF-8 ``bytes``) to
    text files in ``directory``, one element per line.

    On ferrobeam the runner runs this sink natively and commits it with the
    job's checkpoints (``--checkpoint_dir``, see
    :class:`ferrobeam.CheckpointOptions`): lines are first written to hidden
    pending files (``directory/.pending-*``) and become visible as
    ``directory/part-<checkpoint>-*.txt`` when the checkpoint that covers
    them completes, and at the end of the job. Visible files therefore hold
    every element exactly once, newline-terminated, even when the job
    crashes and restores; read them with :func:`read_lines`. Without
    checkpoints, files become visible about once a second and at the end
    of the job. Give each job its own directory: a restoring job deletes
    the pending files it finds there.

    On any other runner it falls back to a DoFn that writes each bundle's
    lines to ``directory/part-<uuid>.txt`` when the bundle finishes. That is
    *not* exactly-once: a bundle the runner retries writes its lines again,
    and a crash loses the bundle's buffered lines.

    Elements must not contain newlines (a line with ``\\n`` reads back as
    two). The output is unordered: lines of one file are in the order the
    sink saw them, but files and bundles follow no element order.

    Args:
      directory: Where the files go; created if missing. A relative path is
        taken relative to the current directory when the pipeline is built.
    """

    def __init__(self, directory: Union[str, "os.PathLike[str]"]) -> None:
        super().__init__()
        self._directory = os.path.abspath(os.fspath(directory))

    @property
    def directory(self) -> str:
        """The absolute path of the output directory."""
        return self._directory

    def expand(self, pcoll: beam.PCollection) -> pvalue.PDone:
        # The natively run part gets bytes with Beam's bytes coder whatever
        # the input's coder was, so the runner never needs to decode user
        # coders (a str PCollection's coder may well be a pickling one).
        lines = pcoll | "Encode" >> beam.Map(_encode_line).with_output_types(bytes)
        return lines | "Write" >> _WriteLinesSink(self._directory)


def _encode_line(line: Union[str, bytes]) -> bytes:
    if isinstance(line, str):
        return line.encode("utf-8")
    if isinstance(line, (bytes, bytearray)):
        return bytes(line)
    raise TypeError(
        "ferrobeam.io.WriteLines writes str or bytes elements, got %s: %r"
        % (type(line).__name__, line))


@PTransform.register_urn(WRITE_LINES_URN, None)
class _WriteLinesSink(PTransform):
    """The part of :class:`WriteLines` that ferrobeam runs natively.

    Its Runner API spec is :data:`WRITE_LINES_URN` with the directory in the
    payload; its expansion (the fallback for other runners) stays in the
    pipeline proto as its subtransforms, which ferrobeam does not run.
    """

    def __init__(self, directory: str) -> None:
        super().__init__()
        self._directory = directory

    def expand(self, pcoll: beam.PCollection) -> pvalue.PDone:
        _ = pcoll | "WriteBundles" >> beam.ParDo(_WriteBundleFiles(self._directory))
        return pvalue.PDone(pcoll.pipeline)

    def to_runner_api_parameter(self, unused_context: Any) -> tuple[str, bytes]:
        return WRITE_LINES_URN, json.dumps({"directory": self._directory}).encode("utf-8")

    @staticmethod
    def from_runner_api_parameter(unused_ptransform: Any, payload: bytes,
                                  unused_context: Any) -> "_WriteLinesSink":
        return _WriteLinesSink(json.loads(payload.decode("utf-8"))["directory"])


class _WriteBundleFiles(beam.DoFn):
    """Fallback for runners other than ferrobeam: one file per bundle,
    written under a hidden name and renamed when complete."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._lines: Optional[list[bytes]] = None

    def start_bundle(self) -> None:
        self._lines = []

    def process(self, line: bytes) -> None:
        assert self._lines is not None
        self._lines.append(line)

    def finish_bundle(self) -> None:
        lines, self._lines = self._lines, None
        if not lines:
            return
        os.makedirs(self._directory, exist_ok=True)
        name = uuid.uuid4().hex
        tmp = os.path.join(self._directory, ".pending-" + name)
        with open(tmp, "wb") as f:
            f.write(b"".join(line + b"\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self._directory, _PART_PREFIX + name + _PART_SUFFIX))


def committed_files(directory: Union[str, "os.PathLike[str]"]) -> list[str]:
    """The committed ``part-*.txt`` files in ``directory``, sorted by name
    (none if the directory does not exist)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(os.fspath(directory), n) for n in names
                  if n.startswith(_PART_PREFIX) and n.endswith(_PART_SUFFIX))


def read_lines(directory: Union[str, "os.PathLike[str]"]) -> list[str]:
    """Reads every line of the committed ``part-*.txt`` files in
    ``directory`` (what :class:`WriteLines` wrote), file by file in name
    order, without their newlines. Pending (hidden) files are ignored; a
    missing directory reads as empty.

    Raises:
      ValueError: If a committed file does not end with a newline (a torn
        file: committed files are always whole).
    """
    lines: list[str] = []
    for path in committed_files(directory):
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        if not text:
            continue
        if not text.endswith("\n"):
            raise ValueError("%s does not end with a newline: its last line %r is torn"
                             % (path, text.rsplit("\n", 1)[-1][:200]))
        lines.extend(text[:-1].split("\n"))
    return lines
