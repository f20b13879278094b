//! The ferrobeam engine: runs a [`ferrobeam_graph::Plan`].
//!
//! Batch execution runs stages in topological order.  SDK stages are cut
//! into bundles that run on a pool of SDK workers, several in flight per
//! worker; GroupByKey, Flatten, Impulse and Reshuffle run natively here.

pub mod durable;
mod failpoint;
pub mod gbk;
pub mod job;
pub mod metrics;
mod paging;
mod panes;
pub mod partition;
pub mod pool;
mod sdk_stage;
pub mod sinks;
pub mod state;
pub mod streaming;
pub mod telemetry;
mod test_stream;
mod timers;
mod triggers;
pub mod user_state;
pub mod window_merge;
pub mod wire;

pub use job::{run_job, EngineConfig, JobSpec, Level, Reporter};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// User code failed; the message carries the SDK's traceback.
    #[error("{0}")]
    UserCode(String),
    #[error("SDK workers could not be started: {0}")]
    Workers(String),
    #[error("the job was cancelled")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
    /// The state backend or a checkpoint failed (disk full, corrupt files, ...).
    #[error("{0}")]
    State(#[from] ferrobeam_state::StateError),
    /// An external system (a Kafka broker) failed in a way that will not heal.
    #[error("{0}")]
    Io(String),
    /// The job cannot end cleanly because its output is not committed.
    #[error("{0}")]
    Uncommitted(String),
}

/// Checks the native IO of a plan at Prepare: a Kafka transform whose
/// payload cannot run is refused before the job starts, with the
/// transform's name, URN and what is wrong.
pub fn check_native_io(plan: &ferrobeam_graph::Plan) -> Result<(), String> {
    let mut transactional: std::collections::HashMap<String, String> = Default::default();
    for stage in &plan.stages {
        if let ferrobeam_graph::StageKind::KafkaRead {
            transform_id,
            urn,
            payload,
            ..
        }
        | ferrobeam_graph::StageKind::KafkaWrite {
            transform_id,
            urn,
            payload,
            ..
        } = &stage.kind
        {
            let name = &plan.components.transforms[transform_id].unique_name;
            let parsed = streaming::kafka::parse(name, urn, payload)?;
            if let ferrobeam_io_kafka::KafkaTransform::Write(w) = &parsed {
                if let Some(id) = w.transactional_id() {
                    // A second producer with the id would fence the first.
                    if let Some(other) = transactional.insert(id.to_owned(), name.clone()) {
                        return Err(format!(
                            "transforms {other:?} and {name:?} ({urn}) both write with \
                             transactional.id {id:?}; each Kafka write needs its own"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}
