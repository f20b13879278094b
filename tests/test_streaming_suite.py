"""Beam's own streaming tests, run unchanged against ferrobeam.

The TestStream-driven tests of ``apache_beam/transforms/trigger_test.py``
(``TestStreamTranscriptTest`` and ``WeakTestStreamTranscriptTest``: every
transcript of Beam's ``trigger_transcripts.yaml`` replayed through a
TestStream in ``--streaming`` mode, each pane checked as it arrives) build a
plain ``TestPipeline()``, so ``--test-pipeline-options`` points them at
ferrobeam, as ``test_validates_runner.py`` does for the ``it_validatesrunner``
tests. Tests that cannot pass yet are listed in
``streaming_exclusions.yaml`` with a reason and an issue; one that starts
passing fails this check until its entry is removed.

The TestStream tests of ``apache_beam/transforms/userstate_test.py``
(``StatefulDoFnOnDirectRunnerTest``: stateful DoFns and timers) record their
output by appending to a class attribute from a DoFn, so they run with
``--streaming --environment_type=LOOPBACK``: every worker then lives in the
pytest process and the records land where the test reads them. Four of them
build their pipeline with their own options or runner (the DirectRunner or
the FnApiRunner) and would not run on ferrobeam, so they are deselected here.
All 23 are also ported, on ferrobeam's default environment (worker
processes), in ``test_streaming_userstate.py``.

The TestStream tests of ``apache_beam/testing/test_stream_test.py`` pin the
DirectRunner in their own options; they are ported in ``test_streaming.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TESTS_DIR
from test_validates_runner import MODULE_TIMEOUT_S, PIPELINE_OPTIONS, judge, load_exclusions, run_module

EXCLUSIONS_FILE = TESTS_DIR / "streaming_exclusions.yaml"
EXCLUSIONS = load_exclusions(EXCLUSIONS_FILE)

#: userstate_test's tests that pin another runner in their own options.
_USERSTATE_PINNED = (
    "test_generate_sequence_with_realtime_timer",  # DirectRunner
    "test_timer_output_timestamp_and_window",  # PipelineOptions(): DirectRunner
    "test_stateful_set_state_clean_portably",  # FnApiRunner
    "test_stateful_set_state_compaction_race_portably",  # own options: DirectRunner
)

#: Suite -> (module, pytest selection, the fewest tests it must run,
#: pipeline options). The trigger transcripts run twice: GroupByKey buffers
#: in memory (the default without checkpoints) and in RocksDB.
SUITES = {
    "trigger_test": ("apache_beam.transforms.trigger_test", ["-k", "TestStreamTranscriptTest"], 36,
                     PIPELINE_OPTIONS),
    "trigger_test-rocksdb": ("apache_beam.transforms.trigger_test", ["-k", "TestStreamTranscriptTest"], 36,
                             PIPELINE_OPTIONS + " --state_backend=rocksdb"),
    "userstate_test": (
        "apache_beam.transforms.userstate_test",
        ["-k", "StatefulDoFnOnDirectRunnerTest and not (%s)" % " or ".join(_USERSTATE_PINNED)],
        19,
        PIPELINE_OPTIONS + " --streaming --environment_type=LOOPBACK",
    ),
}


def test_exclusions_name_suites_we_run() -> None:
    modules = {module for module, _, _, _ in SUITES.values()}
    for ex in EXCLUSIONS:
        assert ex.module in modules, ex.test


@pytest.mark.timeout(MODULE_TIMEOUT_S + 60)
@pytest.mark.parametrize("suite", SUITES)
def test_beam_streaming_tests(suite: str, tmp_path: Path, native: object) -> None:
    del native  # only required so a missing extension fails fast with advice
    module, select, minimum, options = SUITES[suite]
    results, _ = run_module(module, tmp_path, select, options)
    problems = judge(module, results, EXCLUSIONS, minimum, EXCLUSIONS_FILE)
    passed = sum(r["outcome"] == "passed" for r in results.values())
    excluded = sum(e.module == module for e in EXCLUSIONS)
    print("%s: %d/%d passed, %d excluded" % (suite, passed, len(results), excluded))
    assert not problems, "\n".join(problems)
