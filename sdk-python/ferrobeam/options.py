"""Pipeline options understood by :class:`ferrobeam.FerrobeamRunner`.

Like every Beam ``PipelineOptions`` subclass, these options are registered as
soon as this module is imported, so they can be given on the command line
together with Beam's usual flags::

    python my_pipeline.py --runner=ferrobeam.FerrobeamRunner \\
        --ferrobeam_workers=4

and read back with ``options.view_as(FerrobeamOptions)``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Optional

from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["CheckpointOptions", "FerrobeamOptions", "EmbeddedServerConfig"]


class FerrobeamOptions(PipelineOptions):
    """Options for the embedded ferrobeam job server.

    Unset options default to None (and are then not sent to the workers,
    which do not know them); :class:`EmbeddedServerConfig` fills in the
    documented defaults. These only matter when ferrobeam starts its own job server in-process,
    i.e. with ``--runner=ferrobeam.FerrobeamRunner`` and no
    ``--job_endpoint``. A standalone server (``ferrobeam job-server``) takes
    the equivalent flags on its own command line instead.
    """

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--ferrobeam_workers",
            type=int,
            default=None,
            help=(
                "Number of SDK worker processes the embedded ferrobeam job "
                "server starts for the default environment. 0 (the default) "
                "means one worker per CPU core."
            ),
        )
        parser.add_argument(
            "--ferrobeam_strict_environments",
            default=False,
            action="store_true",
            help=(
                "Run environments exactly as requested. Without this flag, a "
                "DOCKER environment that names Beam's own Python SDK image "
                "runs on ferrobeam's local Python workers instead (there is "
                "usually no Docker engine); with it, such a pipeline is "
                "refused at submission."
            ),
        )
        parser.add_argument(
            "--ferrobeam_job_server_host",
            default=None,
            help=(
                "Address the embedded ferrobeam job server listens on. The "
                "default, 127.0.0.1, only accepts connections from this "
                "machine."
            ),
        )
        parser.add_argument(
            "--ferrobeam_job_server_port",
            type=int,
            default=None,
            help=(
                "Port of the embedded ferrobeam job server (the job API and "
                "artifact staging share it). 0 (the default) picks a free "
                "port."
            ),
        )
        parser.add_argument(
            "--ferrobeam_drain",
            default=False,
            action="store_true",
            help=(
                "Run the job as if it were draining: every splittable DoFn "
                "first truncates its restrictions (Beam's truncate; by "
                "default unbounded restrictions are dropped and bounded ones "
                "kept). Draining a running streaming job is `ferrobeam drain`."
            ),
        )
        parser.add_argument(
            "--ferrobeam_source_idle_timeout",
            type=float,
            default=None,
            help=(
                "Streaming: seconds after which a source that neither outputs "
                "nor advances its watermark counts as idle. Transforms that "
                "read it together with active inputs (a Flatten, a CoGroupByKey) "
                "then follow the active inputs' watermark instead of waiting "
                "for it; data it produces later may be late. Default 60; 0 "
                "turns idleness off."
            ),
        )
        parser.add_argument(
            "--ferrobeam_python",
            default=None,
            help=(
                "Python interpreter used to start SDK worker processes for "
                "the default environment. Defaults to the interpreter running "
                "the pipeline (sys.executable), so workers import the same "
                "packages."
            ),
        )
        parser.add_argument(
            "--ferrobeam_no_inprocess_worker",
            dest="ferrobeam_inprocess_worker",
            default=None,
            action="store_false",
            help=(
                "Do not run a worker inside the submitting process. By "
                "default, with ferrobeam's default environment, the first "
                "worker of a job runs inside this process (it has already "
                "imported Beam, so small jobs start at once) next to the "
                "worker processes. Use this flag when user code may crash "
                "or kill its own process."
            ),
        )
        parser.add_argument(
            "--ferrobeam_inprocess_worker_pool",
            default=None,
            help=(
                "Set by FerrobeamRunner: the address of the worker pool in "
                "the submitting process. Not meant to be set by hand."
            ),
        )
        parser.add_argument(
            "--ferrobeam_replace",
            action="append",
            default=None,
            metavar="TARGET=KIND:ARG",
            help=(
                "For tests: replace a transform when the pipeline is "
                "submitted. TARGET is a transform's unique name or glob "
                "(matching exactly one transform), or urn:URN. KIND:ARG is "
                "jsonl:PATH or text:PATH (add ;timestamp=FIELD for event "
                "times from a JSON field), elements:JSON_ARRAY, or "
                "capture:DIR (the sink's input is recorded in DIR; read it "
                "with ferrobeam.testing.Capture). Repeatable. See "
                "ferrobeam.testing for the Python API."
            ),
        )
        parser.add_argument(
            "--ferrobeam_worker_sys_path",
            default=None,
            help=(
                "Set by FerrobeamRunner: the submitting program's import "
                "path (os.pathsep-separated), which ferrobeam's local "
                "workers add to theirs. Not meant to be set by hand."
            ),
        )
        parser.add_argument(
            "--ferrobeam_progress",
            choices=["auto", "on", "off"],
            default=None,
            help=(
                "Progress in the terminal (embedded job server): a batch job "
                "shows stages done and running, elements processed and the "
                "time so far; a streaming job prints the dashboard's address "
                "and a one-line status every 10 s. auto (the default): only "
                "when stderr is a terminal; on: always; off: never."
            ),
        )
        parser.add_argument(
            "--ferrobeam_work_dir",
            default=None,
            help=(
                "Directory for the embedded job server's staged artifacts and "
                "worker scratch space. Defaults to a fresh temporary "
                "directory."
            ),
        )
        parser.add_argument(
            "--ferrobeam_auth_token_file",
            default=None,
            metavar="PATH",
            help=(
                "File holding the auth token of a ferrobeam job server started "
                "with --auth_token_file (given with --job_endpoint): it is sent "
                "as 'authorization: Bearer <token>' on every Job API and "
                "artifact staging call. Without it, the token in the "
                "environment variable FERROBEAM_AUTH_TOKEN is sent, if set. "
                "Only the file's path is part of the pipeline options, never "
                "the token."
            ),
        )


class CheckpointOptions(PipelineOptions):
    """Checkpoints and restores of streaming jobs on ferrobeam.

    With ``--checkpoint_dir``, a ``--streaming`` job takes a consistent
    checkpoint of its state (sources' positions, user state, timers,
    buffered windows, sinks' pending output) every ``--checkpoint_interval``
    seconds, and a job started with a directory that already holds a
    completed checkpoint of the same pipeline resumes from the latest one.
    So rerunning the same command after a crash continues where the last
    checkpoint left off; with a committing sink
    (:class:`ferrobeam.io.WriteLines`) the output then holds every element
    exactly once.

    Unset options default to None and are not sent; the job server applies
    the defaults given in each option's help, and resolves relative paths
    (``FerrobeamRunner`` makes them absolute first when the job server runs
    on this machine).
    """

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--checkpoint_dir",
            default=None,
            metavar="PATH",
            help=(
                "Streaming: directory for the job's periodic checkpoints. If "
                "it already holds a completed checkpoint of this pipeline, "
                "the job restores from the latest one automatically. "
                "Without it, nothing is checkpointed."
            ),
        )
        parser.add_argument(
            "--checkpoint_interval",
            type=float,
            default=None,
            metavar="SECONDS",
            help=(
                "Streaming: seconds between checkpoints (fractions allowed). "
                "Default 10 when --checkpoint_dir is set."
            ),
        )
        parser.add_argument(
            "--checkpoints_retained",
            type=int,
            default=None,
            metavar="N",
            help=(
                "How many completed checkpoints to keep in --checkpoint_dir; "
                "older ones are deleted. Default 3."
            ),
        )
        parser.add_argument(
            "--restore_from",
            default=None,
            metavar="PATH",
            help=(
                "Start the job from this checkpoint or savepoint directory "
                "instead of from scratch (or from the latest checkpoint in "
                "--checkpoint_dir). A missing or unreadable checkpoint fails "
                "the job before it runs."
            ),
        )
        parser.add_argument(
            "--state_backend",
            default=None,
            choices=["memory", "rocksdb"],
            help=(
                "Where the job keeps its user state: 'memory', or 'rocksdb' "
                "(on local disk, for state larger than memory). Default: the "
                "backend of the checkpoint restored from, else rocksdb when "
                "--checkpoint_dir is set, memory otherwise."
            ),
        )
        parser.add_argument(
            "--allow_non_restored_state",
            default=None,
            action="store_true",
            help=(
                "Restore even if the checkpoint holds state that no "
                "transform of this pipeline claims (for example a stateful "
                "transform that was removed or renamed); that state is "
                "dropped. Without this flag such a restore is refused."
            ),
        )


@dataclass(frozen=True)
class EmbeddedServerConfig:
    """The settings that identify one embedded job server.

    Pipelines whose options give equal configs share one server.

    Attributes:
      host: Address to listen on.
      port: Port to listen on; 0 picks a free one.
      python: Interpreter for SDK worker processes.
      workers: Number of SDK workers; 0 means one per core.
      strict_environments: Whether to refuse environments instead of mapping
        them onto local Python workers.
      work_dir: Scratch directory, or None for a temporary one.
    """

    host: str = "127.0.0.1"
    port: int = 0
    python: str = sys.executable
    workers: int = 0
    strict_environments: bool = False
    work_dir: Optional[str] = None

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "EmbeddedServerConfig":
        """Builds the config named by ``options``.

        Args:
          options: Pipeline options; only :class:`FerrobeamOptions` are read.

        Returns:
          The corresponding :class:`EmbeddedServerConfig`.

        Raises:
          ValueError: If a numeric option is out of range.
        """
        opts = options.view_as(FerrobeamOptions)
        workers = int(opts.ferrobeam_workers or 0)
        port = int(opts.ferrobeam_job_server_port or 0)
        if workers < 0:
            raise ValueError(
                "--ferrobeam_workers must be >= 0 (0 = one per core), got %d"
                % workers
            )
        if not 0 <= port <= 65535:
            raise ValueError(
                "--ferrobeam_job_server_port must be in 0..65535, got %d" % port
            )
        return cls(
            host=opts.ferrobeam_job_server_host or "127.0.0.1",
            port=port,
            python=opts.ferrobeam_python or sys.executable,
            workers=workers,
            strict_environments=bool(opts.ferrobeam_strict_environments),
            work_dir=opts.ferrobeam_work_dir or None,
        )
