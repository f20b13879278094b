//! One connected SDK worker, as the engine sees it: run a bundle on it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use ferrobeam_proto::fn_api::process_bundle_request::CacheToken;
use ferrobeam_proto::fn_api::{
    elements, instruction_request, instruction_response, Elements, InstructionRequest,
    InstructionResponse, ProcessBundleRequest, ProcessBundleResponse, ProcessBundleSplitRequest,
    ProcessBundleSplitResponse,
};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use crate::registry::Registry;
use crate::state::StateHandler;

/// Most bytes we pack into one data-plane message.  Python's gRPC channels
/// accept far more, but 4 MiB keeps us under every SDK's default limit.
const MAX_ELEMENTS_MESSAGE_BYTES: usize = 4 << 20;

/// An SDK that declares this reads a bundle's input from the
/// `ProcessBundleRequest` itself when the runner puts it there.
pub const CONTROL_REQUEST_ELEMENTS_EMBEDDING: &str =
    "beam:protocol:control_request_elements_embedding:v1";
/// The runner's side (declared in the provision info): an SDK may put a
/// bundle's output into its `ProcessBundleResponse`.
pub const CONTROL_RESPONSE_ELEMENTS_EMBEDDING: &str =
    "beam:protocol:control_response_elements_embedding:v1";

/// Inputs up to this size travel inside the `ProcessBundleRequest` when the
/// SDK can read them there.  The point is latency, not bandwidth: a small
/// bundle then costs one control message each way instead of also a data
/// message whose hand-offs between the harness's threads each may wait for
/// Python's GIL.  Bigger inputs take the data stream, which streams them
/// and keeps the control stream free for splits and progress.
const MAX_EMBEDDED_INPUT_BYTES: usize = 1 << 20;

/// Data sent into a bundle for one `beam:runner:source:v1` transform, or
/// timers for one timer family of a ParDo.
pub struct BundleInput {
    pub transform_id: String,
    /// Set for timers: the ParDo's timer family id.
    pub timer_family: Option<String>,
    /// Whole encoded elements (or timers), concatenated; chunk boundaries are free.
    pub chunks: Vec<Bytes>,
}

/// The timer streams of a bundle: (ParDo transform id, timer family id).
pub type TimerStream = (String, String);

/// What one bundle runs: the descriptor, what goes in, and which output and
/// timer streams to wait for.
pub struct BundleRequest<'a> {
    pub descriptor_id: &'a str,
    pub inputs: Vec<BundleInput>,
    /// `beam:runner:sink:v1` transform ids.
    pub outputs: &'a [String],
    pub timer_outputs: &'a [TimerStream],
    /// Which state the SDK may serve from its cache.
    pub cache_tokens: Vec<CacheToken>,
}

/// What a finished bundle produced.
#[derive(Debug, Default)]
pub struct BundleOutput {
    /// The instruction id the bundle ran under (for FinalizeBundle).
    pub instruction_id: String,
    /// Output bytes per `beam:runner:sink:v1` transform id, in arrival order.
    pub outputs: HashMap<String, Vec<Bytes>>,
    /// Timers the bundle set or cleared, per timer stream, in the order set.
    pub timers: HashMap<TimerStream, Vec<Bytes>>,
    pub response: ProcessBundleResponse,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The worker went away mid-bundle; the bundle can be retried elsewhere.
    #[error("SDK worker {worker} was lost: {reason}")]
    WorkerLost { worker: String, reason: String },
    /// The SDK reported an error (user code raised); retrying will not help.
    #[error("{0}")]
    Failed(String),
}

/// Inbound data or timers for one bundle.
pub(crate) enum InboundData {
    Data(elements::Data),
    Timers(elements::Timers),
}

impl InboundData {
    fn instruction_id(&self) -> &str {
        match self {
            InboundData::Data(d) => &d.instruction_id,
            InboundData::Timers(t) => &t.instruction_id,
        }
    }
}

/// Handle to a worker whose control stream is connected.
pub struct Worker {
    id: String,
    registry: Weak<Registry>,
    /// Taken on shutdown: ending the control stream cleanly tells the
    /// harness to exit without an error.
    control_tx: Mutex<Option<mpsc::UnboundedSender<Result<InstructionRequest, tonic::Status>>>>,
    pending: Mutex<HashMap<String, oneshot::Sender<InstructionResponse>>>,
    data_tx: watch::Sender<Option<mpsc::Sender<Result<Elements, tonic::Status>>>>,
    inbound: Mutex<HashMap<String, mpsc::UnboundedSender<InboundData>>>,
    dead: watch::Sender<Option<String>>,
    next_instruction: AtomicU64,
    /// Whether the SDK reads inputs embedded in a `ProcessBundleRequest`.
    embeds_request_elements: bool,
}

