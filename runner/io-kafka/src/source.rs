//! The Kafka source: one consumer per read, assigned every partition of its
//! topics, with per-partition positions and event-time watermarks.
//!
//! A reader thread polls the client and hands records over through a
//! bounded channel, so a slow pipeline stops the polling (backpressure)
//! and the engine never blocks on the network.  The engine takes records
//! when it runs an epoch; only what it took advances a partition's
//! position, so a checkpoint's positions are exactly what went
//! downstream, and records still in the channel are read again after a
//! restore (exactly-once reads).
//!
//! With `max_drift_ms` the source takes part in watermark alignment: the
//! engine tells it the alignment minimum (the least watermark over every
//! aligned read of the job) and [`KafkaSource::align`] pauses the
//! partitions that are too far ahead of it, so a partition replayed from far
//! behind is not outrun by the others (whose records would otherwise wait,
//! buffered downstream, for the watermark to reach them).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{ReadConfig, TimestampPolicy};
use crate::error::KafkaIoError;
use crate::record::Record;

/// Records the reader thread may hold ahead of the engine.
const CHANNEL_CAPACITY: usize = 10_000;
/// How long a broker may stay unreachable before the job fails.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(60);
/// Metadata and offset lookups at start.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Timestamps below Beam's minimum.
const MIN_TIMESTAMP: i64 = i64::MIN / 1000;
const MAX_TIMESTAMP: i64 = i64::MAX / 1000;

fn wall_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A partition's saved place: where to read next and its watermark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPosition {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub watermark: i64,
}

/// What a checkpoint keeps of a source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourcePosition {
    pub partitions: Vec<PartitionPosition>,
    /// Records emitted so far (counts toward `max_num_records`).
    pub records_read: u64,
    /// Reading time used so far, millis (counts toward `max_read_time`).
    pub read_millis: u64,
}

struct Partition {
    topic: Arc<str>,
    partition: i32,
    next_offset: i64,
    watermark: i64,
    /// The broker's high watermark as the client last heard it.
    high: Arc<AtomicI64>,
    last_record: Instant,
    /// Paused by watermark alignment (the client fetches nothing for it).
    paused: bool,
}

/// A partition the reader found after the start: topic, partition, the
/// offset it starts at, and its high watermark cell.
type Discovered = (Arc<str>, i32, i64, Arc<AtomicI64>);

/// What the reader thread shares with the source.
struct Shared {
    stop: AtomicBool,
    /// Partitions found after the start, for the engine to adopt.
    discovered: Mutex<Vec<Discovered>>,
    /// Since when the client has reported only errors, and the last one.
    failing_since: Mutex<Option<(Instant, String)>>,
}

/// A running Kafka read.
pub struct KafkaSource {
    config: ReadConfig,
    consumer: Arc<BaseConsumer>,
    /// In the reader's numbering: a record's `partition_index` points here.
    partitions: Vec<Partition>,
    shared: Arc<Shared>,
    records: Receiver<Record>,
    thread: Option<JoinHandle<()>>,
    started: Instant,
    earlier_read_millis: u64,
    records_read: u64,
    done: bool,
}

fn client_config(config: &ReadConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in &config.consumer_config {
        c.set(k, v);
    }
    // Positions are ours (in checkpoints); the group only sees commits we
    // make on purpose.
    c.set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    if !config.consumer_config.contains_key("group.id") {
        c.set("group.id", "ferrobeam-reader");
    }
    c
}

