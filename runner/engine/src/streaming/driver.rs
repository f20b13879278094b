//! Running a plan in streaming mode, as a sequence of epochs.
//!
//! An epoch takes what the sources have (one event of each TestStream, the
//! Impulse's element), then runs every stage once, in the plan's
//! producers-first order: a stage first takes the data its inputs produced
//! in this epoch, then the time they reached (their output watermarks and
//! processing time), which fires panes, timers and window expiry.  So by
//! the end of an epoch everything the sources gave has been processed as far
//! as time allows, every watermark is exact (no data is in flight behind
//! it), and TestStream's "process each event to completion" semantics hold.
//!
//! Why epochs and not operators connected by queues: a consistent cut comes
//! for free between two epochs (nothing in flight), which is what
//! checkpoints need (issue 5); under load epochs simply grow, which batches
//! work for the Python workers; and a sparse input gives small epochs, so
//! latency stays a few bundle round trips.
//!
//! Unbounded sources are splittable DoFns that checkpoint themselves
//! (`defer_remainder`): the work they hand back waits in its stage until
//! the time it asked for, holding the stage's output watermark at the
//! DoFn's watermark estimate.  When an epoch changes nothing, the loop
//! sleeps until the next thing time can bring: deferred work falling due,
//! a processing-time timer or trigger, a source turning idle, or a drain.
//!
//! A main-input element waits until its window of every side input is
//! complete (see `side_inputs.rs`); triggered side inputs are refused at
//! Prepare.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrobeam_coders::{MAX_TIMESTAMP_MILLIS, MIN_TIMESTAMP_MILLIS};
use ferrobeam_graph::{PortRef, Stage, StageKind};
use ferrobeam_proto::pipeline::v1::test_stream_payload::event::Event;
use ferrobeam_proto::pipeline::v1::Components;

use super::gbk::StreamingGroupByKey;
use super::gbk_values::ValueStore;
use super::kafka::{align_reads, KafkaRead, KafkaWrite};
use super::side_inputs::{release, SideInputBuffer};
use ferrobeam_state::checkpoint::SnapshotKind;
use ferrobeam_state::codec::{Reader, Writer};
use ferrobeam_state::StateError;
use tracing::Instrument;

use crate::durable::{transform_names, Durable, RuntimeEntry, SavepointRequest};
use crate::job::{JobSpec, Level};
use crate::metrics::{JobMetrics, StageScope};
use crate::pool::WorkerPool;
use crate::sdk_stage::{Residual, SdkStageRun, STREAMING_CHECKPOINT_AFTER};
use crate::sinks::lines::LineSink;
use crate::state::UserState;
use crate::telemetry::CheckpointRecord;
use crate::test_stream::EventEncoder;
use crate::timers::TimerStore;
use crate::wire::WireFormat;
use crate::{EngineConfig, EngineError};

/// Processing time: the wall clock, or TestStream's own clock, which starts
/// at 0 and only moves with its processing-time events.
struct ProcessingClock {
    test_time: Option<i64>,
}

impl ProcessingClock {
    fn now(&self) -> i64 {
        self.test_time.unwrap_or_else(wall_millis)
    }

    /// Whether processing time is the wall clock (no TestStream drives it).
    fn is_wall(&self) -> bool {
        self.test_time.is_none()
    }

    /// When the wall clock reaches processing time `millis`.
    fn instant_of(&self, millis: i64) -> Option<Instant> {
        if !self.is_wall() {
            return None;
        }
        let ahead = millis.saturating_sub(wall_millis()).max(0) as u64;
        Some(Instant::now() + Duration::from_millis(ahead))
    }

    fn advance(&mut self, millis: i64) {
        let now = self.now();
        self.test_time = Some(now.saturating_add(millis));
    }

    /// The end of a bounded job: every processing-time timer is due.
    fn finish(&mut self) {
        self.test_time = Some(MAX_TIMESTAMP_MILLIS);
    }
}

fn wall_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a stage keeps between epochs.
enum Runtime {
    Impulse {
        fired: bool,
    },
    TestStream {
        encoder: EventEncoder,
        events: VecDeque<Event>,
        /// Per output (in the stage's output order).
        watermarks: Vec<i64>,
        tags: Vec<String>,
    },
    /// Flatten and Identity: data through, watermark = minimum of the inputs.
    Pass,
    Gbk(Box<StreamingGroupByKey>),
    Sdk(Box<SdkRuntime>),
    LineSink(Box<LineSink>),
    KafkaRead(Box<KafkaRead>),
    KafkaWrite(Box<KafkaWrite>),
}

struct SdkRuntime {
    timers: TimerStore,
    /// How to take apart the main input and each side input (parsed once,
    /// not every epoch).
    input_format: Option<WireFormat>,
    side_formats: Vec<WireFormat>,
    /// Work splittable DoFns deferred, waiting to be resumed.
    deferred: Vec<Deferred>,
    /// When the stage last produced output or moved its watermark hold:
    /// deferred work that does neither for the idle timeout is idle.
    last_progress: Instant,
    /// Keyed stages: the input watermark up to which expired windows' user
    /// state has been dropped.
    collected_until: i64,
    /// While the deferred work is idle, its watermark follows the wall
    /// clock, this far behind: the wall clock minus the idle timeout (in
    /// whole seconds, so an idle job wakes once a second, not constantly).
    idle_floor: i64,
    /// A stage without a data input has run its one bundle.
    started: bool,
    /// Main-input elements waiting for their windows' side data.
    held: Vec<Bytes>,
    /// The earliest timestamp in `held`: it holds the output watermark.
    held_min_timestamp: i64,
    sides: SideInputBuffer,
}

/// Work a splittable DoFn deferred.
struct Deferred {
    element: Bytes,
    /// When the DoFn asked to be resumed.
    due: Instant,
    /// The stage's output watermark may not pass this while it waits: the
    /// DoFn's watermark estimate, else the element's timestamp (a DoFn may
    /// not output before its input's timestamp).
    hold: i64,
    /// Came from draining (already truncated once): resumed when due, like
    /// any bounded work, rather than truncated again at once.
    truncated: bool,
}

impl SdkRuntime {
    fn hold(&self) -> Result<i64, EngineError> {
        let timers = self.timers.min_hold()?.unwrap_or(MAX_TIMESTAMP_MILLIS);
        Ok(self
            .deferred
            .iter()
            .map(|d| d.hold.max(self.idle_floor))
            .fold(timers.min(self.held_min_timestamp), i64::min))
    }

