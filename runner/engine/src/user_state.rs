//! User state: bags and ordered lists, one cell per (transform, state id,
//! key, window), and the bundle-local writes that become visible only when
//! the bundle commits.
//!
//! The Python SDK keeps bag, set, combining-value and read-modify-write
//! state in bags (`bag_user_state` keys) and `OrderedListState` in
//! `ordered_list_user_state` keys whose values are `(sort key varint,
//! length-prefixed value)` pairs.  The runner never decodes bag values; it
//! only splits ordered-list appends into elements to sort them.
//!
//! Committed cells live in the job's [`StateBackend`] (memory or RocksDB),
//! one entry per cell, under the owning transform's namespace (see
//! `ferrobeam_state::keys`), so a checkpoint of the backend is a
//! checkpoint of all user state.
//!
//! Writes are not applied to the backend directly: a bundle copies a cell
//! on its first write and changes its copy, so a bundle whose worker dies
//! leaves no half-done writes for its retry to see.  Keyed stages give
//! every key to exactly one bundle at a time, so two bundles never write
//! the same cell concurrently.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use ferrobeam_coders::varint::{read_len, read_varint_i64};
use ferrobeam_proto::fn_api::state_key::{BagUserState, OrderedListUserState};
use ferrobeam_state::codec::{Reader, Writer};
use ferrobeam_state::keys::{self, Namespace};
use ferrobeam_state::{StateBackend, WriteBatch};
use parking_lot::Mutex;

use crate::durable::Namespaces;
use crate::paging::{parse_token_parts, take_page};
use crate::partition::CacheTokens;
use crate::EngineError;

const BAG: u8 = keys::BAG;
const ORDERED_LIST: u8 = keys::ORDERED_LIST;

/// Appended chunks of a bag, as the SDK sent them (each ends on an element
/// boundary), so reads hand back the very same `Bytes`.
#[derive(Clone, Default, Debug)]
struct Bag {
    chunks: Vec<Bytes>,
    /// Bumped by every clear, so a continuation token from before a clear
    /// is refused instead of silently reading other data.
    generation: u64,
}

/// Elements by sort key; equal sort keys keep their insertion order.
#[derive(Clone, Default, Debug)]
struct OrderedList {
    entries: BTreeMap<i64, Vec<Bytes>>,
    generation: u64,
}

#[derive(Clone, Debug)]
enum Cell {
    Bag(Bag),
    OrderedList(OrderedList),
}

impl Cell {
    fn is_empty(&self) -> bool {
        match self {
            Cell::Bag(b) => b.chunks.is_empty(),
            Cell::OrderedList(l) => l.entries.is_empty(),
        }
    }

    /// The backend's form: generation, then the chunks (bag) or each sort
    /// key with its elements (ordered list).
    fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        match self {
            Cell::Bag(b) => {
                w.varint(b.generation).len(b.chunks.len());
                for c in &b.chunks {
                    w.bytes(c);
                }
            }
            Cell::OrderedList(l) => {
                w.varint(l.generation).len(l.entries.len());
                for (sort_key, values) in &l.entries {
                    w.i64(*sort_key).len(values.len());
                    for v in values {
                        w.bytes(v);
                    }
                }
            }
        }
        w.finish()
    }

    fn decode(kind: u8, data: &Bytes) -> Result<Cell, String> {
        let mut r = Reader::new(data, "user state cell");
        let cell = (|| {
            let generation = r.varint()?;
            let n = r.len()?;
            Ok::<_, ferrobeam_state::StateError>(if kind == BAG {
                let chunks = (0..n).map(|_| r.bytes()).collect::<Result<_, _>>()?;
                Cell::Bag(Bag { chunks, generation })
            } else {
                let mut entries = BTreeMap::new();
                for _ in 0..n {
                    let sort_key = r.i64()?;
                    let m = r.len()?;
                    let values = (0..m).map(|_| r.bytes()).collect::<Result<_, _>>()?;
                    entries.insert(sort_key, values);
                }
                Cell::OrderedList(OrderedList {
                    entries,
                    generation,
                })
            })
        })()
        .map_err(|e| e.to_string())?;
        Ok(cell)
    }
}

