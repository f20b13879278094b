//! Starting a complete job server: Job API + artifacts on one port, the Fn
//! API for workers on another, both on loopback unless told otherwise.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use ferrobeam_engine::telemetry::TelemetryHub;
use ferrobeam_engine::EngineConfig;
use ferrobeam_fnapi::remote_pools::RemotePools;
use ferrobeam_fnapi::{FnServer, WorkerLauncher};
use ferrobeam_proto::pipeline::v1::ApiServiceDescriptor;
use ferrobeam_jobs::{JobServer, JobServiceConfig};
use tokio::net::TcpListener;

use crate::executor::EngineExecutor;
use crate::work_dirs;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// Allow binding a non-loopback address.  The job server runs the code
    /// it is sent, so exposing it is remote code execution by design.
    pub allow_remote: bool,
    pub python: PathBuf,
    /// SDK workers per environment; 0 means one per core.
    pub workers: usize,
    pub bundles_per_worker: usize,
    pub strict_environments: bool,
    /// Where staged artifacts and worker directories go (a temp dir if None).
    pub work_dir: Option<PathBuf>,
    /// Checkpoint settings for jobs that do not set their own.
    pub checkpoints: crate::executor::CheckpointDefaults,
    /// Port of the web dashboard and `/metrics` (0: any free port; `None`:
    /// no dashboard).  On `host`, like the job server.
    pub dashboard_port: Option<u16>,
    /// If `dashboard_port` is taken, serve on any free port instead.
    pub dashboard_port_fallback: bool,
    /// Port of the Fn API that SDK workers dial (0: any free port).
    pub fn_port: u16,
    /// The address SDK workers on other hosts dial to reach this server
    /// (its Fn API); needed with `worker_pools` when `host` is a wildcard.
    pub advertise_host: Option<String>,
    /// Remote `ferrobeam worker-pool`s (`host:port`) that run the default
    /// environment's workers instead of this machine.
    pub worker_pools: Vec<String>,
    /// The auth token every port checks, and size limits (see `security`).
    pub security: crate::security::SecurityConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8099,
            allow_remote: false,
            python: std::env::var_os("FERROBEAM_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| "python3".into()),
            workers: 0,
            // Measured: one bundle at a time per Python worker beats two (GIL).
            bundles_per_worker: 1,
            strict_environments: false,
            work_dir: None,
            checkpoints: Default::default(),
            dashboard_port: Some(0),
            dashboard_port_fallback: false,
            fn_port: 0,
            advertise_host: None,
            worker_pools: Vec::new(),
            security: Default::default(),
        }
    }
}