    /// What the deferred work itself says about its watermark (the
    /// minimum estimate), without the idle floor: a sign of life when it
    /// moves.
    fn estimate(&self) -> i64 {
        self.deferred
            .iter()
            .map(|d| d.hold)
            .min()
            .unwrap_or(MAX_TIMESTAMP_MILLIS)
    }

    /// Deferred work that has shown no sign of life for `timeout` is a
    /// source with nothing to read: it must not hold the watermark back
    /// forever, so its watermark moves with the wall clock, `timeout` behind
    /// (as Beam's KafkaIO does for idle partitions).
    fn follow_clock_if_idle(&mut self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else { return };
        if self.deferred.is_empty() || self.last_progress.elapsed() < timeout {
            return;
        }
        let behind = wall_millis().saturating_sub(timeout.as_millis() as i64);
        self.idle_floor = self.idle_floor.max(behind.div_euclid(1000) * 1000);
    }

    /// Whether the stage holds nothing a checkpoint must keep.
    fn is_empty(&self) -> bool {
        !self.started
            && self.held.is_empty()
            && self.deferred.is_empty()
            && self.timers.is_empty()
            && self.sides.is_empty()
    }

    /// Writes what a checkpoint needs to resume the stage: timers, deferred
    /// work (with the time left until it is due), held elements, side data.
    fn save(&self, w: &mut Writer) {
        let now = Instant::now();
        w.bool(self.started)
            .i64(self.idle_floor)
            .i64(self.collected_until)
            .i64(self.held_min_timestamp)
            .len(self.held.len());
        for h in &self.held {
            w.bytes(h);
        }
        w.len(self.deferred.len());
        for d in &self.deferred {
            w.bytes(&d.element)
                .varint(d.due.saturating_duration_since(now).as_millis() as u64)
                .i64(d.hold)
                .bool(d.truncated);
        }
        self.timers.save(w);
        self.sides.save(w);
    }

    fn load(&mut self, r: &mut Reader) -> Result<(), StateError> {
        let now = Instant::now();
        self.started = r.bool()?;
        self.idle_floor = r.i64()?;
        self.collected_until = r.i64()?;
        self.held_min_timestamp = r.i64()?;
        self.held = (0..r.len()?).map(|_| r.bytes()).collect::<Result<_, _>>()?;
        for _ in 0..r.len()? {
            self.deferred.push(Deferred {
                element: r.bytes()?,
                due: now + Duration::from_millis(r.varint()?),
                hold: r.i64()?,
                truncated: r.bool()?,
            });
        }
        self.timers.load(r)?;
        self.sides.load(r)
    }

    /// Removes and returns the deferred work that is due; when draining,
    /// also what was deferred before the drain (it is truncated, not
    /// waited for).
    fn take_due(&mut self, draining: bool) -> Vec<Bytes> {
        let now = Instant::now();
        let (due, waiting) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|d| d.due <= now || (draining && !d.truncated));
        self.deferred = waiting;
        due.into_iter().map(|d: Deferred| d.element).collect()
    }
}

impl Runtime {
    /// The stage's checkpoint entry (`None`: nothing to keep).
    fn save(&self) -> Option<Bytes> {
        let mut w = Writer::new();
        match self {
            Runtime::Impulse { fired } => {
                w.bool(*fired);
            }
            Runtime::TestStream {
                events, watermarks, ..
            } => {
                w.len(events.len()).len(watermarks.len());
                for wm in watermarks {
                    w.i64(*wm);
                }
            }
            Runtime::Pass => return None,
            Runtime::Gbk(gbk) => gbk.save(&mut w),
            // A stage holding nothing needs no entry (and then a changed
            // pipeline that fuses it differently has nothing to miss).
            Runtime::Sdk(sdk) if sdk.is_empty() => return None,
            Runtime::Sdk(sdk) => sdk.save(&mut w),
            Runtime::LineSink(sink) => sink.save(&mut w),
            Runtime::KafkaRead(read) => read.save(&mut w),
            Runtime::KafkaWrite(write) if write.is_transactional() => write.save(&mut w),
            Runtime::KafkaWrite(_) => return None,
        }
        Some(w.finish())
    }

    /// Resumes from what [`Runtime::save`] wrote.
    fn load(&mut self, data: &Bytes, owner: &str) -> Result<(), EngineError> {
        let mut r = Reader::new(data, owner);
        match self {
            Runtime::Impulse { fired } => *fired = r.bool()?,
            Runtime::TestStream {
                events, watermarks, ..
            } => {
                let remaining = r.len()?;
                if remaining > events.len() {
                    return Err(r
                        .error("more TestStream events left than the pipeline has")
                        .into());
                }
                while events.len() > remaining {
                    events.pop_front();
                }
                for wm in watermarks.iter_mut() {
                    *wm = r.i64()?;
                }
            }
            Runtime::Pass => {}
            Runtime::Gbk(gbk) => gbk.load(&mut r)?,
            Runtime::Sdk(sdk) => sdk.load(&mut r)?,
            Runtime::LineSink(sink) => sink.load(&mut r)?,
            Runtime::KafkaRead(read) => read.load(&mut r)?,
            Runtime::KafkaWrite(write) => write.load(&mut r)?,
        }
        Ok(r.finish()?)
    }
}

/// Timers a stage fires per epoch at most: when a watermark jump makes
/// millions due at once, their output goes downstream (and into
/// checkpoints) in slices rather than all held in memory.
const TIMERS_PER_EPOCH: usize = 100_000;

/// Owner and name of the job-wide checkpoint entry (the processing clock).
const JOB_OWNER: &str = "(job)";
const STAGE_ENTRY: &str = "stage";
const CLOCK_ENTRY: &str = "clock";

/// Under whose name a stage's checkpoint entry goes.  Names must survive a
/// pipeline change that fuses another transform into the stage, so a stage
/// with timers or deferred work is owned by the transform they belong to
/// (the stateful or splittable DoFn that heads it), a native stage by its
/// transform; only other stages fall back to the stage's name.
fn owner(stage: &Stage, components: &Components) -> String {
    let head = match &stage.kind {
        StageKind::Sdk(sdk) => sdk
            .residual_target
            .as_ref()
            .or(sdk.timer_families.first().map(|f| &f.transform_id)),
        StageKind::GroupByKey { transform_id, .. }
        | StageKind::LineSink { transform_id, .. }
        | StageKind::KafkaRead { transform_id, .. }
        | StageKind::KafkaWrite { transform_id, .. } => Some(transform_id),
        _ => None,
    };
    head.and_then(|id| components.transforms.get(id))
        .map_or_else(|| stage.name.clone(), |t| t.unique_name.clone())
}

