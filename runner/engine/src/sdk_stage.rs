//! Running one fused SDK stage: cut bundles, keep every worker busy, retry
//! bundles whose worker died, feed residuals back until none are left.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrobeam_fnapi::{BundleError, BundleInput, BundleRequest, TimerStream, Worker};
use ferrobeam_graph::{PortRef, SdkStage};
use ferrobeam_proto::fn_api::process_bundle_request::CacheToken;
use ferrobeam_proto::fn_api::{instruction_request, FinalizeBundleRequest};
use ferrobeam_proto::pipeline::v1::Components;
use futures::future::try_join_all;
use parking_lot::Mutex;

use crate::job::{Level, Reporter};
use crate::metrics::{JobMetrics, StageScope};
use crate::partition::{
    key_partition, partition_slot, side_input_tokens, user_state_token, CacheTokens,
};
use crate::pool::WorkerPool;
use crate::state::{BundleState, SideInputs, UserState};
use crate::timers::{DueTimer, TimerStore};
use crate::wire::WireFormat;
use crate::EngineError;

/// How often one bundle may lose its worker before the job fails.
const MAX_ATTEMPTS: u32 = 4;
const MIN_BUNDLE_BYTES: usize = 64 << 10;
const MAX_BUNDLE_BYTES: usize = 8 << 20;

struct Work {
    chunks: Vec<Bytes>,
    attempts: u32,
    /// Every chunk is exactly one element, so the bundle can be split at
    /// element indices (the SDK's channel splits) and retried in part.
    elementwise: bool,
    /// Keyed stages: the worker slot that owns this partition's keys.
    owner: Option<usize>,
    /// Timers to fire, per timer family of the stage (empty otherwise).
    timers: Vec<Vec<Bytes>>,
    /// Position in the round: outputs are committed in this order, so a
    /// stage keeps its input's element order (panes of a window stay in
    /// pane order, for instance) however bundles interleave on workers.
    seq: usize,
}

impl Work {
    fn new(chunks: Vec<Bytes>, elementwise: bool, owner: Option<usize>) -> Self {
        Work {
            chunks,
            attempts: 0,
            elementwise,
            owner,
            timers: Vec::new(),
            seq: 0,
        }
    }
}

/// A running bundle the splitter may split.
struct InFlight {
    worker: Arc<Worker>,
    started: Instant,
    elements: Vec<Bytes>,
    splits: u32,
    /// Asked to checkpoint already (streaming).
    checkpointed: bool,
    /// What a retry must process after a split: the primary part only.
    retry: Option<Vec<Bytes>>,
}

impl InFlight {
    /// After a split, a retry of the bundle must redo only its primary part.
    fn keep_primary_only(
        &mut self,
        first_residual: usize,
        last_primary: i64,
        split: &ferrobeam_proto::fn_api::ProcessBundleSplitResponse,
    ) {
        let keep = ((last_primary + 1).max(0) as usize).min(self.elements.len());
        let mut primary: Vec<Bytes> = self.elements[..keep].to_vec();
        primary.extend(split.primary_roots.iter().map(|p| p.element.clone()));
        self.elements.truncate(first_residual);
        self.retry = Some(primary);
    }
}

/// Shared by the lanes and the splitter of one round.
struct Round {
    queue: Mutex<VecDeque<Work>>,
    /// The seq of the next bundle split off a running one.
    next_seq: AtomicUsize,
    inflight: Mutex<HashMap<String, InFlight>>,
    /// Work was added, the queue drained, or a bundle finished.
    changed: tokio::sync::Notify,
    /// Lanes waiting for work while bundles run.
    idle: AtomicUsize,
    /// Bundles taken from the queue and not finished (changed under the
    /// queue's lock when taken, so "queue empty and none running" is exact).
    running: AtomicUsize,
    collected: Mutex<Collected>,
}

