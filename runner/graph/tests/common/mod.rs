//! Shared helpers for the ferrobeam-graph integration tests: loading the
//! SDK-built fixtures and checking the invariants every plan must hold.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use ferrobeam_coders::Coder;
use ferrobeam_graph::{
    translate, GraphError, Plan, PortRef, SdkStage, Stage, StageKind, TranslateOptions,
};
use ferrobeam_proto::fn_api::RemoteGrpcPort;
use ferrobeam_proto::pipeline::v1::{self as pb, Components, Pipeline};
use prost::Message;

pub const FN_ENDPOINT: &str = "localhost:12345";

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.pb"))
}

/// A pipeline proto written by `tests/fixtures/make_fixtures.py`.
pub fn load(name: &str) -> Pipeline {
    let path = fixture_path(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Pipeline::decode(bytes.as_slice())
        .unwrap_or_else(|e| panic!("decoding {}: {e}", path.display()))
}

pub fn opts() -> TranslateOptions {
    TranslateOptions {
        strict_environments: false,
        fn_endpoint: FN_ENDPOINT.into(),
        drain: false,
        streaming: false,
    }
}

pub fn plan_of(name: &str) -> Plan {
    let plan =
        translate(&load(name), &opts()).unwrap_or_else(|e| panic!("translating {name}: {e}"));
    check_invariants(&plan);
    plan
}

pub fn refusal(pipeline: &Pipeline, opts: &TranslateOptions) -> GraphError {
    match translate(pipeline, opts) {
        Ok(plan) => panic!(
            "expected a refusal, got a plan with {} stages",
            plan.stages.len()
        ),
        Err(e) => e,
    }
}

/// The id of the (single) transform with this unique name.
pub fn transform_id(components: &Components, unique_name: &str) -> String {
    let ids: Vec<&String> = components
        .transforms
        .iter()
        .filter(|(_, t)| t.unique_name == unique_name)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len(), 1, "transforms named {unique_name:?}: {ids:?}");
    ids[0].clone()
}

pub fn urn_of(t: &pb::PTransform) -> &str {
    t.spec.as_ref().map(|s| s.urn.as_str()).unwrap_or("")
}

pub fn sdk(stage: &Stage) -> Option<&SdkStage> {
    match &stage.kind {
        StageKind::Sdk(s) => Some(s),
        _ => None,
    }
}

pub fn sdk_stages(plan: &Plan) -> Vec<(&Stage, &SdkStage)> {
    plan.stages
        .iter()
        .filter_map(|s| sdk(s).map(|k| (s, k)))
        .collect()
}

/// The SDK stage whose descriptor runs the transform with this unique name.
pub fn stage_running<'a>(plan: &'a Plan, unique_name: &str) -> (usize, &'a SdkStage) {
    let found: Vec<(usize, &SdkStage)> = plan
        .stages
        .iter()
        .enumerate()
        .filter_map(|(i, s)| sdk(s).map(|k| (i, k)))
        .filter(|(_, s)| {
            s.descriptor
                .transforms
                .values()
                .any(|t| t.unique_name == unique_name)
        })
        .collect();
    assert_eq!(found.len(), 1, "stages running {unique_name:?}");
    found[0]
}

pub fn kind_name(kind: &StageKind) -> &'static str {
    match kind {
        StageKind::Impulse { .. } => "impulse",
        StageKind::TestStream { .. } => "test_stream",
        StageKind::GroupByKey { .. } => "gbk",
        StageKind::Flatten { .. } => "flatten",
        StageKind::Identity { .. } => "identity",
        StageKind::LineSink { .. } => "line_sink",
        StageKind::KafkaRead { .. } => "kafka_read",
        StageKind::KafkaWrite { .. } => "kafka_write",
        StageKind::Sdk(_) => "sdk",
    }
}

pub fn kind_counts(plan: &Plan) -> HashMap<&'static str, usize> {
    let mut out = HashMap::new();
    for s in &plan.stages {
        *out.entry(kind_name(&s.kind)).or_default() += 1;
    }
    out
}

