//! The SDK workers of one environment of one job, with replacement on loss.
//!
//! Workers start in the background: the first bundles run as soon as the
//! first worker connects, and the others join as they come up.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

use ferrobeam_fnapi::environment::{RunningWorker, WorkerTemplate};
use ferrobeam_fnapi::{Worker, WorkerLauncher};
use tokio::sync::Mutex;

use crate::EngineError;

type Slot = Arc<Mutex<Option<RunningWorker>>>;

pub struct WorkerPool {
    launcher: Arc<WorkerLauncher>,
    template: WorkerTemplate,
    slots: Vec<Slot>,
    stats: Arc<PoolStats>,
}

/// What the dashboard shows of a pool's workers, one entry per slot.
pub struct PoolStats {
    environment: String,
    slots: Vec<SlotStats>,
}

#[derive(Default)]
struct SlotStats {
    worker_id: parking_lot::Mutex<String>,
    /// The worker pool it runs on, if any.
    pool: parking_lot::Mutex<Option<String>>,
    /// 0: no process of ours (an external worker, or none yet).
    pid: AtomicU32,
    state: AtomicU8,
    restarts: AtomicU32,
    bundles: AtomicU64,
}

const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const LOST: u8 = 2;
const STOPPED: u8 = 3;

/// One worker slot at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerFigures {
    pub id: String,
    pub environment: String,
    pub pid: Option<u32>,
    /// The worker pool (`host:port`) it runs on, if any.
    pub pool: Option<String>,
    /// `starting`, `running`, `lost` or `stopped` (the job ended).
    pub state: &'static str,
    /// Replacements after the slot's worker was lost.
    pub restarts: u32,
    /// Bundles its workers completed.
    pub bundles: u64,
}

impl PoolStats {
    fn started(&self, slot: usize, worker: &RunningWorker) {
        let s = &self.slots[slot];
        worker.worker.id().clone_into(&mut s.worker_id.lock());
        *s.pool.lock() = worker.pool().map(str::to_owned);
        s.pid.store(worker.pid().unwrap_or(0), Relaxed);
        s.state.store(RUNNING, Relaxed);
    }

    fn set_state(&self, slot: usize, state: u8) {
        self.slots[slot].state.store(state, Relaxed);
    }

    pub fn workers(&self) -> Vec<WorkerFigures> {
        self.slots
            .iter()
            .map(|s| WorkerFigures {
                id: s.worker_id.lock().clone(),
                environment: self.environment.clone(),
                pid: Some(s.pid.load(Relaxed)).filter(|&p| p != 0),
                pool: s.pool.lock().clone(),
                state: match s.state.load(Relaxed) {
                    STARTING => "starting",
                    RUNNING => "running",
                    STOPPED => "stopped",
                    _ => "lost",
                },
                restarts: s.restarts.load(Relaxed),
                bundles: s.bundles.load(Relaxed),
            })
            .collect()
    }
}

impl WorkerPool {
    /// Starts launching one worker per template; returns at once.  A slot
    /// whose worker dies is refilled from the last template (the first may
    /// be a one-off, such as a worker inside the submitting process).
    pub fn start(launcher: Arc<WorkerLauncher>, templates: Vec<WorkerTemplate>) -> Self {
        assert!(!templates.is_empty(), "a pool needs at least one worker");
        let slots: Vec<Slot> = templates.iter().map(|_| Slot::default()).collect();
        let stats = Arc::new(PoolStats {
            environment: templates[0].environment_id.clone(),
            slots: templates.iter().map(|_| SlotStats::default()).collect(),
        });
        for (index, (slot, template)) in slots.iter().zip(&templates).enumerate() {
            // Hold the slot while launching, so `worker()` waits for this launch.
            let mut guard = slot.clone().try_lock_owned().expect("new slot is free");
            let launcher = launcher.clone();
            let template = template.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                match launcher.launch(&template).await {
                    Ok(w) => {
                        stats.started(index, &w);
                        *guard = Some(w);
                    }
                    Err(e) => {
                        stats.set_state(index, LOST);
                        tracing::warn!(error = %e, "SDK worker failed to start");
                    }
                }
            });
        }
        let template = templates.last().expect("non-empty").clone();
        Self {
            launcher,
            template,
            slots,
            stats,
        }
    }

    /// The pool's figures, shared with the job's telemetry.
    pub fn stats(&self) -> Arc<PoolStats> {
        self.stats.clone()
    }

    /// A bundle completed on `slot`'s worker.
    pub fn bundle_done(&self, slot: usize) {
        self.stats.slots[slot].bundles.fetch_add(1, Relaxed);
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Whether `slot` has a live worker right now: false while its worker
    /// starts or is being replaced (and, rarely, while another lane is
    /// looking it up).
    pub fn is_ready(&self, slot: usize) -> bool {
        self.slots[slot]
            .try_lock()
            .is_ok_and(|g| g.as_ref().is_some_and(|w| w.worker.dead_reason().is_none()))
    }

    /// The worker in `slot`, waiting for its start; starts one if the slot is empty.
    pub async fn worker(&self, slot: usize) -> Result<Arc<Worker>, EngineError> {
        let mut guard = self.slots[slot].lock().await;
        if guard.is_none() {
            self.stats.set_state(slot, STARTING);
            let launched = self.launcher.launch(&self.template).await.map_err(|e| {
                self.stats.set_state(slot, LOST);
                EngineError::Workers(e.to_string())
            })?;
            self.stats.started(slot, &launched);
            *guard = Some(launched);
        }
        Ok(guard.as_ref().expect("filled").worker.clone())
    }

    /// Replaces the worker in `slot` if it is still `dead` (another lane may
    /// have replaced it already) and returns the slot's live worker.
    pub async fn replace(&self, slot: usize, dead: &str) -> Result<Arc<Worker>, EngineError> {
        let mut guard = self.slots[slot].lock().await;
        if guard.as_ref().is_some_and(|w| w.worker.id() == dead) {
            let old = guard.take().expect("checked");
            tracing::warn!(worker = dead, output = %old.output_tail(), "replacing lost SDK worker");
            self.stats.slots[slot].restarts.fetch_add(1, Relaxed);
            self.stats.set_state(slot, LOST);
            old.kill().await;
        }
        drop(guard);
        self.worker(slot).await
    }

    pub async fn shutdown(self) {
        for index in 0..self.slots.len() {
            self.stats.set_state(index, STOPPED);
        }
        for slot in self.slots {
            if let Some(w) = slot.lock().await.take() {
                w.stop().await;
            }
        }
    }
}
