//! Encoding a TestStream's events; in a batch job, replaying it: every element of each output, in
//! event order, in the global window.  (The translator has already refused
//! streams whose watermark or processing-time events a batch replay would
//! not honour.)

use bytes::Bytes;
use ferrobeam_coders::{varint::write_len_prefixed, Coder, PaneInfo};
use ferrobeam_graph::PortRef;
use ferrobeam_proto::pipeline::v1::{
    test_stream_payload::event::{AddElements, Event},
    Components, TestStreamPayload,
};

use crate::EngineError;

/// Encodes a TestStream's elements for its output ports.
pub struct EventEncoder {
    original: Coder,
    /// Per output: its tag, port and wire coder of the value.
    outputs: Vec<(String, PortRef, Coder)>,
}

impl EventEncoder {
    pub fn new(
        payload: &TestStreamPayload,
        outputs: &[(String, PortRef)],
        components: &Components,
    ) -> Result<Self, EngineError> {
        let coder = |id: &str| {
            Coder::from_components(components, id)
                .map_err(|e| EngineError::Internal(format!("TestStream coder {id}: {e}")))
        };
        let original = coder(&payload.coder_id)?;
        let mut encoded = Vec::new();
        for (tag, port) in outputs {
            let wire_value = components
                .coders
                .get(&port.coder_id)
                .and_then(|c| c.component_coder_ids.first())
                .ok_or_else(|| {
                    EngineError::Internal(format!("TestStream output {tag}: bad wire coder"))
                })?;
            encoded.push((tag.clone(), port.clone(), coder(wire_value)?));
        }
        Ok(Self {
            original,
            outputs: encoded,
        })
    }

    /// Appends an element event's elements to the buffers of the outputs
    /// it is for (`out` is indexed like the outputs).
    pub fn encode(&self, event: &AddElements, out: &mut [Vec<u8>]) -> Result<(), EngineError> {
        let mut value = Vec::new();
        for (i, (tag, _, wire)) in self.outputs.iter().enumerate() {
            // A single-output stream takes every element event.
            if event.tag != *tag && self.outputs.len() > 1 {
                continue;
            }
            for element in &event.elements {
                value.clear();
                nested(&self.original, wire, &element.encoded_element, &mut value)?;
                crate::wire::write_element(
                    &mut out[i],
                    element.timestamp,
                    &[],
                    &PaneInfo::NO_FIRING,
                    &[&value],
                );
            }
        }
        Ok(())
    }

    pub fn ports(&self) -> impl Iterator<Item = &PortRef> {
        self.outputs.iter().map(|(_, p, _)| p)
    }
}

/// Batch: every element of each output at once.
pub fn replay(
    payload: &TestStreamPayload,
    outputs: &[(String, PortRef)],
    components: &Components,
) -> Result<Vec<(PortRef, Vec<Bytes>)>, EngineError> {
    let encoder = EventEncoder::new(payload, outputs, components)?;
    let mut buffers = vec![Vec::new(); outputs.len()];
    for event in &payload.events {
        if let Some(Event::ElementEvent(e)) = &event.event {
            encoder.encode(e, &mut buffers)?;
        }
    }
    Ok(encoder
        .ports()
        .cloned()
        .zip(buffers)
        .map(|(p, b)| (p, vec![Bytes::from(b)]))
        .collect())
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
