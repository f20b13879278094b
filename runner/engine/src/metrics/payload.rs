//! Merging two payloads of the same monitoring info type, as metrics.proto
//! defines each type's encoding (`beam:metrics:*` type URNs).

use ferrobeam_coders::varint::{read_varint_i64, write_varint_i64};
use ferrobeam_proto::pipeline::v1::HistogramValue;
use prost::Message;

use super::{bounded_trie, string_set, MergeError};

pub const SUM_INT64: &str = "beam:metrics:sum_int64:v1";
pub const SUM_DOUBLE: &str = "beam:metrics:sum_double:v1";
pub const DIST_INT64: &str = "beam:metrics:distribution_int64:v1";
pub const DIST_DOUBLE: &str = "beam:metrics:distribution_double:v1";
pub const LATEST_INT64: &str = "beam:metrics:latest_int64:v1";
pub const LATEST_DOUBLE: &str = "beam:metrics:latest_double:v1";
pub const SET_STRING: &str = "beam:metrics:set_string:v1";
pub const BOUNDED_TRIE: &str = "beam:metrics:bounded_trie:v1";
pub const HISTOGRAM_INT64: &str = "beam:metrics:histogram_int64:v1";

/// `a` merged with the later `b`, or `None` for types that do not merge
/// (progress, top-n): for those the later value stands.
pub(super) fn merge(kind: &str, a: &[u8], b: &[u8]) -> Result<Option<Vec<u8>>, MergeError> {
    let mut out = Vec::new();
    match kind {
        // Saturating: a counter that overflows must not crash the job server.
        SUM_INT64 => write_varint_i64(
            &mut out,
            varints::<1>(a)?[0].saturating_add(varints::<1>(b)?[0]),
        ),
        SUM_DOUBLE => out.extend_from_slice(&(double(a, 0)? + double(b, 0)?).to_be_bytes()),
        // count, sum, min, max
        DIST_INT64 => {
            let (a, b) = (varints::<4>(a)?, varints::<4>(b)?);
            for v in [
                a[0].saturating_add(b[0]),
                a[1].saturating_add(b[1]),
                a[2].min(b[2]),
                a[3].max(b[3]),
            ] {
                write_varint_i64(&mut out, v);
            }
        }
        // count (varint), then sum, min, max as doubles
        DIST_DOUBLE => {
            let (ca, pa) = varint(a, 0)?;
            let (cb, pb) = varint(b, 0)?;
            let fa = [double(a, pa)?, double(a, pa + 8)?, double(a, pa + 16)?];
            let fb = [double(b, pb)?, double(b, pb + 8)?, double(b, pb + 16)?];
            write_varint_i64(&mut out, ca.saturating_add(cb));
            for v in [fa[0] + fb[0], fa[1].min(fb[1]), fa[2].max(fb[2])] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        // Gauges: (timestamp in millis, value); the latest reading wins, and
        // on a tie the one reported later.
        LATEST_INT64 | LATEST_DOUBLE => {
            let (ta, tb) = (varint(a, 0)?.0, varint(b, 0)?.0);
            out.extend_from_slice(if tb >= ta { b } else { a });
        }
        SET_STRING => out = string_set::merge(a, b)?,
        BOUNDED_TRIE => out = bounded_trie::merge(a, b)?,
        HISTOGRAM_INT64 => out = merge_histograms(a, b)?,
        _ => return Ok(None),
    }
    Ok(Some(out))
}

fn malformed(kind: &str, e: impl std::fmt::Display) -> MergeError {
    MergeError::Malformed(format!("{kind}: {e}"))
}

fn varint(buf: &[u8], pos: usize) -> Result<(i64, usize), MergeError> {
    read_varint_i64(buf, pos).map_err(|e| malformed("varint", e))
}

/// Exactly `N` varints and nothing after them.
fn varints<const N: usize>(buf: &[u8]) -> Result<[i64; N], MergeError> {
    let mut out = [0; N];
    let mut pos = 0;
    for v in out.iter_mut() {
        (*v, pos) = varint(buf, pos)?;
    }
    if pos != buf.len() {
        return Err(malformed(
            "varints",
            format!("{} trailing bytes", buf.len() - pos),
        ));
    }
    Ok(out)
}

/// A big-endian IEEE double (`beam:coder:double:v1`).
fn double(buf: &[u8], pos: usize) -> Result<f64, MergeError> {
    let bytes = buf
        .get(pos..pos + 8)
        .ok_or_else(|| malformed("double", "payload too short"))?;
    Ok(f64::from_be_bytes(bytes.try_into().expect("8 bytes")))
}

/// Histograms with the same buckets add up bucket by bucket.
fn merge_histograms(a: &[u8], b: &[u8]) -> Result<Vec<u8>, MergeError> {
    let decode = |buf: &[u8]| HistogramValue::decode(buf).map_err(|e| malformed("histogram", e));
    let (mut a, b) = (decode(a)?, decode(b)?);
    if a.bucket_options != b.bucket_options {
        return Err(malformed(
            "histogram",
            "the two histograms have different buckets",
        ));
    }
    a.count = Some(a.count.unwrap_or(0).saturating_add(b.count.unwrap_or(0)));
    if a.bucket_counts.len() < b.bucket_counts.len() {
        a.bucket_counts.resize(b.bucket_counts.len(), 0);
    }
    for (x, y) in a.bucket_counts.iter_mut().zip(&b.bucket_counts) {
        *x = x.saturating_add(*y);
    }
    Ok(a.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrobeam_proto::pipeline::v1::histogram_value::{bucket_options, BucketOptions};

    fn histogram(width: f64, counts: &[i64]) -> Vec<u8> {
        HistogramValue {
            count: Some(counts.iter().sum()),
            bucket_options: Some(BucketOptions {
                bucket_type: Some(bucket_options::BucketType::Linear(bucket_options::Linear {
                    number_of_buckets: Some(counts.len() as i32),
                    width: Some(width),
                    start: Some(0.0),
                })),
            }),
            bucket_counts: counts.to_vec(),
        }
        .encode_to_vec()
    }

    #[test]
    fn histograms_with_equal_buckets_add_up() {
        let m = merge(
            HISTOGRAM_INT64,
            &histogram(10.0, &[1, 2, 0]),
            &histogram(10.0, &[0, 1, 4]),
        )
        .unwrap()
        .unwrap();
        let h = HistogramValue::decode(m.as_slice()).unwrap();
        assert_eq!((h.count, h.bucket_counts), (Some(8), vec![1, 3, 4]));
        assert!(merge(
            HISTOGRAM_INT64,
            &histogram(10.0, &[1]),
            &histogram(5.0, &[1])
        )
        .is_err());
    }

    #[test]
    fn double_gauges_keep_the_latest() {
        let gauge = |ts: i64, v: f64| {
            let mut out = Vec::new();
            write_varint_i64(&mut out, ts);
            out.extend_from_slice(&v.to_be_bytes());
            out
        };
        assert_eq!(
            merge(LATEST_DOUBLE, &gauge(5, 1.5), &gauge(3, 2.5))
                .unwrap()
                .unwrap(),
            gauge(5, 1.5)
        );
        assert_eq!(
            merge(LATEST_DOUBLE, &gauge(5, 1.5), &gauge(5, 2.5))
                .unwrap()
                .unwrap(),
            gauge(5, 2.5)
        );
    }

    #[test]
    fn counters_reject_trailing_bytes_and_skip_unknown_types() {
        assert!(merge(SUM_INT64, &[1, 2], &[1]).is_err());
        assert_eq!(merge("beam:metrics:progress:v1", &[1], &[2]).unwrap(), None);
    }
}
