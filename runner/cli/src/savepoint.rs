//! `ferrobeam savepoint JOB DIR` and `ferrobeam stop JOB --savepoint DIR`:
//! ask a running job server (ferrobeam's `JobControl` service) for a
//! savepoint of a streaming job, optionally stopping it afterwards.

use std::path::Path;
use std::time::Duration;

use ferrobeam_proto::ferrobeam_control::job_control_client::JobControlClient;
use ferrobeam_proto::ferrobeam_control::SavepointRequest;

use crate::control::{with_server, ExitCode, Failure};

pub const EXIT_CODES_HELP: &str = "\
Prints the savepoint's directory once it is complete, and exits with:
  0  the savepoint was written
  1  any other error (including a failed savepoint)
  2  bad usage (including an unusable --job_endpoint)
  3  the server knows no job with this id
  4  no job server answered at --job_endpoint
  5  the server refused (the job is not a running streaming job)
Start a (possibly changed) pipeline from it with --restore_from DIR.";

/// Asks for a savepoint of `job_id` into `directory`; returns where it went.
pub async fn savepoint(
    endpoint: &str,
    job_id: &str,
    directory: &Path,
    stop: bool,
    timeout: Duration,
) -> Result<String, Failure> {
    let directory = std::path::absolute(directory).map_err(|e| Failure {
        code: ExitCode::Usage,
        message: format!("bad savepoint directory {}: {e}", directory.display()),
    })?;
    let request = SavepointRequest {
        job_id: job_id.to_owned(),
        directory: directory.display().to_string(),
        stop,
    };
    let verb = if stop {
        "stop with a savepoint"
    } else {
        "take a savepoint of"
    };
    with_server(
        endpoint,
        timeout,
        verb,
        Some(job_id),
        |channel| async move {
            let response = JobControlClient::new(channel).savepoint(request).await?;
            Ok(response.into_inner().directory)
        },
    )
    .await
}
