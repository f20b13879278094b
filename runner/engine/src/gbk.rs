//! Native GroupByKey for non-merging windows with the default trigger.
//!
//! Groups by (encoded window, encoded key): Beam requires deterministic key
//! coders, so equal keys have equal bytes.  Values are slices of the input
//! buffers; nothing is decoded or copied until the output is written.

use std::collections::HashMap;

use bytes::Bytes;
use ferrobeam_coders::{IntervalWindow, PaneInfo, Timing};
use ferrobeam_proto::pipeline::v1::output_time::Enum as OutputTime;
use ferrobeam_proto::pipeline::v1::WindowingStrategy;

use crate::window_merge::MergedWindows;
use crate::wire::WireFormat;
use crate::EngineError;

/// Output chunks are cut at about this size.
const OUTPUT_CHUNK_BYTES: usize = 1 << 20;

struct Group {
    window: Bytes,
    key: Bytes,
    values: Vec<Bytes>,
    min_ts: i64,
    max_ts: i64,
}

/// Session-like windows merge: per key, overlapping intervals become one.
fn is_merging(windowing: &WindowingStrategy) -> bool {
    windowing
        .window_fn
        .as_ref()
        .is_some_and(|f| f.urn == "beam:window_fn:session_windows:v1")
}

fn merge_sessions(groups: Vec<Group>) -> Result<Vec<Group>, EngineError> {
    let mut by_key: HashMap<Bytes, Vec<(IntervalWindow, Group)>> = HashMap::new();
    for g in groups {
        let (w, _) = IntervalWindow::decode(&g.window, 0).map_err(|e| {
            EngineError::Internal(format!("session window is not an interval window: {e}"))
        })?;
        by_key.entry(g.key.clone()).or_default().push((w, g));
    }
    let mut out = Vec::new();
    for (_, mut windows) in by_key {
        windows.sort_by_key(|(w, _)| (w.start, w.end));
        let mut current: Option<(IntervalWindow, Group)> = None;
        for (w, g) in windows {
            current = Some(match current.take() {
                Some((cw, mut cg)) if w.start < cw.end => {
                    cg.values.extend(g.values);
                    cg.min_ts = cg.min_ts.min(g.min_ts);
                    cg.max_ts = cg.max_ts.max(g.max_ts);
                    (IntervalWindow::new(cw.start, cw.end.max(w.end)), cg)
                }
                Some(done) => {
                    out.push(finish(done));
                    (w, g)
                }
                None => (w, g),
            });
        }
        out.extend(current.map(finish));
    }
    Ok(out)
}

fn finish((w, mut g): (IntervalWindow, Group)) -> Group {
    let mut buf = Vec::new();
    w.encode(&mut buf);
    g.window = Bytes::from(buf);
    g
}

pub fn group_by_key(
    input: &[Bytes],
    format: &WireFormat,
    windowing: &WindowingStrategy,
) -> Result<Vec<Bytes>, EngineError> {
    group_by_key_merged(input, format, windowing, None)
}

/// [`group_by_key`] for custom merging window functions: `merged` says which
/// window each (key, window) merged into (see [`crate::window_merge`]).
pub fn group_by_key_merged(
    input: &[Bytes],
    format: &WireFormat,
    windowing: &WindowingStrategy,
    merged: Option<&MergedWindows>,
) -> Result<Vec<Bytes>, EngineError> {
    let mut index: HashMap<(Bytes, Bytes), usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    // (Beam's GroupByKey output order is unspecified; ours follows first arrival.)
    for chunk in input {
        format.for_each(chunk, |e| {
            let key_end = format.key_end(chunk, e.value.start)?;
            let key = chunk.slice(e.value.start..key_end);
            let value = chunk.slice(key_end..e.value.end);
            for w in &e.windows {
                let mut window = chunk.slice(w.clone());
                if let Some(to) = merged
                    .and_then(|m| m.get(&key))
                    .and_then(|m| m.get(&window))
                {
                    window = to.clone();
                }
                let n = *index
                    .entry((window.clone(), key.clone()))
                    .or_insert_with(|| {
                        groups.push(Group {
                            window,
                            key: key.clone(),
                            values: Vec::new(),
                            min_ts: i64::MAX,
                            max_ts: i64::MIN,
                        });
                        groups.len() - 1
                    });
                let g = &mut groups[n];
                g.values.push(value.clone());
                g.min_ts = g.min_ts.min(e.timestamp);
                g.max_ts = g.max_ts.max(e.timestamp);
            }
            Ok(())
        })?;
    }
    if is_merging(windowing) {
        groups = merge_sessions(groups)?;
    }
    if let Some(rules) = crate::panes::PaneRules::new(windowing) {
        return write_triggered(groups, format, &rules);
    }
    let output_time =
        OutputTime::try_from(windowing.output_time).unwrap_or(OutputTime::EndOfWindow);
    // With the default trigger in batch every group fires exactly once, on time.
    let pane = PaneInfo {
        is_first: true,
        is_last: true,
        timing: Timing::OnTime,
        index: 0,
        on_time_index: 0,
    };
    let mut out = ChunkWriter::default();
    for g in groups {
        // Custom windows the runner cannot read: the latest input timestamp
        // stands in for the end of the window (see docs/design.md).
        let eow = format.window_max_timestamp_or(&g.window, g.max_ts)?;
        let ts = match output_time {
            OutputTime::EarliestInPane => g.min_ts,
            OutputTime::LatestInPane => g.max_ts,
            _ => eow,
        };
        write_group(out.buf(), ts, &g.window, &pane, &g.key, &g.values);
    }
    Ok(out.finish())
}

/// One GroupByKey output: KV(key, iterable of values) with a known count.
pub(crate) fn write_group(
    buf: &mut Vec<u8>,
    ts: i64,
    window: &[u8],
    pane: &PaneInfo,
    key: &[u8],
    values: &[Bytes],
) {
    let count = (values.len() as u32).to_be_bytes();
    crate::wire::write_element(buf, ts, window, pane, &[key, &count]);
    for v in values {
        buf.extend_from_slice(v);
    }
}

/// Non-default triggers: each group may fire several panes (see `panes`).
fn write_triggered(
    groups: Vec<Group>,
    format: &WireFormat,
    rules: &crate::panes::PaneRules,
) -> Result<Vec<Bytes>, EngineError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut out = ChunkWriter::default();
    for g in groups {
        let input = crate::panes::WindowInput {
            values: &g.values,
            min_ts: g.min_ts,
            max_ts: g.max_ts,
            window_max: format.window_max_timestamp_or(&g.window, g.max_ts)?,
        };
        for pane in rules.panes(&input, now) {
            write_group(
                out.buf(),
                pane.timestamp,
                &g.window,
                &pane.pane,
                &g.key,
                &g.values[pane.values],
            );
        }
    }
    Ok(out.finish())
}

/// Output bytes cut into chunks of about [`OUTPUT_CHUNK_BYTES`].
#[derive(Default)]
pub(crate) struct ChunkWriter {
    chunks: Vec<Bytes>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    /// The buffer to append the next element to.
    pub(crate) fn buf(&mut self) -> &mut Vec<u8> {
        if self.buf.len() >= OUTPUT_CHUNK_BYTES {
            self.chunks.push(Bytes::from(std::mem::take(&mut self.buf)));
        }
        &mut self.buf
    }

    pub(crate) fn finish(mut self) -> Vec<Bytes> {
        if !self.buf.is_empty() {
            self.chunks.push(Bytes::from(self.buf));
        }
        self.chunks
    }
}
