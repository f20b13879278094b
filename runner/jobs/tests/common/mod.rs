//! Shared test fixtures: a scriptable fake executor, a server on a loopback
//! port, and a client-side driver for reverse artifact staging.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrobeam_jobs::{Executor, JobContext, JobServer, JobServiceConfig};
use ferrobeam_proto::job_api::artifact_request_wrapper::Request as ServerRequest;
use ferrobeam_proto::job_api::artifact_response_wrapper::Response as ClientResponse;
use ferrobeam_proto::job_api::artifact_staging_service_client::ArtifactStagingServiceClient;
use ferrobeam_proto::job_api::job_message::MessageImportance;
use ferrobeam_proto::job_api::job_service_client::JobServiceClient;
use ferrobeam_proto::job_api::{
    ArtifactResponseWrapper, CancelJobRequest, CancelJobResponse, DrainJobRequest,
    DrainJobResponse, GetArtifactResponse, GetJobStateRequest, JobStateEvent, PrepareJobRequest,
    PrepareJobResponse, ResolveArtifactsResponse, RunJobRequest, RunJobResponse,
};
use ferrobeam_proto::pipeline::v1::{
    ArtifactFilePayload, ArtifactInformation, ArtifactStagingToRolePayload, Components,
    Environment, MonitoringInfo, PTransform, Pipeline,
};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Status;

pub const FILE_URN: &str = "beam:artifact:type:file:v1";
pub const STAGING_TO_URN: &str = "beam:artifact:role:staging_to:v1";
pub const REJECT_URN: &str = "test:transform:reject:v1";

/// What the fake executor does with a job.
#[derive(Clone)]
pub enum Behavior {
    Succeed(Duration),
    Fail(String),
    WaitForCancel,
    /// Finishes cleanly once the drain flag is set (or when cancelled), as a
    /// streaming job does.
    WaitForDrain,
    /// Fails once the drain flag is set.
    FailOnDrain(String),
    /// Ignores cancellation entirely.
    Hang,
    Panic,
}

/// What an execution saw, for assertions.
pub struct Seen {
    pub job_id: String,
    pub artifacts: HashMap<String, Vec<ArtifactInformation>>,
    pub pipeline: Pipeline,
    pub work_dir: std::path::PathBuf,
}

pub struct FakeExecutor {
    pub behavior: Behavior,
    pub seen: Mutex<Vec<Seen>>,
}

impl FakeExecutor {
    pub fn new(behavior: Behavior) -> Arc<Self> {
        Arc::new(FakeExecutor {
            behavior,
            seen: Mutex::new(Vec::new()),
        })
    }
}

pub fn user_counter(name: &str, value: u64) -> MonitoringInfo {
    let mut payload = Vec::new();
    prost::encoding::encode_varint(value, &mut payload);
    MonitoringInfo {
        urn: "beam:metric:user:sum_int64:v1".into(),
        r#type: "beam:metrics:sum_int64:v1".into(),
        payload: payload.into(),
        labels: [("PTRANSFORM", "t"), ("NAMESPACE", "test"), ("NAME", name)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        start_time: None,
    }
}

/// The pipeline option Beam's client sends for `--streaming`.
pub const STREAMING_OPTION: &str = "beam:option:streaming:v1";

/// Pipeline options with `--streaming` set.
pub fn streaming_options() -> prost_types::Struct {
    prost_types::Struct {
        fields: [(
            STREAMING_OPTION.to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::BoolValue(true)),
            },
        )]
        .into_iter()
        .collect(),
    }
}

impl Executor for FakeExecutor {
    /// Like the real executor: `--streaming` jobs are drainable.
    fn is_drainable(&self, _pipeline: &Pipeline, options: &prost_types::Struct) -> bool {
        matches!(
            options
                .fields
                .get(STREAMING_OPTION)
                .and_then(|v| v.kind.as_ref()),
            Some(prost_types::value::Kind::BoolValue(true))
        )
    }

