//! Beam's Job API for ferrobeam: job lifecycle, artifact staging and
//! retrieval, state and message streams.
//!
//! The crate speaks the protocol Beam's `PortableRunner` client expects
//! (Prepare → stage artifacts → open streams → Run → metrics) and hands
//! each job to an [`Executor`]; it knows nothing about execution itself.
//!
//! Wiring it up:
//!
//! ```no_run
//! # async fn demo(executor: std::sync::Arc<dyn ferrobeam_jobs::Executor>) -> Result<(), Box<dyn std::error::Error>> {
//! use ferrobeam_jobs::{JobServer, JobServiceConfig};
//! let jobs = JobServer::new(executor, JobServiceConfig {
//!     max_artifact_bytes: 256 << 20,
//!     ..JobServiceConfig::with_root("/tmp/ferrobeam")
//! })?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8099").await?;
//! // Either just these services ...
//! // jobs.serve(listener, shutdown_future).await?;
//! // ... or together with others on the same port:
//! tonic::transport::Server::builder()
//!     .add_routes(jobs.routes())
//!     // .add_service(expansion_service)
//!     .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
//!     .await?;
//! # Ok(()) }
//! ```

mod config;
mod error;
mod executor;
mod expansion;
mod fsutil;
mod history;
mod job;
mod job_control;
mod lifecycle;
mod overview;
mod registry;
mod retrieval;
mod server;
mod service;
mod staging;
mod status;
mod streams;
pub mod urns;

pub use config::JobServiceConfig;
pub use error::JobsError;
pub use executor::{Executor, JobContext, JobEvents, SavepointOrder};
pub use expansion::{Expander, ExpansionApi};
pub use job_control::JobControlApi;
pub use overview::{JobOverview, MessageView};
pub use retrieval::ArtifactRetrieval;
pub use server::JobServer;
pub use service::JobApi;
pub use staging::ArtifactStaging;
pub use streams::ResponseStream;
