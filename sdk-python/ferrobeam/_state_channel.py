"""ferrobeam's state channel: State API requests over a Unix-domain socket.

Beam's harness sends every State API request through gRPC: the calling
thread queues it, gRPC's sender thread writes it, a reader thread takes the
answer and wakes the caller. A stateful DoFn waits for such a round trip for
every key it reads and every key it writes at commit, and on the stateful
count benchmark those thread hand-offs cost more CPU than the DoFn itself.

Workers that ferrobeam starts (and the worker inside the submitting process)
are told where the job server's state socket is
(``runner/fnapi/src/state_socket.rs``). The protocol is the State API's own
protos, each framed by a little-endian ``uint32`` length. Each bundle thread
has its own connection and does its own I/O:

* a read sends the request and waits for its answer on the same thread;
* a write (append, clear) is only buffered: the runner answers in order, so
  writes go out with the next read, or when the bundle ends, and their
  answers are checked then. A bundle is not reported done before the runner
  has acknowledged every write, so nothing is lost, and a failed write fails
  the bundle.

One more saving: a bundle of a stateful stage owns its keys (no other bundle
writes them while it runs), so user state of a transform that has never
committed any is certainly empty. Once per bundle the handler asks the runner
which transforms have (a ``runner`` state key), and answers reads of every
other transform's state itself - except keys the bundle has written. In a
batch job's first pass over its input that is every read.

Everything else is the stock harness: the SDK's state cache
(``GlobalCachingStateHandler``) sits on top of this handler exactly as it
sits on top of gRPC. Descriptors whose state URL has no socket registered
keep using gRPC.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from typing import Iterator, Optional

from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.portability.api import endpoints_pb2
from apache_beam.runners.worker import sdk_worker

__all__ = ["install", "install_from_environment", "register"]

_FRAME = struct.Struct("<I")
_ID_LENGTH = struct.Struct(">I")
#: The runner state key answering which transforms have committed user state
#: (``TRANSFORMS_WRITTEN_KEY`` in ``runner/engine/src/state.rs``).
_TRANSFORMS_WRITTEN_KEY = b"ferrobeam:user-state-transforms-written:v1"
#: User state kinds the runner keeps (and so may report as empty).
_USER_STATE_KINDS = frozenset(["bag_user_state", "ordered_list_user_state"])
# Writes buffered before they are sent, and answers left unread before they
# are collected: bounded, so neither side's socket buffer can fill up while
# the other waits for it.
_MAX_BUFFERED_BYTES = 1 << 20
_MAX_UNACKNOWLEDGED = 1024

# State API URL -> the socket that stands in for it.
_SOCKETS: dict[str, str] = {}
_INSTALL_LOCK = threading.Lock()
_GrpcStateHandlerFactory = sdk_worker.GrpcStateHandlerFactory


def register(url: str, path: str) -> None:
    """Routes state requests for ``url`` through the socket at ``path``."""
    _SOCKETS[url] = path


def install() -> None:
    """Makes SDK harnesses created from now on use registered sockets.

    The harness builds its state handler factory by name
    (``sdk_worker.GrpcStateHandlerFactory``) and offers no other hook, so that
    name is replaced by a subclass that differs only for registered URLs.
    """
    with _INSTALL_LOCK:
        sdk_worker.GrpcStateHandlerFactory = _FerrobeamStateHandlerFactory


def install_from_environment() -> None:
    """Registers the socket a ferrobeam-started worker was given, if any."""
    url = os.environ.get("FERROBEAM_STATE_URL")
    path = os.environ.get("FERROBEAM_STATE_SOCKET")
    if url and path:
        register(url, path)
        install()


class _FerrobeamStateHandlerFactory(_GrpcStateHandlerFactory):  # type: ignore[misc, valid-type]
    """Beam's gRPC factory, with socket handlers for registered URLs."""

    def create_state_handler(
        self, api_service_descriptor: Optional[endpoints_pb2.ApiServiceDescriptor]
    ) -> sdk_worker.CachingStateHandler:
        path = _SOCKETS.get(api_service_descriptor.url) if api_service_descriptor else None
        if path is None:
            return super().create_state_handler(api_service_descriptor)
        url = api_service_descriptor.url
        with self._lock:
            handler = self._state_handler_cache.get(url)
            if handler is None:
                # The base class's close() calls done() on every cached handler.
                handler = sdk_worker.GlobalCachingStateHandler(self._state_cache, SocketStateHandler(path))
                self._state_handler_cache[url] = handler
        return handler


def _cell(state_key: beam_fn_api_pb2.StateKey) -> bytes:
    """The state cell a key names: an ordered-list key's range left out."""
    if state_key.WhichOneof("type") == "ordered_list_user_state":
        k = state_key.ordered_list_user_state
        return beam_fn_api_pb2.StateKey(ordered_list_user_state=beam_fn_api_pb2.StateKey.OrderedListUserState(
            transform_id=k.transform_id, user_state_id=k.user_state_id, window=k.window, key=k.key)).SerializeToString()
    return state_key.SerializeToString()


