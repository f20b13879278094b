//! Beam's event-time timestamps on the wire.
//!
//! Beam encodes a timestamp as milliseconds since the epoch in a big-endian
//! `i64` with the sign bit flipped. The flip makes the unsigned byte order
//! equal the time order, so encoded timestamps sort correctly as bytes.

use crate::varint::read_array;
use crate::CoderError;

/// The smallest timestamp Beam represents (`BoundedWindow.TIMESTAMP_MIN_VALUE`),
/// in milliseconds: the smallest `i64` microsecond count, truncated to millis.
pub const MIN_TIMESTAMP_MILLIS: i64 = -9_223_372_036_854_775;

/// The largest timestamp Beam represents (`BoundedWindow.TIMESTAMP_MAX_VALUE`),
/// in milliseconds. A watermark at this value means "no more data".
pub const MAX_TIMESTAMP_MILLIS: i64 = 9_223_372_036_854_775;

/// The global window's max timestamp: one day before
/// [`MAX_TIMESTAMP_MILLIS`], so that timers set at the end of the global
/// window still fire before the final watermark.
pub const GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS: i64 = MAX_TIMESTAMP_MILLIS - 86_400_000;

/// Encodes a millisecond timestamp in Beam's order-preserving 8-byte form.
#[inline]
pub fn encode_timestamp(millis: i64) -> [u8; 8] {
    ((millis as u64) ^ (1 << 63)).to_be_bytes()
}

/// Decodes Beam's 8-byte timestamp form into milliseconds.
#[inline]
pub fn decode_timestamp(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// Reads an encoded timestamp at `pos`; returns millis and the position after it.
#[inline]
pub fn read_timestamp(buf: &[u8], pos: usize) -> Result<(i64, usize), CoderError> {
    read_array::<8>(buf, pos).map(|(a, p)| (decode_timestamp(a), p))
}

/// Appends an encoded timestamp.
#[inline]
pub fn write_timestamp(out: &mut Vec<u8>, millis: i64) {
    out.extend_from_slice(&encode_timestamp(millis));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_the_sign_bit() {
        assert_eq!(encode_timestamp(0), [0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            encode_timestamp(-1),
            [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        // The bytes Beam's yaml uses for MIN and MAX (interval_window and
        // param_windowed_value cases).
        assert_eq!(
            encode_timestamp(MIN_TIMESTAMP_MILLIS),
            [0x7f, 0xdf, 0x3b, 0x64, 0x5a, 0x1c, 0xac, 0x09]
        );
        assert_eq!(
            encode_timestamp(MAX_TIMESTAMP_MILLIS),
            [0x80, 0x20, 0xc4, 0x9b, 0xa5, 0xe3, 0x53, 0xf7]
        );
        for t in [
            MIN_TIMESTAMP_MILLIS,
            -400_000,
            -1,
            0,
            1,
            GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS,
            MAX_TIMESTAMP_MILLIS,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(decode_timestamp(encode_timestamp(t)), t);
        }
        assert_eq!(GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS, 9_223_371_950_454_775);
    }

    #[test]
    fn byte_order_is_time_order() {
        let ts = [MIN_TIMESTAMP_MILLIS, -5, -1, 0, 3, MAX_TIMESTAMP_MILLIS];
        for w in ts.windows(2) {
            assert!(encode_timestamp(w[0]) < encode_timestamp(w[1]));
        }
    }
}
