//! Streaming GroupByKey: panes as elements, watermarks and processing time
//! arrive.  Expected panes follow Beam's model (Java's ReduceFnRunner).

mod common;

use bytes::Bytes;
use common::*;
use ferrobeam_coders::{Timing, Value, MAX_TIMESTAMP_MILLIS};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;

use ferrobeam_engine::streaming::gbk::StreamingGroupByKey;
use ferrobeam_engine::streaming::gbk_values::ValueStore;
use ferrobeam_proto::pipeline::v1::{
    self as pb, accumulation_mode, closing_behavior, on_time_behavior, output_time, trigger,
    FunctionSpec,
};
use ferrobeam_state::codec::{Reader, Writer};
use ferrobeam_state::{keys, BackendKind, StateBackend, WriteBatch};

const FIXED: &str = "beam:window_fn:fixed_windows:v1";

fn strategy(
    trigger: Option<pb::Trigger>,
    accumulating: bool,
    lateness: i64,
) -> pb::WindowingStrategy {
    pb::WindowingStrategy {
        window_fn: Some(FunctionSpec {
            urn: FIXED.into(),
            payload: Default::default(),
        }),
        trigger,
        accumulation_mode: if accumulating {
            accumulation_mode::Enum::Accumulating
        } else {
            accumulation_mode::Enum::Discarding
        } as i32,
        // What the Python SDK always sends.
        closing_behavior: closing_behavior::Enum::EmitAlways as i32,
        on_time_behavior: on_time_behavior::Enum::FireAlways as i32,
        output_time: output_time::Enum::EndOfWindow as i32,
        allowed_lateness: lateness,
        ..Default::default()
    }
}

fn count(n: i32) -> pb::Trigger {
    pb::Trigger {
        trigger: Some(trigger::Trigger::ElementCount(trigger::ElementCount {
            element_count: n,
        })),
    }
}

fn after_watermark(early: Option<pb::Trigger>, late: Option<pb::Trigger>) -> pb::Trigger {
    pb::Trigger {
        trigger: Some(trigger::Trigger::AfterEndOfWindow(Box::new(
            trigger::AfterEndOfWindow {
                early_firings: early.map(Box::new),
                late_firings: late.map(Box::new),
            },
        ))),
    }
}

/// Elements of key `k` in the window [0, 10).
fn in_first_window(elements: &[(i64, i64)]) -> Bytes {
    let mut out = Vec::new();
    for &(ts, v) in elements {
        push(&mut out, ts, &[iw(0, 10)], "k", v);
    }
    out.into()
}

/// A pane, made comparable: values (sorted), timestamp, timing, index,
/// on-time index, first, last.
#[derive(Debug, PartialEq)]
struct P(Vec<i64>, i64, Timing, i64, i64, bool, bool);

fn panes(chunks: &[Bytes]) -> Vec<P> {
    let mut out = Vec::new();
    for chunk in chunks {
        for wv in decode_all("wv_interval_out", chunk) {
            let Value::Kv(_, v) = wv.value else { panic!() };
            let values = sorted_ints(*v);
            let p = wv.pane;
            out.push(P(
                values,
                wv.timestamp,
                p.timing,
                p.index,
                p.on_time_index,
                p.is_first,
                p.is_last,
            ));
        }
    }
    out
}

/// Where the GroupByKey under test keeps its values: every case runs with
/// both.
#[derive(Clone, Copy)]
enum Store {
    Memory,
    Rocksdb,
}

/// A GroupByKey and the RocksDB directory it may use.
struct Gbk {
    g: StreamingGroupByKey,
    backend: Arc<dyn StateBackend>,
    _dir: tempfile::TempDir,
}

impl Deref for Gbk {
    type Target = StreamingGroupByKey;
    fn deref(&self) -> &StreamingGroupByKey {
        &self.g
    }
}

impl DerefMut for Gbk {
    fn deref_mut(&mut self) -> &mut StreamingGroupByKey {
        &mut self.g
    }
}

const NS: u32 = 7;

