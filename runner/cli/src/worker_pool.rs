//! `ferrobeam worker-pool`: runs SDK workers on this host for a job server
//! elsewhere (see `ferrobeam_worker_pool`).

use std::path::PathBuf;

use anyhow::Context;
use ferrobeam_auth::AuthToken;
use ferrobeam_worker_pool::{PoolConfig, WorkerPoolService};
use tokio::net::TcpListener;

/// The flags of `ferrobeam worker-pool`.
#[derive(clap::Args, Debug)]
pub struct WorkerPoolArgs {
    /// Address to bind (loopback by default; another needs --allow-remote
    /// and a token).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port of the pool's gRPC service (0 picks a free one).
    #[arg(long, default_value_t = 50000)]
    port: u16,
    /// Allow a non-loopback --host. The pool runs the code job servers send.
    #[arg(long)]
    allow_remote: bool,
    /// Python interpreter for SDK workers (with apache_beam and ferrobeam).
    #[arg(long, env = "FERROBEAM_PYTHON", default_value = "python3")]
    python: PathBuf,
    /// Most SDK workers at once [default: 4 per core].
    #[arg(long = "max_workers", visible_alias = "max-workers")]
    max_workers: Option<usize>,
    /// Interpreters kept with Beam imported, so a worker starts in well
    /// under a second [default: one per core].
    #[arg(long)]
    warm: Option<usize>,
    /// Scratch directory for the workers (staged files) [default: a new
    /// temporary directory, removed at exit].
    #[arg(long = "work_dir", visible_alias = "work-dir")]
    work_dir: Option<PathBuf>,
}

pub async fn serve(args: WorkerPoolArgs, token: Option<AuthToken>) -> anyhow::Result<()> {
    let ip = crate::server::bind_address(
        &args.host,
        args.allow_remote,
        token.as_ref(),
        "the pool runs the code it is sent",
    )
    .await?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Kept alive until the pool stops: a temporary work dir goes with it.
    let temp = match &args.work_dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("ferrobeam-pool-").tempdir()?),
    };
    let work_dir = match (&args.work_dir, &temp) {
        (Some(dir), _) => dir.clone(),
        (None, temp) => temp.as_ref().expect("made above").path().to_owned(),
    };
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let listener = TcpListener::bind((ip, args.port))
        .await
        .with_context(|| format!("cannot bind the worker pool to {ip}:{}", args.port))?;
    let addr = listener.local_addr()?;

    let service = WorkerPoolService::new(PoolConfig {
        python: args.python,
        work_dir,
        max_workers: args.max_workers.unwrap_or(4 * cores),
        warm: args.warm.unwrap_or(cores),
        // The pool's calls to the job server, and its workers', carry it.
        token: token.clone(),
    });
    println!("ferrobeam worker pool listening on {addr}");
    tonic::transport::Server::builder()
        .layer(ferrobeam_auth::GrpcAuthLayer::new(token))
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
            crate::stop_signal().await;
        })
        .await?;
    drop(temp);
    Ok(())
}
