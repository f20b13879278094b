//! The operator graph the engine executes.

use std::collections::HashMap;

use ferrobeam_proto::fn_api::ProcessBundleDescriptor;
use ferrobeam_proto::pipeline::v1::{Components, TestStreamPayload, WindowingStrategy};

/// A PCollection's elements in one particular wire encoding.  The same
/// PCollection may be needed in two encodings (e.g. feeding a Flatten whose
/// output coder differs), so data is keyed by both.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRef {
    pub pcollection: String,
    /// A `beam:coder:windowed_value:v1` coder id in [`Plan::components`],
    /// with every coder the runner cannot parse length-prefixed.
    pub coder_id: String,
}

/// How the workers of one environment are provided.
#[derive(Clone, Debug, PartialEq)]
pub enum Environment {
    /// The stock Python SDK harness in local processes we start.
    LocalPython,
    /// An external worker pool (LOOPBACK is rewritten to this by the client).
    External {
        endpoint: String,
        params: HashMap<String, String>,
    },
    /// A boot command we run.
    Process {
        command: String,
        env: HashMap<String, String>,
    },
}

/// The executable form of a pipeline.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The pipeline's components after expansion and coder rewriting.
    pub components: Components,
    /// Stages in an order where every input is produced before it is read.
    pub stages: Vec<Stage>,
    pub environments: HashMap<String, Environment>,
    /// Things the user should know about how the job will run.
    pub notes: Vec<String>,
    /// Run in streaming mode (see `ferrobeam_engine::streaming`).
    pub streaming: bool,
}

#[derive(Clone, Debug)]
pub struct Stage {
    pub id: String,
    /// Human-readable: the unique names of the transforms it runs.
    pub name: String,
    /// Those unique names, one by one (for the dashboard).
    pub transforms: Vec<String>,
    pub kind: StageKind,
}

#[derive(Clone, Debug)]
pub enum StageKind {
    Impulse {
        output: PortRef,
    },
    /// A TestStream replayed as a bounded source: each output (by event tag)
    /// gets its elements, in order.
    TestStream {
        payload: TestStreamPayload,
        outputs: Vec<(String, PortRef)>,
    },
    GroupByKey {
        transform_id: String,
        input: PortRef,
        output: PortRef,
        windowing: WindowingStrategy,
        /// Set for custom merging window functions: the SDK merges the
        /// windows of each key before the runner groups.
        merge: Option<Box<WindowMerge>>,
    },
    Flatten {
        inputs: Vec<PortRef>,
        output: PortRef,
    },
    /// Reshuffle and friends: a stage boundary, no change to the data.
    Identity {
        input: PortRef,
        output: PortRef,
    },
    /// `ferrobeam.io.WriteLines`: UTF-8 lines into files in `directory`,
    /// published when a checkpoint completes (exactly once).
    LineSink {
        transform_id: String,
        input: PortRef,
        directory: std::path::PathBuf,
    },
    /// Beam's Kafka read: `urn` says with or without metadata, `payload`
    /// is the transform's (checked by the engine's Kafka IO at Prepare).
    KafkaRead {
        transform_id: String,
        urn: String,
        payload: prost::bytes::Bytes,
        output: PortRef,
    },
    /// Beam's Kafka write.
    KafkaWrite {
        transform_id: String,
        urn: String,
        payload: prost::bytes::Bytes,
        input: PortRef,
    },
    Sdk(Box<SdkStage>),
}

/// A fused chain of SDK-executed transforms: one process bundle descriptor.
#[derive(Clone, Debug)]
pub struct SdkStage {
    pub environment_id: String,
    pub descriptor: ProcessBundleDescriptor,
    /// Streaming splittable-DoFn stages: the same stage with the SDK's
    /// restriction truncation in front of Process, which a drain runs the
    /// deferred work through.
    pub drain_descriptor: Option<ProcessBundleDescriptor>,
    /// The stage's main input and the data-source transform that reads it.
    pub input: Option<(PortRef, String)>,
    /// Each output port and the data-sink transform that writes it.
    pub outputs: Vec<(PortRef, String)>,
    pub side_inputs: Vec<SideInput>,
    /// Elements must reach workers partitioned by key (stateful ParDo).
    pub keyed: bool,
    /// Each key's elements must reach the SDK in timestamp order.
    pub time_sorted: bool,
    /// Timer families of the stage's stateful ParDo (empty without timers).
    pub timer_families: Vec<TimerFamily>,
    /// The transform that residuals (SDF checkpoints, splits) return to;
    /// it reads the stage's main input directly.
    pub residual_target: Option<String>,
}

