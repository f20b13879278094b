//! Custom window functions: window coder rewriting and the merge_windows
//! descriptor, on hand-built pipelines.

mod common;

use std::collections::HashMap;

use common::*;
use ferrobeam_coders::Coder;
use ferrobeam_graph::{translate, GraphError, StageKind, WindowMerge};
use ferrobeam_proto::pipeline::v1::{self as pb, Components, FunctionSpec, PTransform, Pipeline};
use prost::Message;

const ENV: &str = "env";
const CUSTOM_FN: &str = "beam:window_fn:pickled_python:v1";

fn spec(urn: &str, payload: &[u8]) -> Option<FunctionSpec> {
    Some(FunctionSpec {
        urn: urn.into(),
        payload: payload.to_vec().into(),
    })
}

fn coder(urn: &str, comps: &[&str]) -> pb::Coder {
    pb::Coder {
        spec: spec(urn, b""),
        component_coder_ids: comps.iter().map(|c| c.to_string()).collect(),
    }
}

fn transform(name: &str, urn: &str, env: &str, input: Option<&str>, output: &str) -> PTransform {
    PTransform {
        unique_name: name.into(),
        spec: spec(urn, b""),
        environment_id: env.into(),
        inputs: input
            .map(|i| HashMap::from([("in".to_string(), i.to_string())]))
            .unwrap_or_default(),
        outputs: HashMap::from([("out".to_string(), output.to_string())]),
        ..Default::default()
    }
}

