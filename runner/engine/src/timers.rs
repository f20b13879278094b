//! User timers of a stateful stage, held by the runner.
//!
//! The SDK sends every `timer.set` / `timer.clear` back on the data plane as
//! an encoded `beam:coder:timer:v1` value.  The runner keeps the latest
//! setting of each timer, identified by (family, key, dynamic tag, windows),
//! and decides when it fires.  In batch both time domains jump to +infinity
//! once the stage's input is exhausted, so every pending timer fires then,
//! in timestamp order per key.
//!
//! Timers live in an ordered table: a `BTreeMap` in memory, or, when the
//! job's state is in RocksDB, the backend itself under the owning
//! transform's namespace.  Then a stage may hold more timers than fit in
//! memory (one per key for millions of keys), and a checkpoint snapshots them
//! with the rest of the state instead of serializing them all each time.
//! Each timer has three entries (`tail` = family, key, dynamic tag and
//! windows):
//!
//! - `I tail` → fire time, hold, the timer as encoded: its identity, so a
//!   later setting finds and replaces the earlier one;
//! - `Q rank fire tail`: the order timers come due in (rank 0 is event time,
//!   1 processing time);
//! - `H hold tail`: the order of the output watermark holds.
//!
//! Lower bounds on the first `Q` and `H` keys let scans seek past what
//! firing deleted: in RocksDB a queue's head is otherwise a growing run of
//! tombstones that every scan walks through.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ferrobeam_coders::varint::{read_i32_be, read_len};
use ferrobeam_coders::{
    decode_timestamp, encode_timestamp, read_timestamp, Coder, CoderError, MIN_TIMESTAMP_MILLIS,
};
use ferrobeam_graph::{TimeDomain, TimerFamily};
use ferrobeam_proto::pipeline::v1::Components;

use ferrobeam_state::codec::{Reader, Writer};
use ferrobeam_state::keys::{self, Namespace};
use ferrobeam_state::{BackendKind, StateBackend, StateError, WriteBatch};

use crate::EngineError;

/// How to take apart the timers of one family.
struct TimerFormat {
    key: Coder,
    window: Coder,
    /// The windows, coded like an iterable of windows.
    windows: Coder,
}

/// One timer's parts, as ranges into its buffer.
struct ParsedTimer {
    range: Range<usize>,
    key: Range<usize>,
    /// Dynamic tag and windows together: with the key they identify the timer.
    tag_and_windows: Range<usize>,
    /// (fire timestamp, hold timestamp); `None` for a clear.
    fire: Option<(i64, i64)>,
}

impl TimerFormat {
    fn new(components: &Components, coder_id: &str) -> Result<Self, EngineError> {
        let bad = |why: String| EngineError::Internal(format!("timer coder {coder_id}: {why}"));
        match Coder::from_components(components, coder_id).map_err(|e| bad(e.to_string()))? {
            Coder::Timer { key, window } => Ok(Self {
                key: *key,
                window: (*window).clone(),
                windows: Coder::Iterable(window),
            }),
            other => Err(bad(format!(
                "is a {} coder, not a timer coder",
                other.urn()
            ))),
        }
    }

    /// Each window of a timer, as encoded, from its dynamic tag and windows.
    fn windows<'a>(&self, tag_and_windows: &'a [u8]) -> Result<Vec<&'a [u8]>, CoderError> {
        let (tag_len, tag_start) = read_len(tag_and_windows, 0)?;
        let (count, mut pos) = read_i32_be(tag_and_windows, tag_start + tag_len)?;
        (0..count.max(0))
            .map(|_| {
                let start = pos;
                pos = self.window.skip(tag_and_windows, start)?;
                Ok(&tag_and_windows[start..pos])
            })
            .collect()
    }

    fn parse(&self, buf: &[u8], pos: usize) -> Result<ParsedTimer, EngineError> {
        let bad = |e: ferrobeam_coders::CoderError| {
            EngineError::Internal(format!("undecodable timer from the SDK: {e}"))
        };
        let key_end = self.key.skip(buf, pos).map_err(bad)?;
        let (tag_len, tag_start) = read_len(buf, key_end).map_err(bad)?;
        let windows_end = self.windows.skip(buf, tag_start + tag_len).map_err(bad)?;
        let clear = *buf.get(windows_end).ok_or_else(|| {
            EngineError::Internal("timer from the SDK ends before its clear bit".into())
        })?;
        let (fire, end) = match clear {
            0 => {
                let (fire, p) = read_timestamp(buf, windows_end + 1).map_err(bad)?;
                let (hold, p) = read_timestamp(buf, p).map_err(bad)?;
                (
                    Some((fire, hold)),
                    ferrobeam_coders::PaneInfo::skip(buf, p).map_err(bad)?,
                )
            }
            _ => (None, windows_end + 1),
        };
        Ok(ParsedTimer {
            range: pos..end,
            key: pos..key_end,
            tag_and_windows: key_end..windows_end,
            fire,
        })
    }
}

