//! The state service's answers: side inputs and bag user state, with
//! paging at element boundaries through continuation tokens.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use ferrobeam_coders::{Coder, IntervalWindow, Value};
use ferrobeam_engine::state::{BundleState, SideInputData, UserState};
use ferrobeam_fnapi::StateHandler;
use ferrobeam_graph::{PortRef, SideInput, SideInputAccess};
use ferrobeam_proto::fn_api::state_key::{
    BagUserState, IterableSideInput, MultimapKeysSideInput, MultimapKeysValuesSideInput,
    MultimapSideInput, Type as Key,
};
use ferrobeam_proto::fn_api::state_request::Request;
use ferrobeam_proto::fn_api::{
    state_response, StateAppendRequest, StateClearRequest, StateGetRequest, StateKey, StateRequest,
};

/// The most a page may carry unless it holds a single element.
const PAGE_LIMIT: usize = 2 << 20;

fn spec(access: SideInputAccess) -> SideInput {
    SideInput {
        transform_id: "T".into(),
        local_name: "side".into(),
        port: PortRef {
            pcollection: "pc".into(),
            coder_id: "wv".into(),
        },
        access,
    }
}

fn state_with(access: SideInputAccess, chunks: &[Bytes], wire: &str) -> BundleState {
    let data = SideInputData::build(&spec(access), chunks, &format(wire)).unwrap();
    let mut side = HashMap::new();
    side.insert(("T".to_owned(), "side".to_owned()), Arc::new(data));
    BundleState::new(Arc::new(side), Arc::new(UserState::default()))
}