impl Worker {
    pub(crate) fn new(
        id: String,
        registry: Weak<Registry>,
        control_tx: mpsc::UnboundedSender<Result<InstructionRequest, tonic::Status>>,
        embeds_request_elements: bool,
    ) -> Self {
        Self {
            id,
            registry,
            control_tx: Mutex::new(Some(control_tx)),
            pending: Mutex::default(),
            data_tx: watch::channel(None).0,
            inbound: Mutex::default(),
            dead: watch::channel(None).0,
            next_instruction: AtomicU64::new(1),
            embeds_request_elements,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Why the worker is gone, if it is.
    pub fn dead_reason(&self) -> Option<String> {
        self.dead.borrow().clone()
    }

    pub(crate) fn mark_dead(&self, reason: &str) {
        self.dead.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason.to_owned());
                true
            } else {
                false
            }
        });
        // Dropping the senders wakes every waiter with an error.
        self.pending.lock().clear();
        self.inbound.lock().clear();
    }

    pub(crate) fn route_response(&self, response: InstructionResponse) {
        if let Some(tx) = self.pending.lock().remove(&response.instruction_id) {
            let _ = tx.send(response);
        }
    }

    pub(crate) fn set_data_stream(&self, tx: mpsc::Sender<Result<Elements, tonic::Status>>) {
        self.data_tx.send_replace(Some(tx));
    }

    pub(crate) fn route_data(&self, data: InboundData) {
        let inbound = self.inbound.lock();
        if let Some(tx) = inbound.get(data.instruction_id()) {
            let _ = tx.send(data);
        }
    }

    fn lost(&self) -> BundleError {
        BundleError::WorkerLost {
            worker: self.id.clone(),
            reason: self.dead_reason().unwrap_or_else(|| "stream closed".into()),
        }
    }

    /// Sends one instruction and waits for its response.
    pub async fn instruct(
        &self,
        instruction_id: String,
        request: instruction_request::Request,
    ) -> Result<InstructionResponse, BundleError> {
        let (tx, rx) = oneshot::channel();
        if self.dead_reason().is_some() {
            return Err(self.lost());
        }
        self.pending.lock().insert(instruction_id.clone(), tx);
        let req = InstructionRequest {
            instruction_id,
            request: Some(request),
        };
        let sent = self
            .control_tx
            .lock()
            .as_ref()
            .is_some_and(|tx| tx.send(Ok(req)).is_ok());
        if !sent {
            self.pending.lock().clear();
            return Err(self.lost());
        }
        rx.await.map_err(|_| self.lost())
    }

    /// A fresh instruction id on this worker, for [`Worker::process_bundle`].
    pub fn new_instruction_id(&self) -> String {
        let n = self.next_instruction.fetch_add(1, Ordering::Relaxed);
        format!("{}-b{n}", self.id)
    }

    /// Asks the SDK to split a running bundle, keeping about
    /// `fraction_of_remainder` of what it has left.  Its residual roots are
    /// work the runner must schedule; channel splits name the first input
    /// element the bundle will no longer process.
    pub async fn split_bundle(
        &self,
        instruction_id: &str,
        source_transform: &str,
        fraction_of_remainder: f64,
        estimated_input_elements: i64,
    ) -> Result<ProcessBundleSplitResponse, BundleError> {
        use ferrobeam_proto::fn_api::process_bundle_split_request::DesiredSplit;
        let request = instruction_request::Request::ProcessBundleSplit(ProcessBundleSplitRequest {
            instruction_id: instruction_id.to_owned(),
            desired_splits: HashMap::from([(
                source_transform.to_owned(),
                DesiredSplit {
                    fraction_of_remainder,
                    allowed_split_points: vec![],
                    estimated_input_elements,
                },
            )]),
        });
        let n = self.next_instruction.fetch_add(1, Ordering::Relaxed);
        let response = self
            .instruct(format!("{}-split{n}", self.id), request)
            .await?;
        if !response.error.is_empty() {
            return Err(BundleError::Failed(response.error));
        }
        match response.response {
            Some(instruction_response::Response::ProcessBundleSplit(r)) => Ok(r),
            _ => Ok(ProcessBundleSplitResponse::default()),
        }
    }

    /// Runs one bundle under `instruction_id` (from [`Worker::new_instruction_id`]):
    /// sends `inputs`, waits for the SDK's response and for the end of every
    /// output named in `outputs` and every timer stream in `timer_outputs`.
    /// `cache_tokens` tell the SDK which state it may serve from its cache
    /// (see the engine's `partition` module).
    pub async fn process_bundle(
        &self,
        instruction_id: String,
        bundle: BundleRequest<'_>,
        state: Option<Arc<dyn StateHandler>>,
    ) -> Result<BundleOutput, BundleError> {
        let (in_tx, mut in_rx) = mpsc::unbounded_channel();
        self.inbound.lock().insert(instruction_id.clone(), in_tx);
        let registry = self.registry.upgrade();
        if let (Some(reg), Some(state)) = (&registry, state) {
            reg.set_bundle_state(&instruction_id, state);
        }
        let _registered = BundleRegistration {
            worker: self,
            registry,
            instruction_id: &instruction_id,
        };
        self.run_bundle(&instruction_id, bundle, &mut in_rx).await
    }

    async fn run_bundle(
        &self,
        instruction_id: &str,
        bundle: BundleRequest<'_>,
        in_rx: &mut mpsc::UnboundedReceiver<InboundData>,
    ) -> Result<BundleOutput, BundleError> {
        let BundleRequest {
            descriptor_id,
            inputs,
            outputs,
            timer_outputs,
            cache_tokens,
        } = bundle;
        let input_bytes: usize = inputs.iter().flat_map(|i| &i.chunks).map(Bytes::len).sum();
        let inputs_embedded =
            self.embeds_request_elements && input_bytes <= MAX_EMBEDDED_INPUT_BYTES;
        let (elements, inputs) = if inputs_embedded {
            (Some(embedded_inputs(instruction_id, &inputs)), Vec::new())
        } else {
            (None, inputs)
        };
        let request = instruction_request::Request::ProcessBundle(ProcessBundleRequest {
            process_bundle_descriptor_id: descriptor_id.to_owned(),
            cache_tokens,
            elements,
            ..Default::default()
        });
        let response = self.instruct(instruction_id.to_owned(), request);
        let send = self.send_inputs(instruction_id, inputs);
        let (response, sent) = tokio::join!(response, send);
        sent?;
        let response = response?;
        if !response.error.is_empty() {
            return Err(BundleError::Failed(response.error));
        }
        let response = match response.response {
            Some(instruction_response::Response::ProcessBundle(r)) => r,
            other => {
                return Err(BundleError::Failed(format!(
                    "SDK answered ProcessBundle with an unexpected response: {other:?}"
                )))
            }
        };
        // The response and the data travel on different streams: keep
        // reading until every output has said it is complete.
        let mut out = BundleOutput {
            instruction_id: instruction_id.to_owned(),
            outputs: HashMap::new(),
            timers: HashMap::new(),
            response,
        };
        let mut open = OpenStreams {
            data: outputs.iter().map(String::as_str).collect(),
            timers: timer_outputs
                .iter()
                .map(|(t, f)| (t.as_str(), f.as_str()))
                .collect(),
        };
        // An SDK that embeds its output sends all of it in the response
        // (we declared CONTROL_RESPONSE_ELEMENTS_EMBEDDING); the loop below
        // then finds every stream already ended.
        let embedded = out.response.elements.take();
        tracing::trace!(
            instruction_id,
            input_embedded = inputs_embedded,
            output_embedded = embedded.is_some(),
            "bundle response"
        );
        if let Some(embedded) = embedded {
            for data in embedded.data {
                accept(&mut out, &mut open, InboundData::Data(data));
            }
            for timers in embedded.timers {
                accept(&mut out, &mut open, InboundData::Timers(timers));
            }
        }
        while let Ok(data) = in_rx.try_recv() {
            accept(&mut out, &mut open, data);
        }
        while !open.data.is_empty() || !open.timers.is_empty() {
            match in_rx.recv().await {
                Some(data) => accept(&mut out, &mut open, data),
                None => return Err(self.lost()),
            }
        }
        Ok(out)
    }

    async fn send_inputs(
        &self,
        instruction_id: &str,
        inputs: Vec<BundleInput>,
    ) -> Result<(), BundleError> {
        if inputs.is_empty() {
            return Ok(());
        }
        let tx = self.data_sender().await?;
        for input in inputs {
            let mut batch = Elements::default();
            let mut batch_bytes = 0;
            for chunk in input.chunks.iter().filter(|c| !c.is_empty()) {
                if batch_bytes + chunk.len() > MAX_ELEMENTS_MESSAGE_BYTES && batch_bytes > 0 {
                    tx.send(Ok(std::mem::take(&mut batch)))
                        .await
                        .map_err(|_| self.lost())?;
                    batch_bytes = 0;
                }
                batch_bytes += chunk.len();
                push_input(&mut batch, instruction_id, &input, chunk.clone(), false);
            }
            push_input(&mut batch, instruction_id, &input, Bytes::new(), true);
            tx.send(Ok(batch)).await.map_err(|_| self.lost())?;
        }
        Ok(())
    }

    /// The worker opens its data stream lazily (on its first bundle), so wait for it.
    async fn data_sender(
        &self,
    ) -> Result<mpsc::Sender<Result<Elements, tonic::Status>>, BundleError> {
        let mut data_rx = self.data_tx.subscribe();
        let mut dead_rx = self.dead.subscribe();
        loop {
            if let Some(tx) = data_rx.borrow_and_update().clone() {
                return Ok(tx);
            }
            if dead_rx.borrow_and_update().is_some() {
                return Err(self.lost());
            }
            tokio::select! {
                r = data_rx.changed() => if r.is_err() { return Err(self.lost()) },
                r = dead_rx.changed() => if r.is_err() { return Err(self.lost()) },
            }
        }
    }

    /// Closes the control stream, which tells the SDK harness to exit.
    pub fn shutdown(&self) {
        self.mark_dead("shut down by the runner");
        self.control_tx.lock().take();
    }
}

