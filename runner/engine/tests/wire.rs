//! Taking data-plane elements apart without decoding values.

mod common;

use bytes::Bytes;
use common::*;
use ferrobeam_coders::{encode_windowed_value, IntervalWindow, PaneInfo, Timing, Value, WindowRef};
use ferrobeam_engine::wire::{write_element, WireFormat};
use ferrobeam_proto::pipeline::v1 as pb;

#[test]
fn parse_finds_timestamp_windows_value_and_key() {
    let mut buf = Vec::new();
    push(&mut buf, -5, &[iw(0, 10), iw(5, 15)], "key", 300);
    let second = buf.len();
    push(&mut buf, 1234, &[iw(-100, 100)], "", -1);
    let fmt = format("wv_interval");

    let e = fmt.parse(&buf, 0).unwrap();
    assert_eq!(e.range, 0..second);
    assert_eq!(e.timestamp, -5);
    assert_eq!(e.windows.len(), 2);
    assert_eq!(
        IntervalWindow::decode(&buf[e.windows[0].clone()], 0)
            .unwrap()
            .0,
        IntervalWindow::new(0, 10)
    );
    assert_eq!(
        IntervalWindow::decode(&buf[e.windows[1].clone()], 0)
            .unwrap()
            .0,
        IntervalWindow::new(5, 15)
    );
    assert_eq!(e.value.end, second);
    assert_eq!(
        coder("kv").decode(&buf[e.value.clone()], true).unwrap(),
        kv("key", 300)
    );
    // The key is the length-prefixed string, nothing more.
    let key_end = fmt.key_end(&buf, e.value.start).unwrap();
    assert_eq!(
        coder("lp_str")
            .decode(&buf[e.value.start..key_end], true)
            .unwrap(),
        Value::String("key".into())
    );
    assert_eq!(
        coder("varint")
            .decode(&buf[key_end..e.value.end], true)
            .unwrap(),
        Value::Int(300)
    );

    let e2 = fmt.parse(&buf, second).unwrap();
    assert_eq!(e2.range, second..buf.len());
    assert_eq!(e2.timestamp, 1234);
    assert_eq!(
        coder("kv").decode(&buf[e2.value.clone()], true).unwrap(),
        kv("", -1)
    );
    assert_eq!(
        fmt.window_max_timestamp(&buf[e2.windows[0].clone()])
            .unwrap(),
        99
    );
}

