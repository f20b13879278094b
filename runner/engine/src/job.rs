//! Running one job's plan from start to finish.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use ferrobeam_coders::PaneInfo;
use ferrobeam_fnapi::environment::{EnvironmentSpec, Notice, WorkerTemplate};
use ferrobeam_fnapi::registry::LogSink;
use ferrobeam_fnapi::WorkerLauncher;
use ferrobeam_graph::{Environment, Plan, PortRef, StageKind};
use ferrobeam_proto::fn_api::log_entry::severity::Enum as Severity;
use ferrobeam_proto::fn_api::ProvisionInfo;
use ferrobeam_proto::pipeline::v1::MonitoringInfo;
use tokio::sync::watch;
use tracing::Instrument;

use crate::metrics::{JobMetrics, StageScope};
use crate::pool::WorkerPool;
use crate::sdk_stage::SdkStageRun;
use crate::sinks::lines::LineSink;
use crate::state::{SideInputData, SideInputs, UserState};
use crate::wire::{WireFormat, MIN_TIMESTAMP_MILLIS};
use crate::EngineError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

/// Where a running job reports to (the job service's message stream and metrics).
pub trait Reporter: Send + Sync {
    fn message(&self, level: Level, text: String);
    fn metrics(&self, infos: Vec<MonitoringInfo>);
}

/// Engine-wide settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Interpreter for local Python SDK workers.
    pub python: PathBuf,
    /// Workers per environment.
    pub workers: usize,
    /// Bundles in flight on one worker at a time.
    pub bundles_per_worker: usize,
}

/// One job to run.
pub struct JobSpec {
    pub job_id: String,
    /// The user's `--job_name` (or the job id), written in checkpoints.
    pub job_name: String,
    /// State backend, checkpoints and restore (streaming jobs).
    pub durability: crate::durable::DurabilityConfig,
    /// Savepoint requests (streaming jobs; taken by the driver at start).
    pub savepoints:
        parking_lot::Mutex<Option<tokio::sync::mpsc::Receiver<crate::durable::SavepointRequest>>>,
    pub plan: Plan,
    /// Options as the SDK harness reads them from `PIPELINE_OPTIONS`.
    pub options_json: String,
    pub provision: ProvisionInfo,
    /// Per environment: (local file, staged name) pairs for local harnesses.
    pub staged: HashMap<String, Vec<(PathBuf, String)>>,
    pub work_dir: PathBuf,
    /// A worker pool inside the submitting process (FerrobeamRunner's): its
    /// worker needs no start-up, so small jobs finish before a worker
    /// process could even import Beam.  Used for local Python environments.
    pub inprocess_worker_pool: Option<String>,
    pub reporter: Arc<dyn Reporter>,
    pub cancel: watch::Receiver<bool>,
    /// Drain requested: sources stop, pending work fires, the job ends.
    pub drain: watch::Receiver<bool>,
    /// Streaming: a source (deferred splittable-DoFn work) that neither
    /// outputs nor advances its watermark for this long stops holding back
    /// readers that have other, active inputs.  `None`: never.
    pub source_idle_timeout: Option<std::time::Duration>,
    /// Live figures for the dashboard (see [`crate::telemetry`]).
    pub telemetry: Arc<crate::telemetry::JobTelemetry>,
}

/// The descriptor id of a stage's drain variant (see
/// [`ferrobeam_graph::SdkStage::drain_descriptor`]).
pub(crate) fn drain_descriptor_id(stage_descriptor_id: &str) -> String {
    format!("{stage_descriptor_id}-drain")
}

