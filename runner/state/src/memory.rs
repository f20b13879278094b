//! The in-memory backend: sharded hash maps, snapshots written as one file.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::backend::{BackendKind, StateBackend, WriteBatch};
use crate::codec::{fnv1a, Reader, Writer, FNV_OFFSET};
use crate::error::{Result, StateError};

/// Independent locks, so workers' state requests rarely wait on each other.
const SHARDS: usize = 16;
/// The snapshot file inside a snapshot directory.
pub const SNAPSHOT_FILE: &str = "state.kv";
const MAGIC: &[u8] = b"FBKV\x01";
const TRAILER: &[u8] = b"END";

pub struct MemoryBackend {
    shards: Vec<Mutex<HashMap<Box<[u8]>, Bytes>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
        }
    }
}

impl MemoryBackend {
    fn shard(&self, key: &[u8]) -> &Mutex<HashMap<Box<[u8]>, Bytes>> {
        &self.shards[(self.hasher.hash_one(key) % SHARDS as u64) as usize]
    }

    /// Loads a snapshot written by [`StateBackend::snapshot_to`], checking
    /// its checksum and entry count.
    pub fn restore(dir: &Path) -> Result<Self> {
        let path = dir.join(SNAPSHOT_FILE);
        let mut raw = Vec::new();
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .map_err(StateError::io("reading", &path))?;
        let raw = Bytes::from(raw);
        let corrupt = |reason: &str| StateError::corrupt(&path, reason);
        let body_end = raw
            .len()
            .checked_sub(TRAILER.len() + 16)
            .filter(|&end| raw.starts_with(MAGIC) && end >= MAGIC.len())
            .ok_or_else(|| corrupt("not a ferrobeam state snapshot (bad header or too short)"))?;
        if &raw[body_end..body_end + TRAILER.len()] != TRAILER {
            return Err(corrupt("the end marker is missing (truncated file?)"));
        }
        let tail_data = raw.slice(body_end + TRAILER.len()..);
        let mut tail = Reader::new(&tail_data, "trailer");
        let count = tail.i64()? as u64;
        let checksum = tail.i64()? as u64;
        if fnv1a(&raw[..body_end], FNV_OFFSET) != checksum {
            return Err(corrupt("checksum mismatch"));
        }
        let backend = MemoryBackend::default();
        let body = raw.slice(MAGIC.len()..body_end);
        let mut r = Reader::new(&body, SNAPSHOT_FILE);
        let mut n = 0u64;
        while !r.is_done() {
            let key = r.bytes()?;
            let value = r.bytes()?;
            backend
                .shard(&key)
                .lock()
                .insert(key.to_vec().into(), value);
            n += 1;
        }
        if n != count {
            return Err(corrupt(&format!("{n} entries, the trailer says {count}")));
        }
        Ok(backend)
    }
}

impl StateBackend for MemoryBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Memory
    }

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.shard(key).lock().get(key).cloned())
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        for (key, value) in batch.ops {
            let mut shard = self.shard(&key).lock();
            match value {
                Some(v) => {
                    shard.insert(key.into(), v);
                }
                None => {
                    shard.remove(key.as_slice());
                }
            }
        }
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &Bytes) -> bool) -> Result<()> {
        for shard in &self.shards {
            // Copy out the matches first: `f` may call back into the backend.
            let matches: Vec<(Box<[u8]>, Bytes)> = shard
                .lock()
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (k, v) in &matches {
                if !f(k, v) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<usize> {
        let mut n = 0;
        for shard in &self.shards {
            shard.lock().retain(|k, _| {
                let keep = !k.starts_with(prefix);
                n += usize::from(!keep);
                keep
            });
        }
        Ok(n)
    }

    fn snapshot_to(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(StateError::io("creating", dir))?;
        let path = dir.join(SNAPSHOT_FILE);
        // Copy references under the locks, write without them.
        let entries: Vec<(Box<[u8]>, Bytes)> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        write_snapshot(&path, &entries).map_err(StateError::io("writing", &path))?;
        crate::checkpoint::sync_dir(dir)
    }
}

/// Header, entries (length-prefixed key and value), end marker, entry
/// count and a checksum of everything before the marker.
fn write_snapshot(path: &Path, entries: &[(Box<[u8]>, Bytes)]) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut checksum = fnv1a(MAGIC, FNV_OFFSET);
    out.write_all(MAGIC)?;
    for (k, v) in entries {
        let mut head = Writer::new();
        head.bytes(k).len(v.len());
        for part in [&head.finish()[..], &v[..]] {
            checksum = fnv1a(part, checksum);
            out.write_all(part)?;
        }
    }
    out.write_all(TRAILER)?;
    let mut tail = Writer::new();
    tail.i64(entries.len() as i64).i64(checksum as i64);
    out.write_all(&tail.finish())?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}
