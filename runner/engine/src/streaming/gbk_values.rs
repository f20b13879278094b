//! Where a streaming GroupByKey keeps the values it buffers until a pane
//! carries them.
//!
//! With the memory backend they stay in each window's `Vec`.  With RocksDB
//! they are backend entries under the GroupByKey's namespace,
//! `G ns window_end window key seq`, so a GroupByKey may buffer more than
//! fits in memory (a long window over a busy stream), and a checkpoint
//! snapshots them with the rest of the state instead of serializing every
//! buffered value again each time.  Only each window's bookkeeping (counts,
//! trigger state) stays in memory.
//!
//! Writes collect in a batch that goes to the backend once per chunk of
//! input or advance of time, and before any read, so reads see them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ferrobeam_coders::encode_timestamp;
use ferrobeam_state::codec::{Reader, Writer};
use ferrobeam_state::keys::{self, Namespace};
use ferrobeam_state::{BackendKind, StateBackend, StateError, WriteBatch};

/// Identifies a (window, key) in window-end order: (window max timestamp,
/// encoded window, encoded key).
pub type Slot = (i64, Bytes, Bytes);

/// One window's buffered values.
#[derive(Default)]
pub struct Buffered {
    /// The values, when they are kept in memory.
    heap: Vec<Bytes>,
    /// How many values are in the backend, numbered `0..stored`.
    stored: u64,
}

/// The values of a stage's windows.
pub struct ValueStore {
    /// The job's backend (absent only in unit tests).
    backend: Option<Arc<dyn StateBackend>>,
    /// `G ns`.
    prefix: Vec<u8>,
    /// Whether values go to the backend (RocksDB) or stay in memory.
    in_backend: bool,
    pending: WriteBatch,
    /// Restoring into memory values a checkpoint kept in its backend: all
    /// of them, by window, taken out of the backend in one pass on first
    /// need (the memory backend's scans visit every entry).
    moving_in: Option<EntriesByWindow>,
    /// Values buffered in all windows, wherever they are kept (kept up to
    /// date on every push and clear rather than summed over windows, which
    /// may be millions).
    buffered: u64,
    /// The most `buffered` has been since the stage started (or resumed).
    peak: u64,
}

/// Backend entries (key, value) by their window's key prefix.
type EntriesByWindow = HashMap<Vec<u8>, Vec<(Vec<u8>, Bytes)>>;

impl ValueStore {
    /// Values in memory, with no backend to restore from.
    pub fn in_memory() -> Self {
        Self {
            backend: None,
            prefix: Vec::new(),
            in_backend: false,
            pending: WriteBatch::default(),
            moving_in: None,
            buffered: 0,
            peak: 0,
        }
    }

    /// The store of a streaming GroupByKey with namespace `ns`: in `backend`
    /// when that is RocksDB, else in memory.
    pub fn for_stage(backend: &Arc<dyn StateBackend>, ns: Namespace) -> Self {
        Self {
            backend: Some(backend.clone()),
            prefix: keys::gbk_values_prefix(ns),
            in_backend: backend.kind() == BackendKind::Rocksdb,
            pending: WriteBatch::default(),
            moving_in: None,
            buffered: 0,
            peak: 0,
        }
    }

