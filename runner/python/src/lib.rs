//! `ferrobeam._native`: the job server embedded in the Python process.
//!
//! The server runs on a tokio runtime owned by this module, on background
//! threads, so Python code keeps running (and the GIL stays free) while
//! jobs execute.

use std::path::PathBuf;
use std::sync::OnceLock;

use ferrobeam_cli::{RunningServer, ServerConfig};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("ferrobeam")
            .enable_all()
            .build()
            .expect("cannot start the tokio runtime")
    })
}

/// A job server running inside this process.
#[pyclass(module = "ferrobeam._native")]
struct JobServer {
    inner: RunningServer,
}

#[pymethods]
impl JobServer {
    /// `host:port` of the Job API (artifact staging is on the same port).
    #[getter]
    fn endpoint(&self) -> String {
        self.inner.endpoint()
    }

    /// `(state API url, socket path)`: where this server's state socket
    /// stands in for its gRPC state service, or None.
    #[getter]
    fn state_channel(&self) -> Option<(String, PathBuf)> {
        self.inner.state_channel()
    }

    /// The web dashboard's URL (`http://127.0.0.1:PORT/`), or None.
    #[getter]
    fn dashboard_url(&self) -> Option<String> {
        self.inner.dashboard_url()
    }

    #[getter]
    fn port(&self) -> u16 {
        self.inner.job_addr.port()
    }

    /// Stops accepting jobs, cancels running ones and waits (at most
    /// `timeout` seconds) until they have closed their state; returns how
    /// many state databases are still open.  The GIL is released while
    /// waiting: a job's in-process SDK worker needs it to finish.
    #[pyo3(signature = (timeout=None))]
    fn stop(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<usize> {
        let timeout = match timeout {
            None => ferrobeam_cli::server::SHUTDOWN_GRACE,
            Some(t) if t >= 0.0 && t.is_finite() => std::time::Duration::from_secs_f64(t),
            Some(_) => {
                return Err(PyRuntimeError::new_err(
                    "timeout must be a non-negative number of seconds",
                ))
            }
        };
        Ok(py.detach(|| self.inner.stop_and_wait(timeout)))
    }

    fn __repr__(&self) -> String {
        format!("JobServer(endpoint={:?})", self.inner.endpoint())
    }
}

/// Starts a job server in the background and returns once it is listening.
#[pyfunction]
#[pyo3(signature = (host="127.0.0.1", port=0, python=None, workers=0, strict_environments=false, work_dir=None, dashboard_port=Some(0)))]
#[allow(clippy::too_many_arguments)]
fn start_job_server(
    py: Python<'_>,
    host: &str,
    port: u16,
    python: Option<PathBuf>,
    workers: usize,
    strict_environments: bool,
    work_dir: Option<PathBuf>,
    dashboard_port: Option<u16>,
) -> PyResult<JobServer> {
    // Embedded in a user's program: only problems, unless RUST_LOG says otherwise.
    ferrobeam_cli::init_logging("warn,sdk_worker=error");
    let mut config = ServerConfig {
        host: host.to_owned(),
        port,
        workers,
        strict_environments,
        work_dir,
        dashboard_port,
        ..ServerConfig::default()
    };
    if let Some(p) = python {
        config.python = p;
    }
    let inner = py
        .detach(|| runtime().block_on(ferrobeam_cli::start(config)))
        .map_err(|e| PyRuntimeError::new_err(format!("{e:#}")))?;
    Ok(JobServer { inner })
}

/// Runs the `ferrobeam` command line; returns its exit code.
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(|| ferrobeam_cli::main_with_args(argv))
}

/// Takes a savepoint of a running job (see `ferrobeam.job_control.savepoint_job`).
/// `auth_token` is sent to the server (else `FERROBEAM_AUTH_TOKEN`'s, if set).
#[pyfunction]
#[pyo3(signature = (endpoint, job_id, directory, stop, timeout, auth_token=None))]
fn savepoint(
    py: Python<'_>,
    endpoint: &str,
    job_id: &str,
    directory: PathBuf,
    stop: bool,
    timeout: f64,
    auth_token: Option<String>,
) -> PyResult<String> {
    let auth_token = auth_token
        .map(|t| ferrobeam_auth::AuthToken::new(&t, "auth_token"))
        .transpose()
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    if !(timeout > 0.0 && timeout.is_finite()) {
        return Err(PyRuntimeError::new_err(
            "timeout must be a positive number of seconds",
        ));
    }
    py.detach(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let call = ferrobeam_cli::savepoint::savepoint(
            endpoint,
            job_id,
            &directory,
            stop,
            std::time::Duration::from_secs_f64(timeout),
        );
        match auth_token {
            Some(token) => rt.block_on(ferrobeam_cli::security::with_token(token, call)),
            None => rt.block_on(call),
        }
        .map_err(|f| PyRuntimeError::new_err(f.message))
    })
}

/// The RocksDB state databases open in this process (0 once every job
/// that used RocksDB has ended and closed its state).
#[pyfunction]
fn open_state_databases() -> usize {
    ferrobeam_state::rocks::open_databases()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<JobServer>()?;
    m.add_function(wrap_pyfunction!(start_job_server, m)?)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(savepoint, m)?)?;
    m.add_function(wrap_pyfunction!(open_state_databases, m)?)?;
    Ok(())
}
