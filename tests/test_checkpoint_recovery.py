"""Checkpoints and restores: crash a streaming job over and over, and the
output is still exact.

The job is ``recovery_pipeline.py`` (a rate-limited source, a stateful DoFn
with running counts and totals per key and a final timer, the committing
``ferrobeam.io.WriteLines`` sink), run as a separate process with
``--checkpoint_dir``. Rerunning the same command restores from the latest
checkpoint. After the last run, :func:`recovery_pipeline.check_output`
must find every count of every key exactly once, totals that add each of
the key's values once, and one final line per key; and the crash test's
GroupByKey branch (fixed windows, values buffered in RocksDB between
checkpoints) one exact sum per window and key.

Kill times are random; the seed is printed (set ``FERROBEAM_CRASH_SEED`` to
repeat a run). ``scripts/crash_soak.py`` is the long version.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

import ferrobeam
from ferrobeam.io import WRITE_LINES_URN
from ferrobeam.io import WriteLines
from ferrobeam.io import read_lines

from crash_harness import PipelineRun
from crash_harness import command
from crash_harness import committed
from crash_harness import kill_and_restart
from crash_harness import sdk_workers
from crash_harness import tree_snapshot
from crash_harness import wait_for_new_part
from recovery_pipeline import check_output
from recovery_pipeline import check_window_sums

#: 30 s of events at 100/s: ten kill-and-restore cycles (a few seconds of
#: start-up and about 1-2 s of progress each) fit well inside it.
EVENTS, KEYS, RATE = 3000, 10, 100
KILLS = 10
#: A kill at a random moment of start-up or restore (before the run has
#: committed anything), this often; the others come after new output.
EARLY_KILL_CHANCE = 0.2


def _seed() -> int:
    seed = int(os.environ.get("FERROBEAM_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print("FERROBEAM_CRASH_SEED=%d" % seed)
    return seed


def _checkpointed(output: Path, checkpoints: Path, work: Path, *extra: str, events: int = EVENTS,
                  rate: float = RATE) -> list[str]:
    return command(output, events, KEYS, rate,
                   "--runner=ferrobeam.FerrobeamRunner", "--streaming",
                   "--checkpoint_dir=%s" % checkpoints, "--checkpoint_interval=0.5",
                   "--ferrobeam_work_dir=%s" % work, *extra)


def _assert_exact(output: Path, events: int, context: str) -> None:
    lines = read_lines(output)
    problems = check_output(lines, events, KEYS)
    assert not problems, "%s: %d lines in %d files; the output is not exact:\n  %s" % (
        context, len(lines), len(committed(output)), "\n  ".join(problems))


@pytest.mark.timeout(420)
def test_killed_and_restarted_job_writes_every_line_exactly_once(tmp_path: Path) -> None:
    seed = _seed()
    rng = random.Random(seed)
    output, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    windows = tmp_path / "windows"
    runs = 0

    def start() -> PipelineRun:
        nonlocal runs
        runs += 1
        return PipelineRun(_checkpointed(output, checkpoints, tmp_path / ("work-%02d" % runs),
                                         "--window_output=%s" % windows),
                           tmp_path / ("run-%02d.log" % runs))

    loop = kill_and_restart(start, output, rng, KILLS, EARLY_KILL_CHANCE, timeout=120)
    assert loop.last is not None
    context = "seed %d, %d kills (%d early), %d runs" % (seed, loop.kills, loop.early, loop.runs)
    status = loop.last.wait(timeout=180)
    assert status == 0, "%s: the last run exited with %d\n%s" % (context, status, loop.last.log_tail())
    assert loop.kills == KILLS, (
        "%s: the job finished before it was killed %d times; lower RATE or raise EVENTS" % (context, KILLS))
    _assert_exact(output, EVENTS, context)
    # The GroupByKey's buffered values (in RocksDB) survived every kill.
    problems = check_window_sums(read_lines(windows), EVENTS, KEYS)
    assert not problems, "%s: the windowed sums are not exact:\n  %s" % (context, "\n  ".join(problems))


@pytest.mark.timeout(300)
def test_killed_sdk_workers_are_replaced_and_the_output_is_exact(tmp_path: Path) -> None:
    seed = _seed()
    rng = random.Random(seed)
    output, pids = tmp_path / "out", tmp_path / "pids"
    events, rate = 1500, 150
    run = PipelineRun(_checkpointed(output, tmp_path / "checkpoints", tmp_path / "work",
                                    "--ferrobeam_no_inprocess_worker", "--ferrobeam_workers=2",
                                    "--pid_dir=%s" % pids, events=events, rate=rate),
                      tmp_path / "run.log")
    assert wait_for_new_part(run, output, set(), timeout=120) is not None, run.log_tail()
    killed: list[int] = []
    deadline = time.monotonic() + 60
    while len(killed) < 4 and run.poll() is None and time.monotonic() < deadline:
        # Workers that run bundles; killing one still starting is another
        # matter (it fails the job when ferrobeam cannot start workers).
        workers = [w for w in sdk_workers(run.pid, pids) if w not in killed]
        if not workers:
            time.sleep(0.1)
            continue
        victim = rng.choice(workers)
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
        time.sleep(rng.uniform(1.0, 2.0))
    context = "seed %d, SDK workers killed: %s" % (seed, killed)
    status = run.wait(timeout=180)
    assert status == 0, "%s: the job exited with %d\n%s" % (context, status, run.log_tail())
    assert len(killed) >= 3, "%s: the job ended before 3 of its workers could be killed" % context
    _assert_exact(output, events, context)


@pytest.mark.parametrize("case", ["missing", "corrupt-manifest"])
def test_restore_from_an_unusable_checkpoint_is_refused(case: str, tmp_path: Path) -> None:
    checkpoints, output = tmp_path / "checkpoints", tmp_path / "out"
    checkpoints.mkdir()
    if case == "missing":
        source = checkpoints / "no-such-checkpoint"
    else:
        # A checkpoint whose manifest was cut short, next to some state.
        source = tmp_path / "savepoint"
        (source / "state").mkdir(parents=True)
        (source / "state" / "000001.sst").write_bytes(os.urandom(4096))
        manifest = json.dumps({"checkpoint": 7, "pipeline": "recovery", "files": ["state/000001.sst"]})
        (source / "MANIFEST.json").write_text(manifest[:len(manifest) // 2], encoding="utf-8")
    before = {"checkpoints": tree_snapshot(checkpoints), "source": tree_snapshot(source)}
    run = PipelineRun(_checkpointed(output, checkpoints, tmp_path / "work", "--restore_from=%s" % source,
                                    events=100, rate=0),
                      tmp_path / "run.log")
    status = run.wait(timeout=120)
    log = run.log.read_text(encoding="utf-8", errors="replace")
    assert status != 0, "restoring from %s (%s) succeeded\n%s" % (source, case, run.log_tail())
    assert str(source) in log, "the error does not name %s\n%s" % (source, run.log_tail())
    after = {"checkpoints": tree_snapshot(checkpoints), "source": tree_snapshot(source)}
    assert after == before, "a refused restore changed the checkpoint directories"
    assert not committed(output), "a refused restore wrote output: %s" % sorted(committed(output))


def test_checkpoint_options_reach_the_runner_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ferrobeam.runner import _absolute_checkpoint_paths  # pylint: disable=import-outside-toplevel
    monkeypatch.chdir(tmp_path)
    options = PipelineOptions(["--checkpoint_dir", "ck", "--restore_from=sp/chk-1", "--checkpoint_interval=0.5",
                               "--checkpoints_retained=5", "--state_backend=rocksdb", "--allow_non_restored_state"])
    checkpoint = options.view_as(ferrobeam.CheckpointOptions)
    _absolute_checkpoint_paths(checkpoint)
    assert {k: v for k, v in options.get_all_options().items()
            if k in ("checkpoint_dir", "restore_from", "checkpoint_interval", "checkpoints_retained",
                     "state_backend", "allow_non_restored_state")} == {
        "checkpoint_dir": str(tmp_path / "ck"),
        "restore_from": str(tmp_path / "sp" / "chk-1"),
        "checkpoint_interval": 0.5,
        "checkpoints_retained": 5,
        "state_backend": "rocksdb",
        "allow_non_restored_state": True,
    }
    # Unset, they stay None, so they are not sent to the job server at all.
    unset = PipelineOptions([]).view_as(ferrobeam.CheckpointOptions).get_all_options()
    assert all(unset[k] is None for k in ("checkpoint_dir", "checkpoint_interval", "checkpoints_retained",
                                          "restore_from", "state_backend", "allow_non_restored_state"))


def test_write_lines_is_one_transform_with_its_urn(tmp_path: Path) -> None:
    p = beam.Pipeline(options=PipelineOptions([]))
    _ = p | beam.Create(["a"]) | WriteLines(tmp_path / "out")
    proto = p.to_runner_api()
    sinks = [t for t in proto.components.transforms.values() if t.spec.urn == WRITE_LINES_URN]
    assert len(sinks) == 1, sinks
    (sink,) = sinks
    assert json.loads(sink.spec.payload) == {"directory": str(tmp_path / "out")}
    assert not sink.outputs
    (pcoll,) = sink.inputs.values()
    coder = proto.components.coders[proto.components.pcollections[pcoll].coder_id]
    assert coder.spec.urn == "beam:coder:bytes:v1"
    # Its input comes from the composite's own encoding step, which reads the
    # user's PCollection.
    (producer,) = [t for t in proto.components.transforms.values()
                   if pcoll in t.outputs.values() and not t.subtransforms]
    assert producer.unique_name == "WriteLines/Encode"
    # Beam's round trip through the Runner API (the streaming DirectRunner
    # does one) keeps the sink.
    again = beam.Pipeline.from_runner_api(proto, p.runner, p._options).to_runner_api()
    assert [t.spec for t in again.components.transforms.values() if t.spec.urn == WRITE_LINES_URN] == [sink.spec]


@pytest.mark.parametrize("streaming", [False, True], ids=["batch", "streaming"])
def test_write_lines_falls_back_to_files_per_bundle_on_the_direct_runner(streaming: bool, tmp_path: Path) -> None:
    lines = ["line %d" % i for i in range(100)] + ["é ü", ""]
    options = PipelineOptions(["--runner=DirectRunner"] + (["--streaming"] if streaming else []))
    with beam.Pipeline(options=options) as p:
        _ = p | beam.Create(lines + [b"raw bytes"]) | WriteLines(tmp_path / "out")
    assert sorted(read_lines(tmp_path / "out")) == sorted(lines + ["raw bytes"])


def test_write_lines_on_ferrobeam_commits_part_files_at_the_end_of_a_batch_job(tmp_path: Path) -> None:
    lines = ["line %d" % i for i in range(1000)]
    with beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner"])) as p:
        _ = p | beam.Create(lines) | WriteLines(tmp_path / "out")
    assert sorted(read_lines(tmp_path / "out")) == sorted(lines)
    names = sorted(os.listdir(tmp_path / "out"))
    # Written by the runner, not by the per-bundle fallback (part-<uuid>.txt),
    # and all published.
    assert names and all(n.startswith("part-") and n.endswith(".txt") for n in names), names
    assert not [n for n in names if re.fullmatch(r"part-[0-9a-f]{32}\.txt", n)], names


def test_read_lines_refuses_a_torn_file(tmp_path: Path) -> None:
    (tmp_path / "part-000001-0.txt").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / ".pending-x").write_text("ignored\n", encoding="utf-8")
    assert read_lines(tmp_path) == ["a", "b"]
    (tmp_path / "part-000002-0.txt").write_text("c\nd", encoding="utf-8")
    with pytest.raises(ValueError, match="part-000002-0.txt"):
        read_lines(tmp_path)
    assert read_lines(tmp_path / "missing") == []
