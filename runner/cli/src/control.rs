//! `ferrobeam drain` and `ferrobeam cancel`: ask a running job server to
//! stop one job, through Beam's own `JobService.Drain` / `JobService.Cancel`;
//! and the connection and exit-code handling every client command shares.
//!
//! Scripts branch on the exit status, so every outcome has its own code
//! (see [`ExitCode`]); the resulting job state goes to stdout, everything
//! else to stderr.

use std::time::Duration;

use ferrobeam_auth::AuthChannel;
use ferrobeam_proto::job_api::job_service_client::JobServiceClient;
use ferrobeam_proto::job_api::job_state::Enum as JobState;
use ferrobeam_proto::job_api::{CancelJobRequest, DrainJobRequest};
use tonic::transport::Endpoint;
use tonic::Code;

/// Where `ferrobeam job-server` listens unless told otherwise.
pub const DEFAULT_JOB_ENDPOINT: &str = "localhost:8099";

/// The exit statuses of `ferrobeam drain` and `ferrobeam cancel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    /// The server accepted the request; the resulting state was printed.
    Accepted = 0,
    /// Anything else went wrong (an unexpected status from the server).
    Error = 1,
    /// Bad command line (clap's own code), including an unusable endpoint.
    Usage = 2,
    /// The server knows no job with that id.
    UnknownJob = 3,
    /// No job server answered at the endpoint.
    Unreachable = 4,
    /// The server refused: the job is in no state to be drained (it was
    /// prepared but never run).
    Refused = 5,
}

/// Text for `--help`, kept next to the codes it describes.
pub const EXIT_CODES_HELP: &str = "\
Prints the job's resulting state (e.g. DRAINING, CANCELLING, or the final
state of a job that had already finished) and exits with:
  0  the request was accepted
  1  any other error
  2  bad usage (including an unusable --job_endpoint)
  3  the server knows no job with this id
  4  no job server answered at --job_endpoint
  5  the server refused the request (a job that was never run cannot be drained)";

/// What to ask the server for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Drain,
    Cancel,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Drain => "drain",
            Action::Cancel => "cancel",
        }
    }
}

/// Why a request did not go through, with the text to show.
#[derive(Debug)]
pub struct Failure {
    pub code: ExitCode,
    pub message: String,
}

/// Sends `action` for `job_id` to the job server at `endpoint` and returns
/// the state the server reports, giving up after `timeout`.
pub async fn request(
    action: Action,
    endpoint: &str,
    job_id: &str,
    timeout: Duration,
) -> Result<JobState, Failure> {
    with_server(endpoint, timeout, action.verb(), Some(job_id), |channel| {
        send(action, channel, job_id)
    })
    .await
}

/// Connects to the job server at `endpoint` and runs `exchange` on it, all
/// within `timeout`; failures are sorted into exit codes, `verb` and `job_id`
/// saying what was being done in the messages.
pub(crate) async fn with_server<T, F, Fut>(
    endpoint: &str,
    timeout: Duration,
    verb: &str,
    job_id: Option<&str>,
    exchange: F,
) -> Result<T, Failure>
where
    F: FnOnce(AuthChannel) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let url = endpoint_url(endpoint);
    let target = Endpoint::from_shared(url.clone())
        .map_err(|e| Failure {
            code: ExitCode::Usage,
            message: format!("invalid --job_endpoint {endpoint:?}: {e}"),
        })?
        .connect_timeout(timeout);
    // Sent on every call (servers without a token ignore it).
    let token = crate::security::token().map_err(|e| Failure {
        code: ExitCode::Usage,
        message: e.to_string(),
    })?;
    let unreachable = |detail: String| Failure {
        code: ExitCode::Unreachable,
        message: format!("cannot reach a job server at {endpoint}: {detail}"),
    };
    let run = async {
        let channel = target
            .connect()
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        exchange(ferrobeam_auth::authed(channel, token.as_ref()))
            .await
            .map_err(|status| from_status(verb, endpoint, job_id, status))
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| {
            Err(unreachable(format!(
                "no answer within {}s",
                timeout.as_secs_f64()
            )))
        })
}

async fn send(
    action: Action,
    channel: AuthChannel,
    job_id: &str,
) -> Result<JobState, tonic::Status> {
    let mut client = JobServiceClient::new(channel);
    let job_id = job_id.to_string();
    let state = match action {
        Action::Drain => {
            client
                .drain(DrainJobRequest { job_id })
                .await?
                .into_inner()
                .state
        }
        Action::Cancel => {
            client
                .cancel(CancelJobRequest { job_id })
                .await?
                .into_inner()
                .state
        }
    };
    Ok(JobState::try_from(state).unwrap_or(JobState::Unspecified))
}

/// Sorts a server status into the exit codes scripts rely on.
fn from_status(verb: &str, endpoint: &str, job_id: Option<&str>, status: tonic::Status) -> Failure {
    let job = job_id.map(|j| format!(" job {j:?}")).unwrap_or_default();
    let (code, message) = match status.code() {
        Code::NotFound => (
            ExitCode::UnknownJob,
            format!("the job server at {endpoint} has no{job}"),
        ),
        Code::FailedPrecondition => (
            ExitCode::Refused,
            format!(
                "the job server refused to {verb}{job}: {}",
                status.message()
            ),
        ),
        Code::Unavailable => (
            ExitCode::Unreachable,
            format!(
                "cannot reach a job server at {endpoint}: {}",
                status.message()
            ),
        ),
        Code::Unauthenticated => (
            ExitCode::Error,
            format!(
                "the job server at {endpoint} refused to {verb}{job}: {}",
                crate::security::CLIENT_TOKEN_HINT
            ),
        ),
        Code::Unimplemented => (
            ExitCode::Error,
            format!(
                "the server at {endpoint} cannot {verb} (is it a Beam job server?): {}",
                status.message()
            ),
        ),
        _ => (
            ExitCode::Error,
            format!(
                "{verb}{job} failed: {}: {}",
                status.code(),
                status.message()
            ),
        ),
    };
    Failure { code, message }
}

/// `HOST:PORT` as the URL tonic connects to; a full URL is kept as it is.
fn endpoint_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// An error and its causes on one line ("transport error: connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_urls() {
        assert_eq!(endpoint_url("localhost:8099"), "http://localhost:8099");
        assert_eq!(endpoint_url("http://h:1"), "http://h:1");
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        let code = |s| from_status("drain", "e:1", Some("j"), s).code;
        assert_eq!(code(tonic::Status::not_found("x")), ExitCode::UnknownJob);
        assert_eq!(
            code(tonic::Status::failed_precondition("x")),
            ExitCode::Refused
        );
        assert_eq!(code(tonic::Status::unavailable("x")), ExitCode::Unreachable);
        assert_eq!(code(tonic::Status::internal("x")), ExitCode::Error);
    }
}
