//! GroupByKey over windows the runner cannot read (length-prefixed custom
//! window coders), and over windows merged by a custom merging WindowFn.

use std::collections::HashMap;

use bytes::Bytes;
use ferrobeam_coders::{Coder, IntervalWindow, PaneInfo, Value, WindowedValue};
use ferrobeam_engine::gbk::{group_by_key, group_by_key_merged};
use ferrobeam_engine::window_merge::{windows_per_key, MergedWindows};
use ferrobeam_engine::wire::WireFormat;
use ferrobeam_proto::pipeline::v1::{self as pb, output_time, Components, FunctionSpec};

/// `KV<string, varint>` in windows of a pickled (opaque) window coder, which
/// the graph wraps in a length prefix, and in interval windows.
fn components() -> Components {
    let mut c = Components::default();
    for (id, urn, comps) in [
        ("str", "beam:coder:string_utf8:v1", vec![]),
        ("varint", "beam:coder:varint:v1", vec![]),
        ("kv", "beam:coder:kv:v1", vec!["str", "varint"]),
        ("iter", "beam:coder:iterable:v1", vec!["varint"]),
        ("kv_iter", "beam:coder:kv:v1", vec!["str", "iter"]),
        ("pickled", "beam:coder:pickled_python:v1", vec![]),
        ("lp_pickled", "beam:coder:length_prefix:v1", vec!["pickled"]),
        ("iw", "beam:coder:interval_window:v1", vec![]),
        (
            "wv_custom",
            "beam:coder:windowed_value:v1",
            vec!["kv", "lp_pickled"],
        ),
        (
            "wv_custom_out",
            "beam:coder:windowed_value:v1",
            vec!["kv_iter", "lp_pickled"],
        ),
        (
            "wv_interval",
            "beam:coder:windowed_value:v1",
            vec!["kv", "iw"],
        ),
        (
            "wv_interval_out",
            "beam:coder:windowed_value:v1",
            vec!["kv_iter", "iw"],
        ),
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

fn coder(id: &str) -> Coder {
    Coder::from_components(&components(), id).unwrap()
}

fn windowing(output_time: output_time::Enum) -> pb::WindowingStrategy {
    pb::WindowingStrategy {
        window_fn: Some(FunctionSpec {
            urn: "beam:window_fn:pickled_python:v1".into(),
            payload: Default::default(),
        }),
        output_time: output_time as i32,
        ..Default::default()
    }
}

/// Encodes elements (timestamp, window value, key, value) with `wire`.
fn elements(wire: &str, items: &[(i64, Value, &str, i64)]) -> Bytes {
    let c = coder(wire);
    let mut out = Vec::new();
    for (ts, w, k, v) in items {
        let wv = WindowedValue {
            value: Value::kv(Value::String((*k).into()), Value::Int(*v)),
            timestamp: *ts,
            windows: vec![w.clone()],
            pane: PaneInfo::NO_FIRING,
        };
        c.encode(&Value::WindowedValue(Box::new(wv)), &mut out, true)
            .unwrap();
    }
    out.into()
}

/// (key, window, sorted values, timestamp) of every grouped output.
fn grouped(wire: &str, chunks: &[Bytes]) -> Vec<(String, Value, Vec<i64>, i64)> {
    let c = coder(wire);
    let mut out = Vec::new();
    for chunk in chunks {
        let mut pos = 0;
        while pos < chunk.len() {
            let (v, p) = c.decode_at(chunk, pos, true).unwrap();
            pos = p;
            let Value::WindowedValue(wv) = v else {
                panic!()
            };
            let Value::Kv(k, vs) = wv.value else { panic!() };
            let (Value::String(k), Value::Iterable(vs)) = (*k, *vs) else {
                panic!()
            };
            let mut vs: Vec<i64> = vs
                .into_iter()
                .map(|v| if let Value::Int(i) = v { i } else { panic!() })
                .collect();
            vs.sort();
            out.push((k, wv.windows[0].clone(), vs, wv.timestamp));
        }
    }
    out.sort_by(|a, b| (&a.0, &a.2).cmp(&(&b.0, &b.2)));
    out
}

fn opaque(name: &str) -> Value {
    Value::Bytes(Bytes::copy_from_slice(name.as_bytes()))
}

#[test]
fn opaque_windows_group_by_their_bytes() {
    let input = [elements(
        "wv_custom",
        &[
            (5, opaque("red"), "a", 1),
            (3, opaque("black"), "a", 2),
            (7, opaque("red"), "a", 3),
            (1, opaque("red"), "b", 4),
        ],
    )];
    let format = WireFormat::new(&components(), "wv_custom").unwrap();
    let earliest = group_by_key(
        &input,
        &format,
        &windowing(output_time::Enum::EarliestInPane),
    )
    .unwrap();
    assert_eq!(
        grouped("wv_custom_out", &earliest),
        vec![
            ("a".into(), opaque("red"), vec![1, 3], 5),
            ("a".into(), opaque("black"), vec![2], 3),
            ("b".into(), opaque("red"), vec![4], 1),
        ]
    );
    let latest =
        group_by_key(&input, &format, &windowing(output_time::Enum::LatestInPane)).unwrap();
    assert_eq!(grouped("wv_custom_out", &latest)[0].3, 7);
    // The end of an opaque window is unknown: the latest input stands in.
    let eow = group_by_key(&input, &format, &windowing(output_time::Enum::EndOfWindow)).unwrap();
    let times: Vec<i64> = grouped("wv_custom_out", &eow).iter().map(|g| g.3).collect();
    assert_eq!(times, vec![7, 3, 1]);
}

#[test]
fn merged_windows_group_under_their_merge_result() {
    let w = |s, e| Value::IntervalWindow(IntervalWindow::new(s, e));
    let input = [elements(
        "wv_interval",
        &[
            (0, w(0, 10), "a", 1),
            (6, w(6, 16), "a", 2),
            (20, w(20, 30), "a", 3),
            (6, w(6, 16), "b", 4),
        ],
    )];
    let format = WireFormat::new(&components(), "wv_interval").unwrap();
    // Each key's distinct windows, in arrival order.
    let per_key = windows_per_key(&input, &format).unwrap();
    let enc = |s, e| {
        let mut b = Vec::new();
        IntervalWindow::new(s, e).encode(&mut b);
        Bytes::from(b)
    };
    let key = |k: &str| {
        Bytes::from(
            coder("str")
                .encode_to_vec(&Value::String(k.into()), true)
                .unwrap(),
        )
    };
    assert_eq!(
        per_key,
        vec![
            (key("a"), vec![enc(0, 10), enc(6, 16), enc(20, 30)]),
            (key("b"), vec![enc(6, 16)])
        ]
    );

    // What the SDK would answer: a's first two windows merge into [0, 16).
    let mut merged = MergedWindows::new();
    merged.insert(
        key("a"),
        HashMap::from([(enc(0, 10), enc(0, 16)), (enc(6, 16), enc(0, 16))]),
    );
    for (output_time, a_time) in [
        (output_time::Enum::EndOfWindow, 15),
        (output_time::Enum::EarliestInPane, 0),
        (output_time::Enum::LatestInPane, 6),
    ] {
        let out =
            group_by_key_merged(&input, &format, &windowing(output_time), Some(&merged)).unwrap();
        let got = grouped("wv_interval_out", &out);
        assert_eq!(
            got[0],
            ("a".into(), w(0, 16), vec![1, 2], a_time),
            "{output_time:?}"
        );
        assert_eq!(got[1].1, w(20, 30));
        // Key b's [6, 16) is not a's: it stays unmerged.
        assert_eq!((got[2].0.as_str(), &got[2].1), ("b", &w(6, 16)));
    }
}