/// The committed user state of one job, and the tokens under which its
/// workers may cache it.
pub struct UserState {
    backend: Arc<dyn StateBackend>,
    namespaces: Arc<Namespaces>,
    /// Transform id → namespace, for the pipeline's transforms (ids the
    /// SDK sends in state keys); others are looked up in `namespaces`.
    by_transform: HashMap<String, Namespace>,
    cache_tokens: CacheTokens,
    /// Transforms that have ever committed a non-empty cell.  Every other
    /// transform's state is certainly empty, which lets a worker answer its
    /// reads without asking (see [`UserState::transforms_written`]).
    written: Mutex<HashSet<Vec<u8>>>,
}

impl Default for UserState {
    /// In memory, namespaces handed out by transform id (tests, batch
    /// pipelines without checkpoints).
    fn default() -> Self {
        Self::new(
            Arc::new(ferrobeam_state::memory::MemoryBackend::default()),
            Arc::default(),
            HashMap::new(),
        )
        .expect("an empty memory backend")
    }
}

impl UserState {
    /// User state kept in `backend`; `transforms` maps each transform id of
    /// the pipeline to its unique name (whose namespace holds its state).
    /// A restored backend already holds cells: the transforms owning them
    /// count as written.
    pub fn new(
        backend: Arc<dyn StateBackend>,
        namespaces: Arc<Namespaces>,
        transforms: HashMap<String, String>,
    ) -> Result<Self, EngineError> {
        let by_transform: HashMap<String, Namespace> = transforms
            .into_iter()
            .map(|(id, name)| {
                let ns = namespaces.of(&name);
                (id, ns)
            })
            .collect();
        let mut written = HashSet::new();
        for (id, ns) in &by_transform {
            let mut any = false;
            backend.scan_prefix(&keys::user_state_prefix(*ns), &mut |_, _| {
                any = true;
                false
            })?;
            if any {
                written.insert(id.as_bytes().to_vec());
            }
        }
        Ok(Self {
            backend,
            namespaces,
            by_transform,
            cache_tokens: CacheTokens::default(),
            written: Mutex::new(written),
        })
    }

    pub fn backend(&self) -> &Arc<dyn StateBackend> {
        &self.backend
    }

    pub fn cache_tokens(&self) -> &CacheTokens {
        &self.cache_tokens
    }

    fn namespace(&self, transform_id: &str) -> Namespace {
        match self.by_transform.get(transform_id) {
            Some(ns) => *ns,
            None => self.namespaces.of(transform_id),
        }
    }

    fn cell_key(
        &self,
        kind: u8,
        transform_id: &str,
        state_id: &str,
        key: &[u8],
        window: &[u8],
    ) -> Vec<u8> {
        keys::user_state_key(
            self.namespace(transform_id),
            kind,
            state_id.as_bytes(),
            window,
            key,
        )
    }

    fn committed(&self, kind: u8, key: &[u8]) -> Result<Option<Cell>, String> {
        match self.backend.get(key).map_err(|e| e.to_string())? {
            Some(data) => Cell::decode(kind, &data).map(Some),
            None => Ok(None),
        }
    }

    /// The transforms (ids, as bytes) that have ever committed user state.
    /// A bundle that owns its keys may treat every other transform's state
    /// as empty until it writes to it itself: no other bundle can write its
    /// keys while it runs.
    pub fn transforms_written(&self) -> Vec<Vec<u8>> {
        self.written.lock().iter().cloned().collect()
    }

