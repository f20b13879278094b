//! GroupByKey in streaming: panes as data and time arrive.
//!
//! Each (window, key) keeps its buffered values and a [`TriggerState`].
//! Elements may fire data-driven triggers at once ([`StreamingGroupByKey::add`]);
//! time moving on ([`StreamingGroupByKey::advance`]) fires watermark and
//! processing-time triggers, the on-time pane at the end of the window, and
//! garbage-collects each window once the input watermark is past its end
//! plus the allowed lateness, with a final pane when there is new data or an
//! on-time pane is owed (`FIRE_ALWAYS`).
//! Elements whose window has already been collected are dropped and counted
//! (Beam's "dropped due to lateness").
//!
//! Windows are kept in order of their end, so time advancing visits only
//! the windows it can affect, and the output is deterministic.  Session
//! windows merge as data arrives (a merged window's state is its parts'
//! combined, its panes start over, as in Beam's trigger transcripts);
//! custom merging window functions are refused in streaming at Prepare.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use ferrobeam_coders::{IntervalWindow, PaneInfo, Timing, MIN_TIMESTAMP_MILLIS};
use ferrobeam_proto::pipeline::v1::output_time::Enum as OutputTime;
use ferrobeam_proto::pipeline::v1::WindowingStrategy;

use ferrobeam_state::codec::{Reader, Writer};
use ferrobeam_state::StateError;

use super::gbk_values::{Buffered, Slot, ValueStore};
use crate::gbk::{write_group, ChunkWriter};
use crate::panes::PaneRules;
use crate::triggers::{Clock, TriggerState};
use crate::wire::WireFormat;
use crate::EngineError;

const SESSIONS: &str = "beam:window_fn:session_windows:v1";

struct WindowState {
    /// Values the next pane carries: all so far when accumulating, those
    /// since the last pane when discarding.
    values: Buffered,
    /// How many of `values` no pane has carried yet.
    fresh: usize,
    /// Timestamps of the fresh values that could hold the output watermark
    /// (for EARLIEST / LATEST output times); MAX / MIN when none could.
    fresh_min_ts: i64,
    fresh_max_ts: i64,
    trigger: TriggerState,
    panes: i64,
    /// Panes fired once the end of the window had passed (ON_TIME + LATE).
    after_end: i64,
    /// Where the window is filed in [`StreamingGroupByKey::deadlines`] and
    /// [`StreamingGroupByKey::holds`] (not saved: refiled on restore).
    deadline: Option<i64>,
    hold: Option<i64>,
}

impl WindowState {
    fn new(trigger: &ferrobeam_graph::trigger::Trigger) -> Self {
        WindowState {
            values: Buffered::default(),
            fresh: 0,
            fresh_min_ts: i64::MAX,
            fresh_max_ts: i64::MIN,
            trigger: TriggerState::new(trigger),
            panes: 0,
            after_end: 0,
            deadline: None,
            hold: None,
        }
    }

    /// Notes a new value's timestamp (which holds the watermark unless it
    /// is behind `output_watermark`).
    fn note(&mut self, ts: i64, output_watermark: i64) {
        // As in Beam's WatermarkHold: an element behind the output
        // watermark cannot hold it, so it does not count towards an
        // EARLIEST / LATEST pane timestamp either.
        if ts >= output_watermark {
            self.fresh_min_ts = self.fresh_min_ts.min(ts);
            self.fresh_max_ts = self.fresh_max_ts.max(ts);
        }
        self.fresh += 1;
    }
}

/// What a streaming GroupByKey tells its caller after each step.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fired {
    pub chunks: Vec<Bytes>,
    /// Elements dropped because their window had expired.
    pub dropped_late: u64,
}

