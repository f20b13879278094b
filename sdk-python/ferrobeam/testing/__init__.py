"""Unit tests with replaced transforms.

Test the production pipeline module unchanged: replace its sources with
lists, files or a ``TestStream``, its sinks with captures, and any other
transform with a ``PTransform`` of your own. ``FerrobeamRunner`` applies the
replacements when the pipeline is submitted, so the code under test is the
code that ships; :class:`Replacements` shows how.

The pytest plugin (:mod:`ferrobeam.testing.pytest_plugin`, registered when
ferrobeam is installed) gives the same as fixtures. Replacements can also be
given as ``--ferrobeam_replace TARGET=KIND:ARG`` pipeline options.

Names are imported lazily, so that loading the pytest plugin does not
import Apache Beam.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ferrobeam._lazy import lazy_exports

__all__ = ["Capture", "Captured", "FileSource", "ListSource", "ReplacementError", "Replacements"]

_EXPORTS = {
    "Capture": "ferrobeam.testing._capture",
    "Captured": "ferrobeam.testing._capture",
    "FileSource": "ferrobeam.testing._sources",
    "ListSource": "ferrobeam.testing._sources",
    "ReplacementError": "ferrobeam.testing._replacements",
    "Replacements": "ferrobeam.testing._replacements",
}

if TYPE_CHECKING:
    from ferrobeam.testing._capture import Capture, Captured
    from ferrobeam.testing._replacements import ReplacementError, Replacements
    from ferrobeam.testing._sources import FileSource, ListSource


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
