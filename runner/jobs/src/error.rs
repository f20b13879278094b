//! Errors of the job service's public API.

use std::io;
use std::path::PathBuf;

/// What can go wrong setting up or serving the job service.
///
/// Errors inside RPCs never surface here: they become gRPC statuses.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// A directory the service needs could not be created.
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Artifact paths travel as proto strings, so the root must be UTF-8.
    #[error("the artifact root {} is not valid UTF-8", .0.display())]
    NonUtf8Root(PathBuf),
    /// The listener handed to [`crate::JobServer::serve`] has no address.
    #[error("cannot read the listener's address: {0}")]
    ListenerAddr(#[source] io::Error),
    /// The gRPC server stopped with an error.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}
