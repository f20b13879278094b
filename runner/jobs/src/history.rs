//! A job's history: state changes and messages, kept for replay.
//!
//! Beam clients open the state and message streams before `Run`, but other
//! tools subscribe late; both must see what already happened.  So streams do
//! not receive pushed events: each subscriber keeps a cursor into this log
//! and reads forward, which also means a slow subscriber can never lag out
//! or block the job.

use std::collections::VecDeque;
use std::time::SystemTime;

use ferrobeam_proto::job_api::job_message::MessageImportance;
use ferrobeam_proto::job_api::job_messages_response::Response;
use ferrobeam_proto::job_api::job_state::Enum as JobState;
use ferrobeam_proto::job_api::{JobMessage, JobMessagesResponse, JobStateEvent};

/// Whether `state` ends a job; streams close once they have sent it.
pub(crate) fn is_terminal(state: JobState) -> bool {
    matches!(
        state,
        JobState::Done
            | JobState::Failed
            | JobState::Cancelled
            | JobState::Drained
            | JobState::Updated
    )
}

/// The ordered history of one job.
#[derive(Debug)]
pub(crate) struct EventLog {
    /// Every state change, never trimmed (there are only a handful).
    states: Vec<JobStateEvent>,
    /// Messages and state changes interleaved, as the message stream sends
    /// them; trimmed from the front beyond `capacity`.
    entries: VecDeque<JobMessagesResponse>,
    /// Sequence number of `entries[0]`.
    first_seq: u64,
    /// Next `message_id` to hand out.
    next_message_id: u64,
    capacity: usize,
}

/// What a message-stream subscriber gets from one read.
pub(crate) struct EntriesRead {
    pub entries: Vec<JobMessagesResponse>,
    /// Entries the subscriber missed because they were trimmed.
    pub skipped: u64,
    /// Cursor for the next read.
    pub next_seq: u64,
}

impl EventLog {
    pub(crate) fn new(capacity: usize) -> Self {
        EventLog {
            states: Vec::new(),
            entries: VecDeque::new(),
            first_seq: 0,
            next_message_id: 1,
            capacity: capacity.max(1),
        }
    }

    /// Records a state change in both histories.
    pub(crate) fn push_state(&mut self, state: JobState) {
        let event = JobStateEvent {
            state: state as i32,
            timestamp: Some(prost_types::Timestamp::from(SystemTime::now())),
        };
        self.states.push(event);
        self.push_entry(Response::StateResponse(event));
    }

    /// Records a job message.
    pub(crate) fn push_message(&mut self, importance: MessageImportance, text: String) {
        let message = JobMessage {
            message_id: self.next_message_id.to_string(),
            time: prost_types::Timestamp::from(SystemTime::now()).to_string(),
            importance: importance as i32,
            message_text: text,
        };
        self.next_message_id += 1;
        self.push_entry(Response::MessageResponse(message));
    }

    fn push_entry(&mut self, response: Response) {
        self.entries.push_back(JobMessagesResponse {
            response: Some(response),
        });
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
            self.first_seq += 1;
        }
    }

    /// State changes from index `from` on.
    pub(crate) fn states_from(&self, from: usize) -> &[JobStateEvent] {
        self.states.get(from..).unwrap_or(&[])
    }

    /// Message-stream entries from sequence number `from` on.
    pub(crate) fn entries_from(&self, from: u64) -> EntriesRead {
        let start = from.max(self.first_seq);
        let skipped = start - from;
        let offset = (start - self.first_seq) as usize;
        let entries: Vec<_> = self.entries.iter().skip(offset).cloned().collect();
        let next_seq = start + entries.len() as u64;
        EntriesRead {
            entries,
            skipped,
            next_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_reports_skipped_entries() {
        let mut log = EventLog::new(3);
        log.push_state(JobState::Stopped);
        for i in 0..4 {
            log.push_message(MessageImportance::JobMessageBasic, format!("m{i}"));
        }
        let read = log.entries_from(0);
        assert_eq!(read.skipped, 2);
        assert_eq!(read.entries.len(), 3);
        assert_eq!(read.next_seq, 5);
        assert!(log.entries_from(5).entries.is_empty());
        // States are never trimmed.
        assert_eq!(log.states_from(0).len(), 1);
        assert!(log.states_from(7).is_empty());
    }
}
