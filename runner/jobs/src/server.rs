//! The public entry point: [`JobServer`] builds the gRPC services and can
//! serve them on a listener.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ferrobeam_proto::expansion::v1::expansion_service_server::ExpansionServiceServer;
use ferrobeam_proto::ferrobeam_control::job_control_server::JobControlServer;
use ferrobeam_proto::job_api::artifact_retrieval_service_server::ArtifactRetrievalServiceServer;
use ferrobeam_proto::job_api::artifact_staging_service_server::ArtifactStagingServiceServer;
use ferrobeam_proto::job_api::job_service_server::JobServiceServer;
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;
use tonic::Status;

use crate::config::JobServiceConfig;
use crate::error::JobsError;
use crate::executor::Executor;
use crate::expansion::ExpansionApi;
use crate::fsutil::{create_private_dir, remove_dir_if_exists};
use crate::job::Job;
use crate::job_control::JobControlApi;
use crate::registry::Registry;
use crate::retrieval::ArtifactRetrieval;
use crate::service::JobApi;
use crate::staging::ArtifactStaging;

/// State shared by the job, staging and retrieval services.
pub(crate) struct Shared {
    pub executor: Arc<dyn Executor>,
    pub config: JobServiceConfig,
    /// Canonical form of `config.artifact_root`, the prefix every served
    /// or written artifact path must have.
    pub artifact_root: PathBuf,
    /// Canonical form of `config.work_root`.
    pub work_root: PathBuf,
    pub registry: Registry,
    public_endpoint: RwLock<Option<String>>,
    /// Flipped once by [`JobServer::shutdown`]; open streams end on it.
    pub shutdown: watch::Sender<bool>,
}

impl Shared {
    /// The artifact staging endpoint to return from Prepare: the configured
    /// public address, else the address this connection reached us on.
    pub(crate) fn staging_endpoint(
        &self,
        local_addr: Option<SocketAddr>,
    ) -> Result<String, Status> {
        if let Some(endpoint) = self.public_endpoint.read().clone() {
            return Ok(endpoint);
        }
        local_addr.map(|a| a.to_string()).ok_or_else(|| {
            Status::internal(
                "the job server does not know its own address; \
                 call JobServer::set_public_endpoint when serving on a custom transport",
            )
        })
    }

    pub(crate) fn job_artifact_dir(&self, job: &Job) -> PathBuf {
        self.artifact_root.join(&job.id)
    }

    pub(crate) fn job_work_dir(&self, job: &Job) -> PathBuf {
        self.work_root.join(&job.id)
    }

    /// Forgets jobs past retention and deletes their files in the background.
    pub(crate) fn evict_old_jobs(self: &Arc<Self>) {
        let evicted = self.registry.evict(&self.config);
        if evicted.is_empty() {
            return;
        }
        let dirs: Vec<PathBuf> = evicted
            .iter()
            .flat_map(|job| [self.job_artifact_dir(job), self.job_work_dir(job)])
            .collect();
        for job in &evicted {
            tracing::info!(job = %job.id, "forgetting job");
            // A prepared job that was never run ends as CANCELLED, so any
            // stream still following it closes.
            job.request_cancel();
        }
        tokio::task::spawn_blocking(move || {
            for dir in dirs {
                if let Err(e) = remove_dir_if_exists(&dir) {
                    tracing::warn!(dir = %dir.display(), "cannot remove directory of a forgotten job: {e}");
                }
            }
        });
    }
}

/// Beam's Job API plus artifact staging and retrieval, backed by an
/// [`Executor`].
///
/// Cheap to clone; all clones share the same jobs.
///
/// ```no_run
/// # async fn demo(executor: std::sync::Arc<dyn ferrobeam_jobs::Executor>) -> Result<(), Box<dyn std::error::Error>> {
/// use ferrobeam_jobs::{JobServer, JobServiceConfig};
/// let server = JobServer::new(executor, JobServiceConfig::with_root("/var/lib/ferrobeam"))?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8099").await?;
/// server.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JobServer {
    shared: Arc<Shared>,
}

impl JobServer {
    /// Creates the service, creating (and canonicalising) the artifact and
    /// work roots.
    pub fn new(executor: Arc<dyn Executor>, config: JobServiceConfig) -> Result<Self, JobsError> {
        let artifact_root = prepare_root(&config.artifact_root)?;
        if artifact_root.to_str().is_none() {
            return Err(JobsError::NonUtf8Root(artifact_root));
        }
        let work_root = prepare_root(&config.work_root)?;
        let public_endpoint = RwLock::new(config.public_endpoint.clone());
        Ok(JobServer {
            shared: Arc::new(Shared {
                executor,
                config,
                artifact_root,
                work_root,
                registry: Registry::default(),
                public_endpoint,
                shutdown: watch::channel(false).0,
            }),
        })
    }

