//! The state backend trait: an ordered-enough key-value store that can
//! write a consistent snapshot of itself.
//!
//! The engine keeps everything durable under one key space, told apart by
//! the first byte (see `ferrobeam_engine::durable`): user state cells, and at
//! checkpoint time the snapshot entries of timers, GroupByKey buffers,
//! deferred splittable-DoFn work and sinks.  A snapshot of the backend is
//! therefore a snapshot of the job.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Result;

/// Which implementation; also written in checkpoint manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Hash maps in RAM: fastest, bounded by memory; snapshots are one file.
    Memory,
    /// RocksDB on local disk: state larger than RAM; snapshots are hard links.
    Rocksdb,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Rocksdb => "rocksdb",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "memory" => Some(BackendKind::Memory),
            "rocksdb" => Some(BackendKind::Rocksdb),
            _ => None,
        }
    }
}

/// Puts and deletes applied together (atomically in RocksDB).
#[derive(Default, Debug)]
pub struct WriteBatch {
    pub(crate) ops: Vec<(Vec<u8>, Option<Bytes>)>,
}

impl WriteBatch {
    pub fn put(&mut self, key: Vec<u8>, value: Bytes) {
        self.ops.push((key, Some(value)));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// A key-value store holding a job's state.
///
/// Reads see every write that returned before them.  Implementations are
/// shared between the tasks serving workers' state requests, so they take
/// `&self` and lock internally.
pub trait StateBackend: Send + Sync {
    fn kind(&self) -> BackendKind;

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>>;

    fn write(&self, batch: WriteBatch) -> Result<()>;

    /// Calls `f` with every entry whose key starts with `prefix` until it
    /// returns false.  RocksDB visits keys in order; the memory backend in
    /// no particular order.
    fn scan_prefix(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &Bytes) -> bool) -> Result<()>;

    /// Calls `f` with the entries whose key starts with `prefix` and is at
    /// or after `start`, in key order, until it returns false.  RocksDB
    /// seeks; the memory backend (unordered) collects and sorts, so it is
    /// only for small sets there.
    fn scan_ordered_from(
        &self,
        prefix: &[u8],
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &Bytes) -> bool,
    ) -> Result<()> {
        let mut found: Vec<(Vec<u8>, Bytes)> = Vec::new();
        self.scan_prefix(prefix, &mut |k, v| {
            if k >= start {
                found.push((k.to_vec(), v.clone()));
            }
            true
        })?;
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in &found {
            if !f(k, v) {
                break;
            }
        }
        Ok(())
    }

    /// Deletes every entry whose key starts with `prefix`; returns how many.
    fn delete_prefix(&self, prefix: &[u8]) -> Result<usize> {
        let mut batch = WriteBatch::default();
        self.scan_prefix(prefix, &mut |k, _| {
            batch.delete(k.to_vec());
            true
        })?;
        let n = batch.len();
        self.write(batch)?;
        Ok(n)
    }

    /// Starts, in the background, the work a snapshot would otherwise do
    /// while writers wait (RocksDB: flushing memtables), so that the
    /// snapshot taken once [`StateBackend::snapshot_ready`] says so is
    /// quick.  Writers may go on meanwhile.
    fn prepare_snapshot(&self) -> Result<()> {
        Ok(())
    }

    /// Whether a snapshot now would be quick (see `prepare_snapshot`).
    fn snapshot_ready(&self) -> Result<bool> {
        Ok(true)
    }

    /// Writes a consistent snapshot into `dir`, which must not exist yet.
    /// Writes that return after this call started may or may not be in it,
    /// so callers quiesce writers first (the engine snapshots between
    /// epochs, when no bundle runs).  When it returns, the snapshot's files
    /// are on disk (synced).
    fn snapshot_to(&self, dir: &Path) -> Result<()>;
}

/// Opens a fresh backend of `kind` working in `work_dir` (RocksDB only; the
/// directory is created and must be empty or absent), restored from the
/// snapshot in `from` if given.  The snapshot directory is only read.
pub fn open(
    kind: BackendKind,
    work_dir: &Path,
    from: Option<&Path>,
) -> Result<Arc<dyn StateBackend>> {
    Ok(match kind {
        BackendKind::Memory => Arc::new(match from {
            Some(dir) => crate::memory::MemoryBackend::restore(dir)?,
            None => crate::memory::MemoryBackend::default(),
        }),
        BackendKind::Rocksdb => Arc::new(crate::rocks::RocksBackend::open(work_dir, from)?),
    })
}

/// Opens the snapshot in `dir` for reading only (inspection tools).
pub fn open_snapshot(kind: BackendKind, dir: &Path) -> Result<Arc<dyn StateBackend>> {
    Ok(match kind {
        BackendKind::Memory => Arc::new(crate::memory::MemoryBackend::restore(dir)?),
        BackendKind::Rocksdb => Arc::new(crate::rocks::RocksBackend::read_only(dir)?),
    })
}
