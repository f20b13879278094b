//! Pane info: which firing of a window an element belongs to.
//!
//! On the wire the first byte packs `is_first` (bit 0), `is_last` (bit 1),
//! the timing (bits 2-3) and, in the high nibble, how many varints follow:
//! 0 (the compact form, indices implied to be 0), 1 (`index`, with
//! `on_time_index` equal to it, or -1 for early panes) or 2 (`index` then
//! `on_time_index`). Beam always picks the shortest form, which we copy so
//! that re-encoded elements are byte-identical.

use crate::varint::{read_u8, read_varint_i64, skip_varint, write_varint_i64};
use crate::CoderError;

/// When a pane fired relative to the watermark passing the end of its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timing {
    /// Before the watermark passed the end of the window (speculative).
    Early,
    /// The firing caused by the watermark passing the end of the window.
    OnTime,
    /// After the on-time firing, for late data.
    Late,
    /// Not produced by a trigger (the default for fresh elements).
    Unknown,
}

impl Timing {
    /// The 2-bit value Beam uses.
    pub fn to_bits(self) -> u8 {
        match self {
            Timing::Early => 0,
            Timing::OnTime => 1,
            Timing::Late => 2,
            Timing::Unknown => 3,
        }
    }

    /// Inverse of [`Timing::to_bits`] (only the low 2 bits are used).
    pub fn from_bits(bits: u8) -> Timing {
        match bits & 3 {
            0 => Timing::Early,
            1 => Timing::OnTime,
            2 => Timing::Late,
            _ => Timing::Unknown,
        }
    }

    /// The name Beam uses in `standard_coders.yaml` and in Java/Python.
    pub fn name(self) -> &'static str {
        match self {
            Timing::Early => "EARLY",
            Timing::OnTime => "ON_TIME",
            Timing::Late => "LATE",
            Timing::Unknown => "UNKNOWN",
        }
    }

    /// Parses [`Timing::name`].
    pub fn from_name(name: &str) -> Option<Timing> {
        Some(match name {
            "EARLY" => Timing::Early,
            "ON_TIME" => Timing::OnTime,
            "LATE" => Timing::Late,
            "UNKNOWN" => Timing::Unknown,
            _ => return None,
        })
    }
}

/// Beam's `PaneInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PaneInfo {
    /// First pane fired for this window.
    pub is_first: bool,
    /// Last pane that will fire for this window.
    pub is_last: bool,
    /// When it fired relative to the watermark.
    pub timing: Timing,
    /// Index of this pane among all the window's panes.
    pub index: i64,
    /// Index among the non-early panes, or -1 for early panes.
    pub on_time_index: i64,
}

impl Default for PaneInfo {
    fn default() -> Self {
        PaneInfo::NO_FIRING
    }
}

/// High-nibble encodings of the pane info's first byte.
const ENC_FIRST: u8 = 0;
const ENC_ONE_INDEX: u8 = 1;
const ENC_TWO_INDICES: u8 = 2;

impl PaneInfo {
    /// The pane of an element no trigger produced (the single byte `0x0F`).
    pub const NO_FIRING: PaneInfo = PaneInfo {
        is_first: true,
        is_last: true,
        timing: Timing::Unknown,
        index: 0,
        on_time_index: 0,
    };

    /// The low nibble of the first byte.
    #[inline]
    fn flags(&self) -> u8 {
        (self.is_first as u8) | ((self.is_last as u8) << 1) | (self.timing.to_bits() << 2)
    }

    /// Which of the three forms Beam writes for this pane.
    #[inline]
    fn encoding(&self) -> u8 {
        if (self.index == 0 && self.on_time_index == 0) || self.timing == Timing::Unknown {
            ENC_FIRST
        } else if self.index == self.on_time_index || self.timing == Timing::Early {
            ENC_ONE_INDEX
        } else {
            ENC_TWO_INDICES
        }
    }

