//! Minimal pipelines built by hand, for edge cases no SDK emits.

mod common;

use std::collections::HashMap;

use common::*;
use ferrobeam_coders::Coder;
use ferrobeam_graph::{translate, GraphError, SideInputAccess, StageKind};
use ferrobeam_proto::pipeline::v1::{self as pb, Components, FunctionSpec, PTransform, Pipeline};
use prost::Message;

const ENV: &str = "env";
const WS: &str = "global";

fn spec(urn: &str, payload: Vec<u8>) -> Option<FunctionSpec> {
    Some(FunctionSpec {
        urn: urn.into(),
        payload: payload.into(),
    })
}

/// A pipeline under construction: pcollections are `KV<bytes, bytes>` in
/// the global window unless said otherwise.
struct B {
    c: Components,
    roots: Vec<String>,
    requirements: Vec<String>,
}

impl B {
    fn new() -> Self {
        let mut c = Components::default();
        for (id, urn, comps) in [
            ("bytes", "beam:coder:bytes:v1", vec![]),
            ("kv", "beam:coder:kv:v1", vec!["bytes", "bytes"]),
            ("iter", "beam:coder:iterable:v1", vec!["bytes"]),
            ("kv_iter", "beam:coder:kv:v1", vec!["bytes", "iter"]),
            ("gw", "beam:coder:global_window:v1", vec![]),
            ("iw", "beam:coder:interval_window:v1", vec![]),
            ("pickled", "beam:coder:pickled_python:v1", vec![]),
        ] {
            c.coders.insert(
                id.into(),
                pb::Coder {
                    spec: spec(urn, vec![]),
                    component_coder_ids: comps.into_iter().map(String::from).collect(),
                },
            );
        }
        c.windowing_strategies.insert(
            WS.into(),
            pb::WindowingStrategy {
                window_fn: spec("beam:window_fn:global_windows:v1", vec![]),
                window_coder_id: "gw".into(),
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
        c.environments.insert(
            "other".into(),
            pb::Environment {
                urn: "beam:env:embedded_python:v1".into(),
                ..Default::default()
            },
        );
        B {
            c,
            roots: vec![],
            requirements: vec![],
        }
    }

    fn pc(&mut self, id: &str, coder: &str) {
        self.c.pcollections.insert(
            id.into(),
            pb::PCollection {
                unique_name: id.into(),
                coder_id: coder.into(),
                windowing_strategy_id: WS.into(),
                ..Default::default()
            },
        );
    }

    fn add(
        &mut self,
        id: &str,
        urn: &str,
        payload: Vec<u8>,
        env: &str,
        inputs: &[(&str, &str)],
        outputs: &[&str],
    ) {
        for o in outputs {
            if !self.c.pcollections.contains_key(*o) {
                self.pc(o, "kv");
            }
        }
        self.c.transforms.insert(
            id.into(),
            PTransform {
                unique_name: id.into(),
                spec: spec(urn, payload),
                environment_id: env.into(),
                inputs: inputs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                outputs: outputs
                    .iter()
                    .enumerate()
                    .map(|(i, o)| (format!("o{i}"), o.to_string()))
                    .collect(),
                ..Default::default()
            },
        );
        self.roots.push(id.into());
    }

    fn impulse(&mut self, id: &str, out: &str) {
        self.add(id, "beam:transform:impulse:v1", vec![], "", &[], &[out]);
    }

    fn pardo(&mut self, id: &str, input: &str, out: &str) {
        self.pardo_with(
            id,
            pb::ParDoPayload::default(),
            ENV,
            &[("main", input)],
            &[out],
        );
    }

    fn pardo_with(
        &mut self,
        id: &str,
        payload: pb::ParDoPayload,
        env: &str,
        inputs: &[(&str, &str)],
        outputs: &[&str],
    ) {
        let mut payload = payload;
        payload.do_fn = spec("beam:dofn:pickled_python_info:v1", b"fn".to_vec());
        self.add(
            id,
            "beam:transform:pardo:v1",
            payload.encode_to_vec(),
            env,
            inputs,
            outputs,
        );
    }

    fn gbk(&mut self, id: &str, input: &str, out: &str) {
        self.pc(out, "kv_iter");
        self.add(
            id,
            "beam:transform:group_by_key:v1",
            vec![],
            "",
            &[("in", input)],
            &[out],
        );
    }

    fn build(&self) -> Pipeline {
        Pipeline {
            components: Some(self.c.clone()),
            root_transform_ids: self.roots.clone(),
            requirements: self.requirements.clone(),
            ..Default::default()
        }
    }

    fn plan(&self) -> ferrobeam_graph::Plan {
        let plan = translate(&self.build(), &opts()).unwrap_or_else(|e| panic!("{e}"));
        check_invariants(&plan);
        plan
    }

    fn err(&self) -> GraphError {
        refusal(&self.build(), &opts())
    }
}

fn side_input(access: &str) -> pb::SideInput {
    pb::SideInput {
        access_pattern: spec(access, vec![]),
        ..Default::default()
    }
}

fn malformed(err: GraphError) -> String {
    match err {
        GraphError::Malformed(m) => m,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

/// Impulse → A → B → GBK → C: the smallest pipeline with every stage kind
/// but Flatten.
fn linear() -> B {
    let mut b = B::new();
    b.impulse("Impulse", "p0");
    b.pardo("A", "p0", "p1");
    b.pardo("B", "p1", "p2");
    b.gbk("GBK", "p2", "p3");
    b.pardo("C", "p3", "p4");
    b
}

#[test]
fn linear_pipeline_fuses_between_native_operations() {
    let plan = linear().plan();
    let kinds: Vec<&str> = plan.stages.iter().map(|s| kind_name(&s.kind)).collect();
    assert_eq!(
        kinds,
        ["impulse", "sdk", "gbk", "sdk"],
        "{}",
        describe(&plan)
    );
    assert_eq!(plan.stages[1].name, "A, B");
    let s = sdk(&plan.stages[1]).unwrap();
    assert_eq!(s.input.as_ref().unwrap().0.pcollection, "p0");
    assert_eq!(s.outputs.len(), 1);
    assert_eq!(s.outputs[0].0.pcollection, "p2");
    // The intermediate p1 stays inside the stage.
    assert!(plan
        .stages
        .iter()
        .flat_map(|s| s.kind.outputs())
        .all(|p| p.pcollection != "p1"));
    // Nobody reads C's output: no sink.
    assert!(sdk(&plan.stages[3]).unwrap().outputs.is_empty());
    assert_eq!(
        plan.environments[ENV],
        ferrobeam_graph::Environment::LocalPython
    );
}

#[test]
fn empty_pipelines_are_malformed() {
    let b = B::new();
    let m = malformed(b.err());
    assert!(m.contains("no transforms"), "{m}");

    let m = malformed(refusal(&Pipeline::default(), &opts()));
    assert!(m.contains("no components"), "{m}");

    // A root that is an empty composite is no transform either.
    let mut b = B::new();
    b.c.transforms.insert(
        "root".into(),
        PTransform {
            unique_name: "root".into(),
            ..Default::default()
        },
    );
    b.roots.push("root".into());
    malformed(b.err());
}

#[test]
fn unknown_root_transform_is_malformed() {
    let mut b = linear();
    b.roots.push("ghost".into());
    let m = malformed(b.err());
    assert!(m.contains("ghost"), "{m}");
}

#[test]
fn missing_producer_is_malformed() {
    let mut b = B::new();
    b.impulse("Impulse", "p0");
    b.pc("nowhere", "kv");
    b.pardo("A", "nowhere", "p1");
    let m = malformed(b.err());
    assert!(
        m.contains("nowhere") && m.contains("produced by no transform"),
        "{m}"
    );

    // Also for a side input.
    let mut b = B::new();
    b.impulse("Impulse", "p0");
    b.pc("nowhere", "kv");
    let payload = pb::ParDoPayload {
        side_inputs: HashMap::from([(
            "side".to_owned(),
            side_input("beam:side_input:iterable:v1"),
        )]),
        ..Default::default()
    };
    b.pardo_with(
        "A",
        payload,
        ENV,
        &[("main", "p0"), ("side", "nowhere")],
        &["p1"],
    );
    let m = malformed(b.err());
    assert!(m.contains("nowhere"), "{m}");
}

#[test]
fn cycle_through_a_native_operation_is_malformed() {
    // Impulse → A(p0, p3) → GBK → B → A: every stage waits for another.
    let mut b = B::new();
    b.impulse("Impulse", "p0");
    b.pc("p3", "kv");
    let payload = pb::ParDoPayload {
        side_inputs: HashMap::from([(
            "side".to_owned(),
            side_input("beam:side_input:iterable:v1"),
        )]),
        ..Default::default()
    };
    b.pardo_with(
        "A",
        payload,
        ENV,
        &[("main", "p0"), ("side", "p3")],
        &["p1"],
    );
    b.gbk("GBK", "p1", "p2");
    b.pardo("B", "p2", "p3");
    let m = malformed(b.err());
    assert!(m.contains("cycle"), "{m}");
}

#[test]
fn cycle_between_sdk_transforms_is_malformed() {
    // A reads B's output and B reads A's: fusing them into one stage must
    // not hide the cycle.
    let mut b = B::new();
    b.pc("p2", "kv");
    b.pardo("A", "p2", "p1");
    b.pardo("B", "p1", "p2");
    let m = malformed(b.err());
    assert!(m.contains("cycle"), "{m}");
}

#[test]
fn transform_reading_its_own_output_is_malformed() {
    let mut b = B::new();
    b.impulse("Impulse", "p0");
    b.pc("p1", "kv");
    let payload = pb::ParDoPayload {
        side_inputs: HashMap::from([(
            "side".to_owned(),
            side_input("beam:side_input:iterable:v1"),
        )]),
        ..Default::default()
    };
    b.pardo_with(
        "A",
        payload,
        ENV,
        &[("main", "p0"), ("side", "p1")],
        &["p1"],
    );
    let m = malformed(b.err());
    assert!(m.contains("cycle"), "{m}");
}

#[test]
fn unknown_requirements_are_refused() {
    let mut b = linear();
    b.requirements = vec![
        "beam:requirement:pardo:stateful:v1".into(),
        "beam:requirement:pardo:on_window_expiration:v1".into(),
    ];
    match b.err() {
        GraphError::Requirement(r) => {
            assert_eq!(r, "beam:requirement:pardo:on_window_expiration:v1")
        }
        other => panic!("{other:?}"),
    }
    b.requirements.pop();
    b.plan();
}

#[test]
fn unknown_pcollection_coder_is_malformed() {
    let mut b = linear();
    b.c.pcollections.get_mut("p1").unwrap().coder_id = "no_such_coder".into();
    let m = malformed(b.err());
    assert!(m.contains("no_such_coder"), "{m}");
}

fn assert_unsupported(err: GraphError, name: &str, urn: &str, needle: &str) {
    let text = err.to_string();
    match &err {
        GraphError::Unsupported {
            name: n, urn: u, ..
        } => {
            assert_eq!(n, name, "{text}");
            assert_eq!(u, urn, "{text}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(
        text.contains(&format!("'{name}'")) && text.contains(urn),
        "{text}"
    );
    assert!(text.contains(needle), "{text}");
}

#[test]
fn test_stream_and_merge_windows_are_refused() {
    use pb::test_stream_payload::{event, Event};
    let element = |ts: i64| pb::test_stream_payload::TimestampedElement {
        encoded_element: vec![1, 2].into(),
        timestamp: ts,
    };
    let stream = |events: Vec<event::Event>| {
        pb::TestStreamPayload {
            coder_id: "bytes".into(),
            events: events
                .into_iter()
                .map(|e| Event { event: Some(e) })
                .collect(),
            endpoint: None,
        }
        .encode_to_vec()
    };
    let watermark = |ms: i64| {
        event::Event::WatermarkEvent(event::AdvanceWatermark {
            new_watermark: ms,
            tag: "out".into(),
        })
    };
    let elements = |ts: i64| {
        event::Event::ElementEvent(event::AddElements {
            elements: vec![element(ts)],
            tag: "out".into(),
        })
    };
    let pipeline = |payload: Vec<u8>| {
        let mut b = B::new();
        b.pc("ts", "bytes");
        b.add(
            "TS",
            "beam:transform:teststream:v1",
            payload,
            ENV,
            &[],
            &["ts"],
        );
        b.pardo("A", "ts", "p1");
        b
    };
    // On-time elements replay as a bounded source stage.
    let plan = pipeline(stream(vec![elements(5), watermark(10), elements(10)])).plan();
    assert_eq!(
        kind_name(&plan.stages[0].kind),
        "test_stream",
        "{}",
        describe(&plan)
    );
    // Late data needs streaming semantics: refused, not replayed wrong.
    let late = pipeline(stream(vec![watermark(10), elements(5)]));
    assert_unsupported(
        late.err(),
        "TS",
        "beam:transform:teststream:v1",
        "late data",
    );
    // A keyed output the stream's own (non-KV) coder cannot provide: an SDK
    // Flatten re-encodes the stream's elements into the key-value coder.
    let mut keyed = B::new();
    keyed.add(
        "TS",
        "beam:transform:teststream:v1",
        stream(vec![elements(5)]),
        ENV,
        &[],
        &["ts"],
    );
    keyed.pardo("A", "ts", "p1");
    let plan = keyed.plan();
    let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.iter().any(|n| n.contains("TS/ToKeyValueCoder")),
        "{}",
        describe(&plan)
    );
    let after_pt = pipeline(stream(vec![
        event::Event::ProcessingTimeEvent(event::AdvanceProcessingTime {
            advance_duration: 5,
        }),
        elements(5),
    ]));
    assert_unsupported(
        after_pt.err(),
        "TS",
        "beam:transform:teststream:v1",
        "processing-time",
    );

    let mut b = linear();
    b.add(
        "MW",
        "beam:transform:merge_windows:v1",
        vec![],
        ENV,
        &[("in", "p1")],
        &["mw"],
    );
    assert_unsupported(b.err(), "MW", "beam:transform:merge_windows:v1", "merging");
}

#[test]
fn sdk_transform_without_environment_is_refused() {
    let mut b = B::new();
    b.impulse("Impulse", "p0");
    b.pardo_with(
        "NoEnv",
        pb::ParDoPayload::default(),
        "",
        &[("main", "p0")],
        &["p1"],
    );
    assert_unsupported(b.err(), "NoEnv", "beam:transform:pardo:v1", "environment");
}

#[test]
fn leaf_without_urn_is_refused() {
    let mut b = B::new();
    b.impulse("Impulse", "p0");
    b.add("Blank", "", vec![], ENV, &[("in", "p0")], &["p1"]);
    assert_unsupported(b.err(), "Blank", "", "without a URN");
}

#[test]
fn gbk_with_an_invalid_trigger_or_custom_windows_is_refused() {
    let count = |n: i32| {
        let mut b = linear();
        b.c.windowing_strategies.get_mut(WS).unwrap().trigger = Some(pb::Trigger {
            trigger: Some(pb::trigger::Trigger::ElementCount(
                pb::trigger::ElementCount { element_count: n },
            )),
        });
        b
    };
    count(2).plan();
    assert_unsupported(
        count(0).err(),
        "GBK",
        "beam:transform:group_by_key:v1",
        "trigger",
    );
    let mut b = linear();
    b.c.windowing_strategies
        .get_mut(WS)
        .unwrap()
        .accumulation_mode = pb::accumulation_mode::Enum::Retracting as i32;
    assert_unsupported(
        b.err(),
        "GBK",
        "beam:transform:group_by_key:v1",
        "RETRACTING",
    );

    // An explicit Default trigger is fine.
    let mut b = linear();
    b.c.windowing_strategies.get_mut(WS).unwrap().trigger = Some(pb::Trigger {
        trigger: Some(pb::trigger::Trigger::Default(pb::trigger::Default {})),
    });
    b.plan();
}

#[test]
fn unsupported_pardo_features_are_refused() {
    let timer = pb::ParDoPayload {
        timer_family_specs: HashMap::from([("t".to_owned(), pb::TimerFamilySpec::default())]),
        ..Default::default()
    };
    let map_state = pb::ParDoPayload {
        state_specs: HashMap::from([(
            "m".to_owned(),
            pb::StateSpec {
                spec: Some(pb::state_spec::Spec::MapSpec(pb::MapStateSpec::default())),
                ..Default::default()
            },
        )]),
        ..Default::default()
    };
    let expiry = pb::ParDoPayload {
        on_window_expiration_timer_family_spec: "gc".into(),
        ..Default::default()
    };
    let bad_side = pb::ParDoPayload {
        side_inputs: HashMap::from([("s".to_owned(), side_input("beam:side_input:weird:v1"))]),
        ..Default::default()
    };
    let stateful_sdf = pb::ParDoPayload {
        state_specs: HashMap::from([(
            "b".to_owned(),
            pb::StateSpec {
                spec: Some(pb::state_spec::Spec::BagSpec(pb::BagStateSpec {
                    element_coder_id: "bytes".into(),
                })),
                ..Default::default()
            },
        )]),
        restriction_coder_id: "bytes".into(),
        ..Default::default()
    };
    let cases: Vec<(pb::ParDoPayload, &str)> = vec![
        (timer, "time domain"),
        (map_state, "state 'm'"),
        (expiry, "OnWindowExpiration"),
        (bad_side, "beam:side_input:weird:v1"),
        (stateful_sdf, "splittable DoFn with state"),
    ];
    for (payload, needle) in cases {
        let mut b = B::new();
        b.impulse("Impulse", "p0");
        b.pc("s0", "kv");
        let mut inputs = vec![("main", "p0")];
        if !payload.side_inputs.is_empty() {
            b.pardo("S", "p0", "s0");
            inputs.push(("s", "s0"));
        }
        b.pardo_with("Bad", payload, ENV, &inputs, &["p1"]);
        assert_unsupported(b.err(), "Bad", "beam:transform:pardo:v1", needle);
    }

    // Undecodable payloads too.
    let mut b = B::new();
    b.impulse("Impulse", "p0");
    b.add(
        "Garbage",
        "beam:transform:pardo:v1",
        vec![0xff, 0xff, 0xff],
        ENV,
        &[("main", "p0")],
        &["p1"],
    );
    assert_unsupported(
        b.err(),
        "Garbage",
        "beam:transform:pardo:v1",
        "ParDoPayload",
    );
}

#[test]
fn different_environments_do_not_fuse() {
    let mut b = B::new();
    b.impulse("Impulse", "p0");
    b.pardo("A", "p0", "p1");
    b.pardo_with(
        "B",
        pb::ParDoPayload::default(),
        "other",
        &[("main", "p1")],
        &["p2"],
    );
    b.pardo("C", "p2", "p3");
    let plan = b.plan();
    let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Impulse", "A", "B", "C"], "{}", describe(&plan));
    assert_eq!(sdk(&plan.stages[2]).unwrap().environment_id, "other");
    assert_eq!(plan.environments.len(), 2);
}

#[test]
fn side_input_from_the_same_stage_forces_a_boundary() {
    // A → B, and C reads A's output as main input and B's as a side input:
    // C cannot join A's stage, which would then wait for itself.
    let mut b = B::new();
    b.impulse("Impulse", "p0");
    b.pardo("A", "p0", "p1");
    b.pardo("B", "p1", "p2");
    let payload = pb::ParDoPayload {
        side_inputs: HashMap::from([(
            "side".to_owned(),
            side_input("beam:side_input:multimap:v1"),
        )]),
        ..Default::default()
    };
    b.pardo_with(
        "C",
        payload,
        ENV,
        &[("main", "p1"), ("side", "p2")],
        &["p3"],
    );
    b.pardo("D", "p3", "p4");
    let plan = b.plan();
    let listing = describe(&plan);
    let (a, sa) = stage_running(&plan, "A");
    let (bb, _) = stage_running(&plan, "B");
    let (c, sc) = stage_running(&plan, "C");
    let (d, _) = stage_running(&plan, "D");
    assert_eq!(a, bb, "{listing}");
    assert!(a < c, "{listing}");
    assert_eq!(c, d, "{listing}");
    // A's stage writes p1 (C's main input) and p2 (C's side input).
    let written: Vec<&str> = sa
        .outputs
        .iter()
        .map(|(p, _)| p.pcollection.as_str())
        .collect();
    assert_eq!(written, ["p1", "p2"]);
    assert_eq!(sc.side_inputs.len(), 1);
    assert_eq!(sc.side_inputs[0].access, SideInputAccess::Multimap);
    assert_eq!(sc.side_inputs[0].port.pcollection, "p2");
    assert_eq!(sc.side_inputs[0].local_name, "side");
    assert_eq!(sc.input.as_ref().unwrap().0.pcollection, "p1");
}

#[test]
fn opaque_coders_are_length_prefixed_on_every_port() {
    let mut b = B::new();
    b.pc("p1", "pickled");
    b.impulse("Impulse", "p0");
    b.pardo("A", "p0", "p1");
    b.add(
        "Reshuffle",
        "beam:transform:reshuffle:v1",
        vec![],
        ENV,
        &[("in", "p1")],
        &["p2"],
    );
    b.c.pcollections.get_mut("p2").unwrap().coder_id = "pickled".into();
    b.pardo("B", "p2", "p3");
    let plan = b.plan();
    let c = &plan.components;
    for pc in ["p1", "p2"] {
        let coder = Coder::from_components(c, &c.pcollections[pc].coder_id).unwrap();
        match coder {
            Coder::LengthPrefix(inner) => {
                assert!(
                    matches!(*inner, Coder::Unknown { ref urn, .. } if urn == "beam:coder:pickled_python:v1")
                )
            }
            other => panic!("{pc}: {other:?}"),
        }
    }
    // The reshuffle is native, and its ports carry the wrapped coder.
    let id = plan
        .stages
        .iter()
        .find(|s| matches!(s.kind, StageKind::Identity { .. }))
        .expect("identity stage");
    let StageKind::Identity { input, output } = &id.kind else {
        unreachable!()
    };
    assert_eq!(
        (input.pcollection.as_str(), output.pcollection.as_str()),
        ("p1", "p2")
    );
    for port in [input, output] {
        match Coder::from_components(c, &port.coder_id).unwrap() {
            Coder::WindowedValue { value, window } => {
                assert!(matches!(*value, Coder::LengthPrefix(_)));
                assert_eq!(*window, Coder::GlobalWindow);
            }
            other => panic!("{other:?}"),
        }
    }
    // A descriptor's pcollection uses the wrapped coder too.
    let (_, sa) = stage_running(&plan, "A");
    assert_eq!(
        sa.descriptor.pcollections["p1"].coder_id,
        c.pcollections["p1"].coder_id
    );
}

#[test]
fn splittable_dofn_is_expanded_with_a_boundary() {
    let mut b = B::new();
    b.impulse("Impulse", "p0");
    let payload = pb::ParDoPayload {
        restriction_coder_id: "pickled".into(),
        ..Default::default()
    };
    b.pardo_with("Read", payload, ENV, &[("main", "p0")], &["p1"]);
    b.pardo("After", "p1", "p2");
    b.requirements = vec!["beam:requirement:pardo:splittable_dofn:v1".into()];
    let plan = b.plan();
    let listing = describe(&plan);
    let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Impulse",
            "Read/PairWithRestriction, Read/SplitAndSizeRestrictions",
            "Read/Process, After"
        ],
        "{listing}"
    );
    let s = sdk(&plan.stages[2]).unwrap();
    let process_id = transform_id(&plan.components, "Read/Process");
    assert_eq!(s.residual_target.as_deref(), Some(process_id.as_str()));
    assert_eq!(sdk(&plan.stages[1]).unwrap().residual_target, None);
    // The process transform keeps the original outputs.
    assert_eq!(
        s.descriptor.transforms[&process_id]
            .outputs
            .values()
            .next()
            .map(String::as_str),
        Some("p1")
    );
    // The restriction coder (opaque) is wrapped inside the sized KV.
    let (port, _) = s.input.as_ref().unwrap();
    match Coder::from_components(&plan.components, &port.coder_id).unwrap() {
        Coder::WindowedValue { value, .. } => match *value {
            Coder::Kv { key, value } => {
                assert_eq!(*value, Coder::Double);
                match *key {
                    Coder::Kv {
                        value: restriction, ..
                    } => assert!(matches!(*restriction, Coder::LengthPrefix(_))),
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn flatten_of_three_inputs_from_two_stages() {
    let mut b = B::new();
    b.impulse("Impulse", "p0");
    b.pardo("A", "p0", "a");
    b.pardo("B", "a", "b");
    b.impulse("Impulse2", "q0");
    b.pardo("C", "q0", "c");
    b.add(
        "Flatten",
        "beam:transform:flatten:v1",
        vec![],
        ENV,
        &[("0", "a"), ("1", "b"), ("2", "c")],
        &["f"],
    );
    b.gbk("GBK", "f", "g");
    let plan = b.plan();
    let listing = describe(&plan);
    let f = plan
        .stages
        .iter()
        .find(|s| s.name == "Flatten")
        .expect("flatten stage");
    let StageKind::Flatten { inputs, output } = &f.kind else {
        unreachable!()
    };
    let mut pcs: Vec<&str> = inputs.iter().map(|p| p.pcollection.as_str()).collect();
    pcs.sort();
    assert_eq!(pcs, ["a", "b", "c"], "{listing}");
    assert_eq!(output.pcollection, "f");
    // A's stage writes both a and b (b is made from a inside the stage).
    let (_, sa) = stage_running(&plan, "A");
    let written: Vec<&str> = sa
        .outputs
        .iter()
        .map(|(p, _)| p.pcollection.as_str())
        .collect();
    assert_eq!(written, ["a", "b"]);
}

#[test]
fn roots_out_of_order_still_fuse_producers_first() {
    let mut b = linear();
    let in_order = describe(&b.plan());
    b.roots.reverse();
    assert_eq!(describe(&b.plan()), in_order);

    // With C (main input from A, side input from B) listed before B, B
    // must not be fused after C into A's stage, which would make the
    // stage wait for its own output.
    let mut b = B::new();
    b.impulse("Impulse", "p0");
    b.pardo("A", "p0", "p1");
    let payload = pb::ParDoPayload {
        side_inputs: HashMap::from([(
            "side".to_owned(),
            side_input("beam:side_input:iterable:v1"),
        )]),
        ..Default::default()
    };
    b.pc("p2", "kv");
    b.pardo_with(
        "C",
        payload,
        ENV,
        &[("main", "p1"), ("side", "p2")],
        &["p3"],
    );
    b.pardo("B", "p1", "p2");
    let plan = b.plan();
    let (a, _) = stage_running(&plan, "A");
    let (bb, _) = stage_running(&plan, "B");
    let (c, _) = stage_running(&plan, "C");
    assert_eq!(a, bb, "{}", describe(&plan));
    assert!(bb < c, "{}", describe(&plan));
}

#[test]
fn environment_errors_name_a_transform_using_it() {
    let mut b = linear();
    b.c.environments.insert(
        ENV.into(),
        pb::Environment {
            urn: "beam:env:mystery:v1".into(),
            ..Default::default()
        },
    );
    let err = b.err();
    let text = err.to_string();
    match &err {
        GraphError::Environment {
            transform, id, urn, ..
        } => {
            assert_eq!(transform, "'A' (beam:transform:pardo:v1)");
            assert_eq!(id, ENV);
            assert_eq!(urn, "beam:env:mystery:v1");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        text.contains("'A'") && text.contains("beam:env:mystery:v1"),
        "{text}"
    );

    // An external environment without an endpoint, a process one without a command.
    for (urn, payload, needle) in [
        (
            "beam:env:external:v1",
            pb::ExternalPayload::default().encode_to_vec(),
            "endpoint",
        ),
        (
            "beam:env:process:v1",
            pb::ProcessPayload::default().encode_to_vec(),
            "command",
        ),
    ] {
        let mut b = linear();
        b.c.environments.insert(
            ENV.into(),
            pb::Environment {
                urn: urn.into(),
                payload: payload.into(),
                ..Default::default()
            },
        );
        let text = b.err().to_string();
        assert!(
            text.contains("'A'") && text.contains(urn) && text.contains(needle),
            "{text}"
        );
    }

    // An environment id missing from the components.
    let mut b = linear();
    b.c.environments.remove(ENV);
    let m = malformed(b.err());
    assert!(m.contains("'A'") && m.contains(ENV), "{m}");
}

/// Impulse → A → WriteLines(dir): the sink is one native stage, its
/// expansion (here a ParDo) ignored.
fn with_line_sink(coder: &str, payload: &str) -> B {
    let mut b = B::new();
    b.impulse("Impulse", "p0");
    b.pc("lines", coder);
    b.pardo("A", "p0", "lines");
    b.add(
        "Write",
        "ferrobeam:transform:write_lines:v1",
        payload.as_bytes().to_vec(),
        "",
        &[("in", "lines")],
        &[],
    );
    b.pardo("Write/Fallback", "lines", "ignored");
    b.c.transforms.get_mut("Write").unwrap().subtransforms = vec!["Write/Fallback".into()];
    b.roots.retain(|r| r != "Write/Fallback");
    b
}

#[test]
fn write_lines_is_a_native_sink_of_bytes_or_text() {
    let plan = with_line_sink("bytes", r#"{"directory": "/tmp/out"}"#).plan();
    let sinks: Vec<_> = plan
        .stages
        .iter()
        .filter_map(|s| match &s.kind {
            StageKind::LineSink {
                directory, input, ..
            } => Some((directory.clone(), input.pcollection.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        sinks,
        [(std::path::PathBuf::from("/tmp/out"), "lines".to_owned())]
    );
    assert!(
        !describe(&plan).contains("Write/Fallback"),
        "the fallback expansion must not run: {}",
        describe(&plan)
    );
}

#[test]
fn write_lines_refuses_what_it_cannot_write() {
    let err = with_line_sink("kv", r#"{"directory": "/tmp/out"}"#)
        .err()
        .to_string();
    assert!(
        err.contains("ferrobeam:transform:write_lines:v1") && err.contains("beam.Map(str)"),
        "{err}"
    );
    let err = with_line_sink("bytes", r#"{"directory": "relative"}"#)
        .err()
        .to_string();
    assert!(err.contains("absolute path"), "{err}");
    let err = with_line_sink("bytes", "not json").err().to_string();
    assert!(err.contains("\"directory\""), "{err}");
}
