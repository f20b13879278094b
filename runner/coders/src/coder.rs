//! The coder tree: a pipeline's coder, resolved from its components into
//! something the runner can skip, decode and encode with.
//!
//! Context matters in Beam: a value encoded *nested* must delimit itself
//! (bytes get a length prefix), while an *unnested* value owns the rest of
//! its buffer. Composite coders pass the outer context to their last
//! component only (kv's value, windowed_value's value, nullable's value);
//! everything else is nested. Elements on the data plane are nested.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use ferrobeam_proto::pipeline::v1::Components;

use crate::iterable::{decode_iterable, encode_iterable, skip_iterable};
use crate::pane::PaneInfo;
use crate::row::RowSchema;
use crate::timestamp::{read_timestamp, write_timestamp};
use crate::value::{Timer, TimerFiring, Value, WindowedValue};
use crate::varint::{
    read_array, read_i32_be, read_len, read_u8, read_varint_i64, skip_bytes, write_len_prefixed,
    write_varint_i64,
};
use crate::window::IntervalWindow;
use crate::CoderError;

/// URNs of Beam's standard coders.
pub mod urns {
    /// Bytes; nested: varint length prefix.
    pub const BYTES: &str = "beam:coder:bytes:v1";
    /// UTF-8 string; nested: varint length prefix.
    pub const STRING_UTF8: &str = "beam:coder:string_utf8:v1";
    /// One byte, 0 or 1.
    pub const BOOL: &str = "beam:coder:bool:v1";
    /// Signed 64-bit varint.
    pub const VARINT: &str = "beam:coder:varint:v1";
    /// Big-endian IEEE-754 double.
    pub const DOUBLE: &str = "beam:coder:double:v1";
    /// Key (nested) then value.
    pub const KV: &str = "beam:coder:kv:v1";
    /// Count-prefixed (or blocked) elements.
    pub const ITERABLE: &str = "beam:coder:iterable:v1";
    /// Varint length, then the component's unnested encoding.
    pub const LENGTH_PREFIX: &str = "beam:coder:length_prefix:v1";
    /// The global window: zero bytes.
    pub const GLOBAL_WINDOW: &str = "beam:coder:global_window:v1";
    /// Interval window: end timestamp, varint span.
    pub const INTERVAL_WINDOW: &str = "beam:coder:interval_window:v1";
    /// Timestamp, windows, pane, value.
    pub const WINDOWED_VALUE: &str = "beam:coder:windowed_value:v1";
    /// Just the value; timestamp, windows and pane are in the payload.
    pub const PARAM_WINDOWED_VALUE: &str = "beam:coder:param_windowed_value:v1";
    /// Timers on the data plane.
    pub const TIMER: &str = "beam:coder:timer:v1";
    /// Iterable whose tail may be a state token.
    pub const STATE_BACKED_ITERABLE: &str = "beam:coder:state_backed_iterable:v1";
    /// Max timestamp, then the window in its own coder.
    pub const CUSTOM_WINDOW: &str = "beam:coder:custom_window:v1";
    /// Schema'd row; the payload is a `Schema` proto.
    pub const ROW: &str = "beam:coder:row:v1";
    /// Shard id bytes, then the key.
    pub const SHARDED_KEY: &str = "beam:coder:sharded_key:v1";
    /// Null indicator byte, then the value.
    pub const NULLABLE: &str = "beam:coder:nullable:v1";

    /// How many component coders each standard URN takes, or `None` for
    /// URNs that are not standard coders.
    pub fn component_count(urn: &str) -> Option<usize> {
        Some(match urn {
            BYTES | STRING_UTF8 | BOOL | VARINT | DOUBLE | GLOBAL_WINDOW | INTERVAL_WINDOW
            | ROW => 0,
            ITERABLE
            | STATE_BACKED_ITERABLE
            | LENGTH_PREFIX
            | CUSTOM_WINDOW
            | SHARDED_KEY
            | NULLABLE => 1,
            KV | WINDOWED_VALUE | PARAM_WINDOWED_VALUE | TIMER => 2,
            _ => return None,
        })
    }
}

