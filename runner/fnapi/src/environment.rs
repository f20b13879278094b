//! Starting and stopping SDK workers for a job's environments.
//!
//! Workers are disposable: the engine asks for one, uses it, and throws it
//! away (or replaces it when it dies).  How a worker comes to life depends on
//! the environment the pipeline asked for.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrobeam_proto::fn_api::beam_fn_external_worker_pool_client::BeamFnExternalWorkerPoolClient;
use ferrobeam_proto::fn_api::{ProvisionInfo, StartWorkerRequest, StopWorkerRequest};
use ferrobeam_proto::pipeline::v1::ApiServiceDescriptor;
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::registry::{LogSink, Registry, WorkerSetup};
use crate::remote_pools::RemotePools;
use crate::worker::Worker;

/// How long a starting worker may take to dial in.  Importing apache_beam
/// takes a couple of seconds; a cold machine can be much slower.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(180);
/// How many of a worker process's last output lines we keep for error messages.
const STDERR_TAIL_LINES: usize = 60;

/// How workers of one environment are brought up.
#[derive(Clone, Debug)]
pub enum EnvironmentSpec {
    /// The stock `apache_beam` harness (`sdk_worker_main`) in a local
    /// process we start with this interpreter; staged artifacts are put
    /// where the harness expects them.
    LocalPython { python: PathBuf },
    /// A `BeamFnExternalWorkerPool` (LOOPBACK or EXTERNAL) at this address.
    External {
        endpoint: String,
        params: HashMap<String, String>,
    },
    /// A boot command we run ourselves (PROCESS).
    Process {
        command: String,
        env: HashMap<String, String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("could not start SDK worker {worker}: {reason}")]
    Start { worker: String, reason: String },
    #[error("SDK worker {worker} exited before connecting ({status}). Its last output:\n{output}")]
    EarlyExit {
        worker: String,
        status: String,
        output: String,
    },
    #[error("SDK worker {worker} did not connect within {secs} s")]
    Timeout { worker: String, secs: u64 },
}

/// Everything needed to start workers for one environment of one job.
#[derive(Clone)]
pub struct WorkerTemplate {
    pub job_id: String,
    pub environment_id: String,
    pub spec: EnvironmentSpec,
    /// Beam pipeline options as JSON (keys like `beam:option:foo:v1`).
    pub options_json: String,
    pub provision: ProvisionInfo,
    /// (local file, name under `staged/`) for the local Python harness.
    pub staged: Vec<(PathBuf, String)>,
    pub work_dir: PathBuf,
    pub log_sink: LogSink,
    /// The capabilities the environment declares for its SDK (Beam URNs).
    pub sdk_capabilities: Vec<String>,
    /// Tells the job's user about trouble that did not stop the start (a
    /// remote worker pool that failed, passed over for another).
    pub notice: Notice,
}

/// A warning for the job's messages (shown by clients and the dashboard).
pub type Notice = Arc<dyn Fn(String) + Send + Sync>;

/// Starts workers and knows how to stop them again.
pub struct WorkerLauncher {
    registry: Arc<Registry>,
    endpoint: ApiServiceDescriptor,
    /// The Fn server's state socket, handed to the Python workers we start.
    state_socket: Option<PathBuf>,
    counter: AtomicU64,
    warm: Option<Arc<WarmPython>>,
    /// Where workers of the default (LocalPython) environment run instead
    /// of on this machine, if anywhere.
    remote_pools: Option<Arc<RemotePools>>,
    /// The Fn server's token: given to the workers we start (they send it
    /// back) and sent to worker pools.
    auth_token: Option<ferrobeam_auth::AuthToken>,
}

/// The Python harness takes seconds to import, so we keep a few
/// interpreters that have already imported it, waiting on stdin for the
/// environment of the worker they are to become.  A job's first bundle then
/// waits for a connection, not for an import.
pub struct WarmPython {
    python: PathBuf,
    target: usize,
    ready: Mutex<Vec<WarmProcess>>,
}

struct WarmProcess {
    child: Child,
    stdin: tokio::process::ChildStdin,
    tail: Arc<Mutex<VecDeque<String>>>,
}

