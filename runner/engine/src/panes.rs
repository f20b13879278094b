//! Panes of a GroupByKey under a non-default trigger, in batch.
//!
//! A batch GroupByKey sees each (key, window)'s elements at once, as one
//! bundle, while the input watermark is still at -infinity; then the input
//! ends and the watermark and processing time jump to +infinity, which is
//! also the window's garbage-collection time.  So every window gets at most
//! three chances to fire: after its elements (early panes from data-driven
//! triggers), at the end of the window (when allowed lateness separates it
//! from garbage collection), and the final pane at garbage collection.  The
//! final pane is emitted when there is data since the last pane, or when it
//! is the on-time pane and the on-time behaviour is FIRE_ALWAYS.
//!
//! The closing behaviour is not read: the Python SDK writes EMIT_ALWAYS into
//! every windowing strategy (its WindowInto cannot set one), and honouring it
//! repeats an accumulated on-time pane as a LATE one when the window closes,
//! which neither Python's runners nor the batch runners of Flink and Spark
//! emit, and Beam's streaming tests expect none.  Batch and streaming
//! therefore agree: a window closes with a pane only when it has something
//! new or owes its on-time pane.

use bytes::Bytes;
use ferrobeam_coders::{PaneInfo, Timing, MAX_TIMESTAMP_MILLIS, MIN_TIMESTAMP_MILLIS};
use ferrobeam_graph::trigger::Trigger;
use ferrobeam_proto::pipeline::v1::{
    accumulation_mode::Enum as Accumulation, on_time_behavior::Enum as OnTime,
    output_time::Enum as OutputTime, WindowingStrategy,
};

use crate::triggers::{Clock, TriggerState};

/// The grouping strategy's settings that decide panes.
pub struct PaneRules {
    pub(crate) trigger: Trigger,
    pub(crate) accumulating: bool,
    pub(crate) on_time_always: bool,
    pub(crate) allowed_lateness: i64,
    pub(crate) output_time: OutputTime,
}

/// One window's elements for one key, in arrival order.
pub struct WindowInput<'a> {
    pub values: &'a [Bytes],
    pub min_ts: i64,
    pub max_ts: i64,
    pub window_max: i64,
}

/// A pane to write: which values (a prefix or all of the input), its
/// timestamp and its pane info.
#[derive(Debug, PartialEq)]
pub struct Pane {
    pub values: std::ops::Range<usize>,
    pub timestamp: i64,
    pub pane: PaneInfo,
}

impl PaneRules {
    /// `None` for the default trigger, which the plain batch path handles.
    pub fn new(windowing: &WindowingStrategy) -> Option<PaneRules> {
        PaneRules::including_default(windowing).filter(|r| r.trigger != Trigger::Default)
    }

    /// The rules of any trigger, the default one included (streaming).
    pub fn including_default(windowing: &WindowingStrategy) -> Option<PaneRules> {
        let trigger = Trigger::from_proto(windowing.trigger.as_ref()).ok()?;
        Some(PaneRules {
            trigger,
            accumulating: windowing.accumulation_mode == Accumulation::Accumulating as i32,
            on_time_always: windowing.on_time_behavior != OnTime::FireIfNonempty as i32,
            allowed_lateness: windowing.allowed_lateness.max(0),
            output_time: OutputTime::try_from(windowing.output_time)
                .unwrap_or(OutputTime::EndOfWindow),
        })
    }

    /// The panes one (key, window) fires, in order.
    pub fn panes(&self, input: &WindowInput, now: i64) -> Vec<Pane> {
        let t = &self.trigger;
        let n = input.values.len();
        let mut state = TriggerState::new(t);
        let mut out = PaneWriter {
            panes: Vec::new(),
            on_time_count: 0,
            emitted_upto: 0,
        };
        let before = Clock {
            watermark: MIN_TIMESTAMP_MILLIS,
            processing_time: now,
            window_max: input.window_max,
        };
        state.on_elements(t, n as u64, now, &before);
        if state.should_fire(t, &before) {
            state.on_fire(t, &before);
            out.emit(self, input, Timing::Early, state.is_finished());
            if state.is_finished() {
                return out.panes;
            }
        }
        let after = Clock {
            watermark: MAX_TIMESTAMP_MILLIS,
            processing_time: MAX_TIMESTAMP_MILLIS,
            window_max: input.window_max,
        };
        if self.allowed_lateness > 0 && state.should_fire(t, &after) {
            state.on_fire(t, &after);
            let timing = out.after_end_timing();
            if out.has_new(n) || (timing == Timing::OnTime && self.on_time_always) {
                out.emit(self, input, timing, state.is_finished());
            }
            if state.is_finished() {
                return out.panes;
            }
        }
        // Garbage collection: the window closes with a final pane if due.
        let timing = out.after_end_timing();
        if out.has_new(n) || (timing == Timing::OnTime && self.on_time_always) {
            out.emit(self, input, timing, true);
        }
        out.panes
    }
}

