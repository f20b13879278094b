//! Pipeline proto → [`Plan`]: validate, expand, rewrite coders, fuse.

use std::collections::{BTreeSet, HashMap};

use ferrobeam_proto::fn_api::{ProcessBundleDescriptor, RemoteGrpcPort};
use ferrobeam_proto::pipeline::v1::{
    self as pb, time_domain::Enum as TimeDomainProto, ApiServiceDescriptor, Components,
    FunctionSpec, PTransform, ParDoPayload, Pipeline,
};
use prost::Message;

use crate::coders;
use crate::environments;
use crate::error::GraphError;
use crate::fuse::{fuse, Group};
use crate::leaves::{self, Leaf, LeafKind};
use crate::plan::*;
use crate::urns;

/// How to translate.
#[derive(Clone, Debug, Default)]
pub struct TranslateOptions {
    /// Refuse Docker environments instead of running Beam's Python image locally.
    pub strict_environments: bool,
    /// Address of the Fn API server the descriptors point workers at.
    pub fn_endpoint: String,
    /// Run as if draining: splittable DoFns truncate their restrictions first.
    pub drain: bool,
    /// `--streaming`: run with watermarks and triggers as data arrives.
    pub streaming: bool,
}

const SUPPORTED_REQUIREMENTS: &[&str] = &[
    urns::REQ_SPLITTABLE_DOFN,
    urns::REQ_STATEFUL,
    urns::REQ_STABLE_INPUT,
    urns::REQ_FINALIZATION,
    urns::REQ_TIME_SORTED_INPUT,
];