/// Turns on ferrobeam's harness hooks when the `ferrobeam` package is
/// importable: the state channel (see `state_socket`) when the environment
/// names a socket, elements in control messages (see `worker`) and a
/// state sampler that lets bundles end promptly (`ferrobeam/_harness.py`).
/// Without them the worker is the plain stock harness.
const STATE_CHANNEL_BOOT: &str = concat!(
    "try:\n",
    "    from ferrobeam import _harness, _state_channel\n",
    "    _state_channel.install_from_environment()\n",
    "    _harness.install_hooks()\n",
    "except ImportError:\n",
    "    pass\n",
);

/// What a warm interpreter runs: import the harness, then wait for the
/// worker's environment as one JSON line and start it.  EOF means "exit".
/// Beam's log handler names its worker by a class attribute read from
/// `WORKER_ID` at import, before the worker had one: set it again, or the
/// worker's log lines reach us unnamed (no job, no error forwarding).
/// The import runs at low priority, in a thread of its own: importing Beam
/// is background work and must not slow the submitting program or a job
/// running on its in-process worker.  Only that thread is niced (Linux
/// keeps a nice value per thread), because nobody may lower a nice value
/// again without privileges: a worker started under `nice` stayed behind
/// every other process for its whole life, and a streaming stage on it
/// saw twice the latency of one on a worker started cold.
const WARM_BOOT: &str = "import json, os, sys, threading\n\
def _import_harness():\n\
\x20   try:\n\
\x20       os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)\n\
\x20   except (AttributeError, OSError):\n\
\x20       pass\n\
\x20   from apache_beam.runners.worker import sdk_worker_main\n\
_importer = threading.Thread(target=_import_harness)\n\
_importer.start()\n\
_importer.join()\n\
from apache_beam.runners.worker import sdk_worker_main\n\
line = sys.stdin.readline()\n\
if not line.strip():\n    sys.exit(0)\n\
os.environ.update(json.loads(line))\n\
from apache_beam.runners.worker import worker_id_interceptor\n\
worker_id_interceptor.WorkerIdInterceptor._worker_id = os.environ.get('WORKER_ID')\n";

/// What a cold worker runs.
const COLD_BOOT: &str = "import sys\nfrom apache_beam.runners.worker import sdk_worker_main\n";

/// Both begin with a watchdog that exits when the process that started
/// them is gone: a server embedded in a program that ends does not run
/// destructors, and its half-imported interpreters would otherwise linger
/// as orphans, stealing CPU from whatever runs next; a remote worker pool
/// that dies takes its workers with it (as its host would), so that their
/// bundles are retried elsewhere instead of running on unsupervised.
const EXIT_WITH_PARENT: &str = "import os as _os, threading as _threading, time as _time\n\
def _exit_with_parent(parent=_os.getppid()):\n\
\x20   while _os.getppid() == parent:\n\
\x20       _time.sleep(0.5)\n\
\x20   _os._exit(0)\n\
_threading.Thread(target=_exit_with_parent, daemon=True).start()\n";

/// Both end by starting the stock harness.
const HARNESS_MAIN: &str = "sdk_worker_main.main(sys.argv)\n";

fn python_boot(head: &str) -> String {
    format!("{EXIT_WITH_PARENT}{head}{STATE_CHANNEL_BOOT}{HARNESS_MAIN}")
}

impl WarmPython {
    pub fn new(python: PathBuf, target: usize) -> Arc<Self> {
        let warm = Arc::new(Self {
            python,
            target,
            ready: Mutex::default(),
        });
        warm.refill();
        warm
    }

    /// Tops the pool up to its target size.
    pub fn refill(&self) {
        let mut ready = self.ready.lock();
        ready.retain_mut(|p| matches!(p.child.try_wait(), Ok(None)));
        while ready.len() < self.target {
            match self.spawn() {
                Ok(p) => ready.push(p),
                Err(e) => {
                    tracing::warn!(error = %e, python = %self.python.display(), "cannot pre-start a Python worker");
                    break;
                }
            }
        }
    }

