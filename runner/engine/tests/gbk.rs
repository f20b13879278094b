//! Native GroupByKey on real element bytes.

mod common;

use bytes::Bytes;
use common::*;
use ferrobeam_coders::{WindowRef, GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS};
use ferrobeam_engine::gbk::group_by_key;
use ferrobeam_proto::pipeline::v1::{self as pb, output_time, FunctionSpec};

fn windowing(window_fn: &str, output_time: output_time::Enum) -> pb::WindowingStrategy {
    pb::WindowingStrategy {
        window_fn: Some(FunctionSpec {
            urn: window_fn.into(),
            payload: Default::default(),
        }),
        output_time: output_time as i32,
        ..Default::default()
    }
}

const GLOBAL: &str = "beam:window_fn:global_windows:v1";
const FIXED: &str = "beam:window_fn:fixed_windows:v1";
const SLIDING: &str = "beam:window_fn:sliding_windows:v1";
const SESSIONS: &str = "beam:window_fn:session_windows:v1";

fn g(key: &str, windows: Vec<(i64, i64)>, values: Vec<i64>, timestamp: i64) -> Grouped {
    Grouped {
        key: key.into(),
        windows,
        values,
        timestamp,
    }
}

const GW: (i64, i64) = (i64::MIN, i64::MAX);

#[test]
fn global_window_groups_across_chunks() {
    let input = [
        global(&[(1, "a", 1), (2, "b", 2), (3, "a", 3)]),
        global(&[(4, "b", 4), (5, "c", 5), (6, "a", 6)]),
    ];
    let out = group_by_key(
        &input,
        &format("wv_global"),
        &windowing(GLOBAL, output_time::Enum::EndOfWindow),
    )
    .unwrap();
    let eow = GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS;
    assert_eq!(
        grouped("wv_global_out", &out),
        vec![
            g("a", vec![GW], vec![1, 3, 6], eow),
            g("b", vec![GW], vec![2, 4], eow),
            g("c", vec![GW], vec![5], eow),
        ]
    );
}

#[test]
fn unspecified_output_time_means_end_of_window() {
    let input = [global(&[(7, "a", 1)])];
    let out = group_by_key(
        &input,
        &format("wv_global"),
        &windowing(GLOBAL, output_time::Enum::Unspecified),
    )
    .unwrap();
    assert_eq!(
        grouped("wv_global_out", &out),
        vec![g(
            "a",
            vec![GW],
            vec![1],
            GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS
        )]
    );
}

#[test]
fn empty_input_gives_no_output() {
    let out = group_by_key(
        &[],
        &format("wv_global"),
        &windowing(GLOBAL, output_time::Enum::EndOfWindow),
    )
    .unwrap();
    assert!(out.iter().all(|c| c.is_empty()), "{out:?}");
    let out = group_by_key(
        &[Bytes::new()],
        &format("wv_global"),
        &windowing(GLOBAL, output_time::Enum::EndOfWindow),
    )
    .unwrap();
    assert!(out.iter().all(|c| c.is_empty()), "{out:?}");
}

/// Equal keys group by their bytes, whatever chunk they come from; distinct
/// keys that share a prefix stay apart.
#[test]
fn keys_compare_by_whole_encoding() {
    let input = [global(&[
        (0, "ab", 1),
        (0, "a", 2),
        (0, "", 3),
        (0, "abc", 4),
        (0, "ab", 5),
    ])];
    let out = group_by_key(
        &input,
        &format("wv_global"),
        &windowing(GLOBAL, output_time::Enum::EndOfWindow),
    )
    .unwrap();
    let keys: Vec<(String, Vec<i64>)> = grouped("wv_global_out", &out)
        .into_iter()
        .map(|g| (g.key, g.values))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("".into(), vec![3]),
            ("a".into(), vec![2]),
            ("ab".into(), vec![1, 5]),
            ("abc".into(), vec![4])
        ]
    );
}