/// Runs `job` to completion.
pub async fn run_job(
    launcher: Arc<WorkerLauncher>,
    config: EngineConfig,
    job: JobSpec,
) -> Result<(), EngineError> {
    for note in &job.plan.notes {
        job.reporter.message(Level::Info, note.clone());
    }
    let registry = launcher.registry().clone();
    let mut descriptor_ids = Vec::new();
    for stage in &job.plan.stages {
        let id = format!("{}-{}", job.job_id, stage.id);
        let descriptors = match &stage.kind {
            StageKind::Sdk(sdk) => {
                let drain = sdk.drain_descriptor.as_ref();
                let mut ds = vec![(id.clone(), &sdk.descriptor)];
                ds.extend(drain.map(|d| (drain_descriptor_id(&id), d)));
                ds
            }
            StageKind::GroupByKey {
                merge: Some(merge), ..
            } => vec![(id, &merge.descriptor)],
            _ => continue,
        };
        for (id, descriptor) in descriptors {
            let mut d = descriptor.clone();
            d.id = id;
            descriptor_ids.push(d.id.clone());
            registry.add_descriptor(d);
        }
    }
    let mut cancel = job.cancel.clone();
    let metrics = JobMetrics::new(job.reporter.clone(), crate::metrics::step_names(&job.plan));
    // Every log line of the job's run carries its id (`--log_format=json`).
    let span = tracing::info_span!("job", job = %job.job_id);
    let result = tokio::select! {
        r = execute(&launcher, &config, &job, &metrics).instrument(span) => r,
        _ = cancel.wait_for(|c| *c) => Err(EngineError::Cancelled),
    };
    job.telemetry.finish_all(&result);
    // Whatever the outcome (done, failed, cancelled): what committed counts.
    metrics.publish();
    for id in descriptor_ids {
        registry.remove_descriptor(&id);
    }
    result
}

async fn execute(
    launcher: &Arc<WorkerLauncher>,
    config: &EngineConfig,
    job: &JobSpec,
    metrics: &JobMetrics,
) -> Result<(), EngineError> {
    let pools = start_pools(launcher, config, job);
    for pool in pools.values() {
        job.telemetry.add_pool(pool.stats());
    }
    let result = if job.plan.streaming {
        crate::streaming::driver::run(config, job, &pools, metrics).await
    } else {
        let d = &job.durability;
        if d.checkpoint_dir.is_some() || d.restore_from.is_some() {
            job.reporter.message(
                Level::Warning,
                "--checkpoint_dir and --restore_from apply to streaming jobs (--streaming); \
                 this batch job runs without checkpoints, its state in memory"
                    .into(),
            );
        }
        run_stages(config, job, &pools, metrics).await
    };
    // Workers are disposable: stop them in the background, the job is done.
    for (_, pool) in pools {
        tokio::spawn(pool.shutdown());
    }
    result
}

fn start_pools(
    launcher: &Arc<WorkerLauncher>,
    config: &EngineConfig,
    job: &JobSpec,
) -> HashMap<String, WorkerPool> {
    // Workers start in the background; a failed start surfaces when a
    // bundle needs that worker.
    let reporter = job.reporter.clone();
    let log_sink: LogSink = Arc::new(move |entry| {
        let severity = Severity::try_from(entry.severity).unwrap_or(Severity::Info);
        if matches!(severity, Severity::Error | Severity::Critical) {
            let mut text = format!("[SDK worker] {}", entry.message);
            if !entry.trace.is_empty() {
                text = format!("{text}\n{}", entry.trace);
            }
            reporter.message(Level::Warning, text);
        }
    });
    let reporter = job.reporter.clone();
    let notice: Notice = Arc::new(move |text| reporter.message(Level::Warning, text));
    let mut ids: Vec<&String> = plan_environments(&job.plan);
    ids.sort();
    ids.dedup();
    let starts = ids.into_iter().map(|env_id| {
        let spec = match &job.plan.environments[env_id] {
            Environment::LocalPython => EnvironmentSpec::LocalPython {
                python: config.python.clone(),
            },
            Environment::External { endpoint, params } => EnvironmentSpec::External {
                endpoint: endpoint.clone(),
                params: params.clone(),
            },
            Environment::Process { command, env } => EnvironmentSpec::Process {
                command: command.clone(),
                env: env.clone(),
            },
        };
        let template = WorkerTemplate {
            job_id: job.job_id.clone(),
            environment_id: env_id.clone(),
            spec,
            options_json: job.options_json.clone(),
            provision: job.provision.clone(),
            staged: job.staged.get(env_id).cloned().unwrap_or_default(),
            work_dir: job.work_dir.clone(),
            log_sink: log_sink.clone(),
            notice: notice.clone(),
            sdk_capabilities: job
                .plan
                .components
                .environments
                .get(env_id)
                .map(|e| e.capabilities.clone())
                .unwrap_or_default(),
        };
        let mut templates = vec![template.clone(); config.workers.max(1)];
        if let (Some(endpoint), EnvironmentSpec::LocalPython { .. }) =
            (&job.inprocess_worker_pool, &template.spec)
        {
            let spec = EnvironmentSpec::External {
                endpoint: endpoint.clone(),
                params: Default::default(),
            };
            templates.insert(0, WorkerTemplate { spec, ..template });
        }
        (
            env_id.clone(),
            WorkerPool::start(launcher.clone(), templates),
        )
    });
    starts.collect()
}