#[test]
fn parse_handles_panes_with_indices() {
    // A late pane with two indices takes more than one byte.
    let pane = PaneInfo {
        is_first: false,
        is_last: false,
        timing: Timing::Late,
        index: 300,
        on_time_index: 2,
    };
    let value = coder("kv").encode_to_vec(&kv("k", 1), true).unwrap();
    let mut buf = Vec::new();
    encode_windowed_value(&mut buf, 0, &[WindowRef::Global], &pane, &value);
    encode_windowed_value(
        &mut buf,
        0,
        &[WindowRef::Global],
        &PaneInfo::NO_FIRING,
        &value,
    );
    let fmt = format("wv_global");
    let e = fmt.parse(&buf, 0).unwrap();
    assert_eq!(&buf[e.value.clone()], &value[..]);
    let mut n = 0;
    fmt.for_each(&buf, |e| {
        assert_eq!(&buf[e.value.clone()], &value[..]);
        assert!(
            e.windows.len() == 1 && e.windows[0].is_empty(),
            "the global window is zero bytes"
        );
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn global_window_max_timestamp() {
    let fmt = format("wv_global");
    assert_eq!(
        fmt.window_max_timestamp(&[]).unwrap(),
        ferrobeam_coders::GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS
    );
}

#[test]
fn for_each_visits_every_element_and_stops_on_errors() {
    let chunk = global(&[(1, "a", 1), (2, "b", 2), (3, "c", 3)]);
    let fmt = format("wv_global");
    let mut seen = Vec::new();
    fmt.for_each(&chunk, |e| {
        seen.push((
            e.timestamp,
            coder("kv").decode(&chunk[e.value], true).unwrap(),
        ));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        seen,
        vec![(1, kv("a", 1)), (2, kv("b", 2)), (3, kv("c", 3))]
    );

    // Every strict prefix that cuts an element is an error, never a panic.
    let ends: Vec<usize> = {
        let mut v = Vec::new();
        fmt.for_each(&chunk, |e| {
            v.push(e.range.end);
            Ok(())
        })
        .unwrap();
        v
    };
    for cut in 1..chunk.len() {
        let r = fmt.for_each(&chunk[..cut], |_| Ok(()));
        assert_eq!(r.is_ok(), ends.contains(&cut), "cut at {cut}");
    }
}

#[test]
fn split_cuts_at_element_boundaries() {
    let elements: Vec<(i64, String, i64)> = (0..50)
        .map(|i| (i, "k".repeat(i as usize % 7), i * 1000))
        .collect();
    let refs: Vec<(i64, &str, i64)> = elements
        .iter()
        .map(|(t, k, v)| (*t, k.as_str(), *v))
        .collect();
    let chunk = global(&refs);
    let fmt = format("wv_global");
    for target in [
        0,
        1,
        10,
        37,
        100,
        chunk.len() - 1,
        chunk.len(),
        chunk.len() * 2,
    ] {
        let pieces = fmt.split(&chunk, target).unwrap();
        // Concatenated, the pieces are the chunk.
        let joined: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(joined, chunk.to_vec(), "target {target}");
        let mut decoded = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            assert!(!p.is_empty());
            // Each piece decodes on its own ...
            let wvs = decode_all("wv_global", p);
            // ... and all but the last reach the target, each by less than one element.
            if i + 1 < pieces.len() {
                assert!(
                    p.len() >= target,
                    "target {target}: piece {i} has {} bytes",
                    p.len()
                );
                let last = fmt.split(p, usize::MAX).unwrap();
                assert_eq!(last.len(), 1);
            }
            decoded.extend(wvs.into_iter().map(|w| w.timestamp));
        }
        assert_eq!(decoded, (0..50).collect::<Vec<_>>(), "target {target}");
        if target <= 1 {
            assert_eq!(
                pieces.len(),
                50,
                "a tiny target gives one element per piece"
            );
        }
        if target >= chunk.len() {
            assert_eq!(pieces.len(), 1);
        }
    }
    assert!(fmt.split(&Bytes::new(), 10).unwrap().is_empty());
}

#[test]
fn write_element_matches_the_windowed_value_coder() {
    let value = coder("kv").encode_to_vec(&kv("w", 9), true).unwrap();
    let mut window = Vec::new();
    IntervalWindow::new(10, 20).encode(&mut window);
    let pane = PaneInfo {
        is_first: true,
        is_last: true,
        timing: Timing::OnTime,
        index: 0,
        on_time_index: 0,
    };
    let mut buf = Vec::new();
    write_element(&mut buf, 19, &window, &pane, &[&value[..2], &value[2..]]);
    let wvs = decode_all("wv_interval", &buf);
    assert_eq!(wvs.len(), 1);
    assert_eq!(wvs[0].timestamp, 19);
    assert_eq!(
        wvs[0].windows,
        vec![Value::IntervalWindow(IntervalWindow::new(10, 20))]
    );
    assert_eq!(wvs[0].pane, pane);
    assert_eq!(wvs[0].value, kv("w", 9));
}

#[test]
fn new_rejects_what_is_not_a_windowed_value() {
    let c = components();
    assert!(WireFormat::new(&c, "kv").is_err());
    assert!(WireFormat::new(&c, "missing").is_err());
    // Keys are only needed for KVs: a non-KV value parses but has no key.
    let fmt = WireFormat::new(&c, "wv_str").unwrap();
    let value = coder("str")
        .encode_to_vec(&Value::String("abc".into()), true)
        .unwrap();
    let mut buf = Vec::new();
    encode_windowed_value(
        &mut buf,
        0,
        &[WindowRef::Global],
        &PaneInfo::NO_FIRING,
        &value,
    );
    let e = fmt.parse(&buf, 0).unwrap();
    assert_eq!(e.range.end, buf.len());
    assert!(fmt.key_end(&buf, e.value.start).is_err());

    // An opaque window coder inside a length prefix is skipped by its prefix.
    let mut c = components();
    c.coders.insert(
        "custom_win".into(),
        pb::Coder {
            spec: Some(pb::FunctionSpec {
                urn: "beam:coder:pickled_python:v1".into(),
                payload: Default::default(),
            }),
            component_coder_ids: vec![],
        },
    );
    c.coders.insert(
        "lp_win".into(),
        pb::Coder {
            spec: Some(pb::FunctionSpec {
                urn: "beam:coder:length_prefix:v1".into(),
                payload: Default::default(),
            }),
            component_coder_ids: vec!["custom_win".into()],
        },
    );
    c.coders.insert(
        "wv_custom".into(),
        pb::Coder {
            spec: Some(pb::FunctionSpec {
                urn: "beam:coder:windowed_value:v1".into(),
                payload: Default::default(),
            }),
            component_coder_ids: vec!["kv".into(), "lp_win".into()],
        },
    );
    let fmt = WireFormat::new(&c, "wv_custom").unwrap();
    let value = coder("kv").encode_to_vec(&kv("k", 1), true).unwrap();
    let mut buf = Vec::new();
    let win = [3u8, 0xaa, 0xbb, 0xcc]; // length 3, then the opaque window
    encode_windowed_value(
        &mut buf,
        0,
        &[WindowRef::Other(&win)],
        &PaneInfo::NO_FIRING,
        &value,
    );
    let e = fmt.parse(&buf, 0).unwrap();
    assert_eq!(&buf[e.windows[0].clone()], &win);
    assert_eq!(&buf[e.value.clone()], &value[..]);
    assert!(
        fmt.window_max_timestamp(&win).is_err(),
        "custom windows have no known end"
    );
}
