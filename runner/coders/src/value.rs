//! Structured values of the standard coders.
//!
//! The engine mostly moves opaque bytes; [`Value`] exists for the places
//! that need to look inside (tests against Beam's vectors, debugging,
//! native IO, test replacements that build elements). Its equality is
//! *encoding* equality: floats compare by bit pattern, so `NaN == NaN` and
//! `0.0 != -0.0`, exactly as their encodings do.

use bytes::Bytes;

use crate::pane::PaneInfo;
use crate::window::IntervalWindow;

/// A decoded value of some [`crate::Coder`].
#[derive(Debug, Clone)]
pub enum Value {
    /// A null: `nullable:v1`'s absent value, or a null row field.
    Null,
    /// `bytes:v1`, or the opaque contents of `length_prefix:v1` around a
    /// coder the runner does not know, or a row BYTES field.
    Bytes(Bytes),
    /// `string_utf8:v1`, or a row STRING field.
    String(String),
    /// `bool:v1`, or a row BOOLEAN field.
    Bool(bool),
    /// `varint:v1`, or a row BYTE/INT16/INT32/INT64 field.
    Int(i64),
    /// A row FLOAT field.
    Float(f32),
    /// `double:v1`, or a row DOUBLE field.
    Double(f64),
    /// `kv:v1`.
    Kv(Box<Value>, Box<Value>),
    /// `iterable:v1` or `state_backed_iterable:v1` (when fully inline), or a
    /// row ARRAY/ITERABLE field.
    Iterable(Vec<Value>),
    /// A state-backed iterable whose tail lives in runner state: the inline
    /// prefix, then the token to fetch the rest over the State API.
    StateBackedIterable {
        /// Elements sent inline.
        prefix: Vec<Value>,
        /// Token for the remaining elements.
        state_token: Bytes,
    },
    /// A row MAP field, in encoded order (maps may be non-deterministic).
    Map(Vec<(Value, Value)>),
    /// `global_window:v1`.
    GlobalWindow,
    /// `interval_window:v1`.
    IntervalWindow(IntervalWindow),
    /// `custom_window:v1`: a window of another coder prefixed by its max
    /// timestamp, so the runner can use the timestamp without the coder.
    CustomWindow {
        /// The window's max timestamp in millis.
        max_timestamp: i64,
        /// The window, in its own coder's value.
        window: Box<Value>,
    },
    /// `windowed_value:v1` or `param_windowed_value:v1`.
    WindowedValue(Box<WindowedValue>),
    /// `timer:v1`.
    Timer(Box<Timer>),
    /// `row:v1` (or a nested row field): fields in schema order, with
    /// [`Value::Null`] for nulls.
    Row(Vec<Value>),
    /// `sharded_key:v1`.
    ShardedKey {
        /// The shard id bytes.
        shard_id: Bytes,
        /// The user key.
        key: Box<Value>,
    },
    /// A row field of logical type `millis_instant`: millis since the epoch.
    Timestamp(i64),
    /// A row field of logical type `decimal`: `unscaled * 10^-scale`.
    Decimal {
        /// Number of digits after the decimal point.
        scale: i64,
        /// The unscaled value as a big-endian two's-complement integer
        /// (Java's `BigInteger.toByteArray`).
        unscaled: Bytes,
    },
}

/// The value of a `windowed_value:v1` coder.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowedValue {
    /// The element.
    pub value: Value,
    /// Event time in millis.
    pub timestamp: i64,
    /// The windows, as values of the window coder.
    pub windows: Vec<Value>,
    /// The pane.
    pub pane: PaneInfo,
}

/// The value of a `timer:v1` coder.
#[derive(Debug, Clone, PartialEq)]
pub struct Timer {
    /// The key the timer belongs to.
    pub user_key: Value,
    /// The timer family's dynamic tag ("" for static timers).
    pub dynamic_timer_tag: String,
    /// The windows the timer is set in.
    pub windows: Vec<Value>,
    /// `None` when the timer is cleared (Beam's clear bit).
    pub firing: Option<TimerFiring>,
}

/// When a set (not cleared) timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerFiring {
    /// When the timer fires, millis.
    pub fire_timestamp: i64,
    /// The output watermark hold, millis.
    pub hold_timestamp: i64,
    /// The pane of the timer.
    pub pane: PaneInfo,
}

impl Value {
    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bytes(_) => "bytes",
            Value::String(_) => "string",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Double(_) => "double",
            Value::Kv(..) => "kv",
            Value::Iterable(_) => "iterable",
            Value::StateBackedIterable { .. } => "state-backed iterable",
            Value::Map(_) => "map",
            Value::GlobalWindow => "global window",
            Value::IntervalWindow(_) => "interval window",
            Value::CustomWindow { .. } => "custom window",
            Value::WindowedValue(_) => "windowed value",
            Value::Timer(_) => "timer",
            Value::Row(_) => "row",
            Value::ShardedKey { .. } => "sharded key",
            Value::Timestamp(_) => "timestamp",
            Value::Decimal { .. } => "decimal",
        }
    }

    /// Shorthand for [`Value::Bytes`] from anything byte-like.
    pub fn bytes(b: impl Into<Bytes>) -> Value {
        Value::Bytes(b.into())
    }

    /// Shorthand for [`Value::Kv`].
    pub fn kv(k: Value, v: Value) -> Value {
        Value::Kv(Box::new(k), Box::new(v))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) | (GlobalWindow, GlobalWindow) => true,
            (Bytes(a), Bytes(b)) => a == b,
            (String(a), String(b)) => a == b,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (Timestamp(a), Timestamp(b)) => a == b,
            // Bitwise: equal values must have equal encodings.
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Double(a), Double(b)) => a.to_bits() == b.to_bits(),
            (Kv(ak, av), Kv(bk, bv)) => ak == bk && av == bv,
            (Iterable(a), Iterable(b)) => a == b,
            (
                StateBackedIterable {
                    prefix: ap,
                    state_token: at,
                },
                StateBackedIterable {
                    prefix: bp,
                    state_token: bt,
                },
            ) => ap == bp && at == bt,
            (Map(a), Map(b)) => a == b,
            (IntervalWindow(a), IntervalWindow(b)) => a == b,
            (
                CustomWindow {
                    max_timestamp: at,
                    window: aw,
                },
                CustomWindow {
                    max_timestamp: bt,
                    window: bw,
                },
            ) => at == bt && aw == bw,
            (WindowedValue(a), WindowedValue(b)) => a == b,
            (Timer(a), Timer(b)) => a == b,
            (Row(a), Row(b)) => a == b,
            (
                ShardedKey {
                    shard_id: a,
                    key: ak,
                },
                ShardedKey {
                    shard_id: b,
                    key: bk,
                },
            ) => a == b && ak == bk,
            (
                Decimal {
                    scale: a,
                    unscaled: au,
                },
                Decimal {
                    scale: b,
                    unscaled: bu,
                },
            ) => a == b && au == bu,
            _ => false,
        }
    }
}

impl Eq for Value {}
