//! Who is connected: workers by id, descriptors by id, bundles by instruction id.
//!
//! Every Fn API stream is opened by the worker, so the registry is where a
//! stream finds the engine-side objects it belongs to.

use std::collections::HashMap;
use std::sync::Arc;

use ferrobeam_proto::fn_api::{LogEntry, ProcessBundleDescriptor, ProvisionInfo};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::state::StateHandler;
use crate::worker::Worker;

/// Where a worker's log entries go (the job's message stream, our logs).
pub type LogSink = Arc<dyn Fn(&LogEntry) + Send + Sync>;

/// What the runner knows about a worker before it dials in.
pub struct WorkerSetup {
    /// The job the worker runs bundles of (a field of its log lines).
    pub job_id: String,
    pub provision: ProvisionInfo,
    pub log_sink: LogSink,
    /// What its environment says the SDK can do (Beam protocol URNs).
    pub sdk_capabilities: Vec<String>,
}

struct Expected {
    setup: WorkerSetup,
    connected: Option<oneshot::Sender<Arc<Worker>>>,
}

/// Shared routing tables for the Fn API services.
#[derive(Default)]
pub struct Registry {
    expected: Mutex<HashMap<String, Expected>>,
    workers: Mutex<HashMap<String, Arc<Worker>>>,
    descriptors: Mutex<HashMap<String, ProcessBundleDescriptor>>,
    bundle_state: Mutex<HashMap<String, Arc<dyn StateHandler>>>,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Announces a worker we are about to start; the receiver resolves when
    /// its control stream connects.
    pub fn expect_worker(
        &self,
        worker_id: &str,
        setup: WorkerSetup,
    ) -> oneshot::Receiver<Arc<Worker>> {
        let (tx, rx) = oneshot::channel();
        self.expected.lock().insert(
            worker_id.to_owned(),
            Expected {
                setup,
                connected: Some(tx),
            },
        );
        rx
    }

    /// Forgets a worker entirely (it was stopped or died).
    pub fn remove_worker(&self, worker_id: &str) {
        self.expected.lock().remove(worker_id);
        if let Some(w) = self.workers.lock().remove(worker_id) {
            w.mark_dead("worker removed");
        }
    }

    pub(crate) fn provision_info(&self, worker_id: &str) -> Option<ProvisionInfo> {
        self.expected
            .lock()
            .get(worker_id)
            .map(|e| e.setup.provision.clone())
    }

    pub(crate) fn sdk_capabilities(&self, worker_id: &str) -> Vec<String> {
        self.expected
            .lock()
            .get(worker_id)
            .map(|e| e.setup.sdk_capabilities.clone())
            .unwrap_or_default()
    }

    /// Where the worker's log entries go besides our log, and its job.
    pub(crate) fn log_sink(&self, worker_id: &str) -> Option<(LogSink, String)> {
        self.expected
            .lock()
            .get(worker_id)
            .map(|e| (e.setup.log_sink.clone(), e.setup.job_id.clone()))
    }

    /// Called by the control service when a worker's control stream opens.
    pub(crate) fn worker_connected(&self, worker: Arc<Worker>) -> Result<(), tonic::Status> {
        let mut expected = self.expected.lock();
        let entry = expected.get_mut(worker.id()).ok_or_else(|| {
            tonic::Status::permission_denied(format!("unknown worker id {:?}", worker.id()))
        })?;
        self.workers
            .lock()
            .insert(worker.id().to_owned(), worker.clone());
        if let Some(tx) = entry.connected.take() {
            let _ = tx.send(worker);
        }
        Ok(())
    }

    pub(crate) fn worker(&self, worker_id: &str) -> Option<Arc<Worker>> {
        self.workers.lock().get(worker_id).cloned()
    }

    pub fn add_descriptor(&self, descriptor: ProcessBundleDescriptor) {
        self.descriptors
            .lock()
            .insert(descriptor.id.clone(), descriptor);
    }

    pub fn remove_descriptor(&self, id: &str) {
        self.descriptors.lock().remove(id);
    }

    pub(crate) fn descriptor(&self, id: &str) -> Option<ProcessBundleDescriptor> {
        self.descriptors.lock().get(id).cloned()
    }

    pub(crate) fn set_bundle_state(&self, instruction_id: &str, handler: Arc<dyn StateHandler>) {
        self.bundle_state
            .lock()
            .insert(instruction_id.to_owned(), handler);
    }

    pub(crate) fn clear_bundle_state(&self, instruction_id: &str) {
        self.bundle_state.lock().remove(instruction_id);
    }

    pub(crate) fn bundle_state(&self, instruction_id: &str) -> Option<Arc<dyn StateHandler>> {
        self.bundle_state.lock().get(instruction_id).cloned()
    }
}
