//! Expanding Beam's Kafka cross-language transforms for the SDKs.
//!
//! Beam's Java expansion service turns `ReadFromKafka` into a composite of
//! Java transforms that need a Java SDK harness.  We answer with the
//! transform itself as a leaf, with no environment: the runner recognises
//! the URN and runs it natively.  Its output PCollection gets the coder
//! the native read produces (`KV<bytes, bytes>` or Beam's metadata row),
//! so the Python SDK types it as Java's expansion would.

use ferrobeam_proto::expansion::v1::{ExpansionRequest, ExpansionResponse};
use ferrobeam_proto::pipeline::v1::{self as pb, Components, FunctionSpec};
use prost::Message;

use crate::config::{KafkaTransform, ALL_URNS};
use crate::record::metadata_schema;

const GLOBAL_WINDOWS_URN: &str = "beam:window_fn:global_windows:v1";

fn coder(urn: &str, payload: Vec<u8>, components: &[String]) -> pb::Coder {
    pb::Coder {
        spec: Some(FunctionSpec {
            urn: urn.into(),
            payload: payload.into(),
        }),
        component_coder_ids: components.to_vec(),
    }
}

/// Expands one transform; problems come back in the response's `error`,
/// which the SDK raises at pipeline construction.
pub fn expand(request: &ExpansionRequest) -> ExpansionResponse {
    match try_expand(request) {
        Ok(r) => r,
        Err(error) => ExpansionResponse {
            error,
            ..Default::default()
        },
    }
}

fn try_expand(request: &ExpansionRequest) -> Result<ExpansionResponse, String> {
    let transform = request
        .transform
        .as_ref()
        .ok_or("the expansion request has no transform")?;
    let spec = transform.spec.clone().unwrap_or_default();
    let name = &transform.unique_name;
    let parsed = KafkaTransform::parse(&spec.urn, &spec.payload).ok_or_else(|| {
        format!(
            "ferrobeam's expansion service expands Beam's Kafka transforms ({}); {name:?} has \
             URN {:?}: expand it with the expansion service that provides it",
            ALL_URNS.join(", "),
            spec.urn
        )
    })?;
    let kafka = parsed.map_err(|e| format!("{name:?} ({}): {e}", spec.urn))?;
    let given = request.components.clone().unwrap_or_default();
    // Only what the SDK needs back: the inputs' collections and coders, and
    // what we add (ids under the request's namespace, which is how the SDK
    // tells our components from its own).
    let mut components = Components {
        pcollections: given.pcollections.clone(),
        coders: given.coders.clone(),
        windowing_strategies: given.windowing_strategies.clone(),
        ..Default::default()
    };
    let ns = &request.namespace;
    let mut expanded = transform.clone();
    expanded.environment_id.clear();
    expanded.subtransforms.clear();
    match kafka {
        KafkaTransform::Read(config) => {
            let bytes_id = format!("{ns}_kafka_bytes");
            let value_id = format!("{ns}_kafka_record");
            let window_coder_id = format!("{ns}_kafka_global_window");
            let windowing_id = format!("{ns}_kafka_windowing");
            let output_id = format!("{ns}_kafka_records");
            components
                .coders
                .insert(bytes_id.clone(), coder("beam:coder:bytes:v1", vec![], &[]));
            let value = if config.with_metadata {
                coder("beam:coder:row:v1", metadata_schema().encode_to_vec(), &[])
            } else {
                coder("beam:coder:kv:v1", vec![], &[bytes_id.clone(), bytes_id])
            };
            components.coders.insert(value_id.clone(), value);
            components.coders.insert(
                window_coder_id.clone(),
                coder("beam:coder:global_window:v1", vec![], &[]),
            );
            components.windowing_strategies.insert(
                windowing_id.clone(),
                pb::WindowingStrategy {
                    window_fn: Some(FunctionSpec {
                        urn: GLOBAL_WINDOWS_URN.into(),
                        payload: Default::default(),
                    }),
                    merge_status: pb::merge_status::Enum::NonMerging as i32,
                    window_coder_id,
                    trigger: Some(pb::Trigger {
                        trigger: Some(pb::trigger::Trigger::Default(pb::trigger::Default {})),
                    }),
                    accumulation_mode: pb::accumulation_mode::Enum::Discarding as i32,
                    output_time: pb::output_time::Enum::EndOfWindow as i32,
                    closing_behavior: pb::closing_behavior::Enum::EmitAlways as i32,
                    on_time_behavior: pb::on_time_behavior::Enum::FireAlways as i32,
                    ..Default::default()
                },
            );
            components.pcollections.insert(
                output_id.clone(),
                pb::PCollection {
                    unique_name: format!("{name}.records"),
                    coder_id: value_id,
                    // Bounded with a record or time limit, as Beam's
                    // expansion says (the SDK's batch sinks then accept it);
                    // the engine runs Kafka reads in streaming mode either way.
                    is_bounded: if config.is_bounded() {
                        pb::is_bounded::Enum::Bounded as i32
                    } else {
                        pb::is_bounded::Enum::Unbounded as i32
                    },
                    windowing_strategy_id: windowing_id,
                    ..Default::default()
                },
            );
            expanded.inputs.clear();
            expanded.outputs = [("output".to_owned(), output_id)].into();
        }
        KafkaTransform::Write(_) => {
            let input = transform
                .inputs
                .values()
                .next()
                .ok_or_else(|| format!("{name:?}: a Kafka write needs an input"))?;
            ferrobeam_graph::kafka::check_write_input(&components, transform, &spec.urn, input)
                .map_err(|e| e.to_string())?;
            // An output nothing is ever written to: Beam's Python optimizer
            // drops leaf transforms without outputs (it takes them for
            // no-ops), and Java's write has one too (its PDone's ParDo).
            let input =
                components.pcollections.get(input).cloned().ok_or_else(|| {
                    format!("{name:?}: its input {input:?} is not in the request")
                })?;
            let bytes_id = format!("{ns}_kafka_bytes");
            let written_id = format!("{ns}_kafka_written");
            components
                .coders
                .insert(bytes_id.clone(), coder("beam:coder:bytes:v1", vec![], &[]));
            components.pcollections.insert(
                written_id.clone(),
                pb::PCollection {
                    unique_name: format!("{name}.written"),
                    coder_id: bytes_id,
                    ..input
                },
            );
            expanded.outputs = [("written".to_owned(), written_id)].into();
        }
    }
    let transform_id = format!("{ns}_kafka");
    components.transforms.insert(transform_id, expanded.clone());
    Ok(ExpansionResponse {
        components: Some(components),
        transform: Some(expanded),
        ..Default::default()
    })
}
