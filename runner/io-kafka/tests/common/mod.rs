//! What the broker tests share: a real broker, the one at
//! `FERROBEAM_TEST_KAFKA=host:port`, or else one started with
//! `scripts/kafka/kafka.sh` (and stopped when dropped).

use std::collections::BTreeMap;
use std::time::Duration;

use ferrobeam_io_kafka::config::{DEFAULT_BROKER_TIMEOUT, DEFAULT_IDLE_TIMEOUT};
use ferrobeam_io_kafka::{ReadConfig, TimestampPolicy};

/// A broker started for this test, stopped when dropped.
pub struct Broker {
    pub addr: String,
    dir: Option<tempfile::TempDir>,
}

fn kafka_sh() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka/kafka.sh")
}

impl Broker {
    pub fn start() -> Self {
        if let Ok(addr) = std::env::var("FERROBEAM_TEST_KAFKA") {
            return Self { addr, dir: None };
        }
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("bash")
            .arg(kafka_sh())
            .args(["start", "--dir"])
            .arg(dir.path())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("bash runs");
        assert!(out.status.success(), "kafka.sh start failed");
        Self {
            addr: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
            dir: Some(dir),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::process::Command::new("bash")
                .arg(kafka_sh())
                .args(["stop", "--dir"])
                .arg(dir.path())
                .status();
        }
    }
}

/// A read of `topic` from its beginning, with CreateTime watermarks.
#[allow(dead_code)] // not every test binary reads
pub fn read_config(addr: &str, topic: &str) -> ReadConfig {
    ReadConfig {
        consumer_config: BTreeMap::from([
            ("bootstrap.servers".into(), addr.into()),
            ("auto.offset.reset".into(), "earliest".into()),
        ]),
        topics: vec![topic.into()],
        start_read_time: None,
        max_num_records: None,
        max_read_time: None,
        commit_offsets: false,
        timestamp_policy: TimestampPolicy::CreateTime,
        poll_timeout: Duration::from_secs(2),
        partition_discovery: None,
        with_metadata: false,
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
        backfill: None,
        max_records_per_second: None,
        broker_timeout: DEFAULT_BROKER_TIMEOUT,
        max_drift: None,
    }
}