    fn validate(&self, pipeline: &Pipeline, _options: &prost_types::Struct) -> Result<(), String> {
        for (id, t) in pipeline.components.iter().flat_map(|c| c.transforms.iter()) {
            if t.spec.as_ref().is_some_and(|s| s.urn == REJECT_URN) {
                return Err(format!(
                    "transform {id} uses unsupported URN {REJECT_URN}; use something else"
                ));
            }
        }
        Ok(())
    }

    fn execute(&self, job: JobContext) -> BoxFuture<'static, Result<(), String>> {
        self.seen.lock().push(Seen {
            job_id: job.job_id.clone(),
            artifacts: job.artifacts.clone(),
            pipeline: job.pipeline.clone(),
            work_dir: job.work_dir.clone(),
        });
        let behavior = self.behavior.clone();
        Box::pin(async move {
            job.events.message(
                MessageImportance::JobMessageBasic,
                "fake execution started".into(),
            );
            match behavior {
                Behavior::Succeed(delay) => {
                    tokio::time::sleep(delay).await;
                    job.events.metrics(
                        vec![user_counter("elements", 42)],
                        vec![user_counter("elements", 40)],
                    );
                    Ok(())
                }
                Behavior::Fail(text) => Err(text),
                Behavior::WaitForCancel => {
                    let mut cancel = job.cancel.clone();
                    let _ = cancel.wait_for(|c| *c).await;
                    Ok(())
                }
                Behavior::WaitForDrain => {
                    let (mut drain, mut cancel) = (job.drain.clone(), job.cancel.clone());
                    tokio::select! {
                        _ = drain.wait_for(|d| *d) => {}
                        _ = cancel.wait_for(|c| *c) => {}
                    }
                    Ok(())
                }
                Behavior::FailOnDrain(text) => {
                    let mut drain = job.drain.clone();
                    let _ = drain.wait_for(|d| *d).await;
                    Err(text)
                }
                Behavior::Hang => {
                    std::future::pending::<()>().await;
                    Ok(())
                }
                Behavior::Panic => panic!("fake executor exploded"),
            }
        })
    }
}

