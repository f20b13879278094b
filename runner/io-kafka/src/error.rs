use ferrobeam_coders::Value;

/// A Kafka transform's payload that we cannot run.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ConfigError {
    #[error("malformed payload: {0}")]
    Payload(String),
    #[error("{field} {why}")]
    Unsupported { field: String, why: String },
}

impl ConfigError {
    pub(crate) fn unsupported(field: &str, why: impl Into<String>) -> Self {
        Self::Unsupported {
            field: field.to_owned(),
            why: why.into(),
        }
    }

    pub(crate) fn wrong_type(field: &str, expected: &str, got: &Value) -> Self {
        Self::unsupported(field, format!("must be {expected}, got {}", got.kind()))
    }
}

/// A failure of the Kafka client at run time.
#[derive(Debug, thiserror::Error)]
pub enum KafkaIoError {
    #[error("Kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Broker(String),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("checkpointed Kafka position: {0}")]
    Checkpoint(String),
    #[error("backfill: {0}")]
    Backfill(String),
    #[error("Kafka transaction log: {0}")]
    Log(String),
    #[error("element for the Kafka sink: {0}")]
    Element(String),
}
