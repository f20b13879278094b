"""pytest fixtures for testing pipelines on ferrobeam.

Registered through the ``pytest11`` entry point when ferrobeam is
installed, so any test can ask for:

* ``ferrobeam_args``: pipeline arguments that run on ferrobeam (add
  ``"--streaming"`` for streaming tests);
* ``ferrobeam_options``: the same as ``PipelineOptions``, with extra flags;
* ``replacements``: a :class:`ferrobeam.testing.Replacements`, active for
  the whole test, whose captures live in the test's ``tmp_path``.

::

    def test_prices(replacements, ferrobeam_args):
        replacements.source("ReadRides", jsonl="rides.jsonl", timestamp="ts")
        prices = replacements.capture("WritePrices")
        pricing.run(ferrobeam_args)
        assert prices.panes(where=lambda p: p["geohash"] == "u4pruy") == [...]

Apache Beam is imported only when a fixture is used, so the plugin costs
nothing to test suites that do not use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

    from ferrobeam.testing import Replacements

#: The runner flag the fixtures use.
RUNNER_ARG = "--runner=ferrobeam.FerrobeamRunner"


@pytest.fixture
def ferrobeam_args() -> list[str]:
    """Arguments for a pipeline that runs on ferrobeam (a fresh list per test)."""
    return [RUNNER_ARG]


@pytest.fixture
def ferrobeam_options(ferrobeam_args: list[str]) -> Callable[..., "PipelineOptions"]:
    """Makes ``PipelineOptions`` for ferrobeam: ``ferrobeam_options("--streaming")``."""
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel

    def make(*extra_args: str, **options: Any) -> "PipelineOptions":
        return PipelineOptions(list(ferrobeam_args) + list(extra_args), **options)

    return make


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """Notes whether the test body failed, for the ``replacements`` teardown."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed


@pytest.fixture
def replacements(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator["Replacements"]:
    """Replacements active for the test; fails it if no pipeline ran on ferrobeam."""
    from ferrobeam.testing import Replacements  # pylint: disable=import-outside-toplevel

    active = Replacements(directory=str(tmp_path / "ferrobeam-captures"))
    active.__enter__()
    yield active
    if request.node.stash.get(_CALL_FAILED, False):
        # The test's own failure says more than "nothing ran".
        active.__exit__(AssertionError, None, None)
    else:
        active.__exit__(None, None, None)