fn request(key: Key, request: Request) -> StateRequest {
    StateRequest {
        id: "r".into(),
        instruction_id: "i".into(),
        state_key: Some(StateKey { r#type: Some(key) }),
        request: Some(request),
    }
}

fn get_page(state: &BundleState, key: &Key, token: &[u8]) -> Result<(Bytes, Bytes), String> {
    let get = Request::Get(StateGetRequest {
        continuation_token: Bytes::copy_from_slice(token),
    });
    match state.handle(&request(key.clone(), get))? {
        state_response::Response::Get(g) => Ok((g.data, g.continuation_token)),
        other => panic!("not a get response: {other:?}"),
    }
}

/// Follows continuation tokens to the end; returns every page.
fn get_all(state: &BundleState, key: &Key) -> Vec<Bytes> {
    let mut pages = Vec::new();
    let mut token = Bytes::new();
    loop {
        let (data, next) = get_page(state, key, &token).unwrap();
        pages.push(data);
        if next.is_empty() {
            return pages;
        }
        assert!(pages.len() < 10_000, "paging does not end");
        token = next;
    }
}

fn concat(pages: &[Bytes]) -> Vec<u8> {
    pages.iter().flat_map(|p| p.iter().copied()).collect()
}

/// Decodes a concatenation of nested values of one coder.
fn values(coder_id: &str, buf: &[u8]) -> Vec<Value> {
    let c = coder(coder_id);
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let (v, p) = c.decode_at(buf, pos, true).unwrap();
        out.push(v);
        pos = p;
    }
    out
}

fn iterable_key(window: &[u8]) -> Key {
    Key::IterableSideInput(IterableSideInput {
        transform_id: "T".into(),
        side_input_id: "side".into(),
        window: Bytes::copy_from_slice(window),
    })
}

fn encoded(w: IntervalWindow) -> Vec<u8> {
    let mut out = Vec::new();
    w.encode(&mut out);
    out
}

#[test]
fn iterable_side_input_per_window() {
    let mut buf = Vec::new();
    push(&mut buf, 1, &[iw(0, 10)], "a", 1);
    push(&mut buf, 2, &[iw(0, 10), iw(10, 20)], "b", 2);
    push(&mut buf, 12, &[iw(10, 20)], "c", 3);
    let state = state_with(
        SideInputAccess::Iterable,
        &[Bytes::from(buf)],
        "wv_interval",
    );

    let w1 = concat(&get_all(
        &state,
        &iterable_key(&encoded(IntervalWindow::new(0, 10))),
    ));
    assert_eq!(values("kv", &w1), vec![kv("a", 1), kv("b", 2)]);
    let w2 = concat(&get_all(
        &state,
        &iterable_key(&encoded(IntervalWindow::new(10, 20))),
    ));
    assert_eq!(values("kv", &w2), vec![kv("b", 2), kv("c", 3)]);
    // A window with no elements is an empty iterable, not an error.
    let none = get_all(&state, &iterable_key(&encoded(IntervalWindow::new(20, 30))));
    assert_eq!(concat(&none), Vec::<u8>::new());
}

#[test]
fn iterable_side_input_in_the_global_window() {
    let chunks = [global(&[(0, "x", 1), (0, "y", 2)]), global(&[(0, "z", 3)])];
    let state = state_with(SideInputAccess::Iterable, &chunks, "wv_global");
    // The global window encodes as zero bytes.
    let all = concat(&get_all(&state, &iterable_key(&[])));
    assert_eq!(values("kv", &all), vec![kv("x", 1), kv("y", 2), kv("z", 3)]);
}

#[test]
fn unknown_side_input_is_an_error() {
    let state = state_with(
        SideInputAccess::Iterable,
        &[global(&[(0, "x", 1)])],
        "wv_global",
    );
    let key = Key::IterableSideInput(IterableSideInput {
        transform_id: "T".into(),
        side_input_id: "other".into(),
        window: Bytes::new(),
    });
    let err = get_page(&state, &key, &[]).unwrap_err();
    assert!(err.contains("other"), "{err}");
    // Side inputs are read-only.
    let append = Request::Append(StateAppendRequest {
        data: Bytes::from_static(b"x"),
    });
    assert!(state.handle(&request(iterable_key(&[]), append)).is_err());
    assert!(state
        .handle(&request(
            iterable_key(&[]),
            Request::Clear(StateClearRequest {})
        ))
        .is_err());
}

#[test]
fn multimap_side_input_by_key_keys_and_entries() {
    let chunks = [
        global(&[(0, "a", 1), (0, "b", 2), (0, "a", 3)]),
        global(&[(0, "c", 4), (0, "a", 5)]),
    ];
    let state = state_with(SideInputAccess::Multimap, &chunks, "wv_global");
    // The SDK sends keys nested-encoded with the key coder.
    let key_bytes = |k: &str| {
        coder("lp_str")
            .encode_to_vec(&Value::String(k.into()), true)
            .unwrap()
    };
    let by_key = |k: &str| {
        Key::MultimapSideInput(MultimapSideInput {
            transform_id: "T".into(),
            side_input_id: "side".into(),
            window: Bytes::new(),
            key: key_bytes(k).into(),
        })
    };
    assert_eq!(
        values("varint", &concat(&get_all(&state, &by_key("a")))),
        vec![Value::Int(1), Value::Int(3), Value::Int(5)]
    );
    assert_eq!(
        values("varint", &concat(&get_all(&state, &by_key("c")))),
        vec![Value::Int(4)]
    );
    assert!(concat(&get_all(&state, &by_key("nope"))).is_empty());

    let keys = Key::MultimapKeysSideInput(MultimapKeysSideInput {
        transform_id: "T".into(),
        side_input_id: "side".into(),
        window: Bytes::new(),
    });
    let mut got: Vec<String> = values("lp_str", &concat(&get_all(&state, &keys)))
        .into_iter()
        .map(|v| match v {
            Value::String(s) => s,
            other => panic!("{other:?}"),
        })
        .collect();
    got.sort();
    assert_eq!(got, ["a", "b", "c"]);

    // Keys and values together: KV<key, iterable<value>> per key.
    let kvs = Key::MultimapKeysValuesSideInput(MultimapKeysValuesSideInput {
        transform_id: "T".into(),
        side_input_id: "side".into(),
        window: Bytes::new(),
    });
    let mut got: Vec<(Value, Value)> = values("kv_iter", &concat(&get_all(&state, &kvs)))
        .into_iter()
        .map(|v| match v {
            Value::Kv(k, v) => (*k, *v),
            other => panic!("{other:?}"),
        })
        .collect();
    got.sort_by_key(|(k, _)| format!("{k:?}"));
    let it = |v: &[i64]| Value::Iterable(v.iter().map(|&i| Value::Int(i)).collect());
    assert_eq!(
        got,
        vec![
            (Value::String("a".into()), it(&[1, 3, 5])),
            (Value::String("b".into()), it(&[2])),
            (Value::String("c".into()), it(&[4])),
        ]
    );
}

fn bag(transform: &str, id: &str, window: &[u8], key: &[u8]) -> Key {
    Key::BagUserState(BagUserState {
        transform_id: transform.into(),
        user_state_id: id.into(),
        window: Bytes::copy_from_slice(window),
        key: Bytes::copy_from_slice(key),
    })
}

fn append(state: &BundleState, key: &Key, data: Vec<u8>) {
    let r = state
        .handle(&request(
            key.clone(),
            Request::Append(StateAppendRequest { data: data.into() }),
        ))
        .unwrap();
    assert!(matches!(r, state_response::Response::Append(_)));
}

fn user_state() -> BundleState {
    bundle(&Arc::new(UserState::default()))
}

/// A bundle over the job's user state `state`.
fn bundle(state: &Arc<UserState>) -> BundleState {
    BundleState::new(Arc::new(HashMap::new()), state.clone())
}

#[test]
fn bag_state_append_get_clear() {
    let job_state = Arc::new(UserState::default());
    let state = bundle(&job_state);
    let k = bag("T", "seen", &[], b"\x01k");
    let str_coder = Coder::StringUtf8;
    let enc = |s: &str| {
        str_coder
            .encode_to_vec(&Value::String(s.into()), true)
            .unwrap()
    };
    assert!(
        concat(&get_all(&state, &k)).is_empty(),
        "an unwritten bag is empty"
    );
    append(&state, &k, enc("a"));
    append(&state, &k, [enc("b"), enc("c")].concat());
    let strings = |buf: &[u8]| {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let (v, p) = str_coder.decode_at(buf, pos, true).unwrap();
            out.push(v);
            pos = p;
        }
        out
    };
    let s = |x: &str| Value::String(x.into());
    assert_eq!(
        strings(&concat(&get_all(&state, &k))),
        vec![s("a"), s("b"), s("c")]
    );

    // Bags are per transform, state id, window and key, and the parts
    // cannot run into each other.
    for other in [
        bag("T2", "seen", &[], b"\x01k"),
        bag("T", "seen2", &[], b"\x01k"),
        bag("T", "seen", &[1], b"\x01k"),
        bag("T", "seen", &[], b"\x01j"),
        bag("T", "see", &[], b"n\x01k"),
    ] {
        assert!(concat(&get_all(&state, &other)).is_empty(), "{other:?}");
    }

    let r = state
        .handle(&request(k.clone(), Request::Clear(StateClearRequest {})))
        .unwrap();
    assert!(matches!(r, state_response::Response::Clear(_)));
    assert!(concat(&get_all(&state, &k)).is_empty());
    append(&state, &k, enc("d"));
    assert_eq!(strings(&concat(&get_all(&state, &k))), vec![s("d")]);

    // A bundle's writes become visible to other bundles when it commits,
    // and then outlive it.
    let next = bundle(&job_state);
    assert!(
        concat(&get_all(&next, &k)).is_empty(),
        "uncommitted writes leaked"
    );
    state.commit().unwrap();
    assert_eq!(strings(&concat(&get_all(&next, &k))), vec![s("d")]);
    drop(state);
    assert_eq!(
        strings(&concat(&get_all(&bundle(&job_state), &k))),
        vec![s("d")]
    );
}

