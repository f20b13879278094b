//! A small, self-describing-enough binary encoding for snapshot entries
//! (timers, GroupByKey buffers, deferred work, ...): varint lengths and
//! fixed-width integers, nothing that needs a schema compiler.
//!
//! Why not serde + JSON: entries hold raw element bytes, often megabytes;
//! JSON would base64 them and double the checkpoint's size and time.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Result, StateError};

/// Appends values to a buffer.
#[derive(Default)]
pub struct Writer {
    buf: BytesMut,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.put_u8(v);
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    /// Unsigned LEB128.
    pub fn varint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.buf.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.put_u8(v as u8);
        self
    }

    pub fn len(&mut self, n: usize) -> &mut Self {
        self.varint(n as u64)
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.put_i64(v);
        self
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.len(v.len());
        self.buf.put_slice(v);
        self
    }

    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

/// Reads values back in the order they were written; byte strings are
/// zero-copy slices of the input.
pub struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
    /// Names the entry in error messages.
    entry: &'a str,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a Bytes, entry: &'a str) -> Self {
        Self {
            data,
            pos: 0,
            entry,
        }
    }

    pub fn error(&self, reason: impl Into<String>) -> StateError {
        StateError::Decode {
            entry: self.entry.to_owned(),
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.error(format!("truncated at byte {}", self.pos)))?;
        let range = self.pos..end;
        self.pos = end;
        Ok(range)
    }

    pub fn u8(&mut self) -> Result<u8> {
        let r = self.take(1)?;
        Ok(self.data[r.start])
    }

    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.u8()? != 0)
    }

    pub fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.error("varint longer than 64 bits"))
    }

    /// Reads a length or count prefix (not the reader's own length).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&mut self) -> Result<usize> {
        let n = self.varint()?;
        // Every counted thing takes at least a byte, so a count beyond the
        // bytes left is corruption, not a reason to allocate.
        let left = self.data.len().saturating_sub(self.pos);
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .ok_or_else(|| self.error(format!("length {n} but only {left} bytes left")))
    }

    pub fn i64(&mut self) -> Result<i64> {
        let r = self.take(8)?;
        Ok(i64::from_be_bytes(
            self.data[r].try_into().expect("8 bytes"),
        ))
    }

    pub fn bytes(&mut self) -> Result<Bytes> {
        let n = self.len()?;
        let r = self.take(n)?;
        Ok(self.data.slice(r))
    }

    pub fn string(&mut self) -> Result<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.error("string is not UTF-8"))
    }

    pub fn is_done(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Fails unless everything was read: a longer entry means a format
    /// this version does not understand.
    pub fn finish(self) -> Result<()> {
        if self.is_done() {
            Ok(())
        } else {
            Err(self.error(format!(
                "{} unread bytes at the end",
                self.data.len() - self.pos
            )))
        }
    }
}

/// FNV-1a, 64 bits: a checksum for snapshot files (detects truncation and
/// bit rot; not a defence against deliberate tampering).
pub fn fnv1a(data: &[u8], mut hash: u64) -> u64 {
    for &b in data {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut w = Writer::new();
        w.u8(7)
            .bool(true)
            .varint(300)
            .i64(-5)
            .bytes(b"abc")
            .str("é");
        let data = w.finish();
        let mut r = Reader::new(&data, "t");
        assert_eq!(r.u8().unwrap(), 7);
        assert!(r.bool().unwrap());
        assert_eq!(r.varint().unwrap(), 300);
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(&r.bytes().unwrap()[..], b"abc");
        assert_eq!(r.string().unwrap(), "é");
        r.finish().unwrap();
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let mut w = Writer::new();
        w.bytes(b"abcdef");
        let data = w.finish().slice(..4);
        let mut r = Reader::new(&data, "t");
        let err = r.bytes().unwrap_err().to_string();
        assert!(err.contains("bytes left"), "{err}");
    }
}
