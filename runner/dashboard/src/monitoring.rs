//! Reading the job's merged monitoring infos: user metrics as people see
//! them, and the SDK's per-PCollection element counts.

use std::collections::HashMap;

use ferrobeam_coders::varint::read_varint_i64;
use ferrobeam_engine::metrics::payload;
use ferrobeam_proto::pipeline::v1::MonitoringInfo;

/// The SDK's count of the elements of each PCollection.
const ELEMENT_COUNT_URN: &str = "beam:metric:element_count:v1";
const USER_URN_PREFIX: &str = "beam:metric:user:";

/// One user metric (or runner gauge) of one step.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct UserMetric {
    pub step: String,
    pub namespace: String,
    pub name: String,
    #[serde(flatten)]
    pub value: MetricValue,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetricValue {
    Counter {
        value: f64,
    },
    Gauge {
        value: f64,
    },
    Distribution {
        count: i64,
        sum: f64,
        min: f64,
        max: f64,
    },
}

/// Element counts by PCollection id.
pub fn element_counts(infos: &[MonitoringInfo]) -> HashMap<String, i64> {
    let mut counts = HashMap::new();
    for info in infos.iter().filter(|i| i.urn == ELEMENT_COUNT_URN) {
        if let (Some(pc), Ok((n, _))) = (
            info.labels.get("PCOLLECTION"),
            read_varint_i64(&info.payload, 0),
        ) {
            *counts.entry(pc.clone()).or_insert(0) += n;
        }
    }
    counts
}

/// User metrics and runner gauges, sorted by step, namespace and name.
/// String sets, tries and histograms are left out (no single figure).
pub fn user_metrics(infos: &[MonitoringInfo]) -> Vec<UserMetric> {
    let mut metrics: Vec<UserMetric> = infos
        .iter()
        .filter(|i| i.urn.starts_with(USER_URN_PREFIX))
        .filter_map(|info| {
            let label = |k: &str| info.labels.get(k).cloned().unwrap_or_default();
            Some(UserMetric {
                step: label("PTRANSFORM"),
                namespace: label("NAMESPACE"),
                name: label("NAME"),
                value: decode(&info.r#type, &info.payload)?,
            })
        })
        .collect();
    metrics.sort_by(|a, b| (&a.step, &a.namespace, &a.name).cmp(&(&b.step, &b.namespace, &b.name)));
    metrics
}

fn decode(kind: &str, bytes: &[u8]) -> Option<MetricValue> {
    let mut at = 0;
    let mut int = || -> Option<i64> {
        let (v, next) = read_varint_i64(bytes, at).ok()?;
        at = next;
        Some(v)
    };
    // Beam encodes doubles as 8 big-endian bytes.
    let double = |at: usize| -> Option<f64> {
        Some(f64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    match kind {
        payload::SUM_INT64 => Some(MetricValue::Counter {
            value: int()? as f64,
        }),
        payload::SUM_DOUBLE => Some(MetricValue::Counter { value: double(0)? }),
        payload::DIST_INT64 => {
            let (count, sum, min, max) = (int()?, int()?, int()?, int()?);
            Some(MetricValue::Distribution {
                count,
                sum: sum as f64,
                min: min as f64,
                max: max as f64,
            })
        }
        payload::DIST_DOUBLE => {
            let count = int()?;
            Some(MetricValue::Distribution {
                count,
                sum: double(at)?,
                min: double(at + 8)?,
                max: double(at + 16)?,
            })
        }
        payload::LATEST_INT64 => {
            let _timestamp = int()?;
            Some(MetricValue::Gauge {
                value: int()? as f64,
            })
        }
        payload::LATEST_DOUBLE => {
            let _timestamp = int()?;
            Some(MetricValue::Gauge { value: double(at)? })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(urn: &str, kind: &str, labels: &[(&str, &str)], payload: Vec<u8>) -> MonitoringInfo {
        MonitoringInfo {
            urn: urn.into(),
            r#type: kind.into(),
            payload: payload.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            start_time: None,
        }
    }

    fn varints(values: &[i64]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            ferrobeam_coders::varint::write_varint_i64(&mut out, *v);
        }
        out
    }

    #[test]
    fn decodes_counters_distributions_and_gauges() {
        let labels = [("PTRANSFORM", "Score"), ("NAMESPACE", "ns"), ("NAME", "n")];
        let mut dist_double = varints(&[2]);
        for x in [3.5f64, 1.0, 2.5] {
            dist_double.extend(x.to_be_bytes());
        }
        let infos = [
            info(
                "beam:metric:user:sum_int64:v1",
                payload::SUM_INT64,
                &labels,
                varints(&[42]),
            ),
            info(
                "beam:metric:user:distribution_int64:v1",
                payload::DIST_INT64,
                &[("PTRANSFORM", "A"), ("NAMESPACE", "ns"), ("NAME", "d")],
                varints(&[3, 10, 1, 6]),
            ),
            info(
                "beam:metric:user:distribution_double:v1",
                payload::DIST_DOUBLE,
                &[("PTRANSFORM", "A"), ("NAMESPACE", "ns"), ("NAME", "e")],
                dist_double,
            ),
            info(
                "beam:metric:user:latest_int64:v1",
                payload::LATEST_INT64,
                &[("PTRANSFORM", "B"), ("NAMESPACE", "ns"), ("NAME", "g")],
                varints(&[1_700_000_000_000, -7]),
            ),
            info(
                ELEMENT_COUNT_URN,
                payload::SUM_INT64,
                &[("PCOLLECTION", "pc1")],
                varints(&[9]),
            ),
        ];
        let metrics = user_metrics(&infos);
        let values: Vec<(&str, &MetricValue)> = metrics
            .iter()
            .map(|m| (m.name.as_str(), &m.value))
            .collect();
        assert_eq!(
            values,
            vec![
                (
                    "d",
                    &MetricValue::Distribution {
                        count: 3,
                        sum: 10.0,
                        min: 1.0,
                        max: 6.0
                    }
                ),
                (
                    "e",
                    &MetricValue::Distribution {
                        count: 2,
                        sum: 3.5,
                        min: 1.0,
                        max: 2.5
                    }
                ),
                ("g", &MetricValue::Gauge { value: -7.0 }),
                ("n", &MetricValue::Counter { value: 42.0 }),
            ]
        );
        assert_eq!(
            element_counts(&infos),
            HashMap::from([("pc1".to_string(), 9)])
        );
    }
}
