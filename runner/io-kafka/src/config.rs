//! The payloads of Beam's Kafka cross-language transforms, read into what
//! our source and sink need.
//!
//! Beam's Python wrappers (`apache_beam.io.kafka`) send an
//! `ExternalConfigurationPayload`: a schema plus one row of that schema.
//! Fields are looked up by name, so payloads from older or newer Python
//! versions (fields added or missing) read the same.  A field we cannot
//! honour is refused with the reason, never ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrobeam_coders::{RowSchema, Value};
use ferrobeam_proto::pipeline::v1::ExternalConfigurationPayload;
use prost::Message;

use crate::error::ConfigError;

/// Reads Kafka records as `KV<bytes, bytes>`.
pub use ferrobeam_graph::urns::KAFKA_READ_WITHOUT_METADATA as READ_WITHOUT_METADATA_URN;
/// Reads Kafka records as rows with topic, partition, offset, timestamp and headers.
pub use ferrobeam_graph::urns::KAFKA_READ_WITH_METADATA as READ_WITH_METADATA_URN;
/// Writes `KV<bytes, bytes>` to a topic.
pub use ferrobeam_graph::urns::KAFKA_WRITE as WRITE_URN;
/// Writes rows of key, value and optional headers, topic, partition, timestamp.
pub use ferrobeam_graph::urns::KAFKA_WRITE_WITH_HEADERS as WRITE_WITH_HEADERS_URN;

/// Every Kafka URN we run.
pub const ALL_URNS: &[&str] = &[
    READ_WITHOUT_METADATA_URN,
    READ_WITH_METADATA_URN,
    WRITE_URN,
    WRITE_WITH_HEADERS_URN,
];

const BYTE_ARRAY_DESERIALIZER: &str = "org.apache.kafka.common.serialization.ByteArrayDeserializer";
const BYTE_ARRAY_SERIALIZER: &str = "org.apache.kafka.common.serialization.ByteArraySerializer";

/// How a record's event time is chosen (Beam's `timestamp_policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampPolicy {
    /// The wall clock when the record is read; the watermark is the wall clock.
    ProcessingTime,
    /// The producer's timestamp.
    CreateTime,
    /// The broker's append time.
    LogAppendTime,
}

impl TimestampPolicy {
    fn parse(name: &str) -> Result<Self, ConfigError> {
        match name {
            "" | "ProcessingTime" => Ok(Self::ProcessingTime),
            "CreateTime" => Ok(Self::CreateTime),
            "LogAppendTime" => Ok(Self::LogAppendTime),
            other => Err(ConfigError::unsupported(
                "timestamp_policy",
                format!("{other:?} is not one of ProcessingTime, CreateTime, LogAppendTime"),
            )),
        }
    }
}

/// A Kafka read, as the payload asked for it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadConfig {
    /// Passed to librdkafka as is (its property names are Kafka's).
    pub consumer_config: BTreeMap<String, String>,
    pub topics: Vec<String>,
    /// Start each partition at the first offset whose timestamp is at or
    /// after this (millis), instead of the committed / reset position.
    pub start_read_time: Option<i64>,
    /// Stop after this many records (the read is then bounded).
    pub max_num_records: Option<u64>,
    /// Stop after reading for this long (the read is then bounded).
    pub max_read_time: Option<Duration>,
    /// Commit the read offsets to the consumer group once a checkpoint
    /// holding them is complete.
    pub commit_offsets: bool,
    pub timestamp_policy: TimestampPolicy,
    /// How long one poll of the client may wait.
    pub poll_timeout: Duration,
    /// Look for new partitions this often (`None`: only at start).
    pub partition_discovery: Option<Duration>,
    /// Rows with metadata instead of `KV<bytes, bytes>`.
    pub with_metadata: bool,
    /// A caught-up partition that received nothing for this long stops
    /// holding the watermark back: its watermark follows the wall clock,
    /// this far behind (ferrobeam's `idle_partition_timeout_ms`).
    pub idle_timeout: Duration,
    /// ferrobeam's hybrid source: files first, then Kafka.
    pub backfill: Option<BackfillConfig>,
    /// At most this many records a second from this read (ferrobeam's
    /// `max_records_per_second`).
    pub max_records_per_second: Option<u64>,
    /// How long the brokers may stay unreachable (the client retrying with
    /// backoff) before the job fails (ferrobeam's `broker_timeout_ms`).
    pub broker_timeout: Duration,
    /// Watermark alignment (ferrobeam's `max_drift_ms`): a partition whose
    /// watermark is ahead of the alignment minimum (the least watermark of
    /// every aligned read in the job) by more than this is paused until the
    /// minimum catches up.  `None`: no alignment.
    pub max_drift: Option<Duration>,
}

