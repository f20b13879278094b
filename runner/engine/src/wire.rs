//! Reading and writing data-plane elements: `WindowedValue` bytes.
//!
//! The runner never decodes user values.  It finds element boundaries, the
//! timestamp, the windows and (for keyed operations) the key bytes, and
//! treats everything else as opaque slices of the input buffers.

use std::ops::Range;

use bytes::Bytes;
use ferrobeam_coders::IntervalWindow;
use ferrobeam_coders::{read_timestamp, write_timestamp};
use ferrobeam_coders::{Coder, PaneInfo};
use ferrobeam_proto::pipeline::v1::Components;

use crate::EngineError;

pub use ferrobeam_coders::{GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS, MIN_TIMESTAMP_MILLIS};

#[derive(Clone, Debug)]
enum WindowShape {
    Global,
    Interval,
    Other(Coder),
}

/// How to take apart elements encoded with one windowed-value wire coder.
#[derive(Clone, Debug)]
pub struct WireFormat {
    value: Coder,
    window: WindowShape,
    /// The key coder when the value is a KV.
    key: Option<Coder>,
}

/// One element's parts, as ranges into its buffer.
#[derive(Clone, Debug)]
pub struct Element {
    pub range: Range<usize>,
    pub timestamp: i64,
    /// Each window's encoded bytes.
    pub windows: Vec<Range<usize>>,
    pub value: Range<usize>,
}

impl WireFormat {
    /// `coder_id` must be a `beam:coder:windowed_value:v1` coder.
    pub fn new(components: &Components, coder_id: &str) -> Result<Self, EngineError> {
        let wv = components
            .coders
            .get(coder_id)
            .ok_or_else(|| EngineError::Internal(format!("unknown wire coder {coder_id}")))?;
        let urn = wv.spec.as_ref().map(|s| s.urn.as_str()).unwrap_or("");
        if urn != "beam:coder:windowed_value:v1" || wv.component_coder_ids.len() != 2 {
            return Err(EngineError::Internal(format!(
                "wire coder {coder_id} is not a windowed value coder"
            )));
        }
        let value_id = &wv.component_coder_ids[0];
        let window_id = &wv.component_coder_ids[1];
        let coder = |id: &str| {
            Coder::from_components(components, id)
                .map_err(|e| EngineError::Internal(format!("coder {id}: {e}")))
        };
        let window_urn = components
            .coders
            .get(window_id)
            .and_then(|c| c.spec.as_ref())
            .map(|s| s.urn.as_str());
        let window = match window_urn {
            Some("beam:coder:global_window:v1") => WindowShape::Global,
            Some("beam:coder:interval_window:v1") => WindowShape::Interval,
            _ => WindowShape::Other(coder(window_id)?),
        };
        let value_proto = &components.coders[value_id];
        let key = match value_proto.spec.as_ref().map(|s| s.urn.as_str()) {
            Some("beam:coder:kv:v1") => Some(coder(&value_proto.component_coder_ids[0])?),
            _ => None,
        };
        Ok(Self {
            value: coder(value_id)?,
            window,
            key,
        })
    }

    fn skip_window(&self, buf: &[u8], pos: usize) -> Result<usize, EngineError> {
        match &self.window {
            WindowShape::Global => Ok(pos),
            WindowShape::Interval => Ok(IntervalWindow::decode(buf, pos).map_err(bad)?.1),
            WindowShape::Other(c) => c.skip(buf, pos).map_err(bad),
        }
    }

    /// Parses the element starting at `pos`.
    pub fn parse(&self, buf: &[u8], pos: usize) -> Result<Element, EngineError> {
        let (timestamp, mut p) = read_timestamp(buf, pos).map_err(bad)?;
        let count = u32::from_be_bytes(
            buf.get(p..p + 4)
                .ok_or_else(truncated)?
                .try_into()
                .expect("4 bytes"),
        );
        p += 4;
        let mut windows = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let end = self.skip_window(buf, p)?;
            windows.push(p..end);
            p = end;
        }
        p = PaneInfo::skip(buf, p).map_err(bad)?;
        let end = self.value.skip(buf, p).map_err(bad)?;
        Ok(Element {
            range: pos..end,
            timestamp,
            windows,
            value: p..end,
        })
    }

    /// End of the key inside a KV value starting at `value_start`.
    pub fn key_end(&self, buf: &[u8], value_start: usize) -> Result<usize, EngineError> {
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| EngineError::Internal("keyed operation on a non-KV coder".into()))?;
        key.skip(buf, value_start).map_err(bad)
    }

    /// The last timestamp inside an encoded window.
    pub fn window_max_timestamp(&self, window: &[u8]) -> Result<i64, EngineError> {
        match &self.window {
            WindowShape::Global => Ok(GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS),
            WindowShape::Interval => Ok(IntervalWindow::decode(window, 0)
                .map_err(bad)?
                .0
                .max_timestamp()),
            WindowShape::Other(_) => Err(EngineError::Internal(
                "custom windows are not supported yet".into(),
            )),
        }
    }

    /// The last timestamp inside an encoded window, or `fallback` when the
    /// window's coder is opaque to the runner (custom windows: their end is
    /// inside bytes only the SDK can decode).
    pub fn window_max_timestamp_or(
        &self,
        window: &[u8],
        fallback: i64,
    ) -> Result<i64, EngineError> {
        match &self.window {
            WindowShape::Other(_) => Ok(fallback),
            _ => self.window_max_timestamp(window),
        }
    }

    /// Calls `f` for every element of `chunk`.
    pub fn for_each(
        &self,
        chunk: &[u8],
        mut f: impl FnMut(Element) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let mut pos = 0;
        while pos < chunk.len() {
            let e = self.parse(chunk, pos)?;
            pos = e.range.end;
            f(e)?;
        }
        Ok(())
    }

    /// Splits `chunk` into pieces of about `target` bytes at element boundaries.
    pub fn split(&self, chunk: &Bytes, target: usize) -> Result<Vec<Bytes>, EngineError> {
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut pos = 0;
        while pos < chunk.len() {
            let e = self.parse(chunk, pos)?;
            pos = e.range.end;
            if pos - start >= target {
                pieces.push(chunk.slice(start..pos));
                start = pos;
            }
        }
        if start < chunk.len() {
            pieces.push(chunk.slice(start..));
        }
        Ok(pieces)
    }
}

/// Appends a windowed value with one window to `out`.
pub fn write_element(
    out: &mut Vec<u8>,
    timestamp: i64,
    window: &[u8],
    pane: &PaneInfo,
    value: &[&[u8]],
) {
    write_timestamp(out, timestamp);
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(window);
    pane.encode(out);
    for part in value {
        out.extend_from_slice(part);
    }
}

fn bad(e: ferrobeam_coders::CoderError) -> EngineError {
    EngineError::Internal(format!("undecodable element on the data plane: {e}"))
}

fn truncated() -> EngineError {
    EngineError::Internal("truncated element on the data plane".into())
}
