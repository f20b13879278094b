//! The RocksDB backend: state larger than memory, snapshots by hard link.
//!
//! The working database is disposable: it is written without a write-ahead
//! log, because a job never reopens it after a crash; it restores from its
//! last checkpoint instead, and RocksDB's checkpoint flushes the memtables
//! first.  That makes writes cheaper and a checkpoint's pause short: a
//! flush plus hard links of immutable SST files.

use std::path::Path;

use bytes::Bytes;
use rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, Direction, IteratorMode, Options, WriteOptions, DB,
};

use crate::backend::{BackendKind, StateBackend, WriteBatch};
use crate::error::{Result, StateError};

/// Memory RocksDB may use for cached blocks; the rest of the state stays on
/// disk (plus up to four 16 MiB memtables).
const BLOCK_CACHE_BYTES: usize = 128 << 20;
/// A checkpoint flushes the memtable first, so its size bounds the pause:
/// 16 MiB flushes in tens of milliseconds.
const WRITE_BUFFER_BYTES: usize = 16 << 20;

pub struct RocksBackend {
    db: DB,
    write_options: WriteOptions,
}

fn options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.increase_parallelism(2);
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_write_buffer_size(WRITE_BUFFER_BYTES);
    opts.set_max_write_buffer_number(4);
    opts.set_max_open_files(512);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&Cache::new_lru_cache(BLOCK_CACHE_BYTES));
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    opts.set_block_based_table_factory(&table);
    opts
}

impl RocksBackend {
    /// Opens a database in `work_dir` (absent or empty), first filled from
    /// the snapshot in `from`: SST files are hard-linked (they are never
    /// modified, only deleted, so the snapshot stays intact), the few other
    /// files copied.
    pub fn open(work_dir: &Path, from: Option<&Path>) -> Result<Self> {
        if work_dir.exists() {
            let mut entries =
                std::fs::read_dir(work_dir).map_err(StateError::io("listing", work_dir))?;
            if entries.next().is_some() {
                return Err(StateError::Incompatible {
                    path: work_dir.to_path_buf(),
                    reason: "the state directory is not empty (another job using it?)".into(),
                });
            }
        }
        std::fs::create_dir_all(work_dir).map_err(StateError::io("creating", work_dir))?;
        if let Some(from) = from {
            if !from.join("CURRENT").is_file() {
                return Err(StateError::corrupt(
                    from,
                    "not a RocksDB snapshot (no CURRENT file)",
                ));
            }
            let listing = std::fs::read_dir(from).map_err(StateError::io("listing", from))?;
            for entry in listing {
                let entry = entry.map_err(StateError::io("listing", from))?;
                let src = entry.path();
                let dst = work_dir.join(entry.file_name());
                let is_sst = src.extension().is_some_and(|e| e == "sst");
                if is_sst && std::fs::hard_link(&src, &dst).is_ok() {
                    continue;
                }
                std::fs::copy(&src, &dst).map_err(StateError::io("copying", &src))?;
            }
        }
        let db = DB::open(&options(), work_dir)?;
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        Ok(Self { db, write_options })
    }

    /// Opens a snapshot without changing it; writes fail.
    pub fn read_only(dir: &Path) -> Result<Self> {
        if !dir.join("CURRENT").is_file() {
            return Err(StateError::corrupt(
                dir,
                "not a RocksDB snapshot (no CURRENT file)",
            ));
        }
        let mut opts = options();
        opts.create_if_missing(false);
        let db = DB::open_for_read_only(&opts, dir, false)?;
        Ok(Self {
            db,
            write_options: WriteOptions::default(),
        })
    }
}

impl StateBackend for RocksBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Rocksdb
    }

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.db.get_pinned(key)?.map(|v| Bytes::copy_from_slice(&v)))
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut rb = rocksdb::WriteBatch::default();
        for (key, value) in batch.ops {
            match value {
                Some(v) => rb.put(key, v),
                None => rb.delete(key),
            }
        }
        Ok(self.db.write_opt(rb, &self.write_options)?)
    }

    fn scan_prefix(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &Bytes) -> bool) -> Result<()> {
        for item in self
            .db
            .iterator(IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            if !f(&k, &Bytes::from(v.into_vec())) {
                break;
            }
        }
        Ok(())
    }

    fn snapshot_to(&self, dir: &Path) -> Result<()> {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(StateError::io("creating", parent))?;
        }
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }
}