/// How long a stopping server waits for its cancelled jobs to close their
/// state: a cancelled job stops within a bundle, and closing a database
/// flushes at most a few memtables.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// A running job server; dropping it does not stop it, [`RunningServer::stop`] does.
pub struct RunningServer {
    pub job_addr: SocketAddr,
    pub fn_addr: SocketAddr,
    /// Where the dashboard is served, if it is.
    pub dashboard_addr: Option<SocketAddr>,
    jobs: Arc<JobServer>,
    fn_server: FnServer,
    /// What workers dial (see [`advertised_fn_endpoint`]).
    fn_endpoint: ApiServiceDescriptor,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl RunningServer {
    pub fn endpoint(&self) -> String {
        self.job_addr.to_string()
    }

    /// The dashboard's address as a browser wants it.
    pub fn dashboard_url(&self) -> Option<String> {
        self.dashboard_addr.map(dashboard_url)
    }

    /// The state API URL workers are given and the socket that may stand
    /// in for it (for a worker in the embedded server's own process).
    pub fn state_channel(&self) -> Option<(String, PathBuf)> {
        let socket = self.fn_server.state_socket()?;
        Some((self.fn_endpoint.url.clone(), socket.to_owned()))
    }

    pub fn stop(&self) {
        self.jobs.shutdown();
        let _ = self.shutdown.send(true);
    }

    /// Stops the server and blocks (at most `timeout`) until the cancelled
    /// jobs have closed their RocksDB state; returns how many databases are
    /// still open in this process (they are counted per process, not per
    /// server: a zero `timeout` only cancels, so that several servers can
    /// all be cancelled before waiting on any).  Call it from a blocking
    /// thread, never from the runtime: a process that exits with a database
    /// open may be aborted by RocksDB (see
    /// [`ferrobeam_state::rocks::wait_until_all_closed`]).
    pub fn stop_and_wait(&self, timeout: std::time::Duration) -> usize {
        self.stop();
        let still_open = ferrobeam_state::rocks::wait_until_all_closed(timeout);
        if still_open > 0 && !timeout.is_zero() {
            tracing::warn!(
                still_open,
                "job server stopped with state databases still open after {timeout:?}"
            );
        }
        still_open
    }

    /// Resolves when [`RunningServer::stop`] is called.
    pub async fn stopped(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

fn dashboard_url(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

/// Resolves `host`, refusing a non-loopback address unless allowed and
/// protected by a token (see [`ferrobeam_auth::check_bind`]).
pub(crate) async fn bind_address(
    host: &str,
    allow_remote: bool,
    token: Option<&ferrobeam_auth::AuthToken>,
    why: &str,
) -> anyhow::Result<IpAddr> {
    let ip: IpAddr = tokio::net::lookup_host((host, 0))
        .await
        .with_context(|| format!("cannot resolve host {host:?}"))?
        .next()
        .context("host resolves to no address")?
        .ip();
    ferrobeam_auth::check_bind(ip, allow_remote, token, why)?;
    Ok(ip)
}

/// `ferrobeam expansion-service`: Beam's ExpansionService alone, until Ctrl-C.
pub async fn serve_expansion(
    host: &str,
    port: u16,
    allow_remote: bool,
    token: Option<ferrobeam_auth::AuthToken>,
) -> anyhow::Result<()> {
    let ip = bind_address(
        host,
        allow_remote,
        token.as_ref(),
        "expansion is meant for local clients",
    )
    .await?;
    let listener = TcpListener::bind((ip, port))
        .await
        .with_context(|| format!("cannot bind the expansion service to {ip}:{port}"))?;
    println!(
        "ferrobeam expansion service listening on {}",
        listener.local_addr()?
    );
    let api = ferrobeam_jobs::ExpansionApi::new(std::sync::Arc::new(
        ferrobeam_io_kafka::expansion::expand,
    ));
    tonic::transport::Server::builder()
        .layer(ferrobeam_auth::GrpcAuthLayer::new(token))
        .add_service(
            ferrobeam_proto::expansion::v1::expansion_service_server::ExpansionServiceServer::new(
                api,
            ),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                crate::stop_signal().await;
            },
        )
        .await?;
    Ok(())
}

pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    let ip = bind_address(
        &config.host,
        config.allow_remote,
        config.security.auth_token.as_ref(),
        "the job server runs the code it is sent, so a non-loopback address exposes remote \
         code execution",
    )
    .await?;
    let work_dir = match &config.work_dir {
        Some(d) => d.clone(),
        None => {
            let claimed = work_dirs::claim_default().context("claiming a work directory")?;
            // Killed servers' directories may hold gigabytes of state: clear
            // them in the background, without delaying this start.
            std::thread::spawn(|| {
                for dir in work_dirs::remove_abandoned(&std::env::temp_dir()) {
                    tracing::info!(dir = %dir.display(), "removed the work directory of a server that is gone");
                }
            });
            claimed.path.clone()
        }
    };
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;

    let job_listener = TcpListener::bind((ip, config.port))
        .await
        .with_context(|| format!("cannot bind the job server to {ip}:{}", config.port))?;
    let job_addr = job_listener.local_addr()?;
    let fn_listener = TcpListener::bind((ip, config.fn_port))
        .await
        .with_context(|| format!("cannot bind the Fn API server to {ip}:{}", config.fn_port))?;
    let dashboard_listener = match config.dashboard_port {
        Some(port) => Some(match TcpListener::bind((ip, port)).await {
            Ok(l) => l,
            Err(e) if config.dashboard_port_fallback => {
                tracing::warn!("dashboard port {port} unavailable ({e}); using a free port");
                TcpListener::bind((ip, 0)).await?
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot bind the dashboard to {ip}:{port} (choose another --dashboard_port, \
                     0 for any free port)"
                )))
            }
        }),
        None => None,
    };
    let dashboard_addr = dashboard_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let telemetry = Arc::new(TelemetryHub::default());

    let mut jobs_config = JobServiceConfig {
        // A wildcard address is no place to dial: then the staging endpoint
        // is the address each client's Prepare arrived on.
        public_endpoint: (!job_addr.ip().is_unspecified()).then(|| job_addr.to_string()),
        ..JobServiceConfig::with_root(&work_dir)
    };
    config.security.apply_to_jobs(&mut jobs_config);
    // The Fn server must exist before the executor (descriptors name its
    // address), and the retrieval service lives on it for booting workers.
    let fn_addr = fn_listener.local_addr()?;
    let fn_endpoint = advertised_fn_endpoint(&config, fn_addr)?;
    let remote_pools = (!config.worker_pools.is_empty())
        .then(|| Arc::new(RemotePools::new(config.worker_pools.clone())));
    let workers = match (&remote_pools, config.workers) {
        (_, n) if n > 0 => n,
        (Some(pools), _) => {
            let found = pools.addresses().await.len();
            if found == 0 {
                bail!(
                    "none of the worker pools {} resolves to an address",
                    config.worker_pools.join(",")
                );
            }
            WORKERS_PER_REMOTE_POOL * found
        }
        (None, _) => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
    };
    let executor_slot: Arc<std::sync::OnceLock<Arc<WorkerLauncher>>> = Arc::default();
    let jobs = Arc::new(JobServer::new(
        Arc::new(LazyExecutor {
            launcher: executor_slot.clone(),
            engine: EngineConfig {
                python: config.python.clone(),
                workers,
                bundles_per_worker: config.bundles_per_worker,
            },
            strict_environments: config.strict_environments,
            fn_endpoint: fn_endpoint.url.clone(),
            checkpoint_defaults: config.checkpoints.clone(),
            telemetry: telemetry.clone(),
            dashboard_url: dashboard_addr.map(dashboard_url),
        }),
        jobs_config,
    )?);
    let retrieval = jobs.artifact_retrieval_service();
    let fn_server = FnServer::start_with(
        fn_listener,
        config.security.fn_server_options(),
        move |routes| routes.add_service(retrieval),
    )?;
    // With remote pools this machine runs no Python worker: nothing to warm.
    let warm_workers = if remote_pools.is_some() { 0 } else { workers };
    let launcher = WorkerLauncher::new(fn_server.registry.clone(), fn_endpoint.clone())
        .with_remote_pools(remote_pools)
        .with_state_socket(fn_server.state_socket())
        .with_auth_token(config.security.auth_token.clone())
        .with_warm_python(config.python.clone(), warm_workers);
    let _ = executor_slot.set(Arc::new(launcher));

    let (shutdown, mut shutdown_rx) = tokio::sync::watch::channel(false);
    let serving = jobs.clone();
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown_rx.wait_for(|s| *s).await;
        };
        if let Err(e) = serving.serve(job_listener, stop).await {
            tracing::error!(error = %e, "job server failed");
        }
    });
    if let Some(listener) = dashboard_listener {
        let dashboard = ferrobeam_dashboard::Dashboard {
            jobs: jobs.clone(),
            telemetry,
        };
        let mut stop = shutdown.subscribe();
        let token = config.security.auth_token.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = dashboard.serve_with_auth(listener, token, stop).await {
                tracing::error!(error = %e, "dashboard failed");
            }
        });
    }
    tracing::info!(%job_addr, %fn_addr, ?dashboard_addr, "ferrobeam job server listening");
    Ok(RunningServer {
        job_addr,
        fn_addr,
        dashboard_addr,
        jobs,
        fn_server,
        fn_endpoint,
        shutdown,
    })
}

