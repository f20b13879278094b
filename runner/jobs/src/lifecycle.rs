//! Running one job: the task that calls [`Executor::execute`] and turns its
//! outcome into the final job state.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use ferrobeam_proto::job_api::job_message::MessageImportance;
use ferrobeam_proto::job_api::job_state::Enum as JobState;
use futures::FutureExt;

use crate::executor::{Executor, JobContext};
use crate::job::Job;

/// How an execution ended, from the job service's point of view.
enum Outcome {
    Finished(Result<(), String>),
    Panicked(String),
    /// Cancelled, and the executor did not return within the grace period.
    Abandoned(Duration),
}

/// Starts `ctx`'s job on a tokio task.  The job must already be STARTING.
pub(crate) fn spawn(
    executor: Arc<dyn Executor>,
    job: Arc<Job>,
    ctx: JobContext,
    cancel_timeout: Duration,
) {
    tokio::spawn(async move {
        job.transition(JobState::Running);
        // `execute` is called inside the guarded future so that a panic in
        // its synchronous part is caught as well.
        let run = AssertUnwindSafe(async move { executor.execute(ctx).await }).catch_unwind();
        let mut cancel = job.cancel_receiver();
        let abandon = async {
            if cancel.wait_for(|c| *c).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(cancel_timeout).await;
        };
        let outcome = tokio::select! {
            res = run => match res {
                Ok(result) => Outcome::Finished(result),
                Err(panic) => Outcome::Panicked(panic_text(panic)),
            },
            _ = abandon => Outcome::Abandoned(cancel_timeout),
        };
        finish(&job, outcome);
    });
}

/// Publishes the outcome: messages first, then the terminal state, so a
/// client that stops reading at the terminal state has seen the error.
///
/// An executor that returns `Ok` after its drain flag was set has drained
/// the job: the executor cannot tell DRAINED from DONE itself, since both
/// are a clean end, and only this crate knows the request came.
fn finish(job: &Job, outcome: Outcome) {
    let cancelled = job.cancel_requested();
    match outcome {
        Outcome::Finished(Ok(())) if cancelled => {
            job.transition(JobState::Cancelled);
        }
        Outcome::Finished(Ok(())) if job.drain_requested() => {
            job.transition(JobState::Drained);
        }
        Outcome::Finished(Ok(())) => {
            job.transition(JobState::Done);
        }
        Outcome::Finished(Err(text)) if cancelled => {
            job.push_message(
                MessageImportance::JobMessageWarning,
                format!("the job stopped with an error after it was cancelled: {text}"),
            );
            job.transition(JobState::Cancelled);
        }
        Outcome::Finished(Err(text)) => {
            job.push_message(MessageImportance::JobMessageError, text);
            job.transition(JobState::Failed);
        }
        Outcome::Panicked(text) => {
            job.push_message(
                MessageImportance::JobMessageError,
                format!("internal error: the runner panicked while executing the job: {text}"),
            );
            job.transition(if cancelled {
                JobState::Cancelled
            } else {
                JobState::Failed
            });
        }
        Outcome::Abandoned(after) => {
            job.push_message(
                MessageImportance::JobMessageWarning,
                format!(
                    "the job did not stop within {}s of being cancelled; it was abandoned",
                    after.as_secs_f64()
                ),
            );
            job.transition(JobState::Cancelled);
        }
    }
}

pub(crate) fn panic_text(panic: Box<dyn Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}