struct PaneWriter {
    panes: Vec<Pane>,
    on_time_count: i64,
    /// Values up to here are in an earlier pane.
    emitted_upto: usize,
}

impl PaneWriter {
    fn has_new(&self, n: usize) -> bool {
        self.emitted_upto < n
    }

    fn after_end_timing(&self) -> Timing {
        if self.on_time_count == 0 {
            Timing::OnTime
        } else {
            Timing::Late
        }
    }

    fn emit(&mut self, rules: &PaneRules, input: &WindowInput, timing: Timing, is_last: bool) {
        let n = input.values.len();
        let fresh = self.emitted_upto < n;
        // The timestamp covers the pane's new elements (all of them: a batch
        // window's elements arrive together); a pane without new elements is
        // stamped at the end of the window.
        let timestamp = match rules.output_time {
            OutputTime::EarliestInPane if fresh => input.min_ts,
            OutputTime::LatestInPane if fresh => input.max_ts,
            _ => input.window_max,
        };
        let start = if rules.accumulating {
            0
        } else {
            self.emitted_upto
        };
        let on_time_index = if timing == Timing::Early {
            -1
        } else {
            self.on_time_count += 1;
            self.on_time_count - 1
        };
        let index = self.panes.len() as i64;
        self.panes.push(Pane {
            values: start..n,
            timestamp,
            pane: PaneInfo {
                is_first: index == 0,
                is_last,
                timing,
                index,
                on_time_index,
            },
        });
        self.emitted_upto = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrobeam_proto::pipeline::v1::{trigger, Trigger as TriggerProto};

    fn rules(t: trigger::Trigger, accumulating: bool) -> PaneRules {
        let ws = WindowingStrategy {
            trigger: Some(TriggerProto { trigger: Some(t) }),
            accumulation_mode: if accumulating {
                Accumulation::Accumulating
            } else {
                Accumulation::Discarding
            } as i32,
            on_time_behavior: OnTime::FireAlways as i32,
            output_time: OutputTime::EndOfWindow as i32,
            ..Default::default()
        };
        PaneRules::new(&ws).expect("not the default trigger")
    }

    fn count(n: i32) -> trigger::Trigger {
        trigger::Trigger::ElementCount(trigger::ElementCount { element_count: n })
    }

    fn panes(r: &PaneRules, n: usize) -> Vec<(usize, Timing, bool, i64)> {
        let values = vec![Bytes::new(); n];
        let input = WindowInput {
            values: &values,
            min_ts: 1,
            max_ts: 5,
            window_max: 9,
        };
        r.panes(&input, 0)
            .into_iter()
            .map(|p| {
                (
                    p.values.len(),
                    p.pane.timing,
                    p.pane.is_last,
                    p.pane.on_time_index,
                )
            })
            .collect()
    }

    #[test]
    fn after_count_fires_once_and_closes_the_window() {
        assert_eq!(
            panes(&rules(count(3), false), 3),
            [(3, Timing::Early, true, -1)]
        );
        // Too few elements: only the final pane, on time, at garbage collection.
        assert_eq!(
            panes(&rules(count(3), false), 2),
            [(2, Timing::OnTime, true, 0)]
        );
    }

    #[test]
    fn early_firing_then_an_empty_on_time_pane() {
        let t = trigger::Trigger::AfterEndOfWindow(Box::new(trigger::AfterEndOfWindow {
            early_firings: Some(Box::new(TriggerProto {
                trigger: Some(count(1)),
            })),
            late_firings: None,
        }));
        assert_eq!(
            panes(&rules(t, false), 1),
            [(1, Timing::Early, false, -1), (0, Timing::OnTime, true, 0)]
        );
    }

    #[test]
    fn accumulating_panes_repeat_earlier_values() {
        let t = trigger::Trigger::Repeat(Box::new(trigger::Repeat {
            subtrigger: Some(Box::new(TriggerProto {
                trigger: Some(count(1)),
            })),
        }));
        assert_eq!(
            panes(&rules(t, true), 2),
            [(2, Timing::Early, false, -1), (2, Timing::OnTime, true, 0)]
        );
    }

    #[test]
    fn never_emits_only_the_final_pane() {
        let t = trigger::Trigger::Never(trigger::Never {});
        assert_eq!(panes(&rules(t, false), 4), [(4, Timing::OnTime, true, 0)]);
    }
}