    fn spawn(&self) -> Result<WarmProcess, String> {
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        // The import runs at low priority (see WARM_BOOT), the worker not.
        let mut cmd = Command::new(&self.python);
        cmd.args(["-c", &python_boot(WARM_BOOT)])
            .env("PYTHONUNBUFFERED", "1");
        let mut child = spawn_with_output(cmd, "warm-python", &tail, true)?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        Ok(WarmProcess { child, stdin, tail })
    }

    fn take(&self, python: &Path) -> Option<WarmProcess> {
        if python != self.python {
            return None;
        }
        let mut ready = self.ready.lock();
        while let Some(mut p) = ready.pop() {
            if matches!(p.child.try_wait(), Ok(None)) {
                return Some(p);
            }
        }
        None
    }
}

/// A started worker plus whatever keeps it alive.
pub struct RunningWorker {
    pub worker: Arc<Worker>,
    registry: Arc<Registry>,
    warm: Option<Arc<WarmPython>>,
    process: Option<Child>,
    external: Option<String>,
    output_tail: Arc<Mutex<VecDeque<String>>>,
    /// Sent to `external` when stopping the worker.
    auth_token: Option<ferrobeam_auth::AuthToken>,
}

impl WorkerLauncher {
    pub fn new(registry: Arc<Registry>, endpoint: ApiServiceDescriptor) -> Self {
        Self {
            registry,
            endpoint,
            state_socket: None,
            counter: AtomicU64::new(0),
            warm: None,
            remote_pools: None,
            auth_token: None,
        }
    }

    /// Workers we start get `token` in `FERROBEAM_AUTH_TOKEN` (the harness
    /// hooks send it on every channel); worker pools are sent it too.
    pub fn with_auth_token(mut self, token: Option<ferrobeam_auth::AuthToken>) -> Self {
        self.auth_token = token;
        self
    }

    /// Runs the default environment's workers on these remote pools.
    pub fn with_remote_pools(mut self, pools: Option<Arc<RemotePools>>) -> Self {
        self.remote_pools = pools;
        self
    }

    /// Lets the Python workers we start use the state socket at `path`.
    pub fn with_state_socket(mut self, path: Option<&Path>) -> Self {
        self.state_socket = path.map(Path::to_owned);
        self
    }

