//! ferrobeam's `JobControl` service: savepoints of running jobs (Beam's
//! Job API has none).  Served on the job server's port beside Beam's.

use std::path::PathBuf;
use std::sync::Arc;

use ferrobeam_proto::ferrobeam_control::job_control_server::JobControl;
use ferrobeam_proto::ferrobeam_control::{SavepointRequest, SavepointResponse};
use ferrobeam_proto::job_api::job_message::MessageImportance;
use ferrobeam_proto::job_api::job_state::Enum as JobState;
use tonic::{Request, Response, Status};

use crate::executor::SavepointOrder;
use crate::server::Shared;
use crate::status::clip_to;

pub struct JobControlApi {
    shared: Arc<Shared>,
}

impl JobControlApi {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl JobControl for JobControlApi {
    async fn savepoint(
        &self,
        request: Request<SavepointRequest>,
    ) -> Result<Response<SavepointResponse>, Status> {
        let request = request.into_inner();
        let job = self.shared.registry.get(&request.job_id).ok_or_else(|| {
            Status::not_found(format!(
                "no job with id {:?}",
                clip_to(&request.job_id, 200)
            ))
        })?;
        let directory = PathBuf::from(&request.directory);
        if !directory.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "the savepoint directory must be an absolute path, got {:?}",
                clip_to(&request.directory, 200)
            )));
        }
        let state = job.state();
        let sender = match (state, job.savepoint_sender()) {
            (JobState::Running, Some(sender)) if job.drainable => sender,
            (JobState::Running, _) => {
                return Err(Status::failed_precondition(format!(
                    "job {} is a batch job: savepoints are taken of streaming jobs (run with --streaming)",
                    job.id
                )))
            }
            (state, _) => {
                return Err(Status::failed_precondition(format!(
                    "job {} is {}: only a running job can take a savepoint",
                    job.id,
                    state.as_str_name()
                )))
            }
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let order = SavepointOrder {
            directory: directory.clone(),
            stop: request.stop,
            reply,
        };
        let gone = || {
            Status::failed_precondition(format!(
                "job {} ended before the savepoint was taken",
                job.id
            ))
        };
        sender.send(order).await.map_err(|_| gone())?;
        let manifest_json = answer
            .await
            .map_err(|_| gone())?
            .map_err(|e| Status::internal(format!("the savepoint failed: {e}")))?;
        job.push_message(
            MessageImportance::JobMessageBasic,
            format!("savepoint written to {}", directory.display()),
        );
        if request.stop {
            job.push_message(
                MessageImportance::JobMessageBasic,
                "stopping the job after its savepoint".into(),
            );
            job.request_cancel();
        }
        Ok(Response::new(SavepointResponse {
            directory: request.directory,
            manifest_json,
        }))
    }
}
