//! Answering a bundle's state requests: side inputs and bag user state.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ferrobeam_fnapi::StateHandler;
use ferrobeam_graph::{SideInput, SideInputAccess};
use ferrobeam_proto::fn_api::state_key::Type as Key;
use ferrobeam_proto::fn_api::state_request::Request;
use ferrobeam_proto::fn_api::{
    state_response, StateAppendResponse, StateClearResponse, StateGetResponse, StateRequest,
};
use parking_lot::Mutex;

use crate::wire::WireFormat;
use crate::EngineError;

/// Most bytes returned by one Get; the SDK follows continuation tokens.
const MAX_GET_BYTES: usize = 2 << 20;

/// One side input, materialized per window.
#[derive(Default)]
pub struct SideInputData {
    /// window → concatenated element encodings (iterable access).
    iterable: HashMap<Bytes, Paged>,
    /// window → key → (value count, concatenated value encodings) (multimap access).
    multimap: HashMap<Bytes, HashMap<Bytes, (u32, Paged)>>,
}

impl SideInputData {
    pub fn build(
        spec: &SideInput,
        chunks: &[Bytes],
        format: &WireFormat,
    ) -> Result<Self, EngineError> {
        let mut data = SideInputData::default();
        for chunk in chunks {
            format.for_each(chunk, |e| {
                for w in &e.windows {
                    let window = chunk.slice(w.clone());
                    match spec.access {
                        SideInputAccess::Iterable => data
                            .iterable
                            .entry(window)
                            .or_default()
                            .push(&chunk[e.value.clone()]),
                        SideInputAccess::Multimap => {
                            let key_end = format.key_end(chunk, e.value.start)?;
                            let entry = data
                                .multimap
                                .entry(window)
                                .or_default()
                                .entry(chunk.slice(e.value.start..key_end))
                                .or_default();
                            entry.0 += 1;
                            entry.1.push(&chunk[key_end..e.value.end]);
                        }
                    }
                }
                Ok(())
            })?;
        }
        Ok(data)
    }
}

/// Side inputs of a stage, by (consuming transform id, local name).
pub type SideInputs = HashMap<(String, String), Arc<SideInputData>>;

/// Bag user state of a job: (transform, state id, window, key) → values.
#[derive(Default)]
pub struct UserState {
    bags: Mutex<HashMap<Vec<u8>, Paged>>,
}

pub struct BundleState {
    pub side_inputs: Arc<SideInputs>,
    pub user_state: Arc<UserState>,
}

fn user_key(k: &ferrobeam_proto::fn_api::state_key::BagUserState) -> Vec<u8> {
    let mut out = Vec::new();
    for part in [
        k.transform_id.as_bytes(),
        k.user_state_id.as_bytes(),
        &k.window,
        &k.key,
    ] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Concatenated encoded elements that remember where each element ends,
/// because the SDK decodes every page on its own: pages must end on
/// element boundaries.
#[derive(Default)]
pub struct Paged {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Paged {
    pub fn push(&mut self, element: &[u8]) {
        self.data.extend_from_slice(element);
        self.ends.push(self.data.len());
    }

    /// Serves the page starting at the offset in `token`, at most about
    /// [`MAX_GET_BYTES`] (but always at least one element).
    fn page(&self, token: &[u8]) -> Result<state_response::Response, String> {
        let start = if token.is_empty() {
            0
        } else {
            std::str::from_utf8(token)
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or("bad continuation token")?
        };
        let first = self.ends.partition_point(|&e| e <= start);
        let limit = start + MAX_GET_BYTES;
        let last = self.ends[first..].partition_point(|&e| e <= limit) + first;
        let end = match last {
            l if l == first => self.ends.get(first).copied().unwrap_or(self.data.len()),
            l => self.ends[l - 1],
        };
        let continuation_token = if end < self.data.len() {
            end.to_string().into_bytes().into()
        } else {
            Bytes::new()
        };
        Ok(state_response::Response::Get(StateGetResponse {
            continuation_token,
            data: Bytes::copy_from_slice(self.data.get(start..end).unwrap_or_default()),
        }))
    }
}

fn empty_page() -> state_response::Response {
    state_response::Response::Get(StateGetResponse::default())
}

impl BundleState {
    fn side(&self, transform: &str, id: &str) -> Result<&Arc<SideInputData>, String> {
        self.side_inputs
            .get(&(transform.to_owned(), id.to_owned()))
            .ok_or_else(|| format!("no side input {id:?} for transform {transform:?}"))
    }

    fn get(&self, key: &Key, token: &[u8]) -> Result<state_response::Response, String> {
        match key {
            Key::IterableSideInput(k) => {
                let s = self.side(&k.transform_id, &k.side_input_id)?;
                s.iterable
                    .get(&k.window[..])
                    .map_or(Ok(empty_page()), |p| p.page(token))
            }
            Key::MultimapSideInput(k) => {
                let s = self.side(&k.transform_id, &k.side_input_id)?;
                let values = s
                    .multimap
                    .get(&k.window[..])
                    .and_then(|m| m.get(&k.key[..]));
                values.map_or(Ok(empty_page()), |(_, p)| p.page(token))
            }
            Key::MultimapKeysSideInput(k) => {
                let s = self.side(&k.transform_id, &k.side_input_id)?;
                let mut out = Paged::default();
                for key in s
                    .multimap
                    .get(&k.window[..])
                    .into_iter()
                    .flat_map(|m| m.keys())
                {
                    out.push(key);
                }
                out.page(token)
            }
            Key::MultimapKeysValuesSideInput(k) => {
                // Each entry is (key, iterable of values): the key's bytes, a
                // big-endian element count, then the values.
                let s = self.side(&k.transform_id, &k.side_input_id)?;
                let mut out = Paged::default();
                for (key, (count, values)) in s.multimap.get(&k.window[..]).into_iter().flatten() {
                    let mut entry = Vec::with_capacity(key.len() + 4 + values.data.len());
                    entry.extend_from_slice(key);
                    entry.extend_from_slice(&count.to_be_bytes());
                    entry.extend_from_slice(&values.data);
                    out.push(&entry);
                }
                out.page(token)
            }
            Key::BagUserState(k) => {
                let bags = self.user_state.bags.lock();
                bags.get(&user_key(k))
                    .map_or(Ok(empty_page()), |p| p.page(token))
            }
            other => Err(format!("unsupported state key {other:?}")),
        }
    }
}

impl StateHandler for BundleState {
    fn handle(&self, request: &StateRequest) -> Result<state_response::Response, String> {
        let key = request
            .state_key
            .as_ref()
            .and_then(|k| k.r#type.as_ref())
            .ok_or("state request without a key")?;
        match request.request.as_ref().ok_or("empty state request")? {
            Request::Get(get) => self.get(key, &get.continuation_token),
            Request::Append(append) => match key {
                Key::BagUserState(k) => {
                    self.user_state
                        .bags
                        .lock()
                        .entry(user_key(k))
                        .or_default()
                        .push(&append.data);
                    Ok(state_response::Response::Append(StateAppendResponse {}))
                }
                _ => Err("append is only supported for user state".into()),
            },
            Request::Clear(_) => match key {
                Key::BagUserState(k) => {
                    self.user_state.bags.lock().remove(&user_key(k));
                    Ok(state_response::Response::Clear(StateClearResponse {}))
                }
                _ => Err("clear is only supported for user state".into()),
            },
        }
    }
}
