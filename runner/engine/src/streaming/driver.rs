//! Running a plan in streaming mode, as a sequence of epochs.
//!
//! An epoch takes what the sources have (one event of each TestStream, the
//! Impulse's element), then runs every stage once, in the plan's
//! producers-first order: a stage first takes the data its inputs produced
//! in this epoch, then the time they reached (their output watermarks and
//! processing time), which fires panes, timers and window expiry.  So by
//! the end of an epoch everything the sources gave has been processed as far
//! as time allows, every watermark is exact (no data is in flight behind
//! it), and TestStream's "process each event to completion" semantics hold.
//!
//! Why epochs and not operators connected by queues: a consistent cut comes
//! for free between two epochs (nothing in flight), which is what
//! checkpoints need (issue 5); under load epochs simply grow, which batches
//! work for the Python workers; and a sparse input gives small epochs, so
//! latency stays a few bundle round trips.
//!
//! Not yet (issue 4): unbounded sources other than TestStream, side inputs
//! before they are complete (main input waits for them), real-clock
//! processing-time firing while a job idles.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use ferrobeam_coders::{MAX_TIMESTAMP_MILLIS, MIN_TIMESTAMP_MILLIS};
use ferrobeam_graph::{PortRef, Stage, StageKind};
use ferrobeam_proto::pipeline::v1::test_stream_payload::event::Event;

use super::gbk::StreamingGroupByKey;
use crate::job::{JobSpec, Level};
use crate::metrics::{JobMetrics, StageScope};
use crate::pool::WorkerPool;
use crate::sdk_stage::SdkStageRun;
use crate::state::{SideInputData, SideInputs, UserState};
use crate::test_stream::EventEncoder;
use crate::timers::TimerStore;
use crate::wire::WireFormat;
use crate::{EngineConfig, EngineError};

/// Processing time: the wall clock, or TestStream's own clock, which only
/// moves with its processing-time events.
struct ProcessingClock {
    test_time: Option<i64>,
}

impl ProcessingClock {
    fn now(&self) -> i64 {
        self.test_time.unwrap_or_else(wall_millis)
    }

    fn advance(&mut self, millis: i64) {
        let now = self.now();
        self.test_time = Some(now.saturating_add(millis));
    }

    /// The end of a bounded job: every processing-time timer is due.
    fn finish(&mut self) {
        self.test_time = Some(MAX_TIMESTAMP_MILLIS);
    }
}

fn wall_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a stage keeps between epochs.
enum Runtime {
    Impulse {
        fired: bool,
    },
    TestStream {
        encoder: EventEncoder,
        events: VecDeque<Event>,
        /// Per output (in the stage's output order).
        watermarks: Vec<i64>,
        tags: Vec<String>,
    },
    /// Flatten and Identity: data through, watermark = minimum of the inputs.
    Pass,
    Gbk(Box<StreamingGroupByKey>),
    Sdk(Box<SdkRuntime>),
}

struct SdkRuntime {
    timers: TimerStore,
    /// A stage without a data input has run its one bundle.
    started: bool,
    /// Main input waiting for the side inputs to be complete.
    held: Vec<Bytes>,
    /// Side-input data so far, per side input (in the stage's order).
    side_data: Vec<Vec<Bytes>>,
    side_inputs: Option<Arc<SideInputs>>,
}

/// What one stage did in one epoch.
struct Step {
    produced: Vec<(PortRef, Vec<Bytes>)>,
    /// Each output port's watermark after the epoch.
    watermarks: Vec<(PortRef, i64)>,
}