/// A human-readable listing of a plan, for failure messages.
pub fn describe(plan: &Plan) -> String {
    let mut out = String::new();
    for s in &plan.stages {
        let ins: Vec<String> = s
            .kind
            .inputs()
            .iter()
            .map(|p| format!("{}@{}", p.pcollection, p.coder_id))
            .collect();
        let outs: Vec<String> = s
            .kind
            .outputs()
            .iter()
            .map(|p| format!("{}@{}", p.pcollection, p.coder_id))
            .collect();
        out += &format!(
            "{} [{}] {}: {:?} -> {:?}\n",
            s.id,
            kind_name(&s.kind),
            s.name,
            ins,
            outs
        );
    }
    out
}

pub fn decode_port(t: &pb::PTransform) -> RemoteGrpcPort {
    let payload = t.spec.as_ref().expect("spec").payload.as_ref();
    RemoteGrpcPort::decode(payload).expect("RemoteGrpcPort payload")
}

/// Resolves a coder and checks the runner can delimit its values.
pub fn assert_skippable(components: &Components, coder_id: &str, what: &str) -> Coder {
    let coder = Coder::from_components(components, coder_id)
        .unwrap_or_else(|e| panic!("{what}: coder {coder_id:?} does not resolve: {e}"));
    assert!(
        coder.is_skippable(),
        "{what}: coder {coder_id:?} is not skippable by the runner: {coder:?}"
    );
    coder
}

