"""The ferrobeam pipeline runner for the Beam Python SDK.

:class:`FerrobeamRunner` is Beam's :class:`PortableRunner` with two defaults
changed:

* when no ``--job_endpoint`` is given, it submits to a ferrobeam job server
  running inside this Python process (started on first use, shared by every
  pipeline of the process that asks for the same settings);
* when no ``--environment_type`` is given, user code runs in the
  ``beam:env:embedded_python:v1`` environment, which ferrobeam implements as
  local worker processes running Beam's stock Python SDK harness, so neither
  Docker nor a JVM is needed.

Everything else - job submission, artifact staging, LOOPBACK workers, the
result object, metrics - is Beam's own client code. Usage::

    python my_pipeline.py --runner=ferrobeam.FerrobeamRunner
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import sys
import threading
from types import ModuleType
from typing import Any, Optional

import grpc

from apache_beam.options.pipeline_options import DebugOptions
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import PortableOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_artifact_api_pb2_grpc
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.portability.api import beam_job_api_pb2_grpc
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability import artifact_service
from apache_beam.runners.portability import job_server
from apache_beam.runners.portability import portable_runner
from apache_beam.transforms import environments

from ferrobeam import _auth
# Importing FerrobeamOptions registers its flags with Beam's option parser
# whenever the runner is used by name (--runner=ferrobeam.FerrobeamRunner).
from ferrobeam.options import CheckpointOptions
from ferrobeam.options import EmbeddedServerConfig
from ferrobeam.options import FerrobeamOptions  # noqa: F401
from ferrobeam.progress import ProgressReporter
from ferrobeam.result import FerrobeamPipelineResult
from ferrobeam.result import adopt

__all__ = [
    "DEFAULT_ENVIRONMENT_URN",
    "FerrobeamRunner",
    "PipelineRefusedError",
    "embedded_job_endpoint",
    "stop_embedded_job_servers",
]

_LOGGER = logging.getLogger(__name__)

#: The environment FerrobeamRunner uses when ``--environment_type`` is unset:
#: Beam's stock Python SDK harness in worker processes started by ferrobeam.
DEFAULT_ENVIRONMENT_URN: str = python_urns.EMBEDDED_PYTHON

#: Set this environment variable to ``0`` to stop FerrobeamRunner from starting
#: the embedded job server when the runner object is constructed (it is then
#: started when the first pipeline is submitted).
PREWARM_ENV_VAR: str = "FERROBEAM_PREWARM"


class PipelineRefusedError(ValueError):
    """The job server refused a pipeline before running any of it.

    Raised by :class:`FerrobeamRunner` when ``Prepare`` fails, for example for
    a transform URN, coder or environment ferrobeam cannot run. The message
    is the server's, which names the offending transform and URN; the
    original :class:`grpc.RpcError` is chained as ``__cause__``.
    """


def _load_native() -> ModuleType:
    """Imports the compiled extension module, with an actionable error."""
    try:
        from ferrobeam import _native  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ImportError(
            "ferrobeam's native extension (ferrobeam._native) is not "
            "available: %s. Build and install it from a clone of the "
            "repository with `pip install .` (or `maturin develop`)." % e
        ) from e
    return _native


class _EmbeddedServers:
    """Process-wide registry of embedded job servers, one per config."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: dict[EmbeddedServerConfig, Any] = {}
        self._atexit_registered = False

    def endpoint(self, config: EmbeddedServerConfig) -> str:
        """Returns the endpoint of the server for ``config``, starting it.

        Args:
          config: The server settings.

        Returns:
          ``host:port`` of a running job server.
        """
        with self._lock:
            server = self._servers.get(config)
            if server is None:
                native = _load_native()
                _LOGGER.info(
                    "Starting embedded ferrobeam job server (workers=%s, "
                    "python=%s)",
                    config.workers or "one per core",
                    config.python,
                )
                server = native.start_job_server(
                    host=config.host,
                    port=config.port,
                    python=config.python,
                    workers=config.workers,
                    strict_environments=config.strict_environments,
                    work_dir=config.work_dir,
                )
                self._servers[config] = server
                _use_state_channel(server)
                if not self._atexit_registered:
                    atexit.register(self.stop_all)
                    self._atexit_registered = True
                _LOGGER.info(
                    "Embedded ferrobeam job server listening on %s",
                    server.endpoint,
                )
            return str(server.endpoint)

    def dashboard_url(self, endpoint: str) -> Optional[str]:
        """The dashboard of the embedded server at ``endpoint``, if any."""
        with self._lock:
            for server in self._servers.values():
                if server.endpoint == endpoint:
                    return server.dashboard_url  # type: ignore[no-any-return]
        return None

    def stop_all(self) -> None:
        """Stops every server started by this process.

        Each stop cancels the server's running jobs and waits until they have
        closed their state: the interpreter must not exit while a RocksDB
        database is open (RocksDB's threads would outlive it and abort the
        process).
        """
        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
        # Databases are counted per process, not per server: cancel every
        # server's jobs first (a zero timeout only cancels), then wait once;
        # waiting server by server would wait out one's grace for another's.
        for server in servers:
            _stop(server, timeout=0.0)
        still_open = _stop(servers[0], timeout=None) if servers else 0
        if still_open:
            _LOGGER.warning(
                "Embedded ferrobeam job server stopped with %d state "
                "database(s) still open", still_open)


