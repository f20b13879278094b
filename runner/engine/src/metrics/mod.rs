//! A job's metrics: the SDK's monitoring infos merged across bundles.
//!
//! Only bundles that committed contribute, so a retried bundle is counted
//! once.  In batch a failed attempt reports nothing (the SDK sends no
//! monitoring infos with an error), so attempted and committed are the same
//! numbers.
//!
//! Each info is identified by its URN and labels and merged by its type
//! ([`payload`]).  Two kinds of what the SDK reports are left out
//! ([`StageScope`]): measurements of the data-plane source and sink
//! transforms ferrobeam adds to every stage (not part of the user's
//! pipeline, and named differently in every run), and the element counts and
//! byte sizes a stage reports for the input it reads from the runner when
//! another stage already counted those elements.
//!
//! The SDK names transforms by their pipeline ids (`ref_AppliedPTransform_M_21`);
//! the job publishes them under their unique names (`M`), as Beam's own
//! runners do, so `MetricsFilter().with_step("M")` finds them.
//!
//! The runner adds gauges of its own ([`JobMetrics::set_gauge`]): what its
//! native stages hold, e.g. `gbk_buffered_values`, in namespace
//! [`RUNNER_NAMESPACE`], reported like a user gauge of the transform so that
//! Beam's `PipelineResult.metrics()` shows them.

mod bounded_trie;
pub mod payload;
mod scope;
mod string_set;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrobeam_proto::pipeline::v1::MonitoringInfo;
use parking_lot::Mutex;

use crate::job::Reporter;

pub use scope::{step_names, StageScope};
pub use string_set::STRING_SET_SIZE_LIMIT;

/// A payload that does not decode as its type says.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("malformed metric payload ({0})")]
    Malformed(String),
}

type Key = (String, BTreeMap<String, String>);

/// Monitoring infos merged by URN and labels.
#[derive(Default)]
pub struct Metrics {
    infos: HashMap<Key, MonitoringInfo>,
}

impl Metrics {
    /// Adds every info as reported, with no filtering.
    pub fn add_all(&mut self, infos: &[MonitoringInfo]) {
        for info in infos {
            self.add(info);
        }
    }

    /// Adds what one committed bundle of a stage reported, leaving out what
    /// `scope` says the stage must not contribute.
    pub fn add_bundle(&mut self, scope: &StageScope, infos: &[MonitoringInfo]) {
        for info in infos.iter().filter(|i| scope.contributes(i)) {
            self.add(info);
        }
    }

    fn add(&mut self, info: &MonitoringInfo) {
        let key = (
            info.urn.clone(),
            info.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        let Some(old) = self.infos.get_mut(&key) else {
            self.infos.insert(key, info.clone());
            return;
        };
        let merged = if old.r#type == info.r#type {
            payload::merge(&old.r#type, &old.payload, &info.payload)
        } else {
            Err(MergeError::Malformed(format!(
                "type changed from {} to {}",
                old.r#type, info.r#type
            )))
        };
        match merged {
            Ok(Some(payload)) => old.payload = payload.into(),
            // Types without a merge rule (progress): the latest report stands.
            Ok(None) => *old = info.clone(),
            Err(e) => {
                // One bad report must not cost the job; keep the newest value.
                tracing::warn!(urn = %info.urn, labels = ?info.labels, "cannot merge metric, keeping the latest report: {e}");
                *old = info.clone();
            }
        }
    }

    pub fn snapshot(&self) -> Vec<MonitoringInfo> {
        self.infos.values().cloned().collect()
    }

    /// The merged infos with `PTRANSFORM` labels renamed by `names`
    /// (transform id to the name users know it by).
    pub fn snapshot_named(&self, names: &HashMap<String, String>) -> Vec<MonitoringInfo> {
        let mut infos = self.snapshot();
        for info in &mut infos {
            if let Some(step) = info.labels.get_mut(scope::PTRANSFORM_LABEL) {
                if let Some(name) = names.get(step.as_str()) {
                    step.clone_from(name);
                }
            }
        }
        infos
    }
}

/// The namespace of the gauges the runner reports itself.
pub const RUNNER_NAMESPACE: &str = "ferrobeam";
/// Beam's URN of a user gauge (the Python SDK's `Metrics.gauge`).
const USER_GAUGE_URN: &str = "beam:metric:user:latest_int64:v1";

/// How often a running job's metrics are republished while bundles commit.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(500);

/// A job's metrics as its bundles commit, published to the job service
/// (`GetJobMetrics`) while the job runs, not only when it ends.
pub struct JobMetrics {
    state: Mutex<(Metrics, Option<Instant>)>,
    reporter: Arc<dyn Reporter>,
    /// Transform id to unique name ([`step_names`]).
    step_names: HashMap<String, String>,
}

impl JobMetrics {
    pub fn new(reporter: Arc<dyn Reporter>, step_names: HashMap<String, String>) -> Self {
        JobMetrics {
            state: Mutex::new((Metrics::default(), None)),
            reporter,
            step_names,
        }
    }

