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
//! engine tells it, between epochs, how far each partition may go
//! ([`KafkaSource::align`]: the drift past the least watermark of the other
//! partitions of the job's aligned reads), and the reader thread holds back
//! (and pauses) a partition whose next record is past that, so a partition
//! replayed from far behind is not outrun by the others, whose records
//! would otherwise wait, buffered downstream, for the watermark to reach
//! them.  See `Reader::admit`.

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

use crate::backfill::{Backfill, BackfillPosition};
use crate::config::{ReadConfig, TimestampPolicy};
use crate::error::KafkaIoError;
use crate::record::Record;

/// Records the reader thread may hold ahead of the engine.
const CHANNEL_CAPACITY: usize = 10_000;
/// Records watermark alignment holds back for a partition before it pauses
/// the partition's fetching.  Pausing at the first would cost a refetch
/// after each resume every time a partition reaches its bound, which, when
/// partitions move on together, is every drift's worth of records: on the
/// skew test's data that made the read ten times slower than holding up to
/// a few thousand records, which the bound soon releases.  A partition with
/// this many held is well ahead, and the refetch is worth it.  So the
/// reader holds at most this many records per partition (besides the
/// channel).
const PAUSE_AFTER_HELD: usize = 5_000;
/// `fetch.wait.max.ms` of aligned reads, unless the consumer config sets
/// it: a resumed partition waits for the client's fetch in flight, and when
/// the partitions not paused have nothing new, that fetch waits this long
/// at the broker (librdkafka's default, 500 ms, made every resume cost half
/// a second).
const ALIGNED_FETCH_WAIT_MS: &str = "50";
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

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A record's event time under `policy` (read time for `ProcessingTime`).
fn event_time(policy: TimestampPolicy, record: &Record) -> i64 {
    match policy {
        TimestampPolicy::ProcessingTime => wall_millis(),
        _ => record
            .kafka_timestamp
            .unwrap_or_else(wall_millis)
            .clamp(MIN_TIMESTAMP, MAX_TIMESTAMP),
    }
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
    /// The hybrid source's file part (`None`: the read has none).
    pub backfill: Option<BackfillPosition>,
}

struct Partition {
    topic: Arc<str>,
    partition: i32,
    next_offset: i64,
    watermark: i64,
    cells: Arc<Cells>,
    last_record: Instant,
}

/// What the reader thread tells the source about a partition.
struct Cells {
    /// The broker's high watermark as the client last heard it.
    high: AtomicI64,
    /// Watermark alignment: how far the partition may go (event time), as
    /// the engine last set it: the drift past the least watermark of the
    /// other partitions of the job's aligned reads.
    bound: AtomicI64,
    /// Held back by watermark alignment: the reader holds its next records
    /// back (and, past `PAUSE_AFTER_HELD` of them, the client stops
    /// fetching it).
    paused: AtomicBool,
    /// The offset after the last record the reader handed over.
    delivered: AtomicI64,
    /// The client's position: past the last record polled *and* past the
    /// transaction markers and aborted records after it, which the client
    /// reads but never delivers (`isolation.level=read_committed`, the
    /// default).  Without it a partition of a transactional topic would
    /// never be caught up (its high watermark counts the markers), never
    /// turn idle, and hold the watermark back for good.
    fetched: AtomicI64,
}

impl Cells {
    fn new(high: i64, bound: i64) -> Arc<Self> {
        Arc::new(Self {
            high: AtomicI64::new(high),
            bound: AtomicI64::new(bound),
            paused: AtomicBool::new(false),
            delivered: AtomicI64::new(-1),
            fetched: AtomicI64::new(-1),
        })
    }

    /// Whether the engine has every record of the partition up to the
    /// broker's end: `next_offset` is the engine's position.
    fn caught_up(&self, next_offset: i64) -> bool {
        let high = self.high.load(Ordering::Relaxed);
        next_offset >= high
            || (next_offset >= self.delivered.load(Ordering::Relaxed)
                && self.fetched.load(Ordering::Relaxed) >= high)
    }
}