/// Every stage's checkpoint entry, and the clock's.
fn runtime_entries(
    plan: &ferrobeam_graph::Plan,
    runtimes: &[Runtime],
    clock: &ProcessingClock,
) -> Vec<RuntimeEntry> {
    let mut entries: Vec<RuntimeEntry> = plan
        .stages
        .iter()
        .zip(runtimes)
        .filter_map(|(stage, rt)| {
            Some(RuntimeEntry {
                owner: owner(stage, &plan.components),
                name: STAGE_ENTRY,
                data: rt.save()?,
            })
        })
        .collect();
    let mut w = Writer::new();
    w.bool(clock.test_time.is_some())
        .i64(clock.test_time.unwrap_or(0));
    entries.push(RuntimeEntry {
        owner: JOB_OWNER.into(),
        name: CLOCK_ENTRY,
        data: w.finish(),
    });
    entries
}

/// Puts every stage (and the clock) back where the checkpoint left it.
fn restore_runtimes(
    durable: &Durable,
    plan: &ferrobeam_graph::Plan,
    runtimes: &mut [Runtime],
    clock: &mut ProcessingClock,
) -> Result<(), EngineError> {
    for (stage, rt) in plan.stages.iter().zip(runtimes.iter_mut()) {
        let owner = owner(stage, &plan.components);
        if let Some(data) = durable.claim(&owner, STAGE_ENTRY) {
            rt.load(&data, &owner)?;
        } else if let Runtime::LineSink(sink) = rt {
            sink.recover(Vec::new())?;
        }
    }
    if let Some(data) = durable.claim(JOB_OWNER, CLOCK_ENTRY) {
        let mut r = Reader::new(&data, CLOCK_ENTRY);
        let has = r.bool()?;
        let t = r.i64()?;
        clock.test_time = has.then_some(t);
    }
    durable.finish_restore()
}

/// Takes a checkpoint; a failure is reported and the job goes on (the
/// previous checkpoint stays the one to restore from).  Returns whether it
/// completed.
fn checkpoint(
    durable: &mut Durable,
    plan: &ferrobeam_graph::Plan,
    runtimes: &mut [Runtime],
    clock: &ProcessingClock,
    job: &JobSpec,
) -> Result<bool, EngineError> {
    // Sinks close their files first: the checkpoint records them, and
    // publishes them once it is complete.
    let label = format!("{:06}", durable.next_checkpoint_id());
    let started = std::time::SystemTime::now();
    let clock_started = Instant::now();
    before_snapshot(runtimes, &label)?;
    let result = durable.checkpoint(
        runtime_entries(plan, runtimes, clock),
        &snapshot_files(runtimes),
    );
    if let Ok(Some(_)) = &result {
        after_snapshot(runtimes)?;
    }
    if let Some(record) = match &result {
        Ok(Some(m)) => Some((m.id, m.bytes, None)),
        Ok(None) => None,
        Err(e) => Some((durable.next_checkpoint_id(), 0, Some(e.to_string()))),
    } {
        job.telemetry.record_checkpoint(CheckpointRecord {
            id: record.0,
            savepoint: false,
            started,
            duration: clock_started.elapsed(),
            bytes: record.1,
            error: record.2,
        });
    }
    match result {
        Ok(Some(m)) => {
            tracing::info!(
                id = m.id,
                pause_ms = m.pause_ms,
                duration_ms = m.duration_ms,
                bytes = m.bytes,
                "checkpoint complete"
            );
            job.reporter.message(
                Level::Debug,
                format!(
                    "checkpoint {} complete: {} bytes, paused {} ms",
                    m.id, m.bytes, m.pause_ms
                ),
            );
        }
        Ok(None) => {}
        Err(e) => {
            job.reporter.message(
                Level::Warning,
                format!("checkpoint failed (the previous one is kept): {e}"),
            );
            return Ok(false);
        }
    }
    Ok(true)
}

