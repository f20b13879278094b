//! `BeamFnLogging`: worker log entries into our logs and the job's messages.

use std::pin::Pin;
use std::sync::Arc;

use ferrobeam_proto::fn_api::beam_fn_logging_server::BeamFnLogging;
use ferrobeam_proto::fn_api::log_entry::severity::Enum as Severity;
use ferrobeam_proto::fn_api::{log_entry, LogControl};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::registry::Registry;

pub struct LoggingService {
    pub(crate) registry: Arc<Registry>,
}

#[tonic::async_trait]
impl BeamFnLogging for LoggingService {
    type LoggingStream = Pin<Box<dyn Stream<Item = Result<LogControl, Status>> + Send>>;

    async fn logging(
        &self,
        request: Request<Streaming<log_entry::List>>,
    ) -> Result<Response<Self::LoggingStream>, Status> {
        let worker_id = crate::worker_id(&request).unwrap_or_else(|_| "unknown".into());
        let (sink, job) = match self.registry.log_sink(&worker_id) {
            Some((sink, job)) => (Some(sink), job),
            None => (None, String::new()),
        };
        // We never send log control messages; the stream stays open until
        // the worker closes its side, then `_keep_open` drops and ends ours.
        let (keep_open, rx) = mpsc::channel(1);
        let mut entries = request.into_inner();
        tokio::spawn(async move {
            let _keep_open = keep_open;
            while let Some(Ok(list)) = entries.next().await {
                for entry in &list.log_entries {
                    emit(&job, &worker_id, entry);
                    if let Some(sink) = &sink {
                        sink(entry);
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn emit(job: &str, worker: &str, entry: &ferrobeam_proto::fn_api::LogEntry) {
    let transform = entry.transform_id.as_str();
    let msg = entry.message.as_str();
    match Severity::try_from(entry.severity).unwrap_or(Severity::Info) {
        Severity::Critical | Severity::Error => {
            tracing::error!(target: "sdk_worker", job, %worker, transform, "{msg}{}", trace_suffix(entry))
        }
        Severity::Warn => tracing::warn!(target: "sdk_worker", job, %worker, transform, "{msg}"),
        Severity::Notice | Severity::Info => {
            tracing::info!(target: "sdk_worker", job, %worker, transform, "{msg}")
        }
        _ => tracing::debug!(target: "sdk_worker", job, %worker, transform, "{msg}"),
    }
}

fn trace_suffix(entry: &ferrobeam_proto::fn_api::LogEntry) -> String {
    if entry.trace.is_empty() {
        String::new()
    } else {
        format!("\n{}", entry.trace)
    }
}
