//! `ferrobeam jobs`, `ferrobeam status` and `ferrobeam logs`: read-only
//! views of a job server, through Beam's Job API (`GetJobs`, `GetState`,
//! `GetMessageStream`), so they work against any Beam job server.
//!
//! Exit codes are those of [`crate::control::ExitCode`]; results go to
//! stdout, complaints to stderr.

use std::time::Duration;

use ferrobeam_proto::job_api::job_message::MessageImportance;
use ferrobeam_proto::job_api::job_messages_response::Response as Message;
use ferrobeam_proto::job_api::job_service_client::JobServiceClient;
use ferrobeam_proto::job_api::job_state::Enum as JobState;
use ferrobeam_proto::job_api::{
    GetJobStateRequest, GetJobsRequest, JobInfo, JobMessagesRequest, JobStateEvent,
};
use futures::StreamExt;

use crate::control::{with_server, Failure};

/// Text for `--help` of the read-only commands.
pub const EXIT_CODES_HELP: &str = "\
Exits with:
  0  success
  1  any other error
  2  bad usage (including an unusable --job_endpoint)
  3  the server knows no job with this id
  4  no job server answered at --job_endpoint";

/// Every job the server knows, oldest first as the server lists them.
pub async fn jobs(endpoint: &str, timeout: Duration) -> Result<Vec<JobInfo>, Failure> {
    with_server(endpoint, timeout, "list jobs", None, |channel| async move {
        let response = JobServiceClient::new(channel)
            .get_jobs(GetJobsRequest {})
            .await?;
        Ok(response.into_inner().job_info)
    })
    .await
}

/// The job's current state and when it was entered.
pub async fn status(
    endpoint: &str,
    job_id: &str,
    timeout: Duration,
) -> Result<JobStateEvent, Failure> {
    let job_id_owned = job_id.to_string();
    with_server(
        endpoint,
        timeout,
        "get the state of",
        Some(job_id),
        |channel| async move {
            let response = JobServiceClient::new(channel)
                .get_state(GetJobStateRequest {
                    job_id: job_id_owned,
                })
                .await?;
            Ok(response.into_inner())
        },
    )
    .await
}

/// How long `logs` without `--follow` waits for more history once the
/// stream goes quiet: the Job API marks no end of history, and a server
/// replays it at once.
const HISTORY_QUIET: Duration = Duration::from_millis(300);

/// Writes the job's messages and state changes as lines to `out`.
///
/// With `follow`, until the job ends (the server closes the stream);
/// without, what the server replays at once. `connect_timeout` bounds
/// reaching the server and its first answer only.
pub async fn logs(
    endpoint: &str,
    job_id: &str,
    follow: bool,
    connect_timeout: Duration,
    out: &mut dyn FnMut(String),
) -> Result<(), Failure> {
    let request = JobMessagesRequest {
        job_id: job_id.to_string(),
    };
    let mut stream = with_server(
        endpoint,
        connect_timeout,
        "read the messages of",
        Some(job_id),
        |channel| async move {
            Ok(JobServiceClient::new(channel)
                .get_message_stream(request)
                .await?
                .into_inner())
        },
    )
    .await?;
    loop {
        let next = if follow {
            stream.next().await
        } else {
            match tokio::time::timeout(HISTORY_QUIET, stream.next()).await {
                Ok(next) => next,
                Err(_) => return Ok(()),
            }
        };
        match next {
            None => return Ok(()),
            Some(Ok(message)) => {
                if let Some(line) = message.response.as_ref().map(render) {
                    out(line);
                }
            }
            Some(Err(status)) => {
                return Err(Failure {
                    code: crate::control::ExitCode::Error,
                    message: format!(
                        "the message stream of job {job_id:?} broke: {}: {}",
                        status.code(),
                        status.message()
                    ),
                })
            }
        }
    }
}

/// One line per message: `TIME IMPORTANCE text`, or `TIME STATE name`.
fn render(message: &Message) -> String {
    match message {
        Message::MessageResponse(m) => {
            let importance = MessageImportance::try_from(m.importance)
                .map(|i| {
                    i.as_str_name()
                        .trim_start_matches("JOB_MESSAGE_")
                        .to_string()
                })
                .unwrap_or_else(|_| "MESSAGE".into());
            format!("{} {importance} {}", m.time, m.message_text)
        }
        Message::StateResponse(event) => {
            format!("{} STATE {}", event_time(event), state_name(event.state))
        }
    }
}

/// A job state's name as Beam spells it (`RUNNING`, `DONE`, ...).
pub fn state_name(state: i32) -> &'static str {
    JobState::try_from(state)
        .unwrap_or(JobState::Unspecified)
        .as_str_name()
}

/// When a state event happened, as seconds since the epoch with
/// milliseconds (the server's clock).
pub fn event_time(event: &JobStateEvent) -> String {
    event
        .timestamp
        .as_ref()
        .map(|t| format!("{}.{:03}", t.seconds, t.nanos / 1_000_000))
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrobeam_proto::job_api::JobMessage;

    #[test]
    fn messages_render_as_one_line_each() {
        let line = render(&Message::MessageResponse(JobMessage {
            message_id: "1".into(),
            time: "2026-11-21T20:00:00Z".into(),
            importance: MessageImportance::JobMessageError as i32,
            message_text: "Traceback ...".into(),
        }));
        assert_eq!(line, "2026-11-21T20:00:00Z ERROR Traceback ...");
        let state = render(&Message::StateResponse(JobStateEvent {
            state: JobState::Running as i32,
            timestamp: Some(prost_types::Timestamp {
                seconds: 12,
                nanos: 345_000_000,
            }),
        }));
        assert_eq!(state, "12.345 STATE RUNNING");
    }
}