/// Translates a pipeline, or explains why it cannot run.
pub fn translate(pipeline: &Pipeline, opts: &TranslateOptions) -> Result<Plan, GraphError> {
    for req in &pipeline.requirements {
        if !SUPPORTED_REQUIREMENTS.contains(&req.as_str()) {
            return Err(GraphError::Requirement(req.clone()));
        }
    }
    let mut components = pipeline
        .components
        .clone()
        .ok_or_else(|| GraphError::Malformed("the pipeline has no components".into()))?;
    let mut leaves = leaves::collect(&mut components, &pipeline.root_transform_ids)?;
    if opts.drain {
        leaves = leaves::truncate_restrictions(&mut components, leaves);
    }
    if !opts.streaming {
        leaves::refuse_unreplayable_test_streams(&components, &leaves)?;
    }
    if leaves.is_empty() {
        return Err(GraphError::Malformed(
            "the pipeline has no transforms".into(),
        ));
    }
    let mut notes = Vec::new();
    // GroupByKey id → environment of the custom merging WindowFn it runs.
    let mut merge_envs: HashMap<String, String> = HashMap::new();
    for leaf in &leaves {
        if leaf.kind == LeafKind::GroupByKey {
            let t = &components.transforms[&leaf.id];
            if let Some(env) = check_gbk_windowing(&components, t, &mut notes)? {
                merge_envs.insert(leaf.id.clone(), env);
            }
        }
    }
    let used_envs = leaves.iter().filter_map(|l| {
        let env = match &l.kind {
            LeafKind::Sdk { environment_id } => environment_id.clone(),
            LeafKind::GroupByKey => merge_envs.get(&l.id)?.clone(),
            _ => return None,
        };
        let t = &components.transforms[&l.id];
        Some((env, format!("'{}' ({})", t.unique_name, leaves::urn(t))))
    });
    let environments =
        environments::resolve(&components, used_envs, opts.strict_environments, &mut notes)?;

    // A TestStream's elements are encoded with its payload's coder, which may
    // differ from its outputs' (inferred) coders: the outputs take the
    // payload's coder, so readers decode exactly the bytes the stream holds.
    // Keyed readers need the key-value structure on the wire, though: when
    // the stream's coder lacks it, an SDK-executed Flatten re-encodes the
    // stream's elements with the output's key-value coder on the way.
    let test_streams: Vec<String> = leaves
        .iter()
        .filter(|l| l.kind == LeafKind::TestStream)
        .map(|l| l.id.clone())
        .collect();
    for id in test_streams {
        let t = components.transforms[&id].clone();
        let spec = t.spec.as_ref().expect("leaf has a spec");
        let coder_id = pb::TestStreamPayload::decode(spec.payload.as_ref())
            .map_err(|e| {
                GraphError::unsupported(&t, format!("undecodable TestStreamPayload: {e}"))
            })?
            .coder_id;
        if !components.coders.contains_key(&coder_id) {
            return Err(GraphError::unsupported(
                &t,
                format!("its element coder {coder_id:?} is not in the pipeline"),
            ));
        }
        for (tag, pc) in t.outputs.clone() {
            let Some(p) = components.pcollections.get(&pc) else {
                continue;
            };
            let is_kv = |id: &str| {
                components
                    .coders
                    .get(id)
                    .and_then(|c| c.spec.as_ref())
                    .is_some_and(|s| s.urn == urns::KV_CODER)
            };
            if !(is_kv(&p.coder_id) && !is_kv(&coder_id) && p.coder_id != coder_id) {
                components
                    .pcollections
                    .get_mut(&pc)
                    .expect("exists")
                    .coder_id = coder_id.clone();
                continue;
            }
            let Some(env) = environments.keys().min().cloned() else {
                return Err(GraphError::unsupported(
                    &t,
                    format!(
                        "its elements are encoded with coder {coder_id:?} but its output is a \
                         key-value PCollection (coder {:?}), and no SDK environment can re-encode \
                         them; give the TestStream a key-value coder",
                        p.coder_id
                    ),
                ));
            };
            leaves.push(transcode_test_stream_output(
                &mut components,
                &id,
                &tag,
                &pc,
                &coder_id,
                &env,
            ));
        }
    }

    // The SDKs and the runner must agree on bytes: length-prefix every coder
    // the runner cannot parse, in every PCollection, before building ports.
    let ids: Vec<String> = components.pcollections.keys().cloned().collect();
    for id in ids {
        let coder = components.pcollections[&id].coder_id.clone();
        if !components.coders.contains_key(&coder) {
            return Err(GraphError::Malformed(format!(
                "pcollection {id:?} has unknown coder {coder:?}"
            )));
        }
        let wrapped = ferrobeam_coders::wrap_unknown_coders(&mut components, &coder);
        components
            .pcollections
            .get_mut(&id)
            .expect("exists")
            .coder_id = wrapped;
    }
    // Windows travel outside data-plane elements too (side input and user
    // state keys, timers): the SDK encodes those with the windowing
    // strategy's window coder, so it must be the wire's wrapped one.
    coders::wrap_window_coders(&mut components);

    let io = |f: fn(&PTransform) -> &HashMap<String, String>| -> HashMap<String, Vec<String>> {
        leaves
            .iter()
            .map(|l| {
                let mut v: Vec<String> =
                    f(&components.transforms[&l.id]).values().cloned().collect();
                v.sort();
                (l.id.clone(), v)
            })
            .collect()
    };
    let inputs = io(|t| &t.inputs);
    let outputs = io(|t| &t.outputs);
    let leaves = producers_first(leaves, &components, &inputs, &outputs)?;
    let (groups, group_of) = fuse(&leaves, &|id| outputs[id].clone(), &|id| inputs[id].clone());
    let order = topological(&groups, &group_of, &leaves, &inputs, &outputs)?;
    let mut b = Builder {
        components,
        opts,
        leaves: &leaves,
        group_of: &group_of,
        canonical: HashMap::new(),
        merge_envs,
    };
    let stages = b.stages(&groups, &order, &inputs, &outputs)?;
    if opts.streaming {
        refuse_streaming_gaps(&b.components, &stages)?;
    }
    Ok(Plan {
        components: b.components,
        stages,
        environments,
        notes,
        streaming: opts.streaming,
    })
}

