"""Beam's own ``it_validatesrunner`` tests, run against ferrobeam.

Beam marks the tests every runner must pass with ``it_validatesrunner``. We
run all of them from the installed SDK - ``apache_beam/transforms/*_test.py``,
``apache_beam/pipeline_test.py`` and ``apache_beam/metrics/metric_test.py`` -
unchanged, the way Beam runs them for its runners: pytest with
``-m it_validatesrunner --test-pipeline-options="--runner=ferrobeam.FerrobeamRunner"``.

Each Beam module runs in its own pytest subprocess (one embedded ferrobeam
job server per module, shared by its tests), with ``validates_runner_plugin``
providing Beam's ``--test-pipeline-options`` flag and a JSON report of every
test's outcome. This test then checks the report against
``validates_runner_exclusions.yaml``:

* every test not excluded must pass (or be skipped by Beam itself);
* every excluded test must still fail - one that passes must be removed from
  the file;
* the module must have run at least as many tests as it has marked.

Failures list each offending test with the first lines of its error. The
pass counts are printed at the end of the pytest run.

Run a single module with e.g.::

    python -m pytest tests/test_validates_runner.py -k sideinputs
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import pytest
import yaml

import apache_beam

from conftest import TESTS_DIR, ValidatesRunnerTally

EXCLUSIONS_FILE = TESTS_DIR / "validates_runner_exclusions.yaml"
MARKER = "it_validatesrunner"
PIPELINE_OPTIONS = "--runner=ferrobeam.FerrobeamRunner"
BEAM_DIR = Path(apache_beam.__file__).resolve().parent
#: Beam modules outside transforms/ whose marked tests we run too.
EXTRA_MODULES = ("apache_beam.pipeline_test", "apache_beam.metrics.metric_test")
#: Per Beam test (pytest-timeout in the subprocess) and per module.
TEST_TIMEOUT_S = 300
MODULE_TIMEOUT_S = 1500
#: Tests that do not pass, as reported in a failure: the rest are elided.
MAX_LISTED = 25

PASSING_OUTCOMES = ("passed",)
BEAM_SKIP_OUTCOMES = ("skipped", "xfailed")


def module_file(module: str) -> Path:
    return BEAM_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")


def marked_tests(module: str) -> int:
    """How many test definitions in ``module``'s source carry the marker."""
    return module_file(module).read_text(encoding="utf-8").count("@pytest.mark.%s" % MARKER)


def discover_modules() -> list[str]:
    """Every Beam module in scope that marks at least one test."""
    transforms = sorted((BEAM_DIR / "transforms").glob("*_test.py"))
    modules = ["apache_beam.transforms." + f.stem for f in transforms]
    return [m for m in modules + list(EXTRA_MODULES) if marked_tests(m) > 0]


MODULES = discover_modules()


@dataclasses.dataclass(frozen=True)
class Exclusion:
    test: str
    reason: str
    issue: Optional[int]
    upstream: Optional[str] = None

    @property
    def module(self) -> str:
        return self.test.split("::", 1)[0]


def load_exclusions(path: Path = EXCLUSIONS_FILE) -> list[Exclusion]:
    """Parses and validates the exclusions file.

    Raises:
      ValueError: If an entry is malformed or duplicated.
    """
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    if not isinstance(raw, list):
        raise ValueError("%s: expected a list of entries" % path)
    entries: list[Exclusion] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError("%s: entry %d is not a mapping" % (path, i))
        unknown = set(item) - {"test", "reason", "issue", "upstream"}
        if unknown:
            raise ValueError("%s: entry %d has unknown keys %s" % (path, i, sorted(unknown)))
        test, reason, issue = item.get("test"), item.get("reason"), item.get("issue")
        if not isinstance(test, str) or test.count("::") not in (1, 2) or not test.rsplit("::", 1)[-1].startswith("test"):
            raise ValueError("%s: entry %d: 'test' must be module::Class::test_method" % (path, i))
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("%s: %s: 'reason' is required" % (path, test))
        if "issue" not in item or not (issue is None or (isinstance(issue, int) and issue > 0)):
            raise ValueError("%s: %s: 'issue' must be an issue number or null" % (path, test))
        if issue is None and not item.get("upstream"):
            raise ValueError("%s: %s: an exclusion without a ferrobeam issue needs 'upstream'" % (path, test))
        if any(e.test == test for e in entries):
            raise ValueError("%s: %s is listed twice" % (path, test))
        entries.append(Exclusion(test, reason.strip(), issue, item.get("upstream")))
    return entries


