//! Side inputs of a streaming stage, while they are still arriving.
//!
//! A main-input element may only run once every side input is complete for
//! its window: the side input's watermark has passed the end of the
//! element's window.  So a side input fed by an unbounded source (Beam's
//! "slowly updating side input" pattern: a `PeriodicImpulse` with fixed
//! windows that reloads a model) unblocks the main input window by window,
//! and each window sees the side data that belongs to it.  The side data
//! is rebuilt when more arrives, under a new cache-token generation, so a
//! worker's side-input cache never serves the old contents.  Side data of
//! expired windows is dropped (see [`SideInputBuffer::collect_expired`]).

use std::sync::Arc;

use bytes::Bytes;
use ferrobeam_coders::MAX_TIMESTAMP_MILLIS;
use ferrobeam_graph::SideInput;

use ferrobeam_state::codec::{Reader, Writer};
use ferrobeam_state::StateError;

use crate::state::{SideInputData, SideInputs};
use crate::wire::WireFormat;
use crate::EngineError;

pub(super) struct SideInputBuffer {
    /// Everything each side input has received, in the stage's order.
    chunks: Vec<Vec<Bytes>>,
    built: Arc<SideInputs>,
    /// Bumped whenever `built` changes (part of the side-input cache tokens).
    generation: u64,
    stale: bool,
}

impl SideInputBuffer {
    pub(super) fn new(count: usize) -> Self {
        SideInputBuffer {
            chunks: vec![Vec::new(); count],
            built: Arc::default(),
            generation: 0,
            stale: count > 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.chunks.iter().all(Vec::is_empty)
    }

    /// Writes everything received so far (for a checkpoint).
    pub(super) fn save(&self, w: &mut Writer) {
        w.len(self.chunks.len());
        for chunks in &self.chunks {
            w.len(chunks.len());
            for c in chunks {
                w.bytes(c);
            }
        }
    }

    /// Reads back what [`SideInputBuffer::save`] wrote; the side data is
    /// rebuilt on next use.
    pub(super) fn load(&mut self, r: &mut Reader) -> Result<(), StateError> {
        let n = r.len()?;
        if n != self.chunks.len() {
            return Err(r.error(format!(
                "{n} side inputs saved, the stage has {}",
                self.chunks.len()
            )));
        }
        for i in 0..n {
            self.chunks[i] = (0..r.len()?).map(|_| r.bytes()).collect::<Result<_, _>>()?;
        }
        self.stale = true;
        Ok(())
    }

    /// Side input `index` received `chunks`.
    pub(super) fn add(&mut self, index: usize, chunks: Vec<Bytes>) {
        let chunks: Vec<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        if !chunks.is_empty() {
            self.chunks[index].extend(chunks);
            self.stale = true;
        }
    }

    /// Drops the side elements all of whose windows are `expired` (side
    /// input index, one window's encoding); returns how many.  A side input
    /// fed by an unbounded source grows forever otherwise, and every rebuild
    /// would walk all of it.
    pub(super) fn collect_expired(
        &mut self,
        formats: &[WireFormat],
        expired: impl Fn(usize, &[u8]) -> Result<bool, EngineError>,
    ) -> Result<usize, EngineError> {
        let mut total = 0;
        for (index, (chunks, format)) in self.chunks.iter_mut().zip(formats).enumerate() {
            let mut kept = Vec::with_capacity(chunks.len());
            let mut dropped = 0;
            for chunk in chunks.iter() {
                let mut live = Vec::new();
                let dropped_before = dropped;
                format.for_each(chunk, |e| {
                    let mut all_expired = !e.windows.is_empty();
                    for w in &e.windows {
                        all_expired = all_expired && expired(index, &chunk[w.clone()])?;
                    }
                    if all_expired {
                        dropped += 1;
                    } else {
                        live.push(e.range);
                    }
                    Ok(())
                })?;
                if dropped == dropped_before {
                    kept.push(chunk.clone()); // untouched chunks stay whole
                } else {
                    kept.extend(live.into_iter().map(|r| chunk.slice(r)));
                }
            }
            if dropped > 0 {
                *chunks = kept;
                self.stale = true;
                total += dropped;
            }
        }
        Ok(total)
    }

    /// The side data received so far and its generation.
    pub(super) fn current(
        &mut self,
        specs: &[SideInput],
        formats: &[WireFormat],
    ) -> Result<(Arc<SideInputs>, u64), EngineError> {
        if self.stale {
            let mut built = SideInputs::new();
            for ((spec, format), chunks) in specs.iter().zip(formats).zip(&self.chunks) {
                built.insert(
                    (spec.transform_id.clone(), spec.local_name.clone()),
                    Arc::new(SideInputData::build(spec, chunks, format)?),
                );
            }
            self.built = Arc::new(built);
            self.generation += 1;
            self.stale = false;
        }
        Ok((self.built.clone(), self.generation))
    }
}

/// Main-input elements split by whether their windows are complete in
/// every side input (`side_watermark`: the minimum of the side inputs'
/// watermarks).
pub(super) struct Released {
    pub ready: Vec<Bytes>,
    pub waiting: Vec<Bytes>,
    /// The earliest timestamp among `waiting` (MAX when none): it holds the
    /// stage's output watermark.
    pub waiting_min_timestamp: i64,
}

pub(super) fn release(
    held: Vec<Bytes>,
    format: &WireFormat,
    side_watermark: i64,
) -> Result<Released, EngineError> {
    if side_watermark == MAX_TIMESTAMP_MILLIS {
        return Ok(Released {
            ready: held,
            waiting: Vec::new(),
            waiting_min_timestamp: MAX_TIMESTAMP_MILLIS,
        });
    }
    let mut out = Released {
        ready: Vec::new(),
        waiting: Vec::new(),
        waiting_min_timestamp: MAX_TIMESTAMP_MILLIS,
    };
    for chunk in &held {
        format.for_each(chunk, |e| {
            let mut complete = true;
            for w in &e.windows {
                // A window the runner cannot read waits for the very end.
                let end =
                    format.window_max_timestamp_or(&chunk[w.clone()], MAX_TIMESTAMP_MILLIS)?;
                complete &= end < side_watermark;
            }
            if complete {
                out.ready.push(chunk.slice(e.range));
            } else {
                out.waiting_min_timestamp = out.waiting_min_timestamp.min(e.timestamp);
                out.waiting.push(chunk.slice(e.range));
            }
            Ok(())
        })?;
    }
    Ok(out)
}
