//! User timers of a stateful stage, held by the runner.
//!
//! The SDK sends every `timer.set` / `timer.clear` back on the data plane as
//! an encoded `beam:coder:timer:v1` value.  The runner keeps the latest
//! setting of each timer, identified by (family, key, dynamic tag, windows),
//! and decides when it fires.  In batch both time domains jump to +infinity
//! once the stage's input is exhausted, so every pending timer fires then,
//! in timestamp order per key.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;
use ferrobeam_coders::varint::{read_i32_be, read_len};
use ferrobeam_coders::{read_timestamp, Coder, CoderError};
use ferrobeam_graph::{TimeDomain, TimerFamily};
use ferrobeam_proto::pipeline::v1::Components;

use ferrobeam_state::codec::{Reader, Writer};
use ferrobeam_state::StateError;

use crate::EngineError;

/// How to take apart the timers of one family.
struct TimerFormat {
    key: Coder,
    window: Coder,
    /// The windows, coded like an iterable of windows.
    windows: Coder,
}

/// One timer's parts, as ranges into its buffer.
struct ParsedTimer {
    range: Range<usize>,
    key: Range<usize>,
    /// Dynamic tag and windows together: with the key they identify the timer.
    tag_and_windows: Range<usize>,
    /// (fire timestamp, hold timestamp); `None` for a clear.
    fire: Option<(i64, i64)>,
}

impl TimerFormat {
    fn new(components: &Components, coder_id: &str) -> Result<Self, EngineError> {
        let bad = |why: String| EngineError::Internal(format!("timer coder {coder_id}: {why}"));
        match Coder::from_components(components, coder_id).map_err(|e| bad(e.to_string()))? {
            Coder::Timer { key, window } => Ok(Self {
                key: *key,
                window: (*window).clone(),
                windows: Coder::Iterable(window),
            }),
            other => Err(bad(format!(
                "is a {} coder, not a timer coder",
                other.urn()
            ))),
        }
    }

