//! Ordered-list user state, bundle-local writes and paging of big values,
//! through the same `StateHandler` the Fn API state service calls.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ferrobeam_coders::varint::{read_len, read_varint_i64, write_len_prefixed, write_varint_i64};
use ferrobeam_engine::state::{BundleState, UserState};
use ferrobeam_fnapi::StateHandler;
use ferrobeam_proto::fn_api::state_key::{BagUserState, OrderedListUserState, Type as Key};
use ferrobeam_proto::fn_api::state_request::Request;
use ferrobeam_proto::fn_api::{
    state_response, OrderedListRange, StateAppendRequest, StateClearRequest, StateGetRequest,
    StateKey, StateRequest,
};

const PAGE_LIMIT: usize = 2 << 20;

fn bundle(state: &Arc<UserState>) -> BundleState {
    BundleState::new(Arc::new(HashMap::new()), state.clone())
}

fn call(
    state: &BundleState,
    key: &Key,
    request: Request,
) -> Result<state_response::Response, String> {
    state.handle(&StateRequest {
        id: "r".into(),
        instruction_id: "i".into(),
        state_key: Some(StateKey {
            r#type: Some(key.clone()),
        }),
        request: Some(request),
    })
}

fn get_page(state: &BundleState, key: &Key, token: Bytes) -> Result<(Bytes, Bytes), String> {
    match call(
        state,
        key,
        Request::Get(StateGetRequest {
            continuation_token: token,
        }),
    )? {
        state_response::Response::Get(g) => Ok((g.data, g.continuation_token)),
        other => panic!("not a get response: {other:?}"),
    }
}

fn get_pages(state: &BundleState, key: &Key) -> Vec<Bytes> {
    let mut pages = Vec::new();
    let mut token = Bytes::new();
    loop {
        let (data, next) = get_page(state, key, token).unwrap();
        pages.push(data);
        if next.is_empty() {
            return pages;
        }
        assert!(pages.len() < 10_000, "paging does not end");
        token = next;
    }
}

fn list_key(range: Option<(i64, i64)>) -> Key {
    Key::OrderedListUserState(OrderedListUserState {
        transform_id: "T".into(),
        user_state_id: "list".into(),
        window: Bytes::from_static(b"w"),
        key: Bytes::from_static(b"\x01k"),
        range: range.map(|(start, end)| OrderedListRange { start, end }),
    })
}

/// Encodes `(sort key, value)` pairs as the Python SDK does:
/// `TupleCoder(VarIntCoder, LengthPrefixCoder(value coder))`.
fn encode(items: &[(i64, &[u8])]) -> Bytes {
    let mut out = Vec::new();
    for (k, v) in items {
        write_varint_i64(&mut out, *k);
        write_len_prefixed(&mut out, v);
    }
    out.into()
}

fn decode(pages: &[Bytes]) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    for page in pages {
        // Every page must decode on its own.
        let mut pos = 0;
        while pos < page.len() {
            let (k, p) = read_varint_i64(page, pos).unwrap();
            let (len, p) = read_len(page, p).unwrap();
            out.push((k, page[p..p + len].to_vec()));
            pos = p + len;
        }
    }
    out
}

fn append(state: &BundleState, key: &Key, data: Bytes) {
    assert!(matches!(
        call(state, key, Request::Append(StateAppendRequest { data })).unwrap(),
        state_response::Response::Append(_)
    ));
}

fn clear(state: &BundleState, key: &Key) {
    assert!(matches!(
        call(state, key, Request::Clear(StateClearRequest {})).unwrap(),
        state_response::Response::Clear(_)
    ));
}

fn read_range(state: &BundleState, range: (i64, i64)) -> Vec<(i64, Vec<u8>)> {
    decode(&get_pages(state, &list_key(Some(range))))
}

#[test]
fn ordered_list_sorts_reads_ranges_and_clears_ranges() {
    let job = Arc::new(UserState::default());
    let b = bundle(&job);
    let all = (i64::MIN, i64::MAX);
    assert!(read_range(&b, all).is_empty(), "an unwritten list is empty");
    // Appends carry no range; elements arrive in any order, negative sort
    // keys included, and equal sort keys keep their insertion order.
    append(
        &b,
        &list_key(None),
        encode(&[(5, b"e"), (-3, b"minus three"), (1, b"a1")]),
    );
    append(
        &b,
        &list_key(None),
        encode(&[(1, b"a2"), (i64::MIN, b"min"), (9, b"")]),
    );
    let v = |k: i64, s: &[u8]| (k, s.to_vec());
    assert_eq!(
        read_range(&b, all),
        vec![
            v(i64::MIN, b"min"),
            v(-3, b"minus three"),
            v(1, b"a1"),
            v(1, b"a2"),
            v(5, b"e"),
            v(9, b"")
        ]
    );
    // Ranges are [start, end).
    assert_eq!(read_range(&b, (1, 5)), vec![v(1, b"a1"), v(1, b"a2")]);
    assert_eq!(read_range(&b, (2, 9)), vec![v(5, b"e")]);
    assert!(read_range(&b, (6, 6)).is_empty());
    assert!(read_range(&b, (7, 2)).is_empty());

    // Clearing a range removes exactly the sort keys in it.
    clear(&b, &list_key(Some((-3, 5))));
    assert_eq!(
        read_range(&b, all),
        vec![v(i64::MIN, b"min"), v(5, b"e"), v(9, b"")]
    );

    // Writes become the job's state only on commit.
    assert!(read_range(&bundle(&job), all).is_empty());
    b.commit().unwrap();
    let next = bundle(&job);
    assert_eq!(
        read_range(&next, all),
        vec![v(i64::MIN, b"min"), v(5, b"e"), v(9, b"")]
    );
    // The SDK clears everything with the widest range it has.
    clear(&next, &list_key(Some((i64::MIN, i64::MAX))));
    assert!(read_range(&next, all).is_empty());
    next.commit().unwrap();
    assert_eq!(job.cells(), 0, "an emptied cell is dropped");
}

