"""The dashboard's JSON API and Prometheus ``/metrics`` (docs/dashboard-api.md),
and ``--log_format=json``, against real jobs on a real job server."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from prometheus_client.parser import text_string_to_metric_families

from conftest import LiveJob, free_port, get_json, stage_of, wait_for_job_service
from test_cli import ferrobeam_command

# Beam's watermark bounds in milliseconds.
WATERMARK_BOUND = 9223372036854775


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode("utf-8")


def test_the_page_is_served(dashboard: str) -> None:
    page = get_text(dashboard + "/")
    assert "/app.js" in page and "/app.css" in page
    assert get_text(dashboard + "/app.js").strip()


def test_job_list_names_the_finished_job(dashboard: str, batch_job: dict[str, Any]) -> None:
    listed = get_json(dashboard + "/api/jobs")
    [job] = [j for j in listed["jobs"] if j["id"] == batch_job["id"]]
    assert job["name"] == "dash-batch"
    assert job["state"] == "DONE" and job["streaming"] is False
    assert job["created_ms"] <= job["started_ms"] <= job["finished_ms"] <= listed["now_ms"]
    assert job["duration_ms"] == job["finished_ms"] - job["started_ms"]


def test_batch_job_graph_and_figures(batch_job: dict[str, Any]) -> None:
    stages = batch_job["stages"]
    ids = [s["id"] for s in stages]
    for s in stages:
        # Producers first: every input is an earlier stage.
        assert all(ids.index(i) < ids.index(s["id"]) for i in s["inputs"]), s
        assert s["state"] == "done", s
        assert s["input_watermark_ms"] is None and s["output_watermark_ms"] is None, "batch"
    gbk = stage_of(batch_job, "gbk")
    assert gbk["elements_in"] == 1000 and gbk["elements_out"] == 7
    counting = stage_of(batch_job, "sdk", "ParDo(CountAndMeasure)")
    assert "Key" in counting["transforms"]
    assert counting["elements_in"] == 1000 and counting["elements_out"] == 1000
    assert counting["bundles"] >= 1 and counting["bundle_ms_max"] >= counting["bundle_ms_avg"] > 0
    after = stage_of(batch_job, "sdk", "Sizes")
    assert after["inputs"] == [gbk["id"]] and after["elements_in"] == 7
    assert sum(w["bundles"] for w in batch_job["workers"]) >= 2
    assert all(w["state"] == "stopped" for w in batch_job["workers"]), batch_job["workers"]


def test_batch_job_user_metrics(batch_job: dict[str, Any]) -> None:
    metrics = {(m["namespace"], m["name"]): m for m in batch_job["metrics"]}
    seen = metrics[("demo", "seen")]
    assert (seen["kind"], seen["value"], seen["step"]) == ("counter", 1000, "ParDo(CountAndMeasure)")
    size = metrics[("demo", "size")]
    assert size["kind"] == "distribution"
    assert (size["count"], size["sum"], size["min"], size["max"]) == (1000, 4500, 0, 9)


def test_messages_and_paging(dashboard: str, batch_job: dict[str, Any]) -> None:
    url = "%s/api/jobs/%s/messages" % (dashboard, batch_job["id"])
    first = get_json(url)
    texts = [m["text"] for m in first["messages"]]
    assert any(t.startswith("dashboard: http://127.0.0.1:") and batch_job["id"] in t for t in texts)
    assert get_json("%s?after=%d" % (url, first["next"]))["messages"] == []


def test_unknown_job_is_404_with_a_reason(dashboard: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(dashboard + "/api/jobs/no-such-job", timeout=10)
    assert raised.value.code == 404
    assert "no-such-job" in json.loads(raised.value.read())["error"]


def parse_metrics(dashboard: str) -> dict[str, Any]:
    """``/metrics`` parsed by Prometheus' own client library."""
    return {f.name: f for f in text_string_to_metric_families(get_text(dashboard + "/metrics"))}


