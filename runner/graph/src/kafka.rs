//! Checks that a Kafka read's output and a Kafka write's input are encoded
//! the way the native Kafka IO produces and reads them.

use ferrobeam_proto::pipeline::v1::{self as pb, Components};
use prost::Message;

use crate::error::GraphError;
use crate::urns;

/// The fields of the metadata rows the native read produces, in order
/// (Beam's Java `ByteArrayKafkaRecord`).
pub const METADATA_FIELDS: &[&str] = &[
    "topic",
    "partition",
    "offset",
    "timestamp",
    "key",
    "value",
    "headers",
    "timestampTypeId",
    "timestampTypeName",
];

fn coder<'a>(components: &'a Components, id: &str) -> Option<&'a pb::Coder> {
    components.coders.get(id)
}

fn coder_urn<'a>(components: &'a Components, id: &str) -> &'a str {
    coder(components, id)
        .and_then(|c| c.spec.as_ref())
        .map_or("", |s| s.urn.as_str())
}

/// bytes, or bytes that may be null, or text (its UTF-8 bytes).
fn is_bytes_like(components: &Components, id: &str) -> bool {
    match coder_urn(components, id) {
        urns::BYTES_CODER | urns::STRING_UTF8_CODER => true,
        urns::NULLABLE_CODER | urns::LENGTH_PREFIX_CODER => coder(components, id)
            .and_then(|c| c.component_coder_ids.first())
            .is_some_and(|inner| is_bytes_like(components, inner)),
        _ => false,
    }
}

fn kv_of_bytes(components: &Components, id: &str) -> bool {
    coder_urn(components, id) == urns::KV_CODER
        && coder(components, id).is_some_and(|c| {
            c.component_coder_ids.len() == 2
                && c.component_coder_ids
                    .iter()
                    .all(|part| is_bytes_like(components, part))
        })
}

fn row_schema(components: &Components, id: &str) -> Option<pb::Schema> {
    if coder_urn(components, id) != urns::ROW_CODER {
        return None;
    }
    let payload = &coder(components, id)?.spec.as_ref()?.payload;
    pb::Schema::decode(payload.as_ref()).ok()
}

fn element_coder<'a>(components: &'a Components, pcollection: &str) -> &'a str {
    components
        .pcollections
        .get(pcollection)
        .map_or("", |p| p.coder_id.as_str())
}

/// The read's output must be what it produces: `KV<bytes, bytes>`, or
/// rows with Beam's metadata fields.
pub fn check_read_output(
    components: &Components,
    t: &pb::PTransform,
    urn: &str,
    pcollection: &str,
) -> Result<(), GraphError> {
    let id = element_coder(components, pcollection);
    let ok = if urn == urns::KAFKA_READ_WITH_METADATA {
        row_schema(components, id).is_some_and(|s| {
            s.fields
                .iter()
                .map(|f| f.name.as_str())
                .eq(METADATA_FIELDS.iter().copied())
        })
    } else {
        coder_urn(components, id) == urns::KV_CODER
            && coder(components, id).is_some_and(|c| {
                c.component_coder_ids
                    .iter()
                    .all(|part| coder_urn(components, part) == urns::BYTES_CODER)
            })
    };
    if ok {
        return Ok(());
    }
    Err(GraphError::unsupported(
        t,
        format!(
            "ferrobeam reads Kafka records as {}, but the output is encoded with {:?}; \
             expand the read with ferrobeam's expansion service (ferrobeam.io.kafka.ReadFromKafka)",
            if urn == urns::KAFKA_READ_WITH_METADATA {
                "rows of Beam's Kafka metadata fields"
            } else {
                "(bytes, bytes) pairs"
            },
            coder_urn(components, id)
        ),
    ))
}

/// The write's input must be decodable by the runner into key and value
/// bytes: `KV` of bytes/str (nullable allowed), or rows with headers.
pub fn check_write_input(
    components: &Components,
    t: &pb::PTransform,
    urn: &str,
    pcollection: &str,
) -> Result<(), GraphError> {
    let id = element_coder(components, pcollection);
    if urn == urns::KAFKA_WRITE_WITH_HEADERS {
        let has_value =
            row_schema(components, id).is_some_and(|s| s.fields.iter().any(|f| f.name == "value"));
        if has_value {
            return Ok(());
        }
        return Err(GraphError::unsupported(
            t,
            format!(
                "with_headers=True needs beam.Row input with key, value and optional headers, \
                 topic, partition, timestamp fields; the input is encoded with {:?}",
                coder_urn(components, id)
            ),
        ));
    }
    if kv_of_bytes(components, id) {
        return Ok(());
    }
    Err(GraphError::unsupported(
        t,
        format!(
            "Kafka records are written from (bytes, bytes) pairs, but the input is encoded with \
             {:?}; give the input that type, e.g. .with_output_types(typing.Tuple[bytes, bytes])",
            coder_urn(components, id)
        ),
    ))
}