fn plan_environments(plan: &Plan) -> Vec<&String> {
    plan.stages
        .iter()
        .filter_map(|s| match &s.kind {
            StageKind::Sdk(sdk) => Some(&sdk.environment_id),
            StageKind::GroupByKey {
                merge: Some(merge), ..
            } => Some(&merge.environment_id),
            _ => None,
        })
        .collect()
}

async fn run_stages(
    config: &EngineConfig,
    job: &JobSpec,
    pools: &HashMap<String, WorkerPool>,
    metrics: &JobMetrics,
) -> Result<(), EngineError> {
    let plan = &job.plan;
    let mut data: HashMap<PortRef, Vec<Bytes>> = HashMap::new();
    let mut readers = plan.port_readers();
    let metric_scopes = StageScope::for_plan(plan);
    let user_state = Arc::new(UserState::default());
    let format = |port: &PortRef| WireFormat::new(&plan.components, &port.coder_id);
    for stage in &plan.stages {
        tracing::debug!(job = %job.job_id, stage = %stage.id, name = %stage.name, "stage starting");
        let telemetry = job.telemetry.stage(&stage.id);
        telemetry.start();
        let step_started = std::time::Instant::now();
        let take = |data: &HashMap<PortRef, Vec<Bytes>>, port: &PortRef| {
            data.get(port).cloned().unwrap_or_default()
        };
        let produced: Vec<(PortRef, Vec<Bytes>)> = match &stage.kind {
            StageKind::Impulse { output } => vec![(output.clone(), vec![impulse_element()])],
            StageKind::TestStream { payload, outputs } => {
                crate::test_stream::replay(payload, outputs, &plan.components)?
            }
            StageKind::Flatten { inputs, output } => {
                vec![(
                    output.clone(),
                    inputs.iter().flat_map(|p| take(&data, p)).collect(),
                )]
            }
            StageKind::Identity { input, output } => vec![(output.clone(), take(&data, input))],
            StageKind::LineSink {
                transform_id,
                input,
                directory,
            } => {
                // Batch: one file, published when the stage is done.
                let mut sink =
                    LineSink::for_stage(&plan.components, transform_id, input, directory)?;
                sink.recover(Vec::new())?;
                for chunk in take(&data, input) {
                    sink.write(&chunk)?;
                }
                let started = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                sink.close(&format!("t{started}"))?;
                sink.publish()?;
                Vec::new()
            }
            StageKind::KafkaWrite {
                transform_id,
                urn,
                payload,
                input,
            } => {
                // Batch: everything written, then acknowledged (and, in a
                // transaction, committed).
                let mut write = crate::streaming::kafka::KafkaWrite::for_stage(
                    &plan.components,
                    transform_id,
                    urn,
                    payload,
                    input,
                    None,
                )?;
                write.recover(|_| None)?;
                for chunk in take(&data, input) {
                    write.write(&chunk)?;
                }
                write.flush()?;
                write.commit()?;
                Vec::new()
            }
            StageKind::KafkaRead { transform_id, .. } => {
                return Err(EngineError::Internal(format!(
                    "{}: a Kafka read runs only on the streaming engine",
                    plan.components.transforms[transform_id].unique_name
                )))
            }
            StageKind::GroupByKey {
                input,
                output,
                windowing,
                merge,
                ..
            } => {
                let chunks = take(&data, input);
                let fmt = format(input)?;
                let windowing = windowing.clone();
                let merged = match merge {
                    Some(merge) => {
                        let merger = crate::window_merge::SdkWindowMerger {
                            merge,
                            components: &plan.components,
                            pool: &pools[&merge.environment_id],
                            descriptor_id: format!("{}-{}", job.job_id, stage.id),
                        };
                        let (c, f) = (chunks.clone(), fmt.clone());
                        let per_key = tokio::task::spawn_blocking(move || {
                            crate::window_merge::windows_per_key(&c, &f)
                        })
                        .await
                        .map_err(|e| {
                            EngineError::Internal(format!("collecting windows panicked: {e}"))
                        })??;
                        Some(merger.merge(&per_key).await?)
                    }
                    None => None,
                };
                let grouped = tokio::task::spawn_blocking(move || {
                    crate::gbk::group_by_key_merged(&chunks, &fmt, &windowing, merged.as_ref())
                })
                .await
                .map_err(|e| EngineError::Internal(format!("GroupByKey panicked: {e}")))??;
                vec![(output.clone(), grouped)]
            }
            StageKind::Sdk(sdk) => {
                let mut side_inputs = SideInputs::new();
                for si in &sdk.side_inputs {
                    let built =
                        SideInputData::build(si, &take(&data, &si.port), &format(&si.port)?)?;
                    side_inputs.insert(
                        (si.transform_id.clone(), si.local_name.clone()),
                        Arc::new(built),
                    );
                }
                let input = sdk.input.as_ref().map(|(p, _)| take(&data, p));
                let input_format = sdk.input.as_ref().map(|(p, _)| format(p)).transpose()?;
                let run = SdkStageRun {
                    stage_name: &stage.name,
                    descriptor_id: format!("{}-{}", job.job_id, stage.id),
                    stage: sdk,
                    pool: &pools[&sdk.environment_id],
                    bundles_per_worker: config.bundles_per_worker,
                    side_inputs: Arc::new(side_inputs),
                    side_input_generation: 0,
                    user_state: user_state.clone(),
                    metrics,
                    metric_scope: &metric_scopes[&stage.id],
                    input_format,
                    checkpoint_after: None,
                    components: &plan.components,
                    reporter: job.reporter.as_ref(),
                    telemetry,
                };
                run.run(input)
                    .instrument(stage_span(stage))
                    .await?
                    .into_iter()
                    .collect()
            }
        };
        if !matches!(stage.kind, StageKind::Sdk(_)) {
            // A native stage is one step; SDK stages timed their bundles.
            telemetry.bundle(step_started.elapsed());
        }
        telemetry.finish();
        for port in stage.kind.inputs() {
            if let Some(n) = readers.get_mut(port) {
                *n -= 1;
                if *n == 0 {
                    data.remove(port);
                }
            }
        }
        for (port, chunks) in produced {
            if readers.contains_key(&port) {
                data.entry(port).or_default().extend(chunks);
            }
        }
        metrics.publish();
    }
    Ok(())
}

/// The span of a stage's work: its log lines carry the stage.
pub(crate) fn stage_span(stage: &ferrobeam_graph::Stage) -> tracing::Span {
    tracing::info_span!("stage", stage = %stage.id, stage_name = %stage.name)
}

/// Impulse's single element: an empty byte array in the global window at
/// the minimum timestamp.
pub(crate) fn impulse_element() -> Bytes {
    let mut out = Vec::new();
    // Global window encodes as nothing; the value is bytes(), nested: a zero length.
    crate::wire::write_element(
        &mut out,
        MIN_TIMESTAMP_MILLIS,
        &[],
        &PaneInfo::NO_FIRING,
        &[&[0u8]],
    );
    Bytes::from(out)
}