def _stop(server: Any, timeout: Optional[float]) -> int:
    """``server.stop(timeout)``: the state databases still open in this
    process afterwards (0 if the stop failed, which is logged)."""
    try:
        return int(server.stop(timeout=timeout))
    except Exception:  # pylint: disable=broad-except
        _LOGGER.exception("Failed to stop embedded job server")
        return 0

def _use_state_channel(server: Any) -> None:
    """Lets workers in this process (the in-process worker, LOOPBACK) reach
    ``server``'s state through its socket rather than gRPC (see
    :mod:`ferrobeam._state_channel`), and use ferrobeam's other harness hooks
    (:mod:`ferrobeam._harness`)."""
    from ferrobeam import _harness  # pylint: disable=import-outside-toplevel
    _harness.install_hooks()
    channel = server.state_channel
    if channel is not None:
        from ferrobeam import _state_channel  # pylint: disable=import-outside-toplevel
        url, path = channel
        _state_channel.register(url, str(path))
        _state_channel.install()


_SERVERS = _EmbeddedServers()


def embedded_job_endpoint(options: Optional[PipelineOptions] = None) -> str:
    """Returns the endpoint of this process's embedded job server.

    The server is started on first use and shared afterwards by every caller
    whose options name the same :class:`FerrobeamOptions` settings.

    Args:
      options: Pipeline options to read :class:`FerrobeamOptions` from, or
        None for the defaults.

    Returns:
      The server's ``host:port``, usable as ``--job_endpoint``.
    """
    config = EmbeddedServerConfig.from_options(options or PipelineOptions([]))
    return _SERVERS.endpoint(config)


def stop_embedded_job_servers() -> None:
    """Stops every embedded job server of this process.

    This also happens automatically at interpreter exit. A later pipeline
    starts a fresh server.
    """
    _SERVERS.stop_all()


class _EmbeddedJobServer(job_server.JobServer):
    """A Beam ``JobServer`` handle for an embedded ferrobeam server.

    Beam's :class:`PortableRunner` calls ``start()`` to get a job service
    stub. The server itself outlives this handle: it is shared by the whole
    process, so ``stop()`` does nothing.
    """

    def __init__(self, endpoint: str, timeout: Optional[int]) -> None:
        self._endpoint = endpoint
        self._timeout = timeout

    def start(self) -> beam_job_api_pb2_grpc.JobServiceStub:
        channel = grpc.insecure_channel(self._endpoint)
        grpc.channel_ready_future(channel).result(timeout=self._timeout)
        return beam_job_api_pb2_grpc.JobServiceStub(channel)

    def stop(self) -> None:
        pass