/// Takes the savepoint a client asked for and answers it; true when the
/// job is to stop now (the job service then cancels it).
fn savepoint(
    durable: &mut Durable,
    plan: &ferrobeam_graph::Plan,
    runtimes: &mut [Runtime],
    clock: &ProcessingClock,
    job: &JobSpec,
    request: SavepointRequest,
) -> Result<bool, EngineError> {
    let label = format!("s{}", wall_millis());
    let started = std::time::SystemTime::now();
    let clock_started = Instant::now();
    before_snapshot(runtimes, &label)?;
    let result = durable.savepoint(
        &request.directory,
        runtime_entries(plan, runtimes, clock),
        &snapshot_files(runtimes),
    );
    job.telemetry.record_checkpoint(CheckpointRecord {
        id: 0,
        savepoint: true,
        started,
        duration: clock_started.elapsed(),
        bytes: result.as_ref().map_or(0, |m| m.bytes),
        error: result.as_ref().err().map(|e| e.to_string()),
    });
    let answer = match &result {
        Ok(m) => {
            after_snapshot(runtimes)?;
            job.reporter.message(
                Level::Info,
                format!(
                    "savepoint written to {} ({} bytes)",
                    request.directory.display(),
                    m.bytes
                ),
            );
            serde_json::to_string_pretty(m).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    let stop = request.stop && answer.is_ok();
    let _ = request.reply.send(answer);
    Ok(stop)
}

/// Before a checkpoint or savepoint: file sinks close their files (the
/// snapshot records them), Kafka sinks wait for every record's
/// acknowledgement (the snapshot counts them as written).
fn before_snapshot(runtimes: &mut [Runtime], label: &str) -> Result<(), EngineError> {
    for rt in runtimes.iter_mut() {
        match rt {
            Runtime::LineSink(sink) => sink.close(label)?,
            Runtime::KafkaWrite(write) => write.flush()?,
            _ => {}
        }
    }
    Ok(())
}

/// Files a snapshot taken now carries: the logs of open Kafka transactions.
fn snapshot_files(runtimes: &[Runtime]) -> Vec<std::path::PathBuf> {
    runtimes
        .iter()
        .filter_map(|rt| match rt {
            Runtime::KafkaWrite(write) => write.snapshot_file(),
            _ => None,
        })
        .collect()
}

/// Once a snapshot is complete: file sinks publish what it recorded, Kafka
/// reads commit its positions to their consumer groups (if asked to),
/// transactional Kafka writes commit the transaction it counted.
fn after_snapshot(runtimes: &mut [Runtime]) -> Result<(), EngineError> {
    for rt in runtimes.iter_mut() {
        match rt {
            Runtime::LineSink(sink) => sink.publish()?,
            Runtime::KafkaRead(read) => read.commit_offsets(),
            Runtime::KafkaWrite(write) => write.commit()?,
            _ => {}
        }
    }
    Ok(())
}

/// Without checkpoints, sinks publish their files as they go (and all of
/// them at the end), and Kafka reads commit what went downstream.
fn publish_sinks(runtimes: &mut [Runtime], all: bool) -> Result<(), EngineError> {
    for rt in runtimes.iter_mut() {
        match rt {
            Runtime::LineSink(sink) if all || sink.roll_due() => {
                sink.close(&format!("t{}", wall_millis()))?;
                sink.publish()?;
            }
            Runtime::KafkaWrite(write) if all => {
                write.flush()?;
                write.commit()?;
            }
            Runtime::KafkaWrite(write) if write.commit_due() => write.commit()?,
            Runtime::KafkaRead(read) if all || read.commit_due() => read.commit_offsets(),
            _ => {}
        }
    }
    Ok(())
}

/// What one stage did in one epoch.
struct Step {
    produced: Vec<(PortRef, Vec<Bytes>)>,
    /// Each output port's watermark after the epoch.
    watermarks: Vec<(PortRef, i64)>,
    /// The stage stopped short (timers it may fire are left): run another
    /// epoch at once.
    more: bool,
}

impl Step {
    /// A sink's step: it produces nothing and has no output watermark.
    fn sink() -> Self {
        Step {
            more: false,
            produced: Vec::new(),
            watermarks: Vec::new(),
        }
    }
}

pub(crate) async fn run(
    config: &EngineConfig,
    job: &JobSpec,
    pools: &HashMap<String, WorkerPool>,
    metrics: &JobMetrics,
) -> Result<(), EngineError> {
    let plan = &job.plan;
    let scopes = StageScope::for_plan(plan);
    let opening = Instant::now();
    let mut durable = Durable::open(
        &job.durability,
        &job.job_name,
        &plan.components,
        job.work_dir.join("state"),
    )?;
    let user_state = Arc::new(UserState::new(
        durable.backend.clone(),
        durable.namespaces.clone(),
        transform_names(&plan.components),
    )?);
    // Sources with their own threads (Kafka) wake the loop when data arrives.
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut runtimes = Vec::with_capacity(plan.stages.len());
    for stage in &plan.stages {
        runtimes.push(runtime(stage, plan, &durable, &wake)?);
    }
    let has_test_stream = runtimes
        .iter()
        .any(|r| matches!(r, Runtime::TestStream { .. }));
    // TestStream's clock starts at 0, as the DirectRunner's does, so tests
    // that set processing-time timers at absolute times behave the same.
    let mut clock = ProcessingClock {
        test_time: has_test_stream.then_some(0),
    };
    if durable.restored.is_none() {
        // A fresh start: no pending sink file of an earlier run is wanted.
        for rt in runtimes.iter_mut() {
            if let Runtime::LineSink(sink) = rt {
                sink.recover(Vec::new())?;
            }
        }
    }
    if let Some(snapshot) = &durable.restored {
        restore_runtimes(&durable, plan, &mut runtimes, &mut clock)?;
        job.reporter.message(
            Level::Info,
            format!(
                "restored from {} {} at {} ({} backend) in {} ms",
                match snapshot.manifest.kind {
                    SnapshotKind::Checkpoint => "checkpoint",
                    SnapshotKind::Savepoint => "savepoint",
                },
                snapshot.manifest.id,
                snapshot.dir.display(),
                snapshot.manifest.backend.name(),
                opening.elapsed().as_millis()
            ),
        );
    }
    // Transactional Kafka writes fence their predecessors, and send again
    // what a transaction lost in a crash held.
    for rt in runtimes.iter_mut() {
        if let Runtime::KafkaWrite(write) = rt {
            write.recover(|name| durable.restored_file(name))?;
        }
    }
    for stage in job.telemetry.stages() {
        stage.start();
    }
    let mut drain = job.drain.clone();
    let mut draining = false;
    let mut savepoints = job.savepoints.lock().take();
    let mut watermarks: HashMap<PortRef, i64> = HashMap::new();
    let mut quiet_epochs = 0;
    loop {
        if !draining && *drain.borrow_and_update() {
            draining = true;
            job.reporter.message(
                Level::Info,
                "draining: sources stop, deferred work is truncated, pending windows and timers fire"
                    .into(),
            );
        }
        let mut data: HashMap<PortRef, Vec<Bytes>> = HashMap::new();
        let mut progressed = false;
        for (stage, rt) in plan.stages.iter().zip(runtimes.iter_mut()) {
            let ctx = StageContext {
                stage,
                job,
                config,
                pools,
                metrics,
                scope: scopes.get(&stage.id),
                user_state: &user_state,
                watermarks: &watermarks,
                draining,
            };
            let input_wm = ctx.input_watermark();
            let had_input = stage.kind.inputs().iter().any(|p| {
                data.get(*p)
                    .is_some_and(|c| c.iter().any(|c| !c.is_empty()))
            });
            let step_started = Instant::now();
            let step = ctx
                .step(rt, &data, &mut clock)
                .instrument(crate::job::stage_span(stage))
                .await?;
            record_step(
                job.telemetry.stage(&stage.id),
                rt,
                &step,
                input_wm,
                had_input.then(|| step_started.elapsed()),
            );
            progressed |= step.more;
            for (port, chunks) in step.produced {
                if chunks.iter().any(|c| !c.is_empty()) {
                    progressed = true;
                }
                data.entry(port).or_default().extend(chunks);
            }
            for (port, wm) in step.watermarks {
                let old = watermarks.insert(port, wm).unwrap_or(MIN_TIMESTAMP_MILLIS);
                if old != wm {
                    progressed = true;
                }
            }
        }
        // Every read has reported its watermark for this epoch: pause the
        // partitions that run too far ahead of the aligned reads' minimum,
        // resume those it caught up with.
        align_reads(runtimes.iter_mut().filter_map(|rt| match rt {
            Runtime::KafkaRead(read) => Some(&mut **read),
            _ => None,
        }));
        metrics.publish();
        // Between epochs nothing is in flight: the place for a checkpoint.
        while let Some(request) = savepoints.as_mut().and_then(|rx| rx.try_recv().ok()) {
            if savepoint(&mut durable, plan, &mut runtimes, &clock, job, request)? {
                // Stopped with a savepoint: process nothing more; the job
                // service cancels the job.
                std::future::pending::<()>().await;
            }
        }
        if durable.checkpoint_due() {
            checkpoint(&mut durable, plan, &mut runtimes, &clock, job)?;
        } else if !durable.checkpointing() {
            publish_sinks(&mut runtimes, false)?;
        }
        let sources_done = runtimes.iter().all(source_done);
        let all_final = plan
            .stages
            .iter()
            .flat_map(|s| s.kind.outputs())
            .all(|p| watermarks.get(p) == Some(&MAX_TIMESTAMP_MILLIS));
        if sources_done && all_final && !progressed {
            // A last checkpoint at the end, so that a restart of a finished
            // job finds nothing left to do (and sinks commit their tail).
            if durable.checkpointing() {
                // Without it the sinks' last files stay unpublished, and a
                // restart would replay from an earlier checkpoint: the job
                // has not finished.
                if !checkpoint(&mut durable, plan, &mut runtimes, &clock, job)? {
                    return Err(EngineError::Uncommitted(
                        "the final checkpoint failed (see the warning before), so the output since \
                         the last checkpoint is not published; run the job again to resume from its \
                         last checkpoint"
                            .into(),
                    ));
                }
            } else {
                publish_sinks(&mut runtimes, true)?;
            }
            return Ok(());
        }
        if progressed {
            quiet_epochs = 0;
            continue;
        }
        if !sources_done {
            // Nothing moves until time does: sleep until the next deadline
            // (or a drain request).
            let mut wake_at = next_wake(&runtimes, &clock, job.source_idle_timeout);
            if durable.checkpointing() {
                wake_at = wake_at.min(durable.next_checkpoint_at());
            }
            let savepoint_wanted = async {
                match savepoints.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep_until(wake_at) => {}
                () = wake.notified() => {}
                _ = drain.changed(), if !draining => {}
                Some(request) = savepoint_wanted => {
                    if savepoint(&mut durable, plan, &mut runtimes, &clock, job, request)? {
                        std::future::pending::<()>().await;
                    }
                }
            }
            continue;
        }
        quiet_epochs += 1;
        // Only processing time can move anything now: the input is over,
        // so (as in batch) it jumps to the end.
        if quiet_epochs > 2 {
            return Err(EngineError::Internal(
                "the streaming job stopped making progress before its watermarks reached the end"
                    .into(),
            ));
        }
        clock.finish();
    }
}

/// Publishes a stage's figures after its step of an epoch: watermarks,
/// what waits in it, and (native stages that had input) the step's time;
/// SDK stages time their bundles themselves.
fn record_step(
    telemetry: &crate::telemetry::StageTelemetry,
    rt: &Runtime,
    step: &Step,
    input_wm: i64,
    took: Option<Duration>,
) {
    // A sink has no output watermark of its own: it is done up to its input's.
    let output_wm = step
        .watermarks
        .iter()
        .map(|(_, wm)| *wm)
        .min()
        .unwrap_or(input_wm);
    let is_source = matches!(
        rt,
        Runtime::Impulse { .. } | Runtime::TestStream { .. } | Runtime::KafkaRead(_)
    );
    telemetry.set_watermarks(if is_source { output_wm } else { input_wm }, output_wm);
    let queued = match rt {
        Runtime::Sdk(sdk) => Some(sdk.held.len() + sdk.deferred.len()),
        Runtime::Gbk(gbk) => Some(gbk.buffered_values() as usize),
        Runtime::KafkaRead(read) => Some(read.buffered() as usize),
        Runtime::KafkaWrite(write) => Some(write.in_flight()),
        Runtime::Pass | Runtime::LineSink(_) => Some(0),
        Runtime::Impulse { .. } | Runtime::TestStream { .. } => None,
    };
    if let Some(n) = queued {
        telemetry.set_queued(n);
    }
    let produced = || {
        step.produced
            .iter()
            .any(|(_, c)| c.iter().any(|c| !c.is_empty()))
    };
    match (rt, took) {
        (Runtime::Sdk(_), _) => {}
        (_, Some(took)) => telemetry.bundle(took),
        // A source's step has no input: it counts when it read something.
        (Runtime::KafkaRead(_) | Runtime::TestStream { .. } | Runtime::Impulse { .. }, None)
            if produced() =>
        {
            telemetry.bundle(Duration::ZERO)
        }
        _ => {}
    }
}

/// Below this, a wait is not left to tokio's timer: its wheel ticks once a
/// millisecond and rounds every sleep up to the next tick, which added 1-2 ms
/// to every `PeriodicImpulse` step at 5k events/s (deferred work due 0.2 ms
/// later slept ~1.5 ms). The OS sleep is accurate to tens of microseconds.
const PRECISE_SLEEP_BELOW: Duration = Duration::from_millis(3);

/// Sleeps until `wake`: short waits on a blocking-pool thread with the OS's
/// precision, long ones on tokio's timer.
async fn sleep_until(wake: Instant) {
    let left = wake.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return;
    }
    if left >= PRECISE_SLEEP_BELOW {
        return tokio::time::sleep_until(wake.into()).await;
    }
    // A failed join only means the runtime is shutting down; waking early is harmless.
    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(left)).await;
}

