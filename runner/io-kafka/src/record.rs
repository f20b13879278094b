//! Kafka records as Beam values: what the read produces and the write takes.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use ferrobeam_coders::{varint::write_len_prefixed, RowSchema, Value};
use ferrobeam_proto::pipeline::v1 as pb;

use crate::error::KafkaIoError;

/// A record read from a partition, owned (it crosses from the reader thread).
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Index of the partition in the source's list.
    pub partition_index: usize,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The record's own timestamp and its kind (Kafka's type id: -1 none,
    /// 0 create time, 1 log append time).
    pub kafka_timestamp: Option<i64>,
    pub timestamp_type: i32,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Kafka's name for a timestamp type id.
fn timestamp_type_name(id: i32) -> &'static str {
    match id {
        0 => "CreateTime",
        1 => "LogAppendTime",
        _ => "NoTimestampType",
    }
}

/// The id of [`metadata_schema`]: fixed, so the same pipeline expands the
/// same way every time.
const METADATA_SCHEMA_ID: &str = "6f1f0a4e-2c55-4b5e-9a51-6b6166657272";
const HEADER_SCHEMA_ID: &str = "6f1f0a4e-2c55-4b5e-9a51-686561646572";

fn field(name: &str, nullable: bool, info: pb::field_type::TypeInfo) -> pb::Field {
    pb::Field {
        name: name.into(),
        r#type: Some(pb::FieldType {
            nullable,
            type_info: Some(info),
        }),
        ..Default::default()
    }
}

fn atomic(t: pb::AtomicType) -> pb::field_type::TypeInfo {
    pb::field_type::TypeInfo::AtomicType(t as i32)
}

/// The row schema of `kafka_read_with_metadata`'s output: the fields of
/// Beam's Java `ByteArrayKafkaRecord`, in its order, so rows read the same
/// as with Beam's expansion service.
pub fn metadata_schema() -> pb::Schema {
    use pb::AtomicType::*;
    let header = pb::Schema {
        id: HEADER_SCHEMA_ID.into(),
        fields: vec![
            field("key", false, atomic(String)),
            field("value", true, atomic(Bytes)),
        ],
        ..Default::default()
    };
    let headers = pb::field_type::TypeInfo::ArrayType(Box::new(pb::ArrayType {
        element_type: Some(Box::new(pb::FieldType {
            nullable: false,
            type_info: Some(pb::field_type::TypeInfo::RowType(pb::RowType {
                schema: Some(header),
            })),
        })),
    }));
    pb::Schema {
        id: METADATA_SCHEMA_ID.into(),
        fields: vec![
            field("topic", false, atomic(String)),
            field("partition", false, atomic(Int32)),
            field("offset", false, atomic(Int64)),
            field("timestamp", false, atomic(Int64)),
            field("key", true, atomic(Bytes)),
            field("value", true, atomic(Bytes)),
            field("headers", true, headers),
            field("timestampTypeId", false, atomic(Int32)),
            field("timestampTypeName", false, atomic(String)),
        ],
        ..Default::default()
    }
}

fn metadata_row_schema() -> &'static RowSchema {
    static SCHEMA: OnceLock<RowSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| RowSchema::from_proto(&metadata_schema()).expect("valid schema"))
}

fn bytes_or_null(b: &Option<Bytes>) -> Value {
    b.clone().map_or(Value::Null, Value::Bytes)
}

impl Record {
    /// Appends the record as the read's output value (nested encoding):
    /// `KV<bytes, bytes>` (a missing key or value as empty bytes, as the
    /// coder cannot say null), or a metadata row.
    pub fn encode(&self, with_metadata: bool, out: &mut Vec<u8>) {
        if !with_metadata {
            write_len_prefixed(out, self.key.as_deref().unwrap_or_default());
            write_len_prefixed(out, self.value.as_deref().unwrap_or_default());
            return;
        }
        let headers = if self.headers.is_empty() {
            Value::Null
        } else {
            Value::Iterable(
                self.headers
                    .iter()
                    .map(|(k, v)| Value::Row(vec![Value::String(k.clone()), bytes_or_null(v)]))
                    .collect(),
            )
        };
        let row = [
            Value::String(self.topic.to_string()),
            Value::Int(self.partition.into()),
            Value::Int(self.offset),
            Value::Int(self.kafka_timestamp.unwrap_or(-1)),
            bytes_or_null(&self.key),
            bytes_or_null(&self.value),
            headers,
            Value::Int(self.timestamp_type.into()),
            Value::String(timestamp_type_name(self.timestamp_type).into()),
        ];
        metadata_row_schema()
            .encode(&row, out)
            .expect("a metadata row always matches its schema");
    }
}

/// A record to write.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutgoingRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Overrides the sink's topic.
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub timestamp: Option<i64>,
}

fn as_bytes(v: &Value, what: &str) -> Result<Option<Bytes>, KafkaIoError> {
    match v {
        Value::Null => Ok(None),
        Value::Bytes(b) => Ok(Some(b.clone())),
        Value::String(s) => Ok(Some(Bytes::from(s.clone().into_bytes()))),
        other => Err(KafkaIoError::Element(format!(
            "{what} must be bytes, got {}",
            other.kind()
        ))),
    }
}

impl OutgoingRecord {
    /// From a decoded `KV<bytes, bytes>`.
    pub fn from_kv(value: &Value) -> Result<Self, KafkaIoError> {
        match value {
            Value::Kv(k, v) => Ok(Self {
                key: as_bytes(k, "the key")?,
                value: as_bytes(v, "the value")?,
                ..Default::default()
            }),
            other => Err(KafkaIoError::Element(format!(
                "expected a (key, value) pair, got {}",
                other.kind()
            ))),
        }
    }

    /// From a decoded row of `kafka_write_with_headers`' input schema.
    pub fn from_row(schema: &RowSchema, value: &Value) -> Result<Self, KafkaIoError> {
        let Value::Row(fields) = value else {
            return Err(KafkaIoError::Element(format!(
                "expected a row, got {}",
                value.kind()
            )));
        };
        let get = |name: &str| {
            schema
                .field_index(name)
                .and_then(|i| fields.get(i))
                .unwrap_or(&Value::Null)
        };
        let mut headers = Vec::new();
        if let Value::Iterable(items) = get("headers") {
            for h in items {
                let Value::Row(parts) = h else {
                    return Err(KafkaIoError::Element("a header must be a row".into()));
                };
                let key = match parts.first() {
                    Some(Value::String(k)) => k.clone(),
                    _ => {
                        return Err(KafkaIoError::Element(
                            "a header key must be a string".into(),
                        ))
                    }
                };
                headers.push((
                    key,
                    as_bytes(parts.get(1).unwrap_or(&Value::Null), "a header value")?,
                ));
            }
        }
        let int = |name: &str| match get(name) {
            Value::Int(n) => Some(*n),
            _ => None,
        };
        Ok(Self {
            key: as_bytes(get("key"), "the key")?,
            value: as_bytes(get("value"), "the value")?,
            headers,
            topic: match get("topic") {
                Value::String(t) => Some(t.clone()),
                _ => None,
            },
            partition: int("partition").map(|p| p as i32),
            timestamp: int("timestamp"),
        })
    }
}
