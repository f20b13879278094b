//! Why a pipeline cannot be translated: always names the transform and URN.

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("transform '{name}' ({urn}) cannot run on ferrobeam: {reason}")]
    Unsupported {
        name: String,
        urn: String,
        reason: String,
    },
    /// `transform` is the first transform needing the environment, as
    /// `'unique name' (urn)`.
    #[error("transform {transform} needs environment '{id}' ({urn}), which cannot be provided: {reason}")]
    Environment {
        transform: String,
        id: String,
        urn: String,
        reason: String,
    },
    #[error("the pipeline requires '{0}', which ferrobeam does not implement yet")]
    Requirement(String),
    #[error("malformed pipeline: {0}")]
    Malformed(String),
}

impl GraphError {
    pub(crate) fn unsupported(
        transform: &ferrobeam_proto::pipeline::v1::PTransform,
        reason: impl Into<String>,
    ) -> Self {
        GraphError::Unsupported {
            name: transform.unique_name.clone(),
            urn: transform
                .spec
                .as_ref()
                .map(|s| s.urn.clone())
                .unwrap_or_default(),
            reason: reason.into(),
        }
    }
}
