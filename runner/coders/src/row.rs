//! `beam:coder:row:v1`: schema'd rows, the payload being a `Schema` proto.
//!
//! A row is: varint field count, a null bitmap (varint byte length, then
//! bits in field order, least significant bit first; length 0 when nothing
//! is null), then every non-null field, nested, in encoding-position order.
//! Top-level nullability is the bitmap; nullable array elements, map keys
//! and values and logical-type representations carry a 1-byte null
//! indicator instead, as `nullable:v1` does.
//!
//! Logical types travel as their representation, except the two Beam
//! special-cases: `millis_instant` (an 8-byte timestamp) and `decimal`
//! (varint scale, then the unscaled big integer as length-prefixed bytes).
//! Python's `pythonsdk_any` fields are pickled with an SDK coder the runner
//! cannot delimit, so rows containing them are not skippable and get
//! wrapped in `length_prefix` like any unknown coder.

use std::sync::Arc;

use bytes::Bytes;
use ferrobeam_proto::pipeline::v1 as pb;
use pb::field_type::TypeInfo;

use crate::iterable::{decode_iterable, encode_iterable, skip_iterable};
use crate::timestamp::{read_timestamp, write_timestamp};
use crate::value::Value;
use crate::varint::{
    read_array, read_i32_be, read_len, read_u8, read_varint_u64, skip_bytes, write_len_prefixed,
    write_varint_i64, write_varint_u64,
};
use crate::CoderError;

/// Logical type URN encoded as an 8-byte Beam timestamp.
pub const MILLIS_INSTANT_URN: &str = "beam:logical_type:millis_instant:v1";
/// Logical type URN encoded as (scale, big integer).
pub const DECIMAL_URN: &str = "beam:logical_type:decimal:v1";
/// Python's "any object" logical type: pickled, not delimitable by the runner.
pub const PYTHON_ANY_URN: &str = "beam:logical:pythonsdk_any:v1";

/// A row schema, prepared for coding.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSchema {
    /// The schema's id (a UUID in practice).
    pub id: String,
    /// Fields in schema order (the order of [`Value::Row`]'s entries).
    pub fields: Vec<RowField>,
    /// Field indices in the order their values are encoded.
    encoding_order: Vec<usize>,
    /// Why some field cannot be coded by the runner, if one cannot.
    unsupported: Option<String>,
}

/// One field of a [`RowSchema`].
#[derive(Debug, Clone, PartialEq)]
pub struct RowField {
    /// The field's name.
    pub name: String,
    /// The field's type.
    pub ty: FieldType,
}

/// A field type: a kind and whether it may be null.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldType {
    /// Whether the value may be null.
    pub nullable: bool,
    /// What the value is.
    pub kind: FieldKind,
}

/// The kinds of field values, as the row coder encodes them.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldKind {
    /// One byte.
    Byte,
    /// Big-endian 2 bytes.
    Int16,
    /// Varint of the 32-bit value.
    Int32,
    /// Varint.
    Int64,
    /// Big-endian IEEE-754 single.
    Float,
    /// Big-endian IEEE-754 double.
    Double,
    /// Length-prefixed UTF-8.
    String,
    /// One byte, 0 or 1.
    Boolean,
    /// Length-prefixed bytes.
    Bytes,
    /// An iterable of the element type.
    Array(Box<FieldType>),
    /// An iterable of the element type.
    Iterable(Box<FieldType>),
    /// Big-endian i32 count, then key/value pairs.
    Map(Box<FieldType>, Box<FieldType>),
    /// A nested row (no length prefix: a row delimits itself).
    Row(Arc<RowSchema>),
    /// `millis_instant`: an 8-byte Beam timestamp.
    MillisInstant,
    /// `decimal`: varint scale, then length-prefixed big-endian two's
    /// complement unscaled value.
    Decimal,
    /// Any other logical type: encoded as its representation.
    Logical {
        /// The logical type's URN.
        urn: String,
        /// The representation type that is actually encoded.
        representation: Box<FieldType>,
    },
    /// A type the runner cannot code; the reason says which.
    Unsupported(String),
}