/// Timers due per call of [`TimerStore::next_due_until`]: firing a million
/// timers goes in bundles of this many, not all at once.
const DUE_BATCH: usize = 20_000;

const IDENTITY: u8 = keys::TIMER_IDENTITY;
const QUEUE: u8 = b'Q';
const HOLDS: u8 = b'H';

/// Timestamps in keys are in Beam's encoding (big-endian, sign bit
/// flipped), whose byte order is numeric order.
fn sortable(ts: i64) -> [u8; 8] {
    encode_timestamp(ts)
}

fn unsortable(b: &[u8]) -> i64 {
    decode_timestamp(b[..8].try_into().expect("8 bytes"))
}

/// family, len(key), key, tag and windows.
fn tail(family: usize, key: &[u8], tag_and_windows: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len() + tag_and_windows.len());
    out.extend_from_slice(&(family as u32).to_be_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(tag_and_windows);
    out
}

/// (family, key, tag and windows) of a tail.
fn parse_tail(t: &[u8]) -> Option<(usize, &[u8], &[u8])> {
    let family = u32::from_be_bytes(t.get(..4)?.try_into().ok()?) as usize;
    let len = u32::from_be_bytes(t.get(4..8)?.try_into().ok()?) as usize;
    let key = t.get(8..8 + len)?;
    Some((family, key, &t[8 + len..]))
}

fn keyed(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    out.push(kind);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// An identity entry's value.
struct Setting {
    fire: i64,
    /// The output timestamp the timer holds the stage's watermark at.
    hold: i64,
    /// The timer exactly as the SDK set it; fired by sending it back.
    encoded: Bytes,
}

impl Setting {
    fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(16 + self.encoded.len());
        out.extend_from_slice(&self.fire.to_be_bytes());
        out.extend_from_slice(&self.hold.to_be_bytes());
        out.extend_from_slice(&self.encoded);
        Bytes::from(out)
    }

    fn decode(v: &Bytes) -> Result<Self, StateError> {
        if v.len() < 16 {
            return Err(StateError::Decode {
                entry: "timer".into(),
                reason: "shorter than its two timestamps".into(),
            });
        }
        Ok(Self {
            fire: i64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
            hold: i64::from_be_bytes(v[8..16].try_into().expect("8 bytes")),
            encoded: v.slice(16..),
        })
    }
}

type Ops = Vec<(Vec<u8>, Option<Bytes>)>;

/// Where the entries are: keys here are relative (without the backend
/// prefix).
enum Table {
    Heap(BTreeMap<Vec<u8>, Bytes>),
    Backend {
        backend: Arc<dyn StateBackend>,
        prefix: Vec<u8>,
    },
}

impl Table {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StateError> {
        match self {
            Table::Heap(map) => Ok(map.get(key).cloned()),
            Table::Backend { backend, prefix } => backend.get(&[prefix.as_slice(), key].concat()),
        }
    }

    fn write(&mut self, ops: Ops) -> Result<(), StateError> {
        match self {
            Table::Heap(map) => {
                for (k, v) in ops {
                    match v {
                        Some(v) => map.insert(k, v),
                        None => map.remove(&k),
                    };
                }
                Ok(())
            }
            Table::Backend { backend, prefix } => {
                let mut batch = WriteBatch::default();
                for (k, v) in ops {
                    let full = [prefix.as_slice(), &k].concat();
                    match v {
                        Some(v) => batch.put(full, v),
                        None => batch.delete(full),
                    }
                }
                backend.write(batch)
            }
        }
    }