/// Reroutes TestStream output `pc` through a new PCollection in the
/// stream's own coder and an SDK-executed Flatten into `pc`, which keeps
/// its key-value coder: the SDK decodes with one and encodes with the other.
fn transcode_test_stream_output(
    components: &mut Components,
    stream_id: &str,
    tag: &str,
    pc: &str,
    stream_coder: &str,
    environment_id: &str,
) -> Leaf {
    let raw = format!("{pc}/ferrobeam_stream_encoded");
    let mut raw_pc = components.pcollections[pc].clone();
    raw_pc.unique_name = format!("{}/StreamEncoded", raw_pc.unique_name);
    raw_pc.coder_id = stream_coder.to_owned();
    components.pcollections.insert(raw.clone(), raw_pc);
    let stream = components
        .transforms
        .get_mut(stream_id)
        .expect("the TestStream exists");
    stream.outputs.insert(tag.to_owned(), raw.clone());
    let stream_name = stream.unique_name.clone();
    let id = format!("{stream_id}/ferrobeam_transcode/{tag}");
    components.transforms.insert(
        id.clone(),
        PTransform {
            unique_name: format!("{stream_name}/ToKeyValueCoder[{tag}]"),
            spec: Some(FunctionSpec {
                urn: urns::FLATTEN.to_owned(),
                payload: Default::default(),
            }),
            inputs: HashMap::from([("in".to_owned(), raw.clone())]),
            outputs: HashMap::from([("out".to_owned(), pc.to_owned())]),
            environment_id: environment_id.to_owned(),
            ..Default::default()
        },
    );
    Leaf {
        id,
        kind: LeafKind::Sdk {
            environment_id: environment_id.to_owned(),
        },
        main_input: Some(raw),
        side_inputs: vec![],
        starts_stage: false,
        keyed: false,
        time_sorted: false,
        splittable: false,
    }
}

/// What the streaming engine cannot run yet, refused at Prepare.
/// The directory of a `WriteLines` sink, from its JSON payload.
fn line_sink_directory(t: &pb::PTransform) -> Result<std::path::PathBuf, GraphError> {
    let payload = t.spec.as_ref().map_or(&[][..], |s| s.payload.as_ref());
    let dir = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("directory")?.as_str().map(std::path::PathBuf::from))
        .ok_or_else(|| {
            GraphError::unsupported(
                t,
                "its payload must be JSON with a \"directory\" string".to_owned(),
            )
        })?;
    if !dir.is_absolute() {
        return Err(GraphError::unsupported(
            t,
            format!("its directory {} must be an absolute path", dir.display()),
        ));
    }
    Ok(dir)
}

/// `WriteLines` writes text: its elements must be `str` or `bytes`.
fn check_line_sink_input(
    components: &Components,
    t: &pb::PTransform,
    pcollection: &str,
) -> Result<(), GraphError> {
    let coder_id = &components.pcollections[pcollection].coder_id;
    let urn = components
        .coders
        .get(coder_id)
        .and_then(|c| c.spec.as_ref())
        .map_or("", |s| s.urn.as_str());
    if urn == urns::STRING_UTF8_CODER || urn == urns::BYTES_CODER {
        return Ok(());
    }
    Err(GraphError::unsupported(
        t,
        format!("it writes lines of text, but its input is encoded with {urn:?}, not as str or bytes; map the elements to str first (e.g. beam.Map(str)) or give the input a StrUtf8Coder"),
    ))
}

fn refuse_streaming_gaps(components: &Components, stages: &[Stage]) -> Result<(), GraphError> {
    for stage in stages {
        if let StageKind::GroupByKey {
            transform_id,
            merge: Some(_),
            ..
        } = &stage.kind
        {
            let t = &components.transforms[transform_id];
            return Err(GraphError::unsupported(
                t,
                "custom merging window functions are not supported with --streaming yet \
                 (ferrobeam issue 4); run the pipeline in batch, or use session windows",
            ));
        }
        if let StageKind::Sdk(sdk) = &stage.kind {
            for si in &sdk.side_inputs {
                refuse_triggered_unbounded_side_input(components, si)?;
            }
        }
    }
    Ok(())
}

