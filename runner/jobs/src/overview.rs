//! A read-only view of the jobs for the dashboard and `/metrics`: what the
//! Job API tells a client, as plain values rather than protos and streams.

use std::time::SystemTime;

use ferrobeam_proto::job_api::job_message::MessageImportance;
use ferrobeam_proto::job_api::job_messages_response::Response;
use ferrobeam_proto::job_api::job_state::Enum as JobState;
use ferrobeam_proto::pipeline::v1::MonitoringInfo;

use crate::job::Job;
use crate::server::JobServer;

/// One job as a dashboard lists it.
#[derive(Clone, Debug)]
pub struct JobOverview {
    pub id: String,
    pub name: String,
    pub state: JobState,
    /// A streaming job (one that can be drained).
    pub streaming: bool,
    pub created: SystemTime,
    /// When it was run (STARTING), if it was.
    pub started: Option<SystemTime>,
    /// When it reached a terminal state, if it did.
    pub finished: Option<SystemTime>,
}

/// One job message.
#[derive(Clone, Debug)]
pub struct MessageView {
    /// Position in the job's message stream (state changes count too).
    pub seq: u64,
    pub time: Option<SystemTime>,
    pub importance: MessageImportance,
    pub text: String,
}

impl JobServer {
    /// Every job the service remembers, oldest first.
    pub fn job_overviews(&self) -> Vec<JobOverview> {
        self.registry().list().iter().map(|j| overview(j)).collect()
    }

    pub fn job_overview(&self, job_id: &str) -> Option<JobOverview> {
        self.registry().get(job_id).map(|j| overview(&j))
    }

    /// The job's messages after stream position `after` (all: `None`), and
    /// the position to ask from next time.
    pub fn job_messages(
        &self,
        job_id: &str,
        after: Option<u64>,
    ) -> Option<(Vec<MessageView>, u64)> {
        let job = self.registry().get(job_id)?;
        let from = after.map_or(0, |a| a + 1);
        let (read, _) = job.read_entries(from);
        let start = from + read.skipped;
        let messages = read
            .entries
            .into_iter()
            .enumerate()
            .filter_map(|(i, entry)| match entry.response? {
                Response::MessageResponse(m) => Some(MessageView {
                    seq: start + i as u64,
                    time: m
                        .time
                        .parse::<prost_types::Timestamp>()
                        .ok()
                        .and_then(|t| SystemTime::try_from(t).ok()),
                    importance: MessageImportance::try_from(m.importance)
                        .unwrap_or(MessageImportance::JobMessageBasic),
                    text: m.message_text,
                }),
                Response::StateResponse(_) => None,
            })
            .collect();
        Some((messages, read.next_seq.saturating_sub(1)))
    }

    /// The job's committed metrics, as `GetJobMetrics` serves them.
    pub fn job_metrics(&self, job_id: &str) -> Option<Vec<MonitoringInfo>> {
        Some(self.registry().get(job_id)?.metrics().committed)
    }
}

fn overview(job: &Job) -> JobOverview {
    let (states, _) = job.read_states(0);
    let at = |wanted: &dyn Fn(JobState) -> bool| {
        states
            .iter()
            .find(|e| JobState::try_from(e.state).is_ok_and(wanted))
            .and_then(|e| e.timestamp)
            .and_then(|t| SystemTime::try_from(t).ok())
    };
    JobOverview {
        id: job.id.clone(),
        name: job.name.clone(),
        state: job.state(),
        streaming: job.drainable,
        created: job.created_wall,
        started: at(&|s| s == JobState::Starting || s == JobState::Running),
        finished: at(&crate::history::is_terminal),
    }
}