/// Impulse → Window (custom WindowFn, window coder `window_coder`) → GBK → Read.
fn pipeline(window_coder: &str, merge: pb::merge_status::Enum, ws_env: &str) -> Pipeline {
    let mut c = Components::default();
    for (id, urn, comps) in [
        ("bytes", "beam:coder:bytes:v1", vec![]),
        ("kv", "beam:coder:kv:v1", vec!["bytes", "bytes"]),
        ("iter", "beam:coder:iterable:v1", vec!["bytes"]),
        ("kv_iter", "beam:coder:kv:v1", vec!["bytes", "iter"]),
        ("gw", "beam:coder:global_window:v1", vec![]),
        ("iw", "beam:coder:interval_window:v1", vec![]),
        ("pickled_window", "beam:coder:pickled_python:v1", vec![]),
        (
            "timer",
            "beam:coder:timer:v1",
            vec!["bytes", "pickled_window"],
        ),
    ] {
        c.coders.insert(id.into(), coder(urn, &comps));
    }
    c.windowing_strategies.insert(
        "global".into(),
        pb::WindowingStrategy {
            window_fn: spec("beam:window_fn:global_windows:v1", b""),
            window_coder_id: "gw".into(),
            ..Default::default()
        },
    );
    c.windowing_strategies.insert(
        "custom".into(),
        pb::WindowingStrategy {
            window_fn: spec(CUSTOM_FN, b"pickled window fn"),
            merge_status: merge as i32,
            window_coder_id: window_coder.into(),
            environment_id: ws_env.into(),
            ..Default::default()
        },
    );
    c.environments.insert(
        ENV.into(),
        pb::Environment {
            urn: "beam:env:embedded_python:v1".into(),
            ..Default::default()
        },
    );
    for (id, coder, ws) in [
        ("p0", "bytes", "global"),
        ("p1", "kv", "custom"),
        ("p2", "kv_iter", "custom"),
        ("p3", "kv", "custom"),
    ] {
        c.pcollections.insert(
            id.into(),
            pb::PCollection {
                unique_name: id.into(),
                coder_id: coder.into(),
                windowing_strategy_id: ws.into(),
                ..Default::default()
            },
        );
    }
    let pardo = pb::ParDoPayload {
        do_fn: spec("beam:dofn:pickled_python_info:v1", b"fn"),
        ..Default::default()
    };
    let mut read = transform("Read", "beam:transform:pardo:v1", ENV, Some("p2"), "p3");
    read.spec.as_mut().unwrap().payload = pardo.encode_to_vec().into();
    for (id, t) in [
        (
            "Impulse",
            transform("Impulse", "beam:transform:impulse:v1", "", None, "p0"),
        ),
        (
            "Window",
            transform(
                "Window",
                "beam:transform:window_into:v1",
                ENV,
                Some("p0"),
                "p1",
            ),
        ),
        (
            "GBK",
            transform(
                "GBK",
                "beam:transform:group_by_key:v1",
                "",
                Some("p1"),
                "p2",
            ),
        ),
        ("Read", read),
    ] {
        c.transforms.insert(id.into(), t);
    }
    Pipeline {
        components: Some(c),
        root_transform_ids: ["Impulse", "Window", "GBK", "Read"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    }
}

fn plan(p: &Pipeline) -> ferrobeam_graph::Plan {
    let plan = translate(p, &opts()).unwrap_or_else(|e| panic!("{e}"));
    check_invariants(&plan);
    plan
}

fn gbk(plan: &ferrobeam_graph::Plan) -> (&ferrobeam_graph::PortRef, Option<&WindowMerge>) {
    let found = plan.stages.iter().find_map(|s| match &s.kind {
        StageKind::GroupByKey { input, merge, .. } => Some((input, merge.as_deref())),
        _ => None,
    });
    found.expect("a GroupByKey stage")
}

fn is_wrapped_pickle(c: &Coder) -> bool {
    matches!(c, Coder::LengthPrefix(inner) if matches!(**inner, Coder::Unknown { ref urn, .. } if urn == "beam:coder:pickled_python:v1"))
}

#[test]
fn custom_window_coders_are_length_prefixed_on_the_wire_and_in_windowing_strategies() {
    let plan = plan(&pipeline(
        "pickled_window",
        pb::merge_status::Enum::NonMerging,
        ENV,
    ));
    let c = &plan.components;
    let (input, merge) = gbk(&plan);
    assert!(
        merge.is_none(),
        "a non-merging window function needs no merge"
    );
    let Coder::WindowedValue { window, .. } = Coder::from_components(c, &input.coder_id).unwrap()
    else {
        panic!()
    };
    assert!(is_wrapped_pickle(&window), "{window:?}");
    // The SDK encodes state-key windows (side inputs, user state) with the
    // windowing strategy's coder: it must be the very same wrapped coder.
    let ws_window = &c.windowing_strategies["custom"].window_coder_id;
    let Some(pb::Coder {
        component_coder_ids,
        ..
    }) = c.coders.get(&input.coder_id)
    else {
        panic!()
    };
    assert_eq!(&component_coder_ids[1], ws_window);
    assert!(is_wrapped_pickle(
        &Coder::from_components(c, ws_window).unwrap()
    ));
    // Standard window coders are left alone.
    assert_eq!(c.windowing_strategies["global"].window_coder_id, "gw");
    // And every descriptor sees the rewritten strategy.
    for (_, s) in sdk_stages(&plan) {
        assert_eq!(
            &s.descriptor.windowing_strategies["custom"].window_coder_id,
            ws_window
        );
    }
}

#[test]
fn timer_coders_wrap_their_window_like_the_windowing_strategy() {
    let plan = plan(&pipeline(
        "pickled_window",
        pb::merge_status::Enum::NonMerging,
        ENV,
    ));
    let mut c = plan.components.clone();
    let timer = ferrobeam_coders::wrap_unknown_coders(&mut c, "timer");
    assert_ne!(timer, "timer");
    assert_eq!(
        c.coders[&timer].component_coder_ids,
        [
            "bytes",
            c.windowing_strategies["custom"].window_coder_id.as_str()
        ]
    );
    assert!(Coder::from_components(&c, &timer).unwrap().is_skippable());
}

#[test]
fn opaque_windows_under_end_of_window_get_a_note() {
    let plan = plan(&pipeline(
        "pickled_window",
        pb::merge_status::Enum::NonMerging,
        ENV,
    ));
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("'GBK'") && n.contains("latest timestamp")),
        "{:?}",
        plan.notes
    );

    let mut p = pipeline("pickled_window", pb::merge_status::Enum::NonMerging, ENV);
    let ws = p
        .components
        .as_mut()
        .unwrap()
        .windowing_strategies
        .get_mut("custom")
        .unwrap();
    ws.output_time = pb::output_time::Enum::EarliestInPane as i32;
    assert!(!plan_notes(&p)
        .iter()
        .any(|n| n.contains("latest timestamp")));

    // Interval windows of a custom window function are readable: no note.
    let p = pipeline("iw", pb::merge_status::Enum::NonMerging, ENV);
    assert!(!plan_notes(&p)
        .iter()
        .any(|n| n.contains("latest timestamp")));
}

fn plan_notes(p: &Pipeline) -> Vec<String> {
    plan(p).notes
}

