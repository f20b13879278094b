"""Elements in control messages, for the stock Python harness.

Beam's Fn API lets a runner put a small bundle's whole input into its
``ProcessBundleRequest`` when the SDK declares
``beam:protocol:control_request_elements_embedding:v1``, and lets the SDK put
the bundle's whole output into its ``ProcessBundleResponse`` when the runner
declares ``beam:protocol:control_response_elements_embedding:v1``. The
Python harness of Beam 2.77 implements neither side.

Why it matters for latency: in the stock harness a bundle's input reaches the
bundle thread through gRPC's thread and a reader thread, and its output
leaves through a forwarder thread and gRPC's sender, while the response
takes the control stream. When another Python thread is busy, each of those
hand-offs may wait for the GIL for up to the interpreter's switch interval
(5 ms). With both sides embedded, a small bundle is one control message in
and one out, and the runner does not wait for a second stream.

:func:`install` changes three names the harness looks up when it builds
itself (as :mod:`ferrobeam._state_channel` does), for harnesses created
afterwards:

* ``sdk_worker.WorkerIdInterceptor``: the control stream also carries the
  header ``ferrobeam-sdk-capabilities`` naming the request protocol. The
  runner only embeds for workers that say so; the environment's own
  capabilities are written by the submitting SDK, which knows nothing of
  this module.
* ``sdk_worker.SdkWorker``: notes each bundle's embedded input, and whether
  its output may be embedded (the request was, or the runner declared the
  response protocol), then adds the collected output to the response.
* ``data_plane.GrpcClientDataChannelFactory``: its channels serve a bundle's
  embedded input instead of waiting on the data stream, and collect the
  output of a bundle that embeds it. Past :data:`MAX_EMBEDDED_OUTPUT_BYTES`
  a bundle sends everything collected so far, and the rest, on the data
  stream: the protocol asks for all of a bundle's output in one place.

Bundles without embedded input, in a harness whose runner never asked for
embedded output, run exactly as in the stock harness.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Collection, Iterator, Optional, Union

from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.worker import data_plane
from apache_beam.runners.worker import sdk_worker
from apache_beam.runners.worker import worker_id_interceptor

__all__ = ["install", "MAX_EMBEDDED_OUTPUT_BYTES"]

REQUEST_EMBEDDING = "beam:protocol:control_request_elements_embedding:v1"
RESPONSE_EMBEDDING = "beam:protocol:control_response_elements_embedding:v1"
#: The header the runner reads (``SDK_CAPABILITIES_HEADER`` in ``runner/fnapi/src/lib.rs``).
CAPABILITIES_HEADER = "ferrobeam-sdk-capabilities"
#: Output a bundle may put into its response; more goes on the data stream.
MAX_EMBEDDED_OUTPUT_BYTES = 1 << 20

DataOrTimers = Union[beam_fn_api_pb2.Elements.Data, beam_fn_api_pb2.Elements.Timers]
StreamKey = Union[str, tuple[str, str]]

_INSTALL_LOCK = threading.Lock()
_STOCK_INTERCEPTOR = worker_id_interceptor.WorkerIdInterceptor
_STOCK_WORKER = sdk_worker.SdkWorker
_STOCK_CHANNEL_FACTORY = data_plane.GrpcClientDataChannelFactory


def install() -> None:
    """Makes SDK harnesses created from now on speak both protocols."""
    with _INSTALL_LOCK:
        sdk_worker.WorkerIdInterceptor = _AnnouncingInterceptor
        sdk_worker.SdkWorker = _EmbeddingSdkWorker
        data_plane.GrpcClientDataChannelFactory = _EmbeddingChannelFactory


class _Bundle:
    """One running bundle's embedded input and collected output."""

    def __init__(self, inputs: Optional[list[DataOrTimers]], embeds_outputs: bool) -> None:
        self.inputs = inputs
        # (channel, element) in the order written; None once the bundle's
        # output goes on the data stream (or never was to be embedded).
        self._outputs: Optional[list[tuple[Any, DataOrTimers]]] = [] if embeds_outputs else None
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def embeds_outputs(self) -> bool:
        return self._outputs is not None

    def emit(self, channel: Any, element: DataOrTimers, size: int) -> None:
        """Keeps ``element`` for the response, or sends it if the bundle's
        output has outgrown the response (sending what was kept first)."""
        with self._lock:
            if self._outputs is not None:
                self._bytes += size
                if self._bytes <= MAX_EMBEDDED_OUTPUT_BYTES:
                    self._outputs.append((channel, element))
                    return
                spilled, self._outputs = self._outputs, None
            else:
                spilled = []
            # Sent under the lock so a concurrent flush cannot overtake.
            for out_channel, out in spilled + [(channel, element)]:
                # The stock channel's own send path (output_stream uses it too).
                out_channel._enqueue_to_send(out)  # pylint: disable=protected-access

    def outputs(self) -> Optional[beam_fn_api_pb2.Elements]:
        """The output for the response, unless it went on the data stream."""
        with self._lock:
            if self._outputs is None:
                return None
            elements = beam_fn_api_pb2.Elements()
            for _, out in self._outputs:
                if isinstance(out, beam_fn_api_pb2.Elements.Timers):
                    elements.timers.append(out)
                else:
                    elements.data.append(out)
            return elements


# Instruction id -> the bundle running under it (set by the worker for the
# duration of process_bundle; read by the data channels).
_BUNDLES: dict[str, _Bundle] = {}