fn backend(store: Store, dir: &Path) -> Arc<dyn StateBackend> {
    let kind = match store {
        Store::Memory => BackendKind::Memory,
        Store::Rocksdb => BackendKind::Rocksdb,
    };
    ferrobeam_state::open(kind, &dir.join("db"), None).unwrap()
}

fn gbk(store: Store, strategy: pb::WindowingStrategy) -> Gbk {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(store, dir.path());
    let values = ValueStore::for_stage(&backend, NS);
    Gbk {
        g: StreamingGroupByKey::new(&strategy, format("wv_interval"), values).unwrap(),
        backend,
        _dir: dir,
    }
}

/// Buffered values the backend holds for the GroupByKey.
fn values_in_backend(g: &Gbk) -> usize {
    let mut n = 0;
    g.backend
        .scan_prefix(&keys::gbk_values_prefix(NS), &mut |_, _| {
            n += 1;
            true
        })
        .unwrap();
    n
}

fn default_trigger_fires_once_when_the_watermark_passes_the_window(store: Store) {
    let mut g = gbk(store, strategy(None, false, 0));
    assert!(g
        .add(&in_first_window(&[(1, 1), (2, 2)]))
        .unwrap()
        .chunks
        .is_empty());
    assert!(
        g.advance(9, 0).unwrap().chunks.is_empty(),
        "the window [0, 10) ends at 9"
    );
    assert_eq!(g.output_watermark(), 9);
    let fired = g.advance(10, 0).unwrap();
    // On time and, without allowed lateness, also the last pane.
    assert_eq!(
        panes(&fired.chunks),
        vec![P(vec![1, 2], 9, Timing::OnTime, 0, 0, true, true)]
    );
    assert_eq!(g.open_windows(), 0);
    // Data for a collected window is dropped and counted.
    let late = g.add(&in_first_window(&[(3, 3)])).unwrap();
    assert_eq!(late.dropped_late, 1);
    assert!(late.chunks.is_empty());
}

fn early_counts_then_on_time_then_late_panes_accumulating(store: Store) {
    let mut g = gbk(
        store,
        strategy(
            Some(after_watermark(Some(count(2)), Some(count(1)))),
            true,
            100,
        ),
    );
    let early = g.add(&in_first_window(&[(1, 1), (2, 2), (3, 3)])).unwrap();
    assert_eq!(
        panes(&early.chunks),
        vec![P(vec![1, 2, 3], 9, Timing::Early, 0, -1, true, false)]
    );
    let on_time = g.advance(50, 0).unwrap();
    assert_eq!(
        panes(&on_time.chunks),
        vec![P(vec![1, 2, 3], 9, Timing::OnTime, 1, 0, false, false)]
    );
    let late = g.add(&in_first_window(&[(4, 4)])).unwrap();
    assert_eq!(
        panes(&late.chunks),
        vec![P(vec![1, 2, 3, 4], 9, Timing::Late, 2, 1, false, false)]
    );
    // Garbage collection (9 + 100 < watermark) with nothing new: the window
    // goes without another pane, whatever the (Python-set) EMIT_ALWAYS says.
    assert!(g.advance(110, 0).unwrap().chunks.is_empty());
    assert_eq!(g.open_windows(), 0);
    assert_eq!(g.add(&in_first_window(&[(5, 5)])).unwrap().dropped_late, 1);
}

fn discarding_panes_carry_only_new_values(store: Store) {
    let mut g = gbk(
        store,
        strategy(Some(after_watermark(Some(count(2)), None)), false, 0),
    );
    let first = g.add(&in_first_window(&[(1, 1), (2, 2)])).unwrap();
    assert_eq!(
        panes(&first.chunks),
        vec![P(vec![1, 2], 9, Timing::Early, 0, -1, true, false)]
    );
    assert!(g
        .add(&in_first_window(&[(3, 3)]))
        .unwrap()
        .chunks
        .is_empty());
    let end = g.advance(MAX_TIMESTAMP_MILLIS, 0).unwrap();
    assert_eq!(
        panes(&end.chunks),
        vec![P(vec![3], 9, Timing::OnTime, 1, 0, false, true)]
    );
}

