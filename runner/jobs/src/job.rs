//! One job as the job service tracks it: identity, lifecycle state, staging
//! progress, history and metrics.
//!
//! All mutable parts sit behind one short-lived lock that is never held
//! across an `.await`; subscribers are woken through a watch channel whose
//! value is bumped after every history change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ferrobeam_proto::job_api::job_message::MessageImportance;
use ferrobeam_proto::job_api::job_state::Enum as JobState;
use ferrobeam_proto::job_api::{JobInfo, JobStateEvent, MetricResults};
use ferrobeam_proto::pipeline::v1::{ArtifactInformation, MonitoringInfo, Pipeline};
use parking_lot::Mutex;
use tokio::sync::watch;
use tonic::Status;

use crate::executor::JobEvents;
use crate::history::{is_terminal, EntriesRead, EventLog};

/// Resolved artifacts per environment id.
pub(crate) type ArtifactMap = HashMap<String, Vec<ArtifactInformation>>;

/// Where a job's artifact staging stands.
#[derive(Debug, Clone)]
pub(crate) enum Staging {
    /// Nothing staged yet.
    Pending,
    /// A staging stream is running.
    InProgress,
    /// All artifacts are on local disk.
    Done(ArtifactMap),
    /// The last attempt failed; the client may try again.
    Failed(String),
}

/// A prepared or running job.
pub(crate) struct Job {
    pub id: String,
    pub name: String,
    pub options: prost_types::Struct,
    pub staging_token: String,
    pub created: Instant,
    /// `created` on the wall clock, for people.
    pub created_wall: std::time::SystemTime,
    /// Whether the executor acts on the drain flag (a streaming job); decided
    /// at Prepare by [`crate::Executor::is_drainable`].
    pub drainable: bool,
    inner: Mutex<Inner>,
    /// Bumped after every history change; subscribers wait on it.
    changed: watch::Sender<u64>,
    /// The executor's cancel flag.
    cancel: watch::Sender<bool>,
    /// The executor's drain flag; only ever set for drainable jobs.
    drain: watch::Sender<bool>,
    /// Where savepoint requests go while the job runs.
    savepoints: Mutex<Option<tokio::sync::mpsc::Sender<crate::executor::SavepointOrder>>>,
}

struct Inner {
    state: JobState,
    /// Set by Run, so a job runs at most once.
    started: bool,
    finished: Option<Instant>,
    pipeline: Arc<Pipeline>,
    staging: Staging,
    log: EventLog,
    metrics: MetricResults,
}

/// What `Run` needs from a job that may run.
pub(crate) struct RunStart {
    pub pipeline: Pipeline,
    pub artifacts: ArtifactMap,
}

impl Job {
    pub(crate) fn new(
        id: String,
        name: String,
        pipeline: Pipeline,
        options: prost_types::Struct,
        staging_token: String,
        drainable: bool,
        max_messages: usize,
    ) -> Arc<Self> {
        let mut log = EventLog::new(max_messages);
        log.push_state(JobState::Stopped);
        Arc::new(Job {
            id,
            name,
            options,
            staging_token,
            created: Instant::now(),
            created_wall: std::time::SystemTime::now(),
            drainable,
            inner: Mutex::new(Inner {
                state: JobState::Stopped,
                started: false,
                finished: None,
                pipeline: Arc::new(pipeline),
                staging: Staging::Pending,
                log,
                metrics: MetricResults::default(),
            }),
            changed: watch::channel(0).0,
            cancel: watch::channel(false).0,
            drain: watch::channel(false).0,
            savepoints: Mutex::new(None),
        })
    }

