//! Beam triggers as the runner understands them, parsed from the pipeline
//! proto.  Parsing is validation: a trigger that parses is one the engine's
//! trigger state machine (`ferrobeam_engine::triggers`) runs.

use ferrobeam_proto::pipeline::v1::{
    self as pb, timestamp_transform::TimestampTransform as TsTransform,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Fire when the watermark passes the end of the window, then on every late element.
    Default,
    /// On-time firing, with optional repeated early and late firings.
    AfterEndOfWindow {
        early: Option<Box<Trigger>>,
        late: Option<Box<Trigger>>,
    },
    /// Fire once `n` elements have arrived.
    ElementCount(u64),
    /// Fire once processing time passes the first element's arrival, transformed.
    AfterProcessingTime(Vec<TimestampTransform>),
    /// Fire on every element.
    Always,
    Never,
    Repeat(Box<Trigger>),
    /// Each subtrigger in turn.
    AfterEach(Vec<Trigger>),
    /// Once every subtrigger has fired.
    AfterAll(Vec<Trigger>),
    /// Once any subtrigger fires.
    AfterAny(Vec<Trigger>),
    /// `main` until `finally` fires.
    OrFinally {
        main: Box<Trigger>,
        finally: Box<Trigger>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampTransform {
    Delay { millis: i64 },
    AlignTo { period: i64, offset: i64 },
}

impl TimestampTransform {
    pub fn apply(self, t: i64) -> i64 {
        match self {
            TimestampTransform::Delay { millis } => t.saturating_add(millis),
            // The next multiple of `period` (shifted by `offset`) at or after t.
            TimestampTransform::AlignTo { period, offset } => {
                let rem = (t - offset).rem_euclid(period);
                if rem == 0 {
                    t
                } else {
                    t.saturating_add(period - rem)
                }
            }
        }
    }
}

impl Trigger {
    /// `None` (no trigger in the proto) is Beam's default trigger.
    pub fn from_proto(proto: Option<&pb::Trigger>) -> Result<Trigger, String> {
        use pb::trigger::Trigger as T;
        let Some(kind) = proto.and_then(|t| t.trigger.as_ref()) else {
            return Ok(Trigger::Default);
        };
        let many = |subs: &[pb::Trigger]| -> Result<Vec<Trigger>, String> {
            if subs.is_empty() {
                return Err("a composite trigger without subtriggers".into());
            }
            subs.iter().map(|s| Trigger::from_proto(Some(s))).collect()
        };
        let one = |sub: Option<&Box<pb::Trigger>>, what: &str| -> Result<Box<Trigger>, String> {
            match sub {
                Some(s) => Ok(Box::new(Trigger::from_proto(Some(s.as_ref()))?)),
                None => Err(format!("{what} without its subtrigger")),
            }
        };
        Ok(match kind {
            T::Default(_) => Trigger::Default,
            T::AfterEndOfWindow(a) => Trigger::AfterEndOfWindow {
                early: a
                    .early_firings
                    .as_ref()
                    .map(|t| Trigger::from_proto(Some(t)))
                    .transpose()?
                    .map(Box::new),
                late: a
                    .late_firings
                    .as_ref()
                    .map(|t| Trigger::from_proto(Some(t)))
                    .transpose()?
                    .map(Box::new),
            },
            T::ElementCount(c) => {
                if c.element_count < 1 {
                    return Err(format!(
                        "AfterCount({}) must count at least one element",
                        c.element_count
                    ));
                }
                Trigger::ElementCount(c.element_count as u64)
            }
            T::AfterProcessingTime(p) => {
                let mut transforms = Vec::new();
                for t in &p.timestamp_transforms {
                    transforms.push(match &t.timestamp_transform {
                        Some(TsTransform::Delay(d)) => TimestampTransform::Delay {
                            millis: d.delay_millis,
                        },
                        Some(TsTransform::AlignTo(a)) if a.period > 0 => {
                            TimestampTransform::AlignTo {
                                period: a.period,
                                offset: a.offset,
                            }
                        }
                        Some(TsTransform::AlignTo(a)) => {
                            return Err(format!("AlignTo period {} must be positive", a.period))
                        }
                        None => {
                            return Err("an empty timestamp transform in AfterProcessingTime".into())
                        }
                    });
                }
                Trigger::AfterProcessingTime(transforms)
            }
            // Synchronized processing time is processing time on one machine.
            T::AfterSynchronizedProcessingTime(_) => Trigger::AfterProcessingTime(Vec::new()),
            T::Always(_) => Trigger::Always,
            T::Never(_) => Trigger::Never,
            T::Repeat(r) => Trigger::Repeat(one(r.subtrigger.as_ref(), "Repeatedly")?),
            T::AfterEach(a) => Trigger::AfterEach(many(&a.subtriggers)?),
            T::AfterAll(a) => Trigger::AfterAll(many(&a.subtriggers)?),
            T::AfterAny(a) => Trigger::AfterAny(many(&a.subtriggers)?),
            T::OrFinally(o) => Trigger::OrFinally {
                main: one(o.main.as_ref(), "OrFinally")?,
                finally: one(o.finally.as_ref(), "OrFinally")?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_to_rounds_up_to_the_period() {
        let align = TimestampTransform::AlignTo {
            period: 10,
            offset: 3,
        };
        assert_eq!(align.apply(3), 3);
        assert_eq!(align.apply(4), 13);
        assert_eq!(align.apply(-8), -7);
        assert_eq!(TimestampTransform::Delay { millis: 5 }.apply(1), 6);
    }

    #[test]
    fn no_trigger_is_the_default_and_bad_counts_are_refused() {
        assert_eq!(Trigger::from_proto(None), Ok(Trigger::Default));
        let zero = pb::Trigger {
            trigger: Some(pb::trigger::Trigger::ElementCount(
                pb::trigger::ElementCount { element_count: 0 },
            )),
        };
        assert!(Trigger::from_proto(Some(&zero)).is_err());
    }
}
