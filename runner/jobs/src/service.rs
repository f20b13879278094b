//! Beam's `JobService`: Prepare, Run, Cancel, Drain, state, messages and metrics.

use std::sync::Arc;

use ferrobeam_proto::job_api::job_service_server::JobService;
use ferrobeam_proto::job_api::{
    CancelJobRequest, CancelJobResponse, DescribePipelineOptionsRequest,
    DescribePipelineOptionsResponse, DrainJobRequest, DrainJobResponse, GetJobMetricsRequest,
    GetJobMetricsResponse, GetJobPipelineRequest, GetJobPipelineResponse, GetJobStateRequest,
    GetJobsRequest, GetJobsResponse, JobMessagesRequest, JobMessagesResponse, JobStateEvent,
    PrepareJobRequest, PrepareJobResponse, RunJobRequest, RunJobResponse,
};
use ferrobeam_proto::pipeline::v1::ApiServiceDescriptor;
use tonic::{Request, Response, Status};

use crate::executor::JobContext;
use crate::fsutil::{create_private_dir, sanitize_component};
use crate::job::{Job, JobEventSink};
use crate::lifecycle;
use crate::server::Shared;
use crate::status::{clip, clip_to};
use crate::streams::{message_stream, state_stream, ResponseStream};

/// Longest job name we keep; names are only for humans.
const MAX_JOB_NAME_LEN: usize = 256;

/// The `JobService` implementation; get one from
/// [`crate::JobServer::job_service`].
pub struct JobApi {
    shared: Arc<Shared>,
}

impl JobApi {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        JobApi { shared }
    }

    /// Refuses new work once the server is shutting down.
    fn ensure_open(&self) -> Result<(), Status> {
        if *self.shared.shutdown.borrow() {
            return Err(Status::unavailable("the job server is shutting down"));
        }
        Ok(())
    }

    fn job(&self, job_id: &str) -> Result<Arc<Job>, Status> {
        self.shared
            .registry
            .get(job_id)
            .ok_or_else(|| Status::not_found(format!("no job with id {:?}", clip_to(job_id, 200))))
    }
}