pub(crate) async fn run(
    config: &EngineConfig,
    job: &JobSpec,
    pools: &HashMap<String, WorkerPool>,
    metrics: &JobMetrics,
) -> Result<(), EngineError> {
    let plan = &job.plan;
    let scopes = StageScope::for_plan(plan);
    let user_state = Arc::new(UserState::default());
    let mut runtimes = Vec::with_capacity(plan.stages.len());
    for stage in &plan.stages {
        runtimes.push(runtime(stage, plan)?);
    }
    let has_test_stream = runtimes
        .iter()
        .any(|r| matches!(r, Runtime::TestStream { .. }));
    let mut clock = ProcessingClock {
        test_time: has_test_stream.then(wall_millis),
    };
    let mut watermarks: HashMap<PortRef, i64> = HashMap::new();
    let mut quiet_epochs = 0;
    loop {
        let mut data: HashMap<PortRef, Vec<Bytes>> = HashMap::new();
        let mut progressed = false;
        for (stage, rt) in plan.stages.iter().zip(runtimes.iter_mut()) {
            let ctx = StageContext {
                stage,
                job,
                config,
                pools,
                metrics,
                scope: scopes.get(&stage.id),
                user_state: &user_state,
                watermarks: &watermarks,
            };
            let step = ctx.step(rt, &data, &mut clock).await?;
            for (port, chunks) in step.produced {
                if chunks.iter().any(|c| !c.is_empty()) {
                    progressed = true;
                }
                data.entry(port).or_default().extend(chunks);
            }
            for (port, wm) in step.watermarks {
                let old = watermarks.insert(port, wm).unwrap_or(MIN_TIMESTAMP_MILLIS);
                if old != wm {
                    progressed = true;
                }
            }
        }
        metrics.publish();
        let sources_done = runtimes.iter().all(source_done);
        let all_final = plan
            .stages
            .iter()
            .flat_map(|s| s.kind.outputs())
            .all(|p| watermarks.get(p) == Some(&MAX_TIMESTAMP_MILLIS));
        if sources_done && all_final && !progressed {
            return Ok(());
        }
        if progressed {
            quiet_epochs = 0;
            continue;
        }
        quiet_epochs += 1;
        if sources_done {
            // Only processing time can move anything now: the input is over,
            // so (as in batch) it jumps to the end.
            if quiet_epochs > 2 {
                return Err(EngineError::Internal(
                    "the streaming job stopped making progress before its watermarks reached the end"
                        .into(),
                ));
            }
            clock.finish();
        }
    }
}

fn runtime(stage: &Stage, plan: &ferrobeam_graph::Plan) -> Result<Runtime, EngineError> {
    Ok(match &stage.kind {
        StageKind::Impulse { .. } => Runtime::Impulse { fired: false },
        StageKind::TestStream { payload, outputs } => Runtime::TestStream {
            encoder: EventEncoder::new(payload, outputs, &plan.components)?,
            events: payload
                .events
                .iter()
                .filter_map(|e| e.event.clone())
                .collect(),
            watermarks: vec![MIN_TIMESTAMP_MILLIS; outputs.len()],
            tags: outputs.iter().map(|(t, _)| t.clone()).collect(),
        },
        StageKind::Flatten { .. } | StageKind::Identity { .. } => Runtime::Pass,
        StageKind::GroupByKey {
            input, windowing, ..
        } => {
            // (Custom merging window functions are refused at Prepare.)
            let format = WireFormat::new(&plan.components, &input.coder_id)?;
            Runtime::Gbk(Box::new(StreamingGroupByKey::new(windowing, format)?))
        }
        StageKind::Sdk(sdk) => Runtime::Sdk(Box::new(SdkRuntime {
            timers: TimerStore::new(&sdk.timer_families, &plan.components)?,
            started: false,
            held: Vec::new(),
            side_data: vec![Vec::new(); sdk.side_inputs.len()],
            side_inputs: if sdk.side_inputs.is_empty() {
                Some(Arc::default())
            } else {
                None
            },
        })),
    })
}

fn source_done(rt: &Runtime) -> bool {
    match rt {
        Runtime::Impulse { fired } => *fired,
        Runtime::TestStream { events, .. } => events.is_empty(),
        _ => true,
    }
}