class _AnnouncingInterceptor(_STOCK_INTERCEPTOR):  # type: ignore[misc, valid-type]
    """Beam's worker-id interceptor, also naming the protocols we add."""

    def _intercept(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        metadata = list(client_call_details.metadata or [])
        metadata.append((CAPABILITIES_HEADER, REQUEST_EMBEDDING))
        details = worker_id_interceptor._ClientCallDetails(  # pylint: disable=protected-access
            client_call_details.method, client_call_details.timeout, metadata, client_call_details.credentials)
        return super()._intercept(continuation, details, request)


class _EmbeddingSdkWorker(_STOCK_WORKER):  # type: ignore[misc, valid-type]
    """The stock worker; a bundle's embedded input and output pass through
    :data:`_BUNDLES` to the data channels."""

    def process_bundle(self, request: beam_fn_api_pb2.ProcessBundleRequest,
                       instruction_id: str) -> beam_fn_api_pb2.InstructionResponse:
        embedded = request.HasField("elements")
        inputs: Optional[list[DataOrTimers]] = None
        if embedded:
            # Data before timers: the order the runner would send them in.
            inputs = list(request.elements.data) + list(request.elements.timers)
        runner_capabilities = getattr(self.bundle_processor_cache, "runner_capabilities", frozenset())
        bundle = _Bundle(inputs, embedded or RESPONSE_EMBEDDING in runner_capabilities)
        _BUNDLES[instruction_id] = bundle
        try:
            response = super().process_bundle(request, instruction_id)
        finally:
            _BUNDLES.pop(instruction_id, None)
        outputs = bundle.outputs()
        if outputs is not None and response.HasField("process_bundle"):
            response.process_bundle.elements.CopyFrom(outputs)
        return response


class _EmbeddingChannel:
    """A stock gRPC data channel that also serves embedded bundles."""

    def __init__(self, channel: Any, data_buffer_time_limit_ms: int) -> None:
        self._channel = channel
        self._data_buffer_time_limit_ms = data_buffer_time_limit_ms

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

    def input_elements(self, instruction_id: str, expected_inputs: Collection[StreamKey],
                       abort_callback: Optional[Callable[[], bool]] = None) -> Iterator[DataOrTimers]:
        bundle = _BUNDLES.get(instruction_id)
        if bundle is None or bundle.inputs is None:
            yield from self._channel.input_elements(instruction_id, expected_inputs, abort_callback)
            return
        expected = set(expected_inputs)
        done: set[StreamKey] = set()
        for element in bundle.inputs:
            key: StreamKey = ((element.transform_id, element.timer_family_id)
                              if isinstance(element, beam_fn_api_pb2.Elements.Timers) else element.transform_id)
            if key not in expected:
                continue
            if element.is_last:
                done.add(key)
            else:
                yield element
        missing = [k for k in expected_inputs if k not in done]
        if missing:
            # Not all embedded: the rest comes on the data stream.
            yield from self._channel.input_elements(instruction_id, missing, abort_callback)
        else:
            self._channel._clean_receiving_queue(instruction_id)  # pylint: disable=protected-access

    def output_stream(self, instruction_id: str, transform_id: str) -> data_plane.ClosableOutputStream:
        bundle = _BUNDLES.get(instruction_id)
        if bundle is None or not bundle.embeds_outputs:
            return self._channel.output_stream(instruction_id, transform_id)

        def emit(data: bytes, is_last: bool) -> None:
            if data or is_last:
                bundle.emit(self._channel, beam_fn_api_pb2.Elements.Data(
                    instruction_id=instruction_id, transform_id=transform_id, data=data, is_last=is_last), len(data))

        return data_plane.ClosableOutputStream.create(
            lambda data: emit(data, True), lambda data: emit(data, False), self._data_buffer_time_limit_ms)

    def output_timer_stream(self, instruction_id: str, transform_id: str,
                            timer_family_id: str) -> data_plane.ClosableOutputStream:
        bundle = _BUNDLES.get(instruction_id)
        if bundle is None or not bundle.embeds_outputs:
            return self._channel.output_timer_stream(instruction_id, transform_id, timer_family_id)

        def emit(timers: bytes, is_last: bool) -> None:
            if timers or is_last:
                bundle.emit(self._channel, beam_fn_api_pb2.Elements.Timers(
                    instruction_id=instruction_id, transform_id=transform_id, timer_family_id=timer_family_id,
                    timers=timers, is_last=is_last), len(timers))

        return data_plane.ClosableOutputStream.create(
            lambda timers: emit(timers, True), lambda timers: emit(timers, False), self._data_buffer_time_limit_ms)


class _EmbeddingChannelFactory(_STOCK_CHANNEL_FACTORY):  # type: ignore[misc, valid-type]
    """Beam's data channel factory, handing out :class:`_EmbeddingChannel`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wrapped: dict[tuple[str, str], _EmbeddingChannel] = {}

    def create_data_channel_from_url(self, url: str, data_stream_id: Optional[str] = None) -> Any:
        channel = super().create_data_channel_from_url(url, data_stream_id)
        if channel is None:
            return None
        key = (url, data_stream_id or "")  # as the stock factory caches them
        with self._lock:
            wrapped = self._wrapped.get(key)
            if wrapped is None or wrapped._channel is not channel:  # pylint: disable=protected-access
                wrapped = self._wrapped[key] = _EmbeddingChannel(channel, self._data_buffer_time_limit_ms)
            return wrapped
