"""The result :class:`FerrobeamRunner` returns: Beam's portable
``PipelineResult`` plus :meth:`~FerrobeamPipelineResult.drain` and
:meth:`~FerrobeamPipelineResult.job_id`.

Example::

    result = pipeline.run()          # a --streaming pipeline
    ...
    result.drain()                   # -> 'DRAINING'
    result.wait_until_finish()       # -> 'DRAINED'
"""

from __future__ import annotations

import time

from typing import TYPE_CHECKING, Optional

from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability import portable_runner
from apache_beam.runners.runner import PipelineState

if TYPE_CHECKING:
    from ferrobeam.progress import ProgressReporter

__all__ = ["FerrobeamPipelineResult", "adopt"]


class FerrobeamPipelineResult(portable_runner.PipelineResult):
    """A running or finished ferrobeam job.

    Everything Beam's portable result offers works unchanged: ``state``,
    ``cancel()``, ``wait_until_finish(duration)``, ``metrics()``. In
    addition:

    * :meth:`drain` asks a streaming job to finish what it has read and end;
    * :meth:`job_id` names the job, for ``ferrobeam drain JOB_ID`` or
      :func:`ferrobeam.drain_job` from elsewhere;
    * :meth:`wait_until_finish` treats ``DRAINED`` as a clean end (Beam's
      portable result raises for every final state but ``DONE``), since a
      job only drains when someone asked it to. ``CANCELLED`` still raises,
      as with every Beam runner.
    """

    _ferrobeam_job_endpoint: Optional[str] = None
    # Set by FerrobeamRunner when progress is shown (ferrobeam.progress).
    _ferrobeam_progress: Optional["ProgressReporter"] = None

    def job_id(self) -> str:
        """Returns the job's id on its job server."""
        return str(self._job_id)

    def savepoint(self, directory: str, stop: bool = False, timeout: float = 600.0) -> str:
        """Takes a savepoint of this streaming job into ``directory``.

        A savepoint is a checkpoint kept until you delete it: start this
        pipeline, or a changed version of it, from it with
        ``--restore_from=DIRECTORY``. With ``stop=True`` the job then ends
        (``CANCELLED``) without processing anything further.

        Args:
          directory: A new or empty directory.
          stop: End the job once the savepoint is written.
          timeout: Seconds to wait for the savepoint.

        Returns:
          The absolute path of the savepoint.

        Raises:
          RuntimeError: If the savepoint could not be taken (with the
            server's reason), e.g. for a batch job or one that has ended.
        """
        from ferrobeam.job_control import savepoint_job
        if not self._ferrobeam_job_endpoint:
            raise RuntimeError("this result does not know its job server's address")
        return savepoint_job(
            self._ferrobeam_job_endpoint, self.job_id(), directory, stop=stop, timeout=timeout)

    def drain(self) -> str:
        """Asks the job server to drain this job.

        A streaming job stops reading its sources, finishes what it has
        already read (pending windows fire, timers run) and ends in state
        ``DRAINED``; :meth:`wait_until_finish` then returns ``'DRAINED'``.
        A batch job is not affected: it runs to completion and ends
        ``DONE``. A job that has already ended keeps its state.

        Unlike :meth:`cancel`, this leaves the job's LOOPBACK workers (if
        any) running, as the draining job still needs them; they stop when
        :meth:`wait_until_finish` sees the job end.

        Returns:
          The job's state right after the request, as a
          :class:`~apache_beam.runners.runner.PipelineState` value: usually
          ``DRAINING``, ``RUNNING`` for a batch job, or the final state of a
          job that had already ended.

        Raises:
          grpc.RpcError: If the job server cannot be reached.
        """
        response = self._job_service.Drain(
            beam_job_api_pb2.DrainJobRequest(job_id=self._job_id)
        )
        return str(self.runner_api_state_to_pipeline_state(response.state))

    def wait_until_finish(self, duration: Optional[int] = None) -> str:
        """Waits for the job to end, as Beam's portable result does.

        Args:
          duration: The longest time to wait, in milliseconds; None or 0
            waits until the job ends.

        Returns:
          The job's state: its final state (``DONE`` or ``DRAINED``) if it
          ended, the current one if ``duration`` ran out first.

        Raises:
          RuntimeError: If the job failed (with the failing transform's
            error) or was cancelled.
        """
        try:
            return str(super().wait_until_finish(duration))
        except RuntimeError:
            if self._state != PipelineState.DRAINED:
                raise
            self._runtime_exception = None
            return str(self._state)
        finally:
            if PipelineState.is_terminal(self._state):
                self._close_streams()
            if self._ferrobeam_progress is not None and PipelineState.is_terminal(self._state):
                self._ferrobeam_progress.finish()

    def _close_streams(self) -> None:
        """Cancels the job's state and message streams once it has ended.

        Beam leaves both gRPC calls to the garbage collector, and the thread
        reading messages is a daemon. At interpreter exit, daemon threads
        stop wherever they are; a call whose lock such a thread held then
        deadlocks the collector in the call's ``__del__`` (seen: a finished
        job's program hanging at exit). Cancelling ended calls is harmless
        and lets the reader finish before the program does.
        """
        deadline = time.monotonic() + 2.0
        for stream in (self._state_stream, self._message_stream):
            done = getattr(stream, "done", None)
            cancel = getattr(stream, "cancel", None)
            if done is None or cancel is None:
                continue
            # The server ends both streams right after the terminal state:
            # give it a moment, so the message reader ends without an error.
            while not done() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not done():
                try:
                    cancel()
                except Exception:  # pylint: disable=broad-except
                    pass


def adopt(
    result: portable_runner.PipelineResult,
    job_endpoint: Optional[str] = None,
) -> portable_runner.PipelineResult:
    """Turns the result Beam's :class:`PortableRunner` built into a
    :class:`FerrobeamPipelineResult`, in place.

    Beam builds the result object itself and registers that very object's
    cleanup (stopping LOOPBACK workers) to run at exit; re-classing it (the
    subclass adds methods, no state) keeps that intact, where a copy would
    run the cleanup twice. Results of any other type are returned unchanged.
    """
    if type(result) is portable_runner.PipelineResult:  # pylint: disable=unidiomatic-typecheck
        result.__class__ = FerrobeamPipelineResult
        result._ferrobeam_job_endpoint = job_endpoint  # type: ignore[attr-defined]
    return result