    /// Appends the encoded pane.
    #[inline]
    pub fn encode(&self, out: &mut Vec<u8>) {
        let enc = self.encoding();
        out.push(self.flags() | (enc << 4));
        if enc >= ENC_ONE_INDEX {
            write_varint_i64(out, self.index);
        }
        if enc == ENC_TWO_INDICES {
            write_varint_i64(out, self.on_time_index);
        }
    }

    /// Reads an encoded pane at `pos`; returns it and the position after it.
    #[inline]
    pub fn decode(buf: &[u8], pos: usize) -> Result<(PaneInfo, usize), CoderError> {
        let (b, p) = read_u8(buf, pos)?;
        let mut pane = PaneInfo {
            is_first: b & 1 != 0,
            is_last: b & 2 != 0,
            timing: Timing::from_bits(b >> 2),
            index: 0,
            on_time_index: 0,
        };
        match b >> 4 {
            ENC_FIRST => Ok((pane, p)),
            ENC_ONE_INDEX => {
                let (index, p) = read_varint_i64(buf, p)?;
                pane.index = index;
                pane.on_time_index = if pane.timing == Timing::Early {
                    -1
                } else {
                    index
                };
                Ok((pane, p))
            }
            ENC_TWO_INDICES => {
                let (index, p) = read_varint_i64(buf, p)?;
                let (on_time_index, p) = read_varint_i64(buf, p)?;
                pane.index = index;
                pane.on_time_index = on_time_index;
                Ok((pane, p))
            }
            other => Err(CoderError::invalid(
                pos,
                format!("pane info encoding {other} (first byte {b:#04x})"),
            )),
        }
    }

    /// Returns the position after the encoded pane at `pos`.
    #[inline]
    pub fn skip(buf: &[u8], pos: usize) -> Result<usize, CoderError> {
        let (b, p) = read_u8(buf, pos)?;
        match b >> 4 {
            ENC_FIRST => Ok(p),
            ENC_ONE_INDEX => skip_varint(buf, p),
            ENC_TWO_INDICES => skip_varint(buf, skip_varint(buf, p)?),
            other => Err(CoderError::invalid(
                pos,
                format!("pane info encoding {other} (first byte {b:#04x})"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(p: PaneInfo) -> Vec<u8> {
        let mut out = Vec::new();
        p.encode(&mut out);
        out
    }

    #[test]
    fn forms() {
        assert_eq!(enc(PaneInfo::NO_FIRING), vec![0x0f]);
        // The yaml's param_windowed_value pane: not first, last, on time, 30, 40.
        let p = PaneInfo {
            is_first: false,
            is_last: true,
            timing: Timing::OnTime,
            index: 30,
            on_time_index: 40,
        };
        assert_eq!(enc(p), vec![0x26, 30, 40]);
        let early = PaneInfo {
            is_first: true,
            is_last: false,
            timing: Timing::Early,
            index: 3,
            on_time_index: -1,
        };
        assert_eq!(enc(early), vec![0x11, 3]);
        let on_time = PaneInfo {
            is_first: false,
            is_last: false,
            timing: Timing::OnTime,
            index: 4,
            on_time_index: 4,
        };
        assert_eq!(enc(on_time), vec![0x14, 4]);
        for p in [PaneInfo::NO_FIRING, p, early, on_time] {
            let bytes = enc(p);
            assert_eq!(PaneInfo::decode(&bytes, 0).unwrap(), (p, bytes.len()));
            assert_eq!(PaneInfo::skip(&bytes, 0).unwrap(), bytes.len());
        }
    }

    #[test]
    fn rejects_bad_encoding() {
        assert!(matches!(
            PaneInfo::decode(&[0x3f], 0),
            Err(CoderError::InvalidData { .. })
        ));
        assert!(matches!(
            PaneInfo::skip(&[0x2f, 1], 0),
            Err(CoderError::Truncated { .. })
        ));
    }
}
