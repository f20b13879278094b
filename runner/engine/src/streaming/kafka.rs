//! Kafka read and write stages of a streaming job: the engine's side of
//! `ferrobeam-io-kafka`.
//!
//! The read starts its consumer on the first epoch (after a restore has
//! put back its partition positions), takes what the reader thread has
//! ready, and reports the least partition watermark.  Reads that set
//! `max_drift_ms` are aligned together: after each epoch the driver gives
//! each of them the least watermark of the others ([`align_reads`]).
//! The write sends
//! every element and flushes before each checkpoint, so a completed
//! checkpoint never counts a record the broker has not acknowledged.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferrobeam_coders::{Coder, PaneInfo, RowSchema};
use ferrobeam_graph::PortRef;
use ferrobeam_io_kafka::{
    KafkaSink, KafkaSource, KafkaTransform, OutgoingRecord, PartitionPosition, ReadConfig,
    SourcePosition, WriteConfig,
};
use ferrobeam_proto::pipeline::v1::Components;
use ferrobeam_state::codec::{Reader, Writer};
use ferrobeam_state::StateError;
use tokio::sync::Notify;

use crate::wire::{write_element, WireFormat};
use crate::EngineError;

/// Records one epoch takes from a source at most: bounds an epoch's size
/// when a topic has a large backlog, and so the time to the next checkpoint
/// (checkpoints fall between epochs) and the latency of the records behind.
const RECORDS_PER_EPOCH: usize = 5_000;

fn kafka_error(transform: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Io(format!("{transform}: {e}"))
}

/// Reads a Kafka transform's payload, or says why it cannot run, naming
/// the transform and URN (checked at Prepare, so a bad read never starts).
pub fn parse(unique_name: &str, urn: &str, payload: &[u8]) -> Result<KafkaTransform, String> {
    match KafkaTransform::parse(urn, payload) {
        Some(Ok(t)) => Ok(t),
        Some(Err(e)) => Err(format!(
            "transform {unique_name:?} ({urn}) cannot run: {e}"
        )),
        None => Err(format!("transform {unique_name:?}: {urn} is not a Kafka URN")),
    }
}

/// A Kafka stage's transform: its unique name and parsed payload.
fn stage_transform(
    components: &Components,
    transform_id: &str,
    urn: &str,
    payload: &[u8],
) -> Result<(String, KafkaTransform), EngineError> {
    let name = components.transforms[transform_id].unique_name.clone();
    let parsed = parse(&name, urn, payload).map_err(EngineError::Io)?;
    Ok((name, parsed))
}

pub(crate) struct KafkaRead {
    name: String,
    config: ReadConfig,
    source: Option<KafkaSource>,
    /// Positions restored from a checkpoint, until the source starts.
    restored: Option<SourcePosition>,
    wake: Arc<Notify>,
    /// Output values are written here before being framed.
    value: Vec<u8>,
    last_commit: Instant,
    /// A drain stopped the read.
    drained: bool,
    /// The source's watermark as the last step reported it.
    watermark: i64,
}

