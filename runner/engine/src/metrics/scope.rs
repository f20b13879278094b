//! Which of a stage's monitoring infos count towards the job's totals.

use std::collections::{HashMap, HashSet};

use ferrobeam_graph::{Plan, StageKind};
use ferrobeam_proto::pipeline::v1::MonitoringInfo;

pub(super) const PTRANSFORM_LABEL: &str = "PTRANSFORM";
const PCOLLECTION_LABEL: &str = "PCOLLECTION";

/// What one SDK stage's bundles report that the job's totals leave out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageScope {
    /// The data-plane source and sink transforms ferrobeam adds to the
    /// stage: the SDK reports their execution times and read indices, but
    /// they are not in the user's pipeline.
    synthetic_transforms: HashSet<String>,
    /// The stage's main input when some other stage already counts its
    /// elements.  The SDK counts a PCollection (elements, sampled sizes) in
    /// every bundle where a transform outputs it, and the data source of a
    /// stage "outputs" its input again: summing both would double it.
    counted_elsewhere: HashSet<String>,
}

impl StageScope {
    /// One scope per SDK stage id.
    ///
    /// A PCollection is counted by the SDK stage producing it; one produced
    /// by the runner itself (Impulse, GroupByKey, Flatten, Reshuffle) is
    /// counted by the first stage, in plan order, reading it as main input.
    pub fn for_plan(plan: &Plan) -> HashMap<String, StageScope> {
        let sdk_produced: HashSet<&str> = plan
            .stages
            .iter()
            .filter(|s| matches!(s.kind, StageKind::Sdk(_)))
            .flat_map(|s| s.kind.outputs())
            .map(|p| p.pcollection.as_str())
            .collect();
        let mut counted: HashSet<&str> = HashSet::new();
        let mut scopes = HashMap::new();
        for stage in &plan.stages {
            let StageKind::Sdk(sdk) = &stage.kind else {
                continue;
            };
            let mut scope = StageScope::default();
            scope
                .synthetic_transforms
                .extend(sdk.outputs.iter().map(|(_, sink)| sink.clone()));
            if let Some((port, source)) = &sdk.input {
                scope.synthetic_transforms.insert(source.clone());
                let pc = port.pcollection.as_str();
                if sdk_produced.contains(pc) || !counted.insert(pc) {
                    scope.counted_elsewhere.insert(pc.to_owned());
                }
            }
            scopes.insert(stage.id.clone(), scope);
        }
        scopes
    }

    /// Whether `info` counts towards the job's totals.
    pub fn contributes(&self, info: &MonitoringInfo) -> bool {
        let synthetic = info
            .labels
            .get(PTRANSFORM_LABEL)
            .is_some_and(|t| self.synthetic_transforms.contains(t));
        let recounted = info
            .labels
            .get(PCOLLECTION_LABEL)
            .is_some_and(|p| self.counted_elsewhere.contains(p));
        !synthetic && !recounted
    }
}

/// Transform id to unique name, for every transform of the plan whose
/// unique name differs from its id.
pub fn step_names(plan: &Plan) -> HashMap<String, String> {
    plan.components
        .transforms
        .iter()
        .filter(|(id, t)| !t.unique_name.is_empty() && t.unique_name != **id)
        .map(|(id, t)| (id.clone(), t.unique_name.clone()))
        .collect()
}
