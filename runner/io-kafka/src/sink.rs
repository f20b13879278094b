//! The Kafka sink: an idempotent producer (no duplicates from the
//! client's own retries), flushed before every checkpoint so that what a
//! checkpoint counts as written is on the broker.
//!
//! With `transactional.id` in its configuration the sink writes in Kafka
//! transactions, which the engine commits once the checkpoint counting
//! their records is complete.  Each commit also moves a *marker*: the
//! offset of a consumer group of the sink's own (`ferrobeam-txn.<id>`) on
//! partition 0 of the sink's topic, committed inside the transaction, set
//! to the transaction's number.  After a crash the marker says whether the
//! last checkpoint's transaction made it, atomically with its records.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::WriteConfig;
use crate::error::KafkaIoError;
use crate::record::OutgoingRecord;

/// How long a flush may wait for the broker before the checkpoint fails.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one transaction call (init, marker, commit) may take.
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a transactional sink waits for its topic to be created
/// (brokers create a topic when asked for its metadata, by default).
const TOPIC_CREATION_WAIT: Duration = Duration::from_secs(10);

/// The broker aborts a transaction open longer than this.  A transaction
/// stays open for a checkpoint interval, plus the time a crashed job takes
/// to come back and commit it; librdkafka's default (60 s) would abort it
/// under long intervals.  This is the brokers' default ceiling
/// (`transaction.max.timeout.ms`); a configuration may set its own.
const DEFAULT_TRANSACTION_TIMEOUT_MS: &str = "900000";

/// Client settings a sink's marker consumer shares with its producer: how
/// to reach and authenticate to the cluster, nothing producer-specific.
fn is_connection_setting(key: &str) -> bool {
    [
        "bootstrap.",
        "security.",
        "sasl.",
        "ssl.",
        "client.",
        "socket.",
        "broker.",
    ]
    .iter()
    .any(|p| key.starts_with(p))
}

/// Keeps the first failed delivery: librdkafka has already retried it
/// (until `message.timeout.ms`), so it fails the job.
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Option<String>>,
    /// Whether `failed` is set: read for every record sent, without the lock.
    any_failed: AtomicBool,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.lock().get_or_insert_with(|| e.to_string());
            self.any_failed.store(true, Ordering::Release);
        }
    }
}

/// The transaction side of a transactional sink.
struct Transactions {
    id: String,
    /// A consumer in the marker group: it reads the marker, and its group
    /// metadata goes with the marker's offset into each transaction.
    marker: BaseConsumer,
    group: ConsumerGroupMetadata,
    open: bool,
}

/// A running Kafka write.
pub struct KafkaSink {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    transactions: Option<Transactions>,
}

impl KafkaSink {
    /// Creates the producer.  Idempotence is on unless the configuration
    /// turns it off; with `transactional.id`, call [`Self::init_transactions`]
    /// before anything else.
    pub fn new(config: &WriteConfig) -> Result<Self, KafkaIoError> {
        let mut c = ClientConfig::new();
        c.set("enable.idempotence", "true");
        let transactional_id = config.transactional_id();
        if transactional_id.is_some() {
            c.set("transaction.timeout.ms", DEFAULT_TRANSACTION_TIMEOUT_MS);
        }
        for (k, v) in &config.producer_config {
            c.set(k, v);
        }
        let producer: ThreadedProducer<Deliveries> = c.create_with_context(Deliveries::default())?;
        let transactions = match transactional_id {
            None => None,
            Some(id) => {
                let mut m = ClientConfig::new();
                for (k, v) in config
                    .producer_config
                    .iter()
                    .filter(|(k, _)| is_connection_setting(k))
                {
                    m.set(k, v);
                }
                m.set("group.id", marker_group(id))
                    .set("enable.auto.commit", "false")
                    // Asks the broker for stable offsets only (none pending
                    // in an open transaction).
                    .set("isolation.level", "read_committed");
                let marker: BaseConsumer = m.create()?;
                let group = marker.group_metadata().ok_or_else(|| {
                    KafkaIoError::Broker(
                        "Kafka sink: no group metadata for the marker group".into(),
                    )
                })?;
                Some(Transactions {
                    id: id.to_owned(),
                    marker,
                    group,
                    open: false,
                })
            }
        };
        Ok(Self {
            producer,
            topic: config.topic.clone(),
            transactions,
        })
    }