    /// The channel the executor reads savepoint requests from; the job
    /// keeps the sending side while it runs.
    pub(crate) fn savepoint_receiver(
        &self,
    ) -> tokio::sync::mpsc::Receiver<crate::executor::SavepointOrder> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        *self.savepoints.lock() = Some(tx);
        rx
    }

    /// Where to send a savepoint request, if the job is running.
    pub(crate) fn savepoint_sender(
        &self,
    ) -> Option<tokio::sync::mpsc::Sender<crate::executor::SavepointOrder>> {
        self.savepoints.lock().clone()
    }

    pub(crate) fn state(&self) -> JobState {
        self.inner.lock().state
    }

    /// The current state as the Job API reports it.
    pub(crate) fn state_event(&self) -> JobStateEvent {
        let inner = self.inner.lock();
        inner
            .log
            .states_from(0)
            .last()
            .copied()
            .unwrap_or(JobStateEvent {
                state: inner.state as i32,
                timestamp: None,
            })
    }

    pub(crate) fn info(&self) -> JobInfo {
        JobInfo {
            job_id: self.id.clone(),
            job_name: self.name.clone(),
            pipeline_options: Some(self.options.clone()),
            state: self.state() as i32,
        }
    }

    pub(crate) fn pipeline(&self) -> Arc<Pipeline> {
        self.inner.lock().pipeline.clone()
    }

    pub(crate) fn metrics(&self) -> MetricResults {
        self.inner.lock().metrics.clone()
    }

    /// When the job reached a terminal state, if it did.
    pub(crate) fn finished_at(&self) -> Option<Instant> {
        self.inner.lock().finished
    }

    pub(crate) fn is_staging(&self) -> bool {
        matches!(self.inner.lock().staging, Staging::InProgress)
    }

    pub(crate) fn has_started(&self) -> bool {
        self.inner.lock().started
    }

    /// A receiver that changes whenever the history grows.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn cancel_receiver(&self) -> watch::Receiver<bool> {
        self.cancel.subscribe()
    }

    pub(crate) fn drain_receiver(&self) -> watch::Receiver<bool> {
        self.drain.subscribe()
    }

    /// State changes from `from` on, and whether the job has ended.
    pub(crate) fn read_states(&self, from: usize) -> (Vec<JobStateEvent>, bool) {
        let inner = self.inner.lock();
        (
            inner.log.states_from(from).to_vec(),
            is_terminal(inner.state),
        )
    }

    /// Message-stream entries from `from` on, and whether the job has ended.
    pub(crate) fn read_entries(&self, from: u64) -> (EntriesRead, bool) {
        let inner = self.inner.lock();
        (inner.log.entries_from(from), is_terminal(inner.state))
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Moves to `to` if that is a legal step from the current state.
    /// Returns whether the state changed.
    pub(crate) fn transition(&self, to: JobState) -> bool {
        self.transition_and(to, || {})
    }

    /// [`Job::transition`], running `also` under the same lock when the step
    /// is taken, so no one sees the new state without its side effect.
    fn transition_and(&self, to: JobState, also: impl FnOnce()) -> bool {
        let changed = {
            let mut inner = self.inner.lock();
            let ok = is_legal_step(inner.state, to);
            if ok {
                inner.state = to;
                inner.log.push_state(to);
                if is_terminal(to) {
                    inner.finished = Some(Instant::now());
                }
                also();
            }
            ok
        };
        if changed {
            tracing::info!(job = %self.id, state = to.as_str_name(), "job state changed");
            self.notify();
        }
        changed
    }

    /// Appends a job message and logs it.
    pub(crate) fn push_message(&self, importance: MessageImportance, text: String) {
        match importance {
            MessageImportance::JobMessageError => tracing::error!(job = %self.id, "{text}"),
            MessageImportance::JobMessageWarning => tracing::warn!(job = %self.id, "{text}"),
            MessageImportance::JobMessageBasic => tracing::info!(job = %self.id, "{text}"),
            _ => tracing::debug!(job = %self.id, "{text}"),
        }
        self.inner.lock().log.push_message(importance, text);
        self.notify();
    }

    fn set_metrics(&self, attempted: Vec<MonitoringInfo>, committed: Vec<MonitoringInfo>) {
        self.inner.lock().metrics = MetricResults {
            attempted,
            committed,
        };
    }

    /// Claims the job for a staging attempt.
    pub(crate) fn begin_staging(&self) -> Result<(), Status> {
        let mut inner = self.inner.lock();
        if inner.state != JobState::Stopped || inner.started {
            return Err(Status::failed_precondition(format!(
                "job {} is {}; artifacts can only be staged before Run",
                self.id,
                inner.state.as_str_name()
            )));
        }
        match inner.staging {
            Staging::Pending | Staging::Failed(_) => {
                inner.staging = Staging::InProgress;
                Ok(())
            }
            Staging::InProgress => Err(Status::aborted(format!(
                "artifacts of job {} are already being staged",
                self.id
            ))),
            Staging::Done(_) => Err(Status::already_exists(format!(
                "artifacts of job {} were already staged",
                self.id
            ))),
        }
    }

    /// Records the outcome of a staging attempt.  On success the pipeline's
    /// environments are rewritten to depend on the local files, so the
    /// pipeline the executor and GetPipeline see agrees with
    /// [`crate::JobContext::artifacts`].
    pub(crate) fn finish_staging(&self, outcome: Result<ArtifactMap, String>) {
        let mut inner = self.inner.lock();
        match outcome {
            Ok(artifacts) => {
                let mut pipeline = (*inner.pipeline).clone();
                if let Some(components) = pipeline.components.as_mut() {
                    for (env_id, deps) in &artifacts {
                        if let Some(env) = components.environments.get_mut(env_id) {
                            env.dependencies = deps.clone();
                        }
                    }
                }
                inner.pipeline = Arc::new(pipeline);
                inner.staging = Staging::Done(artifacts);
            }
            Err(message) => inner.staging = Staging::Failed(message),
        }
    }

    /// Checks that the job may run and marks it STARTING.
    ///
    /// A pipeline without any artifacts needs no staging, so a client that
    /// skipped it is not refused.
    pub(crate) fn begin_run(&self) -> Result<RunStart, Status> {
        let start = {
            let mut inner = self.inner.lock();
            if inner.started || inner.state != JobState::Stopped {
                return Err(Status::failed_precondition(format!(
                    "job {} was already run (state {})",
                    self.id,
                    inner.state.as_str_name()
                )));
            }
            let artifacts = match &inner.staging {
                Staging::Done(artifacts) => artifacts.clone(),
                Staging::Pending if !has_dependencies(&inner.pipeline) => {
                    empty_artifacts(&inner.pipeline)
                }
                Staging::Pending => {
                    return Err(Status::failed_precondition(format!(
                        "the artifacts of job {} have not been staged; stage them with the \
                         staging token returned by Prepare before calling Run",
                        self.id
                    )))
                }
                Staging::InProgress => {
                    return Err(Status::failed_precondition(format!(
                        "the artifacts of job {} are still being staged",
                        self.id
                    )))
                }
                Staging::Failed(message) => {
                    return Err(Status::failed_precondition(format!(
                        "staging the artifacts of job {} failed: {}",
                        self.id,
                        crate::status::clip(message)
                    )))
                }
            };
            inner.started = true;
            RunStart {
                pipeline: (*inner.pipeline).clone(),
                artifacts,
            }
        };
        self.transition(JobState::Starting);
        Ok(start)
    }

    /// Handles a Cancel request and returns the resulting state.
    ///
    /// A job that never ran is cancelled at once; a running one moves to
    /// CANCELLING and its executor sees the cancel flag; a finished one is
    /// left alone.
    pub(crate) fn request_cancel(&self) -> JobState {
        let state = self.state();
        match state {
            JobState::Stopped => {
                // Mark it started so a racing Run cannot start it anymore.
                self.inner.lock().started = true;
                self.transition(JobState::Cancelled);
            }
            JobState::Starting | JobState::Running | JobState::Draining => {
                self.cancel.send_replace(true);
                self.transition(JobState::Cancelling);
            }
            _ => {}
        }
        self.state()
    }

    /// Handles a Drain request and returns the resulting state.
    ///
    /// A running drainable (streaming) job moves to DRAINING and its executor
    /// sees the drain flag; it ends DRAINED once the executor returns `Ok`.
    /// A running batch job is left to finish (it ends DONE), with a job
    /// message saying why.  A job being drained or cancelled, or already
    /// finished, is left alone.  A job that never ran has nothing to drain:
    /// that is refused with FAILED_PRECONDITION, so a drain cannot silently
    /// discard a job that a client is about to run (Cancel does that).
    pub(crate) fn request_drain(&self) -> Result<JobState, Status> {
        match self.state() {
            JobState::Stopped => {
                return Err(Status::failed_precondition(format!(
                    "job {} has not been run, so there is nothing to drain; \
                     cancel it to discard it",
                    self.id
                )))
            }
            JobState::Starting | JobState::Running if self.drainable => {
                // The flag is set together with the state, so a job whose
                // executor sees the flag is DRAINING when it finishes.  A
                // racing Cancel or finish may have won; then nothing changes.
                self.transition_and(JobState::Draining, || {
                    self.drain.send_replace(true);
                });
            }
            JobState::Starting | JobState::Running => {
                self.push_message(
                    MessageImportance::JobMessageBasic,
                    "drain requested: this is a batch job, which runs to completion anyway \
                     (only streaming jobs can be drained)"
                        .into(),
                );
            }
            _ => {}
        }
        Ok(self.state())
    }

    pub(crate) fn cancel_requested(&self) -> bool {
        *self.cancel.borrow()
    }

    pub(crate) fn drain_requested(&self) -> bool {
        *self.drain.borrow()
    }
}

