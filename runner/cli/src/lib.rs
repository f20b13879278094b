//! The ferrobeam command line and the embeddable job server.
//!
//! `ferrobeam job-server` serves Beam's Job API; the Python package embeds
//! the same server through [`server::start`].  `ferrobeam drain` and
//! `ferrobeam cancel` stop a job on a running server ([`control`]);
//! `ferrobeam jobs`, `status` and `logs` look at one ([`inspect`]).

pub mod checkpoints;
pub mod control;
pub mod executor;
mod harnesses;
pub mod inspect;
mod json_log;
pub mod savepoint;
pub mod security;
pub mod server;
pub mod work_dirs;
pub mod worker_pool;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub use server::{start, RunningServer, ServerConfig};

#[derive(Parser, Debug)]
#[command(name = "ferrobeam", version, about = "A fast, local Apache Beam runner", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// File holding the shared auth token (else $FERROBEAM_AUTH_TOKEN).
    /// Servers then refuse every call without `authorization: Bearer
    /// <token>` (required with --allow-remote); client commands send it.
    #[arg(
        long = "auth_token_file",
        visible_alias = "auth-token-file",
        value_name = "PATH",
        global = true
    )]
    auth_token_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve Beam's Job API; submit with --runner=PortableRunner --job_endpoint=HOST:PORT.
    JobServer {
        /// Address to bind (loopback by default).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Job API port (0 picks a free one).
        #[arg(long, default_value_t = 8099)]
        port: u16,
        /// Allow a non-loopback --host. The server runs the code it is sent.
        #[arg(long)]
        allow_remote: bool,
        /// SDK workers per environment (0: one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Bundles in flight on one worker. Python workers are CPU-bound
        /// under the GIL, so 1 measured fastest; more overlaps I/O-bound work.
        #[arg(long, default_value_t = 1)]
        bundles_per_worker: usize,
        /// Python interpreter for SDK workers.
        #[arg(long, env = "FERROBEAM_PYTHON", default_value = "python3")]
        python: PathBuf,
        /// Refuse Docker environments instead of running Beam's Python image locally.
        #[arg(long)]
        strict_environments: bool,
        /// Directory for staged artifacts and worker scratch space.
        #[arg(long = "work_dir", visible_alias = "work-dir")]
        work_dir: Option<PathBuf>,
        /// Checkpoint streaming jobs into DIR/<job name> unless they set
        /// --checkpoint_dir themselves; a job submitted again under the same
        /// --job_name restores from its latest checkpoint.
        #[arg(
            long = "checkpoint_dir",
            visible_alias = "checkpoint-dir",
            value_name = "DIR"
        )]
        checkpoint_dir: Option<PathBuf>,
        /// Seconds between checkpoints for jobs that do not say (default 10).
        #[arg(long = "checkpoint_interval", visible_alias = "checkpoint-interval",
              value_parser = positive_seconds)]
        checkpoint_interval: Option<f64>,
        /// State backend for jobs that do not say: memory or rocksdb
        /// (default: rocksdb when checkpointing, else memory).
        #[arg(long = "state_backend", visible_alias = "state-backend",
              value_parser = ["memory", "rocksdb"])]
        state_backend: Option<String>,
        /// Port of the web dashboard and Prometheus /metrics, on --host
        /// [default: 8081, or any free port when 8081 is taken; 0: any free port].
        #[arg(
            long = "dashboard_port",
            visible_alias = "dashboard-port",
            value_name = "PORT"
        )]
        dashboard_port: Option<u16>,
        /// Serve no dashboard.
        #[arg(
            long = "no_dashboard",
            visible_alias = "no-dashboard",
            conflicts_with = "dashboard_port"
        )]
        no_dashboard: bool,
        /// Port of the Fn API that SDK workers dial (0: any free port).
        #[arg(long = "fn_port", visible_alias = "fn-port", default_value_t = 0)]
        fn_port: u16,
        /// The address workers on other hosts dial to reach this server
        /// (required with --worker_pools when --host is 0.0.0.0).
        #[arg(long = "advertise_host", visible_alias = "advertise-host", value_name = "HOST")]
        advertise_host: Option<String>,
        /// Run the Python workers on remote `ferrobeam worker-pool`s instead
        /// of this machine: HOST:PORT,... (a host name with several
        /// addresses, such as a headless Service, is one pool per address).
        /// --workers then counts workers over all pools [default: 2 per pool].
        #[arg(long = "worker_pools", visible_alias = "worker-pools", value_name = "HOST:PORT,...",
              value_delimiter = ',')]
        worker_pools: Vec<String>,
        /// Log lines as text, or as JSON objects (one a line, with the job,
        /// stage and worker as fields where they apply).
        #[arg(long = "log_format", visible_alias = "log-format", default_value = "text",
              value_parser = ["text", "json"])]
        log_format: String,
        #[command(flatten)]
        limits: security::LimitArgs,
    },
    /// Run SDK workers on this host for a job server elsewhere
    /// (`ferrobeam job-server --worker_pools THIS_HOST:PORT`).
    ///
    /// Serves Beam's BeamFnExternalWorkerPool; each worker is the stock
    /// Python SDK harness, booted with the job's options and staged files
    /// fetched from the job server.
    WorkerPool(worker_pool::WorkerPoolArgs),
    /// Serve only Beam's ExpansionService, for Kafka's cross-language
    /// transforms (the job server serves it too, on its own port).
    ///
    /// Python pipelines pass its address as `expansion_service=HOST:PORT` to
    /// `apache_beam.io.kafka.ReadFromKafka` / `WriteToKafka`; the expanded
    /// transforms run natively on ferrobeam (no Java).
    ExpansionService {
        /// Address to bind (loopback by default).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port (0 picks a free one).
        #[arg(long, default_value_t = 8097)]
        port: u16,
        /// Allow a non-loopback --host.
        #[arg(long)]
        allow_remote: bool,
    },
    /// Drain a streaming job: finish what it has read, then end DRAINED.
    ///
    /// The job stops reading its sources and finishes what it has read
    /// (pending windows fire, timers run), then ends DRAINED. A batch job is
    /// not affected: it runs to completion and ends DONE.
    #[command(after_help = control::EXIT_CODES_HELP)]
    Drain(ControlArgs),
    /// Cancel a job: stop it now, dropping what is in flight; it ends CANCELLED.
    #[command(after_help = control::EXIT_CODES_HELP)]
    Cancel(ControlArgs),
    /// List the server's jobs: id, state and name, one job a line.
    #[command(after_help = inspect::EXIT_CODES_HELP)]
    Jobs(ServerArgs),
    /// Print a job's state (RUNNING, DONE, FAILED, ...).
    #[command(after_help = inspect::EXIT_CODES_HELP)]
    Status(ControlArgs),
    /// Print a job's messages and state changes (errors carry the Python traceback).
    #[command(after_help = inspect::EXIT_CODES_HELP)]
    Logs {
        #[command(flatten)]
        job: ControlArgs,
        /// Keep printing until the job ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Take a savepoint of a running streaming job into DIR (new or empty).
    ///
    /// A savepoint is a checkpoint kept until you delete it. The job goes on;
    /// start it again, or a changed version of it, with --restore_from DIR.
    #[command(after_help = savepoint::EXIT_CODES_HELP)]
    Savepoint {
        #[command(flatten)]
        job: ControlArgs,
        /// Where to write it (a new or empty directory).
        dir: PathBuf,
    },
    /// Stop a streaming job with a savepoint: take one into DIR, then end the
    /// job (CANCELLED) without processing anything further.
    #[command(after_help = savepoint::EXIT_CODES_HELP)]
    Stop {
        #[command(flatten)]
        job: ControlArgs,
        /// Where to write the savepoint (a new or empty directory).
        #[arg(long, value_name = "DIR")]
        savepoint: PathBuf,
    },
    /// Look at checkpoints and savepoints on disk.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
}