/// SDK workers started per remote worker pool address when `--workers` is
/// not given: Python workers are single-threaded (the GIL), and a pool host
/// is assumed to have at least two cores.
pub const WORKERS_PER_REMOTE_POOL: usize = 2;

/// What SDK workers are told to dial: the Fn API at `--advertise_host` if
/// given, else at the bound address (loopback for a wildcard bind, which
/// only local workers can then use).
fn advertised_fn_endpoint(
    config: &ServerConfig,
    bound: SocketAddr,
) -> anyhow::Result<ApiServiceDescriptor> {
    let host = match &config.advertise_host {
        Some(h) if h.trim().is_empty() => bail!("--advertise_host is empty"),
        Some(h) => h.clone(),
        None if bound.ip().is_unspecified() => {
            if !config.worker_pools.is_empty() {
                bail!(
                    "the job server binds {} and has remote worker pools: pass \
                     --advertise_host with an address of this host that the pools' workers \
                     can reach",
                    bound.ip()
                );
            }
            "127.0.0.1".to_owned()
        }
        None => bound.ip().to_string(),
    };
    let url = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{}", bound.port()),
        _ => format!("{host}:{}", bound.port()),
    };
    Ok(ApiServiceDescriptor {
        url,
        ..Default::default()
    })
}

/// Builds the [`EngineExecutor`] once the Fn server (and so the launcher) exists.
struct LazyExecutor {
    launcher: Arc<std::sync::OnceLock<Arc<WorkerLauncher>>>,
    engine: EngineConfig,
    strict_environments: bool,
    fn_endpoint: String,
    checkpoint_defaults: crate::executor::CheckpointDefaults,
    telemetry: Arc<TelemetryHub>,
    dashboard_url: Option<String>,
}

