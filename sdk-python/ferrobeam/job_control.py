"""Draining and cancelling jobs on a job server, by job id.

These talk to any job server through Beam's own ``JobService`` RPCs
(``Drain`` and ``Cancel``), so they need nothing but the server's address and
the job's id: a job submitted by another process, or one whose
:class:`~apache_beam.runners.runner.PipelineResult` is gone, can still be
stopped. Example::

    import ferrobeam
    ferrobeam.drain_job("localhost:8099", job_id)   # -> "DRAINING"

The ``ferrobeam drain`` and ``ferrobeam cancel`` commands do the same from a
shell.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import grpc

from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.portability.api import beam_job_api_pb2_grpc

__all__ = ["DEFAULT_TIMEOUT_SECS", "cancel_job", "drain_job", "savepoint_job"]

#: How long :func:`drain_job` and :func:`cancel_job` wait for an answer.
DEFAULT_TIMEOUT_SECS: float = 30.0


def drain_job(
    job_endpoint: str,
    job_id: str,
    timeout: Optional[float] = DEFAULT_TIMEOUT_SECS,
) -> str:
    """Asks a job server to drain a job.

    A streaming job stops reading its sources, finishes what it has already
    read (pending windows fire, timers run) and ends in state ``DRAINED``. A
    batch job is not affected: it runs to completion and ends ``DONE``. A
    job that has already ended keeps its state.

    Args:
      job_endpoint: The job server's address, ``host:port``.
      job_id: The job's id (``result.job_id()`` on the submitting side).
      timeout: Seconds to wait for the server's answer, or None to wait
        indefinitely.

    Returns:
      The name of the job's state right after the request, as in
      :class:`~apache_beam.runners.runner.PipelineState`: usually
      ``'DRAINING'`` (or ``'DRAINED'`` if it drained at once), ``'RUNNING'``
      for a batch job, or the final state of a job that had already ended.

    Raises:
      grpc.RpcError: With code ``NOT_FOUND`` if the server knows no such job,
        ``FAILED_PRECONDITION`` if the job was prepared but never run, and
        ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED`` if no server answered.
    """
    return _call(
        job_endpoint,
        lambda stub: stub.Drain(
            beam_job_api_pb2.DrainJobRequest(job_id=job_id), timeout=timeout
        ),
    )


def cancel_job(
    job_endpoint: str,
    job_id: str,
    timeout: Optional[float] = DEFAULT_TIMEOUT_SECS,
) -> str:
    """Asks a job server to cancel a job.

    The job stops without finishing what is in flight and ends in state
    ``CANCELLED``; its SDK worker processes are stopped. A job that has
    already ended keeps its state.

    Args:
      job_endpoint: The job server's address, ``host:port``.
      job_id: The job's id.
      timeout: Seconds to wait for the server's answer, or None to wait
        indefinitely.

    Returns:
      The name of the job's state right after the request, usually
      ``'CANCELLING'`` or ``'CANCELLED'``.

    Raises:
      grpc.RpcError: With code ``NOT_FOUND`` if the server knows no such job,
        and ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED`` if no server answered.
    """
    return _call(
        job_endpoint,
        lambda stub: stub.Cancel(
            beam_job_api_pb2.CancelJobRequest(job_id=job_id), timeout=timeout
        ),
    )


def _call(
    job_endpoint: str,
    rpc: Callable[[beam_job_api_pb2_grpc.JobServiceStub], Any],
) -> str:
    """Runs ``rpc`` on a fresh channel to ``job_endpoint``; returns the name
    of the job state in its response."""
    from ferrobeam import _auth  # pylint: disable=import-outside-toplevel
    with grpc.insecure_channel(job_endpoint) as channel:
        channel = _auth.authed_channel(channel, _auth.token_for(job_endpoint))
        response = rpc(beam_job_api_pb2_grpc.JobServiceStub(channel))
    return beam_job_api_pb2.JobState.Enum.Name(response.state)


def savepoint_job(
    job_endpoint: str,
    job_id: str,
    directory: str,
    stop: bool = False,
    timeout: float = 600.0,
) -> str:
    """Takes a savepoint of a running streaming job on a ferrobeam job server.

    A savepoint is a checkpoint kept until you delete it; start the pipeline,
    or a changed version of it, from it with ``--restore_from=DIRECTORY``.
    This uses ferrobeam's own ``JobControl`` service (Beam's Job API has no
    savepoints), so it needs a ferrobeam job server. ``ferrobeam savepoint``
    and ``ferrobeam stop --savepoint`` do the same from a shell.

    Args:
      job_endpoint: The job server's address, ``host:port``.
      job_id: The job's id.
      directory: A new or empty directory (made absolute here).
      stop: End the job (``CANCELLED``) once the savepoint is written.
      timeout: Seconds to wait for the savepoint.

    Returns:
      The absolute path of the savepoint.

    Raises:
      RuntimeError: With the server's reason if no savepoint was taken.
    """
    import os

    from ferrobeam import _auth
    from ferrobeam import _native
    return str(_native.savepoint(
        job_endpoint, job_id, os.path.abspath(directory), stop, float(timeout),
        auth_token=_auth.token_for(job_endpoint)))
