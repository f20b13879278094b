//! Kafka read and write stages of a streaming job: the engine's side of
//! `ferrobeam-io-kafka`.
//!
//! The read starts its consumer on the first epoch (after a restore has
//! put back its partition positions), takes what the reader thread has
//! ready, and reports the least partition watermark.  Reads that set
//! `max_drift_ms` are aligned together: after each epoch the driver gives
//! each of them the least watermark of the others ([`align_reads`]).
//!
//! The write sends every element and flushes before each checkpoint, so a
//! completed checkpoint never counts a record the broker has not
//! acknowledged; a transactional write commits once the checkpoint is
//! complete, and keeps a log of the open transaction that the checkpoint
//! carries, to send it again if the job dies before the commit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferrobeam_coders::varint::{read_len, read_slice};
use ferrobeam_coders::{Coder, PaneInfo, RowSchema, Value};
use ferrobeam_graph::PortRef;
use ferrobeam_io_kafka::{
    BackfillPosition, KafkaIoError, KafkaSink, KafkaSource, KafkaTransform, OutgoingRecord,
    PartitionPosition, ReadConfig, SourcePosition, WriteAheadLog, WriteConfig,
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
        Some(Err(e)) => Err(format!("transform {unique_name:?} ({urn}) cannot run: {e}")),
        None => Err(format!(
            "transform {unique_name:?}: {urn} is not a Kafka URN"
        )),
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
            (name, KafkaTransform::Read(config)) => Ok(Self::new(name, *config, wake)),
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

    /// Records fetched but not yet taken into an epoch.
    pub(crate) fn buffered(&self) -> u64 {
        self.source.as_ref().map_or(0, |s| s.buffered())
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
        w.bool(position.backfill.is_some());
        if let Some(b) = &position.backfill {
            w.bool(b.done).len(b.finished.len());
            for f in &b.finished {
                w.str(f);
            }
            let (file, offset) = b.current.clone().unwrap_or_default();
            w.bool(b.current.is_some()).str(&file).i64(offset as i64);
            w.len(b.cut.len());
            for (topic, partition, offset) in &b.cut {
                w.str(topic).i64((*partition).into()).i64(*offset);
            }
        }
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
        // Checkpoints written before the hybrid source end here.
        let backfill = if !r.is_done() && r.bool()? {
            let done = r.bool()?;
            let finished = (0..r.len()?)
                .map(|_| r.string())
                .collect::<Result<_, _>>()?;
            let has_current = r.bool()?;
            let current = (r.string()?, r.i64()?.max(0) as u64);
            let mut cut = Vec::new();
            for _ in 0..r.len()? {
                let topic = r.string()?;
                let partition = r.i64()?;
                let partition = i32::try_from(partition)
                    .map_err(|_| r.error(format!("partition {partition} out of range")))?;
                cut.push((topic, partition, r.i64()?));
            }
            Some(BackfillPosition {
                done,
                finished,
                current: has_current.then_some(current),
                cut,
            })
        } else {
            None
        };
        self.restored = Some(SourcePosition {
            partitions,
            records_read,
            read_millis,
            backfill,
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
    elements: Elements,
    /// With `transactional.id`: the transactions.
    txn: Option<Transactions>,
}

/// What the write's input elements are, decided once from the input coder.
enum Elements {
    /// `KV<bytes, bytes>`, the common case: key and value go to the client
    /// from the element's own bytes, nothing decoded.
    KvBytes,
    /// Another `KV` coder (e.g. nullable parts): decoded, then sent.
    Kv(Coder),
    /// Rows with headers (`kafka_write_with_headers`), of this schema.
    Rows(Arc<RowSchema>),
}

impl Elements {
    /// Sends one element's value (as the input coder encodes it, nested).
    fn send(&self, sink: &KafkaSink, name: &str, value: &[u8]) -> Result<(), KafkaIoError> {
        let undecodable = |err: &dyn std::fmt::Display| {
            KafkaIoError::Element(format!("{name}: undecodable element: {err}"))
        };
        let record = match self {
            Elements::KvBytes => {
                let bytes = |pos| read_len(value, pos).and_then(|(n, p)| read_slice(value, p, n));
                let (k, p) = bytes(0).map_err(|e| undecodable(&e))?;
                let (v, end) = bytes(p).map_err(|e| undecodable(&e))?;
                if end != value.len() {
                    return Err(undecodable(&"trailing bytes after KV<bytes, bytes>"));
                }
                return sink.send_kv(Some(k), Some(v));
            }
            Elements::Kv(coder) => {
                OutgoingRecord::from_kv(&coder.decode(value, true).map_err(|e| undecodable(&e))?)
            }
            Elements::Rows(schema) => {
                let (row, end) = schema.decode(value, 0).map_err(|e| undecodable(&e))?;
                if end != value.len() {
                    return Err(undecodable(&"trailing bytes after the row"));
                }
                OutgoingRecord::from_row(schema, &Value::Row(row))
            }
        }?;
        sink.send(&record)
    }
}

/// A transactional write's transactions, one per checkpoint interval,
/// numbered from 1 (0: none yet).  A transaction is committed once the
/// checkpoint counting its records is complete; until then its records are
/// also in a log the checkpoint carries (see `ferrobeam_io_kafka::wal`).
struct Transactions {
    /// Where logs are written; `None` without checkpoints (no restore can
    /// need one then).
    scratch: Option<PathBuf>,
    /// The open transaction's log.
    log: Option<WriteAheadLog>,
    /// The last transaction committed; the open one is the next.
    committed: u64,
    /// What the job was restored with: the transaction the snapshot
    /// counted and its log's file name.
    restored: Option<(u64, String)>,
    last_commit: Instant,
}

/// Without checkpoints, how often a transactional write commits.
const TXN_COMMIT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl KafkaWrite {
    /// The write of a `KafkaWrite` stage, reading `input`; a transactional
    /// one writes its logs into `scratch` (the checkpoints' scratch space).
    pub(crate) fn for_stage(
        components: &Components,
        transform_id: &str,
        urn: &str,
        payload: &[u8],
        input: &PortRef,
        scratch: Option<PathBuf>,
    ) -> Result<Self, EngineError> {
        match stage_transform(components, transform_id, urn, payload)? {
            (name, KafkaTransform::Write(config)) => {
                Self::new(&name, &config, input, components, scratch)
            }
            (name, _) => Err(EngineError::Internal(format!("{name}: not a Kafka write"))),
        }
    }

    fn new(
        name: &str,
        config: &WriteConfig,
        input: &PortRef,
        components: &Components,
        scratch: Option<PathBuf>,
    ) -> Result<Self, EngineError> {
        let format = WireFormat::new(components, &input.coder_id)?;
        let value_id = components
            .coders
            .get(&input.coder_id)
            .and_then(|c| c.component_coder_ids.first())
            .ok_or_else(|| EngineError::Internal(format!("{name}: bad input coder")))?;
        let value = Coder::from_components(components, value_id)
            .map_err(|e| EngineError::Internal(format!("{name}: input coder: {e}")))?;
        let elements = match value {
            Coder::Row(schema) if config.with_headers => Elements::Rows(schema),
            Coder::Kv { key, value }
                if matches!((&*key, &*value), (Coder::Bytes, Coder::Bytes)) =>
            {
                Elements::KvBytes
            }
            other => Elements::Kv(other),
        };
        let sink = KafkaSink::new(config).map_err(|e| kafka_error(name, e))?;
        let txn = sink.is_transactional().then(|| Transactions {
            scratch,
            log: None,
            committed: 0,
            restored: None,
            last_commit: Instant::now(),
        });
        Ok(Self {
            name: name.to_owned(),
            sink,
            format,
            elements,
            txn,
        })
    }

    pub(crate) fn write(&mut self, chunk: &[u8]) -> Result<(), EngineError> {
        let Self {
            name,
            sink,
            format,
            elements,
            txn,
        } = self;
        let mut log = match txn {
            Some(t) => {
                if !sink.in_transaction() {
                    sink.begin().map_err(|e| kafka_error(name, e))?;
                    if let Some(dir) = &t.scratch {
                        let file = log_file_name(name, t.committed + 1);
                        t.log = Some(
                            WriteAheadLog::create(dir.join(file))
                                .map_err(|e| kafka_error(name, e))?,
                        );
                    }
                }
                t.log.as_mut()
            }
            None => None,
        };
        format.for_each(chunk, |e| {
            let v = &chunk[e.value.clone()];
            if let Some(log) = log.as_mut() {
                log.append(v).map_err(|err| kafka_error(name, err))?;
            }
            elements
                .send(sink, name, v)
                .map_err(|err| kafka_error(name, err))
        })
    }

    /// Before a checkpoint: everything sent is acknowledged (and, in a
    /// transaction, logged durably).
    /// Records sent but not yet acknowledged.
    pub(crate) fn in_flight(&self) -> usize {
        self.sink.in_flight()
    }

    pub(crate) fn flush(&mut self) -> Result<(), EngineError> {
        self.sink.flush().map_err(|e| kafka_error(&self.name, e))?;
        if let Some(log) = self.txn.as_mut().and_then(|t| t.log.as_mut()) {
            log.sync().map_err(|e| kafka_error(&self.name, e))?;
        }
        Ok(())
    }

    pub(crate) fn is_transactional(&self) -> bool {
        self.txn.is_some()
    }

    /// The transaction a snapshot taken now counts: the open one, else the
    /// last committed.
    fn counted(&self) -> u64 {
        match &self.txn {
            Some(t) if self.sink.in_transaction() => t.committed + 1,
            Some(t) => t.committed,
            None => 0,
        }
    }

    /// A transactional write's checkpoint entry: the transaction the
    /// snapshot counts and the name of its log.
    pub(crate) fn save(&self, w: &mut Writer) {
        let log = self
            .txn
            .as_ref()
            .and_then(|t| t.log.as_ref())
            .and_then(|l| l.path().file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        w.i64(self.counted() as i64).str(&log);
    }

    pub(crate) fn load(&mut self, r: &mut Reader) -> Result<(), StateError> {
        let number = r.i64()?;
        let log = r.string()?;
        let number = u64::try_from(number)
            .map_err(|_| r.error(format!("transaction number {number} out of range")))?;
        match &mut self.txn {
            Some(t) => t.restored = Some((number, log)),
            None => {
                return Err(r.error(
                    "the checkpoint's Kafka write was transactional and this one is not \
                     (transactional.id removed)",
                ))
            }
        }
        Ok(())
    }

    /// The file the next snapshot carries: the open transaction's log.
    pub(crate) fn snapshot_file(&self) -> Option<PathBuf> {
        Some(self.txn.as_ref()?.log.as_ref()?.path().to_path_buf())
    }

    /// Before the first element: a transactional write fences earlier
    /// producers of its id and, restored, sends again the records of the
    /// snapshot's transaction if it did not commit (`restored_file` finds
    /// the log a snapshot carries).
    pub(crate) fn recover(
        &mut self,
        restored_file: impl Fn(&str) -> Option<PathBuf>,
    ) -> Result<(), EngineError> {
        let Some(t) = &mut self.txn else {
            return Ok(());
        };
        let (number, log) = match t.restored.take() {
            Some((number, name)) if !name.is_empty() => (number, restored_file(&name)),
            Some((number, _)) => (number, None),
            None => (0, None),
        };
        let (name, elements) = (&self.name, &self.elements);
        self.sink
            .recover(number, log.as_deref(), |sink, frame| {
                elements.send(sink, name, frame)
            })
            .map_err(|e| kafka_error(name, e))?;
        t.committed = number;
        t.last_commit = Instant::now();
        Ok(())
    }

    /// Commits the open transaction: after the checkpoint counting it is
    /// complete, or (without checkpoints) now and then and at the end.
    pub(crate) fn commit(&mut self) -> Result<(), EngineError> {
        let Some(t) = &mut self.txn else {
            return Ok(());
        };
        t.last_commit = Instant::now();
        if !self.sink.in_transaction() {
            return Ok(());
        }
        let number = t.committed + 1;
        // Tests die here: after the checkpoint, before its transaction
        // commits (the one moment a restore must send records again).
        if t.log.as_ref().is_some_and(|l| l.frames() > 0) {
            crate::failpoint::hit("before-kafka-commit");
        }
        self.sink
            .commit(number)
            .map_err(|e| kafka_error(&self.name, e))?;
        t.committed = number;
        if let Some(log) = t.log.take() {
            // The snapshot holds its own link to the log.
            log.remove().map_err(|e| kafka_error(&self.name, e))?;
        }
        Ok(())
    }

    /// Without checkpoints: whether it is time to commit again.
    pub(crate) fn commit_due(&self) -> bool {
        self.txn
            .as_ref()
            .is_some_and(|t| t.last_commit.elapsed() >= TXN_COMMIT_EVERY)
    }
}

/// A transaction's log file name: the write's transform name (its
/// characters that are safe in a file name) and the transaction number.
fn log_file_name(transform: &str, number: u64) -> String {
    let safe: String = transform
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(transform, &mut h);
    format!(
        "{safe}-{:016x}-{number:06}.wal",
        std::hash::Hasher::finish(&h)
    )
}