impl RowSchema {
    /// Prepares a schema proto for coding.
    ///
    /// Fails only for schemas that are malformed (duplicate encoding
    /// positions); types the runner cannot code become
    /// [`FieldKind::Unsupported`] so the coder can still be recognised and
    /// wrapped.
    pub fn from_proto(schema: &pb::Schema) -> Result<RowSchema, String> {
        let fields: Vec<RowField> = schema
            .fields
            .iter()
            .map(|f| {
                Ok(RowField {
                    name: f.name.clone(),
                    ty: field_type_from_proto(f.r#type.as_ref())?,
                })
            })
            .collect::<Result<_, String>>()?;
        let mut encoding_order: Vec<usize> = (0..fields.len()).collect();
        if schema.encoding_positions_set {
            encoding_order.sort_by_key(|&i| schema.fields[i].encoding_position);
            let mut positions: Vec<i32> =
                schema.fields.iter().map(|f| f.encoding_position).collect();
            positions.sort_unstable();
            if positions.windows(2).any(|w| w[0] == w[1]) {
                return Err(format!(
                    "schema {} has duplicate encoding positions",
                    schema.id
                ));
            }
        }
        let unsupported = fields.iter().find_map(|f| {
            f.ty.unsupported()
                .map(|why| format!("field {:?}: {why}", f.name))
        });
        Ok(RowSchema {
            id: schema.id.clone(),
            fields,
            encoding_order,
            unsupported,
        })
    }

    /// Why the runner cannot code this schema's rows, or `None` if it can.
    pub fn unsupported(&self) -> Option<&str> {
        self.unsupported.as_deref()
    }

    /// Index of the field called `name`.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    fn not_skippable(&self) -> CoderError {
        CoderError::NotSkippable {
            urn: format!(
                "beam:coder:row:v1 ({})",
                self.unsupported.as_deref().unwrap_or("")
            ),
            id: self.id.clone(),
        }
    }

    /// Reads the field count and null bitmap; returns
    /// `(count, bitmap, position after them)`.
    #[inline]
    fn read_header<'a>(
        &self,
        buf: &'a [u8],
        pos: usize,
    ) -> Result<(usize, &'a [u8], usize), CoderError> {
        let (nvals, p) = read_varint_u64(buf, pos)?;
        // Extra encoded fields (a newer schema) cannot be skipped without
        // their types, so unlike Python (which leaves them unread) we refuse.
        if nvals > self.fields.len() as u64 {
            return Err(CoderError::invalid(
                pos,
                format!(
                    "row has {nvals} fields but schema {} has {}",
                    self.id,
                    self.fields.len()
                ),
            ));
        }
        let (mask_len, p) = read_len(buf, p)?;
        Ok((nvals as usize, &buf[p..p + mask_len], p + mask_len))
    }

    /// Returns the position after the row at `pos`.
    pub fn skip(&self, buf: &[u8], pos: usize) -> Result<usize, CoderError> {
        if self.unsupported.is_some() {
            return Err(self.not_skippable());
        }
        let (nvals, mask, mut p) = self.read_header(buf, pos)?;
        for &f in &self.encoding_order[..nvals] {
            if !is_null(mask, f) {
                p = skip_kind(&self.fields[f].ty.kind, buf, p)?;
            }
        }
        Ok(p)
    }

    /// Decodes the row at `pos` into its fields, in schema order.
    pub fn decode(&self, buf: &[u8], pos: usize) -> Result<(Vec<Value>, usize), CoderError> {
        if self.unsupported.is_some() {
            return Err(self.not_skippable());
        }
        let (nvals, mask, mut p) = self.read_header(buf, pos)?;
        // Fields missing from the encoding (an older schema) are null.
        let mut values = vec![Value::Null; self.fields.len()];
        for &f in &self.encoding_order[..nvals] {
            if !is_null(mask, f) {
                let (v, q) = decode_kind(&self.fields[f].ty.kind, buf, p)?;
                values[f] = v;
                p = q;
            }
        }
        Ok((values, p))
    }

    /// Appends the encoded row; `values` are in schema order.
    pub fn encode(&self, values: &[Value], out: &mut Vec<u8>) -> Result<(), CoderError> {
        if self.unsupported.is_some() {
            return Err(self.not_skippable());
        }
        let n = self.fields.len();
        if values.len() != n {
            return Err(CoderError::OutOfRange {
                coder: format!("row schema {}", self.id),
                reason: format!("{} values for {n} fields", values.len()),
            });
        }
        write_varint_u64(out, n as u64);
        if values.iter().any(|v| matches!(v, Value::Null)) {
            let mut mask = vec![0u8; n.div_ceil(8)];
            for (i, v) in values.iter().enumerate() {
                if matches!(v, Value::Null) {
                    if !self.fields[i].ty.nullable {
                        return Err(CoderError::OutOfRange {
                            coder: format!("row schema {}", self.id),
                            reason: format!("null in non-nullable field {:?}", self.fields[i].name),
                        });
                    }
                    mask[i / 8] |= 1 << (i % 8);
                }
            }
            write_len_prefixed(out, &mask);
        } else {
            out.push(0);
        }
        for &f in &self.encoding_order {
            if !matches!(values[f], Value::Null) {
                encode_kind(&self.fields[f].ty.kind, &values[f], out)?;
            }
        }
        Ok(())
    }
}