fn processing_time_triggers_fire_when_processing_time_moves(store: Store) {
    let delay = pb::Trigger {
        trigger: Some(trigger::Trigger::AfterProcessingTime(
            trigger::AfterProcessingTime {
                timestamp_transforms: vec![pb::TimestampTransform {
                    timestamp_transform: Some(pb::timestamp_transform::TimestampTransform::Delay(
                        pb::timestamp_transform::Delay { delay_millis: 5 },
                    )),
                }],
            },
        )),
    };
    let mut g = gbk(
        store,
        strategy(Some(after_watermark(Some(delay), None)), false, 0),
    );
    g.advance(0, 1000).unwrap();
    assert!(g
        .add(&in_first_window(&[(1, 1)]))
        .unwrap()
        .chunks
        .is_empty());
    assert!(g.advance(0, 1004).unwrap().chunks.is_empty());
    let early = g.advance(0, 1005).unwrap();
    assert_eq!(
        panes(&early.chunks),
        vec![P(vec![1], 9, Timing::Early, 0, -1, true, false)]
    );
    // FIRE_ALWAYS: the on-time pane fires even with nothing new (and, the
    // window closing with it, is the last).
    let on_time = g.advance(10, 1006).unwrap();
    assert_eq!(
        panes(&on_time.chunks),
        vec![P(vec![], 9, Timing::OnTime, 1, 0, false, true)]
    );
}

fn earliest_output_time_holds_the_output_watermark(store: Store) {
    let mut s = strategy(None, false, 0);
    s.output_time = output_time::Enum::EarliestInPane as i32;
    let mut g = gbk(store, s);
    g.add(&in_first_window(&[(4, 1), (6, 2)])).unwrap();
    g.advance(8, 0).unwrap();
    assert_eq!(
        g.output_watermark(),
        4,
        "held at the pane's earliest element"
    );
    let fired = g.advance(10, 0).unwrap();
    assert_eq!(
        panes(&fired.chunks),
        vec![P(vec![1, 2], 4, Timing::OnTime, 0, 0, true, true)]
    );
    assert_eq!(g.output_watermark(), 10);
}

fn a_finished_trigger_closes_the_window(store: Store) {
    // AfterCount(2) alone (not repeated) finishes at its first firing.
    let mut g = gbk(store, strategy(Some(count(2)), false, 1000));
    let fired = g.add(&in_first_window(&[(1, 1), (2, 2), (3, 3)])).unwrap();
    assert_eq!(
        panes(&fired.chunks),
        vec![P(vec![1, 2, 3], 9, Timing::Early, 0, -1, true, true)]
    );
    let after = g.add(&in_first_window(&[(4, 4)])).unwrap();
    assert_eq!(after.dropped_late, 1);
    assert!(g
        .advance(MAX_TIMESTAMP_MILLIS, 0)
        .unwrap()
        .chunks
        .is_empty());
}

fn elements_behind_the_watermark_do_not_set_an_earliest_timestamp(store: Store) {
    // Beam's trigger transcripts "known_late_data_watermark" and
    // "known_late_data_no_watermark_hold_possible".
    for (watermark, elements, expected) in [(5, vec![2, 3, 7, 8], 7), (8, vec![2, 3, 7], 9)] {
        let mut s = strategy(None, false, 0);
        s.output_time = output_time::Enum::EarliestInPane as i32;
        let mut g = gbk(store, s);
        g.advance(watermark, 0).unwrap();
        let input: Vec<(i64, i64)> = elements.iter().map(|&t| (t, t)).collect();
        g.add(&in_first_window(&input)).unwrap();
        let fired = g.advance(11, 0).unwrap();
        assert_eq!(
            panes(&fired.chunks),
            vec![P(
                elements.clone(),
                expected,
                Timing::OnTime,
                0,
                0,
                true,
                true
            )]
        );
    }
}

