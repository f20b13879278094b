//! Remote worker pools: `ferrobeam worker-pool` processes on other hosts
//! that start the stock Python harness for us (Beam's
//! `BeamFnExternalWorkerPool` service), so that a job's Python stages scale
//! out beyond this machine while data, state and control stay here.
//!
//! Workers are spread round-robin over the pools' addresses.  A pool that
//! refuses or cannot be reached is skipped for [`DOWN_FOR`] and the next
//! one is tried, so a lost host costs a retry, not the job.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;

/// How long a pool that failed a start is passed over (it may come back:
/// a restarted pod, a healed link).
const DOWN_FOR: Duration = Duration::from_secs(15);

/// The configured pools, as `host:port` entries.
pub struct RemotePools {
    entries: Vec<String>,
    next: AtomicUsize,
    /// Address -> when it last failed.
    down: Mutex<HashMap<String, Instant>>,
}

/// A worker started on a pool, and what went wrong on the way.
pub struct PoolStart {
    /// The pool (`ip:port`) the worker runs on.
    pub pool: String,
    /// One line per pool that failed before this one succeeded.
    pub failures: Vec<String>,
}

impl RemotePools {
    /// `entries` are `host:port`; a host name that resolves to several
    /// addresses (a Kubernetes headless Service) stands for one pool per
    /// address, looked up again at every start so that scaling shows.
    pub fn new(entries: Vec<String>) -> Self {
        Self {
            entries,
            next: AtomicUsize::new(0),
            down: Mutex::default(),
        }
    }

    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// Every pool address, in a stable order.
    pub async fn addresses(&self) -> Vec<String> {
        let mut all = Vec::new();
        for entry in &self.entries {
            match tokio::net::lookup_host(entry.as_str()).await {
                Ok(found) => {
                    let mut found: Vec<String> = found.map(|a| a.to_string()).collect();
                    found.sort();
                    found.dedup();
                    all.extend(found);
                }
                Err(e) => tracing::warn!(pool = %entry, error = %e, "cannot resolve worker pool"),
            }
        }
        all
    }

    /// Starts one worker with `start` on the next pool in turn, trying the
    /// others (pools recently down last) until one succeeds.
    pub async fn start_worker<'a>(
        &self,
        start: impl Fn(String) -> BoxFuture<'a, Result<(), String>>,
    ) -> Result<PoolStart, String> {
        let addresses = self.addresses().await;
        if addresses.is_empty() {
            return Err(format!(
                "no worker pool address could be resolved from {}",
                self.entries.join(",")
            ));
        }
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut order: Vec<(bool, String)> = (0..addresses.len())
            .map(|i| {
                let a = addresses[(first + i) % addresses.len()].clone();
                let down = self
                    .down
                    .lock()
                    .get(&a)
                    .is_some_and(|&t| now.duration_since(t) < DOWN_FOR);
                (down, a)
            })
            .collect();
        // Stable: the round-robin order among the healthy, then the rest.
        order.sort_by_key(|(down, _)| *down);
        let mut failures = Vec::new();
        for (_, address) in order {
            match start(address.clone()).await {
                Ok(()) => {
                    self.down.lock().remove(&address);
                    return Ok(PoolStart {
                        pool: address,
                        failures,
                    });
                }
                Err(e) => {
                    tracing::warn!(pool = %address, error = %e, "worker pool failed to start a worker");
                    self.down.lock().insert(address.clone(), Instant::now());
                    failures.push(format!("worker pool {address}: {e}"));
                }
            }
        }
        Err(format!(
            "no worker pool could start a worker: {}",
            failures.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_robin_and_failover() {
        let pools = RemotePools::new(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()]);
        let mut picked = Vec::new();
        for _ in 0..4 {
            let s = pools
                .start_worker(|a| Box::pin(async move { Ok::<_, String>(drop(a)) }))
                .await
                .unwrap();
            picked.push(s.pool);
        }
        assert_eq!(
            picked,
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:1", "127.0.0.1:2"]
        );
        // Pool 1 fails: the start moves on to pool 2 and says why.
        let s = pools
            .start_worker(|a| {
                Box::pin(async move {
                    if a.ends_with(":1") {
                        Err("connection refused".to_owned())
                    } else {
                        Ok(())
                    }
                })
            })
            .await
            .unwrap();
        assert_eq!(s.pool, "127.0.0.1:2");
        assert_eq!(s.failures.len(), 1);
        assert!(s.failures[0].contains("127.0.0.1:1"));
        // While down, pool 1 is tried last even when its turn comes.
        for _ in 0..2 {
            let s = pools
                .start_worker(|a| Box::pin(async move { Ok::<_, String>(drop(a)) }))
                .await
                .unwrap();
            assert_eq!(s.pool, "127.0.0.1:2");
        }
        // All down: an error naming every pool.
        let e = pools
            .start_worker(|_| Box::pin(async { Err::<(), _>("gone".to_owned()) }))
            .await
            .err()
            .unwrap();
        assert!(e.contains("127.0.0.1:1") && e.contains("127.0.0.1:2"), "{e}");
    }
}