/// A side input is complete for a window once its watermark passes the
/// window's end.  For an unbounded side input in the global window that is
/// never, so a trigger on it ("global window + repeated trigger", the other
/// flavour of slowly updating side inputs) is what would release the main
/// input; the engine does not apply side inputs' triggers, and the job would
/// wait forever instead of failing.
fn refuse_triggered_unbounded_side_input(
    components: &Components,
    si: &SideInput,
) -> Result<(), GraphError> {
    let Some(pc) = components.pcollections.get(&si.port.pcollection) else {
        return Ok(());
    };
    let Some(ws) = components
        .windowing_strategies
        .get(&pc.windowing_strategy_id)
    else {
        return Ok(());
    };
    let global = ws
        .window_fn
        .as_ref()
        .is_some_and(|f| f.urn == urns::GLOBAL_WINDOWS);
    let triggered = !matches!(
        ws.trigger.as_ref().and_then(|t| t.trigger.as_ref()),
        None | Some(pb::trigger::Trigger::Default(_))
    );
    if global && triggered && pc.is_bounded == pb::is_bounded::Enum::Unbounded as i32 {
        let t = &components.transforms[&si.transform_id];
        return Err(GraphError::unsupported(
            t,
            format!(
                "side input {:?} is unbounded, in the global window, with a trigger: ferrobeam \
                 does not apply side inputs' triggers yet (issue 4), so the main input would \
                 wait for the end of the global window forever. Use the windowed pattern \
                 instead: PeriodicImpulse(..., apply_windowing=True) for the side input and \
                 the same fixed windows on the main input",
                si.local_name
            ),
        ));
    }
    Ok(())
}

/// The leaves in an order where every leaf comes after the producers of its
/// inputs: the SDK's order when it already is one, which fusion relies on.
/// A cycle is an error here, before fusion could hide it inside one stage.
fn producers_first(
    leaves: Vec<Leaf>,
    components: &Components,
    inputs: &HashMap<String, Vec<String>>,
    outputs: &HashMap<String, Vec<String>>,
) -> Result<Vec<Leaf>, GraphError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, l) in leaves.iter().enumerate() {
        for pc in &outputs[&l.id] {
            producer.insert(pc, i);
        }
    }
    // Missing producers are reported later, with the pcollection's name.
    let mut waiting = vec![0usize; leaves.len()];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); leaves.len()];
    for (i, l) in leaves.iter().enumerate() {
        for pc in &inputs[&l.id] {
            if let Some(&p) = producer.get(pc.as_str()) {
                waiting[i] += 1;
                readers[p].push(i);
            }
        }
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..leaves.len())
        .filter(|&i| waiting[i] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(leaves.len());
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &r in &readers[i] {
            waiting[r] -= 1;
            if waiting[r] == 0 {
                ready.push(std::cmp::Reverse(r));
            }
        }
    }
    if order.len() < leaves.len() {
        let stuck = (0..leaves.len())
            .find(|&i| waiting[i] > 0)
            .expect("some leaf is stuck");
        let name = &components.transforms[&leaves[stuck].id].unique_name;
        return Err(GraphError::Malformed(format!(
            "the pipeline graph has a cycle through transform '{name}'"
        )));
    }
    let mut slots: Vec<Option<Leaf>> = leaves.into_iter().map(Some).collect();
    Ok(order
        .into_iter()
        .map(|i| slots[i].take().expect("each leaf once"))
        .collect())
}

/// Refuses what the native GroupByKey cannot do yet; returns the environment
/// of a custom merging window function, which the SDK must merge.
fn check_gbk_windowing(
    components: &Components,
    t: &PTransform,
    notes: &mut Vec<String>,
) -> Result<Option<String>, GraphError> {
    let input = t.inputs.values().next().cloned().unwrap_or_default();
    let ws_id = components
        .pcollections
        .get(&input)
        .map(|p| p.windowing_strategy_id.clone())
        .unwrap_or_default();
    let ws = components
        .windowing_strategies
        .get(&ws_id)
        .ok_or_else(|| GraphError::Malformed(format!("unknown windowing strategy {ws_id:?}")))?;
    if ws.accumulation_mode == pb::accumulation_mode::Enum::Retracting as i32 {
        return Err(GraphError::unsupported(
            t,
            "RETRACTING accumulation mode is not part of any Beam SDK's model yet; use DISCARDING or ACCUMULATING",
        ));
    }
    crate::trigger::Trigger::from_proto(ws.trigger.as_ref())
        .map_err(|why| GraphError::unsupported(t, format!("its trigger cannot run: {why}")))?;
    let window_coder = components
        .coders
        .get(&ws.window_coder_id)
        .and_then(|c| c.spec.as_ref())
        .map(|s| s.urn.as_str());
    let readable = matches!(
        window_coder,
        Some(urns::GLOBAL_WINDOW_CODER | urns::INTERVAL_WINDOW_CODER)
    );
    let end_of_window = !matches!(
        pb::output_time::Enum::try_from(ws.output_time),
        Ok(pb::output_time::Enum::EarliestInPane | pb::output_time::Enum::LatestInPane)
    );
    if !readable && end_of_window {
        notes.push(format!(
            "GroupByKey '{}' groups windows of a custom window coder ({}) whose end the runner cannot \
             read: each group is output at the latest timestamp among its inputs (still inside its \
             window) instead of at the end of its window.",
            t.unique_name,
            window_coder.unwrap_or("unknown")
        ));
    }
    if crate::window_merge::needs_sdk_merge(ws) {
        return crate::window_merge::environment(components, &ws_id, t).map(Some);
    }
    Ok(None)
}

