//! `ferrobeam worker-pool`: Beam's `BeamFnExternalWorkerPool` service on a
//! host of its own, starting stock Python SDK harnesses for a job server
//! elsewhere (`ferrobeam job-server --worker_pools HOST:PORT,...`).
//!
//! Beam's own `worker_pool_main` only hands its workers the control
//! endpoint: no pipeline options, no staged artifacts (the pickled main
//! session), no logging.  So this pool does what Beam's container boot
//! program does before it starts the harness: it asks the job server's
//! provision service for the worker's options and dependencies, fetches
//! the staged files from its artifact retrieval service, and then starts
//! the harness exactly as the job server starts its local workers (the
//! same boot code, kept warm, with ferrobeam's harness hooks).
//!
//! Workers die with the pool (see `EXIT_WITH_PARENT` in the launcher): a
//! pool that is gone must not leave workers running bundles unsupervised;
//! the job server retries their bundles on other pools.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferrobeam_auth::{AuthChannel, AuthToken};
use ferrobeam_fnapi::environment::{
    http_url, python_worker_env, sanitize, start_python, PythonWorker, WarmPython,
};
use ferrobeam_fnapi::provision::{options_json, staged_name};
use ferrobeam_fnapi::WORKER_ID_HEADER;
use ferrobeam_proto::fn_api::beam_fn_external_worker_pool_server::{
    BeamFnExternalWorkerPool, BeamFnExternalWorkerPoolServer,
};
use ferrobeam_proto::fn_api::provision_service_client::ProvisionServiceClient;
use ferrobeam_proto::fn_api::{
    GetProvisionInfoRequest, ProvisionInfo, StartWorkerRequest, StartWorkerResponse,
    StopWorkerRequest, StopWorkerResponse,
};
use ferrobeam_proto::job_api::artifact_retrieval_service_client::ArtifactRetrievalServiceClient;
use ferrobeam_proto::job_api::GetArtifactRequest;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};

/// How long a stopped worker may take to leave on its own (its control
/// stream is closed first) before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Calls to the job server while booting a worker.
const BOOT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Interpreter with `apache_beam` (and `ferrobeam`) installed.
    pub python: PathBuf,
    /// Worker scratch directories go under `work_dir/workers/`.
    pub work_dir: PathBuf,
    /// Most workers running at once; further starts are refused.
    pub max_workers: usize,
    /// Interpreters kept with the harness already imported.
    pub warm: usize,
    /// The job server's token: the pool's calls to it carry it, and so do
    /// its workers' (they get it in `FERROBEAM_AUTH_TOKEN`).
    pub token: Option<AuthToken>,
}

/// The `BeamFnExternalWorkerPool` service.
pub struct WorkerPoolService {
    config: PoolConfig,
    warm: Option<Arc<WarmPython>>,
    /// Running workers: worker id -> "stop it" switch.
    running: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
}

impl WorkerPoolService {
    pub fn new(config: PoolConfig) -> Self {
        let warm = (config.warm > 0).then(|| WarmPython::new(config.python.clone(), config.warm));
        Self {
            config,
            warm,
            running: Arc::default(),
        }
    }

    pub fn into_server(self) -> BeamFnExternalWorkerPoolServer<Self> {
        BeamFnExternalWorkerPoolServer::new(self)
    }

    /// How many workers run now.
    pub fn running(&self) -> usize {
        self.running.lock().len()
    }

