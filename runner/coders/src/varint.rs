//! Beam's varints and the other fixed-width primitives every coder is made of.
//!
//! Beam writes a varint as the unsigned little-endian base-128 form of the
//! value's 64-bit two's complement, so negative numbers always take 10 bytes.
//! All readers here take `(buf, pos)` and return the new position, so the
//! hot path (skipping elements on the data plane) never allocates or copies.

use crate::CoderError;

/// Longest possible varint: ceil(64 / 7) bytes.
pub const MAX_VARINT_LEN: usize = 10;

/// Reads a varint at `pos`; returns the value and the position after it.
#[inline]
pub fn read_varint_u64(buf: &[u8], pos: usize) -> Result<(u64, usize), CoderError> {
    // Fast path: one-byte varints (lengths < 128, small ints) dominate.
    match buf.get(pos) {
        Some(&b) if b < 0x80 => Ok((b as u64, pos + 1)),
        Some(_) => read_varint_slow(buf, pos),
        None => Err(CoderError::truncated(buf, pos, 1)),
    }
}

#[inline(never)]
fn read_varint_slow(buf: &[u8], pos: usize) -> Result<(u64, usize), CoderError> {
    let mut result: u64 = 0;
    let mut shift = 0u32;
    let mut i = pos;
    loop {
        let Some(&b) = buf.get(i) else {
            return Err(CoderError::truncated(buf, i, 1));
        };
        let bits = (b & 0x7f) as u64;
        // The 10th byte may only carry the 64th bit.
        if shift == 63 && bits > 1 {
            return Err(CoderError::BadVarint { offset: pos });
        }
        result |= bits << shift;
        i += 1;
        if b & 0x80 == 0 {
            return Ok((result, i));
        }
        shift += 7;
        if shift > 63 {
            return Err(CoderError::BadVarint { offset: pos });
        }
    }
}

/// Reads a varint as Beam's signed 64-bit integer (two's complement).
#[inline]
pub fn read_varint_i64(buf: &[u8], pos: usize) -> Result<(i64, usize), CoderError> {
    read_varint_u64(buf, pos).map(|(v, p)| (v as i64, p))
}

/// Reads a varint that is a byte length and checks that that many bytes
/// follow it; returns `(length, position after the varint)`.
#[inline]
pub fn read_len(buf: &[u8], pos: usize) -> Result<(usize, usize), CoderError> {
    let (len, p) = read_varint_u64(buf, pos)?;
    let available = buf.len() - p;
    if len > available as u64 {
        return Err(CoderError::Truncated {
            offset: p,
            needed: usize::try_from(len).unwrap_or(usize::MAX),
            available,
        });
    }
    Ok((len as usize, p))
}

/// Returns the position after the varint at `pos`, without computing it.
#[inline]
pub fn skip_varint(buf: &[u8], pos: usize) -> Result<usize, CoderError> {
    match buf.get(pos) {
        Some(&b) if b < 0x80 => Ok(pos + 1),
        Some(_) => read_varint_slow(buf, pos).map(|(_, p)| p),
        None => Err(CoderError::truncated(buf, pos, 1)),
    }
}

/// Appends `v` as a varint.
#[inline]
pub fn write_varint_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a signed integer as Beam's varint (two's complement, so negative
/// values take 10 bytes).
#[inline]
pub fn write_varint_i64(out: &mut Vec<u8>, v: i64) {
    write_varint_u64(out, v as u64)
}

/// Number of bytes [`write_varint_u64`] writes for `v`.
#[inline]
pub fn varint_len(v: u64) -> usize {
    // 1 + floor(log128(v)), with v == 0 taking one byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Borrows `n` bytes at `pos`; returns them and the position after them.
#[inline]
pub fn read_slice(buf: &[u8], pos: usize, n: usize) -> Result<(&[u8], usize), CoderError> {
    match pos.checked_add(n) {
        Some(end) if end <= buf.len() => Ok((&buf[pos..end], end)),
        _ => Err(CoderError::truncated(buf, pos, n)),
    }
}

/// Returns `pos + n` if the buffer has `n` bytes at `pos`.
#[inline]
pub fn skip_bytes(buf: &[u8], pos: usize, n: usize) -> Result<usize, CoderError> {
    match pos.checked_add(n) {
        Some(end) if end <= buf.len() => Ok(end),
        _ => Err(CoderError::truncated(buf, pos, n)),
    }
}

/// Reads `N` bytes at `pos` into an array.
#[inline]
pub fn read_array<const N: usize>(buf: &[u8], pos: usize) -> Result<([u8; N], usize), CoderError> {
    let (s, p) = read_slice(buf, pos, N)?;
    // The slice has exactly N bytes, so the conversion cannot fail.
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Ok((a, p))
}

/// Reads a big-endian `i32` (iterable counts, window counts).
#[inline]
pub fn read_i32_be(buf: &[u8], pos: usize) -> Result<(i32, usize), CoderError> {
    read_array::<4>(buf, pos).map(|(a, p)| (i32::from_be_bytes(a), p))
}

/// Reads one byte.
#[inline]
pub fn read_u8(buf: &[u8], pos: usize) -> Result<(u8, usize), CoderError> {
    match buf.get(pos) {
        Some(&b) => Ok((b, pos + 1)),
        None => Err(CoderError::truncated(buf, pos, 1)),
    }
}

/// Appends nested-context bytes: a varint length, then the bytes.
#[inline]
pub fn write_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    write_varint_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: u64) {
        let mut out = Vec::new();
        write_varint_u64(&mut out, v);
        assert_eq!(out.len(), varint_len(v), "len of {v}");
        assert_eq!(read_varint_u64(&out, 0).unwrap(), (v, out.len()));
        assert_eq!(skip_varint(&out, 0).unwrap(), out.len());
    }

    #[test]
    fn varints_roundtrip() {
        for v in [
            0,
            1,
            127,
            128,
            200,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX / 2,
            u64::MAX,
        ] {
            roundtrip(v);
        }
        let mut out = Vec::new();
        write_varint_i64(&mut out, -1);
        assert_eq!(out.len(), 10);
        assert_eq!(read_varint_i64(&out, 0).unwrap(), (-1, 10));
    }

    #[test]
    fn varint_errors() {
        assert!(matches!(
            read_varint_u64(&[0x80, 0x80], 0),
            Err(CoderError::Truncated { offset: 2, .. })
        ));
        assert!(matches!(
            read_varint_u64(&[], 0),
            Err(CoderError::Truncated { .. })
        ));
        // 11 continuation bytes.
        assert!(matches!(
            read_varint_u64(&[0xff; 11], 0),
            Err(CoderError::BadVarint { offset: 0 })
        ));
        // 10th byte carrying more than the 64th bit.
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert!(matches!(
            read_varint_u64(&too_big, 0),
            Err(CoderError::BadVarint { .. })
        ));
        // A length bigger than what follows.
        assert!(matches!(
            read_len(&[5, 1, 2], 0),
            Err(CoderError::Truncated {
                offset: 1,
                needed: 5,
                available: 2
            })
        ));
    }
}