/// A job server on an ephemeral loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub server: JobServer,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(executor: Arc<dyn Executor>) -> TestServer {
        Self::start_with(executor, |c| c).await
    }

    pub async fn start_with(
        executor: Arc<dyn Executor>,
        tweak: impl FnOnce(JobServiceConfig) -> JobServiceConfig,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let config = tweak(JobServiceConfig::with_root(dir.path().join("jobs")));
        let server = JobServer::new(executor, config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let s = server.clone();
        let task = tokio::spawn(async move {
            s.serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            server,
            dir,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> JobServiceClient<Channel> {
        JobServiceClient::connect(self.url()).await.unwrap()
    }

    /// Stops the server and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server did not stop in time")
            .unwrap();
    }
}

/// A server whose fake executor behaves as `behavior`, and a client of it.
pub async fn serve(behavior: Behavior) -> (TestServer, JobServiceClient<Channel>) {
    let server = TestServer::start(FakeExecutor::new(behavior)).await;
    let client = server.client().await;
    (server, client)
}

/// A client-side file artifact for `path` staged as `staged_name`.
pub fn file_artifact(path: &str, staged_name: Option<&str>) -> ArtifactInformation {
    ArtifactInformation {
        type_urn: FILE_URN.into(),
        type_payload: ArtifactFilePayload {
            path: path.into(),
            sha256: String::new(),
        }
        .encode_to_vec()
        .into(),
        role_urn: if staged_name.is_some() {
            STAGING_TO_URN.into()
        } else {
            String::new()
        },
        role_payload: staged_name
            .map(|n| {
                ArtifactStagingToRolePayload {
                    staged_name: n.into(),
                }
                .encode_to_vec()
                .into()
            })
            .unwrap_or_default(),
    }
}

/// A pipeline whose environments have the given dependencies.
pub fn pipeline(envs: &[(&str, Vec<ArtifactInformation>)]) -> Pipeline {
    let environments = envs
        .iter()
        .map(|(id, deps)| {
            (
                id.to_string(),
                Environment {
                    urn: "beam:env:external:v1".into(),
                    dependencies: deps.clone(),
                    ..Default::default()
                },
            )
        })
        .collect();
    let transforms = [(
        "impulse".to_string(),
        PTransform {
            unique_name: "Impulse".into(),
            spec: Some(ferrobeam_proto::pipeline::v1::FunctionSpec {
                urn: "beam:transform:impulse:v1".into(),
                payload: Default::default(),
            }),
            ..Default::default()
        },
    )]
    .into_iter()
    .collect();
    Pipeline {
        components: Some(Components {
            environments,
            transforms,
            ..Default::default()
        }),
        root_transform_ids: vec!["impulse".into()],
        ..Default::default()
    }
}

pub async fn prepare(
    client: &mut JobServiceClient<Channel>,
    pipeline: Pipeline,
) -> PrepareJobResponse {
    client
        .prepare(PrepareJobRequest {
            pipeline: Some(pipeline),
            pipeline_options: None,
            job_name: "test job".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Prepares a job whose one environment `env` depends on the client file
/// `f`, staged as `staged_name`.
pub async fn prepare_one_file(
    client: &mut JobServiceClient<Channel>,
    staged_name: &str,
) -> PrepareJobResponse {
    prepare(
        client,
        pipeline(&[("env", vec![file_artifact("f", Some(staged_name))])]),
    )
    .await
}

/// The client files for [`prepare_one_file`]: just `f` with `data`.
pub fn one_file(data: Vec<u8>) -> HashMap<String, Vec<u8>> {
    [("f".to_string(), data)].into_iter().collect()
}

/// Prepares a `--streaming` job with no environments and returns its id.
pub async fn prepare_streaming(client: &mut JobServiceClient<Channel>) -> String {
    client
        .prepare(PrepareJobRequest {
            pipeline: Some(pipeline(&[])),
            pipeline_options: Some(streaming_options()),
            job_name: "streaming job".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .preparation_id
}

/// Prepares a job with no environments and returns its preparation id.
pub async fn prepare_empty(client: &mut JobServiceClient<Channel>) -> String {
    prepare(client, pipeline(&[])).await.preparation_id
}

/// Runs a prepared job (no retrieval token).
pub async fn run_job(
    client: &mut JobServiceClient<Channel>,
    preparation_id: impl Into<String>,
) -> Result<RunJobResponse, Status> {
    client
        .run(RunJobRequest {
            preparation_id: preparation_id.into(),
            retrieval_token: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Prepares a job with no environments, runs it and returns its id.
pub async fn prepare_and_run_empty(client: &mut JobServiceClient<Channel>) -> String {
    let job_id = prepare_empty(client).await;
    run_job(client, &job_id).await.unwrap();
    job_id
}

/// Asks the server to cancel a job.
pub async fn cancel_job(
    client: &mut JobServiceClient<Channel>,
    job_id: &str,
) -> Result<CancelJobResponse, Status> {
    client
        .cancel(CancelJobRequest {
            job_id: job_id.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Asks the server to drain a job (Beam's `JobService.Drain`).
pub async fn drain_job(
    client: &mut JobServiceClient<Channel>,
    job_id: &str,
) -> Result<DrainJobResponse, Status> {
    client
        .drain(DrainJobRequest {
            job_id: job_id.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Polls until the job is in `state`.
pub async fn wait_for_state(
    client: &mut JobServiceClient<Channel>,
    job_id: &str,
    state: ferrobeam_proto::job_api::job_state::Enum,
) {
    within(5, async {
        while job_state(client, job_id).await.unwrap().state != state as i32 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// The current state of a job.
pub async fn job_state(
    client: &mut JobServiceClient<Channel>,
    job_id: &str,
) -> Result<JobStateEvent, Status> {
    client
        .get_state(GetJobStateRequest {
            job_id: job_id.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Stages `files` for a prepared job as a well-behaved client would, in
/// `chunk`-byte pieces, failing the test if it takes over `secs` seconds.
pub async fn stage_prepared(
    secs: u64,
    prep: &PrepareJobResponse,
    files: &HashMap<String, Vec<u8>>,
    chunk: usize,
) -> Result<(), Status> {
    let endpoint = &prep.artifact_staging_endpoint.as_ref().unwrap().url;
    within(
        secs,
        stage(
            endpoint,
            &prep.staging_session_token,
            files,
            chunk,
            ClientQuirks::default(),
        ),
    )
    .await
}

/// How the fake client misbehaves while staging.
#[derive(Clone, Copy, Default)]
pub struct ClientQuirks {
    /// Send this many data chunks of the first artifact, then hang up.
    pub hang_up_after_chunks: Option<usize>,
}

/// Plays Beam's client side of reverse artifact retrieval: resolves every
/// artifact to itself and serves file artifacts from `files` (by path).
pub async fn stage(
    endpoint: &str,
    token: &str,
    files: &HashMap<String, Vec<u8>>,
    chunk: usize,
    quirks: ClientQuirks,
) -> Result<(), Status> {
    let mut client = ArtifactStagingServiceClient::connect(format!("http://{endpoint}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(64);
    tx.send(ArtifactResponseWrapper {
        staging_token: token.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut requests = client
        .reverse_artifact_retrieval_service(ReceiverStream::new(rx))
        .await?
        .into_inner();
    while let Some(request) = requests.message().await? {
        match request.request {
            Some(ServerRequest::ResolveArtifact(r)) => {
                let response = ClientResponse::ResolveArtifactResponse(ResolveArtifactsResponse {
                    replacements: r.artifacts,
                });
                let _ = tx
                    .send(ArtifactResponseWrapper {
                        response: Some(response),
                        ..Default::default()
                    })
                    .await;
            }
            Some(ServerRequest::GetArtifact(g)) => {
                let artifact = g.artifact.unwrap();
                let path = ArtifactFilePayload::decode(artifact.type_payload.as_ref())
                    .unwrap()
                    .path;
                let data = files.get(&path).cloned().unwrap_or_default();
                for (i, piece) in data.chunks(chunk.max(1)).enumerate() {
                    if quirks.hang_up_after_chunks == Some(i) {
                        drop(tx);
                        // Drain until the server gives up on us.
                        while requests.message().await?.is_some() {}
                        return Ok(());
                    }
                    let response = ClientResponse::GetArtifactResponse(GetArtifactResponse {
                        data: piece.to_vec().into(),
                    });
                    let _ = tx
                        .send(ArtifactResponseWrapper {
                            response: Some(response),
                            ..Default::default()
                        })
                        .await;
                }
                let last = ClientResponse::GetArtifactResponse(GetArtifactResponse {
                    data: Default::default(),
                });
                let _ = tx
                    .send(ArtifactResponseWrapper {
                        response: Some(last),
                        is_last: true,
                        ..Default::default()
                    })
                    .await;
            }
            None => panic!("server sent an empty request"),
        }
    }
    Ok(())
}

/// Decodes the local path of a file artifact.
pub fn file_path(artifact: &ArtifactInformation) -> String {
    assert_eq!(artifact.type_urn, FILE_URN);
    ArtifactFilePayload::decode(artifact.type_payload.as_ref())
        .unwrap()
        .path
}

pub fn staged_name(artifact: &ArtifactInformation) -> String {
    ArtifactStagingToRolePayload::decode(artifact.role_payload.as_ref())
        .unwrap()
        .staged_name
}

/// Runs `f` with a generous timeout so a hung stream fails the test instead
/// of hanging it.
pub async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("timed out")
}
