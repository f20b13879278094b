//! Cutting state values into Get pages.
//!
//! The SDK decodes every page on its own, so a page must end on an element
//! boundary; it follows the continuation token for the next one.  A page
//! holds whole elements up to about [`MAX_GET_BYTES`], and always at least
//! one element, however big.

use bytes::{Bytes, BytesMut};

/// Most bytes returned by one Get unless a single element is bigger.
pub const MAX_GET_BYTES: usize = 2 << 20;

/// Concatenated encoded elements that remember where each element ends
/// (side inputs, assembled once and read by many bundles).
#[derive(Default)]
pub struct Paged {
    pub(crate) data: Vec<u8>,
    ends: Vec<usize>,
}

impl Paged {
    pub fn push(&mut self, element: &[u8]) {
        self.data.extend_from_slice(element);
        self.ends.push(self.data.len());
    }

    /// The page starting at the byte offset in `token` (empty: the start).
    pub fn page(&self, token: &[u8]) -> Result<(Bytes, Bytes), String> {
        let start = if token.is_empty() {
            0
        } else {
            parse_token(token)?
                .try_into()
                .map_err(|_| "bad continuation token")?
        };
        if start > self.data.len() {
            return Err("continuation token past the end of the state".into());
        }
        let first = self.ends.partition_point(|&e| e <= start);
        let limit = start + MAX_GET_BYTES;
        let last = self.ends[first..].partition_point(|&e| e <= limit) + first;
        let end = match last {
            l if l == first => self.ends.get(first).copied().unwrap_or(self.data.len()),
            l => self.ends[l - 1],
        };
        let next = if end < self.data.len() {
            end.to_string().into_bytes().into()
        } else {
            Bytes::new()
        };
        Ok((Bytes::copy_from_slice(&self.data[start..end]), next))
    }
}

/// Builds one page from a run of elements (or appended chunks, which end on
/// element boundaries too): takes elements while they fit, at least one.
/// Returns the page and how many elements it took.  A page of one element is
/// that element's `Bytes`, not a copy.
pub fn take_page<'a>(elements: impl IntoIterator<Item = &'a Bytes>) -> (Bytes, usize) {
    let mut it = elements.into_iter();
    let Some(first) = it.next() else {
        return (Bytes::new(), 0);
    };
    let mut size = first.len();
    let mut rest: Vec<&Bytes> = Vec::new();
    for e in it {
        if size + e.len() > MAX_GET_BYTES {
            break;
        }
        size += e.len();
        rest.push(e);
    }
    if rest.is_empty() {
        return (first.clone(), 1);
    }
    let mut page = BytesMut::with_capacity(size);
    page.extend_from_slice(first);
    for e in &rest {
        page.extend_from_slice(e);
    }
    (page.freeze(), 1 + rest.len())
}

/// A continuation token is a few decimal numbers separated by colons.
pub fn parse_token(token: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(token)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "bad continuation token".to_owned())
}

/// Splits a token of `N` colon-separated numbers.
pub fn parse_token_parts<const N: usize>(token: &[u8]) -> Result<[i128; N], String> {
    let bad = || "bad continuation token".to_owned();
    let text = std::str::from_utf8(token).map_err(|_| bad())?;
    let mut out = [0i128; N];
    let mut parts = text.split(':');
    for slot in &mut out {
        *slot = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}