class _AuthedJobServer(job_server.JobServer):
    """Beam's ``ExternalJobServer``, sending an auth token on every call."""

    def __init__(self, endpoint: str, timeout: Optional[int], token: str) -> None:
        self._endpoint = endpoint
        self._timeout = timeout
        self._token = token

    def start(self) -> beam_job_api_pb2_grpc.JobServiceStub:
        channel = _auth.authed_channel(grpc.insecure_channel(self._endpoint), self._token)
        grpc.channel_ready_future(channel).result(timeout=self._timeout)
        return beam_job_api_pb2_grpc.JobServiceStub(channel)

    def stop(self) -> None:
        pass


def _runner_token(options: PipelineOptions) -> Optional[str]:
    """The token to send: ``--ferrobeam_auth_token_file``'s, else
    ``FERROBEAM_AUTH_TOKEN``'s, else None."""
    path = options.view_as(FerrobeamOptions).ferrobeam_auth_token_file
    try:
        return _auth.load_token(path)
    except OSError as e:
        raise ValueError("cannot read --ferrobeam_auth_token_file %s: %s" % (path, e)) from e


class _FerrobeamJobServiceHandle(portable_runner.JobServiceHandle):
    """Beam's job submission, with Prepare refusals turned into clear errors
    and the auth token (if any) on artifact staging too."""

    #: Sent on the artifact staging channel (the Job API's channel was made
    #: with it already).
    auth_token: Optional[str] = None

    def stage(
        self,
        proto_pipeline: beam_runner_api_pb2.Pipeline,
        artifact_staging_endpoint: Any,
        staging_session_token: Any,
    ) -> None:
        """Beam's staging, on a channel that sends the auth token."""
        if not (self.auth_token and artifact_staging_endpoint):
            super().stage(proto_pipeline, artifact_staging_endpoint, staging_session_token)
            return
        plain = grpc.insecure_channel(artifact_staging_endpoint)
        try:
            artifact_service.offer_artifacts(
                beam_artifact_api_pb2_grpc.ArtifactStagingServiceStub(
                    channel=_auth.authed_channel(plain, self.auth_token)),
                artifact_service.ArtifactRetrievalService(
                    artifact_service.BeamFilesystemHandler(None).file_reader),
                staging_session_token)
        finally:
            # Ends the staging stream and its request-consuming thread now:
            # a gRPC call left to the garbage collector at interpreter exit
            # can deadlock the exit (see FerrobeamPipelineResult).
            plain.close()

    _REFUSAL_CODES = frozenset(
        [
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.UNIMPLEMENTED,
        ]
    )

    def prepare(
        self, proto_pipeline: beam_runner_api_pb2.Pipeline
    ) -> beam_job_api_pb2.PrepareJobResponse:
        try:
            return super().prepare(proto_pipeline)
        except grpc.RpcError as e:
            code = e.code() if callable(getattr(e, "code", None)) else None
            if code in self._REFUSAL_CODES:
                details_fn = getattr(e, "details", None)
                details = details_fn() if callable(details_fn) else str(e)
                raise PipelineRefusedError(
                    "ferrobeam refused the pipeline: %s" % details
                ) from e
            raise


    def run(self, preparation_id: str) -> Any:
        """Runs the job, with no deadline on its state and message streams.

        Beam opens both streams with ``--job_server_timeout`` (300 s by
        default), so any job running longer would fail in the client. The
        streams last exactly as long as the job, so they get no deadline;
        the other calls keep the timeout.
        """
        timeout, self.timeout = self.timeout, None
        try:
            return super().run(preparation_id)
        finally:
            self.timeout = timeout


