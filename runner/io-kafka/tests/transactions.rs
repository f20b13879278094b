//! The transactional sink against a real broker (one this test starts with
//! `scripts/kafka/kafka.sh`, or `FERROBEAM_TEST_KAFKA=host:port`): a
//! producer dies between a checkpoint and its transaction's commit, and
//! the next one sends that transaction again from its log; a
//! `read_committed` consumer finds every record exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrobeam_io_kafka::{KafkaSink, KafkaSource, OutgoingRecord, WriteAheadLog, WriteConfig};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;

mod common;
use common::{read_config, Broker};

fn value_record(v: &[u8]) -> OutgoingRecord {
    OutgoingRecord {
        value: Some(Bytes::copy_from_slice(v)),
        ..OutgoingRecord::default()
    }
}

/// A sink of transaction id `id`, restored from a snapshot that counted
/// transaction `number` with `log`; returns it and the records it resent.
fn recovered(config: &WriteConfig, number: u64, log: Option<&std::path::Path>) -> (KafkaSink, u64) {
    let mut sink = KafkaSink::new(config).unwrap();
    let resent = sink
        .recover(number, log, |s, frame| s.send(&value_record(frame)))
        .unwrap();
    (sink, resent)
}

/// One checkpoint interval: a transaction sending `values`, logged.
fn interval(
    sink: &mut KafkaSink,
    log: &std::path::Path,
    values: std::ops::Range<u32>,
) -> WriteAheadLog {
    sink.begin().unwrap();
    let mut wal = WriteAheadLog::create(log.to_path_buf()).unwrap();
    for i in values {
        let v = format!("r{i}");
        wal.append(v.as_bytes()).unwrap();
        sink.send(&value_record(v.as_bytes())).unwrap();
    }
    sink.flush().unwrap();
    wal.sync().unwrap();
    wal
}

/// Every value in `topic` a consumer with `isolation` sees, once it has
/// seen `expect` of them (or 30 s passed).
fn values(addr: &str, topic: &str, isolation: &str, expect: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set(
            "group.id",
            format!("check-{isolation}-{}", std::process::id()),
        )
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            out.push(String::from_utf8(m.unwrap().payload().unwrap().to_vec()).unwrap());
        } else if out.len() >= expect {
            break;
        }
    }
    out
}

// One test (one broker): the scenarios run in order on the same topic.
#[test]
fn a_transaction_lost_in_a_crash_is_sent_again_once() {
    let broker = Broker::start();
    let addr = broker.addr.clone();
    let topic = format!("txn-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let config = WriteConfig {
        producer_config: BTreeMap::from([
            ("bootstrap.servers".into(), addr.clone()),
            (
                "transactional.id".into(),
                format!("t-{}", std::process::id()),
            ),
        ]),
        topic: topic.clone(),
        with_headers: false,
    };

    // First run: transaction 1 commits after its checkpoint; transaction 2
    // is checkpointed, then the process dies before committing it.
    let (mut first, resent) = recovered(&config, 0, None);
    assert_eq!(resent, 0);
    let log1 = interval(&mut first, &dir.path().join("1.wal"), 0..10);
    first.commit(1).unwrap();
    log1.remove().unwrap();
    let log2 = interval(&mut first, &dir.path().join("2.wal"), 10..20);
    drop(first);

    // Restored from checkpoint 2: the marker is at 1, so 2 is sent again.
    let (mut second, resent) = recovered(&config, 2, Some(log2.path()));
    assert_eq!(resent, 10, "transaction 2 did not commit and is sent again");
    // Transaction 3 commits; then the process dies before anything else.
    let log3 = interval(&mut second, &dir.path().join("3.wal"), 20..30);
    second.commit(3).unwrap();
    drop(second);

    // Restored from checkpoint 3: the marker says 3 committed; nothing again.
    let (third, resent) = recovered(&config, 3, Some(log3.path()));
    assert_eq!(resent, 0, "transaction 3 committed and is not sent again");
    drop(third);

    let mut committed = values(&addr, &topic, "read_committed", 30);
    committed.sort_by_key(|v| v[1..].parse::<u32>().unwrap());
    let want: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
    assert_eq!(
        committed, want,
        "read_committed sees every record exactly once"
    );
    // The aborted copy of transaction 2 is on the broker: without
    // isolation a consumer sees it twice (so the check above means something).
    let uncommitted = values(&addr, &topic, "read_uncommitted", 40);
    assert_eq!(uncommitted.len(), 40, "{uncommitted:?}");

    // A snapshot whose transaction did not commit and whose log is gone
    // cannot be made whole: that is an error, not a silent loss.
    let mut fourth = KafkaSink::new(&config).unwrap();
    let e = fourth
        .recover(5, None, |s, f| s.send(&value_record(f)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("transaction 5") && e.contains("no log"), "{e}");
}

/// A partition of a transactional topic ends with a commit marker, an
/// offset no record has: once everything before it was read and nothing
/// more comes, the partition must still count as caught up and turn idle,
/// or its watermark would stay behind for good.
#[test]
fn a_quiet_transactional_partition_turns_idle() {
    let broker = Broker::start();
    let topic = format!("txn-idle-{}", std::process::id());
    let config = WriteConfig {
        producer_config: BTreeMap::from([
            ("bootstrap.servers".into(), broker.addr.clone()),
            (
                "transactional.id".into(),
                format!("idle-{}", std::process::id()),
            ),
        ]),
        topic: topic.clone(),
        with_headers: false,
    };
    let mut sink = KafkaSink::new(&config).unwrap();
    sink.recover(0, None, |_, _| Ok(())).unwrap();
    sink.begin().unwrap();
    for i in 0..5 {
        sink.send(&OutgoingRecord {
            value: Some(Bytes::from(format!("old{i}"))),
            timestamp: Some(1_000 + i),
            ..OutgoingRecord::default()
        })
        .unwrap();
    }
    sink.commit(1).unwrap();
    drop(sink);

    let mut read = read_config(&broker.addr, &topic);
    read.idle_timeout = Duration::from_millis(300);
    let mut source = KafkaSource::start(read, None, std::sync::Arc::new(|| {})).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut taken = 0;
    while taken < 5 && Instant::now() < deadline {
        taken += source.take(100, |_, _| {});
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(taken, 5);
    let mut watermark = source.watermark();
    while watermark < 1_000_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        watermark = source.watermark();
    }
    assert!(
        watermark >= 1_000_000,
        "the partition never turned idle: its watermark stayed at {watermark}"
    );
}
