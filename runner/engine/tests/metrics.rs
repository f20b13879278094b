//! Merging the SDK's monitoring infos across bundles.

use std::collections::HashMap;

use ferrobeam_coders::varint::{
    read_varint_i64, read_varint_u64, write_varint_i64, write_varint_u64,
};
use ferrobeam_engine::metrics::Metrics;
use ferrobeam_proto::pipeline::v1::MonitoringInfo;

fn info(urn: &str, kind: &str, name: &str, payload: Vec<u8>) -> MonitoringInfo {
    MonitoringInfo {
        urn: urn.into(),
        r#type: kind.into(),
        payload: payload.into(),
        labels: HashMap::from([
            ("NAME".to_owned(), name.to_owned()),
            ("NAMESPACE".to_owned(), "ns".to_owned()),
        ]),
        start_time: None,
    }
}

fn varints(vs: &[i64]) -> Vec<u8> {
    let mut out = Vec::new();
    for &v in vs {
        write_varint_i64(&mut out, v);
    }
    out
}

fn read_varints(buf: &[u8], n: usize) -> Vec<i64> {
    let mut pos = 0;
    let mut out = Vec::new();
    for _ in 0..n {
        let (v, p) = read_varint_i64(buf, pos).unwrap();
        out.push(v);
        pos = p;
    }
    assert_eq!(pos, buf.len(), "trailing bytes");
    out
}

