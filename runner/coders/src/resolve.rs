//! Resolving a coder id in a pipeline's components into a [`Coder`] tree.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ferrobeam_proto::pipeline::v1::{Components, Schema};
use prost::Message;

use crate::coder::{decode_windows, urns, WindowedParams, MAX_DEPTH};
use crate::pane::PaneInfo;
use crate::row::RowSchema;
use crate::timestamp::read_timestamp;
use crate::varint::read_i32_be;
use crate::{Coder, CoderError};

/// Builds the coder `coder_id` (see [`Coder::from_components`]).
pub(crate) fn resolve(components: &Components, coder_id: &str) -> Result<Coder, CoderError> {
    Builder {
        components,
        cache: HashMap::new(),
    }
    .build(coder_id, 0)
}

/// Resolves coder ids, sharing subtrees that several coders reference.
struct Builder<'a> {
    components: &'a Components,
    cache: HashMap<String, Coder>,
}

impl Builder<'_> {
    fn build(&mut self, id: &str, depth: usize) -> Result<Coder, CoderError> {
        if let Some(c) = self.cache.get(id) {
            return Ok(c.clone());
        }
        if depth > MAX_DEPTH {
            return Err(CoderError::TooDeep {
                id: id.to_string(),
                limit: MAX_DEPTH,
            });
        }
        static NO_PAYLOAD: Bytes = Bytes::new();
        let components = self.components;
        let proto = components
            .coders
            .get(id)
            .ok_or_else(|| CoderError::MissingCoder { id: id.to_string() })?;
        let (urn, payload) = match &proto.spec {
            Some(spec) => (spec.urn.as_str(), &spec.payload),
            None => ("", &NO_PAYLOAD),
        };
        let ids = &proto.component_coder_ids;
        if let Some(expected) = urns::component_count(urn) {
            if ids.len() != expected {
                return Err(CoderError::BadComponents {
                    id: id.to_string(),
                    urn: urn.to_string(),
                    expected,
                    found: ids.len(),
                });
            }
        }
        let bad_payload = |reason: String| CoderError::BadPayload {
            id: id.to_string(),
            urn: urn.to_string(),
            reason,
        };
        let mut child = |i: usize| -> Result<Box<Coder>, CoderError> {
            Ok(Box::new(self.build(&ids[i], depth + 1)?))
        };
        let coder = match urn {
            urns::BYTES => Coder::Bytes,
            urns::STRING_UTF8 => Coder::StringUtf8,
            urns::BOOL => Coder::Bool,
            urns::VARINT => Coder::Varint,
            urns::DOUBLE => Coder::Double,
            urns::GLOBAL_WINDOW => Coder::GlobalWindow,
            urns::INTERVAL_WINDOW => Coder::IntervalWindow,
            urns::KV => Coder::Kv {
                key: child(0)?,
                value: child(1)?,
            },
            urns::ITERABLE => Coder::Iterable(child(0)?),
            urns::STATE_BACKED_ITERABLE => Coder::StateBackedIterable(child(0)?),
            urns::LENGTH_PREFIX => Coder::LengthPrefix(child(0)?),
            urns::CUSTOM_WINDOW => Coder::CustomWindow(child(0)?),
            urns::SHARDED_KEY => Coder::ShardedKey(child(0)?),
            urns::NULLABLE => Coder::Nullable(child(0)?),
            urns::WINDOWED_VALUE => Coder::WindowedValue {
                value: child(0)?,
                window: child(1)?,
            },
            urns::TIMER => Coder::Timer {
                key: child(0)?,
                window: child(1)?,
            },
            urns::PARAM_WINDOWED_VALUE => {
                let value = child(0)?;
                let window = child(1)?;
                let params = parse_windowed_params(&window, payload)
                    .map_err(|e| bad_payload(e.to_string()))?;
                Coder::ParamWindowedValue {
                    value,
                    window,
                    params: Arc::new(params),
                }
            }
            urns::ROW => {
                let schema = Schema::decode(payload.as_ref())
                    .map_err(|e| bad_payload(format!("not a Schema proto: {e}")))?;
                Coder::Row(Arc::new(
                    RowSchema::from_proto(&schema).map_err(bad_payload)?,
                ))
            }
            _ => Coder::Unknown {
                urn: urn.to_string(),
                id: id.to_string(),
            },
        };
        self.cache.insert(id.to_string(), coder.clone());
        Ok(coder)
    }
}

/// Parses a `param_windowed_value` payload: a windowed value encoded with
/// the window coder (and a value we ignore).
fn parse_windowed_params(window: &Coder, payload: &Bytes) -> Result<WindowedParams, CoderError> {
    let buf = payload.as_ref();
    let (timestamp, p) = read_timestamp(buf, 0)?;
    let (count, _) = read_i32_be(buf, p)?;
    if count < 0 {
        return Err(CoderError::invalid(
            p,
            "windows encoded with unknown length",
        ));
    }
    let (windows, q) = decode_windows(window, buf, p)?;
    let (pane, _) = PaneInfo::decode(buf, q)?;
    Ok(WindowedParams {
        timestamp,
        window_count: count as usize,
        windows,
        windows_encoded: payload.slice(p..q),
        pane,
    })
}