#[derive(Subcommand, Debug)]
enum CheckpointCommand {
    /// List what a checkpoint holds: transforms, state ids, key counts and sizes.
    ///
    /// DIR is a checkpoint or savepoint directory, or a --checkpoint_dir
    /// (its latest complete checkpoint). Nothing is changed. Exits 0, or 1
    /// when there is no usable checkpoint there.
    Inspect {
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Which server.
#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// The job server, as HOST:PORT (where `ferrobeam job-server` listens).
    #[arg(long = "job_endpoint", visible_alias = "job-endpoint", value_name = "HOST:PORT",
          default_value = control::DEFAULT_JOB_ENDPOINT)]
    job_endpoint: String,
    /// Seconds to wait for the server's answer.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    timeout: f64,
}

/// Which job, on which server.
#[derive(clap::Args, Debug)]
struct ControlArgs {
    /// The job's id (Beam clients log it; the Python result has `job_id()`).
    job_id: String,
    #[command(flatten)]
    server: ServerArgs,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
        _ => Err(format!(
            "expected a positive number of seconds, got {text:?}"
        )),
    }
}

/// Runs the CLI with `args` (including the program name); returns the exit code.
pub fn main_with_args(args: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    security::set_token_file(cli.auth_token_file);
    match cli.command {
        Command::Checkpoint(CheckpointCommand::Inspect { dir, json }) => {
            checkpoints::inspect(&dir, json)
        }
        Command::Savepoint { job, dir } => savepoint_main(job, &dir, false),
        Command::Stop { job, savepoint } => savepoint_main(job, &savepoint, true),
        Command::Drain(args) => control_main(control::Action::Drain, args),
        Command::Cancel(args) => control_main(control::Action::Cancel, args),
        Command::Jobs(args) => client_main(async move {
            let jobs = inspect::jobs(&args.job_endpoint, seconds(args.timeout)).await?;
            for job in jobs {
                println!(
                    "{}\t{}\t{}",
                    job.job_id,
                    inspect::state_name(job.state),
                    job.job_name
                );
            }
            Ok(())
        }),
        Command::Status(args) => client_main(async move {
            let event = inspect::status(
                &args.server.job_endpoint,
                &args.job_id,
                seconds(args.server.timeout),
            )
            .await?;
            println!("{}", inspect::state_name(event.state));
            Ok(())
        }),
        Command::Logs { job, follow } => client_main(async move {
            inspect::logs(
                &job.server.job_endpoint,
                &job.job_id,
                follow,
                seconds(job.server.timeout),
                &mut |line| println!("{line}"),
            )
            .await
        }),
        Command::WorkerPool(args) => {
            serve_main(move |token| worker_pool::serve(args, token))
        }
        Command::ExpansionService {
            host,
            port,
            allow_remote,
        } => serve_main(move |token| async move {
            server::serve_expansion(&host, port, allow_remote, token).await
        }),
        Command::JobServer {
            host,
            port,
            allow_remote,
            workers,
            bundles_per_worker,
            python,
            strict_environments,
            work_dir,
            checkpoint_dir,
            checkpoint_interval,
            state_backend,
            dashboard_port,
            no_dashboard,
            log_format,
            limits,
            fn_port,
            advertise_host,
            worker_pools,
        } => {
            let token = match security::token() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("ferrobeam: {e}");
                    return 2;
                }
            };
            let checkpoint_dir = match checkpoint_dir.map(std::path::absolute).transpose() {
                Ok(dir) => dir,
                Err(e) => {
                    eprintln!("ferrobeam: bad --checkpoint_dir: {e}");
                    return 2;
                }
            };
            init_logging_as("info,sdk_worker=warn", log_format == "json");
            let config = ServerConfig {
                host,
                port,
                allow_remote,
                python,
                workers,
                bundles_per_worker,
                strict_environments,
                work_dir,
                checkpoints: executor::CheckpointDefaults {
                    root: checkpoint_dir,
                    interval: checkpoint_interval.map(Duration::from_secs_f64),
                    backend: state_backend
                        .as_deref()
                        .and_then(ferrobeam_state::BackendKind::parse),
                },
                dashboard_port: match (no_dashboard, dashboard_port) {
                    (true, _) => None,
                    (false, port) => Some(port.unwrap_or(DEFAULT_DASHBOARD_PORT)),
                },
                // Only the default port gives way to whoever has it.
                dashboard_port_fallback: !no_dashboard && dashboard_port.is_none(),
                security: limits.with_token(token),
                fn_port,
                advertise_host,
                worker_pools,
            };
            let Some(rt) = server_runtime() else {
                return 1;
            };
            rt.block_on(async {
                let server = match server::start(config).await {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("ferrobeam: {e:#}");
                        return 1;
                    }
                };
                println!("ferrobeam job server listening on {}", server.endpoint());
                if let Some(url) = server.dashboard_url() {
                    println!("dashboard: {url}");
                }
                tokio::select! {
                    _ = stop_signal() => {}
                    _ = server.stopped() => {}
                }
                // Let cancelled jobs close their state before the process exits.
                tokio::task::block_in_place(|| server.stop_and_wait(server::SHUTDOWN_GRACE));
                0
            })
        }
    }
}