def samples(family: Any, **labels: str) -> list[Any]:
    return [s for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def test_metrics_endpoint_parses_and_holds_the_job(dashboard: str, batch_job: dict[str, Any]) -> None:
    with urllib.request.urlopen(dashboard + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = parse_metrics(dashboard)
    job = batch_job["id"]
    gbk = stage_of(batch_job, "gbk")
    # The parser drops the _total suffix from the family name of counters.
    elements_in = families["ferrobeam_stage_elements_in"]
    assert elements_in.type == "counter"
    [sample] = samples(elements_in, job_id=job, stage=gbk["id"])
    assert sample.value == 1000 and sample.labels["job_name"] == "dash-batch"
    [sample] = samples(families["ferrobeam_stage_elements_out"], job_id=job, stage=gbk["id"])
    assert sample.value == 7
    [up] = samples(families["ferrobeam_job_up"], job_id=job)
    assert up.value == 0
    [seen] = samples(families["ferrobeam_user_counter"], job_id=job, name="seen")
    assert seen.value == 1000 and seen.labels["step"] == "ParDo(CountAndMeasure)"
    [count] = samples(families["ferrobeam_user_distribution_count"], job_id=job, name="size")
    assert count.value == 1000
    assert families["ferrobeam_jobs"].type == "gauge"
    assert sum(s.value for s in samples(families["ferrobeam_jobs"], state="DONE")) >= 1


def test_running_streaming_job_is_live(dashboard: str, streaming_job: LiveJob) -> None:
    """Watermarks, counters and checkpoints move while the job runs, and
    the workers are processes one can see."""
    first = streaming_job.wait_counting()
    assert first["streaming"] is True
    gbk1 = stage_of(first, "gbk")
    assert all(s["state"] == "running" for s in first["stages"])
    assert gbk1["queued"] is not None
    time.sleep(3)
    second = get_json(streaming_job.url)
    gbk2 = stage_of(second, "gbk")
    assert gbk2["elements_in"] > gbk1["elements_in"], "the counter does not move"
    wm1, wm2 = gbk1["output_watermark_ms"], gbk2["output_watermark_ms"]
    assert wm1 is not None and -WATERMARK_BOUND < wm1 < wm2 < WATERMARK_BOUND, (wm1, wm2)
    # Fixed one-second windows: the watermark trails the clock by seconds, not minutes.
    assert second["now_ms"] - wm2 < 30_000
    checkpoints = second["checkpoints"]
    assert checkpoints and all(c["kind"] == "checkpoint" for c in checkpoints)
    assert checkpoints[-1]["ok"] and checkpoints[-1]["bytes"] > 0
    assert [c["id"] for c in checkpoints] == sorted(c["id"] for c in checkpoints)
    pids = [w["pid"] for w in second["workers"] if w["state"] == "running"]
    assert pids and all(pids), second["workers"]
    for pid in pids:
        os.kill(pid, 0)  # a live process of this machine

    families = parse_metrics(dashboard)
    [lag] = samples(families["ferrobeam_stage_watermark_lag_seconds"], job_id=streaming_job.job_id,
                    stage=gbk2["id"])
    assert 0 <= lag.value < 60
    [up] = samples(families["ferrobeam_job_up"], job_id=streaming_job.job_id)
    assert up.value == 1
    assert samples(families["ferrobeam_checkpoints"], job_id=streaming_job.job_id, outcome="ok")


def test_json_logs_carry_job_stage_and_worker(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "server.log"
    env = dict(os.environ, RUST_LOG="info,ferrobeam_engine=debug,sdk_worker=warn")
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            ferrobeam_command() + ["job-server", "--port", str(port), "--no_dashboard",
                                   "--log_format=json"],
            stdout=subprocess.DEVNULL, stderr=log, env=env)
    endpoint = "localhost:%d" % port
    try:
        wait_for_job_service(endpoint, timeout=60, proc=proc)
        options = PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", "--job_endpoint=" + endpoint,
                                   "--ferrobeam_no_inprocess_worker"])
        with beam.Pipeline(options=options) as p:
            _ = (p
                 | beam.Create(range(20))
                 | beam.Map(lambda x: logging.warning("json-log-probe %d", x) or x))  # yapf: disable
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert lines, "no log lines"
    for line in lines:
        assert {"timestamp", "level", "target", "message"} <= set(line), line
    probes = [l for l in lines if "json-log-probe" in l["message"]]
    assert probes, "the DoFn's warnings did not reach the server log"
    assert all(l["job"] and l["worker"].startswith(l["job"]) for l in probes), probes[:2]
    staged = [l for l in lines if "stage" in l]
    assert staged and all(l.get("job") for l in staged), "no line names its stage and job"