/// Pages end on element (append) boundaries, stay under the limit unless a
/// single element is bigger, and the tokens lead through all the data.
#[test]
fn large_state_is_paged_at_element_boundaries() {
    let state = user_state();
    let k = bag("T", "big", &[], b"k");
    let sizes = [
        1_500_000usize,
        1_000_000,
        10,
        3_000_000,
        5,
        700_000,
        700_000,
        700_000,
        1,
    ];
    let mut all = Vec::new();
    let mut ends = vec![0];
    for (i, &n) in sizes.iter().enumerate() {
        let element: Vec<u8> = (0..n).map(|j| (i * 31 + j % 251) as u8).collect();
        all.extend_from_slice(&element);
        ends.push(all.len());
        append(&state, &k, element);
    }
    let pages = get_all(&state, &k);
    assert_eq!(concat(&pages), all);
    assert!(pages.len() >= 4, "{} pages", pages.len());
    let mut pos = 0;
    for (i, p) in pages.iter().enumerate() {
        assert!(!p.is_empty(), "page {i} is empty");
        pos += p.len();
        assert!(
            ends.contains(&pos),
            "page {i} ends at {pos}, inside an element"
        );
        let elements = ends
            .iter()
            .filter(|&&e| e > pos - p.len() && e <= pos)
            .count();
        assert!(
            p.len() <= PAGE_LIMIT || elements == 1,
            "page {i}: {} bytes in {elements} elements",
            p.len()
        );
        // A page stops only where the next element would not fit.
        if i + 1 < pages.len() {
            let next_end = ends.iter().copied().find(|&e| e > pos).unwrap();
            assert!(
                next_end - (pos - p.len()) > PAGE_LIMIT,
                "page {i} could have taken the next element"
            );
        }
    }
    // The first page: 1.5 MB alone (with the next 1 MB it would exceed 2 MiB).
    assert_eq!(pages[0].len(), 1_500_000);
    // The 3 MB element comes alone.
    assert!(pages.iter().any(|p| p.len() == 3_000_000));

    // Tokens can be replayed: asking again from a token gives the same page.
    let (_, token) = get_page(&state, &k, &[]).unwrap();
    let (again, _) = get_page(&state, &k, &token).unwrap();
    assert_eq!(again, pages[1]);
    // A garbage token is an error, not a panic.
    assert!(get_page(&state, &k, b"not a number").is_err());
}

#[test]
fn large_side_input_pages_decode_on_their_own() {
    // The SDK decodes every page by itself, so each must hold whole elements.
    let mut buf = Vec::new();
    let big = "v".repeat(100_000);
    for i in 0..60 {
        push(
            &mut buf,
            0,
            &[ferrobeam_coders::WindowRef::Global],
            &format!("{big}{i}"),
            i,
        );
    }
    let state = state_with(SideInputAccess::Iterable, &[Bytes::from(buf)], "wv_global");
    let pages = get_all(&state, &iterable_key(&[]));
    assert!(pages.len() >= 3, "{} pages", pages.len());
    let mut n = 0;
    for p in &pages {
        assert!(p.len() <= PAGE_LIMIT);
        for v in values("kv", p) {
            assert_eq!(v, kv(&format!("{big}{n}"), n));
            n += 1;
        }
    }
    assert_eq!(n, 60);
}