    /// Keeps `count` pre-imported interpreters of `python` ready.
    pub fn with_warm_python(mut self, python: PathBuf, count: usize) -> Self {
        if count > 0 {
            self.warm = Some(WarmPython::new(python, count));
        }
        self
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Starts one worker from `template` and waits until it is connected.
    pub async fn launch(&self, template: &WorkerTemplate) -> Result<RunningWorker, LaunchError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let worker_id = format!(
            "{}-{}-w{n}",
            template.job_id,
            sanitize(&template.environment_id)
        );
        let mut provision = template.provision.clone();
        provision.control_endpoint = Some(self.endpoint.clone());
        provision.logging_endpoint = Some(self.endpoint.clone());
        provision.artifact_endpoint = Some(self.endpoint.clone());
        let connected = self.registry.expect_worker(
            &worker_id,
            WorkerSetup {
                job_id: template.job_id.clone(),
                provision,
                log_sink: template.log_sink.clone(),
                sdk_capabilities: template.sdk_capabilities.clone(),
            },
        );
        let mut tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let start_err = |reason: String| LaunchError::Start {
            worker: worker_id.clone(),
            reason,
        };
        let (mut process, external) = match &template.spec {
            EnvironmentSpec::LocalPython { .. } if self.remote_pools.is_some() => {
                let pools = self.remote_pools.as_ref().expect("checked");
                let no_params = HashMap::new();
                let started = pools
                    .start_worker(|pool| {
                        let (worker_id, no_params) = (&worker_id, &no_params);
                        Box::pin(async move {
                            self.start_external(worker_id, &pool, no_params).await
                        })
                    })
                    .await
                    .map_err(start_err)?;
                for failure in started.failures {
                    (template.notice)(format!(
                        "{failure}; started worker {worker_id} on {} instead",
                        started.pool
                    ));
                }
                (None, Some(started.pool))
            }
            EnvironmentSpec::LocalPython { python } => {
                let (child, output) = self
                    .start_local_python(&worker_id, python, template, &tail)
                    .await
                    .map_err(start_err)?;
                tail = output;
                (Some(child), None)
            }
            EnvironmentSpec::Process { command, env } => {
                let child = self
                    .spawn_process(&worker_id, command, env, &tail, &template.work_dir)
                    .map_err(start_err)?;
                (Some(child), None)
            }
            EnvironmentSpec::External { endpoint, params } => {
                self.start_external(&worker_id, endpoint, params)
                    .await
                    .map_err(start_err)?;
                (None, Some(endpoint.clone()))
            }
        };
        let wait = async {
            match process.as_mut() {
                Some(child) => tokio::select! {
                    w = connected => w.ok(),
                    status = child.wait() => {
                        // Give the output readers a moment to drain.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return Err(LaunchError::EarlyExit {
                            worker: worker_id.clone(),
                            status: status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                            output: tail.lock().iter().cloned().collect::<Vec<_>>().join("\n"),
                        });
                    }
                },
                None => connected.await.ok(),
            }
            .ok_or_else(|| start_err("registration dropped".into()))
        };
        let worker = match tokio::time::timeout(CONNECT_TIMEOUT, wait).await {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                self.registry.remove_worker(&worker_id);
                return Err(e);
            }
            Err(_) => {
                self.registry.remove_worker(&worker_id);
                return Err(LaunchError::Timeout {
                    worker: worker_id,
                    secs: CONNECT_TIMEOUT.as_secs(),
                });
            }
        };
        tracing::debug!(worker = %worker_id, "SDK worker connected");
        Ok(RunningWorker {
            worker,
            registry: self.registry.clone(),
            warm: self.warm.clone(),
            process,
            external,
            output_tail: tail,
            auth_token: self.auth_token.clone(),
        })
    }

    async fn start_local_python(
        &self,
        worker_id: &str,
        python: &Path,
        template: &WorkerTemplate,
        tail: &Arc<Mutex<VecDeque<String>>>,
    ) -> Result<(Child, Arc<Mutex<VecDeque<String>>>), String> {
        let semi = template.work_dir.join("workers").join(sanitize(worker_id));
        stage_files(&semi, &template.staged)?;
        let mut env = python_worker_env(&PythonWorker {
            worker_id,
            control_url: &self.endpoint.url,
            logging_url: &self.endpoint.url,
            options_json: &template.options_json,
            runner_capabilities: &template.provision.runner_capabilities,
            semi_persistent_dir: &semi,
        });
        if let Some(token) = &self.auth_token {
            env.insert(
                ferrobeam_auth::TOKEN_ENV.to_owned(),
                token.expose().to_owned(),
            );
        }
        if let Some(socket) = &self.state_socket {
            // The socket stands in for the state service at this URL only.
            env.insert("FERROBEAM_STATE_URL".to_owned(), self.endpoint.url.clone());
            env.insert(
                "FERROBEAM_STATE_SOCKET".to_owned(),
                socket.to_string_lossy().into_owned(),
            );
        }
        start_python(self.warm.as_ref(), python, worker_id, &env, tail).await
    }

    fn spawn_process(
        &self,
        worker_id: &str,
        command: &str,
        env: &HashMap<String, String>,
        tail: &Arc<Mutex<VecDeque<String>>>,
        work_dir: &Path,
    ) -> Result<Child, String> {
        let url = &self.endpoint.url;
        // In a directory of its own under the job's: boot programs write
        // files where they run (Beam's Go boot: pipeline_options.json), and
        // nothing may land outside the configured directories.
        let dir = work_dir.join("workers").join(sanitize(worker_id));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut cmd = Command::new(command);
        cmd.current_dir(&dir)
            .arg(format!("--id={worker_id}"))
            .arg(format!("--provision_endpoint={url}"))
            .arg(format!("--logging_endpoint={url}"))
            .arg(format!("--artifact_endpoint={url}"))
            .arg(format!("--control_endpoint={url}"))
            .envs(env);
        if let Some(token) = &self.auth_token {
            cmd.env(ferrobeam_auth::TOKEN_ENV, token.expose());
        }
        spawn_with_output(cmd, worker_id, tail, false)
    }

    async fn start_external(
        &self,
        worker_id: &str,
        endpoint: &str,
        params: &HashMap<String, String>,
    ) -> Result<(), String> {
        let mut client = pool_client(endpoint, self.auth_token.as_ref())
            .await
            .map_err(|e| format!("cannot reach worker pool at {endpoint}: {e}"))?;
        let resp = client
            .start_worker(StartWorkerRequest {
                worker_id: worker_id.to_owned(),
                control_endpoint: Some(self.endpoint.clone()),
                logging_endpoint: Some(self.endpoint.clone()),
                artifact_endpoint: Some(self.endpoint.clone()),
                provision_endpoint: Some(self.endpoint.clone()),
                params: params.clone(),
            })
            .await
            .map_err(|s| {
                format!(
                    "worker pool at {endpoint} refused StartWorker: {}",
                    s.message()
                )
            })?
            .into_inner();
        if resp.error.is_empty() {
            Ok(())
        } else {
            Err(format!("worker pool at {endpoint}: {}", resp.error))
        }
    }
}