/// The job state machine: whether a job may go from `from` to `to`.
///
/// CANCELLING and DRAINING may still end DONE: the executor can finish on
/// its own between the request and its noticing the flag.
fn is_legal_step(from: JobState, to: JobState) -> bool {
    use JobState::*;
    match (from, to) {
        (from, _) if is_terminal(from) => false,
        (Stopped, Starting | Cancelled) => true,
        (Starting, Running) => true,
        (Starting | Running, Draining | Cancelling | Cancelled | Done | Failed) => true,
        (Draining, Drained | Cancelling | Cancelled | Done | Failed) => true,
        (Cancelling, Cancelled | Done | Failed) => true,
        _ => false,
    }
}

fn has_dependencies(pipeline: &Pipeline) -> bool {
    pipeline
        .components
        .as_ref()
        .is_some_and(|c| c.environments.values().any(|e| !e.dependencies.is_empty()))
}

/// An empty artifact list for every environment.
fn empty_artifacts(pipeline: &Pipeline) -> ArtifactMap {
    pipeline
        .components
        .as_ref()
        .map(|c| {
            c.environments
                .keys()
                .map(|k| (k.clone(), Vec::new()))
                .collect()
        })
        .unwrap_or_default()
}

/// The [`JobEvents`] handed to the executor: it writes into the job's
/// history and metrics.
pub(crate) struct JobEventSink(pub Arc<Job>);

impl JobEvents for JobEventSink {
    fn message(&self, importance: MessageImportance, text: String) {
        self.0.push_message(importance, text);
    }

    fn metrics(&self, attempted: Vec<MonitoringInfo>, committed: Vec<MonitoringInfo>) {
        self.0.set_metrics(attempted, committed);
    }
}
