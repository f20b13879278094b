//! A job server whose executor only pretends to run pipelines.
//!
//! It exercises the whole Job API with Beam's real Python client: the
//! client prepares, stages its artifacts, opens the streams, runs and
//! queries metrics, while the "execution" sleeps briefly, reports what was
//! staged and a user counter, and succeeds (or fails with `--fail`).
//!
//! ```text
//! cargo run -p ferrobeam-jobs --example fake_job_server -- --port 8099 [--root DIR] [--fail] [--sleep-ms 300]
//! ```
//!
//! Prints `LISTENING <host:port>` on stdout once it accepts connections.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use ferrobeam_jobs::{Executor, JobContext, JobServer, JobServiceConfig};
use ferrobeam_proto::job_api::job_message::MessageImportance;
use ferrobeam_proto::pipeline::v1::{
    ArtifactFilePayload, ArtifactStagingToRolePayload, MonitoringInfo, Pipeline,
};
use futures::future::BoxFuture;
use prost::Message;

struct FakeExecutor {
    fail: bool,
    sleep: Duration,
}

/// A `beam:metric:user:sum_int64:v1` counter as the Python SDK reports it.
fn user_counter(namespace: &str, name: &str, value: u64) -> MonitoringInfo {
    let mut payload = Vec::new();
    prost::encoding::encode_varint(value, &mut payload);
    MonitoringInfo {
        urn: "beam:metric:user:sum_int64:v1".into(),
        r#type: "beam:metrics:sum_int64:v1".into(),
        payload: payload.into(),
        labels: [
            ("PTRANSFORM", "fake_step"),
            ("NAMESPACE", namespace),
            ("NAME", name),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        start_time: None,
    }
}

/// One line per staged artifact: environment, staged name, local path, size.
fn describe_artifacts(job: &JobContext) -> String {
    let mut lines = Vec::new();
    let mut envs: Vec<_> = job.artifacts.iter().collect();
    envs.sort_by_key(|(id, _)| id.as_str());
    for (env, artifacts) in envs {
        for a in artifacts {
            let path = ArtifactFilePayload::decode(a.type_payload.as_ref())
                .map(|p| p.path)
                .unwrap_or_default();
            let name = ArtifactStagingToRolePayload::decode(a.role_payload.as_ref())
                .map(|p| p.staged_name)
                .unwrap_or_default();
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            lines.push(format!("staged {env} {name} {path} {size}"));
        }
    }
    lines.join("\n")
}

impl Executor for FakeExecutor {
    fn validate(&self, pipeline: &Pipeline, _options: &prost_types::Struct) -> Result<(), String> {
        if pipeline.root_transform_ids.is_empty() {
            return Err("the pipeline has no transforms".into());
        }
        Ok(())
    }

    /// Its jobs end on their own after a sleep; none acts on a drain.
    fn is_drainable(&self, _pipeline: &Pipeline, _options: &prost_types::Struct) -> bool {
        false
    }

    fn execute(&self, job: JobContext) -> BoxFuture<'static, Result<(), String>> {
        let (fail, sleep) = (self.fail, self.sleep);
        Box::pin(async move {
            job.events
                .message(MessageImportance::JobMessageBasic, describe_artifacts(&job));
            tokio::time::sleep(sleep).await;
            if job.cancelled() {
                return Ok(());
            }
            job.events.metrics(
                vec![user_counter("fake", "elements", 7)],
                vec![user_counter("fake", "elements", 7)],
            );
            if fail {
                return Err(
                    "Traceback (most recent call last):\n  File \"fake.py\", line 1\n\
                            ValueError: fake failure in step 'FakeStep'"
                        .into(),
                );
            }
            Ok(())
        })
    }
}

/// Resolves on Ctrl-C or SIGTERM, whichever comes first.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let mut port = 0u16;
    let mut root = None;
    let mut fail = false;
    let mut sleep = Duration::from_millis(300);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            "--root" => root = Some(args.next().ok_or("--root needs a value")?),
            "--fail" => fail = true,
            "--sleep-ms" => {
                sleep =
                    Duration::from_millis(args.next().ok_or("--sleep-ms needs a value")?.parse()?)
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let config = match root {
        Some(root) => JobServiceConfig::with_root(root),
        None => JobServiceConfig::default(),
    };

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let server = JobServer::new(Arc::new(FakeExecutor { fail, sleep }), config)?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        server.set_public_endpoint(addr.to_string());
        println!("LISTENING {addr}");
        std::io::stdout().flush()?;
        server.serve(listener, stop_signal()).await?;
        Ok(())
    })
}