fn topological(
    groups: &[Group],
    group_of: &[usize],
    leaves: &[Leaf],
    inputs: &HashMap<String, Vec<String>>,
    outputs: &HashMap<String, Vec<String>>,
) -> Result<Vec<usize>, GraphError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, l) in leaves.iter().enumerate() {
        for pc in &outputs[&l.id] {
            producer.insert(pc, group_of[i]);
        }
    }
    let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); groups.len()];
    for (g, group) in groups.iter().enumerate() {
        for &l in &group.leaves {
            for pc in &inputs[&leaves[l].id] {
                match producer.get(pc.as_str()) {
                    Some(&h) if h != g => {
                        deps[g].insert(h);
                    }
                    Some(_) => {}
                    None => {
                        return Err(GraphError::Malformed(format!(
                            "pcollection {pc:?} is read by {:?} but produced by no transform",
                            leaves[l].id
                        )))
                    }
                }
            }
        }
    }
    let mut done = vec![false; groups.len()];
    let mut order = Vec::with_capacity(groups.len());
    while order.len() < groups.len() {
        let next = (0..groups.len()).find(|&g| !done[g] && deps[g].iter().all(|&d| done[d]));
        match next {
            Some(g) => {
                done[g] = true;
                order.push(g);
            }
            None => {
                return Err(GraphError::Malformed(
                    "the pipeline graph has a cycle".into(),
                ))
            }
        }
    }
    Ok(order)
}

struct Builder<'a> {
    components: Components,
    opts: &'a TranslateOptions,
    leaves: &'a [Leaf],
    group_of: &'a [usize],
    /// Structural coder key → the one coder id we use for it.
    canonical: HashMap<String, String>,
    /// GroupByKey id → environment of its custom merging WindowFn.
    merge_envs: HashMap<String, String>,
}

