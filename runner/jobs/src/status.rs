//! Keeping gRPC status messages within what clients accept.
//!
//! A status message travels in the `grpc-message` header, and clients cap
//! header sizes (Python's gRPC at 8 KiB of metadata by default); a longer
//! message turns a clear error into an obscure protocol failure.  Anything
//! that may echo client input or long executor text goes through [`clip`].

/// Longest status message we send, in bytes.
pub(crate) const MAX_STATUS_BYTES: usize = 4000;

/// `text` cut to [`MAX_STATUS_BYTES`] at a character boundary, with a
/// marker when something was cut.
pub(crate) fn clip(text: &str) -> String {
    clip_to(text, MAX_STATUS_BYTES)
}

/// `text` cut to `max` bytes at a character boundary.
pub(crate) fn clip_to(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} more bytes]", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_at_char_boundaries() {
        assert_eq!(clip_to("short", 10), "short");
        assert_eq!(clip_to("ééé", 3), "é… [4 more bytes]");
        assert!(clip(&"x".repeat(100_000)).len() < MAX_STATUS_BYTES + 50);
    }
}