fn partitions_of(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>, KafkaIoError> {
    let metadata = consumer.fetch_metadata(Some(topic), LOOKUP_TIMEOUT)?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| KafkaIoError::Broker(format!("no metadata for topic {topic:?}")))?;
    if let Some(e) = t.error() {
        return Err(KafkaIoError::Broker(format!(
            "topic {topic:?}: {:?} (does the topic exist?)",
            e
        )));
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    if ids.is_empty() {
        return Err(KafkaIoError::Broker(format!(
            "topic {topic:?} has no partitions (does it exist?)"
        )));
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Where a partition without a saved position starts, as a concrete offset
/// (`low`, `high`: the partition's first offset and its end).
fn start_offset(
    consumer: &BaseConsumer,
    config: &ReadConfig,
    (topic, partition): (&str, i32),
    (low, high): (i64, i64),
    committed: Option<i64>,
) -> Result<i64, KafkaIoError> {
    if let Some(time) = config.start_read_time {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(time))?;
        let found = consumer.offsets_for_times(tpl, LOOKUP_TIMEOUT)?;
        return Ok(match found.find_partition(topic, partition).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            // No record at or after that time: start at the end.
            _ => high,
        });
    }
    if let Some(o) = committed {
        return Ok(o.clamp(low, high));
    }
    let reset = config
        .consumer_config
        .get("auto.offset.reset")
        .map(String::as_str)
        .unwrap_or("latest");
    Ok(match reset {
        "earliest" | "smallest" | "beginning" => low,
        _ => high,
    })
}

/// The group's committed offsets of these partitions (only with a
/// user-given group: our placeholder group commits nothing).
fn committed_offsets(
    consumer: &BaseConsumer,
    config: &ReadConfig,
    wanted: &[(String, i32)],
) -> Result<HashMap<(String, i32), i64>, KafkaIoError> {
    let mut out = HashMap::new();
    if !config.consumer_config.contains_key("group.id") || wanted.is_empty() {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p) in wanted {
        tpl.add_partition(t, *p);
    }
    let committed = consumer.committed_offsets(tpl, LOOKUP_TIMEOUT)?;
    for e in committed.elements() {
        if let Offset::Offset(o) = e.offset() {
            out.insert((e.topic().to_owned(), e.partition()), o);
        }
    }
    Ok(out)
}

impl KafkaSource {
    /// Connects, finds the partitions, and starts reading: from `saved`
    /// positions where there are some, else from `start_read_time`, the
    /// group's committed offsets or `auto.offset.reset`.  `wake` is called
    /// (from the reader thread) when records arrive.
    pub fn start(
        config: ReadConfig,
        saved: Option<SourcePosition>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Self, KafkaIoError> {
        let consumer: Arc<BaseConsumer> = Arc::new(client_config(&config).create()?);
        let saved = saved.unwrap_or_default();
        let saved_at: HashMap<(String, i32), &PartitionPosition> = saved
            .partitions
            .iter()
            .map(|p| ((p.topic.clone(), p.partition), p))
            .collect();
        let mut found = Vec::new();
        for topic in &config.topics {
            for p in partitions_of(&consumer, topic)? {
                found.push((topic.clone(), p));
            }
        }
        let unsaved: Vec<(String, i32)> = found
            .iter()
            .filter(|k| !saved_at.contains_key(*k))
            .cloned()
            .collect();
        let committed = committed_offsets(&consumer, &config, &unsaved)?;
        let mut partitions = Vec::new();
        let mut tpl = TopicPartitionList::new();
        for (topic, p) in found {
            let (low, high) = consumer.fetch_watermarks(&topic, p, LOOKUP_TIMEOUT)?;
            let (next_offset, watermark) = match saved_at.get(&(topic.clone(), p)) {
                Some(s) => (s.next_offset, s.watermark),
                None => {
                    let c = committed.get(&(topic.clone(), p)).copied();
                    let start = start_offset(&consumer, &config, (&topic, p), (low, high), c)?;
                    (start, MIN_TIMESTAMP)
                }
            };
            tpl.add_partition_offset(&topic, p, Offset::Offset(next_offset))?;
            partitions.push(Partition {
                topic: topic.as_str().into(),
                partition: p,
                next_offset,
                watermark,
                high: Arc::new(AtomicI64::new(high)),
                last_record: Instant::now(),
                paused: false,
            });
        }
        consumer.assign(&tpl)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            discovered: Mutex::new(Vec::new()),
            failing_since: Mutex::new(None),
        });
        let (tx, records) = sync_channel(CHANNEL_CAPACITY);
        let reader = Reader {
            consumer: consumer.clone(),
            config: config.clone(),
            shared: shared.clone(),
            known: partitions
                .iter()
                .enumerate()
                .map(|(i, p)| ((p.topic.clone(), p.partition), (i, p.high.clone())))
                .collect(),
            topics: config.topics.iter().map(|t| Arc::from(t.as_str())).collect(),
            tx,
            wake,
        };
        let thread = std::thread::Builder::new()
            .name("kafka-reader".into())
            .spawn(move || reader.run())
            .map_err(|e| KafkaIoError::Broker(format!("cannot start the reader thread: {e}")))?;
        tracing::info!(
            topics = ?config.topics,
            partitions = partitions.len(),
            "Kafka source started"
        );
        let mut source = Self {
            config,
            consumer,
            partitions,
            shared,
            records,
            thread: Some(thread),
            started: Instant::now(),
            earlier_read_millis: saved.read_millis,
            records_read: saved.records_read,
            done: false,
        };
        source.check_limits();
        Ok(source)
    }

    fn adopt_discovered(&mut self) {
        let found = std::mem::take(&mut *self.shared.discovered.lock());
        for (topic, partition, next_offset, high) in found {
            tracing::info!(%topic, partition, "Kafka source: new partition");
            // The reader numbered it next, and announced it before sending
            // any of its records, so the indices agree.
            self.partitions.push(Partition {
                topic,
                partition,
                next_offset,
                watermark: MIN_TIMESTAMP,
                high,
                last_record: Instant::now(),
                paused: false,
            });
        }
    }

    fn read_millis(&self) -> u64 {
        self.earlier_read_millis + self.started.elapsed().as_millis() as u64
    }

    fn limit_reached(&self) -> bool {
        let by_count = self
            .config
            .max_num_records
            .is_some_and(|max| self.records_read >= max);
        let by_time = self
            .config
            .max_read_time
            .is_some_and(|max| self.read_millis() >= max.as_millis() as u64);
        by_count || by_time
    }

    fn check_limits(&mut self) {
        if !self.done && self.limit_reached() {
            tracing::info!(records = self.records_read, "Kafka source reached its limit");
            self.done = true;
        }
    }

    /// Takes up to `max` records, in arrival order, giving each to `emit`
    /// with its event time.  Returns how many were emitted.
    pub fn take(&mut self, max: usize, mut emit: impl FnMut(&Record, i64)) -> usize {
        self.adopt_discovered();
        self.check_limits();
        // The record limit is checked per record; the time limit once a call.
        let max = match self.config.max_num_records {
            Some(limit) => max.min(limit.saturating_sub(self.records_read) as usize),
            None => max,
        };
        let mut n = 0;
        while n < max && !self.done {
            let record = match self.records.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            };
            let Some(p) = self.partitions.get_mut(record.partition_index) else {
                continue;
            };
            // A record before the position was delivered before a seek.
            if record.offset < p.next_offset {
                continue;
            }
            let timestamp = match self.config.timestamp_policy {
                TimestampPolicy::ProcessingTime => wall_millis(),
                _ => record
                    .kafka_timestamp
                    .unwrap_or_else(wall_millis)
                    .clamp(MIN_TIMESTAMP, MAX_TIMESTAMP),
            };
            p.next_offset = record.offset + 1;
            p.watermark = p.watermark.max(timestamp);
            p.last_record = Instant::now();
            emit(&record, timestamp);
            n += 1;
            self.records_read += 1;
        }
        self.check_limits();
        n
    }

    /// The source's output watermark: the least of its partitions'.  A
    /// partition that has read everything the broker has and received
    /// nothing for the idle timeout does not hold it back: its watermark
    /// follows the wall clock, the idle timeout behind.
    pub fn watermark(&mut self) -> i64 {
        self.adopt_discovered();
        if self.done {
            return MAX_TIMESTAMP;
        }
        let now = wall_millis();
        if self.config.timestamp_policy == TimestampPolicy::ProcessingTime {
            // Records not taken yet get a later timestamp when they are.
            return now;
        }
        let idle = self.config.idle_timeout;
        let mut least = MAX_TIMESTAMP;
        for p in &mut self.partitions {
            let caught_up = p.next_offset >= p.high.load(Ordering::Relaxed);
            // A paused partition is never idle: the client does not fetch
            // it, so its high watermark is stale and "caught up" may be
            // false, and records may be waiting for it.  Its watermark stays
            // where its records put it (ahead of the alignment minimum, so
            // it does not hold anything back).
            if caught_up && !p.paused && p.last_record.elapsed() >= idle {
                p.watermark = p.watermark.max(now - idle.as_millis() as i64);
            }
            least = least.min(p.watermark);
        }
        least
    }

    /// Watermark alignment (`max_drift_ms`; without it, nothing happens):
    /// pauses every partition whose watermark is more than the drift ahead
    /// of `minimum`, and resumes the paused ones that are no longer.
    ///
    /// `minimum` is the least watermark over every aligned read of the job,
    /// this one's included (as [`KafkaSource::watermark`] last reported it),
    /// so it is at most this source's least partition watermark: when
    /// several reads align together, a whole source running ahead of another
    /// is paused too.
    ///
    /// Why this cannot deadlock: the partitions holding the minimum are
    /// never paused (the drift is not negative), and the minimum always
    /// moves on: a partition with records to read advances as they are
    /// taken (the engine always empties the channel, whatever partition a
    /// record is from), and one read to its end turns idle and follows the
    /// wall clock.  Paused partitions do not turn idle (see `watermark`), so
    /// a pause never makes a partition's watermark jump past records it has
    /// not read.
    ///
    /// Pausing stops fetching, not what was fetched before: records of a
    /// paused partition already in the reader's channel still flow (up to
    /// the channel's capacity, 10k, plus the one the reader may be blocked
    /// sending).
    /// librdkafka drops what it had prefetched for the partition and
    /// fetches again from after the last record the reader polled, so
    /// nothing is skipped; a record delivered twice around a pause is
    /// dropped by the position check in `take`.
    pub fn align(&mut self, minimum: i64) {
        let Some(drift) = self.config.max_drift else {
            return;
        };
        self.adopt_discovered();
        if self.done {
            return;
        }
        let limit = minimum.saturating_add(drift.as_millis().min(i64::MAX as u128) as i64);
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        for p in &self.partitions {
            let ahead = p.watermark > limit;
            if ahead && !p.paused {
                pause.add_partition(&p.topic, p.partition);
            } else if !ahead && p.paused {
                resume.add_partition(&p.topic, p.partition);
            }
        }
        if pause.count() > 0 {
            // On failure the partitions stay unpaused: alignment bounds
            // what is buffered, it is not needed for correct results, and
            // the next epoch tries again.
            match self.consumer.pause(&pause) {
                Ok(()) => self.mark(&pause, true),
                Err(e) => tracing::warn!("Kafka source: cannot pause partitions for alignment: {e}"),
            }
        }
        if resume.count() > 0 {
            match self.consumer.resume(&resume) {
                Ok(()) => self.mark(&resume, false),
                Err(e) => tracing::warn!("Kafka source: cannot resume aligned partitions: {e}"),
            }
        }
        if pause.count() + resume.count() > 0 {
            tracing::debug!(
                minimum,
                paused = pause.count(),
                resumed = resume.count(),
                now_paused = self.paused_partitions(),
                "Kafka source: watermark alignment"
            );
        }
    }

    fn mark(&mut self, list: &TopicPartitionList, paused: bool) {
        for e in list.elements() {
            if let Some(p) = self
                .partitions
                .iter_mut()
                .find(|p| p.partition == e.partition() && *p.topic == *e.topic())
            {
                p.paused = paused;
                if !paused {
                    // Its high watermark is stale until the client fetches
                    // it again: the idle timeout starts over, so that records
                    // that arrived while it was paused are read before it can
                    // turn idle.
                    p.last_record = Instant::now();
                }
            }
        }
    }

    /// How many partitions watermark alignment holds paused now.
    pub fn paused_partitions(&self) -> usize {
        self.partitions.iter().filter(|p| p.paused).count()
    }

    /// Whether the read has ended (a record or time limit).
    pub fn is_done(&self) -> bool {
        self.done || self.limit_reached()
    }

    /// When the engine should look again even if no record arrives: the
    /// watermark moves with the wall clock (processing time, idle
    /// partitions) and a time limit may fall due.
    pub fn next_wake(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let mut wake = Instant::now() + Duration::from_millis(200);
        if let Some(max) = self.config.max_read_time {
            let left = max.saturating_sub(Duration::from_millis(self.read_millis()));
            wake = wake.min(Instant::now() + left);
        }
        Some(wake)
    }

    /// Fails when the brokers have been unreachable for [`BROKER_TIMEOUT`].
    pub fn health(&self) -> Result<(), KafkaIoError> {
        match &*self.shared.failing_since.lock() {
            Some((since, last)) if since.elapsed() >= BROKER_TIMEOUT => Err(KafkaIoError::Broker(format!(
                "Kafka brokers {} unreachable for {} s: {last}",
                self.config
                    .consumer_config
                    .get("bootstrap.servers")
                    .map_or("?", String::as_str),
                since.elapsed().as_secs()
            ))),
            _ => Ok(()),
        }
    }

    /// Where each partition is, for a checkpoint.
    pub fn position(&self) -> SourcePosition {
        SourcePosition {
            partitions: self
                .partitions
                .iter()
                .map(|p| PartitionPosition {
                    topic: p.topic.to_string(),
                    partition: p.partition,
                    next_offset: p.next_offset,
                    watermark: p.watermark,
                })
                .collect(),
            records_read: self.records_read,
            read_millis: self.read_millis(),
        }
    }

    /// Commits the positions of `position` to the consumer group
    /// (`commit_offset_in_finalize`), once they are safe in a checkpoint.
    pub fn commit(&self, position: &SourcePosition) {
        if !self.config.commit_offsets || position.partitions.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in &position.partitions {
            if tpl
                .add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next_offset))
                .is_err()
            {
                return;
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!("Kafka source: committing offsets failed: {e}");
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Unblocks a reader waiting on a full channel.
        let (_, empty) = sync_channel(0);
        drop(std::mem::replace(&mut self.records, empty));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reader thread's side.
struct Reader {
    consumer: Arc<BaseConsumer>,
    config: ReadConfig,
    shared: Arc<Shared>,
    /// Every assigned partition: its index in the source's list and its
    /// high watermark cell.
    known: BTreeMap<(Arc<str>, i32), (usize, Arc<AtomicI64>)>,
    /// The read's topics, shared by the records instead of one string each.
    topics: Vec<Arc<str>>,
    tx: SyncSender<Record>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl Reader {
    fn run(mut self) {
        let poll = self.config.poll_timeout.min(Duration::from_millis(100));
        let mut last_refresh = Instant::now();
        let mut last_discovery = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            if let Some(every) = self.config.partition_discovery {
                if last_discovery.elapsed() >= every {
                    last_discovery = Instant::now();
                    self.discover();
                }
            }
            match self.consumer.poll(poll) {
                Some(Ok(m)) => {
                    let topic = self
                        .topics
                        .iter()
                        .find(|t| ***t == *m.topic())
                        .map_or_else(|| m.topic().into(), Arc::clone);
                    let Some(&(partition_index, _)) = self.known.get(&(topic.clone(), m.partition()))
                    else {
                        continue; // not assigned by us
                    };
                    let record = Record {
                        partition_index,
                        topic,
                        partition: m.partition(),
                        offset: m.offset(),
                        kafka_timestamp: m.timestamp().to_millis(),
                        timestamp_type: match m.timestamp() {
                            rdkafka::Timestamp::CreateTime(_) => 0,
                            rdkafka::Timestamp::LogAppendTime(_) => 1,
                            rdkafka::Timestamp::NotAvailable => -1,
                        },
                        key: m.key().map(Bytes::copy_from_slice),
                        value: m.payload().map(Bytes::copy_from_slice),
                        headers: m
                            .headers()
                            .map(|hs| {
                                hs.iter()
                                    .map(|h| (h.key.to_owned(), h.value.map(Bytes::copy_from_slice)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    };
                    *self.shared.failing_since.lock() = None;
                    if self.tx.send(record).is_err() {
                        return; // the source is gone
                    }
                    (self.wake)();
                }
                Some(Err(e)) => {
                    let mut failing = self.shared.failing_since.lock();
                    let since = failing.as_ref().map_or_else(Instant::now, |(s, _)| *s);
                    tracing::warn!("Kafka source: {e}");
                    *failing = Some((since, e.to_string()));
                }
                None => {}
            }
            if last_refresh.elapsed() >= Duration::from_millis(50) {
                last_refresh = Instant::now();
                self.refresh_high_watermarks();
            }
        }
    }

    /// The client learns each partition's high watermark from its fetches;
    /// reading the cached value costs no request.
    fn refresh_high_watermarks(&self) {
        let mut moved = false;
        for ((topic, partition), (_, high)) in &self.known {
            if let Some(h) = cached_high_watermark(&self.consumer, topic, *partition) {
                moved |= high.swap(h, Ordering::Relaxed) != h;
            }
        }
        if moved {
            // The engine may now see a partition as caught up (an idle
            // source is woken by the engine's own timer, not 20 times a second).
            (self.wake)();
        }
    }

    /// Adds partitions that appeared since the start, read from their
    /// beginning (everything in them is new to this job).
    fn discover(&mut self) {
        let mut added = TopicPartitionList::new();
        let mut new = Vec::new();
        for topic in &self.config.topics {
            let Ok(ids) = partitions_of(&self.consumer, topic) else {
                continue;
            };
            for p in ids {
                let key: (Arc<str>, i32) = (topic.as_str().into(), p);
                if self.known.contains_key(&key) {
                    continue;
                }
                let Ok((low, high)) = self.consumer.fetch_watermarks(topic, p, LOOKUP_TIMEOUT) else {
                    continue;
                };
                if added.add_partition_offset(topic, p, Offset::Offset(low)).is_err() {
                    continue;
                }
                let h = Arc::new(AtomicI64::new(high));
                self.known.insert(key.clone(), (self.known.len(), h.clone()));
                new.push((key.0, key.1, low, h));
            }
        }
        if new.is_empty() {
            return;
        }
        if let Err(e) = self.consumer.incremental_assign(&added) {
            tracing::warn!("Kafka source: cannot assign new partitions: {e}");
            // Forget them (the next discovery tries again), keeping the
            // indices in step with the source's list.
            for (topic, partition, _, _) in &new {
                self.known.remove(&(topic.clone(), *partition));
            }
            return;
        }
        self.shared.discovered.lock().extend(new);
        (self.wake)();
    }
}

/// The high watermark the client last received with a fetch response,
/// without asking the broker (`rd_kafka_get_watermark_offsets`, which
/// rdkafka does not wrap).
fn cached_high_watermark(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; the call
    // only reads the client's cached partition state into the two locals.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}