/// Without checkpoints, how often a read commits its positions.
const COMMIT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl KafkaRead {
    /// The read of a `KafkaRead` stage; `wake` is notified when records arrive.
    pub(crate) fn for_stage(
        components: &Components,
        transform_id: &str,
        urn: &str,
        payload: &[u8],
        wake: Arc<Notify>,
    ) -> Result<Self, EngineError> {
        match stage_transform(components, transform_id, urn, payload)? {
            (name, KafkaTransform::Read(config)) => Ok(Self::new(name, config, wake)),
            (name, _) => Err(EngineError::Internal(format!("{name}: not a Kafka read"))),
        }
    }

    fn new(name: String, config: ReadConfig, wake: Arc<Notify>) -> Self {
        Self {
            name,
            config,
            source: None,
            restored: None,
            wake,
            value: Vec::new(),
            last_commit: Instant::now(),
            drained: false,
            watermark: ferrobeam_coders::MIN_TIMESTAMP_MILLIS,
        }
    }

    fn source(&mut self) -> Result<&mut KafkaSource, EngineError> {
        if self.source.is_none() {
            let wake = self.wake.clone();
            let source = KafkaSource::start(
                self.config.clone(),
                self.restored.take(),
                Arc::new(move || wake.notify_one()),
            )
            .map_err(|e| kafka_error(&self.name, e))?;
            self.source = Some(source);
        }
        Ok(self.source.as_mut().expect("started above"))
    }

    /// Takes what the source has: (one chunk of elements, the output
    /// watermark, whether more records are waiting).
    pub(crate) fn step(&mut self, draining: bool) -> Result<(Bytes, i64, bool), EngineError> {
        if draining {
            // A drained source reads no further; its watermark goes to the end.
            self.drained = true;
            self.watermark = ferrobeam_coders::MAX_TIMESTAMP_MILLIS;
            return Ok((Bytes::new(), self.watermark, false));
        }
        let with_metadata = self.config.with_metadata;
        let name = self.name.clone();
        let mut value = std::mem::take(&mut self.value);
        let source = self.source()?;
        source.health().map_err(|e| kafka_error(&name, e))?;
        let mut out = Vec::new();
        let taken = source.take(RECORDS_PER_EPOCH, |record, timestamp| {
            value.clear();
            record.encode(with_metadata, &mut value);
            write_element(&mut out, timestamp, &[], &PaneInfo::NO_FIRING, &[&value]);
        });
        let watermark = source.watermark();
        tracing::trace!(source = %name, taken, watermark, "Kafka read step");
        self.value = value;
        self.watermark = watermark;
        Ok((Bytes::from(out), watermark, taken == RECORDS_PER_EPOCH))
    }

    /// Takes part in watermark alignment (`max_drift_ms` is set).
    pub(crate) fn is_aligned(&self) -> bool {
        self.config.max_drift.is_some()
    }

    /// The source's watermark as the last step reported it (the end of time
    /// once the read is over, so a finished read holds nothing back).
    pub(crate) fn last_watermark(&self) -> i64 {
        self.watermark
    }

    /// Sets how far each partition may go, given the least watermark of
    /// the other aligned reads.
    fn align(&mut self, others: i64) {
        if let Some(source) = &mut self.source {
            source.align(others);
        }
    }

    /// Partitions alignment holds paused now.
    pub(crate) fn paused_partitions(&self) -> usize {
        self.source
            .as_ref()
            .map_or(0, KafkaSource::paused_partitions)
    }

    pub(crate) fn is_done(&self) -> bool {
        self.drained || self.source.as_ref().is_some_and(KafkaSource::is_done)
    }

    pub(crate) fn next_wake(&self) -> Option<Instant> {
        match &self.source {
            Some(s) => s.next_wake(),
            // Not started yet: the next epoch starts it.
            None => Some(Instant::now()),
        }
    }

    fn position(&self) -> Option<SourcePosition> {
        self.source
            .as_ref()
            .map(KafkaSource::position)
            .or_else(|| self.restored.clone())
    }

    pub(crate) fn save(&self, w: &mut Writer) {
        let position = self.position().unwrap_or_default();
        w.len(position.partitions.len());
        for p in &position.partitions {
            w.str(&p.topic)
                .i64(p.partition.into())
                .i64(p.next_offset)
                .i64(p.watermark);
        }
        w.i64(position.records_read as i64)
            .i64(position.read_millis as i64);
    }

    pub(crate) fn load(&mut self, r: &mut Reader) -> Result<(), StateError> {
        let n = r.len()?;
        let mut partitions = Vec::with_capacity(n);
        for _ in 0..n {
            let topic = r.string()?;
            let partition = r.i64()?;
            let partition = i32::try_from(partition)
                .map_err(|_| r.error(format!("partition {partition} out of range")))?;
            partitions.push(PartitionPosition {
                topic,
                partition,
                next_offset: r.i64()?,
                watermark: r.i64()?,
            });
        }
        let records_read = r.i64()?.max(0) as u64;
        let read_millis = r.i64()?.max(0) as u64;
        self.restored = Some(SourcePosition {
            partitions,
            records_read,
            read_millis,
        });
        Ok(())
    }

    /// Commits the positions of what went downstream to the consumer
    /// group (`commit_offset_in_finalize`): after a checkpoint holding
    /// them completed, or, without checkpoints, now and then.
    pub(crate) fn commit_offsets(&mut self) {
        self.last_commit = Instant::now();
        if let (Some(source), Some(position)) = (&self.source, self.position()) {
            source.commit(&position);
        }
    }

    /// Without checkpoints: whether it is time to commit again.
    pub(crate) fn commit_due(&self) -> bool {
        self.config.commit_offsets && self.last_commit.elapsed() >= COMMIT_EVERY
    }
}

