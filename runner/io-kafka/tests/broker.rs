//! Against a real broker: the one at `FERROBEAM_TEST_KAFKA=host:port`, or
//! else one this test starts with `scripts/kafka/kafka.sh` (and stops).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrobeam_io_kafka::{KafkaSink, KafkaSource, OutgoingRecord, WriteConfig};

mod common;
use common::{read_config, Broker};

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
    let mut again =
        KafkaSource::start(read_config(&addr, &topic), Some(position), Arc::new(|| {})).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(again.take(100, |_, _| {}), 0);
}

fn create_topic(addr: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .unwrap();
    let created = futures::executor::block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .unwrap();
    for r in created {
        r.unwrap();
    }
}

/// Partition 1 is replayed from far behind (timestamps from 1,000 s);
/// partition 0 runs a billion milliseconds ahead, and the client fetches it
/// first.  With alignment, partition 0 is paused until partition 1 has been
/// read to its end and turned idle: before that, only its first record
/// comes through (the reader cannot know yet that another partition is
/// behind).  Nothing is lost or read twice, and nothing stays paused.
/// (Without alignment all of partition 0 is read first.)
#[test]
fn alignment_holds_the_partition_ahead_until_the_one_behind_catches_up() {
    const AHEAD: usize = 0;
    const BEHIND: usize = 1;
    let counts = [40_000i64, 20_000];
    let bases = [1_000_000_000i64, 1_000_000];
    const TAKE: usize = 5_000;
    let broker = Broker::start();
    let addr = broker.addr.clone();
    let topic = format!("io-kafka-align-{}", std::process::id());
    create_topic(&addr, &topic, 2);
    let sink = KafkaSink::new(&WriteConfig {
        producer_config: BTreeMap::from([("bootstrap.servers".into(), addr.clone())]),
        topic: topic.clone(),
        with_headers: false,
    })
    .unwrap();
    for p in [AHEAD, BEHIND] {
        for i in 0..counts[p] {
            sink.send(&OutgoingRecord {
                value: Some(bytes::Bytes::from(i.to_string())),
                partition: Some(p as i32),
                timestamp: Some(bases[p] + i),
                ..Default::default()
            })
            .unwrap();
        }
    }
    sink.flush().unwrap();

    let mut config = read_config(&addr, &topic);
    config.max_drift = Some(Duration::from_secs(1));
    config.idle_timeout = Duration::from_millis(300);
    let mut source = KafkaSource::start(config, None, Arc::new(|| {})).unwrap();
    let mut next = [0i64; 2];
    let mut ahead_while_behind = 0;
    let mut most_paused = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next != counts && Instant::now() < deadline {
        source.take(TAKE, |r, ts| {
            let p = r.partition as usize;
            assert_eq!(r.offset, next[p], "partition {p}: a gap or a repeat");
            next[p] += 1;
            if p == AHEAD && next[BEHIND] < counts[BEHIND] {
                ahead_while_behind += 1;
            }
            assert_eq!(ts, bases[p] + r.offset);
        });
        source.watermark();
        source.align(i64::MAX);
        most_paused = most_paused.max(source.paused_partitions());
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("records of the partition ahead read while the one behind was replayed: {ahead_while_behind}");
    assert_eq!(next, counts, "every record read, in order");
    assert!(most_paused >= 1, "nothing was paused");
    assert!(
        ahead_while_behind <= 1,
        "{ahead_while_behind} records of the partition ahead were read while the one behind \
         was still being replayed"
    );
    // Read to their ends, both partitions turn idle and follow the wall
    // clock together: nothing is ahead, nothing stays paused.  (Until then
    // the idle partition behind may be the one ahead, and paused.)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        source.watermark();
        source.align(i64::MAX);
        if source.paused_partitions() == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(source.paused_partitions(), 0, "a partition stayed paused");
}