    /// Drops every cell of `transform_ids` whose encoded window `expired`
    /// says has expired (streaming: the watermark passed the window's end
    /// plus the allowed lateness, so no element or timer can reach it
    /// again).  Returns how many cells went.
    pub fn collect_expired<'a>(
        &self,
        transform_ids: impl IntoIterator<Item = &'a str>,
        mut expired: impl FnMut(&[u8]) -> bool,
    ) -> Result<usize, EngineError> {
        let mut batch = WriteBatch::default();
        for id in transform_ids {
            // Only the pipeline's own transforms own state (a stage's
            // descriptor also lists its data-plane reads and writes).
            let Some(&ns) = self.by_transform.get(id) else {
                continue;
            };
            let prefix = keys::user_state_prefix(ns);
            self.backend.scan_prefix(&prefix, &mut |k, _| {
                if keys::parse_user_state_key(k).is_some_and(|p| expired(p.window)) {
                    batch.delete(k.to_vec());
                }
                true
            })?;
        }
        let dropped = batch.len();
        self.backend.write(batch)?;
        Ok(dropped)
    }

    /// Number of non-empty cells (for tests and debugging).
    pub fn cells(&self) -> usize {
        let mut n = 0;
        let _ = self.backend.scan_prefix(&[keys::USER_STATE], &mut |_, _| {
            n += 1;
            true
        });
        n
    }
}

/// Which cell a request addresses: its backend key, kind and owner.
struct CellRef<'a> {
    key: Vec<u8>,
    kind: u8,
    transform_id: &'a str,
}

impl<'a> CellRef<'a> {
    fn bag(state: &UserState, k: &'a BagUserState) -> Self {
        CellRef {
            key: state.cell_key(BAG, &k.transform_id, &k.user_state_id, &k.key, &k.window),
            kind: BAG,
            transform_id: &k.transform_id,
        }
    }

    fn ordered_list(state: &UserState, k: &'a OrderedListUserState) -> Self {
        CellRef {
            key: state.cell_key(
                ORDERED_LIST,
                &k.transform_id,
                &k.user_state_id,
                &k.key,
                &k.window,
            ),
            kind: ORDERED_LIST,
            transform_id: &k.transform_id,
        }
    }
}

/// One bundle's view of user state: its own writes over the committed state.
#[derive(Default)]
pub struct BundleWrites {
    /// Backend key → (owning transform id, this bundle's copy of the cell).
    cells: Mutex<HashMap<Vec<u8>, (String, Cell)>>,
}

impl BundleWrites {
    /// Runs `f` on the cell as this bundle sees it (None: never written).
    fn read<R>(
        &self,
        state: &UserState,
        cell: CellRef,
        f: impl FnOnce(Option<&Cell>) -> Result<R, String>,
    ) -> Result<R, String> {
        if let Some((_, c)) = self.cells.lock().get(&cell.key) {
            return f(Some(c));
        }
        let committed = state.committed(cell.kind, &cell.key)?;
        f(committed.as_ref())
    }