pub struct StreamingGroupByKey {
    rules: PaneRules,
    /// Session windows: each key's active windows, merged as data arrives.
    sessions: Option<HashMap<Bytes, Vec<IntervalWindow>>>,
    format: WireFormat,
    windows: BTreeMap<Slot, WindowState>,
    /// Windows whose trigger waits for processing time, by the earliest
    /// time it could fire; time moving on visits only those due, the
    /// windows whose end it passed, and the windows it expires, not every
    /// open window (there may be millions: one per key).
    deadlines: BTreeSet<(i64, Slot)>,
    /// Windows with values no pane carried yet, by the timestamp their next
    /// pane will have: the first holds the output watermark.
    holds: BTreeSet<(i64, Slot)>,
    /// Windows that fired since time last moved: their triggers are asked
    /// again when it does (a trigger may be ready again at once).
    refire: BTreeSet<Slot>,
    values: ValueStore,
    input_watermark: i64,
    processing_time: i64,
    output_watermark: i64,
}

impl StreamingGroupByKey {
    pub fn new(
        windowing: &WindowingStrategy,
        format: WireFormat,
        values: ValueStore,
    ) -> Result<Self, EngineError> {
        let rules = PaneRules::including_default(windowing).ok_or_else(|| {
            EngineError::Internal("GroupByKey trigger was not validated at Prepare".into())
        })?;
        let merging = windowing
            .window_fn
            .as_ref()
            .is_some_and(|f| f.urn == SESSIONS);
        Ok(Self {
            rules,
            sessions: merging.then(HashMap::new),
            format,
            windows: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            holds: BTreeSet::new(),
            refire: BTreeSet::new(),
            values,
            input_watermark: MIN_TIMESTAMP_MILLIS,
            processing_time: MIN_TIMESTAMP_MILLIS,
            output_watermark: MIN_TIMESTAMP_MILLIS,
        })
    }

    /// Writes the buffered windows, their triggers and the watermarks (for
    /// a checkpoint).
    pub fn save(&self, w: &mut Writer) {
        match &self.sessions {
            None => w.bool(false),
            Some(sessions) => {
                w.bool(true).len(sessions.len());
                for (key, windows) in sessions {
                    w.bytes(key).len(windows.len());
                    for win in windows {
                        w.i64(win.start).i64(win.end);
                    }
                }
                &mut *w
            }
        };
        self.values.save_mode(w);
        w.len(self.windows.len());
        for ((end, window, key), state) in &self.windows {
            w.i64(*end).bytes(window).bytes(key);
            self.values.save(&state.values, w);
            w.varint(state.fresh as u64)
                .i64(state.fresh_min_ts)
                .i64(state.fresh_max_ts)
                .i64(state.panes)
                .i64(state.after_end);
            state.trigger.save(w);
        }
        w.i64(self.input_watermark)
            .i64(self.processing_time)
            .i64(self.output_watermark);
    }

    /// Reads back what [`StreamingGroupByKey::save`] wrote.
    pub fn load(&mut self, r: &mut Reader) -> Result<(), StateError> {
        if r.bool()? {
            let mut sessions = HashMap::new();
            for _ in 0..r.len()? {
                let key = r.bytes()?;
                let windows = (0..r.len()?)
                    .map(|_| {
                        Ok(IntervalWindow {
                            start: r.i64()?,
                            end: r.i64()?,
                        })
                    })
                    .collect::<Result<_, StateError>>()?;
                sessions.insert(key, windows);
            }
            if self.sessions.is_none() {
                return Err(r.error("session windows saved for a GroupByKey that does not merge"));
            }
            self.sessions = Some(sessions);
        }
        let saved_in_backend = r.bool()?;
        for _ in 0..r.len()? {
            let slot = (r.i64()?, r.bytes()?, r.bytes()?);
            let values = self.values.load(saved_in_backend, &slot, r)?;
            let state = WindowState {
                values,
                fresh: r.varint()? as usize,
                fresh_min_ts: r.i64()?,
                fresh_max_ts: r.i64()?,
                panes: r.i64()?,
                after_end: r.i64()?,
                trigger: TriggerState::load(r)?,
                deadline: None,
                hold: None,
            };
            self.windows.insert(slot, state);
        }
        // Refile every window, and ask every trigger once when time next
        // moves.
        let slots: Vec<Slot> = self.windows.keys().cloned().collect();
        for slot in &slots {
            self.refile(slot);
        }
        self.refire.extend(slots);
        self.input_watermark = r.i64()?;
        self.processing_time = r.i64()?;
        self.output_watermark = r.i64()?;
        self.values.flush()
    }

