//! The iterable wire format, shared by `iterable:v1`,
//! `state_backed_iterable:v1`, the windows of windowed values and timers,
//! and row ARRAY/ITERABLE fields.
//!
//! Known length: a big-endian `i32` count, then the elements (nested).
//! Unknown length: `i32` -1, then blocks of `varint count, elements`, ended
//! by a 0 count, or by a -1 count followed by a length-prefixed state token
//! when the rest of the iterable lives in runner state.

use bytes::Bytes;

use crate::value::Value;
use crate::varint::{read_i32_be, read_len, read_varint_i64, write_len_prefixed, write_varint_i64};
use crate::CoderError;

/// Returns the position after the iterable at `pos`.
///
/// `fixed` is the element size when every element has the same size
/// (windows in the global window take 0 bytes, bools 1, ...), which turns
/// the known-length case into one bounds check.
#[inline]
pub(crate) fn skip_iterable(
    buf: &[u8],
    pos: usize,
    fixed: Option<usize>,
    mut skip_elem: impl FnMut(&[u8], usize) -> Result<usize, CoderError>,
) -> Result<usize, CoderError> {
    let (count, mut p) = read_i32_be(buf, pos)?;
    if count >= 0 {
        if let Some(size) = fixed {
            let total = (count as usize).checked_mul(size).ok_or_else(|| CoderError::truncated(buf, p, usize::MAX))?;
            return crate::varint::skip_bytes(buf, p, total);
        }
        for _ in 0..count {
            p = skip_elem(buf, p)?;
        }
        return Ok(p);
    }
    if count != -1 {
        return Err(CoderError::invalid(pos, format!("iterable count {count}")));
    }
    loop {
        let at = p;
        let (block, q) = read_varint_i64(buf, p)?;
        p = q;
        match block {
            0 => return Ok(p),
            -1 => {
                let (len, q) = read_len(buf, p)?;
                return Ok(q + len);
            }
            n if n > 0 => {
                for _ in 0..n {
                    p = skip_elem(buf, p)?;
                }
            }
            n => return Err(CoderError::invalid(at, format!("iterable block count {n}"))),
        }
    }
}

/// Decodes the iterable at `pos` into [`Value::Iterable`], or
/// [`Value::StateBackedIterable`] when it ends in a state token.
pub(crate) fn decode_iterable(
    buf: &[u8],
    pos: usize,
    mut decode_elem: impl FnMut(&[u8], usize) -> Result<(Value, usize), CoderError>,
) -> Result<(Value, usize), CoderError> {
    let (count, mut p) = read_i32_be(buf, pos)?;
    if count >= 0 {
        // Never let a corrupt count drive the allocation: cap it by the
        // bytes left (elements of most coders take at least one byte).
        let mut out = Vec::with_capacity((count as usize).min(buf.len() - p + 1));
        for _ in 0..count {
            let (v, q) = decode_elem(buf, p)?;
            out.push(v);
            p = q;
        }
        return Ok((Value::Iterable(out), p));
    }
    if count != -1 {
        return Err(CoderError::invalid(pos, format!("iterable count {count}")));
    }
    let mut out = Vec::new();
    loop {
        let at = p;
        let (block, q) = read_varint_i64(buf, p)?;
        p = q;
        match block {
            0 => return Ok((Value::Iterable(out), p)),
            -1 => {
                let (len, q) = read_len(buf, p)?;
                let token = Bytes::copy_from_slice(&buf[q..q + len]);
                return Ok((Value::StateBackedIterable { prefix: out, state_token: token }, q + len));
            }
            n if n > 0 => {
                for _ in 0..n {
                    let (v, q) = decode_elem(buf, p)?;
                    out.push(v);
                    p = q;
                }
            }
            n => return Err(CoderError::invalid(at, format!("iterable block count {n}"))),
        }
    }
}

/// Encodes [`Value::Iterable`] with a known length, or
/// [`Value::StateBackedIterable`] in the unknown-length form ending in its
/// state token.
pub(crate) fn encode_iterable(
    value: &Value,
    out: &mut Vec<u8>,
    coder: &str,
    mut encode_elem: impl FnMut(&Value, &mut Vec<u8>) -> Result<(), CoderError>,
) -> Result<(), CoderError> {
    match value {
        Value::Iterable(elems) => {
            let n = i32::try_from(elems.len()).map_err(|_| CoderError::OutOfRange {
                coder: coder.to_string(),
                reason: format!("{} elements do not fit an i32 count", elems.len()),
            })?;
            out.extend_from_slice(&n.to_be_bytes());
            for e in elems {
                encode_elem(e, out)?;
            }
            Ok(())
        }
        Value::StateBackedIterable { prefix, state_token } => {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            if !prefix.is_empty() {
                write_varint_i64(out, prefix.len() as i64);
                for e in prefix {
                    encode_elem(e, out)?;
                }
            }
            write_varint_i64(out, -1);
            write_len_prefixed(out, state_token);
            Ok(())
        }
        other => Err(CoderError::WrongValue { coder: coder.to_string(), found: other.kind() }),
    }
}