/// Coders nest at most this deep; deeper means a cycle in the components.
pub(crate) const MAX_DEPTH: usize = 64;

/// A coder resolved from a pipeline's components.
#[derive(Debug, Clone, PartialEq)]
pub enum Coder {
    /// `beam:coder:bytes:v1`
    Bytes,
    /// `beam:coder:string_utf8:v1`
    StringUtf8,
    /// `beam:coder:bool:v1`
    Bool,
    /// `beam:coder:varint:v1`
    Varint,
    /// `beam:coder:double:v1`
    Double,
    /// `beam:coder:kv:v1`
    Kv {
        /// Key coder (always nested).
        key: Box<Coder>,
        /// Value coder (in the outer context).
        value: Box<Coder>,
    },
    /// `beam:coder:iterable:v1`
    Iterable(Box<Coder>),
    /// `beam:coder:state_backed_iterable:v1`
    StateBackedIterable(Box<Coder>),
    /// `beam:coder:length_prefix:v1`
    LengthPrefix(Box<Coder>),
    /// `beam:coder:global_window:v1`
    GlobalWindow,
    /// `beam:coder:interval_window:v1`
    IntervalWindow,
    /// `beam:coder:custom_window:v1`, around the window's own coder.
    CustomWindow(Box<Coder>),
    /// `beam:coder:windowed_value:v1`
    WindowedValue {
        /// The element coder.
        value: Box<Coder>,
        /// The window coder.
        window: Box<Coder>,
    },
    /// `beam:coder:param_windowed_value:v1`
    ParamWindowedValue {
        /// The element coder.
        value: Box<Coder>,
        /// The window coder (used for the payload's windows).
        window: Box<Coder>,
        /// The constant timestamp, windows and pane from the payload.
        params: Arc<WindowedParams>,
    },
    /// `beam:coder:timer:v1`
    Timer {
        /// The user key coder.
        key: Box<Coder>,
        /// The window coder.
        window: Box<Coder>,
    },
    /// `beam:coder:row:v1`
    Row(Arc<RowSchema>),
    /// `beam:coder:sharded_key:v1`
    ShardedKey(Box<Coder>),
    /// `beam:coder:nullable:v1`
    Nullable(Box<Coder>),
    /// A coder the runner does not understand (SDK-specific, e.g. pickled
    /// Python objects). Its values are opaque and cannot be delimited: it
    /// must sit inside a `length_prefix` (see [`crate::wrap_unknown_coders`]).
    Unknown {
        /// The coder's URN ("" if it had no spec).
        urn: String,
        /// The coder's id in the components.
        id: String,
    },
}

/// The constant header of a `param_windowed_value:v1` coder, parsed from
/// its payload (a windowed value encoded with the same window coder).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowedParams {
    /// Timestamp in millis.
    pub timestamp: i64,
    /// Windows, as values of the window coder.
    pub windows: Vec<Value>,
    /// Number of windows.
    pub window_count: usize,
    /// The windows as encoded in the payload, count prefix included.
    pub windows_encoded: Bytes,
    /// The pane.
    pub pane: PaneInfo,
}

impl Coder {
    /// Resolves `coder_id` and its components from a pipeline's components.
    ///
    /// Standard coders with the wrong number of components or a bad payload
    /// are errors; coders with other URNs become [`Coder::Unknown`].
    pub fn from_components(components: &Components, coder_id: &str) -> Result<Coder, CoderError> {
        crate::resolve::resolve(components, coder_id)
    }

