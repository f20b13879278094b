//! The SDK workers of one environment of one job, with replacement on loss.
//!
//! Workers start in the background: the first bundles run as soon as the
//! first worker connects, and the others join as they come up.

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
}

impl WorkerPool {
    /// Starts launching one worker per template; returns at once.  A slot
    /// whose worker dies is refilled from the last template (the first may
    /// be a one-off, such as a worker inside the submitting process).
    pub fn start(launcher: Arc<WorkerLauncher>, templates: Vec<WorkerTemplate>) -> Self {
        assert!(!templates.is_empty(), "a pool needs at least one worker");
        let slots: Vec<Slot> = templates.iter().map(|_| Slot::default()).collect();
        for (slot, template) in slots.iter().zip(&templates) {
            // Hold the slot while launching, so `worker()` waits for this launch.
            let mut guard = slot.clone().try_lock_owned().expect("new slot is free");
            let launcher = launcher.clone();
            let template = template.clone();
            tokio::spawn(async move {
                match launcher.launch(&template).await {
                    Ok(w) => *guard = Some(w),
                    Err(e) => tracing::warn!(error = %e, "SDK worker failed to start"),
                }
            });
        }
        let template = templates.last().expect("non-empty").clone();
        Self {
            launcher,
            template,
            slots,
        }
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
            *guard = Some(
                self.launcher
                    .launch(&self.template)
                    .await
                    .map_err(|e| EngineError::Workers(e.to_string()))?,
            );
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
            old.kill().await;
        }
        drop(guard);
        self.worker(slot).await
    }

    pub async fn shutdown(self) {
        for slot in self.slots {
            if let Some(w) = slot.lock().await.take() {
                w.stop().await;
            }
        }
    }
}
