//! The seam between the Job API and whatever runs pipelines.
//!
//! The job service owns the lifecycle a Beam client sees (Prepare, staging,
//! Run, state and message streams, Cancel, Drain, metrics).  It knows nothing about
//! execution: it hands each job to an [`Executor`], which the binary wires to
//! the engine.  This keeps the Job API testable with a fake executor.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use ferrobeam_proto::expansion::v1::{ExpansionRequest, ExpansionResponse};
use ferrobeam_proto::job_api::job_message::MessageImportance;
use ferrobeam_proto::pipeline::v1::{ArtifactInformation, MonitoringInfo, Pipeline};
use futures::future::BoxFuture;

/// Runs pipelines for the job service.
pub trait Executor: Send + Sync + 'static {
    /// Checks a pipeline at Prepare time, before anything is staged or run.
    /// An `Err` is returned to the client as `INVALID_ARGUMENT` with this text,
    /// which must name the transform, its URN and what to do instead.
    fn validate(&self, pipeline: &Pipeline, options: &prost_types::Struct) -> Result<(), String>;

    /// Whether a job of this pipeline acts on [`JobContext::drain`], i.e.
    /// runs as a streaming job.  A drain request for any other job (a batch
    /// job runs to completion anyway) is acknowledged but changes nothing:
    /// the job stays RUNNING and ends DONE.  (No default: an executor that
    /// wraps another must pass this on, or drains would be lost silently.)
    fn is_drainable(&self, pipeline: &Pipeline, options: &prost_types::Struct) -> bool;

    /// Runs one job to completion.  Resolves `Ok` when the pipeline finished,
    /// `Err` with a user-facing message (Python traceback included) when it failed.
    /// Must return promptly once `job.cancelled()` turns true.  Once
    /// `job.drain` turns true (only for [`Executor::is_drainable`] jobs) it
    /// should stop reading its sources, finish what is in flight and return
    /// `Ok`: the job service then reports DRAINED instead of DONE.
    fn execute(&self, job: JobContext) -> BoxFuture<'static, Result<(), String>>;

    /// Expands a cross-language transform the executor runs natively, for
    /// Beam's `ExpansionService`.  Problems go in the response's `error`.
    fn expand(&self, request: &ExpansionRequest) -> ExpansionResponse {
        ExpansionResponse {
            error: format!(
                "this job server expands no cross-language transforms (asked for {:?})",
                request
                    .transform
                    .as_ref()
                    .and_then(|t| t.spec.as_ref())
                    .map_or("", |s| s.urn.as_str())
            ),
            ..Default::default()
        }
    }
}

/// Everything an executor gets for one job.
pub struct JobContext {
    pub job_id: String,
    pub job_name: String,
    pub pipeline: Pipeline,
    pub options: prost_types::Struct,
    /// Staged artifacts per environment id, rewritten to
    /// `beam:artifact:type:file:v1` pointing at local files under the job's
    /// artifact directory; the role (e.g. `staging_to` name) is preserved.
    pub artifacts: HashMap<String, Vec<ArtifactInformation>>,
    /// The job's private scratch directory (already created).
    pub work_dir: PathBuf,
    pub events: Arc<dyn JobEvents>,
    pub cancel: tokio::sync::watch::Receiver<bool>,
    /// Turns true when the client asks to drain the job: a streaming job
    /// stops reading its sources, fires what is pending and returns `Ok`,
    /// which the job service reports as DRAINED.  Never set for jobs the
    /// executor does not call drainable.
    pub drain: tokio::sync::watch::Receiver<bool>,
    /// Savepoint requests (streaming jobs act on them between epochs; an
    /// executor that cannot take savepoints answers each with an error).
    pub savepoints: tokio::sync::mpsc::Receiver<SavepointOrder>,
}

/// A client's request for a savepoint of a running job (see
/// `proto/ferrobeam/job_control.proto`).
pub struct SavepointOrder {
    /// An absolute directory that does not exist yet (or is empty).
    pub directory: PathBuf,
    /// End the job once the savepoint is written.
    pub stop: bool,
    /// The savepoint's manifest (JSON) once it is complete, or why it failed.
    pub reply: tokio::sync::oneshot::Sender<Result<String, String>>,
}

impl JobContext {
    pub fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    pub fn drain_requested(&self) -> bool {
        *self.drain.borrow()
    }
}

/// What an executor reports back while a job runs.
pub trait JobEvents: Send + Sync {
    /// A job message for the client's message stream (and our logs).
    fn message(&self, importance: MessageImportance, text: String);
    /// Replaces the job's metrics as served by `GetJobMetrics`.
    fn metrics(&self, attempted: Vec<MonitoringInfo>, committed: Vec<MonitoringInfo>);
}
