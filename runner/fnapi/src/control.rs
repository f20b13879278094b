//! `BeamFnControl`: the worker's control stream and descriptor lookups.

use std::pin::Pin;
use std::sync::Arc;

use ferrobeam_proto::fn_api::beam_fn_control_server::BeamFnControl;
use ferrobeam_proto::fn_api::{
    GetProcessBundleDescriptorRequest, InstructionRequest, InstructionResponse,
    ProcessBundleDescriptor,
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::registry::Registry;
use crate::worker::Worker;

pub struct ControlService {
    pub(crate) registry: Arc<Registry>,
}

type RequestStream = Pin<Box<dyn Stream<Item = Result<InstructionRequest, Status>> + Send>>;

#[tonic::async_trait]
impl BeamFnControl for ControlService {
    type ControlStream = RequestStream;

    async fn control(
        &self,
        request: Request<Streaming<InstructionResponse>>,
    ) -> Result<Response<Self::ControlStream>, Status> {
        let worker_id = crate::worker_id(&request)?;
        // The environment speaks for the SDK; ferrobeam's own harness hook
        // also announces itself on the stream (the environment was written
        // by the submitting SDK, which knows nothing of the hook).
        let announced = request
            .metadata()
            .get(crate::SDK_CAPABILITIES_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let embeds_request_elements = self
            .registry
            .sdk_capabilities(&worker_id)
            .iter()
            .map(String::as_str)
            .chain(announced.split(',').map(str::trim))
            .any(|c| c == crate::worker::CONTROL_REQUEST_ELEMENTS_EMBEDDING);
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Arc::new(Worker::new(
            worker_id.clone(),
            Arc::downgrade(&self.registry),
            tx,
            embeds_request_elements,
        ));
        self.registry.worker_connected(worker.clone())?;
        tracing::debug!(worker = %worker_id, embeds_request_elements, "control stream connected");
        let mut responses = request.into_inner();
        tokio::spawn(async move {
            let reason = loop {
                match responses.next().await {
                    Some(Ok(resp)) => worker.route_response(resp),
                    Some(Err(status)) => {
                        break format!("control stream failed: {}", status.message())
                    }
                    None => break "control stream closed by the worker".to_owned(),
                }
            };
            tracing::debug!(worker = %worker.id(), %reason, "control stream ended");
            worker.mark_dead(&reason);
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn get_process_bundle_descriptor(
        &self,
        request: Request<GetProcessBundleDescriptorRequest>,
    ) -> Result<Response<ProcessBundleDescriptor>, Status> {
        let id = request.into_inner().process_bundle_descriptor_id;
        self.registry
            .descriptor(&id)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no process bundle descriptor {id:?}")))
    }
}
