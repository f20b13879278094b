//! `ProvisionService`: what a booting worker needs to know (options, endpoints).

use std::path::PathBuf;
use std::sync::Arc;

use ferrobeam_proto::fn_api::provision_service_server::ProvisionService;
use ferrobeam_proto::fn_api::{GetProvisionInfoRequest, GetProvisionInfoResponse};
use ferrobeam_proto::pipeline::v1::{
    ArtifactFilePayload, ArtifactInformation, ArtifactStagingToRolePayload,
};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::registry::Registry;

const FILE_ARTIFACT: &str = "beam:artifact:type:file:v1";
const STAGING_TO_ROLE: &str = "beam:artifact:role:staging_to:v1";

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

/// Pipeline options as the Python harness reads them from `PIPELINE_OPTIONS`.
pub fn options_json(options: &prost_types::Struct) -> String {
    let map: serde_json::Map<String, serde_json::Value> = options
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), to_json(v)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn to_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into)
        }
        Some(Kind::StringValue(s)) => s.clone().into(),
        Some(Kind::BoolValue(b)) => (*b).into(),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
        Some(Kind::ListValue(l)) => l.values.iter().map(to_json).collect::<Vec<_>>().into(),
    }
}

/// (local path, staged name) for every staged file artifact.
pub fn staged_files(artifacts: &[ArtifactInformation]) -> Vec<(PathBuf, String)> {
    artifacts
        .iter()
        .filter_map(|a| {
            let path = ArtifactFilePayload::decode(a.type_payload.as_ref())
                .ok()?
                .path;
            Some((PathBuf::from(path), staged_name(a)?))
        })
        .collect()
}

/// The name a file artifact is to have in the worker's `staged/`
/// directory (`None` for anything but a staged file).
pub fn staged_name(artifact: &ArtifactInformation) -> Option<String> {
    if artifact.type_urn != FILE_ARTIFACT {
        return None;
    }
    if artifact.role_urn == STAGING_TO_ROLE {
        return ArtifactStagingToRolePayload::decode(artifact.role_payload.as_ref())
            .ok()
            .map(|p| p.staged_name);
    }
    let path = ArtifactFilePayload::decode(artifact.type_payload.as_ref())
        .ok()?
        .path;
    Some(PathBuf::from(path).file_name()?.to_string_lossy().into_owned())
}