    /// The URN this coder was built from.
    pub fn urn(&self) -> &str {
        match self {
            Coder::Bytes => urns::BYTES,
            Coder::StringUtf8 => urns::STRING_UTF8,
            Coder::Bool => urns::BOOL,
            Coder::Varint => urns::VARINT,
            Coder::Double => urns::DOUBLE,
            Coder::Kv { .. } => urns::KV,
            Coder::Iterable(_) => urns::ITERABLE,
            Coder::StateBackedIterable(_) => urns::STATE_BACKED_ITERABLE,
            Coder::LengthPrefix(_) => urns::LENGTH_PREFIX,
            Coder::GlobalWindow => urns::GLOBAL_WINDOW,
            Coder::IntervalWindow => urns::INTERVAL_WINDOW,
            Coder::CustomWindow(_) => urns::CUSTOM_WINDOW,
            Coder::WindowedValue { .. } => urns::WINDOWED_VALUE,
            Coder::ParamWindowedValue { .. } => urns::PARAM_WINDOWED_VALUE,
            Coder::Timer { .. } => urns::TIMER,
            Coder::Row(_) => urns::ROW,
            Coder::ShardedKey(_) => urns::SHARDED_KEY,
            Coder::Nullable(_) => urns::NULLABLE,
            Coder::Unknown { urn, .. } => urn,
        }
    }

    /// Whether [`Coder::skip`] can delimit every value of this coder, i.e.
    /// no unknown coder (or unsupported row field) sits outside a
    /// `length_prefix`.
    pub fn is_skippable(&self) -> bool {
        match self {
            Coder::Bytes
            | Coder::StringUtf8
            | Coder::Bool
            | Coder::Varint
            | Coder::Double
            | Coder::GlobalWindow
            | Coder::IntervalWindow
            | Coder::LengthPrefix(_) => true,
            Coder::Kv { key: a, value: b }
            | Coder::WindowedValue {
                value: a,
                window: b,
            }
            | Coder::Timer { key: a, window: b } => a.is_skippable() && b.is_skippable(),
            Coder::Iterable(c)
            | Coder::StateBackedIterable(c)
            | Coder::CustomWindow(c)
            | Coder::ShardedKey(c)
            | Coder::Nullable(c)
            | Coder::ParamWindowedValue { value: c, .. } => c.is_skippable(),
            Coder::Row(s) => s.unsupported().is_none(),
            Coder::Unknown { .. } => false,
        }
    }

    /// The encoded size of every value, when it is the same for all values
    /// (global windows: 0, bools: 1, doubles: 8).
    pub fn fixed_size(&self) -> Option<usize> {
        match self {
            Coder::GlobalWindow => Some(0),
            Coder::Bool => Some(1),
            Coder::Double => Some(8),
            Coder::Kv { key, value } => Some(key.fixed_size()? + value.fixed_size()?),
            Coder::CustomWindow(w) => Some(8 + w.fixed_size()?),
            _ => None,
        }
    }

