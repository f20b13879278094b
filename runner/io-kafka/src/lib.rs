//! Kafka IO run natively: Beam's Kafka cross-language transforms
//! (`ReadFromKafka`, `WriteToKafka`) without Java.
//!
//! * [`config`]: the transforms' payloads, checked.
//! * [`record`]: records as Beam values (KV or metadata rows) and back.
//! * [`source`]: the reader, per-partition positions and watermarks.
//! * [`backfill`]: history from files before the Kafka head (hybrid source).
//! * [`sink`]: the producer, idempotent or transactional.
//! * [`wal`]: the log a transaction is sent again from after a crash.
//! * [`expansion`]: the expansion service's answer for these transforms.

pub mod backfill;
pub mod config;
pub mod error;
pub mod expansion;
pub mod record;
pub mod sink;
pub mod source;
pub mod wal;

pub use backfill::BackfillPosition;
pub use config::{
    BackfillConfig, BackfillFormat, KafkaTransform, ReadConfig, TimestampPolicy, WriteConfig,
};
pub use error::{ConfigError, KafkaIoError};
pub use record::{metadata_schema, OutgoingRecord, Record};
pub use sink::{marker_group, KafkaSink};
pub use source::{KafkaSource, PartitionPosition, SourcePosition};
pub use wal::{replay as replay_log, WriteAheadLog};
