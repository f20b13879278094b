//! `/metrics`: the dashboard's figures in Prometheus' text format (0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::SystemTime;

use crate::monitoring::MetricValue;
use crate::views::JobDetail;

/// Beam's watermark bounds in milliseconds: not a time, left out.
const WATERMARK_BOUND: i64 = 9_223_372_036_854_775;

/// Metric families in the order first added, each with its series.
#[derive(Default)]
struct Families {
    order: Vec<&'static str>,
    families: BTreeMap<&'static str, Family>,
}

struct Family {
    kind: &'static str,
    help: &'static str,
    series: Vec<String>,
}

impl Families {
    fn add(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let family = self.families.entry(name).or_insert_with(|| {
            self.order.push(name);
            Family {
                kind,
                help,
                series: Vec::new(),
            }
        });
        let mut line = String::from(name);
        if !labels.is_empty() {
            line.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                let _ = write!(line, "{k}=\"{}\"", escape(v));
            }
            line.push('}');
        }
        let _ = write!(line, " {}", number(value));
        family.series.push(line);
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for name in &self.order {
            let f = &self.families[name];
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {}", f.kind);
            for line in &f.series {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// The text of `/metrics` for `jobs` (with their details) at `now`.
pub fn render(jobs: &[JobDetail], now: SystemTime) -> String {
    let mut f = Families::default();
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for job in jobs {
        *by_state.entry(job.summary.state).or_default() += 1;
    }
    for (state, n) in &by_state {
        f.add(
            "ferrobeam_jobs",
            "gauge",
            "Jobs the server knows, by state.",
            &[("state", state)],
            *n as f64,
        );
    }
    let now_ms = crate::views::millis(now);
    for job in jobs {
        let s = &job.summary;
        let job_labels = [("job_id", s.id.as_str()), ("job_name", s.name.as_str())];
        let running = s.finished_ms.is_none() && s.started_ms.is_some();
        f.add(
            "ferrobeam_job_up",
            "gauge",
            "1 while the job runs.",
            &job_labels,
            if running { 1.0 } else { 0.0 },
        );
        if let Some(d) = s.duration_ms {
            f.add(
                "ferrobeam_job_duration_seconds",
                "gauge",
                "How long the job has run.",
                &job_labels,
                d as f64 / 1000.0,
            );
        }
        for stage in &job.stages {
            let labels = [
                job_labels[0],
                job_labels[1],
                ("stage", stage.id.as_str()),
                ("stage_name", stage.name.as_str()),
            ];
            if let Some(n) = stage.elements_in {
                f.add(
                    "ferrobeam_stage_elements_in_total",
                    "counter",
                    "Elements into the stage.",
                    &labels,
                    n as f64,
                );
            }
            if let Some(n) = stage.elements_out {
                f.add(
                    "ferrobeam_stage_elements_out_total",
                    "counter",
                    "Elements out of the stage.",
                    &labels,
                    n as f64,
                );
            }
            f.add(
                "ferrobeam_stage_bundles_total",
                "counter",
                "Bundles the stage ran (native stages: steps with input).",
                &labels,
                stage.bundles as f64,
            );
            f.add(
                "ferrobeam_stage_bundle_seconds_sum",
                "counter",
                "Time spent in the stage's bundles.",
                &labels,
                stage.bundle_ms_avg.unwrap_or(0.0) * stage.bundles as f64 / 1000.0,
            );
            if let Some(q) = stage.queued {
                f.add(
                    "ferrobeam_stage_queued_elements",
                    "gauge",
                    "Elements waiting in the stage (backpressure).",
                    &labels,
                    q as f64,
                );
            }
            let watermarks = [
                (
                    "ferrobeam_stage_input_watermark_seconds",
                    "The stage's input watermark (Unix seconds).",
                    stage.input_watermark_ms,
                ),
                (
                    "ferrobeam_stage_output_watermark_seconds",
                    "The stage's output watermark (Unix seconds).",
                    stage.output_watermark_ms,
                ),
            ];
            for (name, help, wm) in watermarks {
                if let Some(wm) = wm.filter(|w| w.abs() < WATERMARK_BOUND) {
                    f.add(name, "gauge", help, &labels, wm as f64 / 1000.0);
                }
            }
            if let Some(wm) = stage
                .output_watermark_ms
                .filter(|w| w.abs() < WATERMARK_BOUND)
            {
                f.add(
                    "ferrobeam_stage_watermark_lag_seconds",
                    "gauge",
                    "How far the stage's output watermark is behind the wall clock.",
                    &labels,
                    // A source's watermark may run a little ahead of the clock: no lag.
                    (now_ms - wm).max(0) as f64 / 1000.0,
                );
            }
        }
        for w in &job.workers {
            let labels = [
                job_labels[0],
                job_labels[1],
                ("worker", w.id.as_str()),
                ("environment", w.environment.as_str()),
            ];
            f.add(
                "ferrobeam_worker_restarts_total",
                "counter",
                "Replacements of a worker slot's lost worker.",
                &labels,
                w.restarts as f64,
            );
            f.add(
                "ferrobeam_worker_bundles_total",
                "counter",
                "Bundles a worker slot completed.",
                &labels,
                w.bundles as f64,
            );
        }
        if !job.checkpoints.is_empty() {
            let ok = job.checkpoints.iter().filter(|c| c.ok).count();
            for (outcome, n) in [("ok", ok), ("failed", job.checkpoints.len() - ok)] {
                f.add(
                    "ferrobeam_checkpoints_total",
                    "counter",
                    "Checkpoints and savepoints taken (the last 100), by outcome.",
                    &[job_labels[0], job_labels[1], ("outcome", outcome)],
                    n as f64,
                );
            }
            if let Some(last) = job.checkpoints.iter().rev().find(|c| c.ok) {
                f.add(
                    "ferrobeam_checkpoint_last_bytes",
                    "gauge",
                    "Size of the last completed checkpoint.",
                    &job_labels,
                    last.bytes as f64,
                );
                f.add(
                    "ferrobeam_checkpoint_last_duration_seconds",
                    "gauge",
                    "Duration of the last completed checkpoint.",
                    &job_labels,
                    last.duration_ms / 1000.0,
                );
            }
        }
        for m in &job.metrics {
            let labels = [
                job_labels[0],
                job_labels[1],
                ("step", m.step.as_str()),
                ("namespace", m.namespace.as_str()),
                ("name", m.name.as_str()),
            ];
            match &m.value {
                MetricValue::Counter { value } => f.add(
                    "ferrobeam_user_counter",
                    "gauge",
                    "User counters (Beam Metrics.counter), committed bundles only.",
                    &labels,
                    *value,
                ),
                MetricValue::Gauge { value } => f.add(
                    "ferrobeam_user_gauge",
                    "gauge",
                    "User gauges and the runner's own (namespace ferrobeam).",
                    &labels,
                    *value,
                ),
                MetricValue::Distribution {
                    count,
                    sum,
                    min,
                    max,
                } => {
                    let parts = [
                        ("ferrobeam_user_distribution_count", *count as f64),
                        ("ferrobeam_user_distribution_sum", *sum),
                        ("ferrobeam_user_distribution_min", *min),
                        ("ferrobeam_user_distribution_max", *max),
                    ];
                    for (name, v) in parts {
                        f.add(
                            name,
                            "gauge",
                            "User distributions (Beam Metrics.distribution).",
                            &labels,
                            v,
                        );
                    }
                }
            }
        }
    }
    f.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_help_and_type_per_family_and_labels_escaped() {
        let mut f = Families::default();
        f.add("a_total", "counter", "A.", &[("x", "q\"uo\\te\nd")], 1.0);
        f.add("a_total", "counter", "A.", &[("x", "plain")], 2.5);
        f.add("b", "gauge", "B.", &[], f64::INFINITY);
        assert_eq!(
            f.render(),
            "# HELP a_total A.\n# TYPE a_total counter\n\
             a_total{x=\"q\\\"uo\\\\te\\nd\"} 1\na_total{x=\"plain\"} 2.5\n\
             # HELP b B.\n# TYPE b gauge\nb +Inf\n"
        );
    }
}