    /// Returns the end offset of the one nested-encoded value starting at
    /// `pos`, without allocating.
    ///
    /// This is how the runner splits a data-plane stream (elements
    /// concatenated, each nested) into elements. Fails on truncated input
    /// and on [`Coder::Unknown`] outside a length prefix.
    #[inline]
    pub fn skip(&self, buf: &[u8], pos: usize) -> Result<usize, CoderError> {
        match self {
            Coder::Bytes | Coder::StringUtf8 | Coder::LengthPrefix(_) => {
                read_len(buf, pos).map(|(n, p)| p + n)
            }
            Coder::Bool => skip_bytes(buf, pos, 1),
            Coder::Varint => crate::varint::skip_varint(buf, pos),
            Coder::Double => skip_bytes(buf, pos, 8),
            Coder::GlobalWindow => {
                if pos > buf.len() {
                    return Err(CoderError::truncated(buf, pos, 0));
                }
                Ok(pos)
            }
            Coder::IntervalWindow => crate::varint::skip_varint(buf, skip_bytes(buf, pos, 8)?),
            Coder::Kv { key, value } => value.skip(buf, key.skip(buf, pos)?),
            Coder::Iterable(e) | Coder::StateBackedIterable(e) => {
                skip_iterable(buf, pos, e.fixed_size(), |b, p| e.skip(b, p))
            }
            Coder::CustomWindow(w) => w.skip(buf, skip_bytes(buf, pos, 8)?),
            Coder::WindowedValue { value, window } => {
                let p = skip_bytes(buf, pos, 8)?;
                let p = skip_windows(window, buf, p)?;
                let p = PaneInfo::skip(buf, p)?;
                value.skip(buf, p)
            }
            Coder::ParamWindowedValue { value, .. } => value.skip(buf, pos),
            Coder::Timer { key, window } => {
                let p = key.skip(buf, pos)?;
                let (n, p) = read_len(buf, p)?; // dynamic timer tag
                let p = skip_windows(window, buf, p + n)?;
                let (clear, p) = read_u8(buf, p)?;
                match clear {
                    1 => Ok(p),
                    0 => PaneInfo::skip(buf, skip_bytes(buf, p, 16)?),
                    b => Err(CoderError::invalid(p - 1, format!("timer clear bit {b}"))),
                }
            }
            Coder::Row(s) => s.skip(buf, pos),
            Coder::ShardedKey(k) => {
                let (n, p) = read_len(buf, pos)?;
                k.skip(buf, p + n)
            }
            Coder::Nullable(c) => {
                let (ind, p) = read_u8(buf, pos)?;
                match ind {
                    0 => Ok(p),
                    1 => c.skip(buf, p),
                    b => Err(CoderError::invalid(pos, format!("null indicator {b}"))),
                }
            }
            Coder::Unknown { urn, id } => Err(CoderError::NotSkippable {
                urn: urn.clone(),
                id: id.clone(),
            }),
        }
    }

    /// For a `kv:v1` coder, the byte range of the (nested) key of the kv
    /// value at `pos`: what the runner groups and routes by.
    #[inline]
    pub fn kv_key_range(&self, buf: &[u8], pos: usize) -> Result<Range<usize>, CoderError> {
        match self {
            Coder::Kv { key, .. } => Ok(pos..key.skip(buf, pos)?),
            other => Err(CoderError::WrongCoder {
                expected: "kv",
                urn: other.urn().to_string(),
            }),
        }
    }

    /// Decodes `buf`, which must hold exactly one value.
    pub fn decode(&self, buf: &[u8], nested: bool) -> Result<Value, CoderError> {
        let (v, end) = self.decode_at(buf, 0, nested)?;
        if end != buf.len() {
            return Err(CoderError::TrailingBytes {
                offset: end,
                trailing: buf.len() - end,
            });
        }
        Ok(v)
    }

