//! `ArtifactRetrievalService`: SDK workers fetch staged artifacts.
//!
//! After staging, every artifact is a local file under the artifact root,
//! so resolving is the identity and fetching streams a file, but only a
//! regular file under the (canonical) artifact root, symlinks resolved
//! first: a worker cannot read anything else through this service.

use std::sync::Arc;

use bytes::BytesMut;
use ferrobeam_proto::job_api::artifact_retrieval_service_server::ArtifactRetrievalService;
use ferrobeam_proto::job_api::{
    GetArtifactRequest, GetArtifactResponse, ResolveArtifactsRequest, ResolveArtifactsResponse,
};
use ferrobeam_proto::pipeline::v1::ArtifactFilePayload;
use prost::Message;
use tokio::io::AsyncReadExt;
use tonic::{Request, Response, Status};

use crate::fsutil::{resolve_file_within, PathCheckError};
use crate::server::Shared;
use crate::status::clip;
use crate::streams::ResponseStream;
use crate::urns::ARTIFACT_TYPE_FILE;

/// The `ArtifactRetrievalService` implementation; get one from
/// [`crate::JobServer::artifact_retrieval_service`].
pub struct ArtifactRetrieval {
    shared: Arc<Shared>,
}

impl ArtifactRetrieval {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        ArtifactRetrieval { shared }
    }
}

#[tonic::async_trait]
impl ArtifactRetrievalService for ArtifactRetrieval {
    async fn resolve_artifacts(
        &self,
        request: Request<ResolveArtifactsRequest>,
    ) -> Result<Response<ResolveArtifactsResponse>, Status> {
        // Staging already turned everything into files we can serve.
        Ok(Response::new(ResolveArtifactsResponse {
            replacements: request.into_inner().artifacts,
        }))
    }

    type GetArtifactStream = ResponseStream<GetArtifactResponse>;

    async fn get_artifact(
        &self,
        request: Request<GetArtifactRequest>,
    ) -> Result<Response<Self::GetArtifactStream>, Status> {
        let artifact = request
            .into_inner()
            .artifact
            .ok_or_else(|| Status::invalid_argument("GetArtifactRequest names no artifact"))?;
        if artifact.type_urn != ARTIFACT_TYPE_FILE {
            return Err(Status::invalid_argument(format!(
                "only staged files ({ARTIFACT_TYPE_FILE}) can be retrieved here, not {}",
                artifact.type_urn
            )));
        }
        let payload = ArtifactFilePayload::decode(artifact.type_payload.as_ref()).map_err(|e| {
            Status::invalid_argument(format!("malformed file artifact payload: {e}"))
        })?;
        let path = resolve_file_within(&self.shared.artifact_root, &payload.path)
            .await
            .map_err(|e| {
                let text = clip(&e.to_string());
                match e {
                    PathCheckError::NotFound(_) => Status::not_found(text),
                    PathCheckError::OutsideRoot(_) | PathCheckError::NotAFile(_) => {
                        tracing::warn!("refused artifact request: {text}");
                        Status::permission_denied(text)
                    }
                    PathCheckError::Io { .. } => Status::internal(text),
                }
            })?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::internal(format!("cannot open {}: {e}", path.display())))?;
        let chunk = self.shared.config.artifact_chunk_bytes.max(1);
        let stream = futures::stream::unfold(Some(file), move |file| async move {
            let mut file = file?;
            let mut buf = BytesMut::with_capacity(chunk);
            // Fill the chunk: fewer, fuller messages.
            while buf.len() < chunk {
                match file.read_buf(&mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        return Some((
                            Err(Status::internal(format!("reading artifact failed: {e}"))),
                            None,
                        ))
                    }
                }
            }
            if buf.is_empty() {
                return None;
            }
            Some((Ok(GetArtifactResponse { data: buf.freeze() }), Some(file)))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