    /// Runs `f` on this bundle's copy of the cell, made on first write.
    fn write<R>(
        &self,
        state: &UserState,
        cell: CellRef,
        empty: fn() -> Cell,
        f: impl FnOnce(&mut Cell) -> Result<R, String>,
    ) -> Result<R, String> {
        let mut cells = self.cells.lock();
        let entry = match cells.entry(cell.key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let copy = state.committed(cell.kind, e.key())?.unwrap_or_else(empty);
                e.insert((cell.transform_id.to_owned(), copy))
            }
        };
        f(&mut entry.1)
    }

    /// Publishes this bundle's writes to the job's state, in one batch.
    pub fn commit(&self, state: &UserState) -> Result<(), EngineError> {
        let mut transforms: HashSet<Vec<u8>> = HashSet::new();
        let mut batch = WriteBatch::default();
        for (key, (transform_id, cell)) in self.cells.lock().drain() {
            if cell.is_empty() {
                batch.delete(key);
            } else {
                if !transforms.contains(transform_id.as_bytes()) {
                    transforms.insert(transform_id.into_bytes());
                }
                batch.put(key, cell.encode());
            }
        }
        if !batch.is_empty() {
            state.backend.write(batch)?;
        }
        if !transforms.is_empty() {
            state.written.lock().extend(transforms);
        }
        Ok(())
    }

    /// A page of a bag and the token for the next one.
    pub fn bag_get(
        &self,
        state: &UserState,
        key: &BagUserState,
        token: &[u8],
    ) -> Result<(Bytes, Bytes), String> {
        self.read(state, CellRef::bag(state, key), |cell| {
            let bag = match cell {
                None => return Ok((Bytes::new(), Bytes::new())),
                Some(Cell::Bag(b)) => b,
                Some(Cell::OrderedList(_)) => return Err(kind_mismatch(&key.user_state_id)),
            };
            let start = if token.is_empty() {
                0
            } else {
                let [generation, index] = parse_token_parts::<2>(token)?;
                if generation != bag.generation as i128 {
                    return Err(stale_token(&key.user_state_id));
                }
                usize::try_from(index).map_err(|_| "bad continuation token".to_owned())?
            };
            let chunks = bag
                .chunks
                .get(start..)
                .ok_or("continuation token past the end of the bag")?;
            let (page, taken) = take_page(chunks);
            let next = start + taken;
            let token = if next < bag.chunks.len() {
                format!("{}:{next}", bag.generation).into()
            } else {
                Bytes::new()
            };
            Ok((page, token))
        })
    }

    pub fn bag_append(
        &self,
        state: &UserState,
        key: &BagUserState,
        data: Bytes,
    ) -> Result<(), String> {
        if data.is_empty() {
            return Ok(());
        }
        self.write(
            state,
            CellRef::bag(state, key),
            || Cell::Bag(Bag::default()),
            |cell| match cell {
                Cell::Bag(b) => {
                    b.chunks.push(data);
                    Ok(())
                }
                Cell::OrderedList(_) => Err(kind_mismatch(&key.user_state_id)),
            },
        )
    }

    pub fn bag_clear(&self, state: &UserState, key: &BagUserState) -> Result<(), String> {
        self.write(
            state,
            CellRef::bag(state, key),
            || Cell::Bag(Bag::default()),
            |cell| match cell {
                Cell::Bag(b) => {
                    b.chunks.clear();
                    b.generation += 1;
                    Ok(())
                }
                Cell::OrderedList(_) => Err(kind_mismatch(&key.user_state_id)),
            },
        )
    }

    /// A page of the elements whose sort keys lie in the key's range
    /// (`[start, end)`; no range: all), in sort-key order.
    pub fn ordered_list_get(
        &self,
        state: &UserState,
        key: &OrderedListUserState,
        token: &[u8],
    ) -> Result<(Bytes, Bytes), String> {
        let (start, end) = range(key);
        self.read(state, CellRef::ordered_list(state, key), |cell| {
            let list = match cell {
                None => return Ok((Bytes::new(), Bytes::new())),
                Some(Cell::OrderedList(l)) => l,
                Some(Cell::Bag(_)) => return Err(kind_mismatch(&key.user_state_id)),
            };
            if start >= end {
                return Ok((Bytes::new(), Bytes::new()));
            }
            // Resume at (sort key, index among that sort key's elements).
            let (from, skip) = if token.is_empty() {
                (start, 0)
            } else {
                let [generation, sort_key, index] = parse_token_parts::<3>(token)?;
                if generation != list.generation as i128 {
                    return Err(stale_token(&key.user_state_id));
                }
                let sort_key =
                    i64::try_from(sort_key).map_err(|_| "bad continuation token".to_owned())?;
                (
                    sort_key.max(start),
                    usize::try_from(index).map_err(|_| "bad continuation token".to_owned())?,
                )
            };
            let mut skip = Some(skip);
            let elements = list
                .entries
                .range((Bound::Included(from), Bound::Excluded(end)))
                .flat_map(|(&k, values)| {
                    // Only the first sort key may be partly read already.
                    let s = if k == from {
                        skip.take().unwrap_or(0)
                    } else {
                        0
                    };
                    values
                        .iter()
                        .enumerate()
                        .skip(s)
                        .map(move |(i, v)| (k, i, v))
                });
            let mut positions = Vec::new();
            let (page, taken) = take_page(elements.map(|(k, i, v)| {
                positions.push((k, i));
                v
            }));
            // take_page looks one element past the page when it stops early;
            // that element is where the next page starts.
            let token = match positions.get(taken) {
                Some(&(k, i)) => format!("{}:{k}:{i}", list.generation).into(),
                None => Bytes::new(),
            };
            Ok((page, token))
        })
    }

    /// Appends `(sort key, length-prefixed value)` elements.
    pub fn ordered_list_append(
        &self,
        state: &UserState,
        key: &OrderedListUserState,
        data: Bytes,
    ) -> Result<(), String> {
        let elements = split_ordered_elements(&data)?;
        if elements.is_empty() {
            return Ok(());
        }
        self.write(
            state,
            CellRef::ordered_list(state, key),
            || Cell::OrderedList(OrderedList::default()),
            |cell| match cell {
                Cell::OrderedList(l) => {
                    for (sort_key, element) in elements {
                        l.entries.entry(sort_key).or_default().push(element);
                    }
                    Ok(())
                }
                Cell::Bag(_) => Err(kind_mismatch(&key.user_state_id)),
            },
        )
    }

    /// Removes the elements whose sort keys lie in the key's range.
    pub fn ordered_list_clear(
        &self,
        state: &UserState,
        key: &OrderedListUserState,
    ) -> Result<(), String> {
        let (start, end) = range(key);
        self.write(
            state,
            CellRef::ordered_list(state, key),
            || Cell::OrderedList(OrderedList::default()),
            |cell| match cell {
                Cell::OrderedList(l) => {
                    if start < end {
                        let mut tail = l.entries.split_off(&start);
                        let mut after = tail.split_off(&end);
                        l.entries.append(&mut after);
                        if !tail.is_empty() {
                            l.generation += 1;
                        }
                    }
                    Ok(())
                }
                Cell::Bag(_) => Err(kind_mismatch(&key.user_state_id)),
            },
        )
    }
}

