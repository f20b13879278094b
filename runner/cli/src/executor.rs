//! The Job API's [`Executor`], implemented with the graph translator and the engine.

use std::path::PathBuf;
use std::sync::Arc;

use ferrobeam_engine::telemetry::{JobTelemetry, TelemetryHub};
use ferrobeam_engine::{EngineConfig, EngineError, JobSpec, Level, Reporter};
use ferrobeam_fnapi::WorkerLauncher;
use ferrobeam_graph::{translate, TranslateOptions};
use ferrobeam_jobs::{Executor, JobContext, JobEvents};
use ferrobeam_proto::fn_api::ProvisionInfo;
use ferrobeam_proto::job_api::job_message::MessageImportance;
use ferrobeam_proto::pipeline::v1::{MonitoringInfo, Pipeline};
use futures::future::BoxFuture;


pub struct EngineExecutor {
    pub launcher: Arc<WorkerLauncher>,
    pub engine: EngineConfig,
    pub strict_environments: bool,
    pub fn_endpoint: String,
    pub checkpoint_defaults: CheckpointDefaults,
    /// Each running job's live figures, for the dashboard.
    pub telemetry: Arc<TelemetryHub>,
    /// The dashboard's address, told to each job's client at start.
    pub dashboard_url: Option<String>,
}

/// The job server's own checkpoint flags: defaults for jobs whose options
/// do not say.
#[derive(Clone, Debug, Default)]
pub struct CheckpointDefaults {
    /// Each streaming job checkpoints into `<root>/<job name>` (and so a
    /// job submitted again under the same `--job_name` restores).
    pub root: Option<PathBuf>,
    pub interval: Option<std::time::Duration>,
    pub backend: Option<ferrobeam_state::BackendKind>,
}

impl EngineExecutor {
    fn translate_options(
        &self,
        pipeline: &Pipeline,
        options: &prost_types::Struct,
    ) -> TranslateOptions {
        TranslateOptions {
            strict_environments: self.strict_environments,
            fn_endpoint: self.fn_endpoint.clone(),
            drain: bool_option(options, "ferrobeam_drain"),
            streaming: runs_streaming(pipeline, options),
        }
    }
}