    /// Decodes the value at `pos`; returns it and the position after it.
    ///
    /// Unnested, the value may own the rest of `buf`. An unknown coder
    /// decodes only unnested, into [`Value::Bytes`] of the rest of the
    /// buffer: that is what `length_prefix` around it delimits.
    pub fn decode_at(
        &self,
        buf: &[u8],
        pos: usize,
        nested: bool,
    ) -> Result<(Value, usize), CoderError> {
        Ok(match self {
            Coder::Bytes => {
                let (s, p) = read_bytes(buf, pos, nested)?;
                (Value::Bytes(Bytes::copy_from_slice(s)), p)
            }
            Coder::StringUtf8 => {
                let (s, p) = read_bytes(buf, pos, nested)?;
                let s = std::str::from_utf8(s)
                    .map_err(|e| CoderError::invalid(pos, format!("invalid UTF-8: {e}")))?;
                (Value::String(s.to_string()), p)
            }
            Coder::Bool => {
                let (b, p) = read_u8(buf, pos)?;
                match b {
                    0 => (Value::Bool(false), p),
                    1 => (Value::Bool(true), p),
                    b => return Err(CoderError::invalid(pos, format!("bool byte {b}"))),
                }
            }
            Coder::Varint => {
                let (v, p) = read_varint_i64(buf, pos)?;
                (Value::Int(v), p)
            }
            Coder::Double => {
                let (a, p) = read_array::<8>(buf, pos)?;
                (Value::Double(f64::from_be_bytes(a)), p)
            }
            Coder::Kv { key, value } => {
                let (k, p) = key.decode_at(buf, pos, true)?;
                let (v, p) = value.decode_at(buf, p, nested)?;
                (Value::kv(k, v), p)
            }
            Coder::Iterable(e) | Coder::StateBackedIterable(e) => {
                decode_iterable(buf, pos, |b, p| e.decode_at(b, p, true))?
            }
            Coder::LengthPrefix(inner) => {
                let (n, p) = read_len(buf, pos)?;
                let end = p + n;
                // The inner value owns exactly the prefixed bytes.
                let (v, q) = inner.decode_at(&buf[..end], p, false)?;
                if q != end {
                    return Err(CoderError::TrailingBytes {
                        offset: q,
                        trailing: end - q,
                    });
                }
                (v, end)
            }
            Coder::GlobalWindow => (Value::GlobalWindow, pos),
            Coder::IntervalWindow => {
                let (w, p) = IntervalWindow::decode(buf, pos)?;
                (Value::IntervalWindow(w), p)
            }
            Coder::CustomWindow(w) => {
                let (max_timestamp, p) = read_timestamp(buf, pos)?;
                let (window, p) = w.decode_at(buf, p, nested)?;
                (
                    Value::CustomWindow {
                        max_timestamp,
                        window: Box::new(window),
                    },
                    p,
                )
            }
            Coder::WindowedValue { value, window } => {
                let (timestamp, p) = read_timestamp(buf, pos)?;
                let (windows, p) = decode_windows(window, buf, p)?;
                let (pane, p) = PaneInfo::decode(buf, p)?;
                let (v, p) = value.decode_at(buf, p, nested)?;
                (
                    Value::WindowedValue(Box::new(WindowedValue {
                        value: v,
                        timestamp,
                        windows,
                        pane,
                    })),
                    p,
                )
            }
            Coder::ParamWindowedValue { value, params, .. } => {
                let (v, p) = value.decode_at(buf, pos, nested)?;
                let wv = WindowedValue {
                    value: v,
                    timestamp: params.timestamp,
                    windows: params.windows.clone(),
                    pane: params.pane,
                };
                (Value::WindowedValue(Box::new(wv)), p)
            }
            Coder::Timer { key, window } => {
                let (user_key, p) = key.decode_at(buf, pos, true)?;
                let (tag, p) = read_bytes(buf, p, true)?;
                let dynamic_timer_tag = std::str::from_utf8(tag)
                    .map_err(|e| {
                        CoderError::invalid(
                            p - tag.len(),
                            format!("invalid UTF-8 in timer tag: {e}"),
                        )
                    })?
                    .to_string();
                let (windows, p) = decode_windows(window, buf, p)?;
                let (clear, p) = read_u8(buf, p)?;
                let (firing, p) = match clear {
                    1 => (None, p),
                    0 => {
                        let (fire_timestamp, p) = read_timestamp(buf, p)?;
                        let (hold_timestamp, p) = read_timestamp(buf, p)?;
                        let (pane, p) = PaneInfo::decode(buf, p)?;
                        (
                            Some(TimerFiring {
                                fire_timestamp,
                                hold_timestamp,
                                pane,
                            }),
                            p,
                        )
                    }
                    b => return Err(CoderError::invalid(p - 1, format!("timer clear bit {b}"))),
                };
                (
                    Value::Timer(Box::new(Timer {
                        user_key,
                        dynamic_timer_tag,
                        windows,
                        firing,
                    })),
                    p,
                )
            }
            Coder::Row(s) => {
                let (values, p) = s.decode(buf, pos)?;
                (Value::Row(values), p)
            }
            Coder::ShardedKey(k) => {
                let (shard, p) = read_bytes(buf, pos, true)?;
                let (key, p) = k.decode_at(buf, p, true)?;
                (
                    Value::ShardedKey {
                        shard_id: Bytes::copy_from_slice(shard),
                        key: Box::new(key),
                    },
                    p,
                )
            }
            Coder::Nullable(c) => {
                let (ind, p) = read_u8(buf, pos)?;
                match ind {
                    0 => (Value::Null, p),
                    1 => c.decode_at(buf, p, nested)?,
                    b => return Err(CoderError::invalid(pos, format!("null indicator {b}"))),
                }
            }
            Coder::Unknown { urn, id } => {
                if nested || pos > buf.len() {
                    return Err(CoderError::NotSkippable {
                        urn: urn.clone(),
                        id: id.clone(),
                    });
                }
                (Value::Bytes(Bytes::copy_from_slice(&buf[pos..])), buf.len())
            }
        })
    }