/// A partition's alignment bound before the engine sets one: each may
/// hand over its first record (see `held_back`), and nothing more that is
/// not within the drift of the beginning of time.
fn initial_bound(config: &ReadConfig) -> i64 {
    match config.max_drift {
        Some(drift) => MIN_TIMESTAMP.saturating_add(millis(drift)),
        None => MAX_TIMESTAMP,
    }
}

/// A partition the reader found after the start: topic, partition, the
/// offset it starts at, and its cells.
type Discovered = (Arc<str>, i32, i64, Arc<Cells>);

/// What the reader thread shares with the source.
struct Shared {
    stop: AtomicBool,
    /// Watermark alignment: the least watermark over the job's aligned
    /// reads, as the engine last set it.
    align_minimum: AtomicI64,
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
    /// The hybrid source's files, while they are being read.
    backfill: Option<Backfill>,
    /// The backfill was read to its end (this run or before a restore).
    backfill_done: bool,
    /// A failure of the source's own (reading the backfill files): the
    /// job fails with it.
    failed: Option<String>,
    /// `max_records_per_second`: records the read may take now (a token
    /// bucket holding at most a second's worth), as of `tokens_at`.
    tokens: f64,
    tokens_at: Instant,
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
    if config.max_drift.is_some() && !config.consumer_config.contains_key("fetch.wait.max.ms") {
        c.set("fetch.wait.max.ms", ALIGNED_FETCH_WAIT_MS);
    }
    c
}

