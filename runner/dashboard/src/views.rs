//! The JSON the dashboard page reads (docs/dashboard-api.md), built from
//! the job service's records and the engine's live figures.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use ferrobeam_engine::telemetry::{JobTelemetry, StageTelemetry};
use ferrobeam_jobs::{JobOverview, MessageView};
use ferrobeam_proto::job_api::job_message::MessageImportance;
use ferrobeam_proto::pipeline::v1::MonitoringInfo;
use serde::Serialize;

use crate::monitoring::{element_counts, user_metrics, UserMetric};

pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Serialize)]
pub struct JobList {
    pub version: &'static str,
    pub now_ms: i64,
    pub jobs: Vec<JobSummary>,
}

#[derive(Serialize)]
pub struct JobSummary {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub streaming: bool,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub duration_ms: Option<i64>,
}

impl JobSummary {
    pub fn new(job: &JobOverview, now: SystemTime) -> Self {
        let started = job.started;
        JobSummary {
            id: job.id.clone(),
            name: job.name.clone(),
            state: job.state.as_str_name(),
            streaming: job.streaming,
            created_ms: millis(job.created),
            started_ms: started.map(millis),
            finished_ms: job.finished.map(millis),
            // From the rounded ends, so that it adds up for a reader.
            duration_ms: started.map(|s| (millis(job.finished.unwrap_or(now)) - millis(s)).max(0)),
        }
    }
}

#[derive(Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub now_ms: i64,
    pub stages: Vec<StageView>,
    pub workers: Vec<WorkerView>,
    pub checkpoints: Vec<CheckpointView>,
    pub metrics: Vec<UserMetric>,
}

#[derive(Serialize)]
pub struct StageView {
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    pub transforms: Vec<String>,
    pub inputs: Vec<String>,
    pub state: &'static str,
    pub elements_in: Option<i64>,
    pub elements_out: Option<i64>,
    pub bundles: u64,
    pub bundle_ms_avg: Option<f64>,
    pub bundle_ms_max: Option<f64>,
    pub queued: Option<i64>,
    pub input_watermark_ms: Option<i64>,
    pub output_watermark_ms: Option<i64>,
}

impl StageView {
    pub fn new(stage: &StageTelemetry, counts: &HashMap<String, i64>) -> Self {
        let f = stage.figures();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        StageView {
            id: stage.id.clone(),
            name: stage.name.clone(),
            kind: stage.kind,
            transforms: stage.transforms.clone(),
            inputs: stage.inputs.clone(),
            state: f.state.name(),
            elements_in: sum_counts(&stage.input_pcollections, counts),
            elements_out: sum_counts(&stage.output_pcollections, counts),
            bundles: f.bundles,
            bundle_ms_avg: (f.bundles > 0).then(|| ms(f.busy) / f.bundles as f64),
            bundle_ms_max: (f.bundles > 0).then(|| ms(f.max_bundle)),
            queued: f.queued,
            input_watermark_ms: f.input_watermark,
            output_watermark_ms: f.output_watermark,
        }
    }
}

/// The total over `pcollections`, or `None` if nobody counted any of them
/// (a stage with no inputs, or between two native stages).
pub fn sum_counts(pcollections: &[String], counts: &HashMap<String, i64>) -> Option<i64> {
    let known: Vec<i64> = pcollections
        .iter()
        .filter_map(|pc| counts.get(pc).copied())
        .collect();
    (!known.is_empty()).then(|| known.iter().sum())
}

#[derive(Serialize)]
pub struct WorkerView {
    pub id: String,
    pub environment: String,
    pub pid: Option<u32>,
    /// The worker pool (`host:port`) it runs on, if any.
    pub pool: Option<String>,
    pub state: &'static str,
    pub restarts: u32,
    pub bundles: u64,
}

#[derive(Serialize)]
pub struct CheckpointView {
    pub id: u64,
    pub kind: &'static str,
    pub started_ms: i64,
    pub duration_ms: f64,
    pub bytes: u64,
    pub ok: bool,
    pub error: Option<String>,
}

impl JobDetail {
    pub fn new(
        job: &JobOverview,
        telemetry: Option<&JobTelemetry>,
        infos: &[MonitoringInfo],
        now: SystemTime,
    ) -> Self {
        let counts = element_counts(infos);
        let stages = telemetry.map_or_else(Vec::new, |t| {
            t.stages()
                .iter()
                .map(|s| StageView::new(s, &counts))
                .collect()
        });
        let workers = telemetry.map_or_else(Vec::new, |t| {
            t.workers()
                .into_iter()
                .map(|w| WorkerView {
                    id: w.id,
                    environment: w.environment,
                    pid: w.pid,
                    pool: w.pool,
                    state: w.state,
                    restarts: w.restarts,
                    bundles: w.bundles,
                })
                .collect()
        });
        let checkpoints = telemetry.map_or_else(Vec::new, |t| {
            t.checkpoints()
                .into_iter()
                .map(|c| CheckpointView {
                    id: c.id,
                    kind: if c.savepoint {
                        "savepoint"
                    } else {
                        "checkpoint"
                    },
                    started_ms: millis(c.started),
                    duration_ms: c.duration.as_secs_f64() * 1000.0,
                    bytes: c.bytes,
                    ok: c.error.is_none(),
                    error: c.error,
                })
                .collect()
        });
        JobDetail {
            summary: JobSummary::new(job, now),
            now_ms: millis(now),
            stages,
            workers,
            checkpoints,
            metrics: user_metrics(infos),
        }
    }
}

#[derive(Serialize)]
pub struct Messages {
    pub messages: Vec<Message>,
    pub next: u64,
}

#[derive(Serialize)]
pub struct Message {
    pub seq: u64,
    pub time_ms: Option<i64>,
    pub importance: &'static str,
    pub text: String,
}

impl From<MessageView> for Message {
    fn from(m: MessageView) -> Self {
        Message {
            seq: m.seq,
            time_ms: m.time.map(millis),
            importance: match m.importance {
                MessageImportance::JobMessageDebug => "DEBUG",
                MessageImportance::JobMessageDetailed => "DETAILED",
                MessageImportance::JobMessageWarning => "WARNING",
                MessageImportance::JobMessageError => "ERROR",
                _ => "BASIC",
            },
            text: m.text,
        }
    }
}
