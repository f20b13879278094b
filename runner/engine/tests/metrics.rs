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

/// A bounded trie {a/b, a/c} and a singleton x, as apache-beam 2.77.0's
/// `monitoring_infos.user_bounded_trie` serializes them.
#[test]
fn merges_bounded_tries_written_by_the_python_sdk() {
    use ferrobeam_proto::pipeline::v1::BoundedTrie;
    use prost::Message;
    let urn = "beam:metric:user:bounded_trie:v1";
    let kind = "beam:metrics:bounded_trie:v1";
    let mut m = Metrics::default();
    m.add_all(&[
        info(
            urn,
            kind,
            "t",
            hex("0864121512130a0161120e12050a0163120012050a01621200"),
        ),
        info(urn, kind, "t", hex("08641a0178")),
    ]);
    let trie = BoundedTrie::decode(only(&m, "t").payload).unwrap();
    assert_eq!(trie.bound, 100);
    let root = trie.root.unwrap();
    let mut top: Vec<&String> = root.children.keys().collect();
    top.sort();
    assert_eq!(top, ["a", "x"]);
    let mut under_a: Vec<&String> = root.children["a"].children.keys().collect();
    under_a.sort();
    assert_eq!(under_a, ["b", "c"]);
    assert!(root.children["x"].children.is_empty() && !root.children["x"].truncated);
}

/// Gauges as the SDK writes them (timestamp millis, value), and a string set
/// with a non-ASCII member.
#[test]
fn merges_gauges_and_string_sets_written_by_the_python_sdk() {
    let g = "beam:metric:user:latest_int64:v1";
    let mut m = Metrics::default();
    // GaugeData(7, timestamp 1700000000.123) then an older reading.
    m.add_all(&[
        info(
            g,
            "beam:metrics:latest_int64:v1",
            "g",
            hex("fbd095ffbc3107"),
        ),
        info(g, "beam:metrics:latest_int64:v1", "g", varints(&[1, 9])),
    ]);
    assert_eq!(
        read_varints(&only(&m, "g").payload, 2),
        vec![1_700_000_000_123, 7]
    );
    let s = "beam:metric:user:set_string:v1";
    m.add_all(&[
        info(s, SET_STRING, "s", hex("00000002016102c3bc")),
        info(s, SET_STRING, "s", string_set(&["ü", "b"])),
    ]);
    let mut got = read_string_set(&only(&m, "s").payload);
    got.sort();
    assert_eq!(got, ["a", "b", "ü"]);
}

