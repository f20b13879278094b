//! Flattening the composite tree into the leaves we execute, and expanding
//! splittable DoFns into their pair / split-and-size / process parts.

use ferrobeam_proto::fn_api::ProcessBundleDescriptor;
use ferrobeam_proto::pipeline::v1::{
    self as pb, Components, FunctionSpec, PTransform, ParDoPayload,
};
use prost::Message;

use crate::error::GraphError;
use crate::urns;

/// What executes a leaf transform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafKind {
    Impulse,
    TestStream,
    GroupByKey,
    Flatten,
    Identity,
    /// `ferrobeam.io.WriteLines`: written natively by the engine.
    LineSink,
    /// Beam's Kafka read (with or without metadata), run natively.
    KafkaRead,
    /// Beam's Kafka write (with or without headers), run natively.
    KafkaWrite,
    Sdk {
        environment_id: String,
    },
}

#[derive(Clone, Debug)]
pub struct Leaf {
    pub id: String,
    pub kind: LeafKind,
    /// The input the SDK treats as the main input (None for roots and natives).
    pub main_input: Option<String>,
    /// (local name, pcollection, access pattern URN) for ParDo side inputs.
    pub side_inputs: Vec<(String, String, String)>,
    /// Must be the first transform of its stage (stateful, SDF process).
    pub starts_stage: bool,
    /// Needs input partitioned by key (state or timers).
    pub keyed: bool,
    /// Each key's input must arrive in timestamp order (@RequiresTimeSortedInput).
    pub time_sorted: bool,
    /// Residuals return here (SDF process).
    pub splittable: bool,
}

/// Composites whose leaves are ignored because the engine does their job natively.
const NATIVE_COMPOSITES: &[&str] = &[
    urns::RESHUFFLE,
    urns::REDISTRIBUTE_ARBITRARILY,
    urns::REDISTRIBUTE_BY_KEY,
    urns::WRITE_LINES,
    // Expanded by Beam's Java expansion service, these are composites of
    // Java transforms; we run the composite itself.
    urns::KAFKA_READ_WITHOUT_METADATA,
    urns::KAFKA_READ_WITH_METADATA,
    urns::KAFKA_WRITE,
    urns::KAFKA_WRITE_WITH_HEADERS,
];

/// Leaves in pipeline order (which the SDKs emit topologically).
pub fn collect(components: &mut Components, roots: &[String]) -> Result<Vec<Leaf>, GraphError> {
    let mut ids = Vec::new();
    for root in roots {
        walk(components, root, &mut ids)?;
    }
    let mut leaves = Vec::new();
    for id in ids {
        let t = components.transforms[&id].clone();
        leaves.extend(classify(components, &id, &t)?);
    }
    Ok(leaves)
}

fn walk(components: &Components, id: &str, out: &mut Vec<String>) -> Result<(), GraphError> {
    let t = components
        .transforms
        .get(id)
        .ok_or_else(|| GraphError::Malformed(format!("unknown transform id {id:?}")))?;
    let urn = urn(t);
    if NATIVE_COMPOSITES.contains(&urn)
        || t.subtransforms.is_empty()
        || liftable_combine(components, t)
    {
        // A composite whose expansion returned its input (e.g. Create's
        // MaybeReshuffle for one element) has no parts and nothing to do.
        let passthrough = t.subtransforms.is_empty()
            && ![
                urns::PAR_DO,
                urns::FLATTEN,
                urns::GROUP_BY_KEY,
                urns::ASSIGN_WINDOWS,
            ]
            .contains(&urn)
            && !t.outputs.is_empty()
            && t.outputs
                .values()
                .all(|o| t.inputs.values().any(|i| i == o));
        let empty = urn.is_empty() && t.inputs.is_empty() && t.outputs.is_empty();
        if !passthrough && !empty {
            out.push(id.to_owned());
        }
        return Ok(());
    }
    for sub in &t.subtransforms {
        walk(components, sub, out)?;
    }
    Ok(())
}

