//! `ProvisionService`: what a booting worker needs to know (options, endpoints).

use std::sync::Arc;

use ferrobeam_proto::fn_api::provision_service_server::ProvisionService;
use ferrobeam_proto::fn_api::{GetProvisionInfoRequest, GetProvisionInfoResponse};
use tonic::{Request, Response, Status};

use crate::registry::Registry;

pub struct ProvisionServer {
    pub(crate) registry: Arc<Registry>,
}

#[tonic::async_trait]
impl ProvisionService for ProvisionServer {
    async fn get_provision_info(
        &self,
        request: Request<GetProvisionInfoRequest>,
    ) -> Result<Response<GetProvisionInfoResponse>, Status> {
        let worker_id = crate::worker_id(&request)?;
        let info = self
            .registry
            .provision_info(&worker_id)
            .ok_or_else(|| Status::not_found(format!("unknown worker id {worker_id:?}")))?;
        Ok(Response::new(GetProvisionInfoResponse { info: Some(info) }))
    }
}
