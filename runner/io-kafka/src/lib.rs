//! Kafka IO run natively: Beam's Kafka cross-language transforms
//! (`ReadFromKafka`, `WriteToKafka`) without Java.
//!
//! * [`config`]: the transforms' payloads, checked.
//! * [`record`]: records as Beam values (KV or metadata rows) and back.
//! * [`source`]: the reader, per-partition positions and watermarks.
//! * [`sink`]: the producer.
//! * [`expansion`]: the expansion service's answer for these transforms.

pub mod config;
pub mod error;
pub mod expansion;
pub mod record;
pub mod sink;
pub mod source;

pub use config::{KafkaTransform, ReadConfig, TimestampPolicy, WriteConfig};
pub use error::{ConfigError, KafkaIoError};
pub use record::{metadata_schema, OutgoingRecord, Record};
pub use sink::KafkaSink;
pub use source::{KafkaSource, PartitionPosition, SourcePosition};
