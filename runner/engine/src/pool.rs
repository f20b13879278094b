//! The SDK workers of one environment of one job, with replacement on loss.

use std::sync::Arc;

use ferrobeam_fnapi::environment::{RunningWorker, WorkerTemplate};
use ferrobeam_fnapi::{Worker, WorkerLauncher};
use futures::future::try_join_all;
use tokio::sync::Mutex;

use crate::EngineError;

pub struct WorkerPool {
    launcher: Arc<WorkerLauncher>,
    template: WorkerTemplate,
    slots: Vec<Mutex<Option<RunningWorker>>>,
}

impl WorkerPool {
    /// Starts `size` workers concurrently and waits until all are connected.
    pub async fn start(launcher: Arc<WorkerLauncher>, template: WorkerTemplate, size: usize) -> Result<Self, EngineError> {
        let started = try_join_all((0..size.max(1)).map(|_| launcher.launch(&template)))
            .await
            .map_err(|e| EngineError::Workers(e.to_string()))?;
        Ok(Self { launcher, template, slots: started.into_iter().map(|w| Mutex::new(Some(w))).collect() })
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// The worker currently in `slot`, starting one if the slot is empty.
    pub async fn worker(&self, slot: usize) -> Result<Arc<Worker>, EngineError> {
        let mut guard = self.slots[slot].lock().await;
        if guard.is_none() {
            *guard = Some(self.launcher.launch(&self.template).await.map_err(|e| EngineError::Workers(e.to_string()))?);
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
            if let Some(w) = slot.into_inner() {
                w.stop().await;
            }
        }
    }
}