/// History read from files before the Kafka head (the hybrid source).
#[derive(Clone, Debug, PartialEq)]
pub struct BackfillConfig {
    /// A glob pattern of local files.
    pub files: String,
    pub format: BackfillFormat,
    /// JSON lines: the field holding each record's timestamp.
    pub timestamp_field: String,
    /// JSON lines: the fields holding the key and the value (default: no
    /// key, the whole line as the value).
    pub key_field: Option<String>,
    pub value_field: Option<String>,
    /// Records before this time (millis) come from the files, the rest
    /// from Kafka.  `None`: each partition continues after the last offset
    /// the files hold of it.
    pub cutover_time: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackfillFormat {
    Jsonl,
    Text,
}

/// Default [`ReadConfig::broker_timeout`].
pub const DEFAULT_BROKER_TIMEOUT: Duration = Duration::from_secs(60);

/// Default [`ReadConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// A Kafka write, as the payload asked for it.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteConfig {
    pub producer_config: BTreeMap<String, String>,
    pub topic: String,
    /// Input rows carry headers (and optional topic, partition, timestamp).
    pub with_headers: bool,
}

/// The payload's row, by field name.
struct Fields {
    names: Vec<String>,
    values: Vec<Value>,
}

impl Fields {
    fn decode(payload: &[u8]) -> Result<Self, ConfigError> {
        let p = ExternalConfigurationPayload::decode(payload).map_err(|e| {
            ConfigError::Payload(format!("not an ExternalConfigurationPayload: {e}"))
        })?;
        let schema = p
            .schema
            .as_ref()
            .ok_or_else(|| ConfigError::Payload("the payload has no schema".into()))?;
        let schema = RowSchema::from_proto(schema).map_err(ConfigError::Payload)?;
        let (values, _) = schema
            .decode(&p.payload, 0)
            .map_err(|e| ConfigError::Payload(format!("the payload row does not decode: {e}")))?;
        Ok(Self {
            names: schema.fields.iter().map(|f| f.name.clone()).collect(),
            values,
        })
    }

    fn get(&self, name: &str) -> Option<&Value> {
        let i = self.names.iter().position(|n| n == name)?;
        match &self.values[i] {
            Value::Null => None,
            v => Some(v),
        }
    }

    fn string(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(ConfigError::wrong_type(name, "a string", v)),
        }
    }

    fn required_string(&self, name: &str) -> Result<String, ConfigError> {
        self.string(name)?
            .ok_or_else(|| ConfigError::unsupported(name, "is required"))
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Int(n)) => Ok(Some(*n)),
            Some(v) => Err(ConfigError::wrong_type(name, "an integer", v)),
        }
    }

    fn non_negative(&self, name: &str) -> Result<Option<u64>, ConfigError> {
        match self.int(name)? {
            Some(n) if n < 0 => Err(ConfigError::unsupported(
                name,
                format!("must be >= 0, got {n}"),
            )),
            n => Ok(n.map(|n| n as u64)),
        }
    }

    fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(ConfigError::wrong_type(name, "a boolean", v)),
        }
    }

    fn strings(&self, name: &str) -> Result<Vec<String>, ConfigError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Iterable(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    v => Err(ConfigError::wrong_type(name, "a list of strings", v)),
                })
                .collect(),
            Some(v) => Err(ConfigError::wrong_type(name, "a list of strings", v)),
        }
    }

    fn string_map(&self, name: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        match self.get(name) {
            None => Ok(BTreeMap::new()),
            Some(Value::Map(entries)) => entries
                .iter()
                .map(|(k, v)| match (k, v) {
                    (Value::String(k), Value::String(v)) => Ok((k.clone(), v.clone())),
                    _ => Err(ConfigError::wrong_type(
                        name,
                        "a map of strings to strings",
                        v,
                    )),
                })
                .collect(),
            Some(v) => Err(ConfigError::wrong_type(
                name,
                "a map of strings to strings",
                v,
            )),
        }
    }
}