class _Connection:
    """One thread's connection: buffered writes, answers read in order."""

    def __init__(self, path: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._reader = self._sock.makefile("rb", buffering=1 << 16)
        self._out = bytearray()
        self._unacknowledged = 0
        self._next_id = 0

    def _frame(self, request: beam_fn_api_pb2.StateRequest) -> None:
        self._next_id += 1
        request.id = str(self._next_id)
        body = request.SerializeToString()
        self._out += _FRAME.pack(len(body))
        self._out += body

    def write(self, request: beam_fn_api_pb2.StateRequest) -> None:
        """Queues a request whose answer is only checked later."""
        self._frame(request)
        self._unacknowledged += 1
        if len(self._out) >= _MAX_BUFFERED_BYTES or self._unacknowledged >= _MAX_UNACKNOWLEDGED:
            self.sync()

    def call(self, request: beam_fn_api_pb2.StateRequest) -> beam_fn_api_pb2.StateResponse:
        """Sends the queued writes and ``request``; returns its answer."""
        self._frame(request)
        self._send()
        self._collect_acknowledgements()
        response = self._read()
        if response.error:
            raise RuntimeError(response.error)
        return response

    def sync(self) -> None:
        """Sends the queued writes and checks every answer to them."""
        if self._out:
            self._send()
        self._collect_acknowledgements()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._reader.close()
            self._sock.close()

    def _send(self) -> None:
        self._sock.sendall(self._out)
        self._out.clear()

    def _collect_acknowledgements(self) -> None:
        error = None
        while self._unacknowledged:
            response = self._read()
            self._unacknowledged -= 1
            if response.error and error is None:
                error = response.error
        if error is not None:
            raise RuntimeError(error)

    def _read(self) -> beam_fn_api_pb2.StateResponse:
        header = self._reader.read(_FRAME.size)
        if len(header) < _FRAME.size:
            raise ConnectionError("ferrobeam's state socket closed the connection")
        (length,) = _FRAME.unpack(header)
        body = self._reader.read(length)
        if len(body) < length:
            raise ConnectionError("ferrobeam's state socket closed the connection mid-answer")
        return beam_fn_api_pb2.StateResponse.FromString(body)


class SocketStateHandler(sdk_worker.StateHandler):
    """A ``StateHandler`` speaking to ferrobeam's state socket."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []

    def _connection(self) -> _Connection:
        conn: Optional[_Connection] = getattr(self._local, "connection", None)
        if conn is None:
            conn = _Connection(self._path)
            self._local.connection = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "connection", None)
        if conn is not None:
            self._local.connection = None
            conn.close()
            with self._lock:
                self._connections.remove(conn)

    @contextlib.contextmanager
    def process_instruction_id(self, bundle_id: str) -> Iterator[None]:
        local = self._local
        if getattr(local, "instruction_id", None) is not None:
            raise RuntimeError("Already bound to %r" % local.instruction_id)
        local.instruction_id = bundle_id
        # Asked on the bundle's first user-state read (see the module doc).
        local.transforms_written = None
        local.keys_written = set()
        try:
            yield
        except BaseException:
            # The runner drops a failed bundle's writes; the connection may
            # hold unsent or unread frames, so start the next one afresh.
            self._drop_connection()
            raise
        else:
            # The bundle's response goes out after this: every write must be
            # acknowledged first.
            conn = getattr(local, "connection", None)
            if conn is not None:
                try:
                    conn.sync()
                except BaseException:
                    self._drop_connection()
                    raise
        finally:
            local.instruction_id = None
            local.transforms_written = None
            local.keys_written = set()

    def _request(self, state_key: beam_fn_api_pb2.StateKey, **kind: object) -> beam_fn_api_pb2.StateRequest:
        return beam_fn_api_pb2.StateRequest(
            instruction_id=self._local.instruction_id, state_key=state_key, **kind)

    def _certainly_empty(self, state_key: beam_fn_api_pb2.StateKey) -> bool:
        """Whether ``state_key`` names user state nobody has written yet."""
        kind = state_key.WhichOneof("type")
        if kind not in _USER_STATE_KINDS:
            return False
        local = self._local
        written = local.transforms_written
        if written is None:
            written = local.transforms_written = self._ask_transforms_written()
        if getattr(state_key, kind).transform_id in written:
            return False
        return not local.keys_written or _cell(state_key) not in local.keys_written

    def _ask_transforms_written(self) -> frozenset[str]:
        response = self._connection().call(self._request(
            beam_fn_api_pb2.StateKey(runner=beam_fn_api_pb2.StateKey.Runner(key=_TRANSFORMS_WRITTEN_KEY)),
            get=beam_fn_api_pb2.StateGetRequest()))
        data = response.get.data
        ids = []
        pos = 0
        while pos < len(data):
            (length,) = _ID_LENGTH.unpack_from(data, pos)
            pos += _ID_LENGTH.size
            ids.append(data[pos:pos + length].decode("utf-8"))
            pos += length
        return frozenset(ids)

    def _note_write(self, state_key: Optional[beam_fn_api_pb2.StateKey]) -> None:
        if state_key is not None and state_key.WhichOneof("type") in _USER_STATE_KINDS:
            self._local.keys_written.add(_cell(state_key))

    def get_raw(
        self, state_key: beam_fn_api_pb2.StateKey, continuation_token: Optional[bytes] = None
    ) -> tuple[bytes, Optional[bytes]]:
        if not continuation_token and self._certainly_empty(state_key):
            return b"", None
        response = self._connection().call(
            self._request(state_key, get=beam_fn_api_pb2.StateGetRequest(continuation_token=continuation_token)))
        return response.get.data, response.get.continuation_token

    def append_raw(self, state_key: Optional[beam_fn_api_pb2.StateKey], data: bytes) -> sdk_worker._Future:
        self._note_write(state_key)
        self._connection().write(self._request(state_key, append=beam_fn_api_pb2.StateAppendRequest(data=data)))
        # Acknowledged before the bundle completes (see process_instruction_id).
        return sdk_worker._Future.done()

    def clear(self, state_key: Optional[beam_fn_api_pb2.StateKey]) -> sdk_worker._Future:
        self._note_write(state_key)
        self._connection().write(self._request(state_key, clear=beam_fn_api_pb2.StateClearRequest()))
        return sdk_worker._Future.done()

    def done(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
