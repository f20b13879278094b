//! The Kafka sink: an idempotent producer (no duplicates from the
//! client's own retries), flushed before every checkpoint so that what a
//! checkpoint counts as written is on the broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::config::WriteConfig;
use crate::error::{ConfigError, KafkaIoError};
use crate::record::OutgoingRecord;

/// How long a flush may wait for the broker before the checkpoint fails.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

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

/// A running Kafka write.
pub struct KafkaSink {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
}

impl KafkaSink {
    /// Creates the producer.  Idempotence is on unless the configuration
    /// turns it off.
    pub fn new(config: &WriteConfig) -> Result<Self, KafkaIoError> {
        if config.producer_config.contains_key("transactional.id") {
            return Err(KafkaIoError::Config(ConfigError::Unsupported {
                field: "producer_config".into(),
                why: "sets transactional.id: transactions aligned with checkpoints are not \
                      supported yet; remove it (the producer is idempotent and flushed at \
                      every checkpoint)"
                    .into(),
            }));
        }
        let mut c = ClientConfig::new();
        c.set("enable.idempotence", "true");
        for (k, v) in &config.producer_config {
            c.set(k, v);
        }
        let producer: ThreadedProducer<Deliveries> = c.create_with_context(Deliveries::default())?;
        Ok(Self {
            producer,
            topic: config.topic.clone(),
        })
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
        self.failed()?;
        let topic = record.topic.as_deref().unwrap_or(&self.topic);
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
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
        if !record.headers.is_empty() {
            let mut hs = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                hs = hs.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            r = r.headers(hs);
        }
        loop {
            match self.producer.send(r) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The client's buffer is full: let it deliver some.
                    r = back;
                    std::thread::sleep(Duration::from_millis(5));
                    self.failed()?;
                }
                Err((e, _)) => {
                    return Err(KafkaIoError::Broker(format!(
                        "Kafka sink: cannot send to topic {topic:?}: {e}"
                    )))
                }
            }
        }
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
