//! How long a streaming GroupByKey takes to let time move on while many
//! windows are open (one per key, as in per-user windows): an epoch should
//! cost what it fires, not what is buffered.
//!
//!     cargo bench -p ferrobeam-engine --bench streaming_gbk_advance
//!
//! prints, per number of open windows, the time of one advance of the
//! watermark and processing time that fires nothing.  (Before the windows
//! were indexed by deadline and hold, it grew linearly with them.)

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use bytes::Bytes;
use common::{format, iw, push};
use ferrobeam_engine::streaming::gbk::StreamingGroupByKey;
use ferrobeam_engine::streaming::gbk_values::ValueStore;
use ferrobeam_proto::pipeline::v1::{
    self as pb, accumulation_mode, closing_behavior, on_time_behavior, output_time, FunctionSpec,
};

const ADVANCES: i64 = 1000;

fn main() {
    let strategy = pb::WindowingStrategy {
        window_fn: Some(FunctionSpec {
            urn: "beam:window_fn:fixed_windows:v1".into(),
            payload: Default::default(),
        }),
        accumulation_mode: accumulation_mode::Enum::Discarding as i32,
        closing_behavior: closing_behavior::Enum::EmitAlways as i32,
        on_time_behavior: on_time_behavior::Enum::FireAlways as i32,
        output_time: output_time::Enum::EndOfWindow as i32,
        ..Default::default()
    };
    for windows in [1_000, 10_000, 100_000, 1_000_000] {
        let mut g =
            StreamingGroupByKey::new(&strategy, format("wv_interval"), ValueStore::in_memory())
                .expect("a GroupByKey");
        let mut chunk = Vec::new();
        for k in 0..windows {
            push(&mut chunk, 1, &[iw(0, 1_000_000)], &format!("k{k}"), k);
        }
        g.add(&Bytes::from(chunk)).expect("elements");
        let started = Instant::now();
        for i in 0..ADVANCES {
            let fired = g.advance(10 + i, i).expect("advance");
            assert!(fired.chunks.is_empty());
        }
        let per = started.elapsed() / ADVANCES as u32;
        println!(
            "{windows:>9} open windows: {per:>10.2?} per advance ({} still open)",
            g.open_windows()
        );
    }
}
