"""ferrobeam's additions to the stock Python SDK harness, installed together.

Workers that ferrobeam starts, and the worker inside the submitting process,
call :func:`install_hooks` before any harness is built. Each hook replaces a
name the harness looks up when it builds itself; the harness is otherwise
untouched:

* elements in control messages (:mod:`ferrobeam._control_embedding`);
* a state sampler that lets a bundle end promptly (below);
* the submitting program's import path, in workers ferrobeam starts;
* the auth token (``FERROBEAM_AUTH_TOKEN``) on every channel the harness
  opens, for a job server that requires one (:mod:`ferrobeam._auth`).

The state channel (:mod:`ferrobeam._state_channel`) is installed separately,
because it needs the job server's socket.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

from apache_beam.runners.worker import statesampler

from ferrobeam import _auth
from ferrobeam import _control_embedding

__all__ = ["install_hooks", "SAMPLING_PERIOD_MS"]

#: Sampling period of the per-bundle state sampler. Beam's default is 200 ms.
SAMPLING_PERIOD_MS = 1

_INSTALL_LOCK = threading.Lock()
_STOCK_SAMPLER = statesampler.StateSampler


class _PromptStateSampler(_STOCK_SAMPLER):  # type: ignore[misc, valid-type]
    """Beam's state sampler with a short sampling period.

    Every bundle starts a sampling thread and, when it ends, joins it. The
    thread sleeps between samples, starting at a hundredth of the period and
    growing to the whole period, and the join waits for the current sleep to
    end: with Beam's 200 ms that is 2 ms and more added to every bundle,
    most of a small streaming bundle's time. With 1 ms the join waits at
    most 1 ms; the samples (``msecs`` metrics, lull reports) only get finer,
    and they are taken without the GIL.
    """

    def __init__(self, prefix: str, counter_factory: Any, sampling_period_ms: int = SAMPLING_PERIOD_MS) -> None:
        super().__init__(prefix, counter_factory, sampling_period_ms)


def install_hooks() -> None:
    """Makes SDK harnesses created from now on use ferrobeam's hooks."""
    with _INSTALL_LOCK:
        _control_embedding.install()
        _auth.install_channel_hook()
        statesampler.StateSampler = _PromptStateSampler
        _extend_sys_path()


#: The pipeline option (as the job server passes it on) with the submitting
#: program's import path.
_SYS_PATH_OPTION = "beam:option:ferrobeam_worker_sys_path:v1"


def _extend_sys_path() -> None:
    """Appends the submitting program's import path to this worker's.

    A worker process starts with the interpreter's default path, not the
    submitter's: without this, a DoFn from a module the program imported
    through a path it added (a test runner's rootdir, ``sys.path.insert``)
    fails to unpickle in every worker but the in-process one. Appended, so
    the worker's own entries win. A no-op outside workers.
    """
    raw = os.environ.get("PIPELINE_OPTIONS")
    if not raw:
        return
    try:
        value = json.loads(raw).get(_SYS_PATH_OPTION)
    except (ValueError, AttributeError):
        return
    if not isinstance(value, str):
        return
    for entry in value.split(os.pathsep):
        if entry and entry not in sys.path and os.path.isdir(entry):
            sys.path.append(entry)