/// How long an idle job sleeps when nothing is scheduled: long enough not
/// to spin, short enough that a missed deadline costs little.
const MAX_IDLE_SLEEP: Duration = Duration::from_secs(1);

/// The next time something can happen without new data: deferred work
/// falling due, a processing-time timer or trigger (on the wall clock), or
/// deferred work reaching the idle timeout.
fn next_wake(
    runtimes: &[Runtime],
    clock: &ProcessingClock,
    idle_timeout: Option<Duration>,
) -> Instant {
    let mut wake = Instant::now() + MAX_IDLE_SLEEP;
    for rt in runtimes {
        match rt {
            Runtime::Sdk(sdk) => {
                for d in &sdk.deferred {
                    wake = wake.min(d.due);
                }
                match sdk.timers.next_processing_time() {
                    Ok(t) => {
                        if let Some(t) = t.and_then(|t| clock.instant_of(t)) {
                            wake = wake.min(t);
                        }
                    }
                    // The stage's next step meets the error and reports it.
                    Err(_) => wake = Instant::now(),
                }
                if let (Some(timeout), false) = (idle_timeout, sdk.deferred.is_empty()) {
                    let idle_at = sdk.last_progress + timeout;
                    if idle_at > Instant::now() {
                        wake = wake.min(idle_at);
                    }
                }
            }
            Runtime::Gbk(gbk) => {
                if let Some(t) = gbk
                    .next_processing_deadline()
                    .and_then(|t| clock.instant_of(t))
                {
                    wake = wake.min(t);
                }
            }
            Runtime::KafkaRead(read) => {
                if let Some(t) = read.next_wake() {
                    wake = wake.min(t);
                }
            }
            _ => {}
        }
    }
    wake
}

