"""ferrobeam: a Rust runner for Apache Beam portable pipelines.

Run any Beam Python pipeline on ferrobeam with::

    python my_pipeline.py --runner=ferrobeam.FerrobeamRunner

or start a standalone job server with ``ferrobeam job-server --port 8099``
and submit with Beam's ``PortableRunner``.
"""

from ferrobeam.options import FerrobeamOptions
from ferrobeam.runner import FerrobeamRunner
from ferrobeam.runner import PipelineRefusedError

__all__ = ["FerrobeamOptions", "FerrobeamRunner", "PipelineRefusedError"]

__version__ = "0.1.0"
