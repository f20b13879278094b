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

/// How many more elements than bytes left a decoded iterable may have.
///
/// Elements of most coders take at least a byte; only zero-size ones
/// (global windows) can outnumber the bytes left. No real value has tens
/// of thousands of those, while a corrupt i32 count would make decoding
/// allocate gigabytes. (Skipping them is free, so `skip` has no limit.)
const MAX_ZERO_SIZE_ELEMENTS: usize = 1 << 16;

/// Skips `n` elements starting at `p`.
///
/// Skipping is a pure function of `(buf, position)`, so once one element
/// takes no bytes, all the following ones start at the same position and
/// take none either: stop there instead of looping up to 2^63 times on a
/// corrupt count.
#[inline]
fn skip_n(
    buf: &[u8],
    mut p: usize,
    n: u64,
    fixed: Option<usize>,
    skip_elem: &mut impl FnMut(&[u8], usize) -> Result<usize, CoderError>,
) -> Result<usize, CoderError> {
    if let Some(size) = fixed {
        let total = usize::try_from(n).ok().and_then(|n| n.checked_mul(size));
        return match total {
            Some(total) => crate::varint::skip_bytes(buf, p, total),
            None => Err(CoderError::truncated(buf, p, usize::MAX)),
        };
    }
    for _ in 0..n {
        let q = skip_elem(buf, p)?;
        if q == p {
            break;
        }
        p = q;
    }
    Ok(p)
}

/// Returns the position after the iterable at `pos`.
///
/// `fixed` is the element size when every element has the same size
/// (windows in the global window take 0 bytes, bools 1, ...), which turns
/// a run of elements into one bounds check.
#[inline]
pub(crate) fn skip_iterable(
    buf: &[u8],
    pos: usize,
    fixed: Option<usize>,
    mut skip_elem: impl FnMut(&[u8], usize) -> Result<usize, CoderError>,
) -> Result<usize, CoderError> {
    let (count, mut p) = read_i32_be(buf, pos)?;
    if count >= 0 {
        return skip_n(buf, p, count as u64, fixed, &mut skip_elem);
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
            n if n > 0 => p = skip_n(buf, p, n as u64, fixed, &mut skip_elem)?,
            n => return Err(CoderError::invalid(at, format!("iterable block count {n}"))),
        }
    }
}

/// Decodes `n` more elements at `p` into `out`, refusing element counts
/// the buffer could only hold as tens of thousands of zero-size elements.
fn decode_n(
    buf: &[u8],
    mut p: usize,
    n: u64,
    out: &mut Vec<Value>,
    decode_elem: &mut impl FnMut(&[u8], usize) -> Result<(Value, usize), CoderError>,
) -> Result<usize, CoderError> {
    let remaining = buf.len() - p;
    let limit = (remaining as u64).saturating_add(MAX_ZERO_SIZE_ELEMENTS as u64);
    if n > limit.saturating_sub(out.len() as u64) {
        return Err(CoderError::invalid(
            p,
            format!("{n} more iterable elements with {remaining} bytes left"),
        ));
    }
    out.reserve((n as usize).min(remaining + 1));
    for _ in 0..n {
        let (v, q) = decode_elem(buf, p)?;
        out.push(v);
        p = q;
    }
    Ok(p)
}

/// Decodes the iterable at `pos` into [`Value::Iterable`], or
/// [`Value::StateBackedIterable`] when it ends in a state token.
pub(crate) fn decode_iterable(
    buf: &[u8],
    pos: usize,
    mut decode_elem: impl FnMut(&[u8], usize) -> Result<(Value, usize), CoderError>,
) -> Result<(Value, usize), CoderError> {
    let (count, mut p) = read_i32_be(buf, pos)?;
    let mut out = Vec::new();
    if count >= 0 {
        p = decode_n(buf, p, count as u64, &mut out, &mut decode_elem)?;
        return Ok((Value::Iterable(out), p));
    }
    if count != -1 {
        return Err(CoderError::invalid(pos, format!("iterable count {count}")));
    }
    loop {
        let at = p;
        let (block, q) = read_varint_i64(buf, p)?;
        p = q;
        match block {
            0 => return Ok((Value::Iterable(out), p)),
            -1 => {
                let (len, q) = read_len(buf, p)?;
                let token = Bytes::copy_from_slice(&buf[q..q + len]);
                return Ok((
                    Value::StateBackedIterable {
                        prefix: out,
                        state_token: token,
                    },
                    q + len,
                ));
            }
            n if n > 0 => p = decode_n(buf, p, n as u64, &mut out, &mut decode_elem)?,
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
        Value::StateBackedIterable {
            prefix,
            state_token,
        } => {
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
        other => Err(CoderError::WrongValue {
            coder: coder.to_string(),
            found: other.kind(),
        }),
    }
}