/// Checks what must hold for every plan.
pub fn check_invariants(plan: &Plan) {
    let listing = describe(plan);
    let c = &plan.components;

    // Stage ids are unique.
    let ids: HashSet<&str> = plan.stages.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        plan.stages.len(),
        "duplicate stage ids:\n{listing}"
    );

    // Topological order: every input was written by an earlier stage, in
    // exactly the encoding it is read in.  SDK stages write only what is
    // read (a native GroupByKey nobody reads still has its one output).
    let mut written: HashSet<&PortRef> = HashSet::new();
    for s in &plan.stages {
        for p in s.kind.inputs() {
            assert!(
                written.contains(p),
                "stage {} reads {p:?} before anyone writes it:\n{listing}",
                s.id
            );
        }
        for p in s.kind.outputs() {
            assert!(written.insert(p), "port {p:?} written twice:\n{listing}");
        }
    }
    let readers = plan.port_readers();
    for (s, _) in sdk_stages(plan) {
        for p in s.kind.outputs() {
            assert!(
                readers.contains_key(p),
                "stage {} writes {p:?}, which nobody reads:\n{listing}",
                s.id
            );
        }
    }

    // Every port is a windowed value of a coder the runner can take apart,
    // and every pcollection's element coder is skippable too.
    for s in &plan.stages {
        for p in s.kind.inputs().into_iter().chain(s.kind.outputs()) {
            assert!(
                c.pcollections.contains_key(&p.pcollection),
                "port of unknown pcollection {p:?}"
            );
            let coder = assert_skippable(c, &p.coder_id, &format!("port {p:?} of stage {}", s.id));
            assert!(
                matches!(coder, Coder::WindowedValue { .. }),
                "port {p:?}: not a windowed value coder: {coder:?}"
            );
        }
    }
    for (id, pc) in &c.pcollections {
        assert_skippable(c, &pc.coder_id, &format!("pcollection {id}"));
    }

    // GroupByKey reads and writes KVs.
    for s in &plan.stages {
        if let StageKind::GroupByKey {
            input,
            output,
            transform_id,
            ..
        } = &s.kind
        {
            assert_eq!(
                urn_of(&c.transforms[transform_id]),
                "beam:transform:group_by_key:v1"
            );
            for p in [input, output] {
                match Coder::from_components(c, &p.coder_id).unwrap() {
                    Coder::WindowedValue { value, .. } => {
                        assert!(
                            matches!(*value, Coder::Kv { .. }),
                            "gbk port {p:?} is not a KV: {value:?}"
                        )
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    for (stage, s) in sdk_stages(plan) {
        check_descriptor(plan, stage, s);
    }
}

fn check_descriptor(plan: &Plan, stage: &Stage, s: &SdkStage) {
    let d = &s.descriptor;
    assert_eq!(d.id, stage.id);
    assert!(
        plan.environments.contains_key(&s.environment_id),
        "stage {} env {:?} not resolved",
        stage.id,
        s.environment_id
    );
    assert_eq!(
        d.state_api_service_descriptor
            .as_ref()
            .map(|a| a.url.as_str()),
        Some(FN_ENDPOINT)
    );

    let sources: Vec<(&String, &pb::PTransform)> = d
        .transforms
        .iter()
        .filter(|(_, t)| urn_of(t) == "beam:runner:source:v1")
        .collect();
    let sinks: Vec<(&String, &pb::PTransform)> = d
        .transforms
        .iter()
        .filter(|(_, t)| urn_of(t) == "beam:runner:sink:v1")
        .collect();

    // The main input's data source carries the port's coder.
    match &s.input {
        Some((port, source_id)) => {
            assert_eq!(
                sources.len(),
                1,
                "stage {}: sources {:?}",
                stage.id,
                sources
            );
            assert_eq!(sources[0].0, source_id);
            let t = sources[0].1;
            let grpc = decode_port(t);
            assert_eq!(
                grpc.coder_id, port.coder_id,
                "stage {} source coder",
                stage.id
            );
            assert_eq!(
                grpc.api_service_descriptor.map(|a| a.url).as_deref(),
                Some(FN_ENDPOINT)
            );
            assert_eq!(
                t.outputs.values().collect::<Vec<_>>(),
                vec![&port.pcollection]
            );
            assert!(t.inputs.is_empty());
        }
        None => assert!(
            sources.is_empty(),
            "stage {} has a source but no input",
            stage.id
        ),
    }
    // One sink per output port, each with its port's coder.
    assert_eq!(sinks.len(), s.outputs.len(), "stage {} sinks", stage.id);
    for (port, sink_id) in &s.outputs {
        let t = &d.transforms[sink_id];
        assert_eq!(urn_of(t), "beam:runner:sink:v1");
        let grpc = decode_port(t);
        assert_eq!(
            grpc.coder_id, port.coder_id,
            "stage {} sink {sink_id} coder",
            stage.id
        );
        assert_eq!(
            grpc.api_service_descriptor.map(|a| a.url).as_deref(),
            Some(FN_ENDPOINT)
        );
        assert_eq!(
            t.inputs.values().collect::<Vec<_>>(),
            vec![&port.pcollection]
        );
        assert!(t.outputs.is_empty());
    }

    // The descriptor is self-contained.
    for (id, t) in &d.transforms {
        assert!(
            t.subtransforms.is_empty(),
            "descriptor transform {id} has subtransforms"
        );
        let urn = urn_of(t);
        if urn != "beam:runner:source:v1" && urn != "beam:runner:sink:v1" {
            assert_eq!(
                t.environment_id, s.environment_id,
                "transform {id} in stage {}",
                stage.id
            );
        }
        for pc in t.inputs.values().chain(t.outputs.values()) {
            let p = d
                .pcollections
                .get(pc)
                .unwrap_or_else(|| panic!("stage {}: pcollection {pc} missing", stage.id));
            assert!(
                d.coders.contains_key(&p.coder_id),
                "stage {}: coder {} missing",
                stage.id,
                p.coder_id
            );
            assert!(d
                .windowing_strategies
                .contains_key(&p.windowing_strategy_id));
        }
    }
    for (port, _) in s.input.iter().chain(s.outputs.iter()) {
        assert!(d.coders.contains_key(&port.coder_id));
    }
    assert!(d.environments.contains_key(&s.environment_id));

    // Every pcollection consumed inside the stage but produced elsewhere
    // arrives through the data source or as a side input.
    let produced: HashSet<&String> = d
        .transforms
        .values()
        .flat_map(|t| t.outputs.values())
        .collect();
    let side: HashSet<(&str, &str)> = s
        .side_inputs
        .iter()
        .map(|si| (si.transform_id.as_str(), si.local_name.as_str()))
        .collect();
    for (id, t) in &d.transforms {
        for (local, pc) in &t.inputs {
            assert!(
                produced.contains(pc) || side.contains(&(id.as_str(), local.as_str())),
                "stage {}: transform {id} reads {pc} ({local}), which is neither produced in the stage nor a side input:\n{}",
                stage.id,
                describe(plan)
            );
        }
    }
    for si in &s.side_inputs {
        let t = d
            .transforms
            .get(&si.transform_id)
            .expect("side input consumer in the descriptor");
        assert_eq!(t.inputs.get(&si.local_name), Some(&si.port.pcollection));
        let payload = pb::ParDoPayload::decode(t.spec.as_ref().unwrap().payload.as_ref()).unwrap();
        assert!(payload.side_inputs.contains_key(&si.local_name));
    }
}