impl FieldType {
    /// The reason the runner cannot code this type, if any.
    fn unsupported(&self) -> Option<&str> {
        match &self.kind {
            FieldKind::Unsupported(why) => Some(why),
            FieldKind::Array(e) | FieldKind::Iterable(e) => e.unsupported(),
            FieldKind::Map(k, v) => k.unsupported().or_else(|| v.unsupported()),
            FieldKind::Row(s) => s.unsupported(),
            FieldKind::Logical { representation, .. } => representation.unsupported(),
            _ => None,
        }
    }
}

#[inline]
fn is_null(mask: &[u8], field: usize) -> bool {
    mask.get(field >> 3)
        .is_some_and(|b| b & (1 << (field & 7)) != 0)
}

fn field_type_from_proto(t: Option<&pb::FieldType>) -> Result<FieldType, String> {
    let Some(t) = t else {
        return Ok(FieldType {
            nullable: true,
            kind: FieldKind::Unsupported("field without a type".into()),
        });
    };
    let sub = |t: &Option<Box<pb::FieldType>>| field_type_from_proto(t.as_deref()).map(Box::new);
    let kind = match &t.type_info {
        None => FieldKind::Unsupported("field type without type_info".into()),
        Some(TypeInfo::AtomicType(a)) => match pb::AtomicType::try_from(*a) {
            Ok(pb::AtomicType::Byte) => FieldKind::Byte,
            Ok(pb::AtomicType::Int16) => FieldKind::Int16,
            Ok(pb::AtomicType::Int32) => FieldKind::Int32,
            Ok(pb::AtomicType::Int64) => FieldKind::Int64,
            Ok(pb::AtomicType::Float) => FieldKind::Float,
            Ok(pb::AtomicType::Double) => FieldKind::Double,
            Ok(pb::AtomicType::String) => FieldKind::String,
            Ok(pb::AtomicType::Boolean) => FieldKind::Boolean,
            Ok(pb::AtomicType::Bytes) => FieldKind::Bytes,
            _ => FieldKind::Unsupported(format!("atomic type {a}")),
        },
        Some(TypeInfo::ArrayType(a)) => FieldKind::Array(sub(&a.element_type)?),
        Some(TypeInfo::IterableType(a)) => FieldKind::Iterable(sub(&a.element_type)?),
        Some(TypeInfo::MapType(m)) => FieldKind::Map(sub(&m.key_type)?, sub(&m.value_type)?),
        Some(TypeInfo::RowType(r)) => match &r.schema {
            Some(s) => FieldKind::Row(Arc::new(RowSchema::from_proto(s)?)),
            None => FieldKind::Unsupported("row type without a schema".into()),
        },
        Some(TypeInfo::LogicalType(l)) => match l.urn.as_str() {
            MILLIS_INSTANT_URN => FieldKind::MillisInstant,
            DECIMAL_URN => FieldKind::Decimal,
            PYTHON_ANY_URN => FieldKind::Unsupported(format!(
                "logical type {PYTHON_ANY_URN} is pickled by the SDK"
            )),
            urn => match &l.representation {
                Some(r) => FieldKind::Logical {
                    urn: urn.to_string(),
                    representation: sub(&Some(r.clone()))?,
                },
                None => {
                    FieldKind::Unsupported(format!("logical type {urn} without a representation"))
                }
            },
        },
    };
    Ok(FieldType {
        nullable: t.nullable,
        kind,
    })
}