impl LazyExecutor {
    fn inner(&self) -> Result<EngineExecutor, String> {
        let launcher = self
            .launcher
            .get()
            .ok_or("the Fn API server is not up yet")?
            .clone();
        Ok(EngineExecutor {
            launcher,
            engine: self.engine.clone(),
            strict_environments: self.strict_environments,
            fn_endpoint: self.fn_endpoint.clone(),
            checkpoint_defaults: self.checkpoint_defaults.clone(),
            telemetry: self.telemetry.clone(),
            dashboard_url: self.dashboard_url.clone(),
        })
    }
}

impl ferrobeam_jobs::Executor for LazyExecutor {
    fn validate(
        &self,
        pipeline: &ferrobeam_proto::pipeline::v1::Pipeline,
        options: &prost_types::Struct,
    ) -> Result<(), String> {
        self.inner()?.validate(pipeline, options)
    }

    fn is_drainable(
        &self,
        pipeline: &ferrobeam_proto::pipeline::v1::Pipeline,
        options: &prost_types::Struct,
    ) -> bool {
        crate::executor::runs_streaming(pipeline, options)
    }

    fn expand(
        &self,
        request: &ferrobeam_proto::expansion::v1::ExpansionRequest,
    ) -> ferrobeam_proto::expansion::v1::ExpansionResponse {
        // Needs no workers: answered without starting them.
        ferrobeam_io_kafka::expansion::expand(request)
    }

    fn execute(
        &self,
        job: ferrobeam_jobs::JobContext,
    ) -> futures::future::BoxFuture<'static, Result<(), String>> {
        match self.inner() {
            Ok(e) => e.execute(job),
            Err(msg) => Box::pin(async move { Err(msg) }),
        }
    }
}