/// A bundle's whole input as one `Elements`, for its `ProcessBundleRequest`:
/// every stream ends in it (all or nothing, as the protocol asks), in the
/// order the data plane would have carried them.
fn embedded_inputs(instruction_id: &str, inputs: &[BundleInput]) -> Elements {
    let mut elements = Elements::default();
    for input in inputs {
        for chunk in input.chunks.iter().filter(|c| !c.is_empty()) {
            push_input(&mut elements, instruction_id, input, chunk.clone(), false);
        }
        push_input(&mut elements, instruction_id, input, Bytes::new(), true);
    }
    elements
}

/// Appends `data` for `input` (elements, or timers of its family) to `batch`.
fn push_input(
    batch: &mut Elements,
    instruction_id: &str,
    input: &BundleInput,
    data: Bytes,
    is_last: bool,
) {
    match &input.timer_family {
        None => batch.data.push(elements::Data {
            instruction_id: instruction_id.to_owned(),
            transform_id: input.transform_id.clone(),
            data,
            is_last,
        }),
        Some(family) => batch.timers.push(elements::Timers {
            instruction_id: instruction_id.to_owned(),
            transform_id: input.transform_id.clone(),
            timer_family_id: family.clone(),
            timers: data,
            is_last,
        }),
    }
}

/// The output streams of a bundle that have not ended yet.
struct OpenStreams<'a> {
    data: HashSet<&'a str>,
    timers: HashSet<(&'a str, &'a str)>,
}

