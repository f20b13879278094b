"""pytest plugin for running Beam's own ``it_validatesrunner`` tests.

``tests/test_validates_runner.py`` runs each Beam test module in a pytest
subprocess with ``-p validates_runner_plugin``. The plugin does two things
Beam's source tree does in its own ``conftest.py`` (which the installed
package does not ship) and one of ours:

* ``--test-pipeline-options``: Beam's option; every ``TestPipeline`` the
  tests build gets these options (``--runner=ferrobeam.FerrobeamRunner``);
* ``--ferrobeam-report=PATH``: writes one JSON record per test - its id as
  ``module::Class::test``, outcome, duration, and the first lines of the
  error or the skip reason - for the parent test to compare with the
  exclusions file, and where ferrobeam was imported from.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest

_RECORDS = pytest.StashKey[dict]()

#: Lines of a failure's message kept in the report.
MESSAGE_LINES = 6


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ferrobeam")
    group.addoption(
        "--test-pipeline-options",
        default=None,
        help="Pipeline options for Beam's TestPipeline, as in Beam's own test runs.",
    )
    group.addoption("--ferrobeam-report", default=None, help="Write per-test outcomes as JSON to this file.")


def pytest_configure(config: pytest.Config) -> None:
    from apache_beam.testing.test_pipeline import TestPipeline  # pylint: disable=import-outside-toplevel

    options = config.getoption("--test-pipeline-options")
    if options:
        TestPipeline.pytest_test_pipeline_options = options
    config.stash[_RECORDS] = {}


def test_id(item: pytest.Item) -> str:
    """``module::Class::test`` (or ``module::test``): stable whatever the rootdir."""
    module = getattr(getattr(item, "module", None), "__name__", "?")
    cls = getattr(item, "cls", None)
    parts = [module] + ([cls.__name__] if cls is not None else []) + [item.name]
    return "::".join(parts)


def _message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or report.longreprtext or ""
    return "\n".join(text.strip().splitlines()[:MESSAGE_LINES])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    records: dict = item.config.stash[_RECORDS]
    record = records.setdefault(test_id(item), {"outcome": "passed", "message": "", "duration": 0.0})
    record["duration"] += report.duration
    # The first phase that did not pass decides (setup error, failure, skip).
    if record["outcome"] == "passed" and not report.passed:
        if report.skipped:
            record["outcome"] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        elif report.failed:
            record["outcome"] = "failed" if report.when == "call" else "error"
        record["message"] = _message(report)
        record["when"] = report.when


def pytest_sessionfinish(session: pytest.Session) -> None:
    path: Optional[str] = session.config.getoption("--ferrobeam-report")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"ferrobeam": _ferrobeam_location(), "tests": session.config.stash[_RECORDS]}, f, indent=1)


def _ferrobeam_location() -> Optional[str]:
    """Where the tests imported ferrobeam from, so the parent can check it
    tested the build it meant to."""
    import ferrobeam  # pylint: disable=import-outside-toplevel

    return getattr(ferrobeam, "__file__", None)