    /// Merges a committed bundle's infos; republishes if the last
    /// publication is older than [`PUBLISH_INTERVAL`].
    pub fn commit_bundle(&self, scope: &StageScope, infos: &[MonitoringInfo]) {
        let mut state = self.state.lock();
        state.0.add_bundle(scope, infos);
        if state.1.is_none_or(|t| t.elapsed() >= PUBLISH_INTERVAL) {
            state.1 = Some(Instant::now());
            // Under the lock, so publications never go back in time.
            self.reporter
                .metrics(state.0.snapshot_named(&self.step_names));
        }
    }

    /// Sets the runner's gauge `name` of transform `transform_id` (a
    /// pipeline id; published under its unique name) to `value`, stamped
    /// now.  Published with the job's next publication.
    pub fn set_gauge(&self, transform_id: &str, name: &str, value: i64) {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut payload = Vec::with_capacity(12);
        ferrobeam_coders::varint::write_varint_i64(&mut payload, millis);
        ferrobeam_coders::varint::write_varint_i64(&mut payload, value);
        let info = MonitoringInfo {
            urn: USER_GAUGE_URN.into(),
            r#type: payload::LATEST_INT64.into(),
            payload: payload.into(),
            labels: [
                (scope::PTRANSFORM_LABEL.to_owned(), transform_id.to_owned()),
                ("NAMESPACE".to_owned(), RUNNER_NAMESPACE.to_owned()),
                ("NAME".to_owned(), name.to_owned()),
            ]
            .into(),
            start_time: None,
        };
        self.state.lock().0.add(&info);
    }

    /// Publishes the current totals now (end of a stage, end of the job).
    pub fn publish(&self) {
        let mut state = self.state.lock();
        state.1 = Some(Instant::now());
        self.reporter
            .metrics(state.0.snapshot_named(&self.step_names));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Level;

    #[derive(Default)]
    struct Published(Mutex<Vec<Vec<MonitoringInfo>>>);

    impl Reporter for Published {
        fn message(&self, _: Level, _: String) {}
        fn metrics(&self, infos: Vec<MonitoringInfo>) {
            self.0.lock().push(infos);
        }
    }

    fn counter(step: &str) -> MonitoringInfo {
        MonitoringInfo {
            urn: "beam:metric:user:sum_int64:v1".into(),
            r#type: payload::SUM_INT64.into(),
            payload: vec![1].into(),
            labels: [("PTRANSFORM".to_owned(), step.to_owned())].into(),
            start_time: None,
        }
    }

    #[test]
    fn publishes_the_first_bundle_then_at_most_every_interval_and_always_on_request() {
        let published = Arc::new(Published::default());
        let names = HashMap::from([("ref_M".to_owned(), "M".to_owned())]);
        let metrics = JobMetrics::new(published.clone(), names);
        let scope = StageScope::default();
        metrics.commit_bundle(&scope, &[counter("ref_M")]);
        metrics.commit_bundle(&scope, &[counter("ref_M")]);
        assert_eq!(
            published.0.lock().len(),
            1,
            "the second bundle is within the interval"
        );
        metrics.publish();
        let all = published.0.lock();
        assert_eq!(all.len(), 2);
        let last = &all[1];
        assert_eq!(last.len(), 1);
        assert_eq!(
            (
                last[0].labels["PTRANSFORM"].as_str(),
                last[0].payload.as_ref()
            ),
            ("M", &[2u8][..])
        );
    }

    #[test]
    fn runner_gauges_are_published_under_the_transform_name_latest_value_wins() {
        let published = Arc::new(Published::default());
        let names = HashMap::from([("ref_G".to_owned(), "G".to_owned())]);
        let metrics = JobMetrics::new(published.clone(), names);
        metrics.set_gauge("ref_G", "gbk_buffered_values", 300);
        metrics.set_gauge("ref_G", "gbk_buffered_values", 7);
        metrics.publish();
        let all = published.0.lock();
        let [gauge] = &all[0][..] else {
            panic!("one gauge expected: {:?}", all[0]);
        };
        assert_eq!(gauge.urn, USER_GAUGE_URN);
        assert_eq!(gauge.r#type, payload::LATEST_INT64);
        assert_eq!(gauge.labels["PTRANSFORM"], "G");
        assert_eq!(gauge.labels["NAMESPACE"], RUNNER_NAMESPACE);
        assert_eq!(gauge.labels["NAME"], "gbk_buffered_values");
        let (_, at) = ferrobeam_coders::varint::read_varint_i64(&gauge.payload, 0).unwrap();
        let (value, _) = ferrobeam_coders::varint::read_varint_i64(&gauge.payload, at).unwrap();
        assert_eq!(value, 7);
    }
}
