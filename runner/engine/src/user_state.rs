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
//! Writes are not applied to the job's state directly: a bundle copies a
//! cell on its first write and changes its copy, so a bundle whose worker
//! dies leaves no half-done writes for its retry to see.  Keyed stages give
//! every key to exactly one bundle at a time, so two bundles never write
//! the same cell concurrently.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::ops::Bound;

use bytes::Bytes;
use ferrobeam_coders::varint::{read_len, read_varint_i64};
use ferrobeam_proto::fn_api::state_key::{BagUserState, OrderedListUserState};
use parking_lot::Mutex;

use crate::paging::{parse_token_parts, take_page};
use crate::partition::CacheTokens;

/// Independent locks, so workers' state requests rarely wait on each other.
const SHARDS: usize = 16;

/// Identifies one state cell: kind, transform, state id, key and window.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct CellId(Vec<u8>);

const BAG: u8 = b'b';
const ORDERED_LIST: u8 = b'o';

impl CellId {
    fn new(kind: u8, transform: &str, state_id: &str, key: &[u8], window: &[u8]) -> Self {
        let mut out = Vec::with_capacity(
            1 + 16 + transform.len() + state_id.len() + key.len() + window.len(),
        );
        out.push(kind);
        // Length prefixes keep the parts from running into each other.
        for part in [transform.as_bytes(), state_id.as_bytes(), key, window] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        CellId(out)
    }

    pub fn bag(k: &BagUserState) -> Self {
        Self::new(BAG, &k.transform_id, &k.user_state_id, &k.key, &k.window)
    }

    /// The transform id part (see [`CellId::new`]'s layout).
    fn transform(&self) -> &[u8] {
        self.part(0)
    }

    /// The encoded window part.
    fn window(&self) -> &[u8] {
        self.part(3)
    }

    /// Part `n` of transform, state id, key, window.
    fn part(&self, n: usize) -> &[u8] {
        let mut at = 1;
        for i in 0.. {
            let len =
                u32::from_be_bytes(self.0[at..at + 4].try_into().expect("cell id part")) as usize;
            if i == n {
                return &self.0[at + 4..at + 4 + len];
            }
            at += 4 + len;
        }
        unreachable!()
    }

    pub fn ordered_list(k: &OrderedListUserState) -> Self {
        Self::new(
            ORDERED_LIST,
            &k.transform_id,
            &k.user_state_id,
            &k.key,
            &k.window,
        )
    }
}

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
}

/// The committed user state of one job, and the tokens under which its
/// workers may cache it.
pub struct UserState {
    shards: Vec<Mutex<HashMap<CellId, Cell>>>,
    hasher: std::collections::hash_map::RandomState,
    cache_tokens: CacheTokens,
    /// Transforms that have ever committed a non-empty cell.  Every other
    /// transform's state is certainly empty, which lets a worker answer its
    /// reads without asking (see [`UserState::transforms_written`]).
    written: Mutex<HashSet<Vec<u8>>>,
}

impl Default for UserState {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            cache_tokens: CacheTokens::default(),
            written: Mutex::default(),
        }
    }
}

impl UserState {
    pub fn cache_tokens(&self) -> &CacheTokens {
        &self.cache_tokens
    }

    fn shard(&self, id: &CellId) -> &Mutex<HashMap<CellId, Cell>> {
        &self.shards[(self.hasher.hash_one(id) % SHARDS as u64) as usize]
    }

    fn committed(&self, id: &CellId) -> Option<Cell> {
        self.shard(id).lock().get(id).cloned()
    }

    /// The transforms (ids, as bytes) that have ever committed user state.
    /// A bundle that owns its keys may treat every other transform's state
    /// as empty until it writes to it itself: no other bundle can write its
    /// keys while it runs.
    pub fn transforms_written(&self) -> Vec<Vec<u8>> {
        self.written.lock().iter().cloned().collect()
    }

    /// Drops every cell whose (transform id, encoded window) `expired` says
    /// has expired (streaming: the watermark passed the window's end plus
    /// the allowed lateness, so no element or timer can reach it again).
    /// Returns how many cells went.
    pub fn collect_expired(&self, mut expired: impl FnMut(&[u8], &[u8]) -> bool) -> usize {
        let mut dropped = 0;
        for shard in &self.shards {
            shard.lock().retain(|id, _| {
                let keep = !expired(id.transform(), id.window());
                dropped += usize::from(!keep);
                keep
            });
        }
        dropped
    }

    /// Number of non-empty cells (for tests and debugging).
    pub fn cells(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// One bundle's view of user state: its own writes over the committed state.
#[derive(Default)]
pub struct BundleWrites {
    cells: Mutex<HashMap<CellId, Cell>>,
}

impl BundleWrites {
    /// Runs `f` on the cell as this bundle sees it (None: never written).
    fn read<R>(&self, state: &UserState, id: &CellId, f: impl FnOnce(Option<&Cell>) -> R) -> R {
        if let Some(cell) = self.cells.lock().get(id) {
            return f(Some(cell));
        }
        let shard = state.shard(id).lock();
        f(shard.get(id))
    }

    /// Runs `f` on this bundle's copy of the cell, made on first write.
    fn write<R>(
        &self,
        state: &UserState,
        id: CellId,
        empty: fn() -> Cell,
        f: impl FnOnce(&mut Cell) -> R,
    ) -> R {
        let mut cells = self.cells.lock();
        let cell = match cells.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let copy = state.committed(e.key()).unwrap_or_else(empty);
                e.insert(copy)
            }
        };
        f(cell)
    }

    /// Publishes this bundle's writes to the job's state.
    pub fn commit(&self, state: &UserState) {
        let mut transforms: HashSet<Vec<u8>> = HashSet::new();
        for (id, cell) in self.cells.lock().drain() {
            let mut shard = state.shard(&id).lock();
            if cell.is_empty() {
                shard.remove(&id);
            } else {
                if !transforms.contains(id.transform()) {
                    transforms.insert(id.transform().to_vec());
                }
                shard.insert(id, cell);
            }
        }
        if !transforms.is_empty() {
            state.written.lock().extend(transforms);
        }
    }

    /// A page of a bag and the token for the next one.
    pub fn bag_get(
        &self,
        state: &UserState,
        key: &BagUserState,
        token: &[u8],
    ) -> Result<(Bytes, Bytes), String> {
        self.read(state, &CellId::bag(key), |cell| {
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
            CellId::bag(key),
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
            CellId::bag(key),
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
        self.read(state, &CellId::ordered_list(key), |cell| {
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
            CellId::ordered_list(key),
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
            CellId::ordered_list(key),
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
        let state = UserState::default();
        let writes = BundleWrites::default();
        for (t, w) in [("t", b"old"), ("t", b"new"), ("u", b"old")] {
            writes
                .bag_append(&state, &key(t, w), Bytes::from_static(b"\x01"))
                .unwrap();
        }
        writes.commit(&state);
        assert_eq!(state.cells(), 3);
        let expired = |t: &[u8], w: &[u8]| t == b"t" && w == b"old";
        assert_eq!(state.collect_expired(expired), 1);
        assert_eq!(state.cells(), 2);
        // The other transform's cell in the same window stays.
        assert_eq!(state.collect_expired(expired), 0);
    }
}
