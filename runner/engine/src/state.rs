//! Answering a bundle's state requests: side inputs and user state.

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

pub use crate::paging::Paged;
use crate::user_state::BundleWrites;
pub use crate::user_state::UserState;
use crate::wire::WireFormat;
use crate::EngineError;

/// The runner state key under which a bundle asks which transforms have
/// ever committed user state (`ferrobeam/_state_channel.py` asks it once per
/// bundle and answers reads of every other transform's state as empty).
pub const TRANSFORMS_WRITTEN_KEY: &[u8] = b"ferrobeam:user-state-transforms-written:v1";

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

/// Everything one bundle may read and write through the State API.
pub struct BundleState {
    side_inputs: Arc<SideInputs>,
    user_state: Arc<UserState>,
    /// This bundle's user-state writes, published by [`BundleState::commit`].
    writes: BundleWrites,
}

fn page(result: Result<(Bytes, Bytes), String>) -> Result<state_response::Response, String> {
    let (data, continuation_token) = result?;
    Ok(state_response::Response::Get(StateGetResponse {
        data,
        continuation_token,
    }))
}

fn empty_page() -> state_response::Response {
    state_response::Response::Get(StateGetResponse::default())
}

impl BundleState {
    pub fn new(side_inputs: Arc<SideInputs>, user_state: Arc<UserState>) -> Self {
        Self {
            side_inputs,
            user_state,
            writes: BundleWrites::default(),
        }
    }

    /// Makes the bundle's user-state writes visible to later bundles.  Call
    /// it only once the bundle has succeeded: a failed bundle's writes are
    /// dropped with it, so its retry starts from the same state.
    pub fn commit(&self) -> Result<(), EngineError> {
        self.writes.commit(&self.user_state)
    }

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
                    .map_or(Ok(empty_page()), |p| page(p.page(token)))
            }
            Key::MultimapSideInput(k) => {
                let s = self.side(&k.transform_id, &k.side_input_id)?;
                let values = s
                    .multimap
                    .get(&k.window[..])
                    .and_then(|m| m.get(&k.key[..]));
                values.map_or(Ok(empty_page()), |(_, p)| page(p.page(token)))
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
                page(out.page(token))
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
                page(out.page(token))
            }
            Key::BagUserState(k) => page(self.writes.bag_get(&self.user_state, k, token)),
            Key::Runner(k) if k.key == TRANSFORMS_WRITTEN_KEY => {
                // Each id as a big-endian u32 length and its bytes.
                let mut data = Vec::new();
                for id in self.user_state.transforms_written() {
                    data.extend_from_slice(&(id.len() as u32).to_be_bytes());
                    data.extend_from_slice(&id);
                }
                Ok(state_response::Response::Get(StateGetResponse {
                    data: data.into(),
                    continuation_token: Bytes::new(),
                }))
            }
            Key::OrderedListUserState(k) => {
                page(self.writes.ordered_list_get(&self.user_state, k, token))
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
        let state = &self.user_state;
        match request.request.as_ref().ok_or("empty state request")? {
            Request::Get(get) => self.get(key, &get.continuation_token),
            Request::Append(append) => {
                match key {
                    Key::BagUserState(k) => {
                        self.writes.bag_append(state, k, append.data.clone())?
                    }
                    Key::OrderedListUserState(k) => {
                        self.writes
                            .ordered_list_append(state, k, append.data.clone())?
                    }
                    _ => return Err("append is only supported for user state".into()),
                }
                Ok(state_response::Response::Append(StateAppendResponse {}))
            }
            Request::Clear(_) => {
                match key {
                    Key::BagUserState(k) => self.writes.bag_clear(state, k)?,
                    Key::OrderedListUserState(k) => self.writes.ordered_list_clear(state, k)?,
                    _ => return Err("clear is only supported for user state".into()),
                }
                Ok(state_response::Response::Clear(StateClearResponse {}))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrobeam_proto::fn_api::state_key::{BagUserState, Runner};
    use ferrobeam_proto::fn_api::{StateAppendRequest, StateGetRequest, StateKey};

    fn request(key: Key, request: Request) -> StateRequest {
        StateRequest {
            state_key: Some(StateKey { r#type: Some(key) }),
            request: Some(request),
            ..Default::default()
        }
    }

    fn bag(transform: &str, key: &[u8]) -> Key {
        Key::BagUserState(BagUserState {
            transform_id: transform.into(),
            user_state_id: "s".into(),
            window: Bytes::new(),
            key: Bytes::copy_from_slice(key),
        })
    }

    fn transforms_written(bundle: &BundleState) -> Vec<Vec<u8>> {
        let get = request(
            Key::Runner(Runner {
                key: Bytes::from_static(TRANSFORMS_WRITTEN_KEY),
            }),
            Request::Get(StateGetRequest::default()),
        );
        let Ok(state_response::Response::Get(page)) = bundle.handle(&get) else {
            panic!("no page");
        };
        let mut data = &page.data[..];
        let mut ids = Vec::new();
        while !data.is_empty() {
            let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
            ids.push(data[4..4 + len].to_vec());
            data = &data[4 + len..];
        }
        ids.sort();
        ids
    }

    #[test]
    fn transforms_count_as_written_once_a_bundle_commits_their_state() {
        let user_state = Arc::new(UserState::default());
        let bundle = BundleState::new(Arc::default(), user_state.clone());
        let append = |t: &str| {
            request(
                bag(t, b"k"),
                Request::Append(StateAppendRequest {
                    data: Bytes::from_static(b"\x01"),
                }),
            )
        };
        bundle.handle(&append("t1")).unwrap();
        bundle.handle(&append("t2")).unwrap();
        // Uncommitted writes are this bundle's own business.
        assert!(transforms_written(&bundle).is_empty());
        bundle.commit().unwrap();
        let later = BundleState::new(Arc::default(), user_state);
        assert_eq!(
            transforms_written(&later),
            vec![b"t1".to_vec(), b"t2".to_vec()]
        );
    }
}