/// A bundle runs this long before the splitter considers splitting it.
const SPLIT_AFTER: Duration = Duration::from_millis(300);
/// How often the splitter looks for idle lanes.
const SPLIT_POLL: Duration = Duration::from_millis(50);
/// At most this many splits per bundle.
const MAX_SPLITS: u32 = 8;
/// How long a streaming splittable-DoFn bundle may run before the runner
/// asks it to checkpoint (the DirectRunner's SDF invoker uses 1 s too).
pub const STREAMING_CHECKPOINT_AFTER: Duration = Duration::from_secs(1);

pub struct SdkStageRun<'a> {
    pub stage_name: &'a str,
    pub descriptor_id: String,
    pub stage: &'a SdkStage,
    pub pool: &'a WorkerPool,
    pub bundles_per_worker: usize,
    pub side_inputs: Arc<SideInputs>,
    /// Changes whenever `side_inputs` does (streaming side inputs grow), so
    /// workers never serve cached side data from an earlier generation.
    pub side_input_generation: u64,
    pub user_state: Arc<UserState>,
    pub metrics: &'a JobMetrics,
    /// Which of this stage's monitoring infos count towards the job's.
    pub metric_scope: &'a StageScope,
    pub input_format: Option<WireFormat>,
    /// Streaming: a splittable-DoFn bundle running this long is asked to
    /// checkpoint (split at its current position), and what it gives up
    /// comes back as deferred work.  An unbounded DoFn that never defers by
    /// itself would otherwise hold its epoch, and its output, forever.
    pub checkpoint_after: Option<Duration>,
    pub components: &'a Components,
    pub reporter: &'a dyn Reporter,
    /// The stage's live figures (bundle count and durations).
    pub telemetry: &'a crate::telemetry::StageTelemetry,
}

/// Work a splittable DoFn handed back when it checkpointed itself
/// (`defer_remainder`): the element to resume, when, and how far the
/// DoFn's output watermark may advance meanwhile.
#[derive(Clone, Debug)]
pub struct Residual {
    pub element: Bytes,
    /// How long the SDK asked the runner to wait before resuming it.
    pub delay: Duration,
    /// The SDF's watermark estimate (the minimum over its outputs); `None`
    /// when it keeps no estimate.
    pub watermark: Option<i64>,
}

impl Residual {
    fn from_proto(r: &ferrobeam_proto::fn_api::DelayedBundleApplication) -> Option<Self> {
        let app = r.application.as_ref()?;
        // A negative delay (the requested time has passed) means "now".
        let delay = match r.requested_time_delay {
            Some(d) if d.seconds >= 0 && d.nanos >= 0 => {
                Duration::new(d.seconds as u64, d.nanos as u32)
            }
            _ => Duration::ZERO,
        };
        let watermark = app
            .output_watermarks
            .values()
            .map(|t| {
                t.seconds
                    .saturating_mul(1000)
                    .saturating_add(i64::from(t.nanos) / 1_000_000)
            })
            .min();
        Some(Residual {
            element: app.element.clone(),
            delay,
            watermark,
        })
    }
}

#[derive(Default)]
struct Collected {
    /// (bundle seq, port, chunks), in commit order; sorted by seq on use.
    outputs: Vec<(usize, PortRef, Vec<Bytes>)>,
    residuals: Vec<Residual>,
    /// Timer sets and clears, per family, in bundle commit order.
    timers: Vec<(usize, Vec<Bytes>)>,
}