/// Only raw bytes cross the boundary: Java (de)serializers cannot run here.
fn require_byte_array(fields: &Fields, name: &str, expected: &str) -> Result<(), ConfigError> {
    match fields.string(name)? {
        None => Ok(()),
        Some(s) if s == expected => Ok(()),
        Some(s) => Err(ConfigError::unsupported(
            name,
            format!(
                "{s:?} is a Java class and ferrobeam runs no Java: use the default {expected} \
                 and convert the bytes in a Map"
            ),
        )),
    }
}

impl ReadConfig {
    /// Reads the payload of a `kafka_read_with(out)_metadata` transform.
    pub fn from_payload(payload: &[u8], with_metadata: bool) -> Result<Self, ConfigError> {
        let f = Fields::decode(payload)?;
        require_byte_array(&f, "key_deserializer", BYTE_ARRAY_DESERIALIZER)?;
        require_byte_array(&f, "value_deserializer", BYTE_ARRAY_DESERIALIZER)?;
        if let Some(class) = f.string("consumer_factory_fn_class")? {
            return Err(ConfigError::unsupported(
                "consumer_factory_fn_class",
                format!(
                    "{class:?} is a Java class and ferrobeam runs no Java: put the consumer's \
                     settings in consumer_config (librdkafka property names)"
                ),
            ));
        }
        let topics = f.strings("topics")?;
        if topics.is_empty() {
            return Err(ConfigError::unsupported(
                "topics",
                "must name at least one topic",
            ));
        }
        let consumer_config = f.string_map("consumer_config")?;
        if !consumer_config.contains_key("bootstrap.servers") {
            return Err(ConfigError::unsupported(
                "consumer_config",
                "must set bootstrap.servers",
            ));
        }
        let commit_offsets = f.bool("commit_offset_in_finalize")?;
        if commit_offsets && !consumer_config.contains_key("group.id") {
            return Err(ConfigError::unsupported(
                "commit_offset_in_finalize",
                "needs a group.id in consumer_config to commit to",
            ));
        }
        let seconds = |name: &str| -> Result<Option<Duration>, ConfigError> {
            Ok(f.non_negative(name)?.map(Duration::from_secs))
        };
        let poll_timeout = seconds("consumer_polling_timeout")?
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(2));
        let idle_timeout = f
            .non_negative("idle_partition_timeout_ms")?
            .map_or(DEFAULT_IDLE_TIMEOUT, Duration::from_millis);
        let timestamp_policy =
            TimestampPolicy::parse(&f.string("timestamp_policy")?.unwrap_or_default())?;
        let max_drift = f.non_negative("max_drift_ms")?.map(Duration::from_millis);
        if max_drift.is_some() && timestamp_policy == TimestampPolicy::ProcessingTime {
            // Every partition's watermark is the wall clock: none is ever
            // ahead, and holding records back would not make their
            // (read-time) timestamps any earlier.
            return Err(ConfigError::unsupported(
                "max_drift_ms",
                "aligns event-time watermarks: it needs timestamp_policy CreateTime or \
                 LogAppendTime, not ProcessingTime",
            ));
        }
        // Redistribute: our engine already hands the source's output to
        // the SDK workers through the runner, spread over all of them, so
        // the redistribution Beam asks for is what happens anyway
        // (`redistribute_num_keys` and `allow_duplicates` are hints for it).
        let _ = (f.bool("redistribute")?, f.bool("allow_duplicates")?);
        let start_read_time = f.int("start_read_time")?;
        let timestamp_policy =
            TimestampPolicy::parse(&f.string("timestamp_policy")?.unwrap_or_default())?;
        let backfill = BackfillConfig::from_fields(&f, start_read_time, timestamp_policy)?;
        let max_records_per_second = match f.non_negative("max_records_per_second")? {
            Some(0) => {
                return Err(ConfigError::unsupported(
                    "max_records_per_second",
                    "must be at least 1 (leave it unset for no limit)",
                ))
            }
            rate => rate,
        };
        let broker_timeout = match f.non_negative("broker_timeout_ms")? {
            Some(0) => {
                return Err(ConfigError::unsupported(
                    "broker_timeout_ms",
                    "must be at least 1 (the default is 60000)",
                ))
            }
            Some(ms) => Duration::from_millis(ms),
            None => DEFAULT_BROKER_TIMEOUT,
        };
        Ok(Self {
            consumer_config,
            topics,
            start_read_time,
            max_num_records: f.non_negative("max_num_records")?,
            max_read_time: seconds("max_read_time")?,
            commit_offsets,
            timestamp_policy,
            poll_timeout,
            partition_discovery: seconds("dynamic_read_poll_interval_seconds")?
                .filter(|d| !d.is_zero()),
            with_metadata,
            idle_timeout,
            backfill,
            max_records_per_second,
            broker_timeout,
            max_drift,
        })
    }

    /// Whether the read ends by itself (a record or time limit).
    pub fn is_bounded(&self) -> bool {
        self.max_num_records.is_some() || self.max_read_time.is_some()
    }
}