/// `[start, end)` of an ordered-list key; appends carry no range.
fn range(key: &OrderedListUserState) -> (i64, i64) {
    key.range
        .as_ref()
        .map_or((i64::MIN, i64::MAX), |r| (r.start, r.end))
}

/// Splits appended data into `(sort key, element)`; the element keeps its
/// encoding (sort key varint, then the length-prefixed value) for reads.
fn split_ordered_elements(data: &Bytes) -> Result<Vec<(i64, Bytes)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let bad = |e: ferrobeam_coders::CoderError| format!("malformed ordered list append: {e}");
        let (sort_key, p) = read_varint_i64(data, pos).map_err(bad)?;
        let (len, p) = read_len(data, p).map_err(bad)?;
        out.push((sort_key, data.slice(pos..p + len)));
        pos = p + len;
    }
    Ok(out)
}

fn kind_mismatch(state_id: &str) -> String {
    format!("state '{state_id}' is used both as a bag and as an ordered list")
}

fn stale_token(state_id: &str) -> String {
    format!("state '{state_id}' was cleared while it was being read; read it again from the start")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(transform: &str, window: &[u8]) -> BagUserState {
        BagUserState {
            transform_id: transform.into(),
            user_state_id: "count".into(),
            window: Bytes::copy_from_slice(window),
            key: Bytes::from_static(b"k"),
        }
    }

    #[test]
    fn expired_windows_lose_their_state_and_only_theirs() {
        let state = UserState::new(
            Arc::new(ferrobeam_state::memory::MemoryBackend::default()),
            Arc::default(),
            [
                ("t".to_owned(), "T".to_owned()),
                ("u".to_owned(), "U".to_owned()),
            ]
            .into(),
        )
        .unwrap();
        let writes = BundleWrites::default();
        for (t, w) in [("t", b"old"), ("t", b"new"), ("u", b"old")] {
            writes
                .bag_append(&state, &key(t, w), Bytes::from_static(b"\x01"))
                .unwrap();
        }
        writes.commit(&state).unwrap();
        assert_eq!(state.cells(), 3);
        let expired = |w: &[u8]| w == b"old";
        assert_eq!(state.collect_expired(["t"], expired).unwrap(), 1);
        assert_eq!(state.cells(), 2);
        // The other transform's cell in the same window stays.
        assert_eq!(state.collect_expired(["t"], expired).unwrap(), 0);
    }
}
