//! Beam's standard coders, as the runner needs them.
//!
//! Elements cross the data plane as windowed values: a timestamp, windows,
//! a pane, then the value. The runner decodes only what it needs — the
//! timestamp and windows to window and trigger, the key to group and route
//! — and moves everything else as opaque bytes. So this crate is built
//! around three operations on a [`Coder`] resolved from the pipeline:
//!
//! - [`Coder::skip`]: find where one nested value ends, without allocating,
//!   to split a data-plane stream into elements;
//! - [`Coder::windowed_header`] and [`encode_windowed_value`]: read and
//!   write an element's timestamp, windows and pane without copying;
//! - [`wrap_unknown_coders`]: rewrite a coder so that every SDK-specific
//!   part sits inside a length prefix, which makes the first two possible.
//!
//! Full [`Coder::decode`] / [`Coder::encode`] to structured [`Value`]s cover
//! every standard coder and are checked against Beam's cross-language
//! vectors (`standard_coders.yaml`) in `tests/standard_coders.rs`.

#![warn(missing_docs)]

mod coder;
mod error;
mod iterable;
mod pane;
mod resolve;
mod row;
mod timestamp;
mod value;
pub mod varint;
mod window;
mod windowed;
mod wrap;

pub use coder::{urns, Coder, WindowedParams};
pub use error::CoderError;
pub use pane::{PaneInfo, Timing};
pub use row::{
    FieldKind, FieldType, RowField, RowSchema, DECIMAL_URN, MILLIS_INSTANT_URN, PYTHON_ANY_URN,
};
pub use timestamp::{
    decode_timestamp, encode_timestamp, read_timestamp, write_timestamp,
    GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS, MAX_TIMESTAMP_MILLIS, MIN_TIMESTAMP_MILLIS,
};
pub use value::{Timer, TimerFiring, Value, WindowedValue};
pub use window::{IntervalWindow, WindowRef};
pub use windowed::{
    encode_windowed_value, encode_windowed_value_raw, WindowedHeader, Windows, WindowsIter,
};
pub use wrap::wrap_unknown_coders;