    /// Entries with keys starting with `within`, from `start` on, in key
    /// order, until `f` returns false.
    fn scan(
        &self,
        within: &[u8],
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &Bytes) -> bool,
    ) -> Result<(), StateError> {
        match self {
            Table::Heap(map) => {
                for (k, v) in map.range(start.to_vec()..) {
                    if !k.starts_with(within) || !f(k, v) {
                        break;
                    }
                }
                Ok(())
            }
            Table::Backend { backend, prefix } => {
                let within = [prefix.as_slice(), within].concat();
                let start = [prefix.as_slice(), start].concat();
                backend.scan_ordered_from(&within, &start, &mut |k, v| f(&k[prefix.len()..], v))
            }
        }
    }
}

/// A timer due to fire, ready to send.
pub struct DueTimer {
    pub family: usize,
    pub key: Bytes,
    pub encoded: Bytes,
}

/// The pending timers of one stage.
pub struct TimerStore {
    formats: Vec<TimerFormat>,
    domains: Vec<TimeDomain>,
    /// `transform unique name/family id` per family: a restore into a
    /// changed pipeline maps saved families to the new ones by name.
    names: Vec<String>,
    table: Table,
    /// How many timers are pending.
    count: usize,
    /// No `Q` key of the rank (index) has an earlier fire time than this.
    queue_floor: [AtomicI64; 2],
    /// No `H` key has an earlier hold than this.
    hold_floor: AtomicI64,
    /// Heap tables only: the backend and prefix timers may have been
    /// restored into from a RocksDB snapshot (then moved into the heap).
    restored_from: Option<(Arc<dyn StateBackend>, Vec<u8>)>,
}

impl TimerStore {
    /// A store in memory (batch).
    pub fn new(families: &[TimerFamily], components: &Components) -> Result<Self, EngineError> {
        Self::with_table(families, components, Table::Heap(BTreeMap::new()), None)
    }

    /// The store of a streaming stage: in `backend` under namespace `ns`
    /// when that is RocksDB, else in memory.
    pub fn for_stage(
        families: &[TimerFamily],
        components: &Components,
        backend: &Arc<dyn StateBackend>,
        ns: Namespace,
    ) -> Result<Self, EngineError> {
        let prefix = keys::timers_prefix(ns);
        if backend.kind() == BackendKind::Rocksdb {
            let table = Table::Backend {
                backend: backend.clone(),
                prefix,
            };
            Self::with_table(families, components, table, None)
        } else {
            let table = Table::Heap(BTreeMap::new());
            Self::with_table(families, components, table, Some((backend.clone(), prefix)))
        }
    }