EXCLUSIONS = load_exclusions()


def run_module(
    module: str,
    work_dir: Path,
    select: Sequence[str] = ("-m", MARKER),
    pipeline_options: str = PIPELINE_OPTIONS,
) -> tuple[dict[str, dict], subprocess.CompletedProcess]:
    """Runs ``module``'s tests chosen by ``select`` (pytest arguments; by
    default the marked ones) in a pytest subprocess, their ``TestPipeline``s
    given ``pipeline_options``; returns its report."""
    report = work_dir / "report.json"
    ini = work_dir / "pytest.ini"
    # Our own ini and rootdir, so nothing of this repository's pytest set-up
    # applies; Beam's extra markers (uses_dill, no_sickbay_*) are not errors.
    ini.write_text("[pytest]\nfilterwarnings =\n    ignore::pytest.PytestUnknownMarkWarning\n", encoding="utf-8")
    cmd = [
        sys.executable, "-m", "pytest",
        "-p", "validates_runner_plugin",
        "-p", "no:cacheprovider",
        "-c", str(ini), "--rootdir", str(work_dir),
        # Append, don't prepend, Beam's site-packages to sys.path: prepending
        # would let an older ferrobeam installed there shadow the one in a
        # virtualenv.
        "--import-mode=append",
        *select,
        "--test-pipeline-options=%s" % pipeline_options,
        "--timeout=%d" % TEST_TIMEOUT_S,
        "--ferrobeam-report", str(report),
        "--junitxml", str(work_dir / "junit.xml"),
        "-q", "-rN",
        "--pyargs", module,
    ]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(TESTS_DIR), env.get("PYTHONPATH", "")] if p)
    proc = subprocess.run(
        cmd, cwd=str(work_dir), env=env, capture_output=True, text=True, timeout=MODULE_TIMEOUT_S, check=False
    )
    # 0: all passed, 1: some failed; anything else means pytest itself broke.
    if proc.returncode not in (0, 1) or not report.exists():
        raise AssertionError(
            "pytest on %s exited with %d and no usable report\n--- stdout\n%s\n--- stderr\n%s"
            % (module, proc.returncode, proc.stdout[-6000:], proc.stderr[-6000:])
        )
    data = json.loads(report.read_text(encoding="utf-8"))
    import ferrobeam  # pylint: disable=import-outside-toplevel

    assert data["ferrobeam"] == ferrobeam.__file__, (
        "the Beam tests imported ferrobeam from %s, this test process from %s" % (data["ferrobeam"], ferrobeam.__file__))
    return data["tests"], proc


def judge(
    module: str,
    results: dict[str, dict],
    exclusions: list[Exclusion],
    marked: int,
    exclusions_file: Path = EXCLUSIONS_FILE,
) -> list[str]:
    """Everything wrong with ``module``'s results, one readable line each
    (``marked``: how many tests the module's source marks)."""
    excluded = {e.test: e for e in exclusions if e.module == module}
    problems = []
    for test, r in sorted(results.items()):
        outcome, message = r["outcome"], r.get("message", "")
        short = test.split("::", 1)[1]
        if test in excluded:
            if outcome in PASSING_OUTCOMES:
                problems.append("NOW PASSES %s: remove it from %s" % (short, exclusions_file.name))
            elif outcome in BEAM_SKIP_OUTCOMES:
                problems.append("SKIPPED BY BEAM %s (%s): its exclusion is pointless" % (short, message))
        elif outcome not in PASSING_OUTCOMES + BEAM_SKIP_OUTCOMES:
            first = message.splitlines()[0] if message else "(no message)"
            problems.append("%s %s [%s]: %s" % (outcome.upper(), short, r.get("when", "call"), first))
            problems.extend("    " + line for line in message.splitlines()[1:4])
    for test in sorted(set(excluded) - set(results)):
        problems.append("NOT RUN %s: excluded but no such test ran; fix or remove the entry" % test)
    if len(results) < marked:
        problems.append("only %d tests ran but the module marks %d" % (len(results), marked))
    return problems