/// `ferrobeam drain` / `ferrobeam cancel`: prints the resulting state and
/// returns the exit code documented in [`control::ExitCode`].
fn control_main(action: control::Action, args: ControlArgs) -> i32 {
    client_main(async move {
        let state = control::request(
            action,
            &args.server.job_endpoint,
            &args.job_id,
            seconds(args.server.timeout),
        )
        .await?;
        println!("{}", state.as_str_name());
        Ok(())
    })
}

fn savepoint_main(args: ControlArgs, dir: &std::path::Path, stop: bool) -> i32 {
    let dir = dir.to_path_buf();
    client_main(async move {
        let written = savepoint::savepoint(
            &args.server.job_endpoint,
            &args.job_id,
            &dir,
            stop,
            seconds(args.server.timeout),
        )
        .await?;
        println!("{written}");
        Ok(())
    })
}

/// Runs a server command (`worker-pool`, `expansion-service`) until it
/// stops: exit code 0, 1 when it fails, 2 when the token is unusable.
fn serve_main<F, Fut>(serve: F) -> i32
where
    F: FnOnce(Option<ferrobeam_auth::AuthToken>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    init_logging("info");
    let token = match security::token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ferrobeam: {e}");
            return 2;
        }
    };
    let Some(rt) = server_runtime() else {
        return 1;
    };
    match rt.block_on(serve(token)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ferrobeam: {e:#}");
            1
        }
    }
}

