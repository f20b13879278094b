//! Real element bytes for engine tests, built and read with ferrobeam_coders.

#![allow(dead_code)]

use bytes::Bytes;
use ferrobeam_coders::{
    encode_windowed_value, Coder, IntervalWindow, PaneInfo, Value, WindowRef, WindowedValue,
};
use ferrobeam_engine::wire::WireFormat;
use ferrobeam_proto::pipeline::v1::{self as pb, Components, FunctionSpec};

/// Coders of `KV<string, varint>` elements and their grouped form, in the
/// global and interval windows.  Keys are wrapped in a length prefix as the
/// graph does for SDK coders, to make sure the engine never assumes keys
/// are bare.
pub fn components() -> Components {
    let mut c = Components::default();
    for (id, urn, comps) in [
        ("str", "beam:coder:string_utf8:v1", vec![]),
        ("varint", "beam:coder:varint:v1", vec![]),
        ("lp_str", "beam:coder:length_prefix:v1", vec!["str"]),
        ("kv", "beam:coder:kv:v1", vec!["lp_str", "varint"]),
        ("iter", "beam:coder:iterable:v1", vec!["varint"]),
        ("kv_iter", "beam:coder:kv:v1", vec!["lp_str", "iter"]),
        ("gw", "beam:coder:global_window:v1", vec![]),
        ("iw", "beam:coder:interval_window:v1", vec![]),
        (
            "wv_global",
            "beam:coder:windowed_value:v1",
            vec!["kv", "gw"],
        ),
        (
            "wv_interval",
            "beam:coder:windowed_value:v1",
            vec!["kv", "iw"],
        ),
        (
            "wv_global_out",
            "beam:coder:windowed_value:v1",
            vec!["kv_iter", "gw"],
        ),
        (
            "wv_interval_out",
            "beam:coder:windowed_value:v1",
            vec!["kv_iter", "iw"],
        ),
        ("wv_str", "beam:coder:windowed_value:v1", vec!["str", "gw"]),
    ] {
        c.coders.insert(
            id.into(),
            pb::Coder {
                spec: Some(FunctionSpec {
                    urn: urn.into(),
                    payload: Default::default(),
                }),
                component_coder_ids: comps.into_iter().map(String::from).collect(),
            },
        );
    }
    c
}

pub fn coder(id: &str) -> Coder {
    Coder::from_components(&components(), id).unwrap()
}

pub fn format(id: &str) -> WireFormat {
    WireFormat::new(&components(), id).unwrap()
}

pub fn kv(k: &str, v: i64) -> Value {
    Value::kv(Value::String(k.into()), Value::Int(v))
}

/// Appends one `KV<string, varint>` element in the given windows.
pub fn push(out: &mut Vec<u8>, ts: i64, windows: &[WindowRef<'_>], k: &str, v: i64) {
    let value = coder("kv").encode_to_vec(&kv(k, v), true).unwrap();
    encode_windowed_value(out, ts, windows, &PaneInfo::NO_FIRING, &value);
}

pub fn global(elements: &[(i64, &str, i64)]) -> Bytes {
    let mut out = Vec::new();
    for &(ts, k, v) in elements {
        push(&mut out, ts, &[WindowRef::Global], k, v);
    }
    out.into()
}

pub fn iw(start: i64, end: i64) -> WindowRef<'static> {
    WindowRef::Interval(IntervalWindow::new(start, end))
}

/// Decodes every element of a data-plane chunk.
pub fn decode_all(coder_id: &str, chunk: &[u8]) -> Vec<WindowedValue> {
    let c = coder(coder_id);
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < chunk.len() {
        let (v, p) = c.decode_at(chunk, pos, true).unwrap();
        pos = p;
        match v {
            Value::WindowedValue(wv) => out.push(*wv),
            other => panic!("not a windowed value: {other:?}"),
        }
    }
    out
}

/// A grouped output element, made comparable: (key, sorted values,
/// timestamp, windows).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grouped {
    pub key: String,
    pub windows: Vec<(i64, i64)>,
    pub values: Vec<i64>,
    pub timestamp: i64,
}

pub fn grouped(coder_id: &str, chunks: &[Bytes]) -> Vec<Grouped> {
    let mut out = Vec::new();
    for chunk in chunks {
        for wv in decode_all(coder_id, chunk) {
            assert!(wv.pane.is_first && wv.pane.is_last, "{:?}", wv.pane);
            assert_eq!(wv.pane.timing, ferrobeam_coders::Timing::OnTime);
            let windows = wv
                .windows
                .iter()
                .map(|w| match w {
                    Value::GlobalWindow => (i64::MIN, i64::MAX),
                    Value::IntervalWindow(w) => (w.start, w.end),
                    other => panic!("{other:?}"),
                })
                .collect();
            let Value::Kv(k, v) = wv.value else {
                panic!("{:?}", wv.value)
            };
            let Value::String(key) = *k else {
                panic!("{k:?}")
            };
            let values = sorted_ints(*v);
            out.push(Grouped {
                key,
                windows,
                values,
                timestamp: wv.timestamp,
            });
        }
    }
    out.sort();
    out
}

/// A grouped output's iterable of ints, sorted.
pub fn sorted_ints(iterable: Value) -> Vec<i64> {
    let Value::Iterable(vs) = iterable else {
        panic!("{iterable:?}")
    };
    let mut values: Vec<i64> = vs
        .into_iter()
        .map(|v| match v {
            Value::Int(i) => i,
            other => panic!("{other:?}"),
        })
        .collect();
    values.sort();
    values
}