impl Executor for EngineExecutor {
    fn validate(&self, pipeline: &Pipeline, options: &prost_types::Struct) -> Result<(), String> {
        let plan = translate(pipeline, &self.translate_options(pipeline, options))
            .map_err(|e| e.to_string())?;
        ferrobeam_engine::check_native_io(&plan)?;
        crate::harnesses::check_process_commands(&plan)?;
        let durability = durability(
            options,
            &self.checkpoint_defaults,
            "job",
            runs_streaming(pipeline, options),
        )?;
        // A restore that cannot work is refused before the job is accepted.
        if let Some(path) = &durability.restore_from {
            ferrobeam_state::checkpoint::resolve(path).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Streaming jobs are drained by the engine (it watches `JobSpec::drain`
    /// and returns `Ok` once drained; the job service then says DRAINED).
    /// A batch job reads bounded input and simply runs to its end.
    fn is_drainable(&self, pipeline: &Pipeline, options: &prost_types::Struct) -> bool {
        runs_streaming(pipeline, options)
    }

    fn expand(
        &self,
        request: &ferrobeam_proto::expansion::v1::ExpansionRequest,
    ) -> ferrobeam_proto::expansion::v1::ExpansionResponse {
        ferrobeam_io_kafka::expansion::expand(request)
    }

    fn execute(&self, mut job: JobContext) -> BoxFuture<'static, Result<(), String>> {
        let defaults = self.checkpoint_defaults.clone();
        let plan = translate(
            &job.pipeline,
            &self.translate_options(&job.pipeline, &job.options),
        );
        // The engine takes savepoint requests in its own type.
        let (savepoint_tx, savepoint_rx) = tokio::sync::mpsc::channel(4);
        let (_, mut orders) = tokio::sync::mpsc::channel(1);
        std::mem::swap(&mut orders, &mut job.savepoints);
        tokio::spawn(async move {
            while let Some(order) = orders.recv().await {
                let request = ferrobeam_engine::durable::SavepointRequest {
                    directory: order.directory,
                    stop: order.stop,
                    reply: order.reply,
                };
                if savepoint_tx.send(request).await.is_err() {
                    break;
                }
            }
        });
        let launcher = self.launcher.clone();
        let engine = self.engine.clone();
        let streaming = runs_streaming(&job.pipeline, &job.options);
        let hub = self.telemetry.clone();
        let dashboard = self.dashboard_url.clone();
        Box::pin(async move {
            let plan = plan.map_err(|e| e.to_string())?;
            let telemetry = JobTelemetry::new(&plan);
            hub.insert(&job.job_id, telemetry.clone());
            if let Some(url) = dashboard {
                job.events.message(
                    MessageImportance::JobMessageBasic,
                    format!("dashboard: {url}#/jobs/{}", job.job_id),
                );
            }
            let staged = job
                .artifacts
                .iter()
                .map(|(env, arts)| (env.clone(), ferrobeam_fnapi::provision::staged_files(arts)))
                .collect();
            let dependencies = job.artifacts.values().flatten().cloned().collect();
            let spec = JobSpec {
                job_id: job.job_id.clone(),
                job_name: job.job_name.clone(),
                durability: durability(&job.options, &defaults, &job.job_name, streaming)?,
                savepoints: parking_lot::Mutex::new(Some(savepoint_rx)),
                plan,
                options_json: ferrobeam_fnapi::provision::options_json(&job.options),
                provision: ProvisionInfo {
                    pipeline_options: Some(job.options.clone()),
                    dependencies,
                    runner_capabilities: vec![
                        ferrobeam_fnapi::CONTROL_RESPONSE_ELEMENTS_EMBEDDING.to_owned()
                    ],
                    ..Default::default()
                },
                staged,
                work_dir: job.work_dir.clone(),
                inprocess_worker_pool: string_option(
                    &job.options,
                    "ferrobeam_inprocess_worker_pool",
                ),
                reporter: Arc::new(EventsReporter(job.events.clone())),
                cancel: job.cancel.clone(),
                drain: job.drain.clone(),
                source_idle_timeout: source_idle_timeout(&job.options),
                telemetry,
            };
            let cancel = job.cancel.clone();
            // The job service turns a clean return into DONE, DRAINED or
            // CANCELLED by the flags it set, so a stop it asked for is no error.
            match ferrobeam_engine::run_job(launcher, engine, spec).await {
                Ok(()) => Ok(()),
                Err(EngineError::Cancelled) if *cancel.borrow() => Ok(()),
                Err(EngineError::Cancelled) => Err("the job was cancelled".into()),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

struct EventsReporter(Arc<dyn JobEvents>);

impl Reporter for EventsReporter {
    fn message(&self, level: Level, text: String) {
        let importance = match level {
            Level::Debug => MessageImportance::JobMessageDebug,
            Level::Info => MessageImportance::JobMessageBasic,
            Level::Warning => MessageImportance::JobMessageWarning,
            Level::Error => MessageImportance::JobMessageError,
        };
        self.0.message(importance, text);
    }

    fn metrics(&self, infos: Vec<MonitoringInfo>) {
        // Batch commits only whole bundles, so attempted == committed.
        self.0.metrics(infos.clone(), infos);
    }
}

/// Whether a job runs on the streaming engine: `--streaming`, or a source
/// only the streaming engine runs (a Kafka read, which Beam's SDKs do not
/// flag as streaming).
pub fn runs_streaming(pipeline: &Pipeline, options: &prost_types::Struct) -> bool {
    bool_option(options, "streaming")
        || pipeline.components.as_ref().is_some_and(|c| {
            c.transforms.values().any(|t| {
                t.spec.as_ref().is_some_and(|s| {
                    s.urn == ferrobeam_graph::urns::KAFKA_READ_WITH_METADATA
                        || s.urn == ferrobeam_graph::urns::KAFKA_READ_WITHOUT_METADATA
                })
            })
        })
}

/// A string pipeline option by its Python name, if set and non-empty.
fn string_option(options: &prost_types::Struct, name: &str) -> Option<String> {
    let v = options.fields.get(&format!("beam:option:{name}:v1"))?;
    match &v.kind {
        Some(prost_types::value::Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A number option by its Python name (Beam may send numbers as strings).
fn number_option(options: &prost_types::Struct, name: &str) -> Result<Option<f64>, String> {
    let Some(v) = options.fields.get(&format!("beam:option:{name}:v1")) else {
        return Ok(None);
    };
    match &v.kind {
        Some(prost_types::value::Kind::NumberValue(n)) => Ok(Some(*n)),
        Some(prost_types::value::Kind::StringValue(s)) => s
            .parse::<f64>()
            .map(Some)
            .map_err(|_| format!("--{name} must be a number, got {s:?}")),
        None | Some(prost_types::value::Kind::NullValue(_)) => Ok(None),
        Some(_) => Err(format!("--{name} must be a number")),
    }
}

/// State backend, checkpoint and restore options (`--checkpoint_dir`,
/// `--checkpoint_interval`, `--checkpoints_retained`, `--restore_from`,
/// `--state_backend`, `--allow_non_restored_state`).
fn durability(
    options: &prost_types::Struct,
    defaults: &CheckpointDefaults,
    job_name: &str,
    streaming: bool,
) -> Result<ferrobeam_engine::durable::DurabilityConfig, String> {
    use ferrobeam_state::BackendKind;
    let mut config = ferrobeam_engine::durable::DurabilityConfig::default();
    let absolute = |name: &str| -> Result<Option<PathBuf>, String> {
        match string_option(options, name) {
            None => Ok(None),
            Some(p) if std::path::Path::new(&p).is_absolute() => Ok(Some(PathBuf::from(p))),
            Some(p) => Err(format!(
                "--{name} must be an absolute path (the job server may run elsewhere), got {p:?}"
            )),
        }
    };
    config.checkpoint_dir = absolute("checkpoint_dir")?;
    if config.checkpoint_dir.is_none() && streaming {
        config.checkpoint_dir = defaults.root.as_ref().map(|root| {
            let name: String = job_name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            root.join(if name.trim_matches('.').is_empty() {
                "job".into()
            } else {
                name
            })
        });
    }
    if let Some(interval) = defaults.interval {
        config.checkpoint_interval = interval;
    }
    config.backend = defaults.backend;
    config.restore_from = absolute("restore_from")?;
    if let Some(seconds) = number_option(options, "checkpoint_interval")? {
        if !(seconds > 0.0 && seconds.is_finite()) {
            return Err(format!(
                "--checkpoint_interval must be a positive number of seconds, got {seconds}"
            ));
        }
        config.checkpoint_interval = std::time::Duration::from_secs_f64(seconds);
    }
    if let Some(n) = number_option(options, "checkpoints_retained")? {
        if !(n >= 1.0 && n.fract() == 0.0) {
            return Err(format!(
                "--checkpoints_retained must be a whole number >= 1, got {n}"
            ));
        }
        config.checkpoints_retained = n as usize;
    }
    if let Some(name) = string_option(options, "state_backend") {
        config.backend = Some(BackendKind::parse(&name).ok_or_else(|| {
            format!("--state_backend must be 'memory' or 'rocksdb', got {name:?}")
        })?);
    }
    config.allow_non_restored_state = bool_option(options, "allow_non_restored_state");
    Ok(config)
}

/// How long a streaming source may show no sign of life before readers
/// with other inputs stop waiting for its watermark.
const DEFAULT_SOURCE_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `--ferrobeam_source_idle_timeout` (seconds; 0 or less: never idle).
fn source_idle_timeout(options: &prost_types::Struct) -> Option<std::time::Duration> {
    let seconds = match options
        .fields
        .get("beam:option:ferrobeam_source_idle_timeout:v1")
        .and_then(|v| v.kind.as_ref())
    {
        Some(prost_types::value::Kind::NumberValue(n)) => *n,
        Some(prost_types::value::Kind::StringValue(s)) => match s.parse::<f64>() {
            Ok(n) => n,
            Err(_) => return Some(DEFAULT_SOURCE_IDLE_TIMEOUT),
        },
        _ => return Some(DEFAULT_SOURCE_IDLE_TIMEOUT),
    };
    (seconds > 0.0 && seconds.is_finite()).then(|| std::time::Duration::from_secs_f64(seconds))
}

/// A flag pipeline option by its Python name (Beam sends unknown flags as strings).
fn bool_option(options: &prost_types::Struct, name: &str) -> bool {
    match options
        .fields
        .get(&format!("beam:option:{name}:v1"))
        .and_then(|v| v.kind.as_ref())
    {
        Some(prost_types::value::Kind::BoolValue(b)) => *b,
        Some(prost_types::value::Kind::StringValue(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

