//! The trigger state machine: when a window's pane fires, and whether the
//! trigger is finished (which closes the window).
//!
//! One [`TriggerState`] tree per (key, window) mirrors the trigger tree.
//! The GroupByKey feeds it elements and time (input watermark and
//! processing time), asks [`TriggerState::should_fire`], and calls
//! [`TriggerState::on_fire`] when it emits a pane.

use ferrobeam_graph::trigger::Trigger;
use ferrobeam_state::codec::{Reader, Writer};
use ferrobeam_state::StateError;

/// The times a trigger decision is made at.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub watermark: i64,
    pub processing_time: i64,
    /// The window's max timestamp: the end of the window is passed when the
    /// watermark is beyond it.
    pub window_max: i64,
}

impl Clock {
    fn past_end_of_window(&self) -> bool {
        self.watermark > self.window_max
    }
}

#[derive(Clone, Debug, Default)]
pub struct TriggerState {
    finished: bool,
    /// Elements since the last reset (element count, Always, Default's late firings).
    count: u64,
    /// Processing time of the first element since the last reset.
    first_arrival: Option<i64>,
    /// AfterEndOfWindow: the on-time pane has fired.  Default: likewise.
    on_time_fired: bool,
    /// AfterEach: the current subtrigger.
    current: usize,
    children: Vec<TriggerState>,
}

/// A trigger's subtriggers, in the order of [`TriggerState`]'s children
/// (`None`: an absent early or late firing).
fn subtriggers(trigger: &Trigger) -> Vec<Option<&Trigger>> {
    match trigger {
        Trigger::AfterEndOfWindow { early, late } => vec![early.as_deref(), late.as_deref()],
        Trigger::Repeat(sub) => vec![Some(sub)],
        Trigger::AfterEach(subs) | Trigger::AfterAll(subs) | Trigger::AfterAny(subs) => {
            subs.iter().map(Some).collect()
        }
        Trigger::OrFinally { main, finally } => vec![Some(main), Some(finally)],
        _ => Vec::new(),
    }
}

impl TriggerState {
    pub fn new(trigger: &Trigger) -> Self {
        let children = match trigger {
            Trigger::AfterEndOfWindow { early, late } => {
                // Slots 0 and 1: early and late firings (default state when absent).
                vec![
                    early.as_deref().map(TriggerState::new).unwrap_or_default(),
                    late.as_deref().map(TriggerState::new).unwrap_or_default(),
                ]
            }
            Trigger::Repeat(sub) => vec![TriggerState::new(sub)],
            Trigger::AfterEach(subs) | Trigger::AfterAll(subs) | Trigger::AfterAny(subs) => {
                subs.iter().map(TriggerState::new).collect()
            }
            Trigger::OrFinally { main, finally } => {
                vec![TriggerState::new(main), TriggerState::new(finally)]
            }
            _ => Vec::new(),
        };
        TriggerState {
            children,
            ..Default::default()
        }
    }

    /// Writes the state tree (for a checkpoint).
    pub fn save(&self, w: &mut Writer) {
        w.bool(self.finished)
            .varint(self.count)
            .bool(self.first_arrival.is_some())
            .i64(self.first_arrival.unwrap_or(0))
            .bool(self.on_time_fired)
            .len(self.current)
            .len(self.children.len());
        for c in &self.children {
            c.save(w);
        }
    }