    async fn start(&self, request: &StartWorkerRequest) -> Result<(), String> {
        let worker_id = request.worker_id.as_str();
        if worker_id.is_empty() {
            return Err("StartWorker names no worker_id".into());
        }
        if self.running.lock().len() >= self.config.max_workers {
            return Err(format!(
                "this pool already runs its maximum of {} workers (--max_workers)",
                self.config.max_workers
            ));
        }
        let url = |name: &str, d: &Option<ferrobeam_proto::pipeline::v1::ApiServiceDescriptor>| {
            d.as_ref()
                .map(|d| d.url.clone())
                .filter(|u| !u.is_empty())
                .ok_or_else(|| format!("StartWorker names no {name} endpoint"))
        };
        let control = url("control", &request.control_endpoint)?;
        let logging = url("logging", &request.logging_endpoint)
            .unwrap_or_else(|_| control.clone());
        let provision_url = url("provision", &request.provision_endpoint)?;
        let artifact_url = url("artifact", &request.artifact_endpoint)
            .unwrap_or_else(|_| provision_url.clone());

        let provision = self.provision(&provision_url, worker_id).await?;
        let semi = self.config.work_dir.join("workers").join(sanitize(worker_id));
        self.fetch_artifacts(&artifact_url, &provision, &semi.join("staged"))
            .await?;
        let options = options_json(&provision.pipeline_options.clone().unwrap_or_default());
        let mut env = python_worker_env(&PythonWorker {
            worker_id,
            control_url: &control,
            logging_url: &logging,
            options_json: &options,
            runner_capabilities: &provision.runner_capabilities,
            semi_persistent_dir: &semi,
        });
        if let Some(token) = &self.config.token {
            env.insert(ferrobeam_auth::TOKEN_ENV.to_owned(), token.expose().to_owned());
        }
        let tail = Arc::default();
        let (mut child, _tail) = start_python(
            self.warm.as_ref(),
            &self.config.python,
            worker_id,
            &env,
            &tail,
        )
        .await
        .map_err(|e| format!("cannot start a Python worker: {e}"))?;
        tracing::info!(worker = worker_id, pid = ?child.id(), "started SDK worker");

        let (stop_tx, stop_rx) = oneshot::channel();
        self.running.lock().insert(worker_id.to_owned(), stop_tx);
        let running = self.running.clone();
        let warm = self.warm.clone();
        let id = worker_id.to_owned();
        tokio::spawn(async move {
            tokio::select! {
                status = child.wait() => {
                    tracing::info!(worker = %id, ?status, "SDK worker exited");
                }
                _ = stop_rx => {
                    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                        let _ = child.kill().await;
                    }
                    tracing::info!(worker = %id, "SDK worker stopped");
                }
            }
            running.lock().remove(&id);
            let _ = tokio::fs::remove_dir_all(&semi).await;
            if let Some(warm) = warm {
                let _ = tokio::task::spawn_blocking(move || warm.refill()).await;
            }
        });
        Ok(())
    }

    /// A channel to the job server whose calls carry its token.
    async fn channel(&self, url: &str) -> Result<AuthChannel, String> {
        let channel = Endpoint::from_shared(http_url(url))
            .map_err(|e| format!("bad endpoint {url:?}: {e}"))?
            .timeout(BOOT_CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| format!("cannot reach the job server at {url}: {e}"))?;
        Ok(ferrobeam_auth::authed(channel, self.config.token.as_ref()))
    }

    async fn provision(&self, url: &str, worker_id: &str) -> Result<ProvisionInfo, String> {
        let mut request = Request::new(GetProvisionInfoRequest {});
        let id = worker_id
            .parse()
            .map_err(|_| format!("worker id {worker_id:?} is not a valid header value"))?;
        request.metadata_mut().insert(WORKER_ID_HEADER, id);
        let mut client = ProvisionServiceClient::new(self.channel(url).await?);
        client
            .get_provision_info(request)
            .await
            .map_err(|s| format!("the job server's provision service refused: {}", s.message()))?
            .into_inner()
            .info
            .ok_or_else(|| "the provision service sent no info".to_owned())
    }

    /// Fetches every staged file of the worker's environment into `dir`.
    async fn fetch_artifacts(
        &self,
        url: &str,
        provision: &ProvisionInfo,
        dir: &Path,
    ) -> Result<(), String> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let named: Vec<_> = provision
            .dependencies
            .iter()
            .filter_map(|a| Some((a, staged_name(a)?)))
            .collect();
        if named.is_empty() {
            return Ok(());
        }
        let mut client = ArtifactRetrievalServiceClient::new(self.channel(url).await?);
        for (artifact, name) in named {
            // `sanitize` keeps the file in `dir`: the name comes from the wire.
            let path = dir.join(sanitize(&name));
            let request = GetArtifactRequest {
                artifact: Some(artifact.clone()),
            };
            let mut stream = client
                .get_artifact(request)
                .await
                .map_err(|s| format!("fetching artifact {name}: {}", s.message()))?
                .into_inner();
            let mut file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| format!("creating {}: {e}", path.display()))?;
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(|s| format!("fetching artifact {name}: {}", s.message()))?
            {
                file.write_all(&chunk.data)
                    .await
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
            }
            file.flush()
                .await
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl BeamFnExternalWorkerPool for WorkerPoolService {
    async fn start_worker(
        &self,
        request: Request<StartWorkerRequest>,
    ) -> Result<Response<StartWorkerResponse>, Status> {
        let request = request.into_inner();
        let error = match self.start(&request).await {
            Ok(()) => String::new(),
            Err(e) => {
                tracing::warn!(worker = %request.worker_id, error = %e, "cannot start SDK worker");
                e
            }
        };
        Ok(Response::new(StartWorkerResponse { error }))
    }

    async fn stop_worker(
        &self,
        request: Request<StopWorkerRequest>,
    ) -> Result<Response<StopWorkerResponse>, Status> {
        let id = request.into_inner().worker_id;
        if let Some(stop) = self.running.lock().remove(&id) {
            let _ = stop.send(());
        }
        Ok(Response::new(StopWorkerResponse::default()))
    }
}