/// Fixed encoded size of a (non-null) kind, for fast iterable skipping.
fn fixed_size(ty: &FieldType) -> Option<usize> {
    if ty.nullable {
        return None;
    }
    match &ty.kind {
        FieldKind::Byte | FieldKind::Boolean => Some(1),
        FieldKind::Int16 => Some(2),
        FieldKind::Float => Some(4),
        FieldKind::Double | FieldKind::MillisInstant => Some(8),
        FieldKind::Logical { representation, .. } => fixed_size(representation),
        _ => None,
    }
}

/// Skips a value of `ty` inside an array or map, where nullable values
/// carry a 1-byte null indicator.
fn skip_type(ty: &FieldType, buf: &[u8], pos: usize) -> Result<usize, CoderError> {
    if ty.nullable {
        let (ind, p) = read_u8(buf, pos)?;
        return match ind {
            0 => Ok(p),
            1 => skip_kind(&ty.kind, buf, p),
            b => Err(CoderError::invalid(pos, format!("null indicator {b}"))),
        };
    }
    skip_kind(&ty.kind, buf, pos)
}

fn skip_kind(kind: &FieldKind, buf: &[u8], pos: usize) -> Result<usize, CoderError> {
    match kind {
        FieldKind::Byte | FieldKind::Boolean => skip_bytes(buf, pos, 1),
        FieldKind::Int16 => skip_bytes(buf, pos, 2),
        FieldKind::Float => skip_bytes(buf, pos, 4),
        FieldKind::Double | FieldKind::MillisInstant => skip_bytes(buf, pos, 8),
        FieldKind::Int32 | FieldKind::Int64 => crate::varint::skip_varint(buf, pos),
        FieldKind::String | FieldKind::Bytes => read_len(buf, pos).map(|(n, p)| p + n),
        FieldKind::Array(e) | FieldKind::Iterable(e) => {
            skip_iterable(buf, pos, fixed_size(e), |b, p| skip_type(e, b, p))
        }
        FieldKind::Map(k, v) => {
            let (n, mut p) = read_map_count(buf, pos)?;
            for _ in 0..n {
                p = skip_type(k, buf, p)?;
                p = skip_type(v, buf, p)?;
            }
            Ok(p)
        }
        FieldKind::Row(s) => s.skip(buf, pos),
        FieldKind::Decimal => {
            let p = crate::varint::skip_varint(buf, pos)?;
            read_len(buf, p).map(|(n, p)| p + n)
        }
        FieldKind::Logical { representation, .. } => skip_type(representation, buf, pos),
        FieldKind::Unsupported(why) => Err(CoderError::NotSkippable {
            urn: format!("row field type ({why})"),
            id: String::new(),
        }),
    }
}

fn read_map_count(buf: &[u8], pos: usize) -> Result<(usize, usize), CoderError> {
    let (n, p) = read_i32_be(buf, pos)?;
    if n < 0 {
        return Err(CoderError::invalid(pos, format!("map size {n}")));
    }
    Ok((n as usize, p))
}