    /// Buffers a chunk of input elements arriving now; panes that
    /// data-driven triggers fire are returned.
    pub fn add(&mut self, chunk: &Bytes) -> Result<Fired, EngineError> {
        if self.sessions.is_some() {
            return self.add_merging(chunk);
        }
        let mut fired = Fired::default();
        let mut touched: Vec<Slot> = Vec::new();
        let format = &self.format;
        let mut arrivals: HashMap<Slot, Vec<(i64, Bytes)>> = HashMap::new();
        format.for_each(chunk, |e| {
            let key_end = format.key_end(chunk, e.value.start)?;
            let key = chunk.slice(e.value.start..key_end);
            let value = chunk.slice(key_end..e.value.end);
            for w in &e.windows {
                let window = chunk.slice(w.clone());
                let window_max = format.window_max_timestamp_or(&window, e.timestamp)?;
                if self.expired(window_max) {
                    fired.dropped_late += 1;
                    continue;
                }
                let slot = (window_max, window, key.clone());
                let entry = arrivals.entry(slot.clone()).or_default();
                if entry.is_empty() {
                    touched.push(slot);
                }
                entry.push((e.timestamp, value.clone()));
            }
            Ok(())
        })?;
        let mut open = Vec::with_capacity(touched.len());
        for slot in touched {
            let arrived = arrivals.remove(&slot).unwrap_or_default();
            let trigger = &self.rules.trigger;
            let state = self
                .windows
                .entry(slot.clone())
                .or_insert_with(|| WindowState::new(trigger));
            if state.trigger.is_finished() {
                // A finished trigger closed the window: later data is dropped.
                fired.dropped_late += arrived.len() as u64;
                continue;
            }
            let count = arrived.len() as u64;
            for (ts, _) in &arrived {
                state.note(*ts, self.output_watermark);
            }
            self.values.push(
                &slot,
                &mut state.values,
                arrived.into_iter().map(|(_, v)| v),
            );
            let clock = Clock {
                watermark: self.input_watermark,
                processing_time: self.processing_time,
                window_max: slot.0,
            };
            state
                .trigger
                .on_elements(trigger, count, self.processing_time, &clock);
            open.push(slot);
        }
        // Triggers are consulted once the chunk's values are all stored, so
        // the backend gets them in one write.
        let mut out = ChunkWriter::default();
        for slot in open {
            self.fire_if_ready(&slot, &mut out)?;
        }
        self.values.flush()?;
        fired.chunks = out.finish();
        self.update_output_watermark();
        Ok(fired)
    }

    /// [`StreamingGroupByKey::add`] for session windows: each element's
    /// window merges with the key's active windows it overlaps.  As in
    /// Beam, triggers are consulted once the whole chunk is in.
    fn add_merging(&mut self, chunk: &Bytes) -> Result<Fired, EngineError> {
        let mut fired = Fired::default();
        let mut arrivals = Vec::new();
        let format = &self.format;
        format.for_each(chunk, |e| {
            let key_end = format.key_end(chunk, e.value.start)?;
            let key = chunk.slice(e.value.start..key_end);
            let value = chunk.slice(key_end..e.value.end);
            for w in &e.windows {
                let (window, _) = IntervalWindow::decode(&chunk[w.clone()], 0).map_err(|e| {
                    EngineError::Internal(format!("session window is not an interval window: {e}"))
                })?;
                arrivals.push((key.clone(), window, e.timestamp, value.clone()));
            }
            Ok(())
        })?;
        let mut touched: Vec<Slot> = Vec::new();
        for (key, window, ts, value) in arrivals {
            if self.expired(window.max_timestamp()) {
                fired.dropped_late += 1;
                continue;
            }
            let slot = self.merge_into(&key, window)?;
            let clock = self.clock(slot.0);
            let (trigger, now, output_wm) = (
                &self.rules.trigger,
                self.processing_time,
                self.output_watermark,
            );
            if !touched.contains(&slot) {
                // (Even when it takes nothing: a merged window is filed then.)
                touched.push(slot.clone());
            }
            let state = self.windows.get_mut(&slot).expect("merge_into made it");
            if state.trigger.is_finished() {
                fired.dropped_late += 1;
                continue;
            }
            state.note(ts, output_wm);
            self.values.push(&slot, &mut state.values, [value]);
            state.trigger.on_elements(trigger, 1, now, &clock);
        }
        let mut out = ChunkWriter::default();
        for slot in touched {
            // (A later element may have merged it away.)
            if self.windows.contains_key(&slot) {
                self.fire_if_ready(&slot, &mut out)?;
            }
        }
        self.values.flush()?;
        fired.chunks = out.finish();
        self.update_output_watermark();
        Ok(fired)
    }