struct StageContext<'a> {
    stage: &'a Stage,
    job: &'a JobSpec,
    config: &'a EngineConfig,
    pools: &'a HashMap<String, WorkerPool>,
    metrics: &'a JobMetrics,
    /// Which monitoring infos count (SDK stages only).
    scope: Option<&'a StageScope>,
    user_state: &'a Arc<UserState>,
    watermarks: &'a HashMap<PortRef, i64>,
}

impl StageContext<'_> {
    fn watermark_of(&self, port: &PortRef) -> i64 {
        self.watermarks
            .get(port)
            .copied()
            .unwrap_or(MIN_TIMESTAMP_MILLIS)
    }

    /// The stage's input watermark: the minimum over what it reads.
    fn input_watermark(&self) -> i64 {
        self.stage
            .kind
            .inputs()
            .into_iter()
            .map(|p| self.watermark_of(p))
            .min()
            .unwrap_or(MAX_TIMESTAMP_MILLIS)
    }

    fn format(&self, port: &PortRef) -> Result<WireFormat, EngineError> {
        WireFormat::new(&self.job.plan.components, &port.coder_id)
    }

    fn single_output(&self, produced: Vec<Bytes>, wm: i64) -> Step {
        let output = self.stage.kind.outputs()[0].clone();
        Step {
            produced: vec![(output.clone(), produced)],
            watermarks: vec![(output, wm)],
        }
    }

    async fn step(
        &self,
        rt: &mut Runtime,
        data: &HashMap<PortRef, Vec<Bytes>>,
        clock: &mut ProcessingClock,
    ) -> Result<Step, EngineError> {
        // What a port produced in this epoch (read by every stage that reads it).
        let take = |port: &PortRef| data.get(port).cloned().unwrap_or_default();
        let input_wm = self.input_watermark();
        match (rt, &self.stage.kind) {
            (Runtime::Impulse { fired }, _) => {
                let produced = if *fired {
                    Vec::new()
                } else {
                    *fired = true;
                    vec![crate::job::impulse_element()]
                };
                Ok(self.single_output(produced, MAX_TIMESTAMP_MILLIS))
            }
            (
                Runtime::TestStream {
                    encoder,
                    events,
                    watermarks,
                    tags,
                },
                StageKind::TestStream { outputs, .. },
            ) => {
                let mut buffers = vec![Vec::new(); outputs.len()];
                match events.pop_front() {
                    Some(Event::ElementEvent(e)) => encoder.encode(&e, &mut buffers)?,
                    Some(Event::WatermarkEvent(w)) => {
                        for (i, tag) in tags.iter().enumerate() {
                            if *tag == w.tag || tags.len() == 1 {
                                watermarks[i] = watermarks[i].max(w.new_watermark);
                            }
                        }
                    }
                    Some(Event::ProcessingTimeEvent(p)) => clock.advance(p.advance_duration),
                    None => {}
                }
                if events.is_empty() {
                    watermarks
                        .iter_mut()
                        .for_each(|w| *w = MAX_TIMESTAMP_MILLIS);
                }
                Ok(Step {
                    produced: outputs
                        .iter()
                        .zip(buffers)
                        .map(|((_, p), b)| (p.clone(), vec![Bytes::from(b)]))
                        .collect(),
                    watermarks: outputs
                        .iter()
                        .zip(watermarks.iter())
                        .map(|((_, p), w)| (p.clone(), *w))
                        .collect(),
                })
            }
            (Runtime::Pass, kind) => {
                let produced = kind.inputs().into_iter().flat_map(take).collect();
                Ok(self.single_output(produced, input_wm))
            }
            (Runtime::Gbk(gbk), StageKind::GroupByKey { input, .. }) => {
                let mut produced = Vec::new();
                let mut dropped = 0;
                for chunk in take(input) {
                    let fired = gbk.add(&chunk)?;
                    dropped += fired.dropped_late;
                    produced.extend(fired.chunks);
                }
                produced.extend(gbk.advance(input_wm, clock.now()).chunks);
                if dropped > 0 {
                    self.job.reporter.message(
                        Level::Debug,
                        format!("{}: dropped {dropped} late element(s)", self.stage.name),
                    );
                }
                Ok(self.single_output(produced, gbk.output_watermark()))
            }
            (Runtime::Sdk(sdk_rt), StageKind::Sdk(sdk)) => {
                self.step_sdk(sdk_rt, sdk, &take, input_wm, clock.now())
                    .await
            }
            _ => Err(EngineError::Internal(format!(
                "stage {} has no streaming runtime",
                self.stage.id
            ))),
        }
    }

    async fn step_sdk(
        &self,
        rt: &mut SdkRuntime,
        sdk: &ferrobeam_graph::SdkStage,
        take: &impl Fn(&PortRef) -> Vec<Bytes>,
        input_wm: i64,
        now: i64,
    ) -> Result<Step, EngineError> {
        if rt.side_inputs.is_none() {
            for (i, si) in sdk.side_inputs.iter().enumerate() {
                rt.side_data[i].extend(take(&si.port));
            }
        }
        if let Some((port, _)) = &sdk.input {
            rt.held.extend(take(port));
        }
        if rt.side_inputs.is_none()
            && sdk
                .side_inputs
                .iter()
                .all(|si| self.watermark_of(&si.port) == MAX_TIMESTAMP_MILLIS)
        {
            let mut built = SideInputs::new();
            for (si, chunks) in sdk.side_inputs.iter().zip(&rt.side_data) {
                let data = SideInputData::build(si, chunks, &self.format(&si.port)?)?;
                built.insert(
                    (si.transform_id.clone(), si.local_name.clone()),
                    Arc::new(data),
                );
            }
            rt.side_data = Vec::new();
            rt.side_inputs = Some(Arc::new(built));
        }
        let outputs_of = |wm: i64| -> Vec<(PortRef, i64)> {
            sdk.outputs.iter().map(|(p, _)| (p.clone(), wm)).collect()
        };
        let Some(side_inputs) = rt.side_inputs.clone() else {
            // Held until the side inputs are complete; so is the watermark.
            return Ok(Step {
                produced: Vec::new(),
                watermarks: outputs_of(MIN_TIMESTAMP_MILLIS),
            });
        };
        let input_format = sdk
            .input
            .as_ref()
            .map(|(p, _)| self.format(p))
            .transpose()?;
        let run = SdkStageRun {
            stage_name: &self.stage.name,
            descriptor_id: format!("{}-{}", self.job.job_id, self.stage.id),
            stage: sdk,
            pool: &self.pools[&sdk.environment_id],
            bundles_per_worker: self.config.bundles_per_worker,
            side_inputs,
            user_state: self.user_state.clone(),
            metrics: self.metrics,
            metric_scope: self.scope.ok_or_else(|| {
                EngineError::Internal(format!("no metric scope for stage {}", self.stage.id))
            })?,
            input_format,
            components: &self.job.plan.components,
            reporter: self.job.reporter.as_ref(),
        };
        let mut outputs: HashMap<PortRef, Vec<Bytes>> = HashMap::new();
        if sdk.input.is_some() {
            let held = std::mem::take(&mut rt.held);
            if !held.is_empty() {
                run.process(Some(held), &mut rt.timers, &mut outputs)
                    .await?;
            }
        } else if !rt.started {
            // No data input: the stage runs its one (empty) bundle once.
            rt.started = true;
            run.process(None, &mut rt.timers, &mut outputs).await?;
        }
        if !rt.timers.is_empty() {
            run.fire_timers(&mut rt.timers, input_wm, now, &mut outputs)
                .await?;
        }
        let hold = rt.timers.min_hold().unwrap_or(MAX_TIMESTAMP_MILLIS);
        Ok(Step {
            produced: outputs.into_iter().collect(),
            watermarks: outputs_of(input_wm.min(hold)),
        })
    }
}