    fn with_table(
        families: &[TimerFamily],
        components: &Components,
        table: Table,
        restored_from: Option<(Arc<dyn StateBackend>, Vec<u8>)>,
    ) -> Result<Self, EngineError> {
        Ok(Self {
            formats: families
                .iter()
                .map(|f| TimerFormat::new(components, &f.coder_id))
                .collect::<Result<_, _>>()?,
            domains: families.iter().map(|f| f.domain).collect(),
            names: families
                .iter()
                .map(|f| {
                    let transform = components
                        .transforms
                        .get(&f.transform_id)
                        .map_or(f.transform_id.as_str(), |t| t.unique_name.as_str());
                    format!("{transform}/{}", f.family_id)
                })
                .collect(),
            table,
            count: 0,
            queue_floor: [
                AtomicI64::new(MIN_TIMESTAMP_MILLIS),
                AtomicI64::new(MIN_TIMESTAMP_MILLIS),
            ],
            hold_floor: AtomicI64::new(MIN_TIMESTAMP_MILLIS),
            restored_from,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Event-time timers of a key fire before its processing-time ones.
    fn rank(&self, family: usize) -> u8 {
        u8::from(self.domains[family] == TimeDomain::ProcessingTime)
    }

    fn queue_key(&self, family: usize, fire: i64, tail: &[u8]) -> Vec<u8> {
        keyed(QUEUE, &[&[self.rank(family)], &sortable(fire), tail])
    }

    /// Ops removing the timer `tail` whose identity entry holds `old`.
    fn removal(&self, family: usize, tail: &[u8], old: &Setting, ops: &mut Ops) {
        ops.push((keyed(IDENTITY, &[tail]), None));
        ops.push((self.queue_key(family, old.fire, tail), None));
        ops.push((keyed(HOLDS, &[&sortable(old.hold), tail]), None));
    }

    /// Queues the removal of the timer `tail` if it is pending; returns
    /// its setting.
    fn take(
        &mut self,
        family: usize,
        tail: &[u8],
        ops: &mut Ops,
    ) -> Result<Option<Setting>, StateError> {
        let Some(raw) = self.table.get(&keyed(IDENTITY, &[tail]))? else {
            return Ok(None);
        };
        let old = Setting::decode(&raw)?;
        self.removal(family, tail, &old, ops);
        self.count -= 1;
        Ok(Some(old))
    }

    fn insertion(&self, family: usize, tail: &[u8], new: &Setting, ops: &mut Ops) {
        ops.push((keyed(IDENTITY, &[tail]), Some(new.encode())));
        ops.push((self.queue_key(family, new.fire, tail), Some(Bytes::new())));
        ops.push((
            keyed(HOLDS, &[&sortable(new.hold), tail]),
            Some(Bytes::new()),
        ));
        self.queue_floor[self.rank(family) as usize].fetch_min(new.fire, Ordering::Relaxed);
        self.hold_floor.fetch_min(new.hold, Ordering::Relaxed);
    }

    /// Applies the sets and clears a bundle sent for `family`, in order.
    pub fn apply(&mut self, family: usize, chunks: &[Bytes]) -> Result<(), EngineError> {
        // The last setting of each timer wins; one write for them all.
        let mut latest: HashMap<Vec<u8>, Option<Setting>> = HashMap::new();
        let format = &self.formats[family];
        for chunk in chunks {
            let mut pos = 0;
            while pos < chunk.len() {
                let t = format.parse(chunk, pos)?;
                pos = t.range.end;
                let setting = t.fire.map(|(fire, hold)| Setting {
                    fire,
                    hold,
                    encoded: chunk.slice(t.range),
                });
                latest.insert(
                    tail(family, &chunk[t.key], &chunk[t.tag_and_windows]),
                    setting,
                );
            }
        }
        let mut ops = Ops::new();
        for (tail, new) in latest {
            self.take(family, &tail, &mut ops)?;
            if let Some(new) = new {
                self.insertion(family, &tail, &new, &mut ops);
                self.count += 1;
            }
        }
        Ok(self.table.write(ops)?)
    }

    /// Removes and returns the timers to fire next: for every key, those at
    /// its earliest pending timestamp, event time before processing time.
    /// Firing them may set new timers, which the next call sees, so a timer
    /// set for an earlier time than one still pending fires first.
    #[cfg(test)]
    pub fn next_due(&mut self) -> Vec<DueTimer> {
        self.next_due_until(i64::MAX, i64::MAX)
            .expect("timers readable")
    }

    /// [`TimerStore::next_due`] among the timers time has reached: event-time
    /// timers the input watermark has passed, processing-time timers at or
    /// before `processing_time`.  At most [`DUE_BATCH`] at a time: while
    /// event-time timers are left over, processing-time ones wait (a key's
    /// event-time timers fire before its processing-time ones).
    pub fn next_due_until(
        &mut self,
        watermark: i64,
        processing_time: i64,
    ) -> Result<Vec<DueTimer>, EngineError> {
        // Per key: (rank, timestamp) of the timers chosen for it.
        let mut chosen: HashMap<Vec<u8>, (u8, i64)> = HashMap::new();
        let mut taken: Vec<Vec<u8>> = Vec::new();
        for rank in 0..2u8 {
            let reached = |fire: i64| match rank {
                0 => fire < watermark || watermark == i64::MAX,
                _ => fire <= processing_time,
            };
            let floor = &self.queue_floor[rank as usize];
            let within = [QUEUE, rank];
            let start = keyed(QUEUE, &[&[rank], &sortable(floor.load(Ordering::Relaxed))]);
            let mut first = true;
            let mut full = false;
            self.table.scan(&within, &start, &mut |k, _| {
                let fire = unsortable(&k[2..10]);
                if first {
                    floor.store(fire, Ordering::Relaxed);
                    first = false;
                }
                if !reached(fire) {
                    return false;
                }
                let tail = &k[10..];
                let Some((_, key, _)) = parse_tail(tail) else {
                    return true;
                };
                let mine = chosen.entry(key.to_vec()).or_insert((rank, fire));
                if *mine == (rank, fire) {
                    taken.push(tail.to_vec());
                    full = taken.len() >= DUE_BATCH;
                }
                !full
            })?;
            if first {
                // Nothing of this rank is pending.
                floor.store(i64::MAX, Ordering::Relaxed);
            }
            if full {
                break;
            }
        }
        let mut ops = Ops::new();
        let mut out = Vec::with_capacity(taken.len());
        for tail in taken {
            let Some((family, key, _)) = parse_tail(&tail) else {
                continue;
            };
            let Some(setting) = self.take(family, &tail, &mut ops)? else {
                continue;
            };
            out.push(DueTimer {
                family,
                key: Bytes::copy_from_slice(key),
                encoded: setting.encoded,
            });
        }
        self.table.write(ops)?;
        // Deterministic delivery order within a bundle.
        out.sort_by(|a, b| (a.family, &a.encoded).cmp(&(b.family, &b.encoded)));
        Ok(out)
    }

    /// The first key at or after `floor` among the keys starting with
    /// `within` (which then becomes the floor); `None` when there is none.
    fn first_from(&self, within: &[u8], floor: &AtomicI64) -> Result<Option<i64>, StateError> {
        let mut start = within.to_vec();
        start.extend_from_slice(&sortable(floor.load(Ordering::Relaxed)));
        let mut found = None;
        self.table.scan(within, &start, &mut |k, _| {
            found = Some(unsortable(&k[within.len()..]));
            false
        })?;
        floor.store(found.unwrap_or(i64::MAX), Ordering::Relaxed);
        Ok(found)
    }

    /// When the earliest pending processing-time timer is due.
    pub fn next_processing_time(&self) -> Result<Option<i64>, EngineError> {
        Ok(self.first_from(&[QUEUE, 1], &self.queue_floor[1])?)
    }

    /// The earliest output timestamp a pending timer holds (streaming: the
    /// stage's output watermark may not pass it).
    pub fn min_hold(&self) -> Result<Option<i64>, EngineError> {
        if self.count == 0 {
            return Ok(None);
        }
        Ok(self.first_from(&[HOLDS], &self.hold_floor)?)
    }

    /// Drops the pending processing-time timers all of whose windows are
    /// `expired` (given each window's encoding); returns how many.  A
    /// streaming job runs forever, so a processing-time timer set in a
    /// window that has since expired must not stay (Beam drops such timers
    /// rather than fire them).  Event-time timers need no collecting: the
    /// watermark that expires their window fires them.
    pub fn drop_expired(&mut self, expired: impl Fn(&[u8]) -> bool) -> Result<usize, EngineError> {
        let mut gone: Vec<Vec<u8>> = Vec::new();
        let formats = &self.formats;
        let floor = self.queue_floor[1].load(Ordering::Relaxed);
        let start = keyed(QUEUE, &[&[1], &sortable(floor)]);
        self.table.scan(&[QUEUE, 1], &start, &mut |k, _| {
            let tail = &k[10..];
            if let Some((family, _, tag_and_windows)) = parse_tail(tail) {
                // Windows we cannot take apart are never called expired.
                if let Ok(windows) = formats[family].windows(tag_and_windows) {
                    if !windows.is_empty() && windows.iter().all(|w| expired(w)) {
                        gone.push(tail.to_vec());
                    }
                }
            }
            true
        })?;
        let mut ops = Ops::new();
        let n = gone.len();
        for tail in gone {
            let (family, _, _) = parse_tail(&tail).expect("parsed above");
            self.take(family, &tail, &mut ops)?;
        }
        self.table.write(ops)?;
        Ok(n)
    }

    /// Writes what a checkpoint needs beyond the backend's own snapshot:
    /// the count and family names, and the entries of an in-memory table.
    pub fn save(&self, w: &mut Writer) {
        w.len(self.count).len(self.names.len());
        for name in &self.names {
            w.bytes(name.as_bytes());
        }
        match &self.table {
            Table::Heap(map) => {
                w.len(map.len());
                for (k, v) in map {
                    w.bytes(k).bytes(v);
                }
            }
            Table::Backend { .. } => {
                w.len(0);
            }
        }
    }

    /// Reads back what [`TimerStore::save`] wrote, into a store made for
    /// the same stage (its families may have changed since: they are
    /// matched by name).
    pub fn load(&mut self, r: &mut Reader) -> Result<(), StateError> {
        self.count = r.len()?;
        let saved: Vec<String> = (0..r.len()?)
            .map(|_| Ok(String::from_utf8_lossy(&r.bytes()?).into_owned()))
            .collect::<Result<_, StateError>>()?;
        let mut ops = Ops::new();
        for _ in 0..r.len()? {
            ops.push((r.bytes()?.to_vec(), Some(r.bytes()?)));
        }
        // A RocksDB snapshot restored into the memory backend brought its
        // timers along as backend entries: they move into the heap.
        if let (Table::Heap(_), Some((backend, prefix))) = (&self.table, &self.restored_from) {
            backend.scan_prefix(prefix, &mut |k, v| {
                ops.push((k[prefix.len()..].to_vec(), Some(v.clone())));
                true
            })?;
            backend.delete_prefix(prefix)?;
        }
        self.table.write(ops)?;
        if saved != self.names {
            self.renumber(&saved)?;
        }
        Ok(())
    }

    /// Moves timers saved under the family numbers of `saved` to this
    /// pipeline's numbers for the same names.
    fn renumber(&mut self, saved: &[String]) -> Result<(), StateError> {
        let mut entries: Vec<(Vec<u8>, Bytes)> = Vec::new();
        self.table.scan(&[IDENTITY], &[IDENTITY], &mut |k, v| {
            entries.push((k[1..].to_vec(), v.clone()));
            true
        })?;
        let mut removals = Ops::new();
        let mut insertions = Ops::new();
        for (old_tail, raw) in entries {
            let (old, key, tag_and_windows) =
                parse_tail(&old_tail).ok_or_else(|| StateError::Decode {
                    entry: "timer".into(),
                    reason: "undecodable key".into(),
                })?;
            let name = saved.get(old).map_or("?", String::as_str);
            let Some(new) = self.names.iter().position(|n| n == name) else {
                return Err(StateError::Incompatible {
                    path: Default::default(),
                    reason: format!(
                        "timers of family '{name}' are pending, and this pipeline has no such timer family (families here: {})",
                        self.names.join(", ")
                    ),
                });
            };
            let setting = Setting::decode(&raw)?;
            // The same family, so the same domain (rank) under either number.
            self.removal(new, &old_tail, &setting, &mut removals);
            let new_tail = tail(new, key, tag_and_windows);
            self.insertion(new, &new_tail, &setting, &mut insertions);
        }
        removals.extend(insertions);
        self.table.write(removals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrobeam_coders::{write_timestamp, PaneInfo};
    use ferrobeam_proto::pipeline::v1::{Coder as CoderProto, FunctionSpec};

    fn components() -> Components {
        let coder = |urn: &str, comps: &[&str]| CoderProto {
            spec: Some(FunctionSpec {
                urn: urn.into(),
                payload: Default::default(),
            }),
            component_coder_ids: comps.iter().map(|s| s.to_string()).collect(),
        };
        let mut c = Components::default();
        c.coders
            .insert("key".into(), coder("beam:coder:string_utf8:v1", &[]));
        c.coders
            .insert("gw".into(), coder("beam:coder:global_window:v1", &[]));
        c.coders
            .insert("timer".into(), coder("beam:coder:timer:v1", &["key", "gw"]));
        c
    }

    fn timer(key: &str, tag: &str, fire: Option<i64>) -> Bytes {
        let mut out = Vec::new();
        for s in [key, tag] {
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&1i32.to_be_bytes()); // one global window
        match fire {
            None => out.push(1),
            Some(ts) => {
                out.push(0);
                write_timestamp(&mut out, ts);
                write_timestamp(&mut out, ts);
                PaneInfo::NO_FIRING.encode(&mut out);
            }
        }
        Bytes::from(out)
    }

    fn family(domain: TimeDomain) -> TimerFamily {
        named(domain, "f")
    }

    fn named(domain: TimeDomain, id: &str) -> TimerFamily {
        TimerFamily {
            transform_id: "t".into(),
            family_id: id.into(),
            coder_id: "timer".into(),
            domain,
        }
    }

    /// The same store twice: in memory, and in a RocksDB backend.
    fn stores(families: &[TimerFamily]) -> Vec<(TimerStore, tempfile::TempDir)> {
        let heap = TimerStore::new(families, &components()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let backend =
            ferrobeam_state::open(BackendKind::Rocksdb, &dir.path().join("db"), None).unwrap();
        let rocks = TimerStore::for_stage(families, &components(), &backend, 3).unwrap();
        vec![(heap, tempfile::tempdir().unwrap()), (rocks, dir)]
    }

    #[test]
    fn later_sets_replace_earlier_and_clears_remove() {
        for (mut store, _dir) in stores(&[family(TimeDomain::EventTime)]) {
            let mut chunk = Vec::new();
            for t in [
                timer("a", "", Some(10)),
                timer("a", "", Some(20)),
                timer("b", "", Some(5)),
                timer("b", "", None),
            ] {
                chunk.extend_from_slice(&t);
            }
            store.apply(0, &[Bytes::from(chunk)]).unwrap();
            let due = store.next_due();
            assert_eq!(due.len(), 1);
            assert_eq!(due[0].encoded, timer("a", "", Some(20)));
            assert!(store.is_empty());
        }
    }

    #[test]
    fn fires_each_keys_earliest_first() {
        let families = [
            family(TimeDomain::EventTime),
            family(TimeDomain::ProcessingTime),
        ];
        for (mut store, _dir) in stores(&families) {
            store
                .apply(
                    0,
                    &[
                        timer("a", "x", Some(30)),
                        timer("a", "y", Some(10)),
                        timer("b", "", Some(50)),
                    ],
                )
                .unwrap();
            store.apply(1, &[timer("a", "", Some(1))]).unwrap();
            let first: Vec<Bytes> = store.next_due().into_iter().map(|d| d.encoded).collect();
            assert_eq!(first.len(), 2);
            assert!(
                first.contains(&timer("a", "y", Some(10)))
                    && first.contains(&timer("b", "", Some(50)))
            );
            assert_eq!(store.next_due()[0].encoded, timer("a", "x", Some(30)));
            // Processing-time timers fire after the key's event-time timers.
            let last = store.next_due();
            assert_eq!((last.len(), last[0].family), (1, 1));
            assert!(store.next_due().is_empty());
        }
    }

    #[test]
    fn only_timers_time_has_reached_fire() {
        let families = [
            family(TimeDomain::EventTime),
            family(TimeDomain::ProcessingTime),
        ];
        for (mut store, _dir) in stores(&families) {
            store
                .apply(0, &[timer("a", "", Some(10)), timer("b", "", Some(20))])
                .unwrap();
            store.apply(1, &[timer("c", "", Some(100))]).unwrap();
            assert_eq!(store.min_hold().unwrap(), Some(10));
            // Event time: the watermark must pass the timestamp.
            assert!(store.next_due_until(10, 0).unwrap().is_empty());
            let due = store.next_due_until(11, 99).unwrap();
            assert_eq!(due.len(), 1);
            assert_eq!(due[0].encoded, timer("a", "", Some(10)));
            assert_eq!(store.min_hold().unwrap(), Some(20));
            // Processing time: due at its timestamp.
            let due = store.next_due_until(11, 100).unwrap();
            assert_eq!((due.len(), due[0].family), (1, 1));
            assert_eq!(store.next_due_until(i64::MAX, 0).unwrap().len(), 1);
            assert!(store.is_empty());
        }
    }

    #[test]
    fn timers_of_expired_windows_are_dropped() {
        for (mut store, _dir) in stores(&[family(TimeDomain::ProcessingTime)]) {
            store
                .apply(0, &[timer("a", "", Some(10)), timer("b", "tag", Some(20))])
                .unwrap();
            // Each timer has one global window, which encodes as nothing.
            let dropped = store
                .drop_expired(|w| {
                    assert!(w.is_empty());
                    true
                })
                .unwrap();
            assert_eq!(dropped, 2);
            assert!(store.is_empty());
            store.apply(0, &[timer("a", "", Some(10))]).unwrap();
            assert_eq!(store.drop_expired(|_| false).unwrap(), 0);
            assert_eq!(store.next_due_until(0, 10).unwrap().len(), 1);
        }
    }

    #[test]
    fn a_watermark_jump_fires_in_batches_event_time_first() {
        let families = [
            family(TimeDomain::EventTime),
            family(TimeDomain::ProcessingTime),
        ];
        for (mut store, _dir) in stores(&families) {
            let n = DUE_BATCH + DUE_BATCH / 2;
            let set: Vec<Bytes> = (0..n)
                .map(|i| timer(&format!("k{i}"), "", Some(5)))
                .collect();
            store.apply(0, &set).unwrap();
            store.apply(1, &[timer("k0", "", Some(1))]).unwrap();
            let first = store.next_due_until(i64::MAX, i64::MAX).unwrap();
            assert_eq!(first.len(), DUE_BATCH);
            assert!(first.iter().all(|d| d.family == 0));
            // The rest, and k0's processing-time timer (its event-time one
            // has fired).
            let second = store.next_due_until(i64::MAX, i64::MAX).unwrap();
            assert_eq!(second.len(), n - DUE_BATCH + 1);
            assert_eq!(second.iter().filter(|d| d.family == 1).count(), 1);
            assert!(store.is_empty());
            assert_eq!(store.min_hold().unwrap(), None);
        }
    }

    #[test]
    fn timers_restore_into_either_table_and_follow_their_family_names() {
        let old = [
            named(TimeDomain::EventTime, "a"),
            named(TimeDomain::ProcessingTime, "b"),
        ];
        // The new version declares the families the other way round.
        let new = [old[1].clone(), old[0].clone()];
        for (mut store, _dir) in stores(&old) {
            store.apply(0, &[timer("x", "", Some(7))]).unwrap();
            store.apply(1, &[timer("y", "", Some(9))]).unwrap();
            let mut w = Writer::new();
            store.save(&mut w);
            let saved = w.finish();
            // A backend restored from a snapshot holds what the old store's
            // backend held (nothing for a heap store).
            let restored_backend = || -> Arc<dyn StateBackend> {
                let from = Arc::new(ferrobeam_state::memory::MemoryBackend::default());
                if let Table::Backend { backend, .. } = &store.table {
                    let mut b = WriteBatch::default();
                    backend
                        .scan_prefix(&[], &mut |k, v| {
                            b.put(k.to_vec(), v.clone());
                            true
                        })
                        .unwrap();
                    from.write(b).unwrap();
                }
                from
            };
            let from = restored_backend();
            for (mut restored, _dir2) in [
                (
                    TimerStore::for_stage(&new, &components(), &from, 3).unwrap(),
                    None,
                ),
                {
                    let dir = tempfile::tempdir().unwrap();
                    let rocks =
                        ferrobeam_state::open(BackendKind::Rocksdb, &dir.path().join("db"), None)
                            .unwrap();
                    let mut b = WriteBatch::default();
                    from.scan_prefix(&[], &mut |k, v| {
                        b.put(k.to_vec(), v.clone());
                        true
                    })
                    .unwrap();
                    rocks.write(b).unwrap();
                    (
                        TimerStore::for_stage(&new, &components(), &rocks, 3).unwrap(),
                        Some(dir),
                    )
                },
            ] {
                restored.load(&mut Reader::new(&saved, "timers")).unwrap();
                assert_eq!(restored.min_hold().unwrap(), Some(7));
                let due = restored.next_due_until(8, 0).unwrap();
                assert_eq!(due.len(), 1);
                assert_eq!(
                    (due[0].family, &due[0].encoded),
                    (1, &timer("x", "", Some(7)))
                );
                let due = restored.next_due_until(8, 9).unwrap();
                assert_eq!(
                    (due[0].family, &due[0].encoded),
                    (0, &timer("y", "", Some(9)))
                );
                assert!(restored.is_empty());
            }
            // A version without family "b" cannot take its pending timer.
            let mut without =
                TimerStore::for_stage(&[old[0].clone()], &components(), &restored_backend(), 3)
                    .unwrap();
            let err = without
                .load(&mut Reader::new(&saved, "timers"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("'t/b'"), "{err}");
        }
    }
}
