//! What a running job is doing, as the dashboard and `/metrics` show it:
//! per-stage figures, the SDK workers and the checkpoint history.
//!
//! The engine writes these figures as it goes, with relaxed atomics and no
//! lock on the bundle path; readers take a snapshot whenever they like.
//! Element counts are not kept here: they are the SDK's per-PCollection
//! `element_count` metrics the job already merges (see [`crate::metrics`]),
//! which a reader sums over a stage's input and output PCollections, so the
//! runner never parses elements just to count them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferrobeam_graph::{Plan, StageKind};
use parking_lot::Mutex;

use crate::pool::PoolStats;

/// A watermark nobody has reported yet.
const UNKNOWN_WATERMARK: i64 = i64::MIN;
/// Checkpoints remembered per job.
const CHECKPOINT_HISTORY: usize = 100;

/// Where a stage is in its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageState {
    Pending = 0,
    Running = 1,
    Done = 2,
    /// Still running when the job failed.
    Failed = 3,
    /// Still running when the job was cancelled.
    Cancelled = 4,
}

impl StageState {
    pub fn name(self) -> &'static str {
        match self {
            StageState::Pending => "pending",
            StageState::Running => "running",
            StageState::Done => "done",
            StageState::Failed => "failed",
            StageState::Cancelled => "cancelled",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => StageState::Pending,
            1 => StageState::Running,
            2 => StageState::Done,
            3 => StageState::Failed,
            _ => StageState::Cancelled,
        }
    }
}

/// One stage of the job's operator graph and its live figures.
pub struct StageTelemetry {
    pub id: String,
    /// The unique names of the transforms it runs, joined.
    pub name: String,
    /// `sdk`, `gbk`, `flatten`, ... (see docs/dashboard-api.md).
    pub kind: &'static str,
    pub transforms: Vec<String>,
    /// Ids of the stages whose output this stage reads.
    pub inputs: Vec<String>,
    /// PCollection ids it reads (main and side inputs) and writes.
    pub input_pcollections: Vec<String>,
    pub output_pcollections: Vec<String>,
    state: AtomicU8,
    bundles: AtomicU64,
    busy_micros: AtomicU64,
    max_micros: AtomicU64,
    /// -1: not known for this kind of stage.
    queued: AtomicI64,
    input_watermark: AtomicI64,
    output_watermark: AtomicI64,
}

/// A stage's figures at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct StageFigures {
    pub state: StageState,
    pub bundles: u64,
    pub busy: Duration,
    pub max_bundle: Duration,
    pub queued: Option<i64>,
    pub input_watermark: Option<i64>,
    pub output_watermark: Option<i64>,
}

impl StageTelemetry {
    /// Marks the stage running (batch: when its turn comes; streaming: at start).
    pub fn start(&self) {
        self.state.store(StageState::Running as u8, Relaxed);
    }

    pub fn finish(&self) {
        self.state.store(StageState::Done as u8, Relaxed);
    }

    /// A bundle (native stages: a step with input) took `took`.
    pub fn bundle(&self, took: Duration) {
        let micros = took.as_micros().min(u64::MAX as u128) as u64;
        self.bundles.fetch_add(1, Relaxed);
        self.busy_micros.fetch_add(micros, Relaxed);
        self.max_micros.fetch_max(micros, Relaxed);
    }

    /// Elements waiting in the stage (the backpressure figure).
    pub fn set_queued(&self, n: usize) {
        self.queued.store(n.min(i64::MAX as usize) as i64, Relaxed);
    }

    pub fn set_watermarks(&self, input: i64, output: i64) {
        self.input_watermark.store(input, Relaxed);
        self.output_watermark.store(output, Relaxed);
    }

    pub fn figures(&self) -> StageFigures {
        let known = |v: i64| (v != UNKNOWN_WATERMARK).then_some(v);
        let queued = self.queued.load(Relaxed);
        StageFigures {
            state: StageState::from_u8(self.state.load(Relaxed)),
            bundles: self.bundles.load(Relaxed),
            busy: Duration::from_micros(self.busy_micros.load(Relaxed)),
            max_bundle: Duration::from_micros(self.max_micros.load(Relaxed)),
            queued: (queued >= 0).then_some(queued),
            input_watermark: known(self.input_watermark.load(Relaxed)),
            output_watermark: known(self.output_watermark.load(Relaxed)),
        }
    }
}

