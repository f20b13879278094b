"""The dashboard page (runner/dashboard/web) in a real browser: Debian's
Chromium driven by Playwright, against the session's job server.

Screenshots go to the test's tmp dir and to ``test-output/dashboard/`` at
the repository root (git-ignored) for a person to look at.

Needs the ``playwright`` package (in the ``test`` extra; its wheel ships
the driver, ``playwright install`` is not needed) and ``/usr/bin/chromium``
(``scripts/install-test-deps.sh``); skipped without either.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import REPO_ROOT, LiveJob, get_json, stage_of
from test_cli import _fail_on_two, _portable_job

try:
    from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
except ImportError:
    pytest.skip("the playwright package is not installed (pip install '.[test]' or pip install playwright)",
                allow_module_level=True)

CHROMIUM = "/usr/bin/chromium"
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip("no Chromium at %s (scripts/install-test-deps.sh installs Debian's)" % CHROMIUM,
                allow_module_level=True)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = REPO_ROOT / "test-output" / "dashboard"
CLOCK = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$")

expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page; the test fails if the page logs an error or throws."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append("console: " + m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append("page error: %s" % e))
    try:
        yield page
    finally:
        context.close()
    assert not problems, problems


def screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    """Saves a full-page screenshot in the test's tmp dir and in
    test-output/dashboard/; returns the latter."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    kept = SCREENSHOTS / name
    shutil.copyfile(shot, kept)
    return kept


def number(text: str) -> int:
    """A count as the page shows it ("12,345")."""
    assert re.fullmatch(r"[\d,]+", text), text
    return int(text.replace(",", ""))


def stage_row(page: Page, stage: dict[str, Any]) -> Locator:
    return page.locator('[data-testid="stage-row"][data-stage-id="%s"]' % stage["id"])


def metric_value(page: Page, metric: str, kind: str) -> Locator:
    return page.locator('[data-testid="metric-row"][data-metric="%s"]' % metric).get_by_test_id(kind)


def open_job(page: Page, dashboard: str, job: dict[str, Any], state: str) -> None:
    page.goto("%s/#/jobs/%s" % (dashboard, job["id"]))
    expect(page.get_by_test_id("job-state")).to_have_text(state)
    expect(page.get_by_test_id("connection")).to_contain_text("live")


def check_graph(page: Page, job: dict[str, Any]) -> None:
    """One node per stage, one arrow per input, sources left of their
    consumers."""
    graph = page.get_by_test_id("stage-graph")
    expect(graph).to_be_visible()
    expect(graph.get_by_test_id("stage-node")).to_have_count(len(job["stages"]))
    expect(graph.get_by_test_id("stage-edge")).to_have_count(sum(len(set(s["inputs"])) for s in job["stages"]))
    layers = {s["id"]: int(graph.locator('[data-stage-id="%s"]' % s["id"]).get_attribute("data-layer") or -1)
              for s in job["stages"]}
    for s in job["stages"]:
        assert layers[s["id"]] == max((layers[i] + 1 for i in s["inputs"]), default=0), (s, layers)
    boxes = {sid: graph.locator('[data-stage-id="%s"]' % sid).bounding_box() for sid in layers}
    for s in job["stages"]:
        for i in s["inputs"]:
            assert boxes[i]["x"] + boxes[i]["width"] < boxes[s["id"]]["x"], (i, s["id"], boxes)


def test_running_streaming_job_page_updates_live(page: Page, dashboard: str, streaming_job: LiveJob,
                                                 tmp_path: Path) -> None:
    job = streaming_job.wait_counting()
    open_job(page, dashboard, job, "RUNNING")
    check_graph(page, job)
    expect(page.get_by_test_id("job-mode")).to_have_text("streaming")

    gbk = stage_of(job, "gbk")
    row = stage_row(page, gbk)
    watermark = row.get_by_test_id("watermark")
    elements_in = row.get_by_test_id("elements-in")
    ticks = metric_value(page, "demo/ticks", "counter")
    expect(watermark).to_have_text(CLOCK)
    expect(ticks).to_have_text(re.compile(r"^[\d,]+$"))
    # A rate needs two polls.
    expect(row.get_by_test_id("rate-in")).to_have_text(re.compile(r"^[\d.,]+/s$"))
    node = page.locator('[data-testid="stage-node"][data-stage-id="%s"]' % gbk["id"])
    expect(node.get_by_test_id("node-io")).to_have_text(re.compile(r"^in [\d.,]+/s · out "))
    expect(node.get_by_test_id("node-extra")).to_have_text(re.compile(r"^lag [\d.]+ (ms|s)"))

    first = (watermark.inner_text(), number(elements_in.inner_text()), number(ticks.inner_text()))
    time.sleep(3)
    second = (watermark.inner_text(), number(elements_in.inner_text()), number(ticks.inner_text()))
    assert CLOCK.match(second[0]) and second[0] != first[0], ("the watermark does not move", first, second)
    assert second[1] > first[1], ("the element count does not move", first, second)
    assert second[2] > first[2], ("the user counter does not move", first, second)

    lag = row.get_by_test_id("watermark-lag").inner_text()
    assert re.fullmatch(r"[\d.]+ (ms|s)", lag), lag  # seconds behind, not minutes
    expect(page.get_by_test_id("checkpoint-row").first).to_contain_text("ok")
    pids = page.get_by_test_id("worker-pid").all_inner_texts()
    running = [w["pid"] for w in get_json(streaming_job.url)["workers"] if w["state"] == "running"]
    assert running and {str(p) for p in running} <= set(pids), (running, pids)
    page.get_by_test_id("stage-node").nth(len(job["stages"]) - 1).click()
    expect(page.locator('[data-testid="stage-row"].selected')).to_have_count(1)
    screenshot(page, tmp_path, "streaming-job.png")