#[test]
fn ordered_list_pages_hold_whole_elements_and_resume_within_a_sort_key() {
    let job = Arc::new(UserState::default());
    let b = bundle(&job);
    // 300 elements of 20 kB under only 10 sort keys: pages must break in
    // the middle of a sort key's elements and resume there.
    let mut expected = Vec::new();
    for i in 0..300i64 {
        let value = vec![(i % 251) as u8; 20_000];
        let key = (i * 7) % 10;
        append(&b, &list_key(None), encode(&[(key, &value)]));
        expected.push((key, i, value));
    }
    expected.sort_by_key(|(k, i, _)| (*k, *i));
    let expected: Vec<(i64, Vec<u8>)> = expected.into_iter().map(|(k, _, v)| (k, v)).collect();
    let pages = get_pages(&b, &list_key(Some((i64::MIN, i64::MAX))));
    assert!(pages.len() >= 3, "{} pages", pages.len());
    assert!(pages.iter().all(|p| p.len() <= PAGE_LIMIT));
    assert_eq!(decode(&pages), expected);
    // A sub-range is paged too.
    let some = decode(&get_pages(&b, &list_key(Some((3, 8)))));
    assert_eq!(
        some,
        expected
            .iter()
            .filter(|(k, _)| (3..8).contains(k))
            .cloned()
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_token_from_before_a_clear_is_refused() {
    let job = Arc::new(UserState::default());
    let b = bundle(&job);
    let big = vec![7u8; 1_500_000];
    append(&b, &list_key(None), encode(&[(1, &big), (2, &big)]));
    let key = list_key(Some((i64::MIN, i64::MAX)));
    let (_, token) = get_page(&b, &key, Bytes::new()).unwrap();
    assert!(!token.is_empty());
    clear(&b, &list_key(Some((0, 10))));
    let err = get_page(&b, &key, token).unwrap_err();
    assert!(err.contains("cleared"), "{err}");
    // Garbage tokens are errors, not panics.
    assert!(get_page(&b, &key, Bytes::from_static(b"1:x:2")).is_err());
    assert!(get_page(&b, &key, Bytes::from_static(b"1:2")).is_err());
}

#[test]
fn malformed_ordered_list_append_is_an_error() {
    let b = bundle(&Arc::new(UserState::default()));
    // A value length running past the end of the data.
    let err = call(
        &b,
        &list_key(None),
        Request::Append(StateAppendRequest {
            data: Bytes::from_static(b"\x02\x09ab"),
        }),
    );
    assert!(err.is_err());
}

fn bag_key(key: &'static [u8], window: &'static [u8]) -> Key {
    Key::BagUserState(BagUserState {
        transform_id: "T".into(),
        user_state_id: "bag".into(),
        window: Bytes::from_static(window),
        key: Bytes::from_static(key),
    })
}

fn bag_contents(b: &BundleState, key: &Key) -> Vec<u8> {
    get_pages(b, key).concat()
}

/// A bundle whose worker dies is retried from the committed state: the
/// failed attempt's writes (never committed) are gone.
#[test]
fn uncommitted_writes_are_dropped_with_their_bundle() {
    let job = Arc::new(UserState::default());
    let k = bag_key(b"k", b"");
    let first = bundle(&job);
    append(&first, &k, Bytes::from_static(b"one"));
    first.commit().unwrap();

    let failed = bundle(&job);
    clear(&failed, &k);
    append(&failed, &k, Bytes::from_static(b"two"));
    assert_eq!(bag_contents(&failed, &k), b"two");
    drop(failed);

    let retry = bundle(&job);
    assert_eq!(bag_contents(&retry, &k), b"one");
    append(&retry, &k, Bytes::from_static(b"two"));
    retry.commit().unwrap();
    assert_eq!(bag_contents(&bundle(&job), &k), b"onetwo");
}

#[test]
fn cells_are_per_key_and_window() {
    let job = Arc::new(UserState::default());
    let b = bundle(&job);
    append(&b, &bag_key(b"a", b"w1"), Bytes::from_static(b"a1"));
    append(&b, &bag_key(b"a", b"w2"), Bytes::from_static(b"a2"));
    append(&b, &bag_key(b"b", b"w1"), Bytes::from_static(b"b1"));
    b.commit().unwrap();
    let r = bundle(&job);
    assert_eq!(bag_contents(&r, &bag_key(b"a", b"w1")), b"a1");
    assert_eq!(bag_contents(&r, &bag_key(b"a", b"w2")), b"a2");
    assert_eq!(bag_contents(&r, &bag_key(b"b", b"w1")), b"b1");
    assert!(bag_contents(&r, &bag_key(b"b", b"w2")).is_empty());
    // Bags are paged by append: many small appends still come in few pages.
    for _ in 0..10_000 {
        append(
            &r,
            &bag_key(b"many", b""),
            Bytes::from_static(b"0123456789"),
        );
    }
    let pages = get_pages(&r, &bag_key(b"many", b""));
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].len(), 100_000);
}