/// One timer family of a ParDo: timers travel on the data plane, addressed by
/// (transform id, family id), encoded with `coder_id`.
#[derive(Clone, Debug)]
pub struct TimerFamily {
    pub transform_id: String,
    pub family_id: String,
    /// A `beam:coder:timer:v1` coder whose key and window coders the runner
    /// can delimit (the same wrapping as the ParDo's main input).
    pub coder_id: String,
    pub domain: TimeDomain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeDomain {
    EventTime,
    ProcessingTime,
}

/// How to merge the windows of a custom merging `WindowFn`: a one-transform
/// descriptor (data source → `beam:transform:merge_windows:v1` → data sink)
/// that the engine runs on a worker of `environment_id`, sending one
/// `KV<nonce, iterable<window>>` per key and reading back
/// `KV<nonce, KV<iterable<unmerged window>, iterable<KV<merged window, iterable<window>>>>>`.
#[derive(Clone, Debug)]
pub struct WindowMerge {
    pub environment_id: String,
    pub descriptor: ProcessBundleDescriptor,
    /// The data-source and data-sink transform ids.
    pub source: String,
    pub sink: String,
    /// `windowed_value(KV<bytes, iterable<W>>, global)`: what the source reads.
    pub input_coder_id: String,
    /// `windowed_value(KV<bytes, KV<...>>, global)`: what the sink writes.
    pub output_coder_id: String,
    /// `W`: the window coder, as the grouped port encodes windows.
    pub window_coder_id: String,
}

#[derive(Clone, Debug)]
pub struct SideInput {
    /// The consuming transform's id, as the SDK names it in state requests.
    pub transform_id: String,
    pub local_name: String,
    pub port: PortRef,
    pub access: SideInputAccess,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideInputAccess {
    Iterable,
    Multimap,
}

impl Plan {
    /// Every port some stage reads, with how many stages read it.
    pub fn port_readers(&self) -> HashMap<PortRef, usize> {
        let mut readers: HashMap<PortRef, usize> = HashMap::new();
        for stage in &self.stages {
            for port in stage.kind.inputs() {
                *readers.entry(port.clone()).or_default() += 1;
            }
        }
        readers
    }
}

impl StageKind {
    /// Every port this stage reads (main and side inputs).
    pub fn inputs(&self) -> Vec<&PortRef> {
        match self {
            StageKind::Impulse { .. }
            | StageKind::TestStream { .. }
            | StageKind::KafkaRead { .. } => vec![],
            StageKind::GroupByKey { input, .. }
            | StageKind::Identity { input, .. }
            | StageKind::LineSink { input, .. }
            | StageKind::KafkaWrite { input, .. } => vec![input],
            StageKind::Flatten { inputs, .. } => inputs.iter().collect(),
            StageKind::Sdk(s) => s
                .input
                .iter()
                .map(|(p, _)| p)
                .chain(s.side_inputs.iter().map(|si| &si.port))
                .collect(),
        }
    }

    /// Every port this stage writes.
    pub fn outputs(&self) -> Vec<&PortRef> {
        match self {
            StageKind::Impulse { output }
            | StageKind::GroupByKey { output, .. }
            | StageKind::Flatten { output, .. }
            | StageKind::Identity { output, .. }
            | StageKind::KafkaRead { output, .. } => vec![output],
            StageKind::TestStream { outputs, .. } => outputs.iter().map(|(_, p)| p).collect(),
            StageKind::LineSink { .. } | StageKind::KafkaWrite { .. } => vec![],
            StageKind::Sdk(s) => s.outputs.iter().map(|(p, _)| p).collect(),
        }
    }
}
