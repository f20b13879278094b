"""Local workers import what the submitting program imports.

A module reached through a path the program added at run time (pytest's
rootdir, ``sys.path.insert`` in a script) is pickled by reference, so every
worker must be able to import it, not only the in-process one.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to


def test_workers_import_modules_from_the_programs_sys_path(tmp_path: Path) -> None:
    name = "user_module_%s" % uuid.uuid4().hex[:8]
    (tmp_path / (name + ".py")).write_text("def triple(x):\n    return 3 * x\n", encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module(name)
        # No in-process worker: only worker processes run the Map.
        options = PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", "--ferrobeam_no_inprocess_worker"])
        with beam.Pipeline(options=options) as p:
            assert_that(p | beam.Create([1, 2, 3]) | beam.Map(module.triple), equal_to([3, 6, 9]))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