    /// The slot `window` of `key` belongs to after merging it with the
    /// key's overlapping active windows.  A window that swallows others is
    /// a new window: its state is theirs combined, its panes start over.
    fn merge_into(&mut self, key: &Bytes, window: IntervalWindow) -> Result<Slot, EngineError> {
        let slot_of = |w: &IntervalWindow| -> Slot {
            let mut bytes = Vec::new();
            w.encode(&mut bytes);
            (w.max_timestamp(), Bytes::from(bytes), key.clone())
        };
        let active = self
            .sessions
            .as_mut()
            .expect("merging windowing")
            .entry(key.clone())
            .or_default();
        let mut overlapping: Vec<IntervalWindow> = active
            .iter()
            .filter(|a| a.start < window.end && window.start < a.end)
            .copied()
            .collect();
        if let [only] = overlapping.as_slice() {
            if only.start <= window.start && window.end <= only.end {
                return Ok(slot_of(only));
            }
        }
        overlapping.sort_by_key(|w| (w.start, w.end));
        let merged = overlapping.iter().fold(window, |m, w| {
            IntervalWindow::new(m.start.min(w.start), m.end.max(w.end))
        });
        active.retain(|a| !overlapping.contains(a));
        active.push(merged);
        let parts: Vec<(Slot, WindowState)> = overlapping
            .iter()
            .filter_map(|w| {
                let slot = slot_of(w);
                let mut state = self.windows.remove(&slot)?;
                self.unfile(&slot, &mut state);
                Some((slot, state))
            })
            .collect();
        let slot = slot_of(&merged);
        let trigger = &self.rules.trigger;
        let mut state = WindowState::new(trigger);
        if !parts.is_empty() {
            let triggers: Vec<&TriggerState> = parts.iter().map(|(_, p)| &p.trigger).collect();
            let end_passed = self.input_watermark > merged.max_timestamp();
            state.trigger = TriggerState::merged(trigger, &triggers, end_passed);
            for (part_slot, p) in parts {
                state.fresh += p.fresh;
                state.fresh_min_ts = state.fresh_min_ts.min(p.fresh_min_ts);
                state.fresh_max_ts = state.fresh_max_ts.max(p.fresh_max_ts);
                self.values
                    .absorb(&slot, &mut state.values, &part_slot, p.values)?;
            }
        }
        self.windows.insert(slot.clone(), state);
        Ok(slot)
    }

    /// Moves the input watermark and processing time forward (never back)
    /// and fires what that makes due.
    pub fn advance(&mut self, watermark: i64, processing_time: i64) -> Result<Fired, EngineError> {
        let passed_before = self.input_watermark;
        self.input_watermark = self.input_watermark.max(watermark);
        self.processing_time = self.processing_time.max(processing_time);
        let mut out = ChunkWriter::default();
        // The windows time moving on can fire or collect (see `deadlines`).
        let mut due = std::mem::take(&mut self.refire);
        let first_of = |end: i64| (end, Bytes::new(), Bytes::new());
        let now_passed = first_of(passed_before)..first_of(self.input_watermark);
        due.extend(self.windows.range(now_passed).map(|(slot, _)| slot.clone()));
        due.extend(
            self.windows
                .keys()
                .take_while(|slot| self.expired(slot.0))
                .cloned(),
        );
        let now = (self.processing_time.saturating_add(1), first_of(i64::MIN));
        due.extend(self.deadlines.range(..now).map(|(_, slot)| slot.clone()));
        for slot in due {
            if !self.expired(slot.0) {
                self.fire_if_ready(&slot, &mut out)?;
                continue;
            }
            // The end-of-window firing comes before garbage collection when
            // allowed lateness separates them; when they coincide, Beam
            // fires once, and that pane is the last.
            if self.rules.allowed_lateness > 0 {
                self.fire_if_ready(&slot, &mut out)?;
            }
            self.close(&slot, &mut out)?;
        }
        self.values.flush()?;
        self.update_output_watermark();
        Ok(Fired {
            chunks: out.finish(),
            dropped_late: 0,
        })
    }