fn session_windows_merge_as_data_arrives(store: Store) {
    // Beam's trigger transcript "early_late_sessions": Sessions(10),
    // AfterWatermark(early=AfterCount(2), late=AfterCount(3)), accumulating,
    // allowed lateness 100, output at the end of the window.
    let mut s = strategy(
        Some(after_watermark(Some(count(2)), Some(count(3)))),
        true,
        100,
    );
    s.window_fn = Some(FunctionSpec {
        urn: "beam:window_fn:session_windows:v1".into(),
        payload: Default::default(),
    });
    let mut g = gbk(store, s);
    let session = |ts: &[i64]| -> Bytes {
        let mut out = Vec::new();
        for &t in ts {
            push(&mut out, t, &[iw(t, t + 10)], "k", t);
        }
        out.into()
    };
    let first = g.add(&session(&[1, 2])).unwrap();
    assert_eq!(
        panes(&first.chunks),
        vec![P(vec![1, 2], 11, Timing::Early, 0, -1, true, false)]
    );
    assert!(g.add(&session(&[3])).unwrap().chunks.is_empty());
    let merged = g.add(&session(&[4])).unwrap();
    // [1, 12) and [3, 13) and [4, 14) are one new window: panes start over.
    assert_eq!(
        panes(&merged.chunks),
        vec![P(vec![1, 2, 3, 4], 13, Timing::Early, 0, -1, true, false)]
    );
    assert!(g.add(&session(&[5])).unwrap().chunks.is_empty());
    let on_time = g.advance(100, 0).unwrap();
    assert_eq!(
        panes(&on_time.chunks),
        vec![P(
            vec![1, 2, 3, 4, 5],
            14,
            Timing::OnTime,
            0,
            0,
            true,
            false
        )]
    );
    // Late data inside the window: it stays the same window.
    assert!(g.add(&session(&[1])).unwrap().chunks.is_empty());
    let late = g.add(&session(&[3, 4])).unwrap();
    assert_eq!(
        panes(&late.chunks),
        vec![P(
            vec![1, 1, 2, 3, 3, 4, 4, 5],
            14,
            Timing::Late,
            1,
            1,
            false,
            false
        )]
    );
    assert_eq!(g.open_windows(), 1);
    g.advance(200, 0).unwrap();
    assert_eq!(g.open_windows(), 0);
}

fn values_leave_the_backend_with_their_window(store: Store) {
    let in_rocksdb = |n: usize| match store {
        Store::Memory => 0,
        Store::Rocksdb => n,
    };
    let mut g = gbk(
        store,
        strategy(Some(after_watermark(Some(count(2)), None)), false, 0),
    );
    g.add(&in_first_window(&[(1, 1)])).unwrap();
    assert_eq!(values_in_backend(&g), in_rocksdb(1));
    let early = g.add(&in_first_window(&[(2, 2), (3, 3)])).unwrap();
    assert_eq!(
        panes(&early.chunks),
        vec![P(vec![1, 2, 3], 9, Timing::Early, 0, -1, true, false)]
    );
    assert_eq!(
        values_in_backend(&g),
        0,
        "a discarding pane takes its values"
    );
    g.add(&in_first_window(&[(4, 4)])).unwrap();
    assert_eq!(values_in_backend(&g), in_rocksdb(1));
    let on_time = g.advance(10, 0).unwrap();
    assert_eq!(
        panes(&on_time.chunks),
        vec![P(vec![4], 9, Timing::OnTime, 1, 0, false, true)]
    );
    assert_eq!(
        values_in_backend(&g),
        0,
        "a collected window leaves nothing"
    );
}

