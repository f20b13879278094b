//! Tunables of the job service: where files go, size limits, timeouts.

use std::path::PathBuf;
use std::time::Duration;

/// One mebibyte, for readable defaults.
const MIB: u64 = 1024 * 1024;
/// One gibibyte.
const GIB: u64 = 1024 * MIB;

/// Configuration of a [`crate::JobServer`].
///
/// Build it with [`JobServiceConfig::with_root`] (or `Default`) and override
/// single fields with struct-update syntax.  Every limit exists because the
/// job service accepts data from clients: a misbehaving client must get an
/// error status, never exhaust our disk or memory.
#[derive(Debug, Clone)]
pub struct JobServiceConfig {
    /// Root under which staged artifacts live, as
    /// `<artifact_root>/<job id>/<environment>/<file>`.  The artifact
    /// retrieval service serves only files below this directory.
    pub artifact_root: PathBuf,
    /// Root of the jobs' scratch directories (`<work_root>/<job id>`),
    /// handed to the executor as [`crate::JobContext::work_dir`].
    pub work_root: PathBuf,
    /// Address (`host:port`) returned to clients as the artifact staging
    /// endpoint.  `None` means "the local address of the connection the
    /// Prepare call arrived on", which is right unless the port is forwarded.
    /// Can also be set later with [`crate::JobServer::set_public_endpoint`].
    pub public_endpoint: Option<String>,
    /// Largest single artifact accepted during staging, in bytes.
    pub max_artifact_bytes: u64,
    /// Largest sum of all artifacts of one job, in bytes.
    pub max_total_artifact_bytes: u64,
    /// Most artifacts (over all environments) one job may stage; bounds the
    /// number of files a client can make us create.
    pub max_artifacts_per_job: usize,
    /// Largest gRPC message we decode (the pipeline proto arrives in one).
    pub max_decoding_message_bytes: usize,
    /// Largest gRPC message we encode.
    pub max_encoding_message_bytes: usize,
    /// Chunk size used when serving artifacts to SDK workers.  Stays well
    /// below the 4 MiB default receive limit of gRPC clients.
    pub artifact_chunk_bytes: usize,
    /// How long staging waits for the client's next message before failing.
    pub staging_idle_timeout: Duration,
    /// How long a cancelled job's executor may take to return before the
    /// job service abandons it and reports CANCELLED anyway.
    pub cancel_timeout: Duration,
    /// Most job messages kept per job for replay; older ones are dropped
    /// (late subscribers are told how many).
    pub max_retained_messages: usize,
    /// Most finished jobs kept for GetJobs/GetState/metrics.  Older finished
    /// jobs are forgotten and their directories removed.
    pub max_finished_jobs: usize,
    /// How long a prepared job may wait for Run before it is forgotten.
    pub prepared_job_ttl: Duration,
    /// If set, every call must carry `authorization: Bearer <token>`
    /// (checked by [`crate::JobServer::serve`] for all its services).
    pub auth_token: Option<ferrobeam_auth::AuthToken>,
}

impl JobServiceConfig {
    /// A configuration keeping artifacts in `<root>/artifacts` and scratch
    /// directories in `<root>/work`, with default limits.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        JobServiceConfig {
            artifact_root: root.join("artifacts"),
            work_root: root.join("work"),
            public_endpoint: None,
            max_artifact_bytes: GIB,
            max_total_artifact_bytes: 4 * GIB,
            max_artifacts_per_job: 10_000,
            max_decoding_message_bytes: 64 * MIB as usize,
            max_encoding_message_bytes: 64 * MIB as usize,
            artifact_chunk_bytes: MIB as usize,
            staging_idle_timeout: Duration::from_secs(120),
            cancel_timeout: Duration::from_secs(30),
            max_retained_messages: 10_000,
            max_finished_jobs: 100,
            prepared_job_ttl: Duration::from_secs(3600),
            auth_token: None,
        }
    }
}

impl Default for JobServiceConfig {
    /// Keeps files under `<temp dir>/ferrobeam-jobs-<pid>` so two servers on
    /// one machine do not share a directory.
    fn default() -> Self {
        let root = std::env::temp_dir().join(format!("ferrobeam-jobs-{}", std::process::id()));
        JobServiceConfig::with_root(root)
    }
}