    /// The earliest processing time a window's trigger waits for.
    pub fn next_processing_deadline(&self) -> Option<i64> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// The watermark downstream may see: the input watermark, held back by
    /// buffered data whose pane will be stamped earlier.
    pub fn output_watermark(&self) -> i64 {
        self.output_watermark
    }

    /// Windows still buffered (for tests and memory figures).
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    /// Values buffered in all open windows: what the stage holds until
    /// panes carry (and windows expire) them, reported as the job's
    /// `gbk_buffered_values` gauge.
    pub fn buffered_values(&self) -> u64 {
        self.values.buffered()
    }

    /// The most values the stage has buffered at once since it started (or
    /// was restored), reported as `gbk_buffered_values_peak`.
    pub fn peak_buffered_values(&self) -> u64 {
        self.values.peak()
    }

    fn expired(&self, window_max: i64) -> bool {
        window_max.saturating_add(self.rules.allowed_lateness) < self.input_watermark
    }

    fn clock(&self, window_max: i64) -> Clock {
        Clock {
            watermark: self.input_watermark,
            processing_time: self.processing_time,
            window_max,
        }
    }

    fn fire_if_ready(&mut self, slot: &Slot, out: &mut ChunkWriter) -> Result<(), EngineError> {
        let clock = self.clock(slot.0);
        let (input_wm, output_wm) = (self.input_watermark, self.output_watermark);
        let trigger = &self.rules.trigger;
        let Some(state) = self.windows.get_mut(slot) else {
            return Ok(());
        };
        if !state.trigger.should_fire(trigger, &clock) {
            // (Its trigger or values may have changed since it was filed.)
            self.refile(slot);
            return Ok(());
        }
        state.trigger.on_fire(trigger, &clock);
        let finished = state.trigger.is_finished();
        let timing = timing(input_wm, output_wm, slot.0, state.after_end);
        // An on-time pane fires even empty under FIRE_ALWAYS; others need data.
        if state.fresh > 0 || (timing == Timing::OnTime && self.rules.on_time_always) {
            emit(
                &self.rules,
                &mut self.values,
                slot,
                state,
                timing,
                finished,
                out,
            )?;
        }
        if finished {
            // The window is closed; its state goes, later data is dropped
            // (the finished trigger is kept to remember that).
            self.values.clear(slot, &mut state.values);
            state.fresh = 0;
        } else {
            self.refire.insert(slot.clone());
        }
        self.refile(slot);
        Ok(())
    }

    /// Files the window under its trigger's processing-time deadline and
    /// its watermark hold, after either may have changed.
    fn refile(&mut self, slot: &Slot) {
        let Some(state) = self.windows.get_mut(slot) else {
            return;
        };
        let deadline = state.trigger.next_processing_deadline(&self.rules.trigger);
        let hold = (state.fresh > 0).then(|| pane_timestamp(&self.rules, slot.0, state));
        move_filing(&mut self.deadlines, slot, &mut state.deadline, deadline);
        move_filing(&mut self.holds, slot, &mut state.hold, hold);
    }

    /// Takes a window that is going away out of the indexes.
    fn unfile(&mut self, slot: &Slot, state: &mut WindowState) {
        move_filing(&mut self.deadlines, slot, &mut state.deadline, None);
        move_filing(&mut self.holds, slot, &mut state.hold, None);
        self.refire.remove(slot);
    }

