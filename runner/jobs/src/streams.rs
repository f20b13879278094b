//! The server-streaming RPCs GetStateStream and GetMessageStream.
//!
//! Each subscriber replays the job's history from its start, then follows
//! it, and ends as soon as it has sent the terminal state: Beam's client
//! waits at most 10 s for the message stream to close after the job ends.
//! Streams also end (UNAVAILABLE) when the server shuts down, so a graceful
//! shutdown never waits on a job that does not finish.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use ferrobeam_proto::job_api::job_message::MessageImportance;
use ferrobeam_proto::job_api::job_messages_response::Response;
use ferrobeam_proto::job_api::{JobMessage, JobMessagesResponse, JobStateEvent};
use futures::Stream;
use tokio::sync::watch;
use tonic::Status;

use crate::job::Job;

/// A boxed response stream, as the generated service traits want.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Where a subscriber is in the job's history.
trait Cursor: Send + 'static {
    type Item: Send + 'static;
    /// Reads everything after the cursor, advancing it; also reports
    /// whether the job has ended.
    fn read(&mut self, job: &Job) -> (Vec<Self::Item>, bool);
}

struct StateCursor(usize);

impl Cursor for StateCursor {
    type Item = JobStateEvent;
    fn read(&mut self, job: &Job) -> (Vec<JobStateEvent>, bool) {
        let (states, terminal) = job.read_states(self.0);
        self.0 += states.len();
        (states, terminal)
    }
}

struct EntryCursor(u64);

impl Cursor for EntryCursor {
    type Item = JobMessagesResponse;
    fn read(&mut self, job: &Job) -> (Vec<JobMessagesResponse>, bool) {
        let (read, terminal) = job.read_entries(self.0);
        self.0 = read.next_seq;
        let mut items = Vec::with_capacity(read.entries.len() + 1);
        if read.skipped > 0 {
            items.push(JobMessagesResponse {
                response: Some(Response::MessageResponse(JobMessage {
                    message_id: String::new(),
                    time: String::new(),
                    importance: MessageImportance::JobMessageWarning as i32,
                    message_text: format!(
                        "{} older job messages were dropped before this subscriber read them",
                        read.skipped
                    ),
                })),
            });
        }
        items.extend(read.entries);
        (items, terminal)
    }
}

struct Follow<C: Cursor> {
    job: Arc<Job>,
    cursor: C,
    changed: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    pending: VecDeque<C::Item>,
    done: bool,
}

/// Follows a job's history through `cursor` until the job ends.
fn follow<C: Cursor>(
    job: Arc<Job>,
    cursor: C,
    shutdown: watch::Receiver<bool>,
) -> ResponseStream<C::Item> {
    let changed = job.subscribe();
    let start = Follow {
        job,
        cursor,
        changed,
        shutdown,
        pending: VecDeque::new(),
        done: false,
    };
    Box::pin(futures::stream::unfold(start, |mut st| async move {
        loop {
            if let Some(item) = st.pending.pop_front() {
                return Some((Ok(item), st));
            }
            if st.done {
                return None;
            }
            // Mark the current version seen *before* reading, so an event
            // appended after the read wakes the wait below.
            st.changed.borrow_and_update();
            let (items, terminal) = st.cursor.read(&st.job);
            st.pending.extend(items);
            if terminal {
                st.done = true;
                continue;
            }
            if !st.pending.is_empty() {
                continue;
            }
            let shutting_down = tokio::select! {
                res = st.changed.changed() => {
                    if res.is_err() {
                        // Cannot happen while we hold the job; end quietly.
                        return None;
                    }
                    false
                }
                _ = st.shutdown.wait_for(|s| *s) => true,
            };
            if shutting_down {
                st.done = true;
                return Some((
                    Err(Status::unavailable("the job server is shutting down")),
                    st,
                ));
            }
        }
    }))
}

pub(crate) fn state_stream(
    job: Arc<Job>,
    shutdown: watch::Receiver<bool>,
) -> ResponseStream<JobStateEvent> {
    follow(job, StateCursor(0), shutdown)
}

pub(crate) fn message_stream(
    job: Arc<Job>,
    shutdown: watch::Receiver<bool>,
) -> ResponseStream<JobMessagesResponse> {
    follow(job, EntryCursor(0), shutdown)
}
