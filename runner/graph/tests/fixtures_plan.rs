//! Translating pipelines the real Beam Python SDK built (see
//! `fixtures/make_fixtures.py`): the shape of the plan, the stage
//! boundaries, coders, descriptors and refusals.

mod common;

use std::collections::HashSet;

use common::*;
use ferrobeam_coders::Coder;
use ferrobeam_graph::{Environment, GraphError, SideInputAccess, StageKind, TranslateOptions};
use ferrobeam_proto::pipeline::v1 as pb;
use prost::Message;

const ALL_OK: &[&str] = &[
    "wordcount",
    "side_inputs",
    "flatten",
    "stateful",
    "sessions",
    "process_env",
];

#[test]
fn every_fixture_satisfies_the_plan_invariants() {
    for name in ALL_OK {
        let plan = plan_of(name);
        assert!(!plan.stages.is_empty(), "{name}");
    }
}

/// Every transform the SDK would execute runs in exactly one stage, and
/// native transforms in none.
#[test]
fn every_sdk_transform_runs_in_exactly_one_stage() {
    for name in ALL_OK {
        let plan = plan_of(name);
        // Expanding the original again yields the same ids as translation did.
        let original = load(name);
        let mut components = original.components.clone().unwrap();
        let roots = original.root_transform_ids;
        let leaves = ferrobeam_graph::leaves::collect(&mut components, &roots).unwrap();
        for leaf in &leaves {
            let stages: Vec<&str> = plan
                .stages
                .iter()
                .filter(|s| sdk(s).is_some_and(|k| k.descriptor.transforms.contains_key(&leaf.id)))
                .map(|s| s.id.as_str())
                .collect();
            match leaf.kind {
                ferrobeam_graph::leaves::LeafKind::Sdk { .. } => {
                    assert_eq!(stages.len(), 1, "{name}: {} in stages {stages:?}", leaf.id)
                }
                _ => assert!(
                    stages.is_empty(),
                    "{name}: native {} in SDK stages {stages:?}",
                    leaf.id
                ),
            }
        }
    }
}

/// The runner must be able to delimit every element: coders it cannot
/// parse are length-prefixed, the ones it can are left alone.
#[test]
fn unparseable_coders_are_length_prefixed_and_parseable_ones_kept() {
    for name in ALL_OK {
        let original = load(name);
        let before = original.components.as_ref().unwrap();
        let plan = plan_of(name);
        let mut wrapped = 0;
        for (id, pc) in &before.pcollections {
            let after = &plan.components.pcollections[id];
            let old = Coder::from_components(before, &pc.coder_id).unwrap();
            let new = assert_skippable(&plan.components, &after.coder_id, &format!("{name}: {id}"));
            if old.is_skippable() {
                assert_eq!(
                    after.coder_id, pc.coder_id,
                    "{name}: {id} had a parseable coder and must keep it"
                );
            } else {
                wrapped += 1;
                assert_ne!(after.coder_id, pc.coder_id, "{name}: {id}");
                assert!(contains_length_prefix(&new), "{name}: {id} coder {new:?}");
                match &old {
                    // An opaque SDK coder sits whole inside a length prefix.
                    Coder::Unknown { .. } => assert_eq!(
                        new,
                        Coder::LengthPrefix(Box::new(old.clone())),
                        "{name}: {id}"
                    ),
                    // A standard composite keeps its shape; only parts get wrapped.
                    _ => assert_eq!(new.urn(), old.urn(), "{name}: {id}"),
                }
            }
        }
        // Python's pickling coders appear in every fixture.
        assert!(
            wrapped > 0,
            "{name}: expected some pickled coders to be wrapped"
        );
    }
}

fn contains_length_prefix(c: &Coder) -> bool {
    match c {
        Coder::LengthPrefix(_) => true,
        Coder::Kv { key, value } => contains_length_prefix(key) || contains_length_prefix(value),
        Coder::Iterable(c) | Coder::Nullable(c) => contains_length_prefix(c),
        Coder::WindowedValue { value, window } => {
            contains_length_prefix(value) || contains_length_prefix(window)
        }
        _ => false,
    }
}