/// A CombinePerKey the SDK did not lift already (it does in batch, not in
/// streaming), whose windowing lets us lift it: precombining must not change
/// what the trigger sees, and the output time must be the end of the window
/// (precombined accumulators no longer carry their elements' timestamps).
fn liftable_combine(components: &Components, t: &PTransform) -> bool {
    if urn(t) != urns::COMBINE_PER_KEY || t.spec.as_ref().is_none_or(|s| s.payload.is_empty()) {
        return false;
    }
    let already_lifted = t.subtransforms.iter().any(|s| {
        components
            .transforms
            .get(s)
            .is_some_and(|s| urn(s) == urns::COMBINE_PRECOMBINE)
    });
    let liftable_windowing = t
        .inputs
        .values()
        .next()
        .and_then(|pc| components.pcollections.get(pc))
        .and_then(|pc| {
            components
                .windowing_strategies
                .get(&pc.windowing_strategy_id)
        })
        .is_some_and(|ws| {
            let default_trigger = matches!(
                ws.trigger.as_ref().and_then(|t| t.trigger.as_ref()),
                None | Some(pb::trigger::Trigger::Default(_))
            );
            let end_of_window = matches!(
                pb::output_time::Enum::try_from(ws.output_time),
                Ok(pb::output_time::Enum::EndOfWindow | pb::output_time::Enum::Unspecified)
            );
            default_trigger && end_of_window
        });
    !already_lifted && liftable_windowing
}

/// Combiner lifting: CombinePerKey → Precombine (SDK, before the shuffle)
/// → GroupByKey (native) → MergeAccumulators → ExtractOutputs (SDK).
/// Only accumulators cross the shuffle, not every input element.
fn lift_combine(
    components: &mut Components,
    id: &str,
    t: &PTransform,
) -> Result<Vec<Leaf>, GraphError> {
    let env = environment(t)?;
    let input = single_input(t)?;
    let output = t
        .outputs
        .values()
        .next()
        .cloned()
        .ok_or_else(|| GraphError::unsupported(t, "CombinePerKey without an output"))?;
    let payload = pb::CombinePayload::decode(t.spec.as_ref().expect("checked").payload.as_ref())
        .map_err(|e| GraphError::unsupported(t, format!("undecodable CombinePayload: {e}")))?;
    let input_coder = &components.coders[&components.pcollections[&input].coder_id];
    if input_coder.spec.as_ref().map(|s| s.urn.as_str()) != Some(urns::KV_CODER) {
        return Err(GraphError::unsupported(
            t,
            "CombinePerKey input is not a KV",
        ));
    }
    let key_coder = input_coder.component_coder_ids[0].clone();
    let acc = payload.accumulator_coder_id.clone();
    let kv_acc = crate::coders::ensure(
        components,
        urns::KV_CODER,
        vec![key_coder.clone(), acc.clone()],
    );
    let accs = crate::coders::ensure(components, urns::ITERABLE_CODER, vec![acc]);
    let kv_accs = crate::coders::ensure(components, urns::KV_CODER, vec![key_coder, accs]);
    let precombined = copy_pcollection(components, &input, "precombined", kv_acc.clone());
    let grouped = copy_pcollection(components, &input, "grouped", kv_accs);
    let merged = copy_pcollection(components, &input, "merged", kv_acc);
    let spec_payload = t.spec.as_ref().expect("checked").payload.clone();
    let mut add = |suffix: &str, urn: &str, from: &str, to: &str, environment_id: &str| {
        let new = PTransform {
            unique_name: format!("{}/{suffix}", t.unique_name),
            spec: Some(FunctionSpec {
                urn: urn.to_owned(),
                payload: spec_payload.clone(),
            }),
            inputs: [("in".to_owned(), from.to_owned())].into(),
            outputs: [("out".to_owned(), to.to_owned())].into(),
            environment_id: environment_id.to_owned(),
            ..Default::default()
        };
        let new_id = unique_key(&components.transforms, &format!("{id}/{suffix}"));
        components.transforms.insert(new_id.clone(), new);
        new_id
    };
    let ids = [
        add(
            "Precombine",
            urns::COMBINE_PRECOMBINE,
            &input,
            &precombined,
            &env,
        ),
        add("Group", urns::GROUP_BY_KEY, &precombined, &grouped, ""),
        add("Merge", urns::COMBINE_MERGE, &grouped, &merged, &env),
        add(
            "ExtractOutputs",
            urns::COMBINE_EXTRACT,
            &merged,
            &output,
            &env,
        ),
    ];
    let mains = [&input, &precombined, &grouped, &merged];
    Ok(ids
        .into_iter()
        .zip(mains)
        .enumerate()
        .map(|(i, (id, main))| Leaf {
            id,
            kind: if i == 1 {
                LeafKind::GroupByKey
            } else {
                LeafKind::Sdk {
                    environment_id: env.clone(),
                }
            },
            main_input: Some(main.clone()),
            side_inputs: vec![],
            starts_stage: false,
            keyed: false,
            time_sorted: false,
            splittable: false,
        })
        .collect())
}