/// Watermark alignment across reads: each aligned read learns the least
/// watermark of the other aligned reads, so that a partition of it may run
/// at most its drift ahead of the least watermark of all the other
/// partitions of the job's aligned reads (see `KafkaSource::align`): a whole
/// read running ahead of another waits for it, and the partition holding
/// the job's minimum is never held back.  Returns the minimum (`None`: no
/// read is aligned).
pub(crate) fn align_reads<'a>(reads: impl IntoIterator<Item = &'a mut KafkaRead>) -> Option<i64> {
    let mut aligned: Vec<&mut KafkaRead> = reads.into_iter().filter(|r| r.is_aligned()).collect();
    let watermarks: Vec<i64> = aligned.iter().map(|r| r.last_watermark()).collect();
    for (i, read) in aligned.iter_mut().enumerate() {
        let others = watermarks
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, w)| *w)
            .min()
            .unwrap_or(ferrobeam_coders::MAX_TIMESTAMP_MILLIS);
        read.align(others);
    }
    watermarks.into_iter().min()
}

pub(crate) struct KafkaWrite {
    name: String,
    sink: KafkaSink,
    format: WireFormat,
    value: Coder,
    /// With headers: the input rows' schema.
    rows: Option<RowSchema>,
}

impl KafkaWrite {
    /// The write of a `KafkaWrite` stage, reading `input`.
    pub(crate) fn for_stage(
        components: &Components,
        transform_id: &str,
        urn: &str,
        payload: &[u8],
        input: &PortRef,
    ) -> Result<Self, EngineError> {
        match stage_transform(components, transform_id, urn, payload)? {
            (name, KafkaTransform::Write(config)) => Self::new(&name, &config, input, components),
            (name, _) => Err(EngineError::Internal(format!("{name}: not a Kafka write"))),
        }
    }

    fn new(
        name: &str,
        config: &WriteConfig,
        input: &PortRef,
        components: &Components,
    ) -> Result<Self, EngineError> {
        let format = WireFormat::new(components, &input.coder_id)?;
        let value_id = components
            .coders
            .get(&input.coder_id)
            .and_then(|c| c.component_coder_ids.first())
            .ok_or_else(|| EngineError::Internal(format!("{name}: bad input coder")))?;
        let value = Coder::from_components(components, value_id)
            .map_err(|e| EngineError::Internal(format!("{name}: input coder: {e}")))?;
        let rows = match &value {
            Coder::Row(schema) if config.with_headers => Some((**schema).clone()),
            _ => None,
        };
        let sink = KafkaSink::new(config).map_err(|e| kafka_error(name, e))?;
        Ok(Self {
            name: name.to_owned(),
            sink,
            format,
            value,
            rows,
        })
    }

    pub(crate) fn write(&self, chunk: &[u8]) -> Result<(), EngineError> {
        self.format.for_each(chunk, |e| {
            let v = self
                .value
                .decode(&chunk[e.value.clone()], true)
                .map_err(|err| kafka_error(&self.name, format!("undecodable element: {err}")))?;
            let record = match &self.rows {
                Some(schema) => OutgoingRecord::from_row(schema, &v),
                None => OutgoingRecord::from_kv(&v),
            }
            .map_err(|err| kafka_error(&self.name, err))?;
            self.sink.send(&record).map_err(|err| kafka_error(&self.name, err))
        })
    }

    /// Before a checkpoint and at the end: everything sent is acknowledged.
    pub(crate) fn flush(&self) -> Result<(), EngineError> {
        self.sink.flush().map_err(|e| kafka_error(&self.name, e))
    }
}