    /// Sets the address (`host:port`) clients are told to stage artifacts
    /// to.  Call it with the bound listener's address when serving on a
    /// transport that does not report local addresses, or when clients reach
    /// us through a forwarded port.
    pub fn set_public_endpoint(&self, endpoint: impl Into<String>) {
        *self.shared.public_endpoint.write() = Some(endpoint.into());
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// The canonical artifact root (files served to workers live below it).
    pub fn artifact_root(&self) -> &std::path::Path {
        &self.shared.artifact_root
    }

    /// The `JobService` to mount on a `tonic::transport::Server`.
    pub fn job_service(&self) -> JobServiceServer<JobApi> {
        let c = &self.shared.config;
        JobServiceServer::new(JobApi::new(self.shared.clone()))
            .max_decoding_message_size(c.max_decoding_message_bytes)
            .max_encoding_message_size(c.max_encoding_message_bytes)
    }

    /// The `ArtifactStagingService` clients upload artifacts through.
    pub fn artifact_staging_service(&self) -> ArtifactStagingServiceServer<ArtifactStaging> {
        let c = &self.shared.config;
        ArtifactStagingServiceServer::new(ArtifactStaging::new(self.shared.clone()))
            .max_decoding_message_size(c.max_decoding_message_bytes)
            .max_encoding_message_size(c.max_encoding_message_bytes)
    }

    /// The `ArtifactRetrievalService` SDK workers fetch staged files from.
    pub fn artifact_retrieval_service(&self) -> ArtifactRetrievalServiceServer<ArtifactRetrieval> {
        let c = &self.shared.config;
        ArtifactRetrievalServiceServer::new(ArtifactRetrieval::new(self.shared.clone()))
            .max_decoding_message_size(c.max_decoding_message_bytes)
            .max_encoding_message_size(c.max_encoding_message_bytes)
    }

    /// ferrobeam's own `JobControl` service (savepoints).
    pub fn job_control_service(&self) -> JobControlServer<JobControlApi> {
        JobControlServer::new(JobControlApi::new(self.shared.clone()))
    }

    /// Beam's `ExpansionService`, answered by the executor.
    pub fn expansion_service(&self) -> ExpansionServiceServer<ExpansionApi> {
        let c = &self.shared.config;
        let executor = self.shared.executor.clone();
        ExpansionServiceServer::new(ExpansionApi::new(Arc::new(move |r| executor.expand(r))))
            .max_decoding_message_size(c.max_decoding_message_bytes)
            .max_encoding_message_size(c.max_encoding_message_bytes)
    }

    /// All the services, ready for `Server::builder().add_routes(..)`.
    pub fn routes(&self) -> Routes {
        Routes::new(self.job_service())
            .add_service(self.artifact_staging_service())
            .add_service(self.artifact_retrieval_service())
            .add_service(self.job_control_service())
            .add_service(self.expansion_service())
    }

    /// Ends all open state, message and staging streams with UNAVAILABLE and
    /// cancels running jobs.  Call it before stopping the gRPC server: a
    /// graceful shutdown otherwise waits for streams of jobs that never end.
    pub fn shutdown(&self) {
        if self.shared.shutdown.send_replace(true) {
            return;
        }
        tracing::info!("job service shutting down");
        for job in self.shared.registry.active() {
            job.request_cancel();
        }
    }

    /// Serves the job and artifact services on `listener` until `shutdown`
    /// resolves, then calls [`JobServer::shutdown`] and stops gracefully.
    pub async fn serve<F>(&self, listener: TcpListener, shutdown: F) -> Result<(), JobsError>
    where
        F: Future<Output = ()> + Send,
    {
        let addr = listener.local_addr().map_err(JobsError::ListenerAddr)?;
        tracing::info!(%addr, "job service listening");
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let this = self.clone();
        let signal = async move {
            shutdown.await;
            this.shutdown();
        };
        tonic::transport::Server::builder()
            // One check for every service on the port (see `ferrobeam_auth`).
            .layer(ferrobeam_auth::GrpcAuthLayer::new(
                self.shared.config.auth_token.clone(),
            ))
            .add_routes(self.routes())
            .serve_with_incoming_shutdown(incoming, signal)
            .await?;
        Ok(())
    }
}

fn prepare_root(path: &std::path::Path) -> Result<PathBuf, JobsError> {
    let err = |source| JobsError::CreateDir {
        path: path.to_path_buf(),
        source,
    };
    create_private_dir(path).map_err(err)?;
    path.canonicalize().map_err(err)
}