impl SdkStageRun<'_> {
    fn lanes(&self) -> usize {
        self.pool.size() * self.lanes_per_worker()
    }

    /// Bundles in flight per worker.  Keyed (stateful) stages used to run
    /// more, to hide State API round trips; with the state socket and
    /// known-empty state those are few, and one bundle thread per Python
    /// worker measured faster (no GIL hand-offs between bundle threads).
    fn lanes_per_worker(&self) -> usize {
        self.bundles_per_worker.max(1)
    }

    pub async fn run(
        &self,
        input: Option<Vec<Bytes>>,
    ) -> Result<HashMap<PortRef, Vec<Bytes>>, EngineError> {
        let mut outputs: HashMap<PortRef, Vec<Bytes>> = HashMap::new();
        let mut timers = self.timer_store()?;
        self.process(input, &mut timers, &mut outputs).await?;
        // The input is exhausted: in batch, event time and processing time
        // both jump to +infinity, so every timer fires, earliest first.
        self.fire_timers(&mut timers, i64::MAX, i64::MAX, &mut outputs)
            .await?;
        Ok(outputs)
    }

    /// An empty store for the stage's timer families.
    pub fn timer_store(&self) -> Result<TimerStore, EngineError> {
        TimerStore::new(&self.stage.timer_families, self.components)
    }

    /// Runs `input` (all of it, residuals included) through the stage;
    /// timers the bundles set go to `timers`.  `None`: a stage with no data
    /// input, which runs exactly one (empty) bundle.
    pub async fn process(
        &self,
        input: Option<Vec<Bytes>>,
        timers: &mut TimerStore,
        outputs: &mut HashMap<PortRef, Vec<Bytes>>,
    ) -> Result<(), EngineError> {
        let mut residuals = self.process_once(input, timers, outputs).await?;
        while !residuals.is_empty() {
            // A bounded job resumes checkpointed work when it asked to be:
            // nothing else is waiting for this stage.
            let wait = residuals.iter().map(|r| r.delay).min().unwrap_or_default();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let elements = residuals.into_iter().map(|r| r.element).collect();
            residuals = self.process_once(Some(elements), timers, outputs).await?;
        }
        Ok(())
    }

    /// One pass of `input` through the stage; returns the work splittable
    /// DoFns deferred (streaming resumes it when it is due).
    pub async fn process_once(
        &self,
        input: Option<Vec<Bytes>>,
        timers: &mut TimerStore,
        outputs: &mut HashMap<PortRef, Vec<Bytes>>,
    ) -> Result<Vec<Residual>, EngineError> {
        let pending = match input {
            Some(chunks) => self.cut(chunks)?,
            None => vec![Work::new(Vec::new(), false, None)],
        };
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let collected = self.round(pending).await?;
        self.absorb(collected, outputs, timers)
    }

    /// Fires every timer that `watermark` and `processing_time` have
    /// reached, including those firing sets, earliest first.
    pub async fn fire_timers(
        &self,
        timers: &mut TimerStore,
        watermark: i64,
        processing_time: i64,
        outputs: &mut HashMap<PortRef, Vec<Bytes>>,
    ) -> Result<(), EngineError> {
        self.fire_timers_up_to(timers, watermark, processing_time, usize::MAX, outputs)
            .await
            .map(|_| ())
    }

    /// [`Self::fire_timers`], stopping once `limit` timers have fired (a
    /// streaming epoch passes its output on rather than hold millions of
    /// firings' output); returns whether reached timers are left.
    pub async fn fire_timers_up_to(
        &self,
        timers: &mut TimerStore,
        watermark: i64,
        processing_time: i64,
        limit: usize,
        outputs: &mut HashMap<PortRef, Vec<Bytes>>,
    ) -> Result<bool, EngineError> {
        let mut fired = 0;
        loop {
            if fired >= limit {
                return Ok(true);
            }
            let due = timers.next_due_until(watermark, processing_time)?;
            if due.is_empty() {
                return Ok(false);
            }
            fired += due.len();
            let bundles = self.partition_timers(due);
            let collected = self.round(bundles).await?;
            self.absorb(collected, outputs, timers)?;
        }
    }

    /// Takes in a round's results; returns its residuals.
    fn absorb(
        &self,
        collected: Collected,
        outputs: &mut HashMap<PortRef, Vec<Bytes>>,
        timers: &mut TimerStore,
    ) -> Result<Vec<Residual>, EngineError> {
        let mut committed = collected.outputs;
        committed.sort_by_key(|(seq, _, _)| *seq);
        for (_, port, chunks) in committed {
            outputs.entry(port).or_default().extend(chunks);
        }
        for (family, chunks) in &collected.timers {
            timers.apply(*family, chunks)?;
        }
        Ok(collected.residuals)
    }

    /// Due timers, one bundle per key partition, owned by the same worker
    /// slot as the partition's elements (so caches and ownership agree).
    fn partition_timers(&self, due: Vec<DueTimer>) -> Vec<Work> {
        let n = self.partitions();
        let workers = self.pool.size();
        let families = self.stage.timer_families.len();
        let mut parts: Vec<Work> = (0..n)
            .map(|p| Work {
                timers: vec![Vec::new(); families],
                ..Work::new(Vec::new(), false, Some(partition_slot(p, workers)))
            })
            .collect();
        for t in due {
            parts[key_partition(&t.key, n)].timers[t.family].push(t.encoded);
        }
        parts
            .into_iter()
            .filter(|w| w.timers.iter().any(|t| !t.is_empty()))
            .collect()
    }

    /// How many key partitions a keyed stage has: one per lane.  Fixed for
    /// the stage, so [`key_partition`] puts a key in the same partition (and
    /// so on the same worker slot) in every round.
    pub fn partitions(&self) -> usize {
        self.lanes()
    }

    /// Groups chunks into bundles: about one per lane (times two, so a slow
    /// bundle does not leave the others idle), or one per key partition.
    fn cut(&self, chunks: Vec<Bytes>) -> Result<Vec<Work>, EngineError> {
        let total: usize = chunks.iter().map(Bytes::len).sum();
        if total == 0 {
            return Ok(Vec::new());
        }
        let format = self
            .input_format
            .as_ref()
            .ok_or_else(|| EngineError::Internal("stage input without format".into()))?;
        if self.stage.keyed {
            let workers = self.pool.size();
            let parts = self.partition_by_key(&chunks, format)?;
            return Ok(parts
                .into_iter()
                .map(|(p, b)| Work::new(b, false, Some(partition_slot(p, workers))))
                .collect());
        }
        if self.stage.residual_target.is_some() || total < self.lanes() * MIN_BUNDLE_BYTES {
            return self.spread_elements(&chunks, format);
        }
        let target = (total / (self.lanes() * 2)).clamp(MIN_BUNDLE_BYTES, MAX_BUNDLE_BYTES);
        let mut bundles = Vec::new();
        let mut current = Vec::new();
        let mut size = 0;
        for chunk in chunks {
            let pieces = if chunk.len() > target * 2 {
                format.split(&chunk, target)?
            } else {
                vec![chunk]
            };
            for piece in pieces {
                size += piece.len();
                current.push(piece);
                if size >= target {
                    bundles.push(std::mem::take(&mut current));
                    size = 0;
                }
            }
        }
        if !current.is_empty() {
            bundles.push(current);
        }
        Ok(bundles
            .into_iter()
            .map(|b| Work::new(b, false, None))
            .collect())
    }

    /// Small inputs, and the restrictions of a splittable DoFn (each may be
    /// a lot of work): deal elements out so every lane gets some.
    fn spread_elements(
        &self,
        chunks: &[Bytes],
        format: &WireFormat,
    ) -> Result<Vec<Work>, EngineError> {
        let mut elements = Vec::new();
        for chunk in chunks {
            format.for_each(chunk, |e| {
                elements.push(chunk.slice(e.range));
                Ok(())
            })?;
        }
        let n = if self.stage.residual_target.is_some() {
            elements.len()
        } else {
            self.lanes().min(elements.len())
        };
        // Contiguous runs, so concatenating the bundles' outputs in order
        // keeps the input's order.
        let per = elements.len().div_ceil(n.max(1)).max(1);
        Ok(elements
            .chunks(per)
            .map(<[Bytes]>::to_vec)
            .map(|b| Work::new(b, true, None))
            .collect())
    }

    /// Stateful stages: every key's elements go to exactly one bundle, so
    /// no two bundles touch the same key's state concurrently.  Returns the
    /// non-empty partitions with their index.
    fn partition_by_key(
        &self,
        chunks: &[Bytes],
        format: &WireFormat,
    ) -> Result<Vec<(usize, Vec<Bytes>)>, EngineError> {
        let n = self.partitions();
        let mut parts: Vec<Vec<(i64, Bytes)>> = vec![Vec::new(); n];
        for chunk in chunks {
            format.for_each(chunk, |e| {
                let key_end = format.key_end(chunk, e.value.start)?;
                parts[key_partition(&chunk[e.value.start..key_end], n)]
                    .push((e.timestamp, chunk.slice(e.range)));
                Ok(())
            })?;
        }
        // @RequiresTimeSortedInput: each partition in timestamp order (stable,
        // so equal timestamps keep their arrival order).
        Ok(parts
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .map(|(i, mut p)| {
                if self.stage.time_sorted {
                    p.sort_by_key(|(ts, _)| *ts);
                }
                let mut out = Vec::with_capacity(p.iter().map(|(_, e)| e.len()).sum());
                for (_, e) in p {
                    out.extend_from_slice(&e);
                }
                (i, vec![Bytes::from(out)])
            })
            .collect())
    }

    async fn round(&self, bundles: Vec<Work>) -> Result<Collected, EngineError> {
        let round = Round {
            next_seq: AtomicUsize::new(bundles.len()),
            queue: Mutex::new(
                bundles
                    .into_iter()
                    .enumerate()
                    .map(|(seq, work)| Work { seq, ..work })
                    .collect(),
            ),
            inflight: Mutex::default(),
            changed: tokio::sync::Notify::new(),
            idle: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            collected: Mutex::default(),
        };
        let lanes = (0..self.pool.size())
            .flat_map(|slot| (0..self.lanes_per_worker()).map(move |_| slot))
            .map(|slot| self.lane(slot, &round));
        let lanes = try_join_all(lanes);
        if self.splittable() {
            // The splitter never ends by itself: the round is over when the
            // lanes are (and must not wait for the splitter's next poll).
            tokio::select! {
                biased;
                r = lanes => { r?; }
                never = self.splitter(&round) => match never {},
            }
        } else {
            lanes.await?;
        }
        Ok(round.collected.into_inner())
    }

    /// Only splittable-DoFn stages are split by the runner: their bundles
    /// are few and long, and the SDK can hand back the unread part.
    fn splittable(&self) -> bool {
        self.stage.residual_target.is_some() && self.stage.input.is_some()
    }

    /// Waits for work the lane of `slot` may run: `None` when the round is
    /// over for this lane.  A keyed bundle runs on its owner slot, or on
    /// another slot while the owner has no live worker.
    async fn next_work(&self, slot: usize, round: &Round) -> Option<Work> {
        loop {
            let notified = round.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (popped, drained, running) = {
                let mut queue = round.queue.lock();
                let mine = queue
                    .iter()
                    .position(|w| w.owner.is_none_or(|o| o == slot))
                    .or_else(|| {
                        queue
                            .iter()
                            .position(|w| w.owner.is_some_and(|o| !self.pool.is_ready(o)))
                    });
                let popped = mine.and_then(|i| queue.remove(i));
                if popped.is_some() {
                    round.running.fetch_add(1, Ordering::AcqRel);
                }
                (
                    popped,
                    queue.is_empty(),
                    round.running.load(Ordering::Acquire),
                )
            };
            if popped.is_some() {
                if drained {
                    round.changed.notify_waiters();
                }
                return popped;
            }
            // Keyed work belongs to its owner, so every lane stays until
            // nothing is queued or running: a retried bundle goes back to its
            // owner.  With bundles still running, the splitter may yet hand
            // out work.
            let keyed_pending = self.stage.keyed && (!drained || running > 0);
            if !keyed_pending && (!self.splittable() || round.inflight.lock().is_empty()) {
                round.changed.notify_waiters();
                return None;
            }
            round.idle.fetch_add(1, Ordering::AcqRel);
            notified.await;
            round.idle.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Runs bundles on the worker in `slot` until the round has no more
    /// work.  A lane whose worker is still starting gives up as soon as the
    /// queue drains, so small jobs never wait for slow starters.
    async fn lane(&self, slot: usize, round: &Round) -> Result<(), EngineError> {
        let mut worker: Option<Arc<Worker>> = None;
        loop {
            let w = match &worker {
                Some(w) => w.clone(),
                None => {
                    let notified = round.changed.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    let keyed_running =
                        self.stage.keyed && round.running.load(Ordering::Acquire) > 0;
                    if round.queue.lock().is_empty() && !keyed_running {
                        return Ok(());
                    }
                    tokio::select! {
                        w = self.pool.worker(slot) => {
                            let w = w?;
                            worker = Some(w.clone());
                            w
                        }
                        _ = notified => continue,
                    }
                }
            };
            let Some(mut work) = self.next_work(slot, round).await else {
                return Ok(());
            };
            let instruction_id = w.new_instruction_id();
            let tokens = self.user_state.cache_tokens();
            let user_token = match work.owner {
                None => None,
                Some(owner) if owner == slot => {
                    Some(tokens.owner(&self.descriptor_id, slot, w.id()))
                }
                Some(owner) => {
                    // This worker changes the owner's keys: the owner's cache
                    // of them is stale from now on.
                    tokens.retire(&self.descriptor_id, owner);
                    Some(CacheTokens::one_off(&self.descriptor_id, &instruction_id))
                }
            };
            if work.elementwise && self.splittable() {
                round.inflight.lock().insert(
                    instruction_id.clone(),
                    InFlight {
                        worker: w.clone(),
                        started: Instant::now(),
                        elements: work.chunks.clone(),
                        splits: 0,
                        checkpointed: false,
                        retry: None,
                    },
                );
            }
            let result = self
                .run_bundle(
                    &w,
                    instruction_id.clone(),
                    &work,
                    user_token,
                    &round.collected,
                )
                .await;
            let retry = round
                .inflight
                .lock()
                .remove(&instruction_id)
                .and_then(|f| f.retry);
            if result.is_err() && work.owner.is_some() {
                // The bundle's writes are dropped; its worker may have cached them.
                tokens.retire(&self.descriptor_id, slot);
            }
            let finished = || {
                round.running.fetch_sub(1, Ordering::AcqRel);
                round.changed.notify_waiters();
            };
            match result {
                Ok(()) => {
                    self.pool.bundle_done(slot);
                    finished()
                }
                Err(BundleError::WorkerLost { worker: id, reason }) => {
                    work.attempts += 1;
                    if work.attempts >= MAX_ATTEMPTS {
                        return Err(EngineError::Workers(format!(
                            "a bundle of stage '{}' lost its SDK worker {} times; last: {id}: {reason}",
                            self.stage_name, work.attempts
                        )));
                    }
                    self.reporter.message(
                        Level::Warning,
                        format!("SDK worker {id} was lost ({reason}); retrying its bundle of stage '{}' on a new worker", self.stage_name),
                    );
                    if let Some(primary) = retry {
                        // Split off parts are already queued: redo only the primary.
                        work.chunks = primary;
                    }
                    round.queue.lock().push_back(work);
                    finished();
                    worker = Some(self.pool.replace(slot, &id).await?);
                }
                Err(BundleError::Failed(message)) => {
                    // The SDK names the failing transform ("[while running 'X']");
                    // fall back to the fused stage's transforms.
                    let culprit = failing_transform(&message)
                        .map(|t| format!("Transform '{t}'"))
                        .unwrap_or_else(|| format!("A transform of stage [{}]", self.stage_name));
                    return Err(EngineError::UserCode(format!(
                        "{culprit} failed in the SDK worker:\n{message}"
                    )));
                }
            }
        }
    }

    /// Dynamic work rebalancing: while some lane is idle and the queue is
    /// empty, ask the longest-running bundle to give up half of what it has
    /// left, and queue the part it gave up.
    async fn splitter(&self, round: &Round) -> std::convert::Infallible {
        let Some((_, source)) = &self.stage.input else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(SPLIT_POLL).await;
            if let Some(after) = self.checkpoint_after {
                self.checkpoint_long_bundles(round, source, after).await;
            }
            if round.idle.load(Ordering::Acquire) == 0 || !round.queue.lock().is_empty() {
                continue;
            }
            let candidate = {
                let inflight = round.inflight.lock();
                inflight
                    .iter()
                    .filter(|(_, f)| f.started.elapsed() >= SPLIT_AFTER && f.splits < MAX_SPLITS)
                    .max_by_key(|(_, f)| f.started.elapsed())
                    .map(|(id, f)| (id.clone(), f.worker.clone(), f.elements.len()))
            };
            let Some((id, worker, n)) = candidate else {
                continue;
            };
            let split = match worker.split_bundle(&id, source, 0.5, n as i64).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(bundle = %id, error = %e, "split request failed");
                    continue;
                }
            };
            self.apply_split(round, &id, split, false);
        }
    }

    /// Asks every bundle running longer than `after` to checkpoint: split
    /// with nothing of the remainder kept, so it ends soon with what it has
    /// done committed.
    async fn checkpoint_long_bundles(&self, round: &Round, source: &str, after: Duration) {
        let due: Vec<(String, Arc<Worker>, usize)> = round
            .inflight
            .lock()
            .iter_mut()
            .filter(|(_, f)| f.started.elapsed() >= after && !f.checkpointed)
            .map(|(id, f)| {
                f.checkpointed = true;
                (id.clone(), f.worker.clone(), f.elements.len())
            })
            .collect();
        for (id, worker, n) in due {
            match worker.split_bundle(&id, source, 0.0, n as i64).await {
                Ok(split) => self.apply_split(round, &id, split, true),
                Err(e) => tracing::debug!(bundle = %id, error = %e, "checkpoint request failed"),
            }
        }
    }

    /// Takes a split's residuals: queued in this round, or (`checkpoint`)
    /// handed back as deferred work like a self-checkpoint's.
    fn apply_split(
        &self,
        round: &Round,
        id: &str,
        split: ferrobeam_proto::fn_api::ProcessBundleSplitResponse,
        checkpoint: bool,
    ) {
        let mut inflight = round.inflight.lock();
        let Some(f) = inflight.get_mut(id) else {
            return;
        };
        f.splits += 1;
        let channel = split.channel_splits.first();
        let first_residual = channel.map_or(f.elements.len(), |c| {
            (c.first_residual_element.max(0) as usize).min(f.elements.len())
        });
        let last_primary = channel.map_or(-1, |c| c.last_primary_element);
        let unstarted = f.elements[first_residual..].iter().cloned();
        if checkpoint {
            let residuals: Vec<Residual> = split
                .residual_roots
                .iter()
                .filter_map(Residual::from_proto)
                .chain(unstarted.map(|element| Residual {
                    element,
                    delay: Duration::ZERO,
                    watermark: None,
                }))
                .collect();
            if residuals.is_empty() {
                return;
            }
            f.keep_primary_only(first_residual, last_primary, &split);
            tracing::debug!(
                bundle = id,
                residuals = residuals.len(),
                "checkpointed a running bundle"
            );
            drop(inflight);
            round.collected.lock().residuals.extend(residuals);
            return;
        }
        let mut new_work: Vec<Bytes> = split
            .residual_roots
            .iter()
            .filter_map(|r| r.application.as_ref())
            .map(|a| a.element.clone())
            .collect();
        new_work.extend(unstarted);
        if new_work.is_empty() {
            return;
        }
        f.keep_primary_only(first_residual, last_primary, &split);
        tracing::debug!(
            bundle = id,
            residuals = new_work.len(),
            "split a running bundle"
        );
        drop(inflight);
        let mut queue = round.queue.lock();
        for element in new_work {
            let seq = round.next_seq.fetch_add(1, Ordering::AcqRel);
            queue.push_back(Work {
                seq,
                ..Work::new(vec![element], true, None)
            });
        }
        drop(queue);
        round.changed.notify_waiters();
    }

    async fn run_bundle(
        &self,
        worker: &Worker,
        instruction_id: String,
        work: &Work,
        user_token: Option<Bytes>,
        collected: &Mutex<Collected>,
    ) -> Result<(), BundleError> {
        let mut inputs = match &self.stage.input {
            Some((_, source)) => {
                vec![BundleInput {
                    transform_id: source.clone(),
                    timer_family: None,
                    chunks: work.chunks.clone(),
                }]
            }
            None => Vec::new(),
        };
        // The SDK waits for the end of every timer stream, even an empty one.
        for (k, family) in self.stage.timer_families.iter().enumerate() {
            inputs.push(BundleInput {
                transform_id: family.transform_id.clone(),
                timer_family: Some(family.family_id.clone()),
                chunks: work.timers.get(k).cloned().unwrap_or_default(),
            });
        }
        let sinks: Vec<String> = self
            .stage
            .outputs
            .iter()
            .map(|(_, id)| id.clone())
            .collect();
        let timer_streams: Vec<TimerStream> = self
            .stage
            .timer_families
            .iter()
            .map(|f| (f.transform_id.clone(), f.family_id.clone()))
            .collect();
        let state = Arc::new(BundleState::new(
            self.side_inputs.clone(),
            self.user_state.clone(),
        ));
        let side_inputs = self
            .stage
            .side_inputs
            .iter()
            .map(|s| (s.transform_id.as_str(), s.local_name.as_str()));
        let mut cache_tokens: Vec<CacheToken> = side_input_tokens(
            &format!("{}/g{}", self.descriptor_id, self.side_input_generation),
            side_inputs,
        );
        cache_tokens.extend(user_token.map(user_state_token));
        let started = std::time::Instant::now();
        let out = worker
            .process_bundle(
                instruction_id,
                BundleRequest {
                    descriptor_id: &self.descriptor_id,
                    inputs,
                    outputs: &sinks,
                    timer_outputs: &timer_streams,
                    cache_tokens,
                },
                Some(state.clone()),
            )
            .await?;
        // The bundle succeeded: its state writes become the job's.
        state.commit().map_err(|e| {
            BundleError::Failed(format!("committing the bundle's state failed: {e}"))
        })?;
        self.telemetry.bundle(started.elapsed());
        tracing::debug!(
            stage = self.stage_name,
            worker = worker.id(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            residuals = out.response.residual_roots.len(),
            "bundle done"
        );
        {
            // Commit: only now do the bundle's outputs become visible.
            let mut c = collected.lock();
            let mut outputs = out.outputs;
            for (port, sink) in &self.stage.outputs {
                if let Some(chunks) = outputs.remove(sink) {
                    c.outputs.push((work.seq, port.clone(), chunks));
                }
            }
            let mut set_timers = out.timers;
            for (family, stream) in timer_streams.iter().enumerate() {
                if let Some(chunks) = set_timers.remove(stream) {
                    c.timers.push((family, chunks));
                }
            }
            c.residuals.extend(
                out.response
                    .residual_roots
                    .iter()
                    .filter_map(Residual::from_proto),
            );
        }
        self.metrics
            .commit_bundle(self.metric_scope, &out.response.monitoring_infos);
        if out.response.requires_finalization {
            let request = instruction_request::Request::FinalizeBundle(FinalizeBundleRequest {
                instruction_id: out.instruction_id.clone(),
            });
            if let Err(e) = worker
                .instruct(format!("{}-finalize", out.instruction_id), request)
                .await
            {
                self.reporter
                    .message(Level::Warning, format!("bundle finalization failed: {e}"));
            }
        }
        Ok(())
    }
}

/// The transform the Python SDK blames in an error: the last `[while running 'X']`.
fn failing_transform(message: &str) -> Option<&str> {
    const MARK: &str = "[while running '";
    let start = message.rfind(MARK)? + MARK.len();
    let len = message[start..].find("']")?;
    Some(&message[start..start + len])
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_failing_transform() {
        let msg = "Traceback ...\nValueError: boom [while running 'Outer/Inner']\n";
        assert_eq!(super::failing_transform(msg), Some("Outer/Inner"));
        assert_eq!(super::failing_transform("no marker"), None);
    }
}