fn runtime(
    stage: &Stage,
    plan: &ferrobeam_graph::Plan,
    durable: &Durable,
    wake: &Arc<tokio::sync::Notify>,
) -> Result<Runtime, EngineError> {
    Ok(match &stage.kind {
        StageKind::KafkaRead {
            transform_id,
            urn,
            payload,
            ..
        } => Runtime::KafkaRead(Box::new(KafkaRead::for_stage(
            &plan.components,
            transform_id,
            urn,
            payload,
            wake.clone(),
        )?)),
        StageKind::KafkaWrite {
            transform_id,
            urn,
            payload,
            input,
        } => Runtime::KafkaWrite(Box::new(KafkaWrite::for_stage(
            &plan.components,
            transform_id,
            urn,
            payload,
            input,
            durable.scratch_dir()?,
        )?)),
        StageKind::Impulse { .. } => Runtime::Impulse { fired: false },
        StageKind::TestStream { payload, outputs } => Runtime::TestStream {
            encoder: EventEncoder::new(payload, outputs, &plan.components)?,
            events: payload
                .events
                .iter()
                .filter_map(|e| e.event.clone())
                .collect(),
            watermarks: vec![MIN_TIMESTAMP_MILLIS; outputs.len()],
            tags: outputs.iter().map(|(t, _)| t.clone()).collect(),
        },
        StageKind::Flatten { .. } | StageKind::Identity { .. } => Runtime::Pass,
        StageKind::GroupByKey {
            input, windowing, ..
        } => {
            // (Custom merging window functions are refused at Prepare.)
            let format = WireFormat::new(&plan.components, &input.coder_id)?;
            let values = ValueStore::for_stage(
                &durable.backend,
                durable.namespaces.of(&owner(stage, &plan.components)),
            );
            Runtime::Gbk(Box::new(StreamingGroupByKey::new(
                windowing, format, values,
            )?))
        }
        StageKind::LineSink {
            transform_id,
            input,
            directory,
        } => Runtime::LineSink(Box::new(LineSink::for_stage(
            &plan.components,
            transform_id,
            input,
            directory,
        )?)),
        StageKind::Sdk(sdk) => Runtime::Sdk(Box::new(SdkRuntime {
            timers: if sdk.timer_families.is_empty() {
                TimerStore::new(&[], &plan.components)?
            } else {
                TimerStore::for_stage(
                    &sdk.timer_families,
                    &plan.components,
                    &durable.backend,
                    durable.namespaces.of(&owner(stage, &plan.components)),
                )?
            },
            input_format: sdk
                .input
                .as_ref()
                .map(|(p, _)| WireFormat::new(&plan.components, &p.coder_id))
                .transpose()?,
            side_formats: sdk
                .side_inputs
                .iter()
                .map(|si| WireFormat::new(&plan.components, &si.port.coder_id))
                .collect::<Result<_, _>>()?,
            deferred: Vec::new(),
            last_progress: Instant::now(),
            idle_floor: MIN_TIMESTAMP_MILLIS,
            collected_until: MIN_TIMESTAMP_MILLIS,
            started: false,
            held: Vec::new(),
            held_min_timestamp: MAX_TIMESTAMP_MILLIS,
            sides: SideInputBuffer::new(sdk.side_inputs.len()),
        })),
    })
}

fn source_done(rt: &Runtime) -> bool {
    match rt {
        Runtime::Impulse { fired } => *fired,
        Runtime::TestStream { events, .. } => events.is_empty(),
        Runtime::Sdk(sdk) => sdk.deferred.is_empty(),
        Runtime::KafkaRead(read) => read.is_done(),
        _ => true,
    }
}

struct StageContext<'a> {
    stage: &'a Stage,
    job: &'a JobSpec,
    config: &'a EngineConfig,
    pools: &'a HashMap<String, WorkerPool>,
    metrics: &'a JobMetrics,
    /// Which monitoring infos count (SDK stages only).
    scope: Option<&'a StageScope>,
    user_state: &'a Arc<UserState>,
    watermarks: &'a HashMap<PortRef, i64>,
    draining: bool,
}