/// A fresh job id: the sanitised job name (so ids are readable and safe as
/// directory names) plus a random part.  Beam's client opens the state and
/// message streams with the preparation id before Run, so the preparation id
/// *is* the job id.
fn new_job_id(job_name: &str) -> String {
    let name: String = sanitize_component(job_name, "job")
        .chars()
        .take(40)
        .collect();
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

/// The name a job is listed under. Beam's Python `PortableRunner` sends
/// every job as "job"; the user's `--job_name`, which travels in the
/// options, says more.
fn display_name<'a>(requested: &'a str, options: &'a prost_types::Struct) -> &'a str {
    if !requested.is_empty() && requested != "job" {
        return requested;
    }
    match options
        .fields
        .get("beam:option:job_name:v1")
        .and_then(|v| v.kind.as_ref())
    {
        Some(prost_types::value::Kind::StringValue(name)) if !name.is_empty() => name,
        _ => requested,
    }
}

#[tonic::async_trait]
impl JobService for JobApi {
    async fn prepare(
        &self,
        request: Request<PrepareJobRequest>,
    ) -> Result<Response<PrepareJobResponse>, Status> {
        self.ensure_open()?;
        let local_addr = request.local_addr();
        let request = request.into_inner();
        let pipeline = request
            .pipeline
            .ok_or_else(|| Status::invalid_argument("PrepareJobRequest carries no pipeline"))?;
        let options = request.pipeline_options.unwrap_or_default();
        let endpoint = self.shared.staging_endpoint(local_addr)?;

        // Validation may be CPU-heavy and runs foreign code; keep it off the
        // async workers and contain its panics.
        let executor = self.shared.executor.clone();
        let (pipeline, options, verdict) = tokio::task::spawn_blocking(move || {
            let verdict = executor.validate(&pipeline, &options);
            (pipeline, options, verdict)
        })
        .await
        .map_err(|e| {
            let detail = if e.is_panic() {
                lifecycle::panic_text(e.into_panic())
            } else {
                e.to_string()
            };
            tracing::error!("pipeline validation panicked: {detail}");
            Status::internal(format!(
                "internal error while validating the pipeline: {detail}"
            ))
        })?;
        if let Err(message) = verdict {
            tracing::info!("refused pipeline at Prepare: {message}");
            return Err(Status::invalid_argument(clip(&message)));
        }

        self.shared.evict_old_jobs();
        let job_name: String = display_name(&request.job_name, &options)
            .chars()
            .take(MAX_JOB_NAME_LEN)
            .collect();
        let id = new_job_id(&job_name);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let drainable = self.shared.executor.is_drainable(&pipeline, &options);
        let job = Job::new(
            id.clone(),
            job_name,
            pipeline,
            options,
            token.clone(),
            drainable,
            self.shared.config.max_retained_messages,
        );
        self.shared.registry.insert(job);
        tracing::info!(job = %id, staging_endpoint = %endpoint, "prepared job");
        Ok(Response::new(PrepareJobResponse {
            preparation_id: id,
            artifact_staging_endpoint: Some(ApiServiceDescriptor {
                url: endpoint,
                authentication: None,
            }),
            staging_session_token: token,
        }))
    }

    async fn run(
        &self,
        request: Request<RunJobRequest>,
    ) -> Result<Response<RunJobResponse>, Status> {
        self.ensure_open()?;
        let job = self.job(&request.get_ref().preparation_id)?;
        let work_dir = self.shared.job_work_dir(&job);
        let dir = work_dir.clone();
        tokio::task::spawn_blocking(move || create_private_dir(&dir))
            .await
            .map_err(|e| Status::internal(format!("cannot create the job's work directory: {e}")))?
            .map_err(|e| {
                Status::internal(format!(
                    "cannot create the job's work directory {}: {e}",
                    work_dir.display()
                ))
            })?;
        let start = job.begin_run()?;
        let ctx = JobContext {
            job_id: job.id.clone(),
            job_name: job.name.clone(),
            pipeline: start.pipeline,
            options: job.options.clone(),
            artifacts: start.artifacts,
            work_dir,
            events: Arc::new(JobEventSink(job.clone())),
            cancel: job.cancel_receiver(),
            drain: job.drain_receiver(),
            savepoints: job.savepoint_receiver(),
        };
        tracing::info!(job = %job.id, "running job");
        lifecycle::spawn(
            self.shared.executor.clone(),
            job.clone(),
            ctx,
            self.shared.config.cancel_timeout,
        );
        Ok(Response::new(RunJobResponse {
            job_id: job.id.clone(),
        }))
    }

    async fn get_jobs(
        &self,
        _request: Request<GetJobsRequest>,
    ) -> Result<Response<GetJobsResponse>, Status> {
        let job_info = self
            .shared
            .registry
            .list()
            .iter()
            .map(|j| j.info())
            .collect();
        Ok(Response::new(GetJobsResponse { job_info }))
    }

    async fn get_state(
        &self,
        request: Request<GetJobStateRequest>,
    ) -> Result<Response<JobStateEvent>, Status> {
        Ok(Response::new(
            self.job(&request.get_ref().job_id)?.state_event(),
        ))
    }

    async fn get_pipeline(
        &self,
        request: Request<GetJobPipelineRequest>,
    ) -> Result<Response<GetJobPipelineResponse>, Status> {
        let pipeline = self.job(&request.get_ref().job_id)?.pipeline();
        Ok(Response::new(GetJobPipelineResponse {
            pipeline: Some((*pipeline).clone()),
        }))
    }

    async fn cancel(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        let job = self.job(&request.get_ref().job_id)?;
        tracing::info!(job = %job.id, "cancel requested");
        let state = job.request_cancel();
        Ok(Response::new(CancelJobResponse {
            state: state as i32,
        }))
    }

    /// Beam's Drain: a streaming job stops reading its sources, finishes
    /// what it has and ends DRAINED (see [`Job::request_drain`]).
    async fn drain(
        &self,
        request: Request<DrainJobRequest>,
    ) -> Result<Response<DrainJobResponse>, Status> {
        let job = self.job(&request.get_ref().job_id)?;
        tracing::info!(job = %job.id, "drain requested");
        let state = job.request_drain()?;
        Ok(Response::new(DrainJobResponse {
            state: state as i32,
        }))
    }

    type GetStateStreamStream = ResponseStream<JobStateEvent>;

    async fn get_state_stream(
        &self,
        request: Request<GetJobStateRequest>,
    ) -> Result<Response<Self::GetStateStreamStream>, Status> {
        let job = self.job(&request.get_ref().job_id)?;
        Ok(Response::new(state_stream(
            job,
            self.shared.shutdown.subscribe(),
        )))
    }

    type GetMessageStreamStream = ResponseStream<JobMessagesResponse>;

    async fn get_message_stream(
        &self,
        request: Request<JobMessagesRequest>,
    ) -> Result<Response<Self::GetMessageStreamStream>, Status> {
        let job = self.job(&request.get_ref().job_id)?;
        Ok(Response::new(message_stream(
            job,
            self.shared.shutdown.subscribe(),
        )))
    }

    async fn get_job_metrics(
        &self,
        request: Request<GetJobMetricsRequest>,
    ) -> Result<Response<GetJobMetricsResponse>, Status> {
        let metrics = self.job(&request.get_ref().job_id)?.metrics();
        Ok(Response::new(GetJobMetricsResponse {
            metrics: Some(metrics),
        }))
    }

    async fn describe_pipeline_options(
        &self,
        _request: Request<DescribePipelineOptionsRequest>,
    ) -> Result<Response<DescribePipelineOptionsResponse>, Status> {
        // Runner-specific options would be listed here; Beam's client adds
        // each as a command-line flag.  We have none yet.
        Ok(Response::new(DescribePipelineOptionsResponse {
            options: Vec::new(),
        }))
    }
}