impl Builder<'_> {
    /// The wire port for reading `pcollection` encoded like `like`'s elements.
    fn port(&mut self, pcollection: &str, like: &str) -> PortRef {
        let coder = coders::windowed(&mut self.components, like);
        let key = coders::canonical(&self.components, &coder);
        let coder_id = self.canonical.entry(key).or_insert(coder).clone();
        PortRef {
            pcollection: pcollection.to_owned(),
            coder_id,
        }
    }

    fn single(&self, v: &[String], leaf: &Leaf) -> Result<String, GraphError> {
        match v {
            [one] => Ok(one.clone()),
            _ => Err(GraphError::unsupported(
                &self.components.transforms[&leaf.id],
                "expected exactly one output",
            )),
        }
    }

    fn stages(
        &mut self,
        groups: &[Group],
        order: &[usize],
        inputs: &HashMap<String, Vec<String>>,
        outputs: &HashMap<String, Vec<String>>,
    ) -> Result<Vec<Stage>, GraphError> {
        let mut producer: HashMap<String, usize> = HashMap::new();
        for (i, l) in self.leaves.iter().enumerate() {
            for pc in &outputs[&l.id] {
                producer.insert(pc.clone(), self.group_of[i]);
            }
        }
        // What each group must write for the groups that read from it, and
        // the port each consumer reads.  Walk consumers before producers:
        // Flatten and Reshuffle pass bytes through, so they read their inputs
        // in whatever encodings their own readers want.
        let mut requested: Vec<BTreeSet<PortRef>> = vec![BTreeSet::new(); groups.len()];
        let mut reads: HashMap<(usize, String), PortRef> = HashMap::new();
        let mut variants: HashMap<usize, Vec<(Vec<PortRef>, PortRef)>> = HashMap::new();
        for &g in order.iter().rev() {
            let group = &groups[g];
            if matches!(group.kind, LeafKind::Flatten | LeafKind::Identity) {
                let leaf = &self.leaves[group.leaves[0]];
                let out = self.single(&outputs[&leaf.id], leaf)?;
                let mut wanted: Vec<PortRef> = requested[g].iter().cloned().collect();
                if wanted.is_empty() {
                    wanted.push(self.port(&out, &out));
                }
                for port in wanted {
                    let mut ins = Vec::new();
                    for pc in &inputs[&leaf.id] {
                        let input = PortRef {
                            pcollection: pc.clone(),
                            coder_id: port.coder_id.clone(),
                        };
                        requested[producer[pc]].insert(input.clone());
                        ins.push(input);
                    }
                    variants.entry(g).or_default().push((ins, port));
                }
                continue;
            }
            for &l in &group.leaves {
                let leaf = &self.leaves[l];
                for pc in &inputs[&leaf.id] {
                    let h = producer[pc];
                    if h != g {
                        let port = self.port(pc, pc);
                        requested[h].insert(port.clone());
                        reads.insert((g, pc.clone()), port);
                    }
                }
            }
        }
        let mut stages = Vec::new();
        for (n, &g) in order.iter().enumerate() {
            let group = &groups[g];
            let first = &self.leaves[group.leaves[0]];
            let t = self.components.transforms[&first.id].clone();
            let id = format!("s{n}");
            let native_output = |b: &mut Self| -> Result<PortRef, GraphError> {
                let out = b.single(&outputs[&first.id], first)?;
                let port = b.port(&out, &out);
                for r in &requested[g] {
                    if *r != port {
                        return Err(GraphError::unsupported(
                            &t,
                            format!("its output is read with a different coder ({}), which is not supported", r.coder_id),
                        ));
                    }
                }
                Ok(port)
            };
            let kind = match &group.kind {
                LeafKind::Impulse => StageKind::Impulse {
                    output: native_output(self)?,
                },
                LeafKind::TestStream => {
                    let spec = t.spec.as_ref().expect("leaf has a spec");
                    let payload =
                        pb::TestStreamPayload::decode(spec.payload.as_ref()).map_err(|e| {
                            GraphError::unsupported(
                                &t,
                                format!("undecodable TestStreamPayload: {e}"),
                            )
                        })?;
                    let mut ports = Vec::new();
                    let mut tags: Vec<(&String, &String)> = t.outputs.iter().collect();
                    tags.sort();
                    for (tag, pc) in tags {
                        let port = self.port(pc, pc);
                        if let Some(r) = requested[g]
                            .iter()
                            .find(|r| r.pcollection == *pc && **r != port)
                        {
                            return Err(GraphError::unsupported(
                                &t,
                                format!("its output is read with a different coder ({}), which is not supported", r.coder_id),
                            ));
                        }
                        ports.push((tag.clone(), port));
                    }
                    StageKind::TestStream {
                        payload,
                        outputs: ports,
                    }
                }
                LeafKind::GroupByKey => {
                    let input = reads[&(g, first.main_input.clone().expect("gbk input"))].clone();
                    let ws_id = self.components.pcollections[&input.pcollection]
                        .windowing_strategy_id
                        .clone();
                    let windowing = self.components.windowing_strategies[&ws_id].clone();
                    let merge = self.merge_envs.get(&first.id).map(|env| {
                        let endpoint = &self.opts.fn_endpoint;
                        Box::new(crate::window_merge::build(
                            &mut self.components,
                            &ws_id,
                            &t.unique_name,
                            env,
                            endpoint,
                        ))
                    });
                    let output = native_output(self)?;
                    StageKind::GroupByKey {
                        transform_id: first.id.clone(),
                        input,
                        output,
                        windowing,
                        merge,
                    }
                }
                LeafKind::Identity | LeafKind::Flatten => {
                    // One stage per encoding its readers asked for.
                    let name = self.components.transforms[&first.id].unique_name.clone();
                    for (k, (ins, output)) in variants
                        .remove(&g)
                        .unwrap_or_default()
                        .into_iter()
                        .enumerate()
                    {
                        let kind = if group.kind == LeafKind::Flatten {
                            StageKind::Flatten {
                                inputs: ins,
                                output,
                            }
                        } else {
                            StageKind::Identity {
                                input: ins.into_iter().next().expect("one input"),
                                output,
                            }
                        };
                        stages.push(Stage {
                            id: format!("{id}v{k}"),
                            name: name.clone(),
                            transforms: vec![name.clone()],
                            kind,
                        });
                    }
                    continue;
                }
                LeafKind::LineSink => {
                    let input = reads[&(g, first.main_input.clone().expect("sink input"))].clone();
                    check_line_sink_input(&self.components, &t, &input.pcollection)?;
                    StageKind::LineSink {
                        transform_id: first.id.clone(),
                        directory: line_sink_directory(&t)?,
                        input,
                    }
                }
                LeafKind::KafkaRead => {
                    let output = native_output(self)?;
                    let spec = t.spec.clone().unwrap_or_default();
                    crate::kafka::check_read_output(
                        &self.components,
                        &t,
                        &spec.urn,
                        &output.pcollection,
                    )?;
                    StageKind::KafkaRead {
                        transform_id: first.id.clone(),
                        urn: spec.urn,
                        payload: spec.payload,
                        output,
                    }
                }
                LeafKind::KafkaWrite => {
                    let input = reads[&(g, first.main_input.clone().expect("sink input"))].clone();
                    let spec = t.spec.clone().unwrap_or_default();
                    crate::kafka::check_write_input(
                        &self.components,
                        &t,
                        &spec.urn,
                        &input.pcollection,
                    )?;
                    StageKind::KafkaWrite {
                        transform_id: first.id.clone(),
                        urn: spec.urn,
                        payload: spec.payload,
                        input,
                    }
                }
                LeafKind::Sdk { environment_id } => StageKind::Sdk(Box::new(self.sdk_stage(
                    &id,
                    environment_id,
                    group,
                    &reads,
                    g,
                    &requested[g],
                )?)),
            };
            let transforms: Vec<String> = group
                .leaves
                .iter()
                .map(|&l| {
                    self.components.transforms[&self.leaves[l].id]
                        .unique_name
                        .clone()
                })
                .collect();
            let name = transforms.join(", ");
            stages.push(Stage {
                id,
                name,
                transforms,
                kind,
            });
        }
        Ok(stages)
    }

    /// The timer families of the group's ParDos, with their timer coders
    /// rewritten (in the descriptor's copies) so the runner can read keys,
    /// windows and timestamps out of every timer.
    fn timer_families(
        &mut self,
        group: &Group,
        transforms: &mut HashMap<String, PTransform>,
    ) -> Result<Vec<TimerFamily>, GraphError> {
        let mut families = Vec::new();
        for &l in &group.leaves {
            let id = &self.leaves[l].id;
            let t = transforms.get_mut(id).expect("group transform");
            let Some(spec) = t.spec.as_mut().filter(|s| s.urn == urns::PAR_DO) else {
                continue;
            };
            let mut payload = ParDoPayload::decode(spec.payload.as_ref()).map_err(|e| {
                GraphError::Malformed(format!("transform {id:?}: undecodable ParDoPayload: {e}"))
            })?;
            if payload.timer_family_specs.is_empty() {
                continue;
            }
            let mut names: Vec<String> = payload.timer_family_specs.keys().cloned().collect();
            names.sort();
            for name in names {
                let fam = payload.timer_family_specs.get_mut(&name).expect("listed");
                if !self
                    .components
                    .coders
                    .contains_key(&fam.timer_family_coder_id)
                {
                    return Err(GraphError::Malformed(format!(
                        "transform {id:?}: timer family '{name}' has unknown coder {:?}",
                        fam.timer_family_coder_id
                    )));
                }
                fam.timer_family_coder_id = ferrobeam_coders::wrap_unknown_coders(
                    &mut self.components,
                    &fam.timer_family_coder_id,
                );
                let domain = if fam.time_domain == TimeDomainProto::ProcessingTime as i32 {
                    TimeDomain::ProcessingTime
                } else {
                    TimeDomain::EventTime
                };
                families.push(TimerFamily {
                    transform_id: id.clone(),
                    family_id: name,
                    coder_id: fam.timer_family_coder_id.clone(),
                    domain,
                });
            }
            spec.payload = payload.encode_to_vec().into();
        }
        Ok(families)
    }

    fn sdk_stage(
        &mut self,
        stage_id: &str,
        environment_id: &str,
        group: &Group,
        reads: &HashMap<(usize, String), PortRef>,
        g: usize,
        outputs: &BTreeSet<PortRef>,
    ) -> Result<SdkStage, GraphError> {
        let first = &self.leaves[group.leaves[0]];
        let endpoint = Some(ApiServiceDescriptor {
            url: self.opts.fn_endpoint.clone(),
            ..Default::default()
        });
        let mut transforms = HashMap::new();
        for &l in &group.leaves {
            let id = &self.leaves[l].id;
            let mut t = self.components.transforms[id].clone();
            t.subtransforms.clear();
            transforms.insert(id.clone(), t);
        }
        let grpc = |coder_id: &str| {
            RemoteGrpcPort {
                api_service_descriptor: endpoint.clone(),
                coder_id: coder_id.to_owned(),
            }
            .encode_to_vec()
        };
        let mut input = None;
        if let Some(main) = &first.main_input {
            if let Some(port) = reads.get(&(g, main.clone())) {
                let source_id = format!("{stage_id}/source");
                transforms.insert(
                    source_id.clone(),
                    PTransform {
                        unique_name: source_id.clone(),
                        spec: Some(FunctionSpec {
                            urn: urns::DATA_SOURCE.into(),
                            payload: grpc(&port.coder_id).into(),
                        }),
                        outputs: HashMap::from([("out".to_owned(), main.clone())]),
                        ..Default::default()
                    },
                );
                input = Some((port.clone(), source_id));
            }
        }
        let mut sinks = Vec::new();
        for (k, port) in outputs.iter().enumerate() {
            let sink_id = format!("{stage_id}/sink{k}");
            transforms.insert(
                sink_id.clone(),
                PTransform {
                    unique_name: sink_id.clone(),
                    spec: Some(FunctionSpec {
                        urn: urns::DATA_SINK.into(),
                        payload: grpc(&port.coder_id).into(),
                    }),
                    inputs: HashMap::from([("in".to_owned(), port.pcollection.clone())]),
                    ..Default::default()
                },
            );
            sinks.push((port.clone(), sink_id));
        }
        let mut side_inputs = Vec::new();
        for &l in &group.leaves {
            let leaf = &self.leaves[l];
            for (local, pc, access) in &leaf.side_inputs {
                let port = self.port(pc, pc);
                side_inputs.push(SideInput {
                    transform_id: leaf.id.clone(),
                    local_name: local.clone(),
                    port,
                    access: if access == urns::SIDE_INPUT_MULTIMAP {
                        SideInputAccess::Multimap
                    } else {
                        SideInputAccess::Iterable
                    },
                });
            }
        }
        let timer_families = self.timer_families(group, &mut transforms)?;
        let mut pcollections = HashMap::new();
        for t in transforms.values() {
            for pc in t.inputs.values().chain(t.outputs.values()) {
                pcollections.insert(pc.clone(), self.components.pcollections[pc].clone());
            }
        }
        let descriptor = ProcessBundleDescriptor {
            id: stage_id.to_owned(),
            transforms,
            pcollections,
            windowing_strategies: self.components.windowing_strategies.clone(),
            coders: self.components.coders.clone(),
            environments: self.components.environments.clone(),
            state_api_service_descriptor: endpoint.clone(),
            timer_api_service_descriptor: if timer_families.is_empty() {
                None
            } else {
                endpoint.clone()
            },
        };
        // Streaming: a drain truncates what the SDF deferred, through a
        // variant of this stage with the truncation in front of Process.
        let drain_descriptor = match (&input, &first.main_input) {
            (Some(_), Some(sized)) if self.opts.streaming && first.splittable => {
                leaves::truncating_descriptor(&descriptor, &first.id, sized)
            }
            _ => None,
        };
        Ok(SdkStage {
            environment_id: environment_id.to_owned(),
            descriptor,
            drain_descriptor,
            input,
            outputs: sinks,
            side_inputs,
            keyed: first.keyed,
            time_sorted: first.time_sorted,
            timer_families,
            residual_target: first.splittable.then(|| first.id.clone()),
        })
    }
}