fn test_stream_payload(t: &PTransform) -> Result<pb::TestStreamPayload, GraphError> {
    let spec = t.spec.as_ref().expect("leaf has a spec");
    pb::TestStreamPayload::decode(spec.payload.as_ref())
        .map_err(|e| GraphError::unsupported(t, format!("undecodable TestStreamPayload: {e}")))
}

fn check_test_stream(t: &PTransform) -> Result<(), GraphError> {
    let payload = test_stream_payload(t)?;
    if payload.endpoint.as_ref().is_some_and(|e| !e.url.is_empty()) {
        return Err(GraphError::unsupported(
            t,
            "a TestStream served by an external TestStreamService is not supported",
        ));
    }
    Ok(())
}

/// A batch job replays a TestStream as a bounded source: all its elements,
/// then the watermark and processing time jump to +infinity.  That equals
/// the stream's own semantics only when no element is late against the
/// stream's watermark and no element follows a processing-time advance;
/// anything else needs streaming execution, so it is refused, not run wrong.
pub fn refuse_unreplayable_test_streams(
    components: &Components,
    leaves: &[Leaf],
) -> Result<(), GraphError> {
    use pb::test_stream_payload::event::Event;
    for leaf in leaves
        .iter()
        .filter(|l| matches!(l.kind, LeafKind::TestStream))
    {
        let t = &components.transforms[&leaf.id];
        let payload = test_stream_payload(t)?;
        let mut watermarks: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
        let mut processing_time_advanced = false;
        for event in &payload.events {
            match &event.event {
                Some(Event::WatermarkEvent(w)) => {
                    watermarks.insert(&w.tag, w.new_watermark);
                }
                Some(Event::ProcessingTimeEvent(_)) => processing_time_advanced = true,
                Some(Event::ElementEvent(e)) => {
                    let streaming_only = |why: String| {
                        GraphError::unsupported(
                            t,
                            format!("{why}; a batch job cannot replay that faithfully. Run it with --streaming"),
                        )
                    };
                    if processing_time_advanced && !e.elements.is_empty() {
                        return Err(streaming_only(
                            "elements follow a processing-time advance".into(),
                        ));
                    }
                    let wm = watermarks.get(e.tag.as_str()).copied().unwrap_or(i64::MIN);
                    if let Some(late) = e.elements.iter().find(|el| el.timestamp < wm) {
                        return Err(streaming_only(format!(
                            "an element at {} ms on output '{}' is behind that output's watermark ({wm} ms), i.e. late data",
                            late.timestamp, e.tag
                        )));
                    }
                }
                None => {}
            }
        }
    }
    Ok(())
}

pub fn urn(t: &PTransform) -> &str {
    t.spec.as_ref().map(|s| s.urn.as_str()).unwrap_or("")
}

fn single_input(t: &PTransform) -> Result<String, GraphError> {
    let mut it = t.inputs.values();
    match (it.next(), it.next()) {
        (Some(p), None) => Ok(p.clone()),
        _ => Err(GraphError::unsupported(
            t,
            format!("expected exactly one input, found {}", t.inputs.len()),
        )),
    }
}

fn environment(t: &PTransform) -> Result<String, GraphError> {
    if t.environment_id.is_empty() {
        Err(GraphError::unsupported(
            t,
            "an SDK-executed transform must name an environment",
        ))
    } else {
        Ok(t.environment_id.clone())
    }
}

