//! The set of known jobs, by job id and by staging token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::JobServiceConfig;
use crate::job::Job;

/// All jobs the service remembers.
///
/// Jobs are forgotten lazily (on each Prepare): finished jobs beyond the
/// configured count, oldest first, and prepared jobs nobody ran in time.
#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<String, Arc<Job>>,
    /// Staging token → job id.  Tokens are random and separate from job ids,
    /// which GetJobs reveals to anyone.
    tokens: HashMap<String, String>,
}

impl Registry {
    pub(crate) fn insert(&self, job: Arc<Job>) {
        let mut inner = self.inner.lock();
        inner
            .tokens
            .insert(job.staging_token.clone(), job.id.clone());
        inner.jobs.insert(job.id.clone(), job);
    }

    pub(crate) fn get(&self, job_id: &str) -> Option<Arc<Job>> {
        self.inner.lock().jobs.get(job_id).cloned()
    }

    pub(crate) fn by_staging_token(&self, token: &str) -> Option<Arc<Job>> {
        let inner = self.inner.lock();
        inner
            .tokens
            .get(token)
            .and_then(|id| inner.jobs.get(id))
            .cloned()
    }

    /// All jobs, oldest first.
    pub(crate) fn list(&self) -> Vec<Arc<Job>> {
        let mut jobs: Vec<_> = self.inner.lock().jobs.values().cloned().collect();
        jobs.sort_by_key(|j| j.created);
        jobs
    }

    /// Forgets jobs past their retention and returns them so the caller can
    /// delete their files.
    pub(crate) fn evict(&self, config: &JobServiceConfig) -> Vec<Arc<Job>> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let mut finished: Vec<(Instant, String)> = Vec::new();
        let mut expired: Vec<String> = Vec::new();
        for job in inner.jobs.values() {
            if let Some(at) = job.finished_at() {
                finished.push((at, job.id.clone()));
            } else if !job.has_started()
                && !job.is_staging()
                && now.duration_since(job.created) > config.prepared_job_ttl
            {
                expired.push(job.id.clone());
            }
        }
        finished.sort();
        let excess = finished.len().saturating_sub(config.max_finished_jobs);
        expired.extend(finished.into_iter().take(excess).map(|(_, id)| id));

        let mut evicted = Vec::new();
        for id in expired {
            if let Some(job) = inner.jobs.remove(&id) {
                inner.tokens.remove(&job.staging_token);
                evicted.push(job);
            }
        }
        evicted
    }

    /// Jobs that have not reached a terminal state.
    pub(crate) fn active(&self) -> Vec<Arc<Job>> {
        self.inner
            .lock()
            .jobs
            .values()
            .filter(|j| j.finished_at().is_none())
            .cloned()
            .collect()
    }
}
