//! Aggregating the SDK's monitoring infos across bundles.
//!
//! Only bundles that committed contribute, so a retried bundle is counted
//! once.  In batch, attempted and committed are the same numbers.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use ferrobeam_coders::varint::{read_varint_i64, write_varint_i64};
use ferrobeam_proto::pipeline::v1::MonitoringInfo;

const SUM_INT64: &str = "beam:metrics:sum_int64:v1";
const SUM_DOUBLE: &str = "beam:metrics:sum_double:v1";
const DIST_INT64: &str = "beam:metrics:distribution_int64:v1";
const DIST_DOUBLE: &str = "beam:metrics:distribution_double:v1";
const LATEST_INT64: &str = "beam:metrics:latest_int64:v1";
const SET_STRING: &str = "beam:metrics:set_string:v1";

type Key = (String, BTreeMap<String, String>);

#[derive(Default)]
pub struct Metrics {
    infos: HashMap<Key, MonitoringInfo>,
}

impl Metrics {
    pub fn add_all(&mut self, infos: &[MonitoringInfo]) {
        for info in infos {
            self.add(info);
        }
    }

    fn add(&mut self, info: &MonitoringInfo) {
        let key = (
            info.urn.clone(),
            info.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        match self.infos.get_mut(&key) {
            None => {
                self.infos.insert(key, info.clone());
            }
            Some(old) => {
                if let Some(merged) = merge(&old.r#type, &old.payload, &info.payload) {
                    old.payload = merged;
                } else {
                    *old = info.clone();
                }
            }
        }
    }

    pub fn snapshot(&self) -> Vec<MonitoringInfo> {
        self.infos.values().cloned().collect()
    }
}

fn merge(kind: &str, a: &[u8], b: &[u8]) -> Option<Bytes> {
    let mut out = Vec::new();
    match kind {
        // Saturating: a counter that overflows must not crash the job server.
        SUM_INT64 => write_varint_i64(
            &mut out,
            read_varint_i64(a, 0)
                .ok()?
                .0
                .saturating_add(read_varint_i64(b, 0).ok()?.0),
        ),
        SUM_DOUBLE => out.extend_from_slice(&(f64_at(a, 0)? + f64_at(b, 0)?).to_be_bytes()),
        DIST_INT64 => {
            let (a, b) = (ints::<4>(a)?, ints::<4>(b)?);
            for v in [
                a[0].saturating_add(b[0]),
                a[1].saturating_add(b[1]),
                a[2].min(b[2]),
                a[3].max(b[3]),
            ] {
                write_varint_i64(&mut out, v);
            }
        }
        DIST_DOUBLE => {
            let (ca, cb) = (read_varint_i64(a, 0).ok()?, read_varint_i64(b, 0).ok()?);
            let fa = [
                f64_at(a, ca.1)?,
                f64_at(a, ca.1 + 8)?,
                f64_at(a, ca.1 + 16)?,
            ];
            let fb = [
                f64_at(b, cb.1)?,
                f64_at(b, cb.1 + 8)?,
                f64_at(b, cb.1 + 16)?,
            ];
            write_varint_i64(&mut out, ca.0.saturating_add(cb.0));
            for v in [fa[0] + fb[0], fa[1].min(fb[1]), fa[2].max(fb[2])] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        LATEST_INT64 => {
            let (ta, tb) = (read_varint_i64(a, 0).ok()?.0, read_varint_i64(b, 0).ok()?.0);
            out.extend_from_slice(if tb >= ta { b } else { a });
        }
        SET_STRING => return merge_string_sets(a, b),
        _ => return None,
    }
    Some(out.into())
}

fn f64_at(buf: &[u8], pos: usize) -> Option<f64> {
    Some(f64::from_be_bytes(buf.get(pos..pos + 8)?.try_into().ok()?))
}

fn ints<const N: usize>(buf: &[u8]) -> Option<[i64; N]> {
    let mut out = [0; N];
    let mut pos = 0;
    for v in out.iter_mut() {
        let (x, p) = read_varint_i64(buf, pos).ok()?;
        *v = x;
        pos = p;
    }
    Some(out)
}

/// A string set is an iterable of length-prefixed UTF-8 strings.
fn merge_string_sets(a: &[u8], b: &[u8]) -> Option<Bytes> {
    let mut all = std::collections::BTreeSet::new();
    for buf in [a, b] {
        let count = u32::from_be_bytes(buf.get(0..4)?.try_into().ok()?);
        let mut pos = 4;
        for _ in 0..count {
            let (len, p) = ferrobeam_coders::varint::read_varint_u64(buf, pos).ok()?;
            let end = p + len as usize;
            all.insert(buf.get(p..end)?.to_vec());
            pos = end;
        }
    }
    let mut out = (all.len() as u32).to_be_bytes().to_vec();
    for s in all {
        ferrobeam_coders::varint::write_varint_u64(&mut out, s.len() as u64);
        out.extend_from_slice(&s);
    }
    Some(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(v: i64) -> MonitoringInfo {
        let mut payload = Vec::new();
        write_varint_i64(&mut payload, v);
        MonitoringInfo {
            urn: "beam:metric:user:sum_int64:v1".into(),
            r#type: SUM_INT64.into(),
            payload: payload.into(),
            labels: [("NAME".to_owned(), "n".to_owned())].into(),
            start_time: None,
        }
    }

    #[test]
    fn counters_sum_across_bundles() {
        let mut m = Metrics::default();
        m.add_all(&[counter(3), counter(4)]);
        let snap = m.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(read_varint_i64(&snap[0].payload, 0).unwrap().0, 7);
    }
}