impl StageContext<'_> {
    fn watermark_of(&self, port: &PortRef) -> i64 {
        self.watermarks
            .get(port)
            .copied()
            .unwrap_or(MIN_TIMESTAMP_MILLIS)
    }

    /// The stage's input watermark: the minimum over what it reads.
    fn input_watermark(&self) -> i64 {
        self.stage
            .kind
            .inputs()
            .into_iter()
            .map(|p| self.watermark_of(p))
            .min()
            .unwrap_or(MAX_TIMESTAMP_MILLIS)
    }

    fn single_output(&self, produced: Vec<Bytes>, wm: i64) -> Step {
        let output = self.stage.kind.outputs()[0].clone();
        Step {
            more: false,
            produced: vec![(output.clone(), produced)],
            watermarks: vec![(output, wm)],
        }
    }

    async fn step(
        &self,
        rt: &mut Runtime,
        data: &HashMap<PortRef, Vec<Bytes>>,
        clock: &mut ProcessingClock,
    ) -> Result<Step, EngineError> {
        // What a port produced in this epoch (read by every stage that reads it).
        let take = |port: &PortRef| data.get(port).cloned().unwrap_or_default();
        let input_wm = self.input_watermark();
        match (rt, &self.stage.kind) {
            (Runtime::Impulse { fired }, _) => {
                let produced = if *fired {
                    Vec::new()
                } else {
                    *fired = true;
                    vec![crate::job::impulse_element()]
                };
                Ok(self.single_output(produced, MAX_TIMESTAMP_MILLIS))
            }
            (
                Runtime::TestStream {
                    encoder,
                    events,
                    watermarks,
                    tags,
                },
                StageKind::TestStream { outputs, .. },
            ) => {
                let mut buffers = vec![Vec::new(); outputs.len()];
                if self.draining {
                    // A drained source reads no further.
                    events.clear();
                }
                match events.pop_front() {
                    Some(Event::ElementEvent(e)) => encoder.encode(&e, &mut buffers)?,
                    Some(Event::WatermarkEvent(w)) => {
                        for (i, tag) in tags.iter().enumerate() {
                            if *tag == w.tag || tags.len() == 1 {
                                watermarks[i] = watermarks[i].max(w.new_watermark);
                            }
                        }
                    }
                    Some(Event::ProcessingTimeEvent(p)) => clock.advance(p.advance_duration),
                    None => {}
                }
                if events.is_empty() {
                    watermarks
                        .iter_mut()
                        .for_each(|w| *w = MAX_TIMESTAMP_MILLIS);
                }
                Ok(Step {
                    more: false,
                    produced: outputs
                        .iter()
                        .zip(buffers)
                        .map(|((_, p), b)| (p.clone(), vec![Bytes::from(b)]))
                        .collect(),
                    watermarks: outputs
                        .iter()
                        .zip(watermarks.iter())
                        .map(|((_, p), w)| (p.clone(), *w))
                        .collect(),
                })
            }
            (Runtime::Pass, kind) => {
                let produced = kind.inputs().into_iter().flat_map(take).collect();
                Ok(self.single_output(produced, input_wm))
            }
            (
                Runtime::Gbk(gbk),
                StageKind::GroupByKey {
                    input,
                    transform_id,
                    ..
                },
            ) => {
                let mut produced = Vec::new();
                let mut dropped = 0;
                for chunk in take(input) {
                    let fired = gbk.add(&chunk)?;
                    dropped += fired.dropped_late;
                    produced.extend(fired.chunks);
                }
                produced.extend(gbk.advance(input_wm, clock.now())?.chunks);
                // What the stage holds, for anyone watching the job (the
                // Kafka skew test reads it to see alignment bound it).
                let gauge = |n: u64| n.min(i64::MAX as u64) as i64;
                self.metrics.set_gauge(
                    transform_id,
                    "gbk_buffered_values",
                    gauge(gbk.buffered_values()),
                );
                self.metrics.set_gauge(
                    transform_id,
                    "gbk_buffered_values_peak",
                    gauge(gbk.peak_buffered_values()),
                );
                if dropped > 0 {
                    self.job.reporter.message(
                        Level::Debug,
                        format!("{}: dropped {dropped} late element(s)", self.stage.name),
                    );
                }
                Ok(self.single_output(produced, gbk.output_watermark()))
            }
            (Runtime::LineSink(sink), StageKind::LineSink { input, .. }) => {
                for chunk in take(input) {
                    sink.write(&chunk)?;
                }
                Ok(Step::sink())
            }
            (Runtime::KafkaRead(read), kind) => {
                let (chunk, watermark, more) = read.step(self.draining)?;
                if let (true, StageKind::KafkaRead { transform_id, .. }) = (read.is_aligned(), kind)
                {
                    // As the end of the previous epoch left them.
                    self.metrics.set_gauge(
                        transform_id,
                        "kafka_paused_partitions",
                        read.paused_partitions() as i64,
                    );
                }
                let mut step = self.single_output(vec![chunk], watermark);
                step.more = more;
                Ok(step)
            }
            (Runtime::KafkaWrite(write), StageKind::KafkaWrite { input, .. }) => {
                for chunk in take(input) {
                    write.write(&chunk)?;
                }
                Ok(Step::sink())
            }
            (Runtime::Sdk(sdk_rt), StageKind::Sdk(sdk)) => {
                self.step_sdk(sdk_rt, sdk, &take, input_wm, clock.now())
                    .await
            }
            _ => Err(EngineError::Internal(format!(
                "stage {} has no streaming runtime",
                self.stage.id
            ))),
        }
    }

    async fn step_sdk(
        &self,
        rt: &mut SdkRuntime,
        sdk: &ferrobeam_graph::SdkStage,
        take: &impl Fn(&PortRef) -> Vec<Bytes>,
        input_wm: i64,
        now: i64,
    ) -> Result<Step, EngineError> {
        for (i, si) in sdk.side_inputs.iter().enumerate() {
            rt.sides.add(i, take(&si.port));
        }
        let (side_inputs, side_generation) =
            rt.sides.current(&sdk.side_inputs, &rt.side_formats)?;
        let side_watermark = sdk
            .side_inputs
            .iter()
            .map(|si| self.watermark_of(&si.port))
            .min()
            .unwrap_or(MAX_TIMESTAMP_MILLIS);
        let mut ready = Vec::new();
        if let (Some((port, _)), Some(format)) = (&sdk.input, &rt.input_format) {
            let mut held = std::mem::take(&mut rt.held);
            held.extend(take(port));
            let released = release(held, format, side_watermark)?;
            ready = released.ready;
            rt.held = released.waiting;
            rt.held_min_timestamp = released.waiting_min_timestamp;
        }
        let stage_id = format!("{}-{}", self.job.job_id, self.stage.id);
        // Draining: new and deferred work alike go through the variant that
        // truncates restrictions first.
        let truncate = self.draining && sdk.drain_descriptor.is_some();
        let descriptor_id = if truncate {
            crate::job::drain_descriptor_id(&stage_id)
        } else {
            stage_id
        };
        let run = SdkStageRun {
            stage_name: &self.stage.name,
            descriptor_id,
            stage: sdk,
            pool: &self.pools[&sdk.environment_id],
            bundles_per_worker: self.config.bundles_per_worker,
            side_inputs,
            side_input_generation: side_generation,
            user_state: self.user_state.clone(),
            metrics: self.metrics,
            metric_scope: self.scope.ok_or_else(|| {
                EngineError::Internal(format!("no metric scope for stage {}", self.stage.id))
            })?,
            input_format: rt.input_format.clone(),
            checkpoint_after: Some(STREAMING_CHECKPOINT_AFTER),
            components: &self.job.plan.components,
            reporter: self.job.reporter.as_ref(),
            telemetry: self.job.telemetry.stage(&self.stage.id),
        };
        let mut outputs: HashMap<PortRef, Vec<Bytes>> = HashMap::new();
        let estimate_before = rt.estimate();
        let residuals = if let Some(format) = &run.input_format {
            let mut work = ready;
            work.extend(rt.take_due(truncate));
            if work.is_empty() {
                Vec::new()
            } else {
                let residuals = run
                    .process_once(Some(work), &mut rt.timers, &mut outputs)
                    .await?;
                residuals
                    .into_iter()
                    .map(|r| defer(r, format, truncate))
                    .collect::<Result<Vec<_>, _>>()?
            }
        } else {
            if !rt.started {
                // No data input: the stage runs its one (empty) bundle once.
                rt.started = true;
                run.process(None, &mut rt.timers, &mut outputs).await?;
            }
            Vec::new()
        };
        rt.deferred.extend(residuals);
        let more = !rt.timers.is_empty()
            && run
                .fire_timers_up_to(
                    &mut rt.timers,
                    input_wm,
                    now,
                    TIMERS_PER_EPOCH,
                    &mut outputs,
                )
                .await?;
        let produced_any = outputs.values().flatten().any(|c| !c.is_empty());
        if produced_any || rt.estimate() > estimate_before {
            rt.last_progress = Instant::now();
        }
        rt.follow_clock_if_idle(self.job.source_idle_timeout);
        // What may still come through the stage is no earlier than its
        // input watermark, nor than its own pending work: deferred SDF work
        // generates elements inside the stage that a fused side-input read
        // or state access may still need.  At most once per second of event
        // time (it walks all the stage's state, timers and side data), drop
        // what belongs to windows that frontier has left behind.
        let hold = rt.hold()?;
        let frontier = input_wm.min(hold);
        if frontier != MAX_TIMESTAMP_MILLIS && frontier >= rt.collected_until.saturating_add(1000) {
            self.collect_expired(sdk, rt, frontier)?;
            rt.collected_until = frontier;
        }
        // Dropping expired timers may have let the hold move.
        let hold = rt.hold()?;
        Ok(Step {
            produced: outputs.into_iter().collect(),
            watermarks: sdk
                .outputs
                .iter()
                .map(|(p, _)| (p.clone(), input_wm.min(hold)))
                .collect(),
            more,
        })
    }

    /// Streaming jobs run forever, so what belongs to a window must go when
    /// the window does: once `frontier` (see the caller) passes the window's
    /// end plus the allowed lateness, nothing can read or write it again.  That
    /// is a keyed stage's user state and timers (a processing-time timer in
    /// an expired window is dropped, not fired, as in Beam's runners) and
    /// side data (once the side input's watermark has passed it too).
    fn collect_expired(
        &self,
        sdk: &ferrobeam_graph::SdkStage,
        rt: &mut SdkRuntime,
        frontier: i64,
    ) -> Result<(), EngineError> {
        let components = &self.job.plan.components;
        if let (Some((port, _)), Some(format), true) = (&sdk.input, &rt.input_format, sdk.keyed) {
            let lateness = allowed_lateness(components, &port.pcollection);
            let expired = |window: &[u8]| {
                format
                    .window_max_timestamp_or(window, MAX_TIMESTAMP_MILLIS)
                    .is_ok_and(|end| end.saturating_add(lateness) < frontier)
            };
            // The global window expires only at the end of time: no need to
            // walk (possibly millions of) cells to find nothing.
            let states = if is_global(components, &port.pcollection) {
                0
            } else {
                self.user_state.collect_expired(
                    sdk.descriptor.transforms.keys().map(String::as_str),
                    expired,
                )?
            };
            let timers = rt.timers.drop_expired(expired)?;
            if states + timers > 0 {
                tracing::debug!(stage = %self.stage.name, states, timers, "state and timers of expired windows dropped");
            }
        }
        if !sdk.side_inputs.is_empty() {
            let limits: Vec<(i64, i64)> = sdk
                .side_inputs
                .iter()
                .map(|si| {
                    let watermark = self.watermark_of(&si.port).min(frontier);
                    (
                        allowed_lateness(components, &si.port.pcollection),
                        watermark,
                    )
                })
                .collect();
            let formats = &rt.side_formats;
            let dropped = rt.sides.collect_expired(formats, |index, window| {
                let (lateness, watermark) = limits[index];
                let end = formats[index].window_max_timestamp_or(window, MAX_TIMESTAMP_MILLIS)?;
                Ok(end.saturating_add(lateness) < watermark)
            })?;
            if dropped > 0 {
                tracing::debug!(stage = %self.stage.name, dropped, "side data of expired windows dropped");
            }
        }
        Ok(())
    }
}