    fn slot_prefix(&self, (end, window, key): &Slot) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + 24 + window.len() + key.len());
        out.extend_from_slice(&self.prefix);
        // (Beam's timestamp encoding sorts in time order.)
        out.extend_from_slice(&encode_timestamp(*end));
        out.extend_from_slice(&(window.len() as u32).to_be_bytes());
        out.extend_from_slice(window);
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out
    }

    fn value_key(slot_prefix: &[u8], seq: u64) -> Vec<u8> {
        [slot_prefix, &seq.to_be_bytes()].concat()
    }

    fn backend(&self) -> Result<&Arc<dyn StateBackend>, StateError> {
        self.backend.as_ref().ok_or_else(|| StateError::Decode {
            entry: "GroupByKey".into(),
            reason: "values were saved in a state backend, and this stage has none".into(),
        })
    }

    pub fn push(
        &mut self,
        slot: &Slot,
        buf: &mut Buffered,
        values: impl IntoIterator<Item = Bytes>,
    ) {
        if !self.in_backend {
            let before = buf.heap.len();
            buf.heap.extend(values);
            self.buffered += (buf.heap.len() - before) as u64;
        } else {
            let at = self.slot_prefix(slot);
            for v in values {
                self.pending.put(Self::value_key(&at, buf.stored), v);
                buf.stored += 1;
                self.buffered += 1;
            }
        }
        self.peak = self.peak.max(self.buffered);
    }

    /// How many values all windows hold (what the stage buffers).
    pub fn buffered(&self) -> u64 {
        self.buffered
    }

    /// The most values the windows have held at once since the stage
    /// started (or was restored): unlike samples of [`ValueStore::buffered`],
    /// it misses no short peak.
    pub fn peak(&self) -> u64 {
        self.peak
    }

    /// The window's values in arrival order.
    pub fn read<'a>(
        &mut self,
        slot: &Slot,
        buf: &'a Buffered,
    ) -> Result<Cow<'a, [Bytes]>, StateError> {
        if !self.in_backend || buf.stored == 0 {
            return Ok(Cow::Borrowed(&buf.heap));
        }
        self.flush()?;
        Ok(Cow::Owned(self.scan(slot, buf.stored)?))
    }

    fn scan(&self, slot: &Slot, stored: u64) -> Result<Vec<Bytes>, StateError> {
        let at = self.slot_prefix(slot);
        let mut values = Vec::with_capacity(stored.min(1 << 20) as usize);
        self.backend()?.scan_ordered_from(&at, &at, &mut |_, v| {
            values.push(v.clone());
            true
        })?;
        expect_count(values, stored)
    }

    /// A window's values restored from a checkpoint that kept them in its
    /// backend, into memory.
    fn move_in(&mut self, slot: &Slot, stored: u64) -> Result<Vec<Bytes>, StateError> {
        if self.moving_in.is_none() {
            let backend = self.backend()?.clone();
            let mut by_window = EntriesByWindow::new();
            backend.scan_prefix(&self.prefix, &mut |k, v| {
                let window = k[..k.len().saturating_sub(8)].to_vec();
                by_window
                    .entry(window)
                    .or_default()
                    .push((k.to_vec(), v.clone()));
                true
            })?;
            backend.delete_prefix(&self.prefix)?;
            self.moving_in = Some(by_window);
        }
        let at = self.slot_prefix(slot);
        let mut entries = self
            .moving_in
            .as_mut()
            .and_then(|m| m.remove(&at))
            .unwrap_or_default();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        expect_count(entries.into_iter().map(|(_, v)| v).collect(), stored)
    }

    /// Forgets the window's values.
    pub fn clear(&mut self, slot: &Slot, buf: &mut Buffered) {
        self.buffered = self
            .buffered
            .saturating_sub(buf.heap.len() as u64 + buf.stored);
        buf.heap = Vec::new();
        if buf.stored > 0 {
            let at = self.slot_prefix(slot);
            for seq in 0..buf.stored {
                self.pending.delete(Self::value_key(&at, seq));
            }
            buf.stored = 0;
        }
    }

    /// Moves the values of `from` (a window merged away) after those of `into`.
    pub fn absorb(
        &mut self,
        into_slot: &Slot,
        into: &mut Buffered,
        from_slot: &Slot,
        mut from: Buffered,
    ) -> Result<(), StateError> {
        let values = self.read(from_slot, &from)?.into_owned();
        self.clear(from_slot, &mut from);
        self.push(into_slot, into, values);
        Ok(())
    }

    /// Sends the collected writes to the backend.
    pub fn flush(&mut self) -> Result<(), StateError> {
        // (A restore ends with a flush: what it moved in is all placed.)
        self.moving_in = None;
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.backend()?.write(batch)
    }

    /// Whether windows' values are in the backend (written before the
    /// windows in a checkpoint entry).
    pub fn save_mode(&self, w: &mut Writer) {
        w.bool(self.in_backend);
    }

    /// Writes a window's values for a checkpoint: only their count when the
    /// backend's snapshot holds them.
    pub fn save(&self, buf: &Buffered, w: &mut Writer) {
        if self.in_backend {
            w.varint(buf.stored);
        } else {
            w.len(buf.heap.len());
            for v in &buf.heap {
                w.bytes(v);
            }
        }
    }

    /// Reads back a window's values saved with `saved_in_backend` (from
    /// [`ValueStore::save_mode`]).  A checkpoint taken with the other
    /// backend is converted: values saved inline go to the backend, values
    /// in the restored backend come into memory (and leave the backend).
    pub fn load(
        &mut self,
        saved_in_backend: bool,
        slot: &Slot,
        r: &mut Reader,
    ) -> Result<Buffered, StateError> {
        let mut buf = Buffered::default();
        if saved_in_backend {
            let stored = r.varint()?;
            if self.in_backend {
                buf.stored = stored;
            } else if stored > 0 {
                buf.heap = self.move_in(slot, stored)?;
            }
            self.buffered += stored;
            self.peak = self.peak.max(self.buffered);
        } else {
            let values = (0..r.len()?)
                .map(|_| r.bytes())
                .collect::<Result<Vec<_>, _>>()?;
            self.push(slot, &mut buf, values);
        }
        Ok(buf)
    }
}

fn expect_count(values: Vec<Bytes>, stored: u64) -> Result<Vec<Bytes>, StateError> {
    if values.len() as u64 != stored {
        return Err(StateError::Decode {
            entry: "GroupByKey".into(),
            reason: format!(
                "a window should have {stored} buffered values in the backend, it has {}",
                values.len()
            ),
        });
    }
    Ok(values)
}
