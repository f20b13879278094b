//! `BeamFnState`: state requests, answered by the bundle that issued them.

use std::pin::Pin;
use std::sync::Arc;

use ferrobeam_proto::fn_api::beam_fn_state_server::BeamFnState;
use ferrobeam_proto::fn_api::{state_response, StateRequest, StateResponse};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::registry::Registry;

/// Serves the state requests of one bundle (side inputs, user state).
pub trait StateHandler: Send + Sync {
    /// Answers one request; `Err` becomes the response's error text, which
    /// the SDK raises inside the user's DoFn.
    fn handle(&self, request: &StateRequest) -> Result<state_response::Response, String>;
}

pub struct StateService {
    pub(crate) registry: Arc<Registry>,
}

#[tonic::async_trait]
impl BeamFnState for StateService {
    type StateStream = Pin<Box<dyn Stream<Item = Result<StateResponse, Status>> + Send>>;

    async fn state(
        &self,
        request: Request<Streaming<StateRequest>>,
    ) -> Result<Response<Self::StateStream>, Status> {
        let registry = self.registry.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut requests = request.into_inner();
        tokio::spawn(async move {
            while let Some(Ok(req)) = requests.next().await {
                let result = match registry.bundle_state(&req.instruction_id) {
                    Some(handler) => handler.handle(&req),
                    None => Err(format!(
                        "state request for unknown or finished bundle {:?}",
                        req.instruction_id
                    )),
                };
                let resp = match result {
                    Ok(r) => StateResponse {
                        id: req.id,
                        error: String::new(),
                        response: Some(r),
                    },
                    Err(error) => StateResponse {
                        id: req.id,
                        error,
                        response: None,
                    },
                };
                if tx.send(Ok(resp)).is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}
