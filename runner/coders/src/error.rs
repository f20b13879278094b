//! The one error type of this crate.
//!
//! Errors carry byte offsets and coder URNs/ids because the runner reports
//! them to users about data produced by some SDK: "truncated at offset 17 in
//! coder X" is actionable, "decode failed" is not.

/// Everything that can go wrong while building, skipping, decoding or
/// encoding with a [`crate::Coder`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoderError {
    /// The input ended before the value did.
    #[error("truncated input: needed {needed} more byte(s) at offset {offset}, but only {available} remain")]
    Truncated {
        /// Offset in the buffer where the missing bytes were expected.
        offset: usize,
        /// How many bytes were needed there.
        needed: usize,
        /// How many bytes the buffer still had from `offset`.
        available: usize,
    },

    /// A varint ran over 10 bytes or over 64 bits.
    #[error("malformed varint at offset {offset}")]
    BadVarint {
        /// Offset of the varint's first byte.
        offset: usize,
    },

    /// The bytes are not a valid encoding for this coder.
    #[error("invalid data at offset {offset}: {reason}")]
    InvalidData {
        /// Offset where the problem was detected.
        offset: usize,
        /// What was wrong.
        reason: String,
    },

    /// Extra bytes followed a complete value where the whole buffer was
    /// supposed to be one value.
    #[error("{trailing} trailing byte(s) after a complete value ending at offset {offset}")]
    TrailingBytes {
        /// Where the value ended.
        offset: usize,
        /// How many bytes were left over.
        trailing: usize,
    },

    /// The runner cannot find where a value of this coder ends: its format
    /// is SDK-specific. Wrap it with `beam:coder:length_prefix:v1`
    /// (see [`crate::wrap_unknown_coders`]).
    #[error("coder {id:?} ({urn}) is not understood by the runner, so its values cannot be skipped or decoded in a nested context; wrap it in beam:coder:length_prefix:v1")]
    NotSkippable {
        /// URN of the coder.
        urn: String,
        /// Id of the coder in the pipeline components, if known.
        id: String,
    },

    /// A coder id was referenced but is not in the pipeline components.
    #[error("coder {id:?} is not defined in the pipeline components")]
    MissingCoder {
        /// The missing id.
        id: String,
    },

    /// A coder has the wrong number of component coders for its URN.
    #[error("coder {id:?} ({urn}) needs {expected} component coder(s), found {found}")]
    BadComponents {
        /// Id of the coder.
        id: String,
        /// URN of the coder.
        urn: String,
        /// Number of components the URN requires.
        expected: usize,
        /// Number of components it has.
        found: usize,
    },

    /// A coder's payload (row schema, param_windowed_value header) is invalid.
    #[error("coder {id:?} ({urn}) has an invalid payload: {reason}")]
    BadPayload {
        /// Id of the coder.
        id: String,
        /// URN of the coder.
        urn: String,
        /// What was wrong.
        reason: String,
    },

    /// Coders nest deeper than any real pipeline does; most likely a cycle
    /// in the components.
    #[error("coder {id:?} nests more than {limit} levels deep (cycle in the pipeline's coders?)")]
    TooDeep {
        /// The coder at which the limit was hit.
        id: String,
        /// The nesting limit.
        limit: usize,
    },

    /// A [`crate::Value`] of the wrong shape was given to `encode`.
    #[error("cannot encode a {found} value with {coder}")]
    WrongValue {
        /// The coder (URN or schema type) that was encoding.
        coder: String,
        /// The kind of value it was given.
        found: &'static str,
    },

    /// A value is out of the range its encoding can represent.
    #[error("{coder}: {reason}")]
    OutOfRange {
        /// The coder (URN or schema type) that was encoding.
        coder: String,
        /// What was out of range.
        reason: String,
    },

    /// A windowed-value helper was called on a coder that is not
    /// `windowed_value` or `param_windowed_value` (or a kv helper on a
    /// non-kv coder).
    #[error("expected a {expected} coder, found {urn}")]
    WrongCoder {
        /// What kind of coder the helper needs.
        expected: &'static str,
        /// URN of the coder it got.
        urn: String,
    },
}

impl CoderError {
    /// Whether the buffer simply ended before the value did.
    ///
    /// Beam's data plane may split an element across `Data` messages, so
    /// when [`crate::Coder::skip`] fails this way the runner should keep
    /// the tail and retry once more bytes arrive; any other error means
    /// the bytes are corrupt or the coder is wrong.
    pub fn is_truncated(&self) -> bool {
        matches!(self, CoderError::Truncated { .. })
    }

    /// Builds a [`CoderError::Truncated`] for a read of `needed` bytes at
    /// `offset` in `buf`.
    #[cold]
    pub(crate) fn truncated(buf: &[u8], offset: usize, needed: usize) -> Self {
        CoderError::Truncated {
            offset,
            needed,
            available: buf.len().saturating_sub(offset),
        }
    }

    /// Builds a [`CoderError::InvalidData`].
    #[cold]
    pub(crate) fn invalid(offset: usize, reason: impl Into<String>) -> Self {
        CoderError::InvalidData {
            offset,
            reason: reason.into(),
        }
    }
}
