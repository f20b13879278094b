//! Against a real broker: the one at `FERROBEAM_TEST_KAFKA=host:port`, or
//! else one this test starts with `scripts/kafka/kafka.sh` (and stops).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrobeam_io_kafka::config::DEFAULT_IDLE_TIMEOUT;
use ferrobeam_io_kafka::{KafkaSink, KafkaSource, OutgoingRecord, ReadConfig, TimestampPolicy, WriteConfig};

/// A broker started for this test, stopped when dropped.
struct Broker {
    addr: String,
    dir: Option<tempfile::TempDir>,
}

fn kafka_sh() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka/kafka.sh")
}

impl Broker {
    fn start() -> Self {
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

fn read_config(addr: &str, topic: &str) -> ReadConfig {
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
        broker_timeout: ferrobeam_io_kafka::config::DEFAULT_BROKER_TIMEOUT,
    }
}

#[test]
fn written_records_are_read_back_with_their_positions() {
    let broker = Broker::start();
    let addr = broker.addr.clone();
    let topic = format!("io-kafka-{}", std::process::id());
    let sink = KafkaSink::new(&WriteConfig {
        producer_config: BTreeMap::from([("bootstrap.servers".into(), addr.clone())]),
        topic: topic.clone(),
        with_headers: false,
    })
    .unwrap();
    for i in 0..50 {
        sink.send(&OutgoingRecord {
            key: Some(format!("k{i}").into_bytes().into()),
            value: Some(format!("v{i}").into_bytes().into()),
            timestamp: Some(1_000 + i),
            ..Default::default()
        })
        .unwrap();
    }
    sink.flush().unwrap();
    let mut source = KafkaSource::start(read_config(&addr, &topic), None, Arc::new(|| {})).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 50 && Instant::now() < deadline {
        source.take(100, |r, ts| seen.push((r.value.clone().unwrap(), ts)));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen.len(), 50);
    assert_eq!(seen[0], (bytes::Bytes::from("v0"), 1_000));
    let position = source.position();
    assert_eq!(position.partitions[0].next_offset, 50);
    assert_eq!(position.records_read, 50);
    // Restored from that position, the source has nothing more to read.
    drop(source);
    let mut again = KafkaSource::start(read_config(&addr, &topic), Some(position), Arc::new(|| {})).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(again.take(100, |_, _| {}), 0);
}

