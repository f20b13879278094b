//! Beam's Fn API, runner side.
//!
//! SDK workers dial in to one gRPC server ([`FnServer`]) and identify
//! themselves with the `worker_id` metadata header.  The engine talks to each
//! connected worker through a [`Worker`] handle: register descriptors, run a
//! bundle (inputs in, outputs and the SDK's response back), serve its state
//! requests.  [`environment`] starts and stops the worker processes.

pub mod control;
pub mod data;
pub mod environment;
pub mod logging;
pub mod provision;
pub mod registry;
pub mod remote_pools;
pub mod server;
pub mod state;
pub mod state_socket;
pub mod worker;

pub use environment::{EnvironmentSpec, WorkerLauncher};
pub use registry::{Registry, WorkerSetup};
pub use server::{FnServer, FnServerOptions};
pub use state::StateHandler;
pub use worker::{
    BundleError, BundleInput, BundleOutput, BundleRequest, TimerStream, Worker,
    CONTROL_REQUEST_ELEMENTS_EMBEDDING, CONTROL_RESPONSE_ELEMENTS_EMBEDDING,
};

/// Metadata header carrying the worker id on every Fn API stream.
pub const WORKER_ID_HEADER: &str = "worker_id";

/// Metadata header on the control stream in which ferrobeam's Python harness
/// hook (`sdk-python/ferrobeam/_control_embedding.py`) lists, comma-separated,
/// the Beam protocols it adds to the stock harness.
pub const SDK_CAPABILITIES_HEADER: &str = "ferrobeam-sdk-capabilities";

/// Reads the worker id a stream was opened with.
pub(crate) fn worker_id<T>(req: &tonic::Request<T>) -> Result<String, tonic::Status> {
    req.metadata()
        .get(WORKER_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| tonic::Status::invalid_argument("missing worker_id metadata header"))
}