/// One checkpoint or savepoint attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointRecord {
    /// The checkpoint's number (savepoints: 0).
    pub id: u64,
    pub savepoint: bool,
    pub started: SystemTime,
    pub duration: Duration,
    pub bytes: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The live view of one job.
pub struct JobTelemetry {
    stages: Vec<StageTelemetry>,
    by_id: HashMap<String, usize>,
    pools: Mutex<Vec<Arc<PoolStats>>>,
    checkpoints: Mutex<VecDeque<CheckpointRecord>>,
}

impl JobTelemetry {
    /// The graph of `plan`'s stages, every stage pending.
    pub fn new(plan: &Plan) -> Arc<Self> {
        let mut producer: HashMap<&str, &str> = HashMap::new();
        for stage in &plan.stages {
            for port in stage.kind.outputs() {
                producer.insert(&port.pcollection, &stage.id);
            }
        }
        let stages: Vec<StageTelemetry> = plan
            .stages
            .iter()
            .map(|stage| {
                let reads = stage.kind.inputs();
                let mut inputs: Vec<String> = reads
                    .iter()
                    .filter_map(|p| producer.get(p.pcollection.as_str()))
                    .map(|id| id.to_string())
                    .collect();
                inputs.dedup();
                let streaming_source = plan.streaming && reads.is_empty();
                StageTelemetry {
                    id: stage.id.clone(),
                    name: stage.name.clone(),
                    kind: kind_name(&stage.kind),
                    transforms: stage.transforms.clone(),
                    inputs,
                    input_pcollections: reads.iter().map(|p| p.pcollection.clone()).collect(),
                    output_pcollections: stage
                        .kind
                        .outputs()
                        .iter()
                        .map(|p| p.pcollection.clone())
                        .collect(),
                    state: AtomicU8::new(StageState::Pending as u8),
                    bundles: AtomicU64::new(0),
                    busy_micros: AtomicU64::new(0),
                    max_micros: AtomicU64::new(0),
                    queued: AtomicI64::new(if streaming_source { 0 } else { -1 }),
                    input_watermark: AtomicI64::new(UNKNOWN_WATERMARK),
                    output_watermark: AtomicI64::new(UNKNOWN_WATERMARK),
                }
            })
            .collect();
        let by_id = stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        Arc::new(JobTelemetry {
            stages,
            by_id,
            pools: Mutex::default(),
            checkpoints: Mutex::default(),
        })
    }

    /// The stages in execution order (producers first).
    pub fn stages(&self) -> &[StageTelemetry] {
        &self.stages
    }

    /// The stage with id `id`.  Panics on an id not of this job's plan: the
    /// engine only asks for its own stages.
    pub fn stage(&self, id: &str) -> &StageTelemetry {
        &self.stages[self.by_id[id]]
    }

    pub(crate) fn add_pool(&self, pool: Arc<PoolStats>) {
        self.pools.lock().push(pool);
    }

    /// Every worker of the job's pools.
    pub fn workers(&self) -> Vec<crate::pool::WorkerFigures> {
        self.pools.lock().iter().flat_map(|p| p.workers()).collect()
    }

    pub(crate) fn record_checkpoint(&self, record: CheckpointRecord) {
        let mut history = self.checkpoints.lock();
        if history.len() == CHECKPOINT_HISTORY {
            history.pop_front();
        }
        history.push_back(record);
    }

    /// The checkpoint history, oldest first.
    pub fn checkpoints(&self) -> Vec<CheckpointRecord> {
        self.checkpoints.lock().iter().cloned().collect()
    }

