"""ferrobeam: a Rust runner for Apache Beam portable pipelines.

Run any Beam Python pipeline on ferrobeam with::

    python my_pipeline.py --runner=ferrobeam.FerrobeamRunner

or start a standalone job server with ``ferrobeam job-server --port 8099``
and submit with Beam's ``PortableRunner``.

The public names are imported lazily, so that ``ferrobeam.cli`` (the
``ferrobeam`` command) starts without importing Apache Beam.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ferrobeam._lazy import lazy_exports

__all__ = [
    "CheckpointOptions",
    "FerrobeamOptions",
    "FerrobeamPipelineResult",
    "FerrobeamRunner",
    "PipelineRefusedError",
    "cancel_job",
    "drain_job",
    "savepoint_job",
]
# ``ferrobeam.io`` is reachable as an attribute too, but is left out of
# ``__all__``: a star import would shadow the standard library's ``io``.

__version__ = "0.1.0"

_EXPORTS = {
    "CheckpointOptions": "ferrobeam.options",
    "FerrobeamOptions": "ferrobeam.options",
    "FerrobeamPipelineResult": "ferrobeam.result",
    "FerrobeamRunner": "ferrobeam.runner",
    "PipelineRefusedError": "ferrobeam.runner",
    "cancel_job": "ferrobeam.job_control",
    "drain_job": "ferrobeam.job_control",
    "savepoint_job": "ferrobeam.job_control",
    "io": "ferrobeam.io",
}

if TYPE_CHECKING:
    from ferrobeam import io
    from ferrobeam.job_control import cancel_job
    from ferrobeam.job_control import drain_job
    from ferrobeam.job_control import savepoint_job
    from ferrobeam.options import CheckpointOptions
    from ferrobeam.options import FerrobeamOptions
    from ferrobeam.result import FerrobeamPipelineResult
    from ferrobeam.runner import FerrobeamRunner
    from ferrobeam.runner import PipelineRefusedError


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