fn classify(
    components: &mut Components,
    id: &str,
    t: &PTransform,
) -> Result<Vec<Leaf>, GraphError> {
    let simple = |kind: LeafKind, main_input: Option<String>| Leaf {
        id: id.to_owned(),
        kind,
        main_input,
        side_inputs: vec![],
        starts_stage: false,
        keyed: false,
        time_sorted: false,
        splittable: false,
    };
    let u = urn(t);
    Ok(match u {
        urns::IMPULSE => vec![simple(LeafKind::Impulse, None)],
        urns::GROUP_BY_KEY => vec![simple(LeafKind::GroupByKey, Some(single_input(t)?))],
        urns::FLATTEN => vec![simple(LeafKind::Flatten, None)],
        urns::RESHUFFLE | urns::REDISTRIBUTE_ARBITRARILY | urns::REDISTRIBUTE_BY_KEY => {
            vec![simple(LeafKind::Identity, Some(single_input(t)?))]
        }
        urns::WRITE_LINES => vec![simple(LeafKind::LineSink, Some(single_input(t)?))],
        urns::KAFKA_READ_WITHOUT_METADATA | urns::KAFKA_READ_WITH_METADATA => {
            vec![simple(LeafKind::KafkaRead, None)]
        }
        urns::KAFKA_WRITE | urns::KAFKA_WRITE_WITH_HEADERS => {
            vec![simple(LeafKind::KafkaWrite, Some(single_input(t)?))]
        }
        urns::PAR_DO => return pardo(components, id, t),
        urns::COMBINE_PER_KEY => return lift_combine(components, id, t),
        urns::ASSIGN_WINDOWS
        | urns::MAP_WINDOWS
        | urns::TO_STRING
        | urns::COMBINE_PRECOMBINE
        | urns::COMBINE_MERGE
        | urns::COMBINE_EXTRACT
        | urns::COMBINE_GROUPED_VALUES
        | urns::COMBINE_CONVERT => {
            vec![simple(
                LeafKind::Sdk {
                    environment_id: environment(t)?,
                },
                Some(single_input(t)?),
            )]
        }
        urns::TEST_STREAM => {
            check_test_stream(t)?;
            vec![simple(LeafKind::TestStream, None)]
        }
        urns::MERGE_WINDOWS => {
            return Err(GraphError::unsupported(
                t,
                "custom merging window functions are not supported yet",
            ))
        }
        "" => return Err(GraphError::unsupported(t, "leaf transform without a URN")),
        other => {
            return Err(GraphError::unsupported(
                t,
                format!(
                "unknown primitive transform URN {other}. If this is a cross-language transform, \
                     expand it with an expansion service first; otherwise it needs a runner that \
                     implements it"
            ),
            ))
        }
    })
}