    /// Garbage collection: the final pane if one is due, then the window goes.
    fn close(&mut self, slot: &Slot, out: &mut ChunkWriter) -> Result<(), EngineError> {
        let Some(mut state) = self.windows.remove(slot) else {
            return Ok(());
        };
        self.unfile(slot, &mut state);
        if let Some(sessions) = &mut self.sessions {
            if let (Some(active), Ok((window, _))) = (
                sessions.get_mut(&slot.2),
                IntervalWindow::decode(&slot.1, 0),
            ) {
                active.retain(|w| *w != window);
                if active.is_empty() {
                    sessions.remove(&slot.2);
                }
            }
        }
        if !state.trigger.is_finished() {
            let timing = timing(
                self.input_watermark,
                self.output_watermark,
                slot.0,
                state.after_end,
            );
            if state.fresh > 0 || (timing == Timing::OnTime && self.rules.on_time_always) {
                emit(
                    &self.rules,
                    &mut self.values,
                    slot,
                    &mut state,
                    timing,
                    true,
                    out,
                )?;
            }
        }
        self.values.clear(slot, &mut state.values);
        Ok(())
    }

    fn update_output_watermark(&mut self) {
        let hold = self.holds.first().map_or(self.input_watermark, |(ts, _)| {
            self.input_watermark.min(*ts)
        });
        // Monotonic: late data stamped behind what was already announced
        // does not move the watermark back.
        self.output_watermark = self.output_watermark.max(hold);
    }
}

/// Moves `slot`'s entry in `index` from `filed` to `now`.
fn move_filing(
    index: &mut BTreeSet<(i64, Slot)>,
    slot: &Slot,
    filed: &mut Option<i64>,
    now: Option<i64>,
) {
    if *filed == now {
        return;
    }
    if let Some(t) = filed.take() {
        index.remove(&(t, slot.clone()));
    }
    if let Some(t) = now {
        index.insert((t, slot.clone()));
    }
    *filed = now;
}

/// A pane's timing: early before the input watermark passes the end of the
/// window; on time for the first pane after that, unless the output
/// watermark had already passed the window (then the pane is late for
/// downstream anyway); late after.
fn timing(input_wm: i64, output_wm: i64, window_max: i64, after_end: i64) -> Timing {
    if input_wm <= window_max {
        Timing::Early
    } else if after_end == 0 && output_wm <= window_max {
        Timing::OnTime
    } else {
        Timing::Late
    }
}

/// EARLIEST / LATEST: of the pane's new elements that could hold the
/// watermark; the end of the window otherwise (and for END_OF_WINDOW).
fn pane_timestamp(rules: &PaneRules, window_max: i64, state: &WindowState) -> i64 {
    let held = state.fresh_min_ts <= state.fresh_max_ts;
    match rules.output_time {
        OutputTime::EarliestInPane if held => state.fresh_min_ts,
        OutputTime::LatestInPane if held => state.fresh_max_ts,
        _ => window_max,
    }
}

fn emit(
    rules: &PaneRules,
    values: &mut ValueStore,
    slot: &Slot,
    state: &mut WindowState,
    timing: Timing,
    is_last: bool,
    out: &mut ChunkWriter,
) -> Result<(), EngineError> {
    let (window_max, window, key) = slot;
    let on_time_index = if timing == Timing::Early {
        -1
    } else {
        state.after_end += 1;
        state.after_end - 1
    };
    let pane = PaneInfo {
        is_first: state.panes == 0,
        is_last,
        timing,
        index: state.panes,
        on_time_index,
    };
    let ts = pane_timestamp(rules, *window_max, state);
    write_group(
        out.buf(),
        ts,
        window,
        &pane,
        key,
        &values.read(slot, &state.values)?,
    );
    state.panes += 1;
    state.fresh = 0;
    state.fresh_min_ts = i64::MAX;
    state.fresh_max_ts = i64::MIN;
    if !rules.accumulating {
        values.clear(slot, &mut state.values);
    }
    Ok(())
}