def _argv_config() -> Optional[EmbeddedServerConfig]:
    """Guesses the embedded server config from ``sys.argv``, for prewarming.

    Most pipelines build their options from the command line, so parsing it
    here lets the server (and its SDK workers) start while the pipeline is
    still being constructed. Returns None when prewarming should be skipped.
    """
    if os.environ.get(PREWARM_ENV_VAR, "1").strip().lower() in ("0", "false", "no"):
        return None
    argv = list(sys.argv[1:])
    try:
        options = PipelineOptions(argv)
        if options.view_as(PortableOptions).job_endpoint:
            return None  # The user brings their own job server.
        return EmbeddedServerConfig.from_options(options)
    except (Exception, SystemExit):  # pylint: disable=broad-except
        _LOGGER.debug("Not prewarming: cannot parse %s", shlex.join(argv))
        return None


def _absolute_checkpoint_paths(options: CheckpointOptions) -> None:
    """Makes ``--checkpoint_dir`` and ``--restore_from`` absolute, in place."""
    if options.checkpoint_dir:
        options.checkpoint_dir = os.path.abspath(options.checkpoint_dir)
    if options.restore_from:
        options.restore_from = os.path.abspath(options.restore_from)


class FerrobeamRunner(portable_runner.PortableRunner):
    """Runs Beam pipelines on ferrobeam, a job server written in Rust.

    Without ``--job_endpoint`` the pipeline goes to a job server embedded in
    this process; with one, to that (standalone) server. Without
    ``--environment_type`` user code runs in local SDK worker processes
    started by ferrobeam (``beam:env:embedded_python:v1``); ``LOOPBACK``,
    ``EXTERNAL``, ``PROCESS`` and ``DOCKER`` behave as with Beam's other
    portable runners. See :class:`ferrobeam.FerrobeamOptions` for the
    embedded server's settings.

    Use it by name::

        python my_pipeline.py --runner=ferrobeam.FerrobeamRunner

    or as an object::

        with beam.Pipeline(runner=FerrobeamRunner(), options=options) as p:
            ...
    """

    def __init__(self) -> None:
        super().__init__()
        self._prewarm()

    @staticmethod
    def _prewarm() -> None:
        """Starts the embedded server now, so workers warm up early.

        Failures are not fatal here: the same start is retried (and its error
        reported) when the pipeline is submitted.
        """
        config = _argv_config()
        if config is None:
            return
        try:
            _SERVERS.endpoint(config)
        except Exception as e:  # pylint: disable=broad-except
            _LOGGER.debug("Prewarming the embedded job server failed: %s", e)

    def default_environment(
        self, options: PipelineOptions
    ) -> environments.Environment:
        """Returns the environment for transforms that do not name one.

        Args:
          options: The pipeline's options.

        Returns:
          The environment from ``--environment_type`` if it was given,
          otherwise ferrobeam's local Python workers
          (``beam:env:embedded_python:v1``).
        """
        portable_options = options.view_as(PortableOptions)
        if not portable_options.environment_type:
            # Record the choice in the options too, so the job server and the
            # job's logs see the environment that is actually used.
            portable_options.environment_type = DEFAULT_ENVIRONMENT_URN
        return environments.Environment.from_options(portable_options)

    def default_job_server(self, options: PipelineOptions) -> job_server.JobServer:
        """Returns the embedded job server (started if needed).

        Beam's :class:`PortableRunner` calls this when ``--job_endpoint`` is
        not set.

        Args:
          options: The pipeline's options; :class:`FerrobeamOptions` select
            the server.

        Returns:
          A Beam ``JobServer`` handle for the embedded server.
        """
        endpoint = embedded_job_endpoint(options)
        timeout = options.view_as(PortableOptions).job_server_timeout
        return _EmbeddedJobServer(endpoint, timeout)

    def run_pipeline(self, pipeline: Any, options: PipelineOptions) -> Any:
        """Submits the pipeline, lending it this process's worker pool.

        With the default environment and a job server on this machine, the
        job's first worker runs inside this process (see
        :mod:`ferrobeam._inprocess`) unless ``--ferrobeam_no_inprocess_worker``
        was given.
        """
        ferrobeam = options.view_as(FerrobeamOptions)
        # Test replacements (ferrobeam.testing) go in before anything reads
        # the pipeline, so what runs is the replaced pipeline.
        from ferrobeam.testing import _replacements  # pylint: disable=import-outside-toplevel
        replaced = _replacements.apply_for_run(pipeline, ferrobeam.ferrobeam_replace)
        if replaced:
            _LOGGER.info("ferrobeam.testing replaced: %s", ", ".join(replaced))
        portable = options.view_as(PortableOptions)
        default_env = portable.environment_type in (None, "", DEFAULT_ENVIRONMENT_URN)
        local_server = not portable.job_endpoint or portable.job_endpoint.split(":")[0] in (
            "localhost", "127.0.0.1", "[::1]")
        if default_env:
            # Beam records the submitting environment (`pip freeze`, ~2 s) so
            # a container can be compared with it; our default workers run
            # in this very interpreter, so there is nothing to compare.
            options.view_as(DebugOptions).add_experiment("disable_logging_submission_environment")
        if default_env and local_server:
            # Our default workers run this interpreter and should import what
            # this program imports, including modules it reaches through a
            # sys.path it changed (pytest's rootdir, a script's own folder).
            ferrobeam.ferrobeam_worker_sys_path = os.pathsep.join(
                os.path.abspath(p or os.curdir) for p in sys.path)
        if local_server:
            # A job server on this machine resolves relative paths against
            # its own working directory (a standalone one may have another);
            # the user meant this program's.
            _absolute_checkpoint_paths(options.view_as(CheckpointOptions))
        if default_env and local_server and ferrobeam.ferrobeam_inprocess_worker is not False:
            from ferrobeam import _inprocess
            ferrobeam.ferrobeam_inprocess_worker_pool = _inprocess.worker_pool_address(options)
        return super().run_pipeline(pipeline, options)

    def run_portable_pipeline(
        self, pipeline: beam_runner_api_pb2.Pipeline, options: PipelineOptions
    ) -> portable_runner.PipelineResult:
        """Submits the pipeline proto; the result can also be drained.

        Returns:
          A :class:`ferrobeam.FerrobeamPipelineResult`: Beam's portable
          result plus ``drain()`` and ``job_id()``.
        """
        endpoint = options.view_as(PortableOptions).job_endpoint or embedded_job_endpoint(options)
        result = adopt(super().run_portable_pipeline(pipeline, options), job_endpoint=endpoint)
        dashboard = _SERVERS.dashboard_url(endpoint)
        mode = options.view_as(FerrobeamOptions).ferrobeam_progress
        if dashboard and isinstance(result, FerrobeamPipelineResult) and ProgressReporter.wanted(mode):
            streaming = bool(options.view_as(StandardOptions).streaming)
            reporter = ProgressReporter(
                dashboard, result.job_id(), streaming,
                interactive=None if mode != "on" else sys.stderr.isatty())
            result._ferrobeam_progress = reporter  # pylint: disable=protected-access
            reporter.start()
        return result

    def create_job_service(self, options: PipelineOptions) -> portable_runner.JobServiceHandle:
        """Beam's, but an external ``--job_endpoint`` gets the auth token.

        With ``--ferrobeam_auth_token_file`` (or ``FERROBEAM_AUTH_TOKEN``)
        every Job API and artifact staging call carries
        ``authorization: Bearer <token>``, and so do the result's
        ``drain()``, ``cancel()`` and ``savepoint()``, and the channels of
        SDK workers in this process (LOOPBACK, the in-process worker).
        """
        portable = options.view_as(PortableOptions)
        endpoint = portable.job_endpoint
        token = _runner_token(options)
        if endpoint and endpoint != "embed" and token:
            _auth.remember_token(endpoint, token)
            _auth.install_channel_hook(process_token=token)
            server = _AuthedJobServer(endpoint, portable.job_server_timeout, token)
            return self.create_job_service_handle(server.start(), options)
        return super().create_job_service(options)

    def create_job_service_handle(
        self, job_service: Any, options: PipelineOptions
    ) -> portable_runner.JobServiceHandle:
        handle = _FerrobeamJobServiceHandle(job_service, options)
        handle.auth_token = _runner_token(options)
        return handle