fn pardo(components: &mut Components, id: &str, t: &PTransform) -> Result<Vec<Leaf>, GraphError> {
    let spec = t.spec.as_ref().expect("pardo has a spec");
    let payload = ParDoPayload::decode(spec.payload.as_ref())
        .map_err(|e| GraphError::unsupported(t, format!("undecodable ParDoPayload: {e}")))?;
    let env = environment(t)?;
    if !payload.on_window_expiration_timer_family_spec.is_empty() {
        return Err(GraphError::unsupported(
            t,
            "@OnWindowExpiration is not supported yet (no Python SDK emits it; Java pipelines are issue 10)",
        ));
    }
    for (name, spec) in &payload.timer_family_specs {
        use pb::time_domain::Enum as Domain;
        match Domain::try_from(spec.time_domain) {
            Ok(Domain::EventTime | Domain::ProcessingTime) => {}
            _ => {
                return Err(GraphError::unsupported(
                    t,
                    format!("timer family '{name}' uses time domain {}; only event time and processing time exist in Beam", spec.time_domain),
                ))
            }
        }
    }
    for (name, spec) in &payload.state_specs {
        use pb::state_spec::Spec;
        match &spec.spec {
            Some(
                Spec::ReadModifyWriteSpec(_)
                | Spec::BagSpec(_)
                | Spec::CombiningSpec(_)
                | Spec::SetSpec(_)
                | Spec::OrderedListSpec(_),
            ) => {}
            _ => {
                return Err(GraphError::unsupported(
                    t,
                    format!(
                    "state '{name}' uses a state type (map or multimap) that is not supported yet"
                ),
                ))
            }
        }
    }
    let mut side_inputs = Vec::new();
    for (local, si) in &payload.side_inputs {
        let pcoll = t.inputs.get(local).ok_or_else(|| {
            GraphError::unsupported(t, format!("side input '{local}' is not among the inputs"))
        })?;
        let access = si
            .access_pattern
            .as_ref()
            .map(|a| a.urn.clone())
            .unwrap_or_default();
        if access != urns::SIDE_INPUT_ITERABLE && access != urns::SIDE_INPUT_MULTIMAP {
            return Err(GraphError::unsupported(
                t,
                format!("side input '{local}' uses access pattern '{access}'"),
            ));
        }
        side_inputs.push((local.clone(), pcoll.clone(), access));
    }
    side_inputs.sort();
    let mains: Vec<&String> = t
        .inputs
        .keys()
        .filter(|k| !payload.side_inputs.contains_key(*k))
        .collect();
    let main_tag = match mains.as_slice() {
        [one] => (*one).clone(),
        _ => {
            return Err(GraphError::unsupported(
                t,
                format!("expected one main input, found {}", mains.len()),
            ))
        }
    };
    let main_input = t.inputs[&main_tag].clone();
    let keyed = !payload.state_specs.is_empty() || !payload.timer_family_specs.is_empty();
    let time_sorted = payload.requires_time_sorted_input;
    let leaf = |id: String, main: String, starts_stage: bool, splittable: bool| Leaf {
        id,
        kind: LeafKind::Sdk {
            environment_id: env.clone(),
        },
        main_input: Some(main),
        side_inputs: side_inputs.clone(),
        starts_stage,
        keyed,
        time_sorted,
        splittable,
    };
    if payload.restriction_coder_id.is_empty() {
        return Ok(vec![leaf(id.to_owned(), main_input, keyed, false)]);
    }
    if keyed {
        return Err(GraphError::unsupported(
            t,
            "a splittable DoFn with state is not supported",
        ));
    }
    // Splittable DoFn: pair with restriction → split and size → (stage
    // boundary, so the initial splits spread over workers) → process.
    let elem_coder = components
        .pcollections
        .get(&main_input)
        .ok_or_else(|| GraphError::Malformed(format!("unknown pcollection {main_input:?}")))?
        .coder_id
        .clone();
    let paired_coder = crate::coders::ensure(
        components,
        urns::KV_CODER,
        vec![elem_coder, payload.restriction_coder_id.clone()],
    );
    let double = crate::coders::ensure(components, urns::DOUBLE_CODER, vec![]);
    let sized_coder = crate::coders::ensure(
        components,
        urns::KV_CODER,
        vec![paired_coder.clone(), double],
    );
    let paired = copy_pcollection(components, &main_input, "paired", paired_coder);
    let sized = copy_pcollection(components, &main_input, "sized", sized_coder);
    let pair_id = copy_transform(
        components,
        id,
        t,
        "PairWithRestriction",
        urns::SDF_PAIR,
        &main_tag,
        &main_input,
        &paired,
    );
    let split_id = copy_transform(
        components,
        id,
        t,
        "SplitAndSizeRestrictions",
        urns::SDF_SPLIT_AND_SIZE,
        &main_tag,
        &paired,
        &sized,
    );
    let outputs = t.outputs.clone();
    let process_id = copy_transform(
        components,
        id,
        t,
        "Process",
        urns::SDF_PROCESS,
        &main_tag,
        &sized,
        "",
    );
    components
        .transforms
        .get_mut(&process_id)
        .expect("just added")
        .outputs = outputs;
    Ok(vec![
        leaf(pair_id, main_input, false, false),
        leaf(split_id, paired, false, false),
        leaf(process_id, sized, true, true),
    ])
}

/// Drain: every splittable DoFn first truncates its restrictions (the SDK's
/// `truncate`: bounded restrictions by default stay whole, unbounded ones
/// are dropped), as a runner does when a job drains.  The truncation runs
/// right after split-and-size, before the stage boundary in front of Process.
pub fn truncate_restrictions(components: &mut Components, leaves: Vec<Leaf>) -> Vec<Leaf> {
    let mut out = Vec::with_capacity(leaves.len());
    for mut leaf in leaves {
        let is_process = components
            .transforms
            .get(&leaf.id)
            .is_some_and(|t| urn(t) == urns::SDF_PROCESS);
        let Some(sized) = leaf.main_input.clone().filter(|_| is_process) else {
            out.push(leaf);
            continue;
        };
        let Some((truncate_id, truncated)) = insert_truncation(components, &leaf.id, &sized) else {
            out.push(leaf);
            continue;
        };
        out.push(Leaf {
            id: truncate_id,
            main_input: Some(sized),
            starts_stage: false,
            splittable: false,
            ..leaf.clone()
        });
        leaf.main_input = Some(truncated);
        out.push(leaf);
    }
    out
}

