//! Against a real broker: `FERROBEAM_TEST_KAFKA=host:port` (started by
//! `scripts/kafka/kafka.sh start`); skipped without it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrobeam_io_kafka::config::DEFAULT_IDLE_TIMEOUT;
use ferrobeam_io_kafka::{KafkaSink, KafkaSource, OutgoingRecord, ReadConfig, TimestampPolicy, WriteConfig};

fn broker() -> Option<String> {
    std::env::var("FERROBEAM_TEST_KAFKA").ok().filter(|s| !s.is_empty())
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
    }
}

#[test]
fn written_records_are_read_back_with_their_positions() {
    let Some(addr) = broker() else {
        eprintln!("FERROBEAM_TEST_KAFKA not set: skipped");
        return;
    };
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

#[test]
fn debug_events() {
    let Some(addr) = broker() else { return };
    let mut c = read_config(&addr, "events");
    c.timestamp_policy = TimestampPolicy::ProcessingTime;
    let mut source = KafkaSource::start(c, None, Arc::new(|| {})).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let n = source.take(1000, |_, _| {});
    eprintln!("events: {n} {:?}", source.position());
}
