//! Zero-copy access to windowed-value elements: the engine's hot path.
//!
//! A `windowed_value:v1` element is: timestamp (8 bytes), windows (i32
//! count, then each window), pane, then the value. The engine needs the
//! first three to window, trigger and hold watermarks, and treats the value
//! as a byte range (or finds the key inside it with
//! [`Coder::kv_key_range`]). Nothing here allocates.

use std::ops::Range;

use crate::coder::skip_windows;
use crate::pane::PaneInfo;
use crate::timestamp::{read_timestamp, write_timestamp};
use crate::varint::read_i32_be;
use crate::window::{IntervalWindow, WindowRef};
use crate::{Coder, CoderError};

/// The parsed header of one windowed-value element, borrowing its bytes.
#[derive(Debug, Clone)]
pub struct WindowedHeader<'a> {
    /// Event time, millis.
    pub timestamp: i64,
    /// The element's windows.
    pub windows: Windows<'a>,
    /// The pane.
    pub pane: PaneInfo,
    /// Byte range of the (nested-encoded) value in the parsed buffer; its
    /// end is the end of the element.
    pub value: Range<usize>,
}

impl WindowedHeader<'_> {
    /// Offset just past the element.
    pub fn end(&self) -> usize {
        self.value.end
    }
}

/// The windows of an element, as encoded (count prefix included).
#[derive(Debug, Clone, Copy)]
pub struct Windows<'a> {
    coder: &'a Coder,
    count: usize,
    encoded: &'a [u8],
}

impl<'a> Windows<'a> {
    /// Number of windows.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no windows (legal, though elements normally have one).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The windows exactly as encoded, with their big-endian count: what
    /// [`encode_windowed_value_raw`] takes to re-emit them unchanged.
    pub fn encoded(&self) -> &'a [u8] {
        self.encoded
    }

    /// The window coder.
    pub fn coder(&self) -> &'a Coder {
        self.coder
    }

    /// Whether these are (all) global windows.
    pub fn is_global(&self) -> bool {
        matches!(self.coder, Coder::GlobalWindow)
    }

    /// Iterates over the windows.
    pub fn iter(&self) -> WindowsIter<'a> {
        WindowsIter {
            coder: self.coder,
            buf: self.encoded,
            pos: 4,
            remaining: self.count,
        }
    }

    /// The only window, if there is exactly one (the common case).
    pub fn single(&self) -> Option<WindowRef<'a>> {
        if self.count == 1 {
            self.iter().next()
        } else {
            None
        }
    }
}

impl<'a> IntoIterator for Windows<'a> {
    type Item = WindowRef<'a>;
    type IntoIter = WindowsIter<'a>;
    fn into_iter(self) -> WindowsIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Windows`].
#[derive(Debug, Clone)]
pub struct WindowsIter<'a> {
    coder: &'a Coder,
    buf: &'a [u8],
    pos: usize,
    remaining: usize,
}

impl<'a> Iterator for WindowsIter<'a> {
    type Item = WindowRef<'a>;

    fn next(&mut self) -> Option<WindowRef<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The bytes were validated by the same functions when the header
        // was parsed, so these reads cannot fail.
        const VALIDATED: &str = "windows were validated when the header was parsed";
        Some(match self.coder {
            Coder::GlobalWindow => WindowRef::Global,
            Coder::IntervalWindow => {
                let (w, p) = IntervalWindow::decode(self.buf, self.pos).expect(VALIDATED);
                self.pos = p;
                WindowRef::Interval(w)
            }
            Coder::CustomWindow(_) => {
                let start = self.pos;
                let (max_timestamp, _) = read_timestamp(self.buf, start).expect(VALIDATED);
                self.pos = self.coder.skip(self.buf, start).expect(VALIDATED);
                WindowRef::Custom {
                    max_timestamp,
                    encoded: &self.buf[start..self.pos],
                }
            }
            other => {
                let start = self.pos;
                self.pos = other.skip(self.buf, start).expect(VALIDATED);
                WindowRef::Other(&self.buf[start..self.pos])
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for WindowsIter<'_> {}

impl Coder {
    /// Parses the header of the windowed-value element at `pos` (nested,
    /// as on the data plane), without copying.
    ///
    /// Works for `windowed_value:v1` and `param_windowed_value:v1` (whose
    /// header comes from the coder). Needs the window coder to be
    /// skippable and the value coder to be skippable (wrap unknown coders
    /// with [`crate::wrap_unknown_coders`] first).
    #[inline]
    pub fn windowed_header<'a>(
        &'a self,
        buf: &'a [u8],
        pos: usize,
    ) -> Result<WindowedHeader<'a>, CoderError> {
        match self {
            Coder::WindowedValue { value, window } => {
                let (timestamp, wstart) = read_timestamp(buf, pos)?;
                let (count, _) = read_i32_be(buf, wstart)?;
                if count < 0 {
                    // Only the iterable coder uses the blocked form; SDKs
                    // always write windows with their count.
                    return Err(CoderError::invalid(
                        wstart,
                        "windows encoded with unknown length",
                    ));
                }
                let wend = skip_windows(window, buf, wstart)?;
                let (pane, vstart) = PaneInfo::decode(buf, wend)?;
                let vend = value.skip(buf, vstart)?;
                Ok(WindowedHeader {
                    timestamp,
                    windows: Windows {
                        coder: window,
                        count: count as usize,
                        encoded: &buf[wstart..wend],
                    },
                    pane,
                    value: vstart..vend,
                })
            }
            Coder::ParamWindowedValue {
                value,
                window,
                params,
            } => {
                let vend = value.skip(buf, pos)?;
                Ok(WindowedHeader {
                    timestamp: params.timestamp,
                    windows: Windows {
                        coder: window,
                        count: params.window_count,
                        encoded: &params.windows_encoded,
                    },
                    pane: params.pane,
                    value: pos..vend,
                })
            }
            other => Err(CoderError::WrongCoder {
                expected: "windowed_value",
                urn: other.urn().to_string(),
            }),
        }
    }
}

/// Appends a `windowed_value:v1` element built from its parts.
///
/// `windows` must all be of the kind the target coder's window coder
/// encodes, and `value` must already be encoded in the context the element
/// needs (nested on the data plane).
#[inline]
pub fn encode_windowed_value(
    out: &mut Vec<u8>,
    timestamp: i64,
    windows: &[WindowRef<'_>],
    pane: &PaneInfo,
    value: &[u8],
) {
    write_timestamp(out, timestamp);
    out.extend_from_slice(&(windows.len() as i32).to_be_bytes());
    for w in windows {
        w.encode(out);
    }
    pane.encode(out);
    out.extend_from_slice(value);
}

/// Appends a `windowed_value:v1` element whose windows are already
/// encoded with their count ([`Windows::encoded`] of another element), so
/// they are copied rather than re-encoded.
#[inline]
pub fn encode_windowed_value_raw(
    out: &mut Vec<u8>,
    timestamp: i64,
    encoded_windows: &[u8],
    pane: &PaneInfo,
    value: &[u8],
) {
    write_timestamp(out, timestamp);
    out.extend_from_slice(encoded_windows);
    pane.encode(out);
    out.extend_from_slice(value);
}