#[test]
fn custom_merging_window_fns_get_a_merge_descriptor() {
    let plan = plan(&pipeline("iw", pb::merge_status::Enum::NeedsMerge, ENV));
    let c = &plan.components;
    let (_, merge) = gbk(&plan);
    let m = merge.expect("a merge descriptor");
    assert_eq!(m.environment_id, ENV);
    assert!(plan.environments.contains_key(ENV));
    let d = &m.descriptor;
    assert_eq!(d.transforms.len(), 3);
    let merge_t = d
        .transforms
        .values()
        .find(|t| urn_of(t) == "beam:transform:merge_windows:v1")
        .expect("merge transform");
    assert_eq!(merge_t.environment_id, ENV);
    // Its payload is the window function's own spec.
    let payload = FunctionSpec::decode(merge_t.spec.as_ref().unwrap().payload.as_ref()).unwrap();
    assert_eq!(payload.urn, CUSTOM_FN);
    assert_eq!(&payload.payload[..], b"pickled window fn");

    // Source and sink carry the request and response coders.
    let source = decode_port(&d.transforms[&m.source]);
    let sink = decode_port(&d.transforms[&m.sink]);
    assert_eq!(source.coder_id, m.input_coder_id);
    assert_eq!(sink.coder_id, m.output_coder_id);
    assert_eq!(source.api_service_descriptor.unwrap().url, FN_ENDPOINT);
    let w = || Box::new(Coder::IntervalWindow);
    let ws = || Box::new(Coder::Iterable(w()));
    let kv = |k: Box<Coder>, v: Box<Coder>| Box::new(Coder::Kv { key: k, value: v });
    assert_eq!(
        Coder::from_components(c, &m.input_coder_id).unwrap(),
        Coder::WindowedValue {
            value: kv(Box::new(Coder::Bytes), ws()),
            window: Box::new(Coder::GlobalWindow)
        }
    );
    let merges = Box::new(Coder::Iterable(kv(w(), ws())));
    assert_eq!(
        Coder::from_components(c, &m.output_coder_id).unwrap(),
        Coder::WindowedValue {
            value: kv(Box::new(Coder::Bytes), kv(ws(), merges)),
            window: Box::new(Coder::GlobalWindow)
        }
    );
    assert_eq!(m.window_coder_id, "iw");
    // The descriptor is self-contained.
    for t in d.transforms.values() {
        for pc in t.inputs.values().chain(t.outputs.values()) {
            let p = &d.pcollections[pc];
            assert!(d.coders.contains_key(&p.coder_id));
            let strategy = &d.windowing_strategies[&p.windowing_strategy_id];
            assert_eq!(
                strategy.window_fn.as_ref().unwrap().urn,
                "beam:window_fn:global_windows:v1"
            );
        }
    }
    assert!(d.coders.contains_key(&m.input_coder_id) && d.coders.contains_key(&m.output_coder_id));
}

#[test]
fn merging_custom_windows_of_a_custom_type_use_the_wrapped_window_coder() {
    let plan = plan(&pipeline(
        "pickled_window",
        pb::merge_status::Enum::NeedsMerge,
        ENV,
    ));
    let (input, merge) = gbk(&plan);
    let m = merge.expect("a merge descriptor");
    let c = &plan.components;
    assert!(is_wrapped_pickle(
        &Coder::from_components(c, &m.window_coder_id).unwrap()
    ));
    // The merge speaks the same window encoding as the grouped port.
    assert_eq!(
        c.coders[&input.coder_id].component_coder_ids[1],
        m.window_coder_id
    );
    assert!(Coder::from_components(c, &m.output_coder_id)
        .unwrap()
        .is_skippable());
}

#[test]
fn sessions_and_already_merged_windows_need_no_sdk_merge() {
    let mut p = pipeline("iw", pb::merge_status::Enum::NeedsMerge, ENV);
    let ws = p
        .components
        .as_mut()
        .unwrap()
        .windowing_strategies
        .get_mut("custom")
        .unwrap();
    ws.window_fn = spec("beam:window_fn:session_windows:v1", b"");
    assert!(gbk(&plan(&p)).1.is_none());

    let p = pipeline("iw", pb::merge_status::Enum::AlreadyMerged, ENV);
    assert!(gbk(&plan(&p)).1.is_none());
}

#[test]
fn merge_environment_falls_back_to_the_window_into() {
    let plan = plan(&pipeline("iw", pb::merge_status::Enum::NeedsMerge, ""));
    assert_eq!(gbk(&plan).1.expect("merge").environment_id, ENV);

    // With no environment anywhere (the windows come from a ParDo, not a
    // WindowInto), the GroupByKey is refused by name.
    let mut p = pipeline("iw", pb::merge_status::Enum::NeedsMerge, "");
    let c = p.components.as_mut().unwrap();
    let mut assigned = c.windowing_strategies["custom"].clone();
    assigned.merge_status = pb::merge_status::Enum::NonMerging as i32;
    c.windowing_strategies.insert("assigned".into(), assigned);
    let mut p1w = c.pcollections["p1"].clone();
    p1w.windowing_strategy_id = "assigned".into();
    c.pcollections.insert("p1w".into(), p1w);
    c.transforms.get_mut("Window").unwrap().outputs = HashMap::from([("out".into(), "p1w".into())]);
    let mut rewindow = transform(
        "Rewindow",
        "beam:transform:pardo:v1",
        ENV,
        Some("p1w"),
        "p1",
    );
    let pardo = pb::ParDoPayload {
        do_fn: spec("beam:dofn:pickled_python_info:v1", b"fn"),
        ..Default::default()
    };
    rewindow.spec.as_mut().unwrap().payload = pardo.encode_to_vec().into();
    c.transforms.insert("Rewindow".into(), rewindow);
    p.root_transform_ids = ["Impulse", "Window", "Rewindow", "GBK", "Read"]
        .map(String::from)
        .to_vec();
    match translate(&p, &opts()) {
        Err(e @ GraphError::Unsupported { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("'GBK'") && text.contains("environment"),
                "{text}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