/// GroupByKey writes the key and value bytes it read, so its output coder
/// must be KV<same key, iterable<same value>> on the wire.
#[test]
fn gbk_output_reuses_the_input_key_and_value_encodings() {
    for name in ALL_OK {
        let plan = plan_of(name);
        for s in &plan.stages {
            if let StageKind::GroupByKey { input, output, .. } = &s.kind {
                let c = &plan.components;
                let (
                    Coder::WindowedValue {
                        value: iv,
                        window: iw,
                    },
                    Coder::WindowedValue {
                        value: ov,
                        window: ow,
                    },
                ) = (
                    Coder::from_components(c, &input.coder_id).unwrap(),
                    Coder::from_components(c, &output.coder_id).unwrap(),
                )
                else {
                    panic!("not windowed values")
                };
                assert_eq!(iw, ow, "{name} {}: window coder", s.name);
                let (
                    Coder::Kv {
                        key: ik,
                        value: ivv,
                    },
                    Coder::Kv {
                        key: ok,
                        value: ovv,
                    },
                ) = (*iv, *ov)
                else {
                    panic!("{name} {}: not KVs", s.name)
                };
                assert_eq!(ik, ok, "{name} {}: key encoding", s.name);
                assert_eq!(
                    *ovv,
                    Coder::Iterable(ivv),
                    "{name} {}: grouped values encoding",
                    s.name
                );
            }
        }
    }
}

