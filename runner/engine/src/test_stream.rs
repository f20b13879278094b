//! Replaying a TestStream in a batch job: every element of each output, in
//! event order, in the global window.  (The translator has already refused
//! streams whose watermark or processing-time events a batch replay would
//! not honour.)

use bytes::Bytes;
use ferrobeam_coders::{varint::write_len_prefixed, Coder, PaneInfo};
use ferrobeam_graph::PortRef;
use ferrobeam_proto::pipeline::v1::{
    test_stream_payload::event::Event, Components, TestStreamPayload,
};

use crate::EngineError;

pub fn replay(
    payload: &TestStreamPayload,
    outputs: &[(String, PortRef)],
    components: &Components,
) -> Result<Vec<(PortRef, Vec<Bytes>)>, EngineError> {
    let coder = |id: &str| {
        Coder::from_components(components, id)
            .map_err(|e| EngineError::Internal(format!("TestStream coder {id}: {e}")))
    };
    let original = coder(&payload.coder_id)?;
    let mut produced = Vec::new();
    for (tag, port) in outputs {
        let wire_value = components
            .coders
            .get(&port.coder_id)
            .and_then(|c| c.component_coder_ids.first())
            .ok_or_else(|| {
                EngineError::Internal(format!("TestStream output {tag}: bad wire coder"))
            })?;
        let wire = coder(wire_value)?;
        let mut out = Vec::new();
        let mut value = Vec::new();
        for event in &payload.events {
            let Some(Event::ElementEvent(e)) = &event.event else {
                continue;
            };
            // A single-output stream takes every element event.
            if e.tag != *tag && outputs.len() > 1 {
                continue;
            }
            for element in &e.elements {
                value.clear();
                nested(&original, &wire, &element.encoded_element, &mut value)?;
                crate::wire::write_element(
                    &mut out,
                    element.timestamp,
                    &[],
                    &PaneInfo::NO_FIRING,
                    &[&value],
                );
            }
        }
        produced.push((port.clone(), vec![Bytes::from(out)]));
    }
    Ok(produced)
}

/// TestStream elements are encoded in the outer context; the data plane
/// carries values nested, in the port's (possibly length-prefixed) coder.
fn nested(
    original: &Coder,
    wire: &Coder,
    outer: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EngineError> {
    if matches!(wire, Coder::LengthPrefix(_)) && !matches!(original, Coder::LengthPrefix(_)) {
        write_len_prefixed(out, outer);
        return Ok(());
    }
    let value = original.decode(outer, false).map_err(|e| {
        EngineError::Internal(format!(
            "cannot re-encode a TestStream element ({}): {e}",
            original.urn()
        ))
    })?;
    wire.encode(&value, out, true).map_err(|e| {
        EngineError::Internal(format!(
            "cannot re-encode a TestStream element ({}): {e}",
            wire.urn()
        ))
    })
}