    /// Encodes `value` and returns the bytes.
    pub fn encode_to_vec(&self, value: &Value, nested: bool) -> Result<Vec<u8>, CoderError> {
        let mut out = Vec::new();
        self.encode(value, &mut out, nested)?;
        Ok(out)
    }

    /// Appends the encoding of `value`.
    ///
    /// An unknown coder encodes only unnested, writing [`Value::Bytes`]
    /// verbatim (the inverse of [`Coder::decode_at`]).
    /// `param_windowed_value` writes only the element: its timestamp,
    /// windows and pane are implied by the coder, as in Beam.
    pub fn encode(&self, value: &Value, out: &mut Vec<u8>, nested: bool) -> Result<(), CoderError> {
        let wrong = || CoderError::WrongValue {
            coder: self.urn().to_string(),
            found: value.kind(),
        };
        match (self, value) {
            (Coder::Bytes, Value::Bytes(b)) => write_bytes(out, b, nested),
            (Coder::StringUtf8, Value::String(s)) => write_bytes(out, s.as_bytes(), nested),
            (Coder::Bool, Value::Bool(b)) => out.push(*b as u8),
            (Coder::Varint, Value::Int(v)) => write_varint_i64(out, *v),
            (Coder::Double, Value::Double(d)) => out.extend_from_slice(&d.to_be_bytes()),
            (Coder::Kv { key, value: vc }, Value::Kv(k, v)) => {
                key.encode(k, out, true)?;
                vc.encode(v, out, nested)?;
            }
            (Coder::Iterable(e) | Coder::StateBackedIterable(e), v) => {
                encode_iterable(v, out, self.urn(), |x, o| e.encode(x, o, true))?
            }
            (Coder::LengthPrefix(inner), v) => {
                let mut tmp = Vec::new();
                inner.encode(v, &mut tmp, false)?;
                write_len_prefixed(out, &tmp);
            }
            (Coder::GlobalWindow, Value::GlobalWindow) => {}
            (Coder::IntervalWindow, Value::IntervalWindow(w)) => w.encode(out),
            (
                Coder::CustomWindow(wc),
                Value::CustomWindow {
                    max_timestamp,
                    window,
                },
            ) => {
                write_timestamp(out, *max_timestamp);
                wc.encode(window, out, nested)?;
            }
            (Coder::WindowedValue { value: vc, window }, Value::WindowedValue(wv)) => {
                write_timestamp(out, wv.timestamp);
                encode_windows(window, &wv.windows, out)?;
                wv.pane.encode(out);
                vc.encode(&wv.value, out, nested)?;
            }
            (Coder::ParamWindowedValue { value: vc, .. }, Value::WindowedValue(wv)) => {
                vc.encode(&wv.value, out, nested)?
            }
            (Coder::Timer { key, window }, Value::Timer(t)) => {
                key.encode(&t.user_key, out, true)?;
                write_bytes(out, t.dynamic_timer_tag.as_bytes(), true);
                encode_windows(window, &t.windows, out)?;
                match &t.firing {
                    None => out.push(1),
                    Some(f) => {
                        out.push(0);
                        write_timestamp(out, f.fire_timestamp);
                        write_timestamp(out, f.hold_timestamp);
                        f.pane.encode(out);
                    }
                }
            }
            (Coder::Row(s), Value::Row(values)) => s.encode(values, out)?,
            (Coder::ShardedKey(k), Value::ShardedKey { shard_id, key }) => {
                write_bytes(out, shard_id, true);
                k.encode(key, out, true)?;
            }
            (Coder::Nullable(_), Value::Null) => out.push(0),
            (Coder::Nullable(c), v) => {
                out.push(1);
                c.encode(v, out, nested)?;
            }
            (Coder::Unknown { urn, id }, Value::Bytes(b)) => {
                if nested {
                    return Err(CoderError::NotSkippable {
                        urn: urn.clone(),
                        id: id.clone(),
                    });
                }
                out.extend_from_slice(b);
            }
            _ => return Err(wrong()),
        }
        Ok(())
    }
}

