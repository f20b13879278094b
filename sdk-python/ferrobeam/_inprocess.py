"""A Beam worker pool inside the submitting process.

A fresh SDK worker process spends seconds importing ``apache_beam`` before it
can run anything; this process has already paid that. So, for ferrobeam's
default environment, :class:`~ferrobeam.FerrobeamRunner` starts Beam's own
in-process worker pool (the one ``LOOPBACK`` uses) once per process and tells
the job server about it. The server makes it the first worker of the job:
small pipelines finish on it before a worker process could start, and large
ones use it next to the worker processes.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any, Optional

from apache_beam.options.pipeline_options import DebugOptions
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.worker import sdk_worker_main
from apache_beam.runners.worker import worker_pool_main

from ferrobeam import _harness

_LOCK = threading.Lock()
_ADDRESS: Optional[str] = None
_SERVER: Optional[Any] = None


def worker_pool_address(options: PipelineOptions) -> str:
    """Returns the address of this process's worker pool, starting it once.

    Args:
      options: The pipeline's options (state cache and data buffer settings
        are taken from them the first time).
    """
    global _ADDRESS, _SERVER
    with _LOCK:
        if _ADDRESS is None:
            # Its harnesses get ferrobeam's hooks, as the worker
            # processes ferrobeam starts do.
            _harness.install_hooks()
            experiments = options.view_as(DebugOptions).experiments or []
            _ADDRESS, _SERVER = worker_pool_main.BeamFnExternalWorkerPoolServicer.start(
                state_cache_size=sdk_worker_main._get_state_cache_size_bytes(options=options),
                data_buffer_time_limit_ms=sdk_worker_main._get_data_buffer_time_limit_ms(experiments),
                use_process=False)
            atexit.register(_stop)
        return _ADDRESS


def _stop() -> None:
    """Stops the pool at exit; left to the interpreter's teardown, gRPC
    takes over a second to shut it down."""
    if _SERVER is not None:
        _SERVER.stop(0)
