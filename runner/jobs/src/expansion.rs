//! Beam's `ExpansionService`, served on the job server's port: SDKs ask it
//! to expand cross-language transforms the executor runs natively (Kafka).

use std::sync::Arc;

use ferrobeam_proto::expansion::v1::expansion_service_server::ExpansionService;
use ferrobeam_proto::expansion::v1::{
    DiscoverSchemaTransformRequest, DiscoverSchemaTransformResponse, ExpansionRequest,
    ExpansionResponse,
};
use tonic::{Request, Response, Status};

/// Expands one request; problems go in the response's `error`.
pub type Expander = dyn Fn(&ExpansionRequest) -> ExpansionResponse + Send + Sync;

pub struct ExpansionApi {
    expand: Arc<Expander>,
}

impl ExpansionApi {
    /// The service, answering with `expand` (the job server passes its
    /// executor's [`crate::Executor::expand`]; a standalone expansion
    /// service passes the native IO's directly).
    pub fn new(expand: Arc<Expander>) -> Self {
        Self { expand }
    }
}

#[tonic::async_trait]
impl ExpansionService for ExpansionApi {
    async fn expand(
        &self,
        request: Request<ExpansionRequest>,
    ) -> Result<Response<ExpansionResponse>, Status> {
        let request = request.into_inner();
        let response = (self.expand)(&request);
        if !response.error.is_empty() {
            tracing::info!(namespace = %request.namespace, "expansion refused: {}", response.error);
        }
        Ok(Response::new(response))
    }

    async fn discover_schema_transform(
        &self,
        _request: Request<DiscoverSchemaTransformRequest>,
    ) -> Result<Response<DiscoverSchemaTransformResponse>, Status> {
        // No schema-transform providers: an empty catalogue, not an error.
        Ok(Response::new(DiscoverSchemaTransformResponse::default()))
    }
}