    pub fn load(r: &mut Reader) -> Result<Self, StateError> {
        let finished = r.bool()?;
        let count = r.varint()?;
        let has_arrival = r.bool()?;
        let arrival = r.i64()?;
        let on_time_fired = r.bool()?;
        let current = r.len()?;
        let children = (0..r.len()?)
            .map(|_| TriggerState::load(r))
            .collect::<Result<_, _>>()?;
        Ok(TriggerState {
            finished,
            count,
            first_arrival: has_arrival.then_some(arrival),
            on_time_fired,
            current,
            children,
        })
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The state of a window made by merging windows in `states` (session
    /// windows): counts add up, the earliest arrival stands, and a firing
    /// that happened in any of them happened, except the on-time firing when
    /// the merged window's end is still ahead (`end_passed` false).
    pub fn merged(trigger: &Trigger, states: &[&TriggerState], end_passed: bool) -> TriggerState {
        let mut m = TriggerState::new(trigger);
        m.count = states.iter().map(|s| s.count).sum();
        m.first_arrival = states.iter().filter_map(|s| s.first_arrival).min();
        m.on_time_fired = end_passed && states.iter().any(|s| s.on_time_fired);
        m.current = states.iter().map(|s| s.current).max().unwrap_or(0);
        let subs = subtriggers(trigger);
        for (i, child) in m.children.iter_mut().enumerate() {
            let parts: Vec<&TriggerState> =
                states.iter().filter_map(|s| s.children.get(i)).collect();
            *child = match subs.get(i).copied().flatten() {
                Some(sub) => TriggerState::merged(sub, &parts, end_passed),
                None => TriggerState::default(),
            };
        }
        m
    }

    /// `n` elements arrived at processing time `arrival`.
    pub fn on_elements(&mut self, trigger: &Trigger, n: u64, arrival: i64, clock: &Clock) {
        if self.finished || n == 0 {
            return;
        }
        self.count += n;
        self.first_arrival.get_or_insert(arrival);
        match trigger {
            Trigger::AfterEndOfWindow { early, late } => {
                let (slot, sub) = if self.on_time_fired || clock.past_end_of_window() {
                    (1, late)
                } else {
                    (0, early)
                };
                if let Some(sub) = sub {
                    self.children[slot].on_elements(sub, n, arrival, clock);
                }
            }
            Trigger::Repeat(sub) => self.children[0].on_elements(sub, n, arrival, clock),
            Trigger::AfterEach(subs) => {
                if let Some(sub) = subs.get(self.current) {
                    self.children[self.current].on_elements(sub, n, arrival, clock);
                }
            }
            Trigger::AfterAll(subs) | Trigger::AfterAny(subs) => {
                for (sub, st) in subs.iter().zip(&mut self.children) {
                    st.on_elements(sub, n, arrival, clock);
                }
            }
            Trigger::OrFinally { main, finally } => {
                self.children[0].on_elements(main, n, arrival, clock);
                self.children[1].on_elements(finally, n, arrival, clock);
            }
            _ => {}
        }
    }

    /// The earliest processing time at which a processing-time part of the
    /// trigger could fire (a bound: the caller re-checks
    /// [`TriggerState::should_fire`] then).  `None`: no such deadline.
    pub fn next_processing_deadline(&self, trigger: &Trigger) -> Option<i64> {
        if self.finished {
            return None;
        }
        match trigger {
            Trigger::AfterProcessingTime(transforms) => self
                .first_arrival
                .map(|first| transforms.iter().fold(first, |t, tr| tr.apply(t))),
            _ => subtriggers(trigger)
                .into_iter()
                .zip(&self.children)
                .filter_map(|(sub, st)| st.next_processing_deadline(sub?))
                .min(),
        }
    }

    pub fn should_fire(&self, trigger: &Trigger, clock: &Clock) -> bool {
        if self.finished {
            return false;
        }
        match trigger {
            Trigger::Default => {
                clock.past_end_of_window() && (!self.on_time_fired || self.count > 0)
            }
            Trigger::AfterEndOfWindow { early, late } => {
                if !self.on_time_fired {
                    clock.past_end_of_window()
                        || early
                            .as_deref()
                            .is_some_and(|e| self.children[0].should_fire(e, clock))
                } else {
                    late.as_deref()
                        .is_some_and(|l| self.children[1].should_fire(l, clock))
                }
            }
            Trigger::ElementCount(n) => self.count >= *n,
            Trigger::AfterProcessingTime(transforms) => self.first_arrival.is_some_and(|first| {
                let deadline = transforms.iter().fold(first, |t, tr| tr.apply(t));
                clock.processing_time >= deadline
            }),
            Trigger::Always => self.count > 0,
            Trigger::Never => false,
            Trigger::Repeat(sub) => self.children[0].should_fire(sub, clock),
            Trigger::AfterEach(subs) => subs
                .get(self.current)
                .is_some_and(|s| self.children[self.current].should_fire(s, clock)),
            Trigger::AfterAll(subs) => subs
                .iter()
                .zip(&self.children)
                .all(|(s, st)| st.finished || st.should_fire(s, clock)),
            Trigger::AfterAny(subs) => subs
                .iter()
                .zip(&self.children)
                .any(|(s, st)| st.should_fire(s, clock)),
            Trigger::OrFinally { main, finally } => {
                self.children[0].should_fire(main, clock)
                    || self.children[1].should_fire(finally, clock)
            }
        }
    }

    /// The trigger fired: advance its state.
    pub fn on_fire(&mut self, trigger: &Trigger, clock: &Clock) {
        match trigger {
            Trigger::Default => self.on_time_fired = true,
            Trigger::AfterEndOfWindow { early, late } => {
                if !self.on_time_fired {
                    if clock.past_end_of_window() {
                        self.on_time_fired = true;
                        // Without late firings the trigger is done once on time.
                        self.finished = late.is_none();
                    } else if let Some(e) = early {
                        // Early firings repeat until the end of the window.
                        self.children[0] = TriggerState::new(e);
                    }
                } else if let Some(l) = late {
                    self.children[1] = TriggerState::new(l);
                }
            }
            Trigger::ElementCount(_) | Trigger::AfterProcessingTime(_) => self.finished = true,
            Trigger::Always | Trigger::Never => {}
            Trigger::Repeat(sub) => self.children[0] = TriggerState::new(sub),
            Trigger::AfterEach(subs) => {
                if let Some(sub) = subs.get(self.current) {
                    self.children[self.current].on_fire(sub, clock);
                    if self.children[self.current].finished {
                        self.current += 1;
                    }
                }
                self.finished = self.current >= subs.len();
            }
            Trigger::AfterAll(subs) => {
                for (s, st) in subs.iter().zip(&mut self.children) {
                    if !st.finished && st.should_fire(s, clock) {
                        st.on_fire(s, clock);
                    }
                }
                self.finished = true;
            }
            Trigger::AfterAny(subs) => {
                for (s, st) in subs.iter().zip(&mut self.children) {
                    if st.should_fire(s, clock) {
                        st.on_fire(s, clock);
                    }
                }
                self.finished = true;
            }
            Trigger::OrFinally { main, finally } => {
                if self.children[1].should_fire(finally, clock) {
                    self.finished = true;
                } else {
                    self.children[0].on_fire(main, clock);
                    self.finished = self.children[0].finished;
                }
            }
        }
        // Counts and arrival times are "since the last firing".
        self.count = 0;
        self.first_arrival = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrobeam_graph::trigger::TimestampTransform;

    const BEFORE: Clock = Clock {
        watermark: i64::MIN,
        processing_time: 0,
        window_max: 100,
    };
    const AFTER: Clock = Clock {
        watermark: i64::MAX,
        processing_time: i64::MAX,
        window_max: 100,
    };

    fn run(trigger: &Trigger, batches: &[u64]) -> (Vec<bool>, TriggerState) {
        let mut st = TriggerState::new(trigger);
        let mut fired = Vec::new();
        for &n in batches {
            st.on_elements(trigger, n, 0, &BEFORE);
            let f = st.should_fire(trigger, &BEFORE);
            if f {
                st.on_fire(trigger, &BEFORE);
            }
            fired.push(f);
        }
        (fired, st)
    }

    #[test]
    fn element_count_fires_once_then_finishes() {
        let t = Trigger::ElementCount(2);
        let (fired, st) = run(&t, &[1, 1, 1]);
        assert_eq!(fired, [false, true, false]);
        assert!(st.is_finished());
    }

    #[test]
    fn repeatedly_resets_its_subtrigger() {
        let t = Trigger::Repeat(Box::new(Trigger::ElementCount(2)));
        let (fired, st) = run(&t, &[1, 1, 1, 1]);
        assert_eq!(fired, [false, true, false, true]);
        assert!(!st.is_finished());
    }

    #[test]
    fn after_each_runs_subtriggers_in_turn() {
        let t = Trigger::AfterEach(vec![Trigger::ElementCount(1), Trigger::ElementCount(2)]);
        let (fired, st) = run(&t, &[1, 1, 1]);
        assert_eq!(fired, [true, false, true]);
        assert!(st.is_finished());
    }

    #[test]
    fn after_all_waits_for_every_subtrigger() {
        let t = Trigger::AfterAll(vec![Trigger::ElementCount(1), Trigger::ElementCount(3)]);
        let (fired, st) = run(&t, &[1, 1, 1]);
        assert_eq!(fired, [false, false, true]);
        assert!(st.is_finished());
    }

    #[test]
    fn or_finally_stops_when_finally_fires() {
        let t = Trigger::OrFinally {
            main: Box::new(Trigger::Repeat(Box::new(Trigger::ElementCount(1)))),
            finally: Box::new(Trigger::ElementCount(3)),
        };
        let (fired, st) = run(&t, &[1, 1, 1, 1]);
        assert_eq!(fired, [true, true, true, false]);
        assert!(st.is_finished());
    }

    #[test]
    fn end_of_window_with_early_and_late_firings() {
        let t = Trigger::AfterEndOfWindow {
            early: Some(Box::new(Trigger::ElementCount(2))),
            late: Some(Box::new(Trigger::ElementCount(1))),
        };
        let (fired, mut st) = run(&t, &[1, 1, 1]);
        assert_eq!(fired, [false, true, false], "early firings repeat");
        assert!(
            st.should_fire(&t, &AFTER),
            "on time at the end of the window"
        );
        st.on_fire(&t, &AFTER);
        assert!(!st.is_finished() && !st.should_fire(&t, &AFTER));
        st.on_elements(&t, 1, 0, &AFTER);
        assert!(
            st.should_fire(&t, &AFTER),
            "a late element fires the late trigger"
        );
    }

    #[test]
    fn end_of_window_without_late_firings_finishes_on_time() {
        let t = Trigger::AfterEndOfWindow {
            early: None,
            late: None,
        };
        let mut st = TriggerState::new(&t);
        st.on_elements(&t, 3, 0, &BEFORE);
        assert!(!st.should_fire(&t, &BEFORE));
        assert!(st.should_fire(&t, &AFTER));
        st.on_fire(&t, &AFTER);
        assert!(st.is_finished());
    }

    #[test]
    fn processing_time_counts_from_the_first_element() {
        let t = Trigger::AfterProcessingTime(vec![TimestampTransform::Delay { millis: 10 }]);
        let mut st = TriggerState::new(&t);
        st.on_elements(&t, 1, 5, &BEFORE);
        let at = |pt| Clock {
            processing_time: pt,
            ..BEFORE
        };
        assert!(!st.should_fire(&t, &at(14)));
        assert!(st.should_fire(&t, &at(15)));
    }
}