fn partitions_of(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaIoError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
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
    start_time: Option<i64>,
    (topic, partition): (&str, i32),
    (low, high): (i64, i64),
    committed: Option<i64>,
) -> Result<i64, KafkaIoError> {
    if let Some(time) = start_time {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(time))?;
        let found = consumer.offsets_for_times(tpl, LOOKUP_TIMEOUT)?;
        return Ok(
            match found.find_partition(topic, partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                // No record at or after that time: start at the end.
                _ => high,
            },
        );
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
            // The first request: brokers that do not answer within the
            // broker timeout fail the job here, saying so.
            let ids = partitions_of(&consumer, topic, config.broker_timeout).map_err(|e| {
                KafkaIoError::Broker(format!(
                    "Kafka brokers {} gave no partitions of topic {topic:?} within {} ms \
                     (broker_timeout_ms): {e}",
                    config
                        .consumer_config
                        .get("bootstrap.servers")
                        .map_or("?", String::as_str),
                    config.broker_timeout.as_millis()
                ))
            })?;
            for p in ids {
                found.push((topic.clone(), p));
            }
        }
        let unsaved: Vec<(String, i32)> = found
            .iter()
            .filter(|k| !saved_at.contains_key(*k))
            .cloned()
            .collect();
        let committed = committed_offsets(&consumer, &config, &unsaved)?;
        // The hybrid source: files first, unless a checkpoint says they
        // were read (or the job ran without them before).
        let fresh = saved.partitions.is_empty() && saved.backfill.is_none();
        let mut backfill = None;
        let mut after_files = HashMap::new();
        if let Some(b) = &config.backfill {
            if fresh || saved.backfill.as_ref().is_some_and(|p| !p.done) {
                let (opened, after_last) =
                    Backfill::open(b.clone(), &config.topics[0], saved.backfill.as_ref())?;
                backfill = Some(opened);
                after_files = after_last;
            }
        }
        let cutover_time = config.backfill.as_ref().and_then(|b| b.cutover_time);
        let offset_cutover = backfill.is_some() && fresh && cutover_time.is_none();
        let start_time = config.start_read_time.or(cutover_time);
        let mut cut = HashMap::new();
        let mut partitions = Vec::new();
        let mut tpl = TopicPartitionList::new();
        for (topic, p) in found {
            let (low, high) = consumer.fetch_watermarks(&topic, p, LOOKUP_TIMEOUT)?;
            let (next_offset, watermark) = match saved_at.get(&(topic.clone(), p)) {
                Some(s) => (s.next_offset, s.watermark),
                None if offset_cutover => {
                    // Kafka takes over after the last offset the files hold.
                    let start = after_files.get(&(topic.clone(), p)).copied().unwrap_or(low);
                    if start < low {
                        return Err(KafkaIoError::Backfill(format!(
                            "gap at the cut-over: the files end at offset {} of {topic}/{p}, but \
                             Kafka keeps that partition only from offset {low} on (the rest was \
                             deleted by retention); add the missing history to the files or give \
                             a cut-over time",
                            start - 1
                        )));
                    }
                    (start, MIN_TIMESTAMP)
                }
                None => {
                    let c = committed.get(&(topic.clone(), p)).copied();
                    let start =
                        start_offset(&consumer, &config, start_time, (&topic, p), (low, high), c)?;
                    (start, MIN_TIMESTAMP)
                }
            };
            cut.insert((topic.clone(), p), next_offset);
            tpl.add_partition_offset(&topic, p, Offset::Offset(next_offset))?;
            partitions.push(Partition {
                topic: topic.as_str().into(),
                partition: p,
                next_offset,
                watermark,
                cells: Cells::new(high, initial_bound(&config)),
                last_record: Instant::now(),
            });
        }
        consumer.assign(&tpl)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            align_minimum: AtomicI64::new(MIN_TIMESTAMP),
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
                .map(|(i, p)| ((p.topic.clone(), p.partition), (i, p.cells.clone())))
                .collect(),
            gates: partitions
                .iter()
                .map(|p| Gate::new(p.cells.clone()))
                .collect(),
            parked: 0,
            topics: config
                .topics
                .iter()
                .map(|t| Arc::from(t.as_str()))
                .collect(),
            tx,
            wake,
        };
        let thread = std::thread::Builder::new()
            .name("kafka-reader".into())
            .spawn(move || reader.run())
            .map_err(|e| KafkaIoError::Broker(format!("cannot start the reader thread: {e}")))?;
        if fresh {
            if let Some(b) = &mut backfill {
                b.set_cut(cut);
            }
        }
        tracing::info!(
            topics = ?config.topics,
            partitions = partitions.len(),
            backfill = backfill.is_some(),
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
            backfill_done: saved.backfill.as_ref().is_some_and(|b| b.done),
            backfill,
            failed: None,
            tokens: 0.0,
            tokens_at: Instant::now(),
        };
        source.check_limits();
        Ok(source)
    }

    fn adopt_discovered(&mut self) {
        let found = std::mem::take(&mut *self.shared.discovered.lock());
        for (topic, partition, next_offset, cells) in found {
            tracing::info!(%topic, partition, "Kafka source: new partition");
            // The reader numbered it next, and announced it before sending
            // any of its records, so the indices agree.
            self.partitions.push(Partition {
                topic,
                partition,
                next_offset,
                watermark: MIN_TIMESTAMP,
                cells,
                last_record: Instant::now(),
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
            tracing::info!(
                records = self.records_read,
                "Kafka source reached its limit"
            );
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
        let max = max.min(self.refill_tokens());
        let taken = self.take_unlimited(max, &mut emit);
        if self.config.max_records_per_second.is_some() {
            self.tokens -= taken as f64;
        }
        taken
    }

    /// With `max_records_per_second`: how many records the read may take
    /// now.  Tokens accrue with time, up to one second's worth, so a read
    /// that was idle cannot burst past its rate for longer than that.
    fn refill_tokens(&mut self) -> usize {
        let Some(rate) = self.config.max_records_per_second else {
            return usize::MAX;
        };
        let now = Instant::now();
        let rate = rate as f64;
        self.tokens =
            (self.tokens + rate * now.duration_since(self.tokens_at).as_secs_f64()).min(rate);
        self.tokens_at = now;
        self.tokens.max(0.0) as usize
    }

    fn take_unlimited(&mut self, max: usize, mut emit: impl FnMut(&Record, i64)) -> usize {
        let mut n = 0;
        if let Some(b) = &mut self.backfill {
            let mut count = 0;
            let taken = b.take(max, |r, t| {
                count += 1;
                emit(r, t);
            });
            n += count;
            self.records_read += count as u64;
            if let Err(e) = taken {
                self.fail(e.to_string());
                return n;
            }
            if !b.is_done() {
                self.check_limits();
                return n;
            }
            // The files are read: Kafka's records come after them, so no
            // partition's watermark starts behind the last file record.
            let latest = b.watermark();
            for p in &mut self.partitions {
                p.watermark = p.watermark.max(latest);
            }
            self.backfill = None;
            self.backfill_done = true;
            tracing::info!("backfill read; the Kafka head takes over");
        }
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
            let timestamp = event_time(self.config.timestamp_policy, &record);
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
        if let Some(b) = &self.backfill {
            // Kafka's records come after the files'.
            return b.watermark();
        }
        let idle = self.config.idle_timeout;
        let mut least = MAX_TIMESTAMP;
        for p in &mut self.partitions {
            let caught_up = p.cells.caught_up(p.next_offset);
            // A partition alignment holds back is never idle: the reader
            // holds records of it, and the client may not be fetching it (so
            // its high watermark may be stale).  Its watermark stays where
            // its records put it, which holds nothing back: it is held
            // because its next record is past its bound.
            let held = p.cells.paused.load(Ordering::Relaxed);
            if caught_up && !held && p.last_record.elapsed() >= idle {
                p.watermark = p.watermark.max(now - idle.as_millis() as i64);
            }
            least = least.min(p.watermark);
        }
        least
    }

    fn fail(&mut self, error: String) {
        tracing::error!("Kafka source: {error}");
        self.failed.get_or_insert(error);
    }

    /// Watermark alignment (`max_drift_ms`; without it, nothing happens):
    /// sets how far each partition may go, given `others`, the least
    /// watermark of the job's other aligned reads (the end of time if there
    /// are none).  Partition watermarks are as [`KafkaSource::watermark`]
    /// last reported them.
    ///
    /// A partition may run up to the drift ahead of the least watermark of
    /// all the *other* partitions (this read's and the other reads'): the
    /// partition holding the minimum may go on until it is the drift past
    /// the next one, so a partition replayed from far behind reads at full
    /// speed, while the others wait for it.  So every partition stays within
    /// the drift of the minimum, but the one holding it, which stays within
    /// the drift of the second least (itself within the drift of the
    /// minimum).  When several reads align together, a whole source running
    /// ahead of another is held too.  The reader thread applies the bounds
    /// record by record (`Reader::admit`).
    pub fn align(&mut self, others: i64) {
        let Some(drift) = self.config.max_drift else {
            return;
        };
        self.adopt_discovered();
        if self.done {
            return;
        }
        // The two least watermarks (equal when two partitions share the least).
        let (mut least, mut second) = (MAX_TIMESTAMP, MAX_TIMESTAMP);
        for p in &self.partitions {
            if p.watermark < least {
                second = least;
                least = p.watermark;
            } else if p.watermark < second {
                second = p.watermark;
            }
        }
        let drift = millis(drift);
        for p in &self.partitions {
            let others_least = if p.watermark == least { second } else { least };
            let bound = others_least.min(others).saturating_add(drift);
            p.cells.bound.store(bound, Ordering::Relaxed);
        }
        self.shared
            .align_minimum
            .store(least.min(others), Ordering::Relaxed);
    }

    /// Records the reader thread has handed over that the engine has not
    /// taken yet (about: offsets may skip transaction markers).
    pub fn buffered(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| (p.cells.delivered.load(Ordering::Relaxed) - p.next_offset).max(0) as u64)
            .sum()
    }

    /// How many partitions watermark alignment holds back now.
    pub fn paused_partitions(&self) -> usize {
        self.partitions
            .iter()
            .filter(|p| p.cells.paused.load(Ordering::Relaxed))
            .count()
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
        if self.config.max_records_per_second.is_some() {
            // Rate-limited records may be waiting for tokens, which accrue
            // without any new record arriving to wake the engine.
            wake = wake.min(Instant::now() + Duration::from_millis(10));
        }
        if let Some(max) = self.config.max_read_time {
            let left = max.saturating_sub(Duration::from_millis(self.read_millis()));
            wake = wake.min(Instant::now() + left);
        }
        Some(wake)
    }

    /// Fails when the brokers have been unreachable for longer than the
    /// read's broker timeout (`broker_timeout_ms`).
    pub fn health(&self) -> Result<(), KafkaIoError> {
        if let Some(e) = &self.failed {
            return Err(KafkaIoError::Broker(e.clone()));
        }
        match &*self.shared.failing_since.lock() {
            Some((since, last)) if since.elapsed() >= self.config.broker_timeout => {
                Err(KafkaIoError::Broker(format!(
                    "Kafka brokers {} unreachable for {} s: {last}",
                    self.config
                        .consumer_config
                        .get("bootstrap.servers")
                        .map_or("?", String::as_str),
                    since.elapsed().as_secs()
                )))
            }
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
            backfill: match &self.backfill {
                Some(b) => Some(b.position()),
                None if self.backfill_done => Some(BackfillPosition {
                    done: true,
                    ..BackfillPosition::default()
                }),
                None => None,
            },
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

/// What the reader knows of a partition for watermark alignment.
struct Gate {
    cells: Arc<Cells>,
    /// The latest event time handed over to the source (the partition's
    /// watermark once the source has taken what is in the channel).
    handed_over: Option<i64>,
    /// Records held back, in offset order, with their event times.
    held: std::collections::VecDeque<(Record, i64)>,
    /// Fetching is paused (the client's `pause`).
    fetch_paused: bool,
}

impl Gate {
    fn new(cells: Arc<Cells>) -> Self {
        Self {
            cells,
            handed_over: None,
            held: std::collections::VecDeque::new(),
            fetch_paused: false,
        }
    }

    fn note(&mut self, time: i64) {
        self.handed_over = Some(self.handed_over.map_or(time, |t| t.max(time)));
    }
}

/// The reader thread's side.
struct Reader {
    consumer: Arc<BaseConsumer>,
    config: ReadConfig,
    shared: Arc<Shared>,
    /// Every assigned partition: its index in the source's list and its
    /// cells.
    known: BTreeMap<(Arc<str>, i32), (usize, Arc<Cells>)>,
    /// Watermark alignment's state of each partition, by index.
    gates: Vec<Gate>,
    /// Records held back in all gates.
    parked: usize,
    /// The read's topics, shared by the records instead of one string each.
    topics: Vec<Arc<str>>,
    tx: SyncSender<Record>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl Reader {
    fn run(mut self) {
        let max_poll = self.config.poll_timeout.min(Duration::from_millis(100));
        let mut last_refresh = Instant::now();
        let mut last_discovery = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            if let Some(every) = self.config.partition_discovery {
                if last_discovery.elapsed() >= every {
                    last_discovery = Instant::now();
                    self.discover();
                }
            }
            if self.parked > 0 && !self.release_held() {
                return; // the source is gone
            }
            // With records held back, look again soon: the engine moves the
            // alignment minimum between epochs, not through this thread.
            let poll = if self.parked > 0 {
                max_poll.min(Duration::from_millis(10))
            } else {
                max_poll
            };
            match self.consumer.poll(poll) {
                Some(Ok(m)) => {
                    let topic = self
                        .topics
                        .iter()
                        .find(|t| ***t == *m.topic())
                        .map_or_else(|| m.topic().into(), Arc::clone);
                    let Some(&(partition_index, _)) =
                        self.known.get(&(topic.clone(), m.partition()))
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
                                    .map(|h| {
                                        (h.key.to_owned(), h.value.map(Bytes::copy_from_slice))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    };
                    *self.shared.failing_since.lock() = None;
                    if !self.admit(record) {
                        return; // the source is gone
                    }
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

    /// Hands a record over to the source, unless watermark alignment holds
    /// it back; false when the source is gone.
    ///
    /// A record is held back when its event time is past its partition's
    /// bound (the drift past the least watermark of the other partitions,
    /// see `KafkaSource::align`), and so is every later record of the
    /// partition, until the bounds move past them.  Past
    /// `PAUSE_AFTER_HELD` held records the partition's fetching is paused
    /// too, and resumed once they are all released.  See `held_back` for
    /// why the partition holding the minimum is never held, so that the
    /// minimum can always move on: a partition with records to read
    /// advances as the source takes them (the engine always empties the
    /// channel), and one read to its end turns idle and follows the wall
    /// clock.  A held partition never turns idle (see
    /// `KafkaSource::watermark`), so holding never moves a watermark past
    /// records not read yet.
    ///
    /// Deciding here, record by record, rather than pausing in the engine
    /// between epochs, keeps the records of a partition that is too far
    /// ahead out of the channel: pausing between epochs, each resume let
    /// the channel fill (10k records) with the resumed partition before the
    /// next epoch could pause it again, and all of that waited downstream
    /// (the skew test buffered 45k values that way, against 5k now).  What
    /// is in the channel was within its bound when it was handed over.
    ///
    /// Pausing stops fetching, not what was fetched before: librdkafka drops
    /// what it had prefetched for the partition, and on resume fetches from
    /// after the last record this thread polled (the held ones included, so
    /// nothing is skipped); a record delivered twice around a pause is
    /// dropped by the position check in `take`.
    fn admit(&mut self, record: Record) -> bool {
        let index = record.partition_index;
        let time = event_time(self.config.timestamp_policy, &record);
        let Some(gate) = self.gates.get(index) else {
            return self.hand_over(record);
        };
        // Behind held ones, a record waits its turn.
        if gate.held.is_empty() && !held_back(gate, time, &self.shared) {
            self.gates[index].note(time);
            return self.hand_over(record);
        }
        let gate = &mut self.gates[index];
        gate.held.push_back((record, time));
        gate.cells.paused.store(true, Ordering::Relaxed);
        self.parked += 1;
        if gate.held.len() >= PAUSE_AFTER_HELD && !gate.fetch_paused {
            let (topic, partition) = (gate.held[0].0.topic.clone(), gate.held[0].0.partition);
            match self.pause_fetching(index, &topic, partition, true) {
                Ok(()) => {}
                // Holding records without pausing would pile them up here:
                // hand them over (alignment bounds what is buffered; results
                // do not depend on it).
                Err(e) => {
                    tracing::warn!(
                        %topic, partition,
                        "Kafka source: cannot pause a partition for watermark alignment: {e}"
                    );
                    let gate = &mut self.gates[index];
                    let held: Vec<(Record, i64)> = gate.held.drain(..).collect();
                    gate.cells.paused.store(false, Ordering::Relaxed);
                    self.parked -= held.len();
                    for (record, time) in held {
                        self.gates[index].note(time);
                        if !self.hand_over(record) {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    /// Hands over the held records that the alignment bounds now allow,
    /// and resumes the partitions with none left; false when the source is
    /// gone.
    fn release_held(&mut self) -> bool {
        for index in 0..self.gates.len() {
            let mut released = Vec::new();
            let gate = &mut self.gates[index];
            while let Some(&(_, time)) = gate.held.front() {
                if held_back(gate, time, &self.shared) {
                    break;
                }
                gate.note(time);
                released.extend(gate.held.pop_front().map(|(r, _)| r));
            }
            let Some((topic, partition)) = released.last().map(|r| (r.topic.clone(), r.partition))
            else {
                continue;
            };
            let (all_out, fetch_paused) = (gate.held.is_empty(), gate.fetch_paused);
            if all_out {
                gate.cells.paused.store(false, Ordering::Relaxed);
            }
            self.parked -= released.len();
            for record in released {
                if !self.hand_over(record) {
                    return false;
                }
            }
            if all_out && fetch_paused {
                if let Err(e) = self.pause_fetching(index, &topic, partition, false) {
                    // It stays paused, with nothing held back: it holds no
                    // minimum, and the warning says why it stalls.
                    tracing::warn!(
                        %topic, partition,
                        "Kafka source: cannot resume a partition paused for watermark alignment: {e}"
                    );
                }
            }
        }
        true
    }

    fn pause_fetching(
        &mut self,
        index: usize,
        topic: &str,
        partition: i32,
        paused: bool,
    ) -> rdkafka::error::KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        if paused {
            self.consumer.pause(&tpl)?;
        } else {
            self.consumer.resume(&tpl)?;
        }
        self.gates[index].fetch_paused = paused;
        tracing::trace!(%topic, partition, paused, "Kafka source: watermark alignment");
        Ok(())
    }

    fn hand_over(&self, record: Record) -> bool {
        // Counted before the send: the engine may take the record at once.
        if let Some(gate) = self.gates.get(record.partition_index) {
            gate.cells
                .delivered
                .fetch_max(record.offset + 1, Ordering::Relaxed);
        }
        if self.tx.send(record).is_err() {
            return false;
        }
        (self.wake)();
        true
    }

    /// The client learns each partition's high watermark from its fetches;
    /// reading the cached value costs no request.
    fn refresh_high_watermarks(&self) {
        let mut moved = false;
        for ((topic, partition), (_, cells)) in &self.known {
            if let Some(h) = cached_high_watermark(&self.consumer, topic, *partition) {
                moved |= cells.high.swap(h, Ordering::Relaxed) != h;
            }
        }
        // Positions are the client's own (no request).
        if let Ok(positions) = self.consumer.position() {
            for e in positions.elements() {
                if let (Offset::Offset(o), Some((_, cells))) = (
                    e.offset(),
                    self.known.get(&(Arc::from(e.topic()), e.partition())),
                ) {
                    moved |= cells.fetched.swap(o, Ordering::Relaxed) != o;
                }
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
            let Ok(ids) = partitions_of(&self.consumer, topic, LOOKUP_TIMEOUT) else {
                continue;
            };
            for p in ids {
                let key: (Arc<str>, i32) = (topic.as_str().into(), p);
                if self.known.contains_key(&key) {
                    continue;
                }
                let Ok((low, high)) = self.consumer.fetch_watermarks(topic, p, LOOKUP_TIMEOUT)
                else {
                    continue;
                };
                if added
                    .add_partition_offset(topic, p, Offset::Offset(low))
                    .is_err()
                {
                    continue;
                }
                let cells = Cells::new(high, initial_bound(&self.config));
                self.known
                    .insert(key.clone(), (self.known.len(), cells.clone()));
                self.gates.push(Gate::new(cells.clone()));
                new.push((key.0, key.1, low, cells));
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
            self.gates.truncate(self.known.len());
            return;
        }
        self.shared.discovered.lock().extend(new);
        (self.wake)();
    }
}

/// Whether watermark alignment holds back a record at event time `time` of
/// a partition: it is past the partition's bound (see `KafkaSource::align`),
/// and the partition is not at the minimum with nothing of it in flight.
///
/// The exception is what keeps alignment from deadlocking: when everything
/// a partition handed over is at or below the minimum, the source has taken
/// it all and the partition holds the minimum; its next record must go
/// through however far ahead it is (a gap in its timestamps), else nothing
/// could move the minimum.  (Had it anything in flight, the source takes it
/// in its next epoch and the engine sets the minimum again.)  A partition
/// that has handed nothing over may be the one holding the minimum, so it
/// may hand over its first record.
fn held_back(gate: &Gate, time: i64, shared: &Shared) -> bool {
    time > gate.cells.bound.load(Ordering::Relaxed)
        && gate
            .handed_over
            .is_some_and(|t| t > shared.align_minimum.load(Ordering::Relaxed))
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