    pub fn is_transactional(&self) -> bool {
        self.transactions.is_some()
    }

    fn txn_error(&self, action: &str, e: KafkaError) -> KafkaIoError {
        let id = self.transactions.as_ref().map_or("", |t| t.id.as_str());
        KafkaIoError::Broker(format!(
            "Kafka sink (transactional.id {id:?}, topic {:?}): {action}: {e}",
            self.topic
        ))
    }

    fn marker_partition(&self, offset: Option<u64>) -> Result<TopicPartitionList, KafkaIoError> {
        let mut tpl = TopicPartitionList::new();
        let mut e = tpl.add_partition(&self.topic, 0);
        if let Some(o) = offset {
            let o = i64::try_from(o)
                .map_err(|_| KafkaIoError::Broker(format!("marker {o} out of range")))?;
            e.set_offset(Offset::Offset(o))?;
        }
        Ok(tpl)
    }

    /// Fences every earlier producer with this `transactional.id` (the
    /// broker aborts a transaction one left open) and returns the number of
    /// the last transaction committed: the marker, if one was ever set.
    pub fn init_transactions(&mut self) -> Result<Option<u64>, KafkaIoError> {
        let Some(t) = &self.transactions else {
            return Ok(None);
        };
        // The marker lives on the topic's partition 0: make sure the topic
        // exists.  A metadata request creates it where the broker allows,
        // and the creation shows in a later answer.
        let deadline = std::time::Instant::now() + TOPIC_CREATION_WAIT;
        loop {
            let metadata = self
                .producer
                .client()
                .fetch_metadata(Some(&self.topic), TXN_CALL_TIMEOUT)
                .map_err(|e| self.txn_error("looking up the topic", e))?;
            let exists = metadata.topics().iter().any(|m| {
                m.name() == self.topic && m.error().is_none() && !m.partitions().is_empty()
            });
            if exists {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Err(KafkaIoError::Broker(format!(
                    "Kafka sink: topic {:?} does not exist; create it (a transactional sink keeps \
                     its commit marker on the topic's partition 0)",
                    self.topic
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.producer
            .init_transactions(TXN_CALL_TIMEOUT)
            .map_err(|e| self.txn_error("initialising transactions", e))?;
        let committed = t
            .marker
            .committed_offsets(self.marker_partition(None)?, TXN_CALL_TIMEOUT)
            .map_err(|e| self.txn_error("reading the commit marker", e))?;
        Ok(committed.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some(o as u64),
            _ => None,
        }))
    }

    /// Starts a transactional sink where a snapshot left it.  The snapshot
    /// counted transaction `number` as written (0: nothing, a fresh start),
    /// and `log` holds what that transaction sent.  Unless the marker shows
    /// it committed, its records are sent again from the log, through
    /// `resend` (which decodes a frame and calls [`Self::send`]), and
    /// committed.  Either way the marker ends at `number`, so it never runs
    /// ahead of this run's own transactions (it may, after a restore from
    /// an older snapshot).  Returns how many records were sent again.
    pub fn recover(
        &mut self,
        number: u64,
        log: Option<&std::path::Path>,
        mut resend: impl FnMut(&mut Self, &[u8]) -> Result<(), KafkaIoError>,
    ) -> Result<u64, KafkaIoError> {
        let marker = self.init_transactions()?;
        let committed = marker.is_some_and(|m| m >= number);
        let mut resent = 0;
        if number > 0 && !committed {
            let log = log.ok_or_else(|| {
                KafkaIoError::Log(format!(
                    "transaction {number} of the snapshot did not commit (the marker is at {}) and \
                     the snapshot has no log to send its records again from",
                    marker.map_or_else(|| "none".to_owned(), |m| m.to_string())
                ))
            })?;
            self.begin()?;
            resent = crate::wal::replay(log, |frame| resend(self, frame))?;
            tracing::info!(
                topic = %self.topic,
                transaction = number,
                records = resent,
                "sending again the records of a transaction that did not commit"
            );
        }
        self.commit(number)?;
        Ok(resent)
    }

    /// Opens a transaction unless one is open.
    pub fn begin(&mut self) -> Result<(), KafkaIoError> {
        match &self.transactions {
            Some(t) if !t.open => {
                self.producer
                    .begin_transaction()
                    .map_err(|e| self.txn_error("beginning a transaction", e))?;
                self.transactions.as_mut().expect("matched").open = true;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub fn in_transaction(&self) -> bool {
        self.transactions.as_ref().is_some_and(|t| t.open)
    }

    /// Commits the open transaction (opening an empty one if none is) as
    /// number `number`: the marker moves to it in the same transaction.  A
    /// failure aborts it; the caller fails the job, whose restore sends the
    /// records again.
    pub fn commit(&mut self, number: u64) -> Result<(), KafkaIoError> {
        if self.transactions.is_none() {
            return Ok(());
        }
        self.begin()?;
        let offsets = self.marker_partition(Some(number))?;
        let t = self.transactions.as_ref().expect("checked above");
        let result = self
            .producer
            .send_offsets_to_transaction(&offsets, &t.group, TXN_CALL_TIMEOUT)
            .map_err(|e| self.txn_error(&format!("recording transaction {number}"), e))
            .and_then(|()| {
                self.producer
                    .commit_transaction(TXN_CALL_TIMEOUT)
                    .map_err(|e| self.txn_error(&format!("committing transaction {number}"), e))
            })
            .and_then(|()| self.failed());
        if result.is_err() {
            let _ = self.producer.abort_transaction(TXN_CALL_TIMEOUT);
        }
        self.transactions.as_mut().expect("checked above").open = false;
        result
    }

    fn failed(&self) -> Result<(), KafkaIoError> {
        let deliveries = self.producer.context();
        if !deliveries.any_failed.load(Ordering::Acquire) {
            return Ok(());
        }
        match deliveries.failed.lock().as_ref() {
            Some(e) => Err(KafkaIoError::Broker(format!(
                "Kafka sink: a record for topic {:?} could not be delivered: {e}",
                self.topic
            ))),
            None => Ok(()),
        }
    }

    /// Queues one record; waits while the client's queue is full.
    pub fn send(&self, record: &OutgoingRecord) -> Result<(), KafkaIoError> {
        let headers = (!record.headers.is_empty()).then(|| {
            let mut hs = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                hs = hs.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            hs
        });
        let mut r: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(record.topic.as_deref().unwrap_or(&self.topic));
        if let Some(k) = &record.key {
            r = r.key(k.as_ref());
        }
        if let Some(v) = &record.value {
            r = r.payload(v.as_ref());
        }
        if let Some(p) = record.partition {
            r = r.partition(p);
        }
        if let Some(t) = record.timestamp {
            r = r.timestamp(t);
        }
        if let Some(hs) = headers {
            r = r.headers(hs);
        }
        self.produce(r)
    }

    /// Queues a key and value (`None`: null) for the sink's topic, from
    /// borrowed bytes: the client copies them, nothing else does.
    pub fn send_kv(&self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), KafkaIoError> {
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic);
        if let Some(k) = key {
            r = r.key(k);
        }
        if let Some(v) = value {
            r = r.payload(v);
        }
        self.produce(r)
    }

    fn produce(&self, mut r: BaseRecord<'_, [u8], [u8]>) -> Result<(), KafkaIoError> {
        self.failed()?;
        loop {
            match self.producer.send(r) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The client's buffer is full: let it deliver some.
                    r = back;
                    std::thread::sleep(Duration::from_millis(5));
                    self.failed()?;
                }
                Err((e, back)) => {
                    return Err(KafkaIoError::Broker(format!(
                        "Kafka sink: cannot send to topic {:?}: {e}",
                        back.topic
                    )))
                }
            }
        }
    }

    /// Records sent but not yet acknowledged by the broker.
    pub fn in_flight(&self) -> usize {
        self.producer.in_flight_count().max(0) as usize
    }

    /// Waits until every queued record is acknowledged.
    pub fn flush(&self) -> Result<(), KafkaIoError> {
        self.producer.flush(FLUSH_TIMEOUT).map_err(|e| {
            KafkaIoError::Broker(format!(
                "Kafka sink: records for topic {:?} not acknowledged within {} s: {e}",
                self.topic,
                FLUSH_TIMEOUT.as_secs()
            ))
        })?;
        self.failed()
    }
}

/// The consumer group whose offset is a transactional sink's marker.
pub fn marker_group(transactional_id: &str) -> String {
    format!("ferrobeam-txn.{transactional_id}")
}