/// Reads bytes: length-prefixed when nested, the rest of the buffer when not.
#[inline]
fn read_bytes(buf: &[u8], pos: usize, nested: bool) -> Result<(&[u8], usize), CoderError> {
    if nested {
        let (n, p) = read_len(buf, pos)?;
        Ok((&buf[p..p + n], p + n))
    } else if pos <= buf.len() {
        Ok((&buf[pos..], buf.len()))
    } else {
        Err(CoderError::truncated(buf, pos, 0))
    }
}

#[inline]
fn write_bytes(out: &mut Vec<u8>, b: &[u8], nested: bool) {
    if nested {
        write_len_prefixed(out, b);
    } else {
        out.extend_from_slice(b);
    }
}

/// Skips the windows of a windowed value or timer: an iterable of windows.
#[inline]
pub(crate) fn skip_windows(window: &Coder, buf: &[u8], pos: usize) -> Result<usize, CoderError> {
    match window {
        // The hot cases, without the generic iterable machinery.
        Coder::GlobalWindow => {
            let (n, p) = read_i32_be(buf, pos)?;
            if n < 0 {
                return skip_iterable(buf, pos, Some(0), |_, p| Ok(p));
            }
            Ok(p)
        }
        Coder::IntervalWindow => {
            let (n, mut p) = read_i32_be(buf, pos)?;
            if n < 0 {
                return skip_iterable(buf, pos, None, |b, p| window.skip(b, p));
            }
            for _ in 0..n {
                p = crate::varint::skip_varint(buf, skip_bytes(buf, p, 8)?)?;
            }
            Ok(p)
        }
        _ => skip_iterable(buf, pos, window.fixed_size(), |b, p| window.skip(b, p)),
    }
}

pub(crate) fn decode_windows(
    window: &Coder,
    buf: &[u8],
    pos: usize,
) -> Result<(Vec<Value>, usize), CoderError> {
    match decode_iterable(buf, pos, |b, p| window.decode_at(b, p, true))? {
        (Value::Iterable(ws), p) => Ok((ws, p)),
        _ => Err(CoderError::invalid(pos, "windows end in a state token")),
    }
}

fn encode_windows(window: &Coder, windows: &[Value], out: &mut Vec<u8>) -> Result<(), CoderError> {
    let n = i32::try_from(windows.len()).map_err(|_| CoderError::OutOfRange {
        coder: window.urn().to_string(),
        reason: "too many windows".into(),
    })?;
    out.extend_from_slice(&n.to_be_bytes());
    for w in windows {
        window.encode(w, out, true)?;
    }
    Ok(())
}