# ---------------------------------------------------------------------------
# Checks that need no job server.
# ---------------------------------------------------------------------------


def test_discovery_finds_beams_marked_modules() -> None:
    # Guards against silently running nothing after a Beam upgrade: 2.77 has
    # marked tests in 7 transforms modules plus the two extra modules.
    assert len(MODULES) >= 9, MODULES
    assert sum(marked_tests(m) for m in MODULES) >= 35
    assert set(EXTRA_MODULES) <= set(MODULES)


def test_exclusions_name_modules_and_classes_we_run() -> None:
    for ex in EXCLUSIONS:
        assert ex.module in MODULES, "%s: %s is not a module we run" % (ex.test, ex.module)
        parts = ex.test.split("::")
        if len(parts) == 3:
            assert "class %s(" % parts[1] in module_file(ex.module).read_text(encoding="utf-8"), ex.test


def test_exclusions_file_rejects_bad_entries(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    for text in (
        "- test: foo\n  reason: r\n  issue: 3\n",
        "- test: m::C::test_x\n  issue: 3\n",
        "- test: m::C::test_x\n  reason: r\n  issue: null\n",
        "- test: m::C::test_x\n  reason: r\n  issue: 3\n- test: m::C::test_x\n  reason: r\n  issue: 3\n",
    ):
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError):
            load_exclusions(bad)


def test_judge_reports_failures_stale_and_missing_exclusions() -> None:
    module = "apache_beam.transforms.x_test"
    exclusions = [
        Exclusion(module + "::C::test_stale", "r", 3),
        Exclusion(module + "::C::test_still_fails", "r", 3),
        Exclusion(module + "::C::test_gone", "r", 3),
    ]
    results = {
        module + "::C::test_ok": {"outcome": "passed"},
        module + "::C::test_beam_skips": {"outcome": "skipped", "message": "needs dill"},
        module + "::C::test_broken": {"outcome": "failed", "message": "ValueError: boom\nmore", "when": "call"},
        module + "::C::test_stale": {"outcome": "passed"},
        module + "::C::test_still_fails": {"outcome": "failed", "message": "refused"},
    }
    problems = judge(module, results, exclusions, marked=6)
    assert problems[0] == "FAILED C::test_broken [call]: ValueError: boom"
    assert any(p.startswith("NOW PASSES C::test_stale") for p in problems)
    assert any(p.startswith("NOT RUN %s::C::test_gone" % module) for p in problems)
    assert not any("test_still_fails" in p or "test_beam_skips" in p or "test_ok" in p for p in problems)
    assert problems[-1] == "only 5 tests ran but the module marks 6"


# ---------------------------------------------------------------------------
# Beam's tests, one subprocess per module.
# ---------------------------------------------------------------------------


@pytest.mark.timeout(MODULE_TIMEOUT_S + 60)
@pytest.mark.parametrize("module", MODULES)
def test_beam_it_validatesrunner(
    module: str, tmp_path: Path, validates_runner_tally: ValidatesRunnerTally, native: object
) -> None:
    del native  # only required so a missing extension fails fast with advice
    results, _ = run_module(module, tmp_path)
    validates_runner_tally.add(module, results, excluded={e.test for e in EXCLUSIONS if e.module == module})
    problems = judge(module, results, EXCLUSIONS, marked_tests(module))
    if problems:
        pytest.fail(
            "%s: %d problem(s) with Beam's %s tests on ferrobeam (report: %s)\n  %s"
            % (module, len([p for p in problems if not p.startswith(" ")]), MARKER,
               tmp_path / "report.json", "\n  ".join(problems[:MAX_LISTED * 4])),
            pytrace=False,
        )  # fmt: skip