fn only(m: &Metrics, name: &str) -> MonitoringInfo {
    let found: Vec<MonitoringInfo> = m
        .snapshot()
        .into_iter()
        .filter(|i| i.labels["NAME"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

const DIST_INT: &str = "beam:metrics:distribution_int64:v1";
const DIST_DOUBLE: &str = "beam:metrics:distribution_double:v1";
const SET_STRING: &str = "beam:metrics:set_string:v1";

#[test]
fn int_distributions_add_counts_and_sums_and_keep_extremes() {
    let urn = "beam:metric:user:distribution_int64:v1";
    let mut m = Metrics::default();
    // count, sum, min, max
    m.add_all(&[info(urn, DIST_INT, "d", varints(&[3, 30, 5, 15]))]);
    m.add_all(&[
        info(urn, DIST_INT, "d", varints(&[2, -4, -7, 3])),
        info(urn, DIST_INT, "d", varints(&[1, 100, 100, 100])),
    ]);
    assert_eq!(
        read_varints(&only(&m, "d").payload, 4),
        vec![6, 126, -7, 100]
    );
}

#[test]
fn double_distributions_merge() {
    let urn = "beam:metric:user:distribution_double:v1";
    let payload = |count: i64, sum: f64, min: f64, max: f64| {
        let mut out = varints(&[count]);
        for v in [sum, min, max] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    };
    let mut m = Metrics::default();
    m.add_all(&[
        info(urn, DIST_DOUBLE, "d", payload(2, 1.5, 0.25, 1.25)),
        info(urn, DIST_DOUBLE, "d", payload(3, -2.0, -1.5, 0.5)),
    ]);
    let p = only(&m, "d").payload;
    let (count, pos) = read_varint_i64(&p, 0).unwrap();
    assert_eq!(count, 5);
    let f = |i: usize| f64::from_be_bytes(p[pos + 8 * i..pos + 8 * i + 8].try_into().unwrap());
    assert_eq!((f(0), f(1), f(2)), (-0.5, -1.5, 1.25));
    assert_eq!(p.len(), pos + 24);
}

fn string_set(items: &[&str]) -> Vec<u8> {
    let mut out = (items.len() as u32).to_be_bytes().to_vec();
    for s in items {
        write_varint_u64(&mut out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    out
}

fn read_string_set(buf: &[u8]) -> Vec<String> {
    let count = u32::from_be_bytes(buf[0..4].try_into().unwrap());
    let mut pos = 4;
    let mut out = Vec::new();
    for _ in 0..count {
        let (len, p) = read_varint_u64(buf, pos).unwrap();
        out.push(String::from_utf8(buf[p..p + len as usize].to_vec()).unwrap());
        pos = p + len as usize;
    }
    assert_eq!(pos, buf.len());
    out
}

#[test]
fn string_sets_union_without_duplicates() {
    let urn = "beam:metric:user:set_string:v1";
    let mut m = Metrics::default();
    m.add_all(&[info(urn, SET_STRING, "s", string_set(&["b", "a"]))]);
    m.add_all(&[info(
        urn,
        SET_STRING,
        "s",
        string_set(&["c", "a", "ünïcode"]),
    )]);
    m.add_all(&[info(urn, SET_STRING, "s", string_set(&[]))]);
    let mut got = read_string_set(&only(&m, "s").payload);
    got.sort();
    assert_eq!(got, ["a", "b", "c", "ünïcode"]);
}

#[test]
fn sums_latest_and_labels() {
    let sum_urn = "beam:metric:user:sum_int64:v1";
    let mut m = Metrics::default();
    m.add_all(&[
        info(sum_urn, "beam:metrics:sum_int64:v1", "a", varints(&[5])),
        info(sum_urn, "beam:metrics:sum_int64:v1", "b", varints(&[7])),
        info(sum_urn, "beam:metrics:sum_int64:v1", "a", varints(&[-2])),
    ]);
    assert_eq!(read_varints(&only(&m, "a").payload, 1), vec![3]);
    assert_eq!(
        read_varints(&only(&m, "b").payload, 1),
        vec![7],
        "different labels are different metrics"
    );

    let dbl_urn = "beam:metric:user:sum_double:v1";
    m.add_all(&[
        info(
            dbl_urn,
            "beam:metrics:sum_double:v1",
            "x",
            0.5f64.to_be_bytes().to_vec(),
        ),
        info(
            dbl_urn,
            "beam:metrics:sum_double:v1",
            "x",
            2.25f64.to_be_bytes().to_vec(),
        ),
    ]);
    assert_eq!(
        f64::from_be_bytes(only(&m, "x").payload[..].try_into().unwrap()),
        2.75
    );

    // Gauges keep the most recent value (timestamp, value).
    let latest = "beam:metric:user:latest_int64:v1";
    m.add_all(&[
        info(
            latest,
            "beam:metrics:latest_int64:v1",
            "g",
            varints(&[200, 1]),
        ),
        info(
            latest,
            "beam:metrics:latest_int64:v1",
            "g",
            varints(&[100, 2]),
        ),
    ]);
    assert_eq!(read_varints(&only(&m, "g").payload, 2), vec![200, 1]);
    m.add_all(&[info(
        latest,
        "beam:metrics:latest_int64:v1",
        "g",
        varints(&[300, 3]),
    )]);
    assert_eq!(read_varints(&only(&m, "g").payload, 2), vec![300, 3]);
}

#[test]
fn unmergeable_infos_keep_the_newest() {
    let urn = "beam:metric:user:distribution_int64:v1";
    let mut m = Metrics::default();
    m.add_all(&[info(urn, DIST_INT, "d", varints(&[1, 1, 1, 1]))]);
    // A truncated payload cannot be merged: the newest replaces the old.
    m.add_all(&[info(urn, DIST_INT, "d", vec![0x80])]);
    assert_eq!(only(&m, "d").payload.as_ref(), &[0x80]);
    // Unknown types are replaced too.
    m.add_all(&[
        info("beam:metric:x:v1", "beam:metrics:progress:v1", "p", vec![1]),
        info("beam:metric:x:v1", "beam:metrics:progress:v1", "p", vec![2]),
    ]);
    assert_eq!(only(&m, "p").payload.as_ref(), &[2]);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Payloads exactly as apache-beam 2.77.0's Python SDK writes them
/// (`monitoring_infos.int64_user_distribution`, `user_set_string`,
/// `int64_user_counter`).
#[test]
fn merges_payloads_written_by_the_python_sdk() {
    let mut m = Metrics::default();
    // DistributionData(sum=30, count=3, min=5, max=15) and (sum=-4, count=2, min=-7, max=3).
    let d = "beam:metric:user:distribution_int64:v1";
    m.add_all(&[
        info(d, DIST_INT, "d", hex("031e050f")),
        info(
            d,
            DIST_INT,
            "d",
            hex("02fcffffffffffffffff01f9ffffffffffffffff0103"),
        ),
    ]);
    assert_eq!(read_varints(&only(&m, "d").payload, 4), vec![5, 26, -7, 15]);
    // StringSetData({'a', 'b'}) and {'c', 'a'} built by hand.
    let s = "beam:metric:user:set_string:v1";
    m.add_all(&[
        info(s, SET_STRING, "s", hex("0000000201620161")),
        info(s, SET_STRING, "s", string_set(&["c", "a"])),
    ]);
    let mut got = read_string_set(&only(&m, "s").payload);
    got.sort();
    assert_eq!(got, ["a", "b", "c"]);
    // Counter 300, twice.
    let c = "beam:metric:user:sum_int64:v1";
    m.add_all(&[
        info(c, "beam:metrics:sum_int64:v1", "c", hex("ac02")),
        info(c, "beam:metrics:sum_int64:v1", "c", hex("ac02")),
    ]);
    assert_eq!(read_varints(&only(&m, "c").payload, 1), vec![600]);
}
