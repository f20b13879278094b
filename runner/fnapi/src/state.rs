//! `BeamFnState`: state requests, answered by the bundle that issued them.

use std::pin::Pin;
use std::sync::Arc;

use ferrobeam_proto::fn_api::beam_fn_state_server::BeamFnState;
use ferrobeam_proto::fn_api::{state_response, StateRequest, StateResponse};
use futures::Stream;
use tokio_stream::StreamExt;
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
        // Requests are answered inline, as the response stream is polled:
        // no task or channel in between, so a request and its answer cost
        // no extra thread wake-ups (the SDK waits for most answers).
        let registry = self.registry.clone();
        let responses = request
            .into_inner()
            .map_while(Result::ok)
            .map(move |req| Ok(answer(&registry, req)));
        Ok(Response::new(Box::pin(responses)))
    }
}

/// Answers one request from the bundle it names (shared with the state socket).
pub(crate) fn answer(registry: &Registry, req: StateRequest) -> StateResponse {
    let result = match registry.bundle_state(&req.instruction_id) {
        Some(handler) => handler.handle(&req),
        None => Err(format!(
            "state request for unknown or finished bundle {:?}",
            req.instruction_id
        )),
    };
    match result {
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
    }
}