def test_finished_batch_job_page_shows_final_counts(page: Page, dashboard: str, batch_job: dict[str, Any],
                                                     tmp_path: Path) -> None:
    open_job(page, dashboard, batch_job, "DONE")
    check_graph(page, batch_job)
    expect(page.get_by_test_id("job-mode")).to_have_text("batch")
    for node in page.get_by_test_id("stage-node").all():
        assert node.get_attribute("data-state") == "done"

    gbk = stage_row(page, stage_of(batch_job, "gbk"))
    expect(gbk.get_by_test_id("elements-in")).to_have_text("1,000")
    expect(gbk.get_by_test_id("elements-out")).to_have_text("7")
    counting = stage_row(page, stage_of(batch_job, "sdk", "ParDo(CountAndMeasure)"))
    expect(counting.get_by_test_id("elements-out")).to_have_text("1,000")
    expect(counting.get_by_test_id("rate-in")).to_have_text("—")  # no rate for a finished stage
    expect(counting.get_by_test_id("watermark")).to_be_hidden()  # batch: no watermark columns
    expect(metric_value(page, "demo/seen", "counter")).to_have_text("1,000")
    expect(metric_value(page, "demo/size", "distribution")).to_have_text(
        "count 1,000 · mean 4.5 · min 0 · max 9")
    expect(page.get_by_test_id("worker-state").first).to_contain_text("stopped")
    expect(page.get_by_test_id("message").first).to_contain_text("dashboard: http://127.0.0.1:")
    screenshot(page, tmp_path, "batch-job.png")


def test_failed_job_shows_its_traceback_preformatted(page: Page, dashboard: str, job_endpoint: str,
                                                      tmp_path: Path) -> None:
    job_id, result = _portable_job(job_endpoint, "dash-failing", _fail_on_two)
    with pytest.raises(RuntimeError, match="FAILED"):
        result.wait_until_finish()
    job = get_json("%s/api/jobs/%s" % (dashboard, job_id))
    open_job(page, dashboard, job, "FAILED")
    error = page.locator('[data-testid="message"][data-importance="ERROR"]').filter(
        has_text="cli-boom on 2").first
    expect(error).to_be_visible()
    text = error.locator("pre")
    expect(text).to_contain_text("Traceback (most recent call last)")
    style = text.evaluate("e => [getComputedStyle(e).whiteSpace, getComputedStyle(e).fontFamily]")
    assert style[0] == "pre-wrap" and "mono" in style[1].lower(), style
    # Lines stay lines: the traceback's frames are not run together.
    assert len(text.inner_text().splitlines()) > 3
    assert page.get_by_test_id("tile-errors").locator(".tile-value").inner_text() != "0"
    # The stage whose DoFn raised is shown failed, not done.
    failing = [s for s in job["stages"] if any(t.endswith("Check") for t in s["transforms"])]
    assert [s["state"] for s in failing] == ["failed"], job["stages"]
    node = page.locator('[data-testid="stage-node"][data-stage-id="%s"]' % failing[0]["id"])
    expect(node).to_have_attribute("data-state", "failed")
    error.evaluate("e => e.scrollIntoView({block: 'start'})")  # the log pane shows the error from its top
    screenshot(page, tmp_path, "failed-job.png")


def test_job_list_links_to_the_jobs(page: Page, dashboard: str, batch_job: dict[str, Any],
                                    tmp_path: Path) -> None:
    page.goto(dashboard + "/")
    row = page.locator('[data-testid="job-row"][data-job-id="%s"]' % batch_job["id"])
    expect(row.get_by_test_id("job-state")).to_have_text("DONE")
    expect(row).to_contain_text("dash-batch")
    expect(row.get_by_test_id("job-duration")).to_have_text(re.compile(r"\d"))
    screenshot(page, tmp_path, "jobs.png")
    row.get_by_role("link").click()
    expect(page.get_by_test_id("job-page")).to_have_attribute("data-job-id", batch_job["id"])
    expect(page.get_by_test_id("stage-graph")).to_be_visible()