#[test]
fn fixed_windows_group_per_window() {
    // FixedWindows(10): [0,10) and [10,20).
    let mut buf = Vec::new();
    push(&mut buf, 1, &[iw(0, 10)], "a", 1);
    push(&mut buf, 9, &[iw(0, 10)], "a", 2);
    push(&mut buf, 10, &[iw(10, 20)], "a", 3);
    push(&mut buf, 15, &[iw(10, 20)], "b", 4);
    let input = [Bytes::from(buf)];
    let fmt = format("wv_interval");

    let out = group_by_key(
        &input,
        &fmt,
        &windowing(FIXED, output_time::Enum::EndOfWindow),
    )
    .unwrap();
    assert_eq!(
        grouped("wv_interval_out", &out),
        vec![
            g("a", vec![(0, 10)], vec![1, 2], 9),
            g("a", vec![(10, 20)], vec![3], 19),
            g("b", vec![(10, 20)], vec![4], 19)
        ]
    );

    let out = group_by_key(
        &input,
        &fmt,
        &windowing(FIXED, output_time::Enum::EarliestInPane),
    )
    .unwrap();
    assert_eq!(
        grouped("wv_interval_out", &out),
        vec![
            g("a", vec![(0, 10)], vec![1, 2], 1),
            g("a", vec![(10, 20)], vec![3], 10),
            g("b", vec![(10, 20)], vec![4], 15)
        ]
    );

    let out = group_by_key(
        &input,
        &fmt,
        &windowing(FIXED, output_time::Enum::LatestInPane),
    )
    .unwrap();
    assert_eq!(
        grouped("wv_interval_out", &out),
        vec![
            g("a", vec![(0, 10)], vec![1, 2], 9),
            g("a", vec![(10, 20)], vec![3], 10),
            g("b", vec![(10, 20)], vec![4], 15)
        ]
    );
}

#[test]
fn sliding_windows_put_an_element_in_every_window() {
    // SlidingWindows(size=10, period=5): ts 7 is in [0,10) and [5,15);
    // ts 12 in [5,15) and [10,20).
    let mut buf = Vec::new();
    push(&mut buf, 7, &[iw(0, 10), iw(5, 15)], "k", 7);
    push(&mut buf, 12, &[iw(5, 15), iw(10, 20)], "k", 12);
    let input = [Bytes::from(buf)];
    let fmt = format("wv_interval");
    let out = group_by_key(
        &input,
        &fmt,
        &windowing(SLIDING, output_time::Enum::EndOfWindow),
    )
    .unwrap();
    assert_eq!(
        grouped("wv_interval_out", &out),
        vec![
            g("k", vec![(0, 10)], vec![7], 9),
            g("k", vec![(5, 15)], vec![7, 12], 14),
            g("k", vec![(10, 20)], vec![12], 19),
        ]
    );
    // Each output element carries exactly one window.
    let out = group_by_key(
        &input,
        &fmt,
        &windowing(SLIDING, output_time::Enum::EarliestInPane),
    )
    .unwrap();
    let got = grouped("wv_interval_out", &out);
    assert!(got.iter().all(|g| g.windows.len() == 1));
    assert_eq!(
        got.iter().map(|g| g.timestamp).collect::<Vec<_>>(),
        vec![7, 7, 12]
    );
}

#[test]
fn session_windows_merge_per_key() {
    // Sessions(gap=10): each element arrives in [ts, ts+10).
    let mut buf = Vec::new();
    for (ts, k, v) in [
        (0, "a", 1),
        (5, "a", 2),
        (14, "a", 3),
        (30, "a", 4),
        (3, "b", 5),
        (40, "a", 6),
    ] {
        push(&mut buf, ts, &[iw(ts, ts + 10)], k, v);
    }
    // Touching but not overlapping: [50,60) and [60,70) stay apart.
    push(&mut buf, 50, &[iw(50, 60)], "c", 7);
    push(&mut buf, 60, &[iw(60, 70)], "c", 8);
    // Sessions are found across input chunks, in any order.
    let mut late = Vec::new();
    push(&mut late, 9, &[iw(9, 19)], "b", 9);
    push(&mut late, 22, &[iw(22, 32)], "a", 10);
    let input = [Bytes::from(buf), Bytes::from(late)];
    let fmt = format("wv_interval");

    let out = group_by_key(
        &input,
        &fmt,
        &windowing(SESSIONS, output_time::Enum::EndOfWindow),
    )
    .unwrap();
    assert_eq!(
        grouped("wv_interval_out", &out),
        vec![
            // 0..10, 5..15, 14..24, 22..32, 30..40 chain into one session;
            // 40..50 touches it only at 40, so it is separate.
            g("a", vec![(0, 40)], vec![1, 2, 3, 4, 10], 39),
            g("a", vec![(40, 50)], vec![6], 49),
            g("b", vec![(3, 19)], vec![5, 9], 18),
            g("c", vec![(50, 60)], vec![7], 59),
            g("c", vec![(60, 70)], vec![8], 69),
        ]
    );

    let out = group_by_key(
        &input,
        &fmt,
        &windowing(SESSIONS, output_time::Enum::EarliestInPane),
    )
    .unwrap();
    let ts: Vec<(String, i64)> = grouped("wv_interval_out", &out)
        .into_iter()
        .map(|g| (g.key, g.timestamp))
        .collect();
    assert_eq!(
        ts,
        vec![
            ("a".into(), 0),
            ("a".into(), 40),
            ("b".into(), 3),
            ("c".into(), 50),
            ("c".into(), 60)
        ]
    );

    let out = group_by_key(
        &input,
        &fmt,
        &windowing(SESSIONS, output_time::Enum::LatestInPane),
    )
    .unwrap();
    let ts: Vec<(String, i64)> = grouped("wv_interval_out", &out)
        .into_iter()
        .map(|g| (g.key, g.timestamp))
        .collect();
    assert_eq!(
        ts,
        vec![
            ("a".into(), 30),
            ("a".into(), 40),
            ("b".into(), 9),
            ("c".into(), 50),
            ("c".into(), 60)
        ]
    );
}