fn a_checkpoint_restores_into_either_store(store: Store) {
    let s = strategy(None, true, 0);
    let mut g = gbk(store, s.clone());
    g.add(&in_first_window(&[(1, 1), (2, 2)])).unwrap();
    let mut w = Writer::new();
    g.save(&mut w);
    let entry = w.finish();
    for target in [Store::Memory, Store::Rocksdb] {
        // The restored backend holds what the snapshot held (a restore
        // into the other kind of backend copies the entries).
        let dir = tempfile::tempdir().unwrap();
        let restored = backend(target, dir.path());
        let mut batch = WriteBatch::default();
        g.backend
            .scan_prefix(&[], &mut |k, v| {
                batch.put(k.to_vec(), v.clone());
                true
            })
            .unwrap();
        restored.write(batch).unwrap();
        let values = ValueStore::for_stage(&restored, NS);
        let mut r = StreamingGroupByKey::new(&s, format("wv_interval"), values).unwrap();
        let mut reader = Reader::new(&entry, "GroupByKey");
        r.load(&mut reader).unwrap();
        reader.finish().unwrap();
        assert_eq!(r.buffered_values(), 2, "restored values count");
        r.add(&in_first_window(&[(3, 3)])).unwrap();
        assert_eq!(r.buffered_values(), 3);
        let fired = r.advance(10, 0).unwrap();
        assert_eq!(r.buffered_values(), 0);
        assert_eq!(
            panes(&fired.chunks),
            vec![P(vec![1, 2, 3], 9, Timing::OnTime, 0, 0, true, true)]
        );
        let mut left = 0;
        restored
            .scan_prefix(&keys::gbk_values_prefix(NS), &mut |_, _| {
                left += 1;
                true
            })
            .unwrap();
        assert_eq!(left, 0, "values moved or collected");
    }
}

fn buffered_values_count_what_the_windows_hold(store: Store) {
    // Discarding, early panes every 2 elements: a pane takes its values.
    let mut g = gbk(
        store,
        strategy(Some(after_watermark(Some(count(2)), None)), false, 0),
    );
    let in_window = |start: i64, elements: &[i64]| -> Bytes {
        let mut out = Vec::new();
        for &ts in elements {
            push(&mut out, ts, &[iw(start, start + 10)], "k", ts);
        }
        out.into()
    };
    assert_eq!(g.buffered_values(), 0);
    g.add(&in_window(0, &[1])).unwrap();
    g.add(&in_window(10, &[11])).unwrap();
    assert_eq!(g.buffered_values(), 2, "one value in each of two windows");
    g.add(&in_window(0, &[2])).unwrap();
    assert_eq!(
        g.buffered_values(),
        1,
        "the early pane of [0, 10) took its two"
    );
    g.add(&in_window(0, &[3])).unwrap();
    assert_eq!(g.buffered_values(), 2);
    g.advance(10, 0).unwrap();
    assert_eq!(
        g.buffered_values(),
        1,
        "[0, 10) collected, [10, 20) still open"
    );
    g.advance(20, 0).unwrap();
    assert_eq!(g.buffered_values(), 0);
    // Three at once: the third value of [0, 10) was buffered before the
    // early pane it completed took the window's two.
    assert_eq!(g.peak_buffered_values(), 3, "the most held at once");

    // Merging session windows move values, they do not add any.
    let mut s = strategy(None, true, 0);
    s.window_fn = Some(FunctionSpec {
        urn: "beam:window_fn:session_windows:v1".into(),
        payload: Default::default(),
    });
    let mut g = gbk(store, s);
    let mut out = Vec::new();
    for t in [1, 5, 9] {
        push(&mut out, t, &[iw(t, t + 10)], "k", t);
    }
    g.add(&out.into()).unwrap();
    assert_eq!((g.open_windows(), g.buffered_values()), (1, 3));
    g.advance(100, 0).unwrap();
    assert_eq!(g.buffered_values(), 0);
}

/// Each case, with values in memory and in RocksDB.
macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[test]
            fn $case() {
                super::$case(super::Store::Memory)
            })*
        }
        mod rocksdb {
            $(#[test]
            fn $case() {
                super::$case(super::Store::Rocksdb)
            })*
        }
    };
}

on_both_stores!(
    default_trigger_fires_once_when_the_watermark_passes_the_window,
    early_counts_then_on_time_then_late_panes_accumulating,
    discarding_panes_carry_only_new_values,
    processing_time_triggers_fire_when_processing_time_moves,
    earliest_output_time_holds_the_output_watermark,
    a_finished_trigger_closes_the_window,
    elements_behind_the_watermark_do_not_set_an_earliest_timestamp,
    session_windows_merge_as_data_arrives,
    values_leave_the_backend_with_their_window,
    a_checkpoint_restores_into_either_store,
    buffered_values_count_what_the_windows_hold,
);