/// A streaming job that drains truncates the work its splittable DoFns
/// deferred: this is the descriptor of the stage whose first transform is
/// the SDF's Process (`process_id`, reading `sized`), with the truncation in
/// front of Process.  It reads the same input, so deferred residuals can be
/// sent to it unchanged.
pub(crate) fn truncating_descriptor(
    descriptor: &ProcessBundleDescriptor,
    process_id: &str,
    sized: &str,
) -> Option<ProcessBundleDescriptor> {
    let mut components = Components {
        transforms: descriptor.transforms.clone(),
        pcollections: descriptor.pcollections.clone(),
        ..Default::default()
    };
    insert_truncation(&mut components, process_id, sized)?;
    Some(ProcessBundleDescriptor {
        transforms: components.transforms,
        pcollections: components.pcollections,
        ..descriptor.clone()
    })
}

/// Puts the SDK's `sdf_truncate_sized_restrictions` between `sized` and the
/// SDF Process transform `process_id`.  Returns the new transform's id and
/// the PCollection Process now reads.
fn insert_truncation(
    components: &mut Components,
    process_id: &str,
    sized: &str,
) -> Option<(String, String)> {
    let t = components.transforms.get(process_id)?.clone();
    let main_tag = t.inputs.iter().find(|(_, pc)| *pc == sized)?.0.clone();
    let coder = components.pcollections.get(sized)?.coder_id.clone();
    let truncated = copy_pcollection(components, sized, "truncated", coder);
    let base = process_id.trim_end_matches("/Process").to_owned();
    let truncate_id = copy_transform(
        components,
        &base,
        &t,
        "TruncateSizedRestriction",
        urns::SDF_TRUNCATE,
        &main_tag,
        sized,
        &truncated,
    );
    components
        .transforms
        .get_mut(process_id)?
        .inputs
        .insert(main_tag, truncated.clone());
    Some((truncate_id, truncated))
}

fn copy_pcollection(
    components: &mut Components,
    original: &str,
    suffix: &str,
    coder_id: String,
) -> String {
    let mut pc = components.pcollections[original].clone();
    let id = unique_key(&components.pcollections, &format!("{original}/{suffix}"));
    pc.unique_name = format!("{}/{suffix}", pc.unique_name);
    pc.coder_id = coder_id;
    components.pcollections.insert(id.clone(), pc);
    id
}

#[allow(clippy::too_many_arguments)]
fn copy_transform(
    components: &mut Components,
    id: &str,
    t: &PTransform,
    suffix: &str,
    urn: &str,
    main_tag: &str,
    input: &str,
    output: &str,
) -> String {
    let mut copy = t.clone();
    copy.unique_name = format!("{}/{suffix}", t.unique_name);
    let payload = t
        .spec
        .as_ref()
        .map(|s| s.payload.clone())
        .unwrap_or_default();
    copy.spec = Some(FunctionSpec {
        urn: urn.to_owned(),
        payload,
    });
    copy.inputs.insert(main_tag.to_owned(), input.to_owned());
    copy.outputs.clear();
    if !output.is_empty() {
        copy.outputs.insert("out".to_owned(), output.to_owned());
    }
    copy.subtransforms.clear();
    let new_id = unique_key(&components.transforms, &format!("{id}/{suffix}"));
    components.transforms.insert(new_id.clone(), copy);
    new_id
}

pub(crate) fn unique_key<V>(map: &std::collections::HashMap<String, V>, base: &str) -> String {
    if !map.contains_key(base) {
        return base.to_owned();
    }
    (1..)
        .map(|i| format!("{base}_{i}"))
        .find(|k| !map.contains_key(k))
        .expect("unbounded")
}