    /// Marks the stages as the job ended: all done if it succeeded;
    /// otherwise those still running failed (or were cancelled), and
    /// those that never started stay pending.
    pub(crate) fn finish_all(&self, outcome: &Result<(), crate::EngineError>) {
        let ended = match outcome {
            Ok(()) => {
                for stage in &self.stages {
                    stage.finish();
                }
                return;
            }
            Err(crate::EngineError::Cancelled) => StageState::Cancelled,
            Err(_) => StageState::Failed,
        };
        for stage in &self.stages {
            let _ = stage.state.compare_exchange(
                StageState::Running as u8,
                ended as u8,
                Relaxed,
                Relaxed,
            );
        }
    }
}

fn kind_name(kind: &StageKind) -> &'static str {
    match kind {
        StageKind::Impulse { .. } => "impulse",
        StageKind::TestStream { .. } => "test_stream",
        StageKind::GroupByKey { .. } => "gbk",
        StageKind::Flatten { .. } => "flatten",
        StageKind::Identity { .. } => "identity",
        StageKind::LineSink { .. } => "file_write",
        StageKind::KafkaRead { .. } => "kafka_read",
        StageKind::KafkaWrite { .. } => "kafka_write",
        StageKind::Sdk(_) => "sdk",
    }
}

/// Telemetry of every job the engine runs, by job id, for the dashboard.
#[derive(Default)]
pub struct TelemetryHub {
    jobs: Mutex<HashMap<String, Arc<JobTelemetry>>>,
}

impl TelemetryHub {
    pub fn insert(&self, job_id: &str, telemetry: Arc<JobTelemetry>) {
        self.jobs.lock().insert(job_id.to_owned(), telemetry);
    }

    pub fn get(&self, job_id: &str) -> Option<Arc<JobTelemetry>> {
        self.jobs.lock().get(job_id).cloned()
    }

    /// Forgets every job not in `known` (the job service evicted them).
    pub fn retain(&self, known: &dyn Fn(&str) -> bool) {
        self.jobs.lock().retain(|id, _| known(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(ids: &[&str]) -> Plan {
        Plan {
            components: Default::default(),
            stages: ids
                .iter()
                .map(|id| ferrobeam_graph::Stage {
                    id: (*id).into(),
                    name: "Impulse".into(),
                    transforms: vec!["Impulse".into()],
                    kind: StageKind::Impulse {
                        output: ferrobeam_graph::PortRef {
                            pcollection: format!("{id}-out"),
                            coder_id: "c".into(),
                        },
                    },
                })
                .collect(),
            environments: Default::default(),
            notes: Vec::new(),
            streaming: false,
        }
    }

    #[test]
    fn how_the_job_ended_decides_its_stages_last_state() {
        let states = |outcome: Result<(), crate::EngineError>| {
            let t = JobTelemetry::new(&plan_of(&["done", "running", "never"]));
            t.stage("done").start();
            t.stage("done").finish();
            t.stage("running").start();
            t.finish_all(&outcome);
            ["done", "running", "never"].map(|id| t.stage(id).figures().state.name())
        };
        assert_eq!(states(Ok(())), ["done", "done", "done"]);
        assert_eq!(
            states(Err(crate::EngineError::UserCode("boom".into()))),
            ["done", "failed", "pending"]
        );
        assert_eq!(
            states(Err(crate::EngineError::Cancelled)),
            ["done", "cancelled", "pending"]
        );
    }

    #[test]
    fn bundles_add_up_and_the_longest_is_kept() {
        let plan = plan_of(&["s0"]);
        let t = JobTelemetry::new(&plan);
        let s = t.stage("s0");
        assert_eq!(s.figures().state, StageState::Pending);
        assert_eq!(s.figures().queued, None, "a batch source has no queue");
        s.start();
        s.bundle(Duration::from_millis(3));
        s.bundle(Duration::from_millis(7));
        s.set_watermarks(5, 4);
        let f = s.figures();
        assert_eq!(
            (f.state, f.bundles, f.busy, f.max_bundle),
            (
                StageState::Running,
                2,
                Duration::from_millis(10),
                Duration::from_millis(7)
            )
        );
        assert_eq!((f.input_watermark, f.output_watermark), (Some(5), Some(4)));
        assert_eq!(s.output_pcollections, vec!["s0-out".to_string()]);
    }
}