impl BackfillConfig {
    /// ferrobeam's `backfill_*` fields, if `backfill_files` is set.
    fn from_fields(
        f: &Fields,
        start_read_time: Option<i64>,
        policy: TimestampPolicy,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(files) = f.string("backfill_files")?.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        if files.contains("://") {
            return Err(ConfigError::unsupported(
                "backfill_files",
                format!("{files:?}: only local files can be read (a path or glob pattern)"),
            ));
        }
        if start_read_time.is_some() {
            return Err(ConfigError::unsupported(
                "start_read_time",
                "cannot be combined with a backfill: the cut-over decides where Kafka starts \
                 (backfill_cutover_time_ms)",
            ));
        }
        if policy == TimestampPolicy::ProcessingTime {
            return Err(ConfigError::unsupported(
                "timestamp_policy",
                "ProcessingTime cannot be combined with a backfill (its records carry event \
                 times): use CreateTime or LogAppendTime",
            ));
        }
        let format = match f.string("backfill_format")?.as_deref() {
            None | Some("jsonl" | "json") => BackfillFormat::Jsonl,
            Some("text") => BackfillFormat::Text,
            Some(other) => {
                return Err(ConfigError::unsupported(
                    "backfill_format",
                    format!("is {other:?}: use \"jsonl\" or \"text\""),
                ))
            }
        };
        Ok(Some(Self {
            files,
            format,
            timestamp_field: f
                .string("backfill_timestamp_field")?
                .unwrap_or_else(|| "timestamp".into()),
            key_field: f.string("backfill_key_field")?,
            value_field: f.string("backfill_value_field")?,
            cutover_time: f.int("backfill_cutover_time_ms")?,
        }))
    }
}

impl WriteConfig {
    /// Reads the payload of a `kafka_write` / `kafka_write_with_headers` transform.
    pub fn from_payload(payload: &[u8], with_headers: bool) -> Result<Self, ConfigError> {
        let f = Fields::decode(payload)?;
        require_byte_array(&f, "key_serializer", BYTE_ARRAY_SERIALIZER)?;
        require_byte_array(&f, "value_serializer", BYTE_ARRAY_SERIALIZER)?;
        let producer_config = f.string_map("producer_config")?;
        if !producer_config.contains_key("bootstrap.servers") {
            return Err(ConfigError::unsupported(
                "producer_config",
                "must set bootstrap.servers",
            ));
        }
        Ok(Self {
            producer_config,
            topic: f.required_string("topic")?,
            with_headers,
        })
    }
}

impl WriteConfig {
    /// The producer's `transactional.id`: set, the sink writes exactly
    /// once, in transactions committed with checkpoints.
    pub fn transactional_id(&self) -> Option<&str> {
        self.producer_config
            .get("transactional.id")
            .map(String::as_str)
            .filter(|id| !id.is_empty())
    }
}

/// What a transform with one of [`ALL_URNS`] is.
#[derive(Clone, Debug, PartialEq)]
pub enum KafkaTransform {
    Read(Box<ReadConfig>),
    Write(WriteConfig),
}

