//! The RocksDB backend: state larger than memory, snapshots by hard link.
//!
//! The working database is disposable: it is written without a write-ahead
//! log, because a job never reopens it after a crash; it restores from its
//! last checkpoint instead, and RocksDB's checkpoint flushes the memtables
//! first.  That makes writes cheaper; the flush is what a checkpoint's
//! pause is made of, so [`StateBackend::prepare_snapshot`] starts it in
//! the background while the job goes on, and the checkpoint itself only
//! flushes what was written since.  (Keeping an unsynced log and copying it
//! into the checkpoint instead of flushing was tried: with 1 GB of state
//! and 47 MB/s of updates it cost a third of the throughput, paused as long
//! copying and syncing the log, and made restores replay it.)

use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, DBCompressionType, Direction, FlushOptions,
    IteratorMode, Options, ReadOptions, WriteOptions, DB,
};

use crate::backend::{BackendKind, StateBackend, WriteBatch};
use crate::error::{Result, StateError};

/// Memory RocksDB may use for cached blocks; the rest of the state stays on
/// disk (plus up to four 16 MiB memtables).
const BLOCK_CACHE_BYTES: usize = 128 << 20;
const WRITE_BUFFER_BYTES: usize = 16 << 20;
/// A snapshot is ready once the active memtable is below this: flushing
/// what is left takes tens of milliseconds.
const READY_MEMTABLE_BYTES: u64 = 2 << 20;

pub struct RocksBackend {
    db: DB,
    write_options: WriteOptions,
    // Declared after `db`, so it is dropped after the database has closed.
    _open: OpenDatabase,
}

/// How many RocksDB databases this process has open, and a signal when
/// the count changes.
///
/// A process must not exit with a database open: RocksDB's background
/// threads (flushes, compactions, its timer) outlive `main` and lock
/// mutexes that C++ static destructors have already destroyed, and RocksDB
/// aborts ("pthread lock: Invalid argument").  An embedded job server, in
/// particular, is stopped from Python's `atexit`, and its jobs close their
/// databases on other threads; [`wait_until_all_closed`] lets it wait for
/// them before the interpreter exits.
static OPEN_DATABASES: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// One open database, counted in [`OPEN_DATABASES`] while it lives.
struct OpenDatabase;

impl OpenDatabase {
    fn new() -> Self {
        *OPEN_DATABASES.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        OpenDatabase
    }
}

impl Drop for OpenDatabase {
    fn drop(&mut self) {
        let (count, changed) = &OPEN_DATABASES;
        *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        changed.notify_all();
    }
}

/// The RocksDB databases open in this process now.
pub fn open_databases() -> usize {
    *OPEN_DATABASES.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// Blocks until no RocksDB database is open in this process, or `timeout`
/// has passed; returns how many are still open (0 on success).
pub fn wait_until_all_closed(timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let (count, changed) = &OPEN_DATABASES;
    let mut open = count.lock().unwrap_or_else(|e| e.into_inner());
    while *open > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        open = changed
            .wait_timeout(open, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    *open
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
    // Partitioned filters and indexes: a whole-file filter of a large SST
    // (megabytes for millions of keys) is bigger than a block-cache shard,
    // so it was evicted at once and read and checksummed again on every
    // lookup (80% of the job's CPU with 2M keys).  Partitions are small
    // blocks that cache like data; only their top level stays pinned.
    table.set_partition_filters(true);
    table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_pin_top_level_index_and_filter(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
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
        Ok(Self {
            db,
            write_options,
            _open: OpenDatabase::new(),
        })
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
            _open: OpenDatabase::new(),
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
        self.scan_ordered_from(prefix, prefix, f)
    }

    fn scan_ordered_from(
        &self,
        prefix: &[u8],
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &Bytes) -> bool,
    ) -> Result<()> {
        let mut read = ReadOptions::default();
        // Bounds let RocksDB skip whole files and stop at the prefix's end
        // rather than walk deleted keys past it.
        if let Some(end) = prefix_end(prefix) {
            read.set_iterate_upper_bound(end);
        }
        for item in self.db.iterator_opt(
            IteratorMode::From(start.max(prefix), Direction::Forward),
            read,
        ) {
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

    fn prepare_snapshot(&self) -> Result<()> {
        let mut flush = FlushOptions::default();
        flush.set_wait(false);
        Ok(self.db.flush_opt(&flush)?)
    }

    fn snapshot_ready(&self) -> Result<bool> {
        let int =
            |name: &str| -> Result<u64> { Ok(self.db.property_int_value(name)?.unwrap_or(0)) };
        if int("rocksdb.num-running-flushes")? > 0 || int("rocksdb.mem-table-flush-pending")? > 0 {
            return Ok(false);
        }
        if int("rocksdb.cur-size-active-mem-table")? <= READY_MEMTABLE_BYTES {
            return Ok(true);
        }
        // Much was written while the last flush ran: flush that too.
        self.prepare_snapshot()?;
        Ok(false)
    }

    fn snapshot_to(&self, dir: &Path) -> Result<()> {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(StateError::io("creating", parent))?;
        }
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }
}

/// The first key after every key starting with `prefix` (`None`: no such
/// key, the prefix is all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