/// A bundle's entries in its worker's inbound routes and in the registry's
/// state handlers, removed when the bundle ends, and also when its future
/// is dropped half-way (a cancelled job): the state handler holds the job's
/// state backend, which would otherwise stay open, RocksDB files and all,
/// as long as the server runs.
struct BundleRegistration<'a> {
    worker: &'a Worker,
    registry: Option<Arc<Registry>>,
    instruction_id: &'a str,
}

impl Drop for BundleRegistration<'_> {
    fn drop(&mut self) {
        self.worker.inbound.lock().remove(self.instruction_id);
        if let Some(reg) = &self.registry {
            reg.clear_bundle_state(self.instruction_id);
        }
    }
}

fn accept(out: &mut BundleOutput, open: &mut OpenStreams, inbound: InboundData) {
    match inbound {
        InboundData::Data(data) => {
            if data.is_last {
                open.data.remove(data.transform_id.as_str());
            }
            if !data.data.is_empty() {
                out.outputs
                    .entry(data.transform_id)
                    .or_default()
                    .push(data.data);
            }
        }
        InboundData::Timers(timers) => {
            if timers.is_last {
                open.timers
                    .retain(|&(t, f)| t != timers.transform_id || f != timers.timer_family_id);
            }
            if !timers.timers.is_empty() {
                out.timers
                    .entry((timers.transform_id, timers.timer_family_id))
                    .or_default()
                    .push(timers.timers);
            }
        }
    }
}