impl KafkaTransform {
    /// `None` when `urn` is not a Kafka URN.
    pub fn parse(urn: &str, payload: &[u8]) -> Option<Result<Self, ConfigError>> {
        Some(match urn {
            READ_WITHOUT_METADATA_URN => {
                ReadConfig::from_payload(payload, false).map(|c| Self::Read(Box::new(c)))
            }
            READ_WITH_METADATA_URN => {
                ReadConfig::from_payload(payload, true).map(|c| Self::Read(Box::new(c)))
            }
            WRITE_URN => WriteConfig::from_payload(payload, false).map(Self::Write),
            WRITE_WITH_HEADERS_URN => WriteConfig::from_payload(payload, true).map(Self::Write),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrobeam_proto::pipeline::v1 as pb;
    use pb::field_type::TypeInfo;

    fn atomic(t: pb::AtomicType, nullable: bool) -> pb::FieldType {
        pb::FieldType {
            nullable,
            type_info: Some(TypeInfo::AtomicType(t as i32)),
        }
    }

    fn string_map() -> pb::FieldType {
        pb::FieldType {
            nullable: false,
            type_info: Some(TypeInfo::MapType(Box::new(pb::MapType {
                key_type: Some(Box::new(atomic(pb::AtomicType::String, false))),
                value_type: Some(Box::new(atomic(pb::AtomicType::String, false))),
            }))),
        }
    }

    fn string_list() -> pb::FieldType {
        pb::FieldType {
            nullable: false,
            type_info: Some(TypeInfo::ArrayType(Box::new(pb::ArrayType {
                element_type: Some(Box::new(atomic(pb::AtomicType::String, false))),
            }))),
        }
    }

    /// A payload as Beam's Python wrappers build it: a schema and one row.
    fn payload(fields: Vec<(&str, pb::FieldType, Value)>) -> Vec<u8> {
        let schema = pb::Schema {
            id: "test".into(),
            fields: fields
                .iter()
                .map(|(name, ty, _)| pb::Field {
                    name: (*name).into(),
                    r#type: Some(ty.clone()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let values: Vec<Value> = fields.into_iter().map(|(_, _, v)| v).collect();
        let mut row = Vec::new();
        RowSchema::from_proto(&schema)
            .unwrap()
            .encode(&values, &mut row)
            .unwrap();
        ExternalConfigurationPayload {
            schema: Some(schema),
            payload: row.into(),
        }
        .encode_to_vec()
    }

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    fn read_payload(extra: Vec<(&str, pb::FieldType, Value)>) -> Vec<u8> {
        let mut fields = vec![
            (
                "consumer_config",
                string_map(),
                Value::Map(vec![(s("bootstrap.servers"), s("localhost:9092"))]),
            ),
            (
                "topics",
                string_list(),
                Value::Iterable(vec![s("a"), s("b")]),
            ),
            (
                "timestamp_policy",
                atomic(pb::AtomicType::String, false),
                s("CreateTime"),
            ),
            (
                "max_num_records",
                atomic(pb::AtomicType::Int64, true),
                Value::Int(10),
            ),
            (
                "start_read_time",
                atomic(pb::AtomicType::Int64, true),
                Value::Null,
            ),
        ];
        for (name, ty, v) in extra {
            fields.retain(|(n, _, _)| *n != name);
            fields.push((name, ty, v));
        }
        payload(fields)
    }

    #[test]
    fn reads_beams_read_payload_by_field_name() {
        let c = ReadConfig::from_payload(&read_payload(vec![]), true).unwrap();
        assert_eq!(c.topics, ["a", "b"]);
        assert_eq!(c.consumer_config["bootstrap.servers"], "localhost:9092");
        assert_eq!(c.timestamp_policy, TimestampPolicy::CreateTime);
        assert_eq!(c.max_num_records, Some(10));
        assert_eq!(c.start_read_time, None);
        assert!(c.with_metadata && c.is_bounded());
        assert_eq!(c.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(c.max_drift, None);
    }

    #[test]
    fn reads_and_checks_max_drift() {
        let drift = |v: Value| {
            ReadConfig::from_payload(
                &read_payload(vec![(
                    "max_drift_ms",
                    atomic(pb::AtomicType::Int64, true),
                    v,
                )]),
                false,
            )
        };
        assert_eq!(
            drift(Value::Int(5_000)).unwrap().max_drift,
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            drift(Value::Int(0)).unwrap().max_drift,
            Some(Duration::ZERO)
        );
        assert_eq!(drift(Value::Null).unwrap().max_drift, None);
        let e = drift(Value::Int(-1)).unwrap_err().to_string();
        assert!(e.contains("max_drift_ms") && e.contains(">= 0"), "{e}");
        let text = read_payload(vec![(
            "max_drift_ms",
            atomic(pb::AtomicType::String, false),
            s("10"),
        )]);
        let e = ReadConfig::from_payload(&text, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_drift_ms") && e.contains("integer"), "{e}");

        let processing_time = read_payload(vec![
            (
                "max_drift_ms",
                atomic(pb::AtomicType::Int64, true),
                Value::Int(1_000),
            ),
            (
                "timestamp_policy",
                atomic(pb::AtomicType::String, false),
                s("ProcessingTime"),
            ),
        ]);
        let e = ReadConfig::from_payload(&processing_time, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_drift_ms") && e.contains("ProcessingTime"),
            "{e}"
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let java = read_payload(vec![(
            "key_deserializer",
            atomic(pb::AtomicType::String, false),
            s("org.apache.kafka.common.serialization.LongDeserializer"),
        )]);
        let e = ReadConfig::from_payload(&java, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key_deserializer") && e.contains("runs no Java"),
            "{e}"
        );

        let commit = read_payload(vec![(
            "commit_offset_in_finalize",
            atomic(pb::AtomicType::Boolean, false),
            Value::Bool(true),
        )]);
        let e = ReadConfig::from_payload(&commit, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("group.id"), "{e}");

        let policy = read_payload(vec![(
            "timestamp_policy",
            atomic(pb::AtomicType::String, false),
            s("Whenever"),
        )]);
        assert!(ReadConfig::from_payload(&policy, false).is_err());

        let no_servers = payload(vec![(
            "topics",
            string_list(),
            Value::Iterable(vec![s("a")]),
        )]);
        let e = ReadConfig::from_payload(&no_servers, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bootstrap.servers"), "{e}");

        assert!(matches!(
            ReadConfig::from_payload(b"\xff\xff", false),
            Err(ConfigError::Payload(_))
        ));

        for field in ["max_records_per_second", "broker_timeout_ms"] {
            let zero = read_payload(vec![(
                field,
                atomic(pb::AtomicType::Int64, true),
                Value::Int(0),
            )]);
            let e = ReadConfig::from_payload(&zero, false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(field) && e.contains("at least 1"), "{e}");
        }
        let processing = read_payload(vec![
            (
                "timestamp_policy",
                atomic(pb::AtomicType::String, false),
                s("ProcessingTime"),
            ),
            (
                "backfill_files",
                atomic(pb::AtomicType::String, true),
                s("/h/*.jsonl"),
            ),
        ]);
        let e = ReadConfig::from_payload(&processing, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ProcessingTime cannot be combined with a backfill"),
            "{e}"
        );
        let remote = read_payload(vec![(
            "backfill_files",
            atomic(pb::AtomicType::String, true),
            s("gs://bucket/*.jsonl"),
        )]);
        let e = ReadConfig::from_payload(&remote, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("only local files"), "{e}");
    }

    #[test]
    fn reads_ferrobeams_own_read_settings() {
        let p = read_payload(vec![
            (
                "max_records_per_second",
                atomic(pb::AtomicType::Int64, true),
                Value::Int(500),
            ),
            (
                "broker_timeout_ms",
                atomic(pb::AtomicType::Int64, true),
                Value::Int(1500),
            ),
            (
                "backfill_files",
                atomic(pb::AtomicType::String, true),
                s("/h/*.txt"),
            ),
            (
                "backfill_format",
                atomic(pb::AtomicType::String, true),
                s("text"),
            ),
            (
                "backfill_cutover_time_ms",
                atomic(pb::AtomicType::Int64, true),
                Value::Int(77),
            ),
        ]);
        let c = ReadConfig::from_payload(&p, false).unwrap();
        assert_eq!(c.max_records_per_second, Some(500));
        assert_eq!(c.broker_timeout, Duration::from_millis(1500));
        let b = c.backfill.unwrap();
        assert_eq!(
            (b.format, b.cutover_time, b.timestamp_field.as_str()),
            (BackfillFormat::Text, Some(77), "timestamp")
        );
        let plain = ReadConfig::from_payload(&read_payload(vec![]), false).unwrap();
        assert_eq!(
            (plain.max_records_per_second, plain.broker_timeout),
            (None, DEFAULT_BROKER_TIMEOUT)
        );
        assert!(plain.backfill.is_none());
    }

    #[test]
    fn reads_beams_write_payload() {
        let p = payload(vec![
            (
                "producer_config",
                string_map(),
                Value::Map(vec![(s("bootstrap.servers"), s("h:1"))]),
            ),
            ("topic", atomic(pb::AtomicType::String, false), s("out")),
        ]);
        let c = WriteConfig::from_payload(&p, false).unwrap();
        assert_eq!((c.topic.as_str(), c.with_headers), ("out", false));
        assert!(matches!(
            KafkaTransform::parse(WRITE_WITH_HEADERS_URN, &p),
            Some(Ok(KafkaTransform::Write(WriteConfig {
                with_headers: true,
                ..
            })))
        ));
        assert!(KafkaTransform::parse("beam:transform:other:v1", &p).is_none());
    }
}