impl RunningWorker {
    /// The worker's process id, for a worker we started as a process (not
    /// one an external worker pool runs).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|c| c.id())
    }

    /// The worker pool (LOOPBACK, EXTERNAL or a remote `ferrobeam
    /// worker-pool`) that runs the worker, if one does.
    pub fn pool(&self) -> Option<&str> {
        self.external.as_deref()
    }

    /// The worker process's last lines of output, for error messages.
    pub fn output_tail(&self) -> String {
        self.output_tail
            .lock()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Closes the worker's control stream and makes sure it is gone.
    pub async fn stop(mut self) {
        self.worker.shutdown();
        self.registry.remove_worker(self.worker.id());
        if let Some(warm) = self.warm.take() {
            tokio::task::spawn_blocking(move || warm.refill());
        }
        if let Some(mut child) = self.process.take() {
            if tokio::time::timeout(Duration::from_secs(2), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        if let Some(endpoint) = self.external.take() {
            if let Ok(mut client) = pool_client(&endpoint, self.auth_token.as_ref()).await {
                let _ = client
                    .stop_worker(StopWorkerRequest {
                        worker_id: self.worker.id().to_owned(),
                    })
                    .await;
            }
        }
    }

    /// Kills the worker process at once (it crashed, or its bundle hung).
    pub async fn kill(mut self) {
        self.worker.mark_dead("killed by the runner");
        self.registry.remove_worker(self.worker.id());
        if let Some(child) = self.process.as_mut() {
            let _ = child.kill().await;
        }
    }
}

/// What the stock Python harness needs to know to become one worker.
pub struct PythonWorker<'a> {
    pub worker_id: &'a str,
    pub control_url: &'a str,
    pub logging_url: &'a str,
    /// Beam pipeline options as JSON (keys like `beam:option:foo:v1`).
    pub options_json: &'a str,
    pub runner_capabilities: &'a [String],
    /// The worker's scratch directory; staged artifacts are in `staged/`.
    pub semi_persistent_dir: &'a Path,
}

/// The environment `sdk_worker_main` is configured by, as Beam's boot
/// program would set it.
pub fn python_worker_env(worker: &PythonWorker<'_>) -> HashMap<String, String> {
    let descriptor = |url: &str| format!("url: \"{url}\"");
    HashMap::from([
        (
            "CONTROL_API_SERVICE_DESCRIPTOR".to_owned(),
            descriptor(worker.control_url),
        ),
        (
            "LOGGING_API_SERVICE_DESCRIPTOR".to_owned(),
            descriptor(worker.logging_url),
        ),
        ("PIPELINE_OPTIONS".to_owned(), worker.options_json.to_owned()),
        (
            "SEMI_PERSISTENT_DIRECTORY".to_owned(),
            worker.semi_persistent_dir.to_string_lossy().into_owned(),
        ),
        ("WORKER_ID".to_owned(), worker.worker_id.to_owned()),
        // What Beam's boot program passes on from the provision info.
        (
            "RUNNER_CAPABILITIES".to_owned(),
            worker.runner_capabilities.join(" "),
        ),
        ("PYTHONUNBUFFERED".to_owned(), "1".to_owned()),
    ])
}

/// Puts `files` (local file, staged name) into `semi_dir/staged/`, where
/// the harness looks for the pickled main session and the like.
pub fn stage_files(semi_dir: &Path, files: &[(PathBuf, String)]) -> Result<(), String> {
    let staged = semi_dir.join("staged");
    std::fs::create_dir_all(&staged).map_err(|e| format!("creating {}: {e}", staged.display()))?;
    for (src, name) in files {
        let dst = staged.join(sanitize(name));
        if std::fs::hard_link(src, &dst).is_err() {
            std::fs::copy(src, &dst).map_err(|e| format!("staging {}: {e}", src.display()))?;
        }
    }
    Ok(())
}

/// Starts the stock Python harness with `env`: in a warm interpreter of
/// `warm` if one of `python` is ready, else in a new one.  Returns the
/// process and the tail of its output.
pub async fn start_python(
    warm: Option<&Arc<WarmPython>>,
    python: &Path,
    worker_id: &str,
    env: &HashMap<String, String>,
    tail: &Arc<Mutex<VecDeque<String>>>,
) -> Result<(Child, Arc<Mutex<VecDeque<String>>>), String> {
    if let Some(warm) = warm {
        // Not refilled here: a fresh interpreter importing Beam would
        // compete for CPU with the job that just took this one.  The pool
        // is topped up when workers stop (see `RunningWorker::stop`).
        if let Some(mut p) = warm.take(python) {
            let mut line = serde_json::to_string(env).map_err(|e| e.to_string())?;
            line.push('\n');
            use tokio::io::AsyncWriteExt;
            if p.stdin.write_all(line.as_bytes()).await.is_ok() && p.stdin.flush().await.is_ok() {
                // The warm process's output tail becomes the worker's.
                *tail.lock() = std::mem::take(&mut *p.tail.lock());
                return Ok((p.child, p.tail));
            }
        }
    }
    let mut cmd = Command::new(python);
    cmd.args(["-c", &python_boot(COLD_BOOT)]).envs(env);
    Ok((
        spawn_with_output(cmd, worker_id, tail, false)?,
        tail.clone(),
    ))
}

fn spawn_with_output(
    mut cmd: Command,
    worker_id: &str,
    tail: &Arc<Mutex<VecDeque<String>>>,
    piped_stdin: bool,
) -> Result<Child, String> {
    cmd.stdin(if piped_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("{e}"))?;
    let stdout = child.stdout.take().map(|s| Box::new(s) as OutputStream);
    let stderr = child.stderr.take().map(|s| Box::new(s) as OutputStream);
    for stream in [stdout, stderr].into_iter().flatten() {
        let tail = tail.clone();
        let worker = worker_id.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "sdk_worker_output", %worker, "{line}");
                let mut t = tail.lock();
                if t.len() == STDERR_TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
    }
    Ok(child)
}

type OutputStream = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

const POOL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A worker pool client that sends `token` (if any) on every call.
async fn pool_client(
    endpoint: &str,
    token: Option<&ferrobeam_auth::AuthToken>,
) -> Result<BeamFnExternalWorkerPoolClient<ferrobeam_auth::AuthChannel>, tonic::transport::Error> {
    // A pool whose host is unreachable answers nothing: give up quickly, so
    // that the start moves on to another pool (see `remote_pools`).  A
    // StartWorker itself may take a while (the pool fetches the artifacts).
    let channel = tonic::transport::Endpoint::from_shared(http_url(endpoint))?
        .connect_timeout(POOL_CONNECT_TIMEOUT)
        .timeout(POOL_CALL_TIMEOUT)
        .connect()
        .await?;
    Ok(BeamFnExternalWorkerPoolClient::new(ferrobeam_auth::authed(
        channel, token,
    )))
}

/// `endpoint` (`host:port`, or a URL) as a URL tonic can connect to.
pub fn http_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

/// Keeps ids usable as file names: no separators, no `..`.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "_".to_owned()
    } else {
        s
    }
}
