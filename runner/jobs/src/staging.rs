//! `ArtifactStagingService`: pulling a job's artifacts from the client.
//!
//! Beam stages artifacts "in reverse": the client opens
//! `ReverseArtifactRetrievalService` and sends its staging token; from then
//! on the *server* sends requests (ResolveArtifacts, then GetArtifact for
//! each artifact) and the client answers, GetArtifact answers arriving as
//! data chunks ending with `is_last`.  When the server has everything it
//! closes its side.
//!
//! We store each artifact under `<artifact_root>/<job id>/<environment>/`
//! with a file name *we* generate from sanitised parts; client-supplied
//! names never become paths.  Each artifact is then described as a local
//! file (`beam:artifact:type:file:v1`) with its role kept, so workers still
//! find it under its staged name (e.g. `pickled_main_session`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferrobeam_proto::job_api::artifact_request_wrapper::Request as ServerRequest;
use ferrobeam_proto::job_api::artifact_response_wrapper::Response as ClientResponse;
use ferrobeam_proto::job_api::artifact_staging_service_server::ArtifactStagingService;
use ferrobeam_proto::job_api::{
    ArtifactRequestWrapper, ArtifactResponseWrapper, GetArtifactRequest, ResolveArtifactsRequest,
};
use ferrobeam_proto::pipeline::v1::{
    ArtifactFilePayload, ArtifactInformation, ArtifactStagingToRolePayload, Pipeline,
};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::fsutil::{
    create_private_dir, remove_dir_if_exists, sanitize_component, sanitized_basename,
};
use crate::job::{ArtifactMap, Job};
use crate::server::Shared;
use crate::status::{clip, clip_to};
use crate::streams::ResponseStream;
use crate::urns::{ARTIFACT_ROLE_STAGING_TO, ARTIFACT_TYPE_FILE};

/// Why staging a job's artifacts failed.
#[derive(Debug, thiserror::Error)]
enum StagingError {
    #[error("artifact {name} is larger than the per-artifact limit of {limit} bytes")]
    ArtifactTooLarge { name: String, limit: u64 },
    #[error("the job's artifacts exceed the total limit of {limit} bytes")]
    TotalTooLarge { limit: u64 },
    #[error("the job has more artifacts than the limit of {limit} per job")]
    TooManyArtifacts { limit: usize },
    #[error("staging protocol violation: {0}")]
    Protocol(String),
    #[error(
        "artifact staged name {0:?} is not a plain file name (it has `..`, a path separator \
         or a NUL byte): refused, nothing may be written outside the artifact directory"
    )]
    UnsafeName(String),
    #[error("the client reported an error: {}", .0.message())]
    Client(Status),
    #[error("the client closed the staging stream before all artifacts were transferred")]
    ClientClosed,
    #[error("no message from the client for {}s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("cannot store artifact at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the job server is shutting down")]
    ShuttingDown,
}

impl StagingError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StagingError + '_ {
        move |source| StagingError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn to_status(&self) -> Status {
        let text = clip(&format!("artifact staging failed: {self}"));
        match self {
            StagingError::ArtifactTooLarge { .. }
            | StagingError::TotalTooLarge { .. }
            | StagingError::TooManyArtifacts { .. } => Status::resource_exhausted(text),
            StagingError::Protocol(_) | StagingError::UnsafeName(_) => {
                Status::invalid_argument(text)
            }
            StagingError::Client(_) | StagingError::ClientClosed => Status::aborted(text),
            StagingError::Timeout(_) => Status::deadline_exceeded(text),
            StagingError::Io { .. } => Status::internal(text),
            StagingError::ShuttingDown => Status::unavailable(text),
        }
    }
}

/// Limits applied while staging one job.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_artifact_bytes: u64,
    max_total_bytes: u64,
    max_artifacts: usize,
    idle_timeout: Duration,
}

/// The `ArtifactStagingService` implementation; get one from
/// [`crate::JobServer::artifact_staging_service`].
pub struct ArtifactStaging {
    shared: Arc<Shared>,
}

impl ArtifactStaging {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        ArtifactStaging { shared }
    }
}

#[tonic::async_trait]
impl ArtifactStagingService for ArtifactStaging {
    type ReverseArtifactRetrievalServiceStream = ResponseStream<ArtifactRequestWrapper>;