fn decode_type(ty: &FieldType, buf: &[u8], pos: usize) -> Result<(Value, usize), CoderError> {
    if ty.nullable {
        let (ind, p) = read_u8(buf, pos)?;
        return match ind {
            0 => Ok((Value::Null, p)),
            1 => decode_kind(&ty.kind, buf, p),
            b => Err(CoderError::invalid(pos, format!("null indicator {b}"))),
        };
    }
    decode_kind(&ty.kind, buf, pos)
}

fn decode_kind(kind: &FieldKind, buf: &[u8], pos: usize) -> Result<(Value, usize), CoderError> {
    Ok(match kind {
        FieldKind::Byte => {
            let (b, p) = read_u8(buf, pos)?;
            (Value::Int(b as i64), p)
        }
        FieldKind::Int16 => {
            let (a, p) = read_array::<2>(buf, pos)?;
            (Value::Int(i16::from_be_bytes(a) as i64), p)
        }
        FieldKind::Int32 => {
            // Beam writes the 32-bit pattern as an unsigned varint.
            let (v, p) = read_varint_u64(buf, pos)?;
            (Value::Int(v as u32 as i32 as i64), p)
        }
        FieldKind::Int64 => {
            let (v, p) = read_varint_u64(buf, pos)?;
            (Value::Int(v as i64), p)
        }
        FieldKind::Float => {
            let (a, p) = read_array::<4>(buf, pos)?;
            (Value::Float(f32::from_be_bytes(a)), p)
        }
        FieldKind::Double => {
            let (a, p) = read_array::<8>(buf, pos)?;
            (Value::Double(f64::from_be_bytes(a)), p)
        }
        FieldKind::String => {
            let (n, p) = read_len(buf, pos)?;
            let s = std::str::from_utf8(&buf[p..p + n])
                .map_err(|e| CoderError::invalid(p, format!("invalid UTF-8: {e}")))?;
            (Value::String(s.to_string()), p + n)
        }
        FieldKind::Boolean => {
            let (b, p) = read_u8(buf, pos)?;
            match b {
                0 => (Value::Bool(false), p),
                1 => (Value::Bool(true), p),
                b => return Err(CoderError::invalid(pos, format!("boolean byte {b}"))),
            }
        }
        FieldKind::Bytes => {
            let (n, p) = read_len(buf, pos)?;
            (Value::Bytes(Bytes::copy_from_slice(&buf[p..p + n])), p + n)
        }
        FieldKind::Array(e) | FieldKind::Iterable(e) => {
            decode_iterable(buf, pos, |b, p| decode_type(e, b, p))?
        }
        FieldKind::Map(k, v) => {
            let (n, mut p) = read_map_count(buf, pos)?;
            let mut entries = Vec::with_capacity(n.min(buf.len() - p));
            for _ in 0..n {
                let (key, q) = decode_type(k, buf, p)?;
                let (val, q) = decode_type(v, buf, q)?;
                entries.push((key, val));
                p = q;
            }
            (Value::Map(entries), p)
        }
        FieldKind::Row(s) => {
            let (values, p) = s.decode(buf, pos)?;
            (Value::Row(values), p)
        }
        FieldKind::MillisInstant => {
            let (t, p) = read_timestamp(buf, pos)?;
            (Value::Timestamp(t), p)
        }
        FieldKind::Decimal => {
            let (scale, p) = crate::varint::read_varint_i64(buf, pos)?;
            let (n, p) = read_len(buf, p)?;
            (
                Value::Decimal {
                    scale,
                    unscaled: Bytes::copy_from_slice(&buf[p..p + n]),
                },
                p + n,
            )
        }
        FieldKind::Logical { representation, .. } => decode_type(representation, buf, pos)?,
        FieldKind::Unsupported(why) => {
            return Err(CoderError::NotSkippable {
                urn: format!("row field type ({why})"),
                id: String::new(),
            })
        }
    })
}

fn encode_type(ty: &FieldType, value: &Value, out: &mut Vec<u8>) -> Result<(), CoderError> {
    if ty.nullable {
        if matches!(value, Value::Null) {
            out.push(0);
            return Ok(());
        }
        out.push(1);
    }
    encode_kind(&ty.kind, value, out)
}

