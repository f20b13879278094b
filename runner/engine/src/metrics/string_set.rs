//! Merging `beam:metrics:set_string:v1` payloads: an iterable
//! (`beam:coder:iterable:v1`) of UTF-8 strings, each length-prefixed.
//!
//! The union is capped like the SDKs cap a string set: once the strings'
//! total length passes 1,000,000 characters no further string is added (the
//! string that crosses the limit is kept).  Without the cap, one huge set per
//! bundle would grow the job's set without end.

use std::collections::HashSet;

use ferrobeam_coders::varint::{
    read_i32_be, read_len, read_slice, read_varint_u64, write_varint_u64,
};

use super::MergeError;

/// Beam's `StringSetData._STRING_SET_SIZE_LIMIT`, in characters.
pub const STRING_SET_SIZE_LIMIT: usize = 1_000_000;

fn malformed(e: impl std::fmt::Display) -> MergeError {
    MergeError::Malformed(format!("string set: {e}"))
}

/// The strings of one payload, in order.  Accepts both forms of Beam's
/// iterable coder: a big-endian count, or -1 followed by varint-counted
/// blocks ending with an empty block.
fn decode(payload: &[u8]) -> Result<Vec<&str>, MergeError> {
    let (count, mut pos) = read_i32_be(payload, 0).map_err(malformed)?;
    let mut out = Vec::new();
    let mut read_strings = |n: u64, pos: &mut usize| -> Result<(), MergeError> {
        for _ in 0..n {
            let (len, p) = read_len(payload, *pos).map_err(malformed)?;
            let (bytes, p) = read_slice(payload, p, len).map_err(malformed)?;
            out.push(std::str::from_utf8(bytes).map_err(malformed)?);
            *pos = p;
        }
        Ok(())
    };
    if count >= 0 {
        read_strings(count as u64, &mut pos)?;
    } else if count == -1 {
        loop {
            let (n, p) = read_varint_u64(payload, pos).map_err(malformed)?;
            pos = p;
            if n == 0 {
                break;
            }
            read_strings(n, &mut pos)?;
        }
    } else {
        return Err(malformed(format!("negative count {count}")));
    }
    if pos != payload.len() {
        return Err(malformed(format!("{} trailing bytes", payload.len() - pos)));
    }
    Ok(out)
}

/// The union of two string sets, `a`'s strings first.
pub(super) fn merge(a: &[u8], b: &[u8]) -> Result<Vec<u8>, MergeError> {
    let (a, b) = (decode(a)?, decode(b)?);
    let mut seen: HashSet<&str> = HashSet::with_capacity(a.len() + b.len());
    let mut kept: Vec<&str> = Vec::with_capacity(a.len() + b.len());
    let mut size = 0usize;
    for s in a.into_iter().chain(b) {
        if size > STRING_SET_SIZE_LIMIT {
            tracing::debug!("string set metric reached {STRING_SET_SIZE_LIMIT} characters; dropping further strings");
            break;
        }
        if seen.insert(s) {
            size += s.chars().count();
            kept.push(s);
        }
    }
    let mut out = Vec::with_capacity(4 + kept.iter().map(|s| s.len() + 2).sum::<usize>());
    out.extend_from_slice(&(kept.len() as u32).to_be_bytes());
    for s in kept {
        write_varint_u64(&mut out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(items: &[&str]) -> Vec<u8> {
        let mut out = (items.len() as u32).to_be_bytes().to_vec();
        for s in items {
            write_varint_u64(&mut out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    #[test]
    fn union_keeps_first_seen_order() {
        let m = merge(&encode(&["b", "a"]), &encode(&["c", "a"])).unwrap();
        assert_eq!(decode(&m).unwrap(), ["b", "a", "c"]);
    }

    #[test]
    fn reads_the_chunked_iterable_form() {
        // -1, then a block of 2, a block of 1, and the empty block.
        let mut chunked = (-1i32).to_be_bytes().to_vec();
        chunked.extend_from_slice(&[2, 1, b'x', 1, b'y', 1, 1, b'z', 0]);
        assert_eq!(decode(&chunked).unwrap(), ["x", "y", "z"]);
        let m = merge(&chunked, &encode(&["x", "w"])).unwrap();
        assert_eq!(decode(&m).unwrap(), ["x", "y", "z", "w"]);
    }

    #[test]
    fn stops_growing_past_the_size_limit() {
        let big = "é".repeat(STRING_SET_SIZE_LIMIT / 2);
        let big2 = "ü".repeat(STRING_SET_SIZE_LIMIT / 2 + 1);
        let m = merge(&encode(&[&big]), &encode(&[&big2, "after"])).unwrap();
        // The string crossing the limit (counted in characters, not bytes) is kept; later ones are not.
        assert_eq!(decode(&m).unwrap(), [big.as_str(), big2.as_str()]);
        // 600k two-byte characters: over the limit in bytes, not in characters.
        let wide = "é".repeat(600_000);
        let m = merge(&encode(&[&wide]), &encode(&["under"])).unwrap();
        assert_eq!(
            decode(&m).unwrap().len(),
            2,
            "multi-byte characters count once"
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(
            merge(&[0, 0, 0, 2, 1, b'a'], &encode(&[])).is_err(),
            "missing element"
        );
        assert!(
            merge(&[0, 0, 0, 1, 1, 0xff], &encode(&[])).is_err(),
            "not UTF-8"
        );
        assert!(
            merge(&[0, 0, 0, 0, 7], &encode(&[])).is_err(),
            "trailing bytes"
        );
    }
}