    async fn reverse_artifact_retrieval_service(
        &self,
        request: Request<Streaming<ArtifactResponseWrapper>>,
    ) -> Result<Response<Self::ReverseArtifactRetrievalServiceStream>, Status> {
        if *self.shared.shutdown.borrow() {
            return Err(Status::unavailable("the job server is shutting down"));
        }
        let config = &self.shared.config;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(config.staging_idle_timeout, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no staging token arrived on the staging stream")
            })??
            .ok_or_else(|| {
                Status::invalid_argument("the staging stream ended before a staging token was sent")
            })?;
        if first.staging_token.is_empty() {
            return Err(Status::invalid_argument(
                "the first staging message must carry the staging token",
            ));
        }
        let job = self
            .shared
            .registry
            .by_staging_token(&first.staging_token)
            .ok_or_else(|| Status::not_found("unknown staging token"))?;
        job.begin_staging()?;
        let guard = StagingGuard {
            job: job.clone(),
            finished: false,
        };
        tracing::info!(job = %job.id, "staging artifacts");

        let (tx, rx) = mpsc::channel(4);
        let stager = Stager {
            inbound,
            tx: tx.clone(),
            shutdown: self.shared.shutdown.subscribe(),
            limits: Limits {
                max_artifact_bytes: config.max_artifact_bytes,
                max_total_bytes: config.max_total_artifact_bytes,
                max_artifacts: config.max_artifacts_per_job,
                idle_timeout: config.staging_idle_timeout,
            },
            job_dir: self.shared.job_artifact_dir(&job),
            total_bytes: 0,
            artifact_count: 0,
        };
        let pipeline = job.pipeline();
        tokio::spawn(async move {
            let job_dir = stager.job_dir.clone();
            match stager.run(&pipeline).await {
                Ok(artifacts) => {
                    let count: usize = artifacts.values().map(Vec::len).sum();
                    tracing::info!(job = %guard.job.id, artifacts = count, "staged artifacts");
                    guard.finish(Ok(artifacts));
                    // Dropping `tx` ends our side of the stream with OK.
                }
                Err(err) => {
                    tracing::warn!(job = %guard.job.id, "staging failed: {err}");
                    let _ =
                        tokio::task::spawn_blocking(move || remove_dir_if_exists(&job_dir)).await;
                    guard.finish(Err(err.to_string()));
                    let _ = tx.send(Err(err.to_status())).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Records a staging outcome exactly once, also when the staging task dies.
struct StagingGuard {
    job: Arc<Job>,
    finished: bool,
}

impl StagingGuard {
    fn finish(mut self, outcome: Result<ArtifactMap, String>) {
        self.finished = true;
        self.job.finish_staging(outcome);
    }
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.job
                .finish_staging(Err("staging was interrupted".into()));
        }
    }
}

/// Drives one reverse-retrieval conversation.
struct Stager {
    inbound: Streaming<ArtifactResponseWrapper>,
    tx: mpsc::Sender<Result<ArtifactRequestWrapper, Status>>,
    shutdown: watch::Receiver<bool>,
    limits: Limits,
    job_dir: PathBuf,
    total_bytes: u64,
    artifact_count: usize,
}

impl Stager {
    async fn run(mut self, pipeline: &Pipeline) -> Result<ArtifactMap, StagingError> {
        // A previous failed attempt may have left files behind.
        let dir = self.job_dir.clone();
        tokio::task::spawn_blocking(move || {
            remove_dir_if_exists(&dir).and_then(|()| create_private_dir(&dir))
        })
        .await
        .map_err(|e| StagingError::Io {
            path: self.job_dir.clone(),
            source: std::io::Error::other(e),
        })?
        .map_err(StagingError::io(&self.job_dir))?;

        // Sorted, so directory names are deterministic.
        let environments: BTreeMap<&String, &Vec<ArtifactInformation>> = pipeline
            .components
            .iter()
            .flat_map(|c| {
                c.environments
                    .iter()
                    .map(|(id, env)| (id, &env.dependencies))
            })
            .collect();
        let mut used_dirs = HashSet::new();
        let mut resolved = HashMap::new();
        for (env_id, deps) in environments {
            if deps.is_empty() {
                resolved.insert(env_id.clone(), Vec::new());
                continue;
            }
            let env_dir = self.job_dir.join(unique_dir_name(env_id, &mut used_dirs));
            let staged = self.stage_environment(env_id, deps, &env_dir).await?;
            resolved.insert(env_id.clone(), staged);
        }
        Ok(resolved)
    }

    async fn stage_environment(
        &mut self,
        env_id: &str,
        deps: &[ArtifactInformation],
        env_dir: &Path,
    ) -> Result<Vec<ArtifactInformation>, StagingError> {
        self.send(ServerRequest::ResolveArtifact(ResolveArtifactsRequest {
            artifacts: deps.to_vec(),
            // Anything the client can fetch will do: we fetch it all.
            preferred_urns: Vec::new(),
        }))
        .await?;
        let replacements = match self.recv().await?.response {
            Some(ClientResponse::ResolveArtifactResponse(r)) => r.replacements,
            other => {
                return Err(StagingError::Protocol(format!(
                    "expected the resolved artifacts of environment {:?}, got {}",
                    clip_to(env_id, 200),
                    describe(&other)
                )))
            }
        };
        self.artifact_count += replacements.len();
        if self.artifact_count > self.limits.max_artifacts {
            return Err(StagingError::TooManyArtifacts {
                limit: self.limits.max_artifacts,
            });
        }
        let dir = env_dir.to_path_buf();
        tokio::task::spawn_blocking(move || create_private_dir(&dir))
            .await
            .map_err(|e| StagingError::Io {
                path: env_dir.to_path_buf(),
                source: std::io::Error::other(e),
            })?
            .map_err(StagingError::io(env_dir))?;

        let mut staged = Vec::with_capacity(replacements.len());
        for (index, artifact) in replacements.into_iter().enumerate() {
            staged.push(self.fetch(env_dir, index, artifact).await?);
        }
        Ok(staged)
    }

    /// Fetches one artifact into a file of our naming and returns its new
    /// description.
    async fn fetch(
        &mut self,
        env_dir: &Path,
        index: usize,
        artifact: ArtifactInformation,
    ) -> Result<ArtifactInformation, StagingError> {
        let staged_name = staged_name(&artifact);
        if let Some(name) = &staged_name {
            check_staged_name(name)?;
        }
        let label = staged_name
            .as_deref()
            .map(|n| clip_to(n, 200))
            .unwrap_or_else(|| format!("#{index} ({})", clip_to(&artifact.type_urn, 200)));
        let file_name = format!(
            "{index:04}-{}",
            sanitized_basename(staged_name.as_deref().unwrap_or(""), "artifact")
        );
        let path = env_dir.join(file_name);
        let path_text = path
            .to_str()
            .ok_or_else(|| StagingError::Protocol(format!("path {} is not UTF-8", path.display())))?
            .to_string();

        self.send(ServerRequest::GetArtifact(GetArtifactRequest {
            artifact: Some(artifact.clone()),
        }))
        .await?;
        let mut options = tokio::fs::OpenOptions::new();
        // `create_new` never follows or reuses an existing file.
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(&path).await.map_err(StagingError::io(&path))?;
        let mut size: u64 = 0;
        loop {
            let message = self.recv().await?;
            match message.response {
                Some(ClientResponse::GetArtifactResponse(chunk)) => {
                    let len = chunk.data.len() as u64;
                    size += len;
                    self.total_bytes += len;
                    if size > self.limits.max_artifact_bytes {
                        return Err(StagingError::ArtifactTooLarge {
                            name: label,
                            limit: self.limits.max_artifact_bytes,
                        });
                    }
                    if self.total_bytes > self.limits.max_total_bytes {
                        return Err(StagingError::TotalTooLarge {
                            limit: self.limits.max_total_bytes,
                        });
                    }
                    file.write_all(&chunk.data)
                        .await
                        .map_err(StagingError::io(&path))?;
                }
                None if message.is_last => {}
                other => {
                    return Err(StagingError::Protocol(format!(
                        "expected data of artifact {label}, got {}",
                        describe(&other)
                    )))
                }
            }
            if message.is_last {
                break;
            }
        }
        file.flush().await.map_err(StagingError::io(&path))?;
        tracing::debug!(artifact = %label, bytes = size, path = %path_text, "staged artifact");
        Ok(ArtifactInformation {
            type_urn: ARTIFACT_TYPE_FILE.to_string(),
            type_payload: ArtifactFilePayload {
                path: path_text,
                sha256: String::new(),
            }
            .encode_to_vec()
            .into(),
            role_urn: artifact.role_urn,
            role_payload: artifact.role_payload,
        })
    }

    async fn send(&mut self, request: ServerRequest) -> Result<(), StagingError> {
        self.tx
            .send(Ok(ArtifactRequestWrapper {
                request: Some(request),
            }))
            .await
            .map_err(|_| StagingError::ClientClosed)
    }

    async fn recv(&mut self) -> Result<ArtifactResponseWrapper, StagingError> {
        let idle = self.limits.idle_timeout;
        tokio::select! {
            res = tokio::time::timeout(idle, self.inbound.message()) => match res {
                Err(_) => Err(StagingError::Timeout(idle)),
                Ok(Err(status)) => Err(StagingError::Client(status)),
                Ok(Ok(None)) => Err(StagingError::ClientClosed),
                Ok(Ok(Some(message))) => Ok(message),
            },
            _ = self.shutdown.wait_for(|s| *s) => Err(StagingError::ShuttingDown),
        }
    }
}

/// The `staging_to` name of an artifact, if it has that role.
fn staged_name(artifact: &ArtifactInformation) -> Option<String> {
    if artifact.role_urn != ARTIFACT_ROLE_STAGING_TO {
        return None;
    }
    ArtifactStagingToRolePayload::decode(artifact.role_payload.as_ref())
        .ok()
        .map(|p| p.staged_name)
        .filter(|n| !n.is_empty())
}

/// Refuses a staged name that is not one plain file name.  Names are
/// sanitised before they become paths anyway (see `fetch`), but workers
/// materialise artifacts under their staged names, and a client sending
/// `../x` is not making an honest mistake: fail loudly instead of quietly
/// renaming.
fn check_staged_name(name: &str) -> Result<(), StagingError> {
    let bad = name == "." || name == ".." || name.contains(['/', '\\', '\0']);
    if bad {
        Err(StagingError::UnsafeName(clip_to(name, 200)))
    } else {
        Ok(())
    }
}

/// A sanitised directory name for an environment, distinct from the others.
fn unique_dir_name(env_id: &str, used: &mut HashSet<String>) -> String {
    let base = sanitize_component(env_id, "environment");
    let mut name = base.clone();
    let mut n = 1;
    while !used.insert(name.clone()) {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

fn describe(response: &Option<ClientResponse>) -> &'static str {
    match response {
        Some(ClientResponse::ResolveArtifactResponse(_)) => "a ResolveArtifacts response",
        Some(ClientResponse::GetArtifactResponse(_)) => "artifact data",
        None => "an empty message",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_dirs_are_unique_and_safe() {
        let mut used = HashSet::new();
        assert_eq!(unique_dir_name("a/b", &mut used), "a_b");
        assert_eq!(unique_dir_name("a_b", &mut used), "a_b-2");
        assert_eq!(unique_dir_name("..", &mut used), "environment");
        assert_eq!(unique_dir_name("", &mut used), "environment-2");
    }

    #[test]
    fn staged_names_must_be_plain_file_names() {
        for ok in [
            "pickled_main_session",
            "x.whl",
            "a..b",
            ".hidden",
            "requirements.txt",
        ] {
            assert!(check_staged_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "..",
            ".",
            "../x",
            "a/../../b",
            "/etc/passwd",
            "a/b",
            "..\\x",
            "a\0b",
        ] {
            let err = check_staged_name(bad).unwrap_err();
            assert!(
                err.to_string().contains("not a plain file name"),
                "{bad}: {err}"
            );
            assert_eq!(err.to_status().code(), tonic::Code::InvalidArgument);
        }
    }

    #[test]
    fn staged_name_needs_the_staging_role() {
        let payload = ArtifactStagingToRolePayload {
            staged_name: "x.whl".into(),
        }
        .encode_to_vec();
        let mut a = ArtifactInformation {
            role_urn: ARTIFACT_ROLE_STAGING_TO.into(),
            role_payload: payload.into(),
            ..Default::default()
        };
        assert_eq!(staged_name(&a).as_deref(), Some("x.whl"));
        a.role_urn = "beam:artifact:role:other:v1".into();
        assert_eq!(staged_name(&a), None);
        a.role_urn = ARTIFACT_ROLE_STAGING_TO.into();
        a.role_payload = bytes::Bytes::from_static(b"\xff\xff");
        assert_eq!(staged_name(&a), None);
    }
}
