//! Windows as the runner sees them.
//!
//! The runner handles the global and interval windows natively (they cover
//! the global, fixed, sliding and session window functions). Any other
//! window kind stays opaque bytes that the runner copies around but never
//! interprets.

use crate::timestamp::{read_timestamp, write_timestamp, GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS};
use crate::varint::{read_varint_i64, write_varint_i64};
use crate::CoderError;

/// Beam's `IntervalWindow`: the half-open range `[start, end)` in millis.
///
/// On the wire it is `end` as a timestamp then `end - start` as a varint.
/// Arithmetic wraps, so every encoded pair round-trips exactly, however odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntervalWindow {
    /// Inclusive start, millis since the epoch.
    pub start: i64,
    /// Exclusive end, millis since the epoch.
    pub end: i64,
}

impl IntervalWindow {
    /// The window `[start, end)`.
    pub fn new(start: i64, end: i64) -> Self {
        IntervalWindow { start, end }
    }

    /// Builds the window from its wire fields.
    pub fn from_end_span(end: i64, span: i64) -> Self {
        IntervalWindow {
            start: end.wrapping_sub(span),
            end,
        }
    }

    /// `end - start`, the varint on the wire.
    pub fn span(&self) -> i64 {
        self.end.wrapping_sub(self.start)
    }

    /// The last timestamp inside the window (`end - 1`), which is what
    /// watermarks and end-of-window timers compare against.
    pub fn max_timestamp(&self) -> i64 {
        self.end.wrapping_sub(1)
    }

    /// Appends the encoded window.
    #[inline]
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_timestamp(out, self.end);
        write_varint_i64(out, self.span());
    }

    /// Reads an encoded window at `pos`; returns it and the position after it.
    #[inline]
    pub fn decode(buf: &[u8], pos: usize) -> Result<(IntervalWindow, usize), CoderError> {
        let (end, p) = read_timestamp(buf, pos)?;
        let (span, p) = read_varint_i64(buf, p)?;
        Ok((IntervalWindow::from_end_span(end, span), p))
    }
}

/// One window of an element, borrowed from the element's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowRef<'a> {
    /// The global window (encoded as zero bytes).
    Global,
    /// An interval window.
    Interval(IntervalWindow),
    /// A `custom_window:v1` window: its max timestamp (readable without
    /// the window's own coder) and its complete encoding, prefix included.
    Custom {
        /// The window's max timestamp, millis.
        max_timestamp: i64,
        /// The whole encoded window, copied verbatim when re-encoding.
        encoded: &'a [u8],
    },
    /// A window of any other coder: its complete encoding with that coder,
    /// copied verbatim when re-encoding.
    Other(&'a [u8]),
}

impl WindowRef<'_> {
    /// Appends the window in the encoding of its own coder.
    #[inline]
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            WindowRef::Global => {}
            WindowRef::Interval(w) => w.encode(out),
            WindowRef::Custom { encoded, .. } | WindowRef::Other(encoded) => {
                out.extend_from_slice(encoded)
            }
        }
    }

    /// The window's max timestamp, when the runner knows it without the
    /// window's own coder (all but [`WindowRef::Other`]).
    pub fn max_timestamp(&self) -> Option<i64> {
        match self {
            WindowRef::Global => Some(GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS),
            WindowRef::Interval(w) => Some(w.max_timestamp()),
            WindowRef::Custom { max_timestamp, .. } => Some(*max_timestamp),
            WindowRef::Other(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_window_wire_form() {
        // First case of the yaml's interval_window section.
        let bytes = [
            0x80, 0x00, 0x01, 0x52, 0x9a, 0xa4, 0x9b, 0x68, 0x80, 0xdd, 0xdb, 0x01,
        ];
        let (w, p) = IntervalWindow::decode(&bytes, 0).unwrap();
        assert_eq!(p, bytes.len());
        assert_eq!(w.end, 1_454_293_425_000);
        assert_eq!(w.span(), 3_600_000);
        assert_eq!(w.start, 1_454_293_425_000 - 3_600_000);
        let mut out = Vec::new();
        w.encode(&mut out);
        assert_eq!(out, bytes);
    }
}