/// The multi-threaded runtime a server runs on (`None`, said on stderr,
/// if it cannot be built).
fn server_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("ferrobeam: cannot start the runtime: {e}"))
        .ok()
}

/// Resolves at Ctrl-C (SIGINT) or SIGTERM, the signal a service manager
/// or Kubernetes sends to stop a server.
pub async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// Runs one client command to its end: exit code 0 when it succeeds,
/// otherwise its failure's message on stderr and its code.
fn client_main(command: impl std::future::Future<Output = Result<(), control::Failure>>) -> i32 {
    init_logging("warn");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferrobeam: cannot start the runtime: {e}");
            return control::ExitCode::Error as i32;
        }
    };
    match rt.block_on(command) {
        Ok(()) => control::ExitCode::Accepted as i32,
        Err(failure) => {
            eprintln!("ferrobeam: {}", failure.message);
            failure.code as i32
        }
    }
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Logs to stderr at `default` level (an `EnvFilter` directive);
/// `RUST_LOG` overrides it.
pub fn init_logging(default: &str) {
    init_logging_as(default, false)
}

/// [`init_logging`], as text or as one JSON object a line (`--log_format=json`):
/// the fields of the enclosing spans (`job`, `stage`, `worker`) are flattened
/// into each line, so a log shipper can filter by them.
pub fn init_logging_as(default: &str, json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(json_log::FlatJson)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

/// Flink's dashboard port, where people look first.
const DEFAULT_DASHBOARD_PORT: u16 = 8081;