#[test]
fn sessions_contained_in_a_longer_one_merge() {
    // [0,100) swallows [10,20) and [50,60); [99,109) overlaps its end.
    let mut buf = Vec::new();
    push(&mut buf, 0, &[iw(0, 100)], "k", 1);
    push(&mut buf, 10, &[iw(10, 20)], "k", 2);
    push(&mut buf, 50, &[iw(50, 60)], "k", 3);
    push(&mut buf, 99, &[iw(99, 109)], "k", 4);
    let out = group_by_key(
        &[Bytes::from(buf)],
        &format("wv_interval"),
        &windowing(SESSIONS, output_time::Enum::EndOfWindow),
    )
    .unwrap();
    assert_eq!(
        grouped("wv_interval_out", &out),
        vec![g("k", vec![(0, 109)], vec![1, 2, 3, 4], 108)]
    );
}

/// Large outputs are cut into chunks at element boundaries: every chunk
/// decodes on its own.
#[test]
fn large_output_is_chunked_at_element_boundaries() {
    let mut buf = Vec::new();
    let n = 120_000;
    for i in 0..n {
        push(
            &mut buf,
            0,
            &[WindowRef::Global],
            &format!("key-{:06}", i % 40_000),
            i,
        );
    }
    let out = group_by_key(
        &[Bytes::from(buf)],
        &format("wv_global"),
        &windowing(GLOBAL, output_time::Enum::EndOfWindow),
    )
    .unwrap();
    assert!(
        out.len() > 1,
        "expected several output chunks, got {}",
        out.len()
    );
    let mut total = 0;
    let mut groups = 0;
    for chunk in &out {
        for wv in decode_all("wv_global_out", chunk) {
            groups += 1;
            let ferrobeam_coders::Value::Kv(_, v) = wv.value else {
                panic!()
            };
            let ferrobeam_coders::Value::Iterable(vs) = *v else {
                panic!()
            };
            assert_eq!(vs.len(), 3);
            total += vs.len();
        }
    }
    assert_eq!(groups, 40_000);
    assert_eq!(total, n as usize);
}

#[test]
fn undecodable_input_is_an_error_not_a_panic() {
    let mut chunk = global(&[(1, "a", 1), (2, "b", 2)]).to_vec();
    chunk.truncate(chunk.len() - 1);
    let err = group_by_key(
        &[Bytes::from(chunk)],
        &format("wv_global"),
        &windowing(GLOBAL, output_time::Enum::EndOfWindow),
    );
    assert!(err.is_err());
    // A non-KV wire coder cannot be grouped.
    let mut buf = Vec::new();
    let value = common::coder("str")
        .encode_to_vec(&ferrobeam_coders::Value::String("x".into()), true)
        .unwrap();
    ferrobeam_coders::encode_windowed_value(
        &mut buf,
        0,
        &[WindowRef::Global],
        &Default::default(),
        &value,
    );
    let err = group_by_key(
        &[Bytes::from(buf)],
        &format("wv_str"),
        &windowing(GLOBAL, output_time::Enum::EndOfWindow),
    );
    assert!(err.is_err());
}