#[test]
fn wordcount_stages() {
    let plan = plan_of("wordcount");
    let listing = describe(&plan);
    let counts = kind_counts(&plan);
    // Read's and the write's DoOnce Impulses; Count's and the write's GroupByKey.
    assert_eq!(counts.get("impulse"), Some(&2), "{listing}");
    assert_eq!(counts.get("gbk"), Some(&2), "{listing}");
    assert_eq!(counts.get("flatten"), None, "{listing}");
    assert_eq!(plan.stages.len(), 11, "{listing}");

    // Combiner lifting: precombine fuses with the producer, merge and
    // extract run after the native GroupByKey.
    let (pre, _) = stage_running(&plan, "Count/Precombine");
    let (pair, _) = stage_running(&plan, "Pair");
    let (split, _) = stage_running(&plan, "Split");
    assert_eq!(pre, pair);
    assert_eq!(pre, split);
    let gbk = plan
        .stages
        .iter()
        .position(|s| s.name == "Count/Group")
        .expect("Count/Group stage");
    assert!(
        matches!(plan.stages[gbk].kind, StageKind::GroupByKey { .. }),
        "{listing}"
    );
    let (merge, _) = stage_running(&plan, "Count/Merge");
    let (extract, _) = stage_running(&plan, "Count/ExtractOutputs");
    let (format, _) = stage_running(&plan, "Format");
    assert!(pre < gbk && gbk < merge, "{listing}");
    assert_eq!(merge, extract);
    assert_eq!(merge, format);

    // The GroupByKey reads exactly what the precombine stage writes.
    let StageKind::GroupByKey {
        input, windowing, ..
    } = &plan.stages[gbk].kind
    else {
        unreachable!()
    };
    let pre_stage = sdk(&plan.stages[pre]).unwrap();
    assert!(
        pre_stage.outputs.iter().any(|(p, _)| p == input),
        "{listing}"
    );
    assert_eq!(
        windowing.window_fn.as_ref().unwrap().urn,
        "beam:window_fn:global_windows:v1"
    );
    // Python's keys are pickled: the runner sees them length-prefixed.
    match Coder::from_components(&plan.components, &input.coder_id).unwrap() {
        Coder::WindowedValue { value, window } => {
            assert_eq!(*window, Coder::GlobalWindow);
            match *value {
                Coder::Kv { key, .. } => {
                    assert!(matches!(*key, Coder::LengthPrefix(_)), "key coder {key:?}")
                }
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wordcount_sdf_read_gets_a_stage_boundary_before_process() {
    let plan = plan_of("wordcount");
    let listing = describe(&plan);
    let base = "Read/Read/SDFBoundedSourceReader/ParDo(SDFBoundedSourceDoFn)";
    let (emit, _) = stage_running(&plan, "Read/Read/EmitSource");
    let (pair, pair_stage) = stage_running(&plan, &format!("{base}/PairWithRestriction"));
    let (split, _) = stage_running(&plan, &format!("{base}/SplitAndSizeRestrictions"));
    let (process, process_stage) = stage_running(&plan, &format!("{base}/Process"));
    assert_eq!(emit, pair, "{listing}");
    assert_eq!(pair, split, "{listing}");
    assert!(
        split < process,
        "the process step must start a later stage:\n{listing}"
    );

    // The parts have the SDF URNs, chained through the new pcollections.
    let d = &process_stage.descriptor;
    let (process_id, process_t) = d
        .transforms
        .iter()
        .find(|(_, t)| t.unique_name == format!("{base}/Process"))
        .unwrap();
    assert_eq!(
        urn_of(process_t),
        "beam:transform:sdf_process_sized_element_and_restrictions:v1"
    );
    let pair_t = pair_stage
        .descriptor
        .transforms
        .values()
        .find(|t| t.unique_name.ends_with("/PairWithRestriction"))
        .unwrap();
    let split_t = pair_stage
        .descriptor
        .transforms
        .values()
        .find(|t| t.unique_name.ends_with("/SplitAndSizeRestrictions"))
        .unwrap();
    assert_eq!(
        urn_of(pair_t),
        "beam:transform:sdf_pair_with_restriction:v1"
    );
    assert_eq!(
        urn_of(split_t),
        "beam:transform:sdf_split_and_size_restrictions:v1"
    );
    let paired = pair_t.outputs.values().next().unwrap();
    assert_eq!(split_t.inputs.values().next(), Some(paired));
    let sized = split_t.outputs.values().next().unwrap();
    assert_eq!(process_t.inputs.values().next(), Some(sized));

    // The process stage starts at the sized restrictions, and residuals
    // (checkpoints, splits) go back to the process transform.
    let (port, source) = process_stage.input.as_ref().expect("process stage input");
    assert_eq!(&port.pcollection, sized);
    assert_eq!(d.transforms[source].outputs.values().next(), Some(sized));
    assert_eq!(
        process_stage.residual_target.as_deref(),
        Some(process_id.as_str())
    );
    assert!(process_stage.descriptor.transforms[process_id]
        .inputs
        .values()
        .any(|pc| pc == sized));
    // Sized elements are KV<KV<element, restriction>, double>.
    match Coder::from_components(&plan.components, &port.coder_id).unwrap() {
        Coder::WindowedValue { value, .. } => match *value {
            Coder::Kv { key, value } => {
                assert!(matches!(*key, Coder::Kv { .. }), "{key:?}");
                assert_eq!(*value, Coder::Double);
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }

    // Only the SDF process stage takes residuals.
    let with_residuals: Vec<&str> = sdk_stages(&plan)
        .into_iter()
        .filter(|(_, s)| s.residual_target.is_some())
        .map(|(st, _)| st.id.as_str())
        .collect();
    assert_eq!(with_residuals, vec![plan.stages[process].id.as_str()]);
    assert!(sdk_stages(&plan).iter().all(|(_, s)| !s.keyed));
}

#[test]
fn wordcount_write_side_inputs_are_iterables_from_earlier_stages() {
    let plan = plan_of("wordcount");
    let (n, s) = stage_running(&plan, "Write/Write/WriteImpl/FinalizeWrite");
    let names: HashSet<&str> = s
        .side_inputs
        .iter()
        .map(|si| si.local_name.as_str())
        .collect();
    assert_eq!(
        names,
        HashSet::from([
            "python_side_input0",
            "python_side_input1",
            "python_side_input2"
        ])
    );
    for si in &s.side_inputs {
        assert_eq!(si.access, SideInputAccess::Iterable);
        let producer = plan
            .stages
            .iter()
            .position(|st| st.kind.outputs().contains(&&si.port))
            .unwrap();
        assert!(producer < n);
    }
    let (_, wb) = stage_running(&plan, "Write/Write/WriteImpl/WriteBundles");
    assert_eq!(wb.side_inputs.len(), 1);
    assert_eq!(
        wb.side_inputs[0].transform_id,
        transform_id(&plan.components, "Write/Write/WriteImpl/WriteBundles")
    );
}

#[test]
fn default_docker_image_runs_locally_with_a_note_unless_strict() {
    let plan = plan_of("wordcount");
    assert_eq!(plan.environments.len(), 1);
    assert_eq!(
        plan.environments.values().next(),
        Some(&Environment::LocalPython)
    );
    assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
    assert!(
        plan.notes[0].contains("apache/beam_python3.11_sdk:2.77.0"),
        "{:?}",
        plan.notes
    );

    let strict = TranslateOptions {
        strict_environments: true,
        ..opts()
    };
    let err = refusal(&load("wordcount"), &strict);
    assert!(matches!(err, GraphError::Environment { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("beam:env:docker:v1"), "{text}");
    assert!(text.contains("apache/beam_python3.11_sdk:2.77.0"), "{text}");
    assert!(text.contains("strict"), "{text}");
    assert_names_a_user_of_the_environment(&load("wordcount"), &text);
}

#[test]
fn docker_with_a_non_beam_image_is_refused() {
    let p = load("docker_custom");
    let err = refusal(&p, &opts());
    assert!(matches!(err, GraphError::Environment { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("beam:env:docker:v1"), "{text}");
    assert!(text.contains("python:3.11-slim"), "{text}");
    assert!(text.contains("LOOPBACK"), "a suggestion: {text}");
    assert_names_a_user_of_the_environment(&p, &text);
}

/// Environment refusals must say which transform needs the environment,
/// with its URN (ARCHITECTURE.md §3.1).
fn assert_names_a_user_of_the_environment(p: &pb::Pipeline, text: &str) {
    let c = p.components.as_ref().unwrap();
    let named = c.transforms.values().any(|t| {
        t.subtransforms.is_empty()
            && !t.environment_id.is_empty()
            && !urn_of(t).is_empty()
            && text.contains(&format!("'{}'", t.unique_name))
            && text.contains(urn_of(t))
    });
    assert!(
        named,
        "the error names no transform (with its URN) that uses the environment: {text}"
    );
}

#[test]
fn process_and_external_environments() {
    let plan = plan_of("process_env");
    assert_eq!(plan.environments.len(), 1);
    match plan.environments.values().next().unwrap() {
        Environment::Process { command, .. } => assert_eq!(command, "/opt/beam/boot"),
        other => panic!("{other:?}"),
    }
    assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    // Create/Map(decode) → Square → Print fuse after the Reshuffle.
    let (a, _) = stage_running(&plan, "Create/Map(decode)");
    let (b, _) = stage_running(&plan, "Square");
    let (c, s) = stage_running(&plan, "Print");
    assert_eq!((a, b), (b, c));
    assert!(s.outputs.is_empty(), "nothing reads Print's output");
    assert!(
        matches!(plan.stages[a - 1].kind, StageKind::Identity { .. }),
        "{}",
        describe(&plan)
    );

    let plan = plan_of("side_inputs");
    match plan.environments.values().next().unwrap() {
        Environment::External { endpoint, .. } => assert_eq!(endpoint, "localhost:50000"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reshuffle_is_native_and_its_parts_do_not_run() {
    let plan = plan_of("process_env");
    let ids: Vec<&str> = plan
        .stages
        .iter()
        .filter(|s| matches!(s.kind, StageKind::Identity { .. }))
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(ids, vec!["Create/MaybeReshuffle/Reshuffle"]);
    for (_, s) in sdk_stages(&plan) {
        for t in s.descriptor.transforms.values() {
            assert!(
                !t.unique_name.contains("Reshuffle/"),
                "{} runs in an SDK stage",
                t.unique_name
            );
        }
    }
    // Identity reads and writes the same encoding.
    for s in &plan.stages {
        if let StageKind::Identity { input, output } = &s.kind {
            assert_eq!(input.coder_id, output.coder_id);
            assert_ne!(input.pcollection, output.pcollection);
        }
    }
}

#[test]
fn side_inputs_list_their_access_patterns() {
    let plan = plan_of("side_inputs");
    let listing = describe(&plan);
    let (n, s) = stage_running(&plan, "Use");
    let use_id = transform_id(&plan.components, "Use");
    let c = &plan.components;
    let out_of = |name: &str| {
        let t = &c.transforms[&transform_id(c, name)];
        t.outputs.values().next().unwrap().clone()
    };
    let expected = [
        (
            "python_side_input0",
            out_of("Upper"),
            SideInputAccess::Iterable,
        ), // AsList
        (
            "python_side_input1",
            out_of("Multi/Map(decode)"),
            SideInputAccess::Multimap,
        ), // AsMultiMap
        (
            "python_side_input2",
            out_of("Double"),
            SideInputAccess::Iterable,
        ), // AsDict
    ];
    assert_eq!(s.side_inputs.len(), expected.len(), "{:?}", s.side_inputs);
    for (local, pc, access) in expected {
        let si = s
            .side_inputs
            .iter()
            .find(|si| si.local_name == local)
            .unwrap_or_else(|| panic!("{local}"));
        assert_eq!(si.transform_id, use_id);
        assert_eq!(si.port.pcollection, pc, "{local}");
        assert_eq!(si.access, access, "{local}");
        let producer = plan
            .stages
            .iter()
            .position(|st| st.kind.outputs().contains(&&si.port))
            .expect("produced");
        assert!(
            producer < n,
            "{local}: produced by stage {producer}, read by {n}:\n{listing}"
        );
        // The side input is not also read as the stage's main input.
        assert_ne!(s.input.as_ref().unwrap().0.pcollection, pc);
    }
    // A multimap side input must be a KV the runner can split into key and value.
    let mm = s
        .side_inputs
        .iter()
        .find(|si| si.access == SideInputAccess::Multimap)
        .unwrap();
    match Coder::from_components(c, &mm.port.coder_id).unwrap() {
        Coder::WindowedValue { value, .. } => {
            assert!(matches!(*value, Coder::Kv { .. }), "{value:?}")
        }
        other => panic!("{other:?}"),
    }
    // The main input arrives through the stage's data source; Print fuses in.
    let (main_stage, _) = stage_running(&plan, "Main/Map(decode)");
    let (print, _) = stage_running(&plan, "Print");
    assert_eq!(main_stage, n);
    assert_eq!(print, n);
    // The side-input producers are separate stages, each writing the port once.
    let (upper, up) = stage_running(&plan, "Upper");
    assert_ne!(upper, n);
    assert_eq!(up.outputs.len(), 1);
}

#[test]
fn flatten_with_equal_coders_passes_bytes_through() {
    let plan = plan_of("flatten");
    let listing = describe(&plan);
    let flattens: Vec<_> = plan
        .stages
        .iter()
        .filter(|s| matches!(s.kind, StageKind::Flatten { .. }))
        .collect();
    assert_eq!(flattens.len(), 2, "{listing}");
    let same = flattens
        .iter()
        .find(|s| s.name == "FlattenSame")
        .expect("FlattenSame");
    let StageKind::Flatten { inputs, output } = &same.kind else {
        unreachable!()
    };
    assert_eq!(inputs.len(), 2);
    for i in inputs {
        assert_eq!(i.coder_id, output.coder_id, "{listing}");
    }
    match Coder::from_components(&plan.components, &output.coder_id).unwrap() {
        Coder::WindowedValue { value, .. } => assert_eq!(*value, Coder::StringUtf8),
        other => panic!("{other:?}"),
    }
}

#[test]
fn flatten_with_a_different_output_coder_reads_inputs_transcoded() {
    let plan = plan_of("flatten");
    let listing = describe(&plan);
    let c = &plan.components;
    let mixed = plan
        .stages
        .iter()
        .find(|s| s.name == "FlattenMixed")
        .expect("FlattenMixed");
    let StageKind::Flatten { inputs, output } = &mixed.kind else {
        panic!("{listing}")
    };
    // The output coder (a pickling union coder) is not the inputs' own.
    let words = c.transforms[&transform_id(c, "Words/Map(decode)")]
        .outputs
        .values()
        .next()
        .unwrap()
        .clone();
    assert!(inputs.iter().any(|p| p.pcollection == words));
    for i in inputs {
        assert_eq!(
            i.coder_id, output.coder_id,
            "the flatten reads its inputs in its output's encoding:\n{listing}"
        );
    }
    let natural = c.pcollections[&words].coder_id.clone();
    assert_eq!(
        Coder::from_components(c, &natural).unwrap(),
        Coder::StringUtf8
    );
    match Coder::from_components(c, &output.coder_id).unwrap() {
        Coder::WindowedValue { value, .. } => {
            assert!(
                matches!(*value, Coder::LengthPrefix(_)),
                "union coder must be length-prefixed: {value:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    // So the stage producing the words writes them twice: once as strings
    // (for FlattenSame), once in the union coder (for FlattenMixed), each
    // through its own data sink.
    let (_, producer) = stage_running(&plan, "Words/Map(decode)");
    let ports: Vec<_> = producer
        .outputs
        .iter()
        .filter(|(p, _)| p.pcollection == words)
        .collect();
    assert_eq!(ports.len(), 2, "{listing}");
    let coders: HashSet<&str> = ports.iter().map(|(p, _)| p.coder_id.as_str()).collect();
    assert_eq!(coders.len(), 2);
    assert!(coders.contains(output.coder_id.as_str()));
    for (port, sink) in &ports {
        assert_eq!(
            decode_port(&producer.descriptor.transforms[sink]).coder_id,
            port.coder_id
        );
    }
}

#[test]
fn stateful_dofn_starts_a_keyed_stage() {
    let plan = plan_of("stateful");
    let listing = describe(&plan);
    let (n, s) = stage_running(&plan, "Stateful");
    let (prepare, p) = stage_running(&plan, "Prepare");
    let (after, _) = stage_running(&plan, "After");
    assert!(s.keyed, "{listing}");
    assert!(!p.keyed, "{listing}");
    assert!(
        prepare < n,
        "the stateful DoFn must start its own stage:\n{listing}"
    );
    assert_eq!(after, n, "downstream transforms fuse into the keyed stage");
    // The stage's source feeds the stateful transform directly.
    let stateful_id = transform_id(&plan.components, "Stateful");
    let (port, _) = s.input.as_ref().unwrap();
    assert!(s.descriptor.transforms[&stateful_id]
        .inputs
        .values()
        .any(|pc| *pc == port.pcollection));
    // Keyed routing needs a key the runner can delimit.
    match Coder::from_components(&plan.components, &port.coder_id).unwrap() {
        Coder::WindowedValue { value, .. } => match *value {
            Coder::Kv { key, .. } => assert!(key.is_skippable()),
            other => panic!("not a KV: {other:?}"),
        },
        other => panic!("{other:?}"),
    }
    // The bag state spec survives into the descriptor.
    let t = &s.descriptor.transforms[&stateful_id];
    let payload: pb::ParDoPayload =
        prost::Message::decode(t.spec.as_ref().unwrap().payload.as_ref()).unwrap();
    assert!(
        payload.state_specs.contains_key("seen"),
        "{:?}",
        payload.state_specs.keys()
    );
    assert!(s.residual_target.is_none());
}

#[test]
fn session_windows_group_natively() {
    let plan = plan_of("sessions");
    let listing = describe(&plan);
    let gbk: Vec<_> = plan
        .stages
        .iter()
        .filter(|s| matches!(s.kind, StageKind::GroupByKey { .. }))
        .collect();
    let names: Vec<&str> = gbk.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["Group"], "{listing}");
    let StageKind::GroupByKey {
        windowing,
        input,
        transform_id: t,
        ..
    } = &gbk[0].kind
    else {
        unreachable!()
    };
    assert_eq!(plan.components.transforms[t].unique_name, "Group");
    assert_eq!(
        windowing.window_fn.as_ref().unwrap().urn,
        "beam:window_fn:session_windows:v1"
    );
    match Coder::from_components(&plan.components, &input.coder_id).unwrap() {
        Coder::WindowedValue { window, .. } => assert_eq!(*window, Coder::IntervalWindow),
        other => panic!("{other:?}"),
    }
    let (window_stage, _) = stage_running(&plan, "Window");
    let (print, _) = stage_running(&plan, "Print");
    let g = plan.stages.iter().position(|s| s.name == "Group").unwrap();
    assert!(window_stage < g && g < print);
}

#[test]
fn timers_run_in_a_keyed_stage_with_runner_readable_timer_coders() {
    let plan = plan_of("timer");
    let listing = describe(&plan);
    let (_, s) = stage_running(&plan, "Timed");
    assert!(s.keyed, "{listing}");
    let timed = transform_id(&plan.components, "Timed");
    assert!(!s.timer_families.is_empty(), "{listing}");
    for family in &s.timer_families {
        assert_eq!(family.transform_id, timed);
        // The SDK must be told where to send timers.
        assert!(s.descriptor.timer_api_service_descriptor.is_some());
        // The runner reads every part of the timer: key, tag, windows, timestamps.
        let coder = Coder::from_components(&plan.components, &family.coder_id).unwrap();
        match &coder {
            Coder::Timer { key, window } => {
                assert!(key.is_skippable() && window.is_skippable(), "{coder:?}")
            }
            other => panic!("not a timer coder: {other:?}"),
        }
        // ... and the descriptor's ParDo points the SDK at that same coder.
        let spec = s.descriptor.transforms[&timed].spec.as_ref().unwrap();
        let payload = pb::ParDoPayload::decode(spec.payload.as_ref()).unwrap();
        assert_eq!(
            payload.timer_family_specs[&family.family_id].timer_family_coder_id,
            family.coder_id
        );
        assert!(s.descriptor.coders.contains_key(&family.coder_id));
    }
}

#[test]
fn unknown_urns_are_refused_naming_the_transform() {
    let err = refusal(&load("unknown_urn"), &opts());
    let text = err.to_string();
    match &err {
        GraphError::Unsupported { name, urn, .. } => {
            assert_eq!(name, "Mystery");
            assert_eq!(urn, "beam:transform:ferrobeam_test:unknown:v1");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        text.contains("'Mystery'") && text.contains("beam:transform:ferrobeam_test:unknown:v1"),
        "{text}"
    );
    assert!(text.contains("expansion service"), "a suggestion: {text}");
}

/// Translation is deterministic: the same proto gives the same stages.
#[test]
fn translation_is_deterministic() {
    for name in ALL_OK {
        let a = describe(&plan_of(name));
        let b = describe(&plan_of(name));
        assert_eq!(a, b, "{name}");
    }
}