fn kind_name(kind: &FieldKind) -> String {
    let name = match kind {
        FieldKind::Byte => "BYTE",
        FieldKind::Int16 => "INT16",
        FieldKind::Int32 => "INT32",
        FieldKind::Int64 => "INT64",
        FieldKind::Float => "FLOAT",
        FieldKind::Double => "DOUBLE",
        FieldKind::String => "STRING",
        FieldKind::Boolean => "BOOLEAN",
        FieldKind::Bytes => "BYTES",
        FieldKind::Array(_) => "ARRAY",
        FieldKind::Iterable(_) => "ITERABLE",
        FieldKind::Map(..) => "MAP",
        FieldKind::Row(_) => "ROW",
        FieldKind::MillisInstant => MILLIS_INSTANT_URN,
        FieldKind::Decimal => DECIMAL_URN,
        FieldKind::Logical { urn, .. } => urn,
        FieldKind::Unsupported(why) => why,
    };
    format!("row field of type {name}")
}

fn out_of_range(kind: &FieldKind, v: i64) -> CoderError {
    CoderError::OutOfRange {
        coder: kind_name(kind),
        reason: format!("{v} does not fit"),
    }
}

fn encode_kind(kind: &FieldKind, value: &Value, out: &mut Vec<u8>) -> Result<(), CoderError> {
    let wrong = || CoderError::WrongValue {
        coder: kind_name(kind),
        found: value.kind(),
    };
    match (kind, value) {
        (FieldKind::Byte, Value::Int(v)) => {
            // Python reads bytes unsigned, Java signed: accept both ranges.
            if !(-128..=255).contains(v) {
                return Err(out_of_range(kind, *v));
            }
            out.push(*v as u8);
        }
        (FieldKind::Int16, Value::Int(v)) => {
            let s = i16::try_from(*v).map_err(|_| out_of_range(kind, *v))?;
            out.extend_from_slice(&s.to_be_bytes());
        }
        (FieldKind::Int32, Value::Int(v)) => {
            let s = i32::try_from(*v).map_err(|_| out_of_range(kind, *v))?;
            write_varint_u64(out, s as u32 as u64);
        }
        (FieldKind::Int64, Value::Int(v)) => write_varint_i64(out, *v),
        (FieldKind::Float, Value::Float(f)) => out.extend_from_slice(&f.to_be_bytes()),
        (FieldKind::Double, Value::Double(f)) => out.extend_from_slice(&f.to_be_bytes()),
        (FieldKind::String, Value::String(s)) => write_len_prefixed(out, s.as_bytes()),
        (FieldKind::Boolean, Value::Bool(b)) => out.push(*b as u8),
        (FieldKind::Bytes, Value::Bytes(b)) => write_len_prefixed(out, b),
        (FieldKind::Array(e) | FieldKind::Iterable(e), v) => {
            encode_iterable(v, out, &kind_name(kind), |x, o| encode_type(e, x, o))?
        }
        (FieldKind::Map(k, v), Value::Map(entries)) => {
            let n = i32::try_from(entries.len())
                .map_err(|_| out_of_range(kind, entries.len() as i64))?;
            out.extend_from_slice(&n.to_be_bytes());
            for (key, val) in entries {
                encode_type(k, key, out)?;
                encode_type(v, val, out)?;
            }
        }
        (FieldKind::Row(s), Value::Row(values)) => s.encode(values, out)?,
        (FieldKind::MillisInstant, Value::Timestamp(t)) => write_timestamp(out, *t),
        (FieldKind::Decimal, Value::Decimal { scale, unscaled }) => {
            write_varint_i64(out, *scale);
            write_len_prefixed(out, unscaled);
        }
        (FieldKind::Logical { representation, .. }, v) => encode_type(representation, v, out)?,
        (FieldKind::Unsupported(why), _) => {
            return Err(CoderError::NotSkippable {
                urn: format!("row field type ({why})"),
                id: String::new(),
            })
        }
        _ => return Err(wrong()),
    }
    Ok(())
}