#[test]
fn an_info_whose_type_changes_is_replaced_not_merged() {
    let urn = "beam:metric:user:sum_int64:v1";
    let mut m = Metrics::default();
    m.add_all(&[info(urn, "beam:metrics:sum_int64:v1", "c", varints(&[5]))]);
    m.add_all(&[info(
        urn,
        "beam:metrics:sum_double:v1",
        "c",
        1.5f64.to_be_bytes().to_vec(),
    )]);
    let got = only(&m, "c");
    assert_eq!(
        (got.r#type.as_str(), got.payload.len()),
        ("beam:metrics:sum_double:v1", 8)
    );
}

mod scopes {
    use std::collections::HashMap;

    use ferrobeam_engine::metrics::{Metrics, StageScope};
    use ferrobeam_graph::{Plan, PortRef, SdkStage, Stage, StageKind};
    use ferrobeam_proto::pipeline::v1::MonitoringInfo;

    fn port(pc: &str) -> PortRef {
        PortRef {
            pcollection: pc.into(),
            coder_id: "c".into(),
        }
    }

    fn sdk(id: &str, input: Option<&str>, outputs: &[&str]) -> Stage {
        Stage {
            id: id.into(),
            name: id.into(),
            transforms: vec![id.into()],
            kind: StageKind::Sdk(Box::new(SdkStage {
                environment_id: "env".into(),
                descriptor: Default::default(),
                drain_descriptor: None,
                input: input.map(|pc| (port(pc), format!("{id}/source"))),
                outputs: outputs
                    .iter()
                    .enumerate()
                    .map(|(i, pc)| (port(pc), format!("{id}/sink{i}")))
                    .collect(),
                side_inputs: vec![],
                keyed: false,
                time_sorted: false,
                timer_families: Vec::new(),
                residual_target: None,
            })),
        }
    }

    /// impulse -> s1 -> {p1 -> s2, p2 -> gbk -> p3 -> s4 and s5}
    fn plan() -> Plan {
        let stage = |id: &str, kind| Stage {
            id: id.into(),
            name: id.into(),
            transforms: vec![id.into()],
            kind,
        };
        Plan {
            components: Default::default(),
            stages: vec![
                stage("s0", StageKind::Impulse { output: port("p0") }),
                sdk("s1", Some("p0"), &["p1", "p2"]),
                sdk("s2", Some("p1"), &[]),
                stage(
                    "s3",
                    StageKind::GroupByKey {
                        transform_id: "gbk".into(),
                        input: port("p2"),
                        output: port("p3"),
                        windowing: Default::default(),
                        merge: None,
                    },
                ),
                sdk("s4", Some("p3"), &[]),
                sdk("s5", Some("p3"), &[]),
            ],
            environments: HashMap::new(),
            notes: vec![],
            streaming: false,
        }
    }

    fn element_count(pc: &str, n: i64) -> MonitoringInfo {
        let mut payload = Vec::new();
        ferrobeam_coders::varint::write_varint_i64(&mut payload, n);
        MonitoringInfo {
            urn: "beam:metric:element_count:v1".into(),
            r#type: "beam:metrics:sum_int64:v1".into(),
            payload: payload.into(),
            labels: HashMap::from([("PCOLLECTION".to_owned(), pc.to_owned())]),
            start_time: None,
        }
    }

    fn msecs(transform: &str) -> MonitoringInfo {
        MonitoringInfo {
            urn: "beam:metric:ptransform_execution_time:total_msecs:v1".into(),
            r#type: "beam:metrics:sum_int64:v1".into(),
            payload: vec![3].into(),
            labels: HashMap::from([("PTRANSFORM".to_owned(), transform.to_owned())]),
            start_time: None,
        }
    }

    fn counts(m: &Metrics) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = m
            .snapshot()
            .into_iter()
            .filter(|i| i.urn == "beam:metric:element_count:v1")
            .map(|i| {
                (
                    i.labels["PCOLLECTION"].clone(),
                    ferrobeam_coders::varint::read_varint_i64(&i.payload, 0)
                        .unwrap()
                        .0,
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn each_pcollection_is_counted_by_one_stage() {
        let scopes = StageScope::for_plan(&plan());
        assert_eq!(scopes.len(), 4, "one scope per SDK stage");
        let mut m = Metrics::default();
        // What the SDK reports: every stage counts its input again.
        m.add_bundle(
            &scopes["s1"],
            &[
                element_count("p0", 1),
                element_count("p1", 10),
                element_count("p2", 10),
            ],
        );
        m.add_bundle(&scopes["s2"], &[element_count("p1", 10)]);
        m.add_bundle(&scopes["s4"], &[element_count("p3", 4)]);
        m.add_bundle(&scopes["s4"], &[element_count("p3", 2)]);
        m.add_bundle(&scopes["s5"], &[element_count("p3", 6)]);
        assert_eq!(
            counts(&m),
            [
                ("p0".into(), 1),
                ("p1".into(), 10),
                ("p2".into(), 10),
                ("p3".into(), 6)
            ]
        );
    }

    #[test]
    fn runner_added_transforms_are_left_out() {
        let scopes = StageScope::for_plan(&plan());
        let mut m = Metrics::default();
        m.add_bundle(
            &scopes["s1"],
            &[msecs("s1/source"), msecs("s1/sink1"), msecs("user/Map")],
        );
        let names: Vec<String> = m
            .snapshot()
            .into_iter()
            .map(|i| i.labels["PTRANSFORM"].clone())
            .collect();
        assert_eq!(names, ["user/Map"]);
    }

    #[test]
    fn steps_are_published_under_their_unique_names() {
        use ferrobeam_proto::pipeline::v1::PTransform;
        let mut plan = plan();
        for (id, name) in [
            ("ref_AppliedPTransform_M_21", "M"),
            ("same", "same"),
            ("unnamed", ""),
        ] {
            plan.components.transforms.insert(
                id.into(),
                PTransform {
                    unique_name: name.into(),
                    ..Default::default()
                },
            );
        }
        let names = ferrobeam_engine::metrics::step_names(&plan);
        assert_eq!(
            names,
            HashMap::from([("ref_AppliedPTransform_M_21".to_owned(), "M".to_owned())])
        );
        let mut m = Metrics::default();
        m.add_all(&[msecs("ref_AppliedPTransform_M_21"), msecs("unnamed")]);
        let mut steps: Vec<String> = m
            .snapshot_named(&names)
            .into_iter()
            .map(|i| i.labels["PTRANSFORM"].clone())
            .collect();
        steps.sort();
        assert_eq!(steps, ["M", "unnamed"]);
    }
}