/// The windowing strategy of `pcollection`, if the pipeline has it.
fn windowing_of<'a>(
    components: &'a Components,
    pcollection: &str,
) -> Option<&'a ferrobeam_proto::pipeline::v1::WindowingStrategy> {
    let pc = components.pcollections.get(pcollection)?;
    components
        .windowing_strategies
        .get(&pc.windowing_strategy_id)
}

/// Whether `pcollection` is in the global window.
fn is_global(components: &Components, pcollection: &str) -> bool {
    windowing_of(components, pcollection)
        .and_then(|ws| ws.window_fn.as_ref())
        .is_some_and(|f| f.urn == "beam:window_fn:global_windows:v1")
}

/// The allowed lateness of `pcollection`'s windowing strategy (0 if unknown).
fn allowed_lateness(components: &Components, pcollection: &str) -> i64 {
    windowing_of(components, pcollection).map_or(0, |ws| ws.allowed_lateness.max(0))
}

/// Files a residual as deferred work, holding the watermark at the DoFn's
/// estimate, else at the element's own timestamp.
fn defer(r: Residual, format: &WireFormat, truncated: bool) -> Result<Deferred, EngineError> {
    let hold = match r.watermark {
        Some(wm) => wm,
        None => {
            let mut ts = MIN_TIMESTAMP_MILLIS;
            format.for_each(&r.element, |e| {
                ts = e.timestamp;
                Ok(())
            })?;
            ts
        }
    };
    Ok(Deferred {
        element: r.element,
        due: Instant::now() + r.delay,
        hold: hold.clamp(MIN_TIMESTAMP_MILLIS, MAX_TIMESTAMP_MILLIS),
        truncated,
    })
}