    /// Each window of a timer, as encoded, from its dynamic tag and windows.
    fn windows<'a>(&self, tag_and_windows: &'a [u8]) -> Result<Vec<&'a [u8]>, CoderError> {
        let (tag_len, tag_start) = read_len(tag_and_windows, 0)?;
        let (count, mut pos) = read_i32_be(tag_and_windows, tag_start + tag_len)?;
        (0..count.max(0))
            .map(|_| {
                let start = pos;
                pos = self.window.skip(tag_and_windows, start)?;
                Ok(&tag_and_windows[start..pos])
            })
            .collect()
    }

    fn parse(&self, buf: &[u8], pos: usize) -> Result<ParsedTimer, EngineError> {
        let bad = |e: ferrobeam_coders::CoderError| {
            EngineError::Internal(format!("undecodable timer from the SDK: {e}"))
        };
        let key_end = self.key.skip(buf, pos).map_err(bad)?;
        let (tag_len, tag_start) = read_len(buf, key_end).map_err(bad)?;
        let windows_end = self.windows.skip(buf, tag_start + tag_len).map_err(bad)?;
        let clear = *buf.get(windows_end).ok_or_else(|| {
            EngineError::Internal("timer from the SDK ends before its clear bit".into())
        })?;
        let (fire, end) = match clear {
            0 => {
                let (fire, p) = read_timestamp(buf, windows_end + 1).map_err(bad)?;
                let (hold, p) = read_timestamp(buf, p).map_err(bad)?;
                (
                    Some((fire, hold)),
                    ferrobeam_coders::PaneInfo::skip(buf, p).map_err(bad)?,
                )
            }
            _ => (None, windows_end + 1),
        };
        Ok(ParsedTimer {
            range: pos..end,
            key: pos..key_end,
            tag_and_windows: key_end..windows_end,
            fire,
        })
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct TimerId {
    family: usize,
    key: Bytes,
    tag_and_windows: Bytes,
}

struct Pending {
    fire: i64,
    /// The output timestamp the timer holds the stage's watermark at.
    hold: i64,
    /// The timer exactly as the SDK set it; fired by sending it back.
    encoded: Bytes,
}

/// A timer due to fire, ready to send.
pub struct DueTimer {
    pub family: usize,
    pub key: Bytes,
    pub encoded: Bytes,
}

/// The pending timers of one stage.
pub struct TimerStore {
    formats: Vec<TimerFormat>,
    domains: Vec<TimeDomain>,
    pending: HashMap<TimerId, Pending>,
}

impl TimerStore {
    pub fn new(families: &[TimerFamily], components: &Components) -> Result<Self, EngineError> {
        Ok(Self {
            formats: families
                .iter()
                .map(|f| TimerFormat::new(components, &f.coder_id))
                .collect::<Result<_, _>>()?,
            domains: families.iter().map(|f| f.domain).collect(),
            pending: HashMap::new(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Applies the sets and clears a bundle sent for `family`, in order.
    pub fn apply(&mut self, family: usize, chunks: &[Bytes]) -> Result<(), EngineError> {
        let format = &self.formats[family];
        for chunk in chunks {
            let mut pos = 0;
            while pos < chunk.len() {
                let t = format.parse(chunk, pos)?;
                pos = t.range.end;
                let id = TimerId {
                    family,
                    key: chunk.slice(t.key.clone()),
                    tag_and_windows: chunk.slice(t.tag_and_windows),
                };
                match t.fire {
                    Some((fire, hold)) => {
                        self.pending.insert(
                            id,
                            Pending {
                                fire,
                                hold,
                                encoded: chunk.slice(t.range),
                            },
                        );
                    }
                    None => {
                        self.pending.remove(&id);
                    }
                }
            }
        }
        Ok(())
    }

    /// Event-time timers of a key fire before its processing-time ones.
    fn rank(&self, id: &TimerId) -> u8 {
        u8::from(self.domains[id.family] == TimeDomain::ProcessingTime)
    }

    /// Removes and returns the timers to fire next: for every key, those at
    /// its earliest pending timestamp, event time before processing time.
    /// Firing them may set new timers, which the next call sees, so a timer
    /// set for an earlier time than one still pending fires first.
    #[cfg(test)]
    pub fn next_due(&mut self) -> Vec<DueTimer> {
        self.next_due_until(i64::MAX, i64::MAX)
    }

    /// [`TimerStore::next_due`] among the timers time has reached: event-time
    /// timers the input watermark has passed, processing-time timers at or
    /// before `processing_time`.
    pub fn next_due_until(&mut self, watermark: i64, processing_time: i64) -> Vec<DueTimer> {
        let reached = |domains: &[TimeDomain], id: &TimerId, p: &Pending| {
            if domains[id.family] == TimeDomain::ProcessingTime {
                p.fire <= processing_time
            } else {
                p.fire < watermark || watermark == i64::MAX
            }
        };
        // Per key: (domain rank, earliest timestamp) of the reached timers.
        let mut earliest: HashMap<&Bytes, (u8, i64)> = HashMap::new();
        for (id, p) in &self.pending {
            if !reached(&self.domains, id, p) {
                continue;
            }
            let e = earliest.entry(&id.key).or_insert((self.rank(id), p.fire));
            *e = (*e).min((self.rank(id), p.fire));
        }
        let due: Vec<TimerId> = self
            .pending
            .iter()
            .filter(|(id, p)| earliest.get(&id.key) == Some(&(self.rank(id), p.fire)))
            .filter(|(id, p)| reached(&self.domains, id, p))
            .map(|(id, _)| id.clone())
            .collect();
        let mut out: Vec<DueTimer> = due
            .into_iter()
            .map(|id| {
                let p = self.pending.remove(&id).expect("listed");
                DueTimer {
                    family: id.family,
                    key: id.key,
                    encoded: p.encoded,
                }
            })
            .collect();
        // Deterministic delivery order within a bundle.
        out.sort_by(|a, b| (a.family, &a.encoded).cmp(&(b.family, &b.encoded)));
        out
    }

    /// When the earliest pending processing-time timer is due.
    pub fn next_processing_time(&self) -> Option<i64> {
        self.pending
            .iter()
            .filter(|(id, _)| self.domains[id.family] == TimeDomain::ProcessingTime)
            .map(|(_, p)| p.fire)
            .min()
    }

    /// Drops the pending timers all of whose windows are `expired` (given
    /// each window's encoding); returns how many.  A streaming job runs
    /// forever, so a processing-time timer set in a window that has since
    /// expired must not stay (Beam drops such timers rather than fire them).
    pub fn drop_expired(&mut self, expired: impl Fn(&[u8]) -> bool) -> usize {
        let before = self.pending.len();
        let formats = &self.formats;
        self.pending.retain(|id, _| {
            match formats[id.family].windows(&id.tag_and_windows) {
                Ok(windows) => windows.is_empty() || !windows.iter().all(|w| expired(w)),
                // Windows we cannot take apart are never called expired.
                Err(_) => true,
            }
        });
        before - self.pending.len()
    }

    /// Writes the pending timers (for a checkpoint).
    pub fn save(&self, w: &mut Writer) {
        w.len(self.pending.len());
        for (id, p) in &self.pending {
            w.len(id.family)
                .bytes(&id.key)
                .bytes(&id.tag_and_windows)
                .i64(p.fire)
                .i64(p.hold)
                .bytes(&p.encoded);
        }
    }

    /// Reads back what [`TimerStore::save`] wrote, into a store made for
    /// the same timer families.
    pub fn load(&mut self, r: &mut Reader) -> Result<(), StateError> {
        for _ in 0..r.len()? {
            let family = r.len()?;
            if family >= self.formats.len() {
                return Err(r.error(format!(
                    "timer family {family} does not exist in this stage"
                )));
            }
            let id = TimerId {
                family,
                key: r.bytes()?,
                tag_and_windows: r.bytes()?,
            };
            let pending = Pending {
                fire: r.i64()?,
                hold: r.i64()?,
                encoded: r.bytes()?,
            };
            self.pending.insert(id, pending);
        }
        Ok(())
    }

    /// The earliest output timestamp a pending timer holds (streaming: the
    /// stage's output watermark may not pass it).
    pub fn min_hold(&self) -> Option<i64> {
        self.pending.values().map(|p| p.hold).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrobeam_coders::{write_timestamp, PaneInfo};
    use ferrobeam_proto::pipeline::v1::{Coder as CoderProto, FunctionSpec};

    fn components() -> Components {
        let coder = |urn: &str, comps: &[&str]| CoderProto {
            spec: Some(FunctionSpec {
                urn: urn.into(),
                payload: Default::default(),
            }),
            component_coder_ids: comps.iter().map(|s| s.to_string()).collect(),
        };
        let mut c = Components::default();
        c.coders
            .insert("key".into(), coder("beam:coder:string_utf8:v1", &[]));
        c.coders
            .insert("gw".into(), coder("beam:coder:global_window:v1", &[]));
        c.coders
            .insert("timer".into(), coder("beam:coder:timer:v1", &["key", "gw"]));
        c
    }

    fn timer(key: &str, tag: &str, fire: Option<i64>) -> Bytes {
        let mut out = Vec::new();
        for s in [key, tag] {
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&1i32.to_be_bytes()); // one global window
        match fire {
            None => out.push(1),
            Some(ts) => {
                out.push(0);
                write_timestamp(&mut out, ts);
                write_timestamp(&mut out, ts);
                PaneInfo::NO_FIRING.encode(&mut out);
            }
        }
        Bytes::from(out)
    }

    fn family(domain: TimeDomain) -> TimerFamily {
        TimerFamily {
            transform_id: "t".into(),
            family_id: "f".into(),
            coder_id: "timer".into(),
            domain,
        }
    }

    #[test]
    fn later_sets_replace_earlier_and_clears_remove() {
        let mut store = TimerStore::new(&[family(TimeDomain::EventTime)], &components()).unwrap();
        let mut chunk = Vec::new();
        for t in [
            timer("a", "", Some(10)),
            timer("a", "", Some(20)),
            timer("b", "", Some(5)),
            timer("b", "", None),
        ] {
            chunk.extend_from_slice(&t);
        }
        store.apply(0, &[Bytes::from(chunk)]).unwrap();
        let due = store.next_due();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].encoded, timer("a", "", Some(20)));
        assert!(store.is_empty());
    }

    #[test]
    fn fires_each_keys_earliest_first() {
        let families = [
            family(TimeDomain::EventTime),
            family(TimeDomain::ProcessingTime),
        ];
        let mut store = TimerStore::new(&families, &components()).unwrap();
        store
            .apply(
                0,
                &[
                    timer("a", "x", Some(30)),
                    timer("a", "y", Some(10)),
                    timer("b", "", Some(50)),
                ],
            )
            .unwrap();
        store.apply(1, &[timer("a", "", Some(1))]).unwrap();
        let first: Vec<Bytes> = store.next_due().into_iter().map(|d| d.encoded).collect();
        assert_eq!(first.len(), 2);
        assert!(
            first.contains(&timer("a", "y", Some(10))) && first.contains(&timer("b", "", Some(50)))
        );
        assert_eq!(store.next_due()[0].encoded, timer("a", "x", Some(30)));
        // Processing-time timers fire after the key's event-time timers.
        let last = store.next_due();
        assert_eq!((last.len(), last[0].family), (1, 1));
        assert!(store.next_due().is_empty());
    }

    #[test]
    fn only_timers_time_has_reached_fire() {
        let families = [
            family(TimeDomain::EventTime),
            family(TimeDomain::ProcessingTime),
        ];
        let mut store = TimerStore::new(&families, &components()).unwrap();
        store
            .apply(0, &[timer("a", "", Some(10)), timer("b", "", Some(20))])
            .unwrap();
        store.apply(1, &[timer("c", "", Some(100))]).unwrap();
        assert_eq!(store.min_hold(), Some(10));
        // Event time: the watermark must pass the timestamp.
        assert!(store.next_due_until(10, 0).is_empty());
        let due = store.next_due_until(11, 99);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].encoded, timer("a", "", Some(10)));
        assert_eq!(store.min_hold(), Some(20));
        // Processing time: due at its timestamp.
        let due = store.next_due_until(11, 100);
        assert_eq!((due.len(), due[0].family), (1, 1));
        assert_eq!(store.next_due_until(i64::MAX, 0).len(), 1);
        assert!(store.is_empty());
    }

    #[test]
    fn timers_of_expired_windows_are_dropped() {
        let mut store =
            TimerStore::new(&[family(TimeDomain::ProcessingTime)], &components()).unwrap();
        store
            .apply(0, &[timer("a", "", Some(10)), timer("b", "tag", Some(20))])
            .unwrap();
        // Each timer has one global window, which encodes as nothing.
        let dropped = store.drop_expired(|w| {
            assert!(w.is_empty());
            true
        });
        assert_eq!(dropped, 2);
        assert!(store.is_empty());
        store.apply(0, &[timer("a", "", Some(10))]).unwrap();
        assert_eq!(store.drop_expired(|_| false), 0);
        assert_eq!(store.next_due_until(0, 10).len(), 1);
    }
}
