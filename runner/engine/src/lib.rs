//! The ferrobeam engine: runs a [`ferrobeam_graph::Plan`].
//!
//! Batch execution runs stages in topological order.  SDK stages are cut
//! into bundles that run on a pool of SDK workers, several in flight per
//! worker; GroupByKey, Flatten, Impulse and Reshuffle run natively here.

pub mod durable;
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
    /// The job cannot end cleanly because its output is not committed.
    #[error("{0}")]
    Uncommitted(String),
}
