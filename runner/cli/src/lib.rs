//! The ferrobeam command line and the embeddable job server.
//!
//! `ferrobeam job-server` serves Beam's Job API; the Python package embeds
//! the same server through [`server::start`].

pub mod executor;
pub mod server;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use server::{start, RunningServer, ServerConfig};

#[derive(Parser, Debug)]
#[command(name = "ferrobeam", version, about = "A fast, local Apache Beam runner", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
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
    init_logging("info,sdk_worker=warn");
    match cli.command {
        Command::JobServer {
            host,
            port,
            allow_remote,
            workers,
            bundles_per_worker,
            python,
            strict_environments,
            work_dir,
        } => {
            let config = ServerConfig {
                host,
                port,
                allow_remote,
                python,
                workers,
                bundles_per_worker,
                strict_environments,
                work_dir,
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("ferrobeam: cannot start the runtime: {e}");
                    return 1;
                }
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
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = server.stopped() => {}
                }
                server.stop();
                0
            })
        }
    }
}

/// Logs to stderr at `default` level (an `EnvFilter` directive);
/// `RUST_LOG` overrides it.
pub fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
