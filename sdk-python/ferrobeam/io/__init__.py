"""Connectors that ferrobeam runs natively.

:class:`WriteLines` writes lines to files in a directory; on ferrobeam its
files are committed with the job's checkpoints, so they hold every element
exactly once across crashes and restores (see
:class:`ferrobeam.CheckpointOptions`). :func:`read_lines` reads them back.
"""

from __future__ import annotations

from ferrobeam.io._files import WRITE_LINES_URN
from ferrobeam.io._files import WriteLines
from ferrobeam.io._files import committed_files
from ferrobeam.io._files import read_lines

__all__ = ["WRITE_LINES_URN", "WriteLines", "committed_files", "read_lines"]
