"""The shared auth token on the Python side.

A ferrobeam job server started with ``--auth_token_file`` (or
``FERROBEAM_AUTH_TOKEN``) refuses every gRPC call that does not carry the
metadata ``authorization: Bearer <token>`` (see ``runner/auth``). Python has
three kinds of callers, and each gets the header here:

* the submitting program (Job API and artifact staging):
  :class:`ferrobeam.FerrobeamRunner` wraps its channels with
  :func:`authed_channel` when ``--ferrobeam_auth_token_file`` or
  ``FERROBEAM_AUTH_TOKEN`` gives a token;
* SDK workers (control, data, state, logging): the stock harness builds its
  channels with Beam's ``GRPCChannelFactory``, which
  :func:`install_channel_hook` (called by ``ferrobeam._harness``) makes add
  the header whenever ``FERROBEAM_AUTH_TOKEN`` is set, as it is for every
  worker a token-protected server starts;
* :mod:`ferrobeam.job_control` (drain, cancel, savepoint).

The token is sent in clear text: ferrobeam has no TLS yet.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Any, Callable, Optional

import grpc

__all__ = [
    "TOKEN_ENV",
    "authed_channel",
    "install_channel_hook",
    "load_token",
    "remember_token",
    "token_for",
]

#: The environment variable the token may come from; ferrobeam sets it for
#: the workers it starts.
TOKEN_ENV = "FERROBEAM_AUTH_TOKEN"
#: As in ``runner/auth/src/token.rs``.
MIN_TOKEN_LEN = 16
_ALLOWED = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+/=")


def _validate(secret: str, origin: str) -> str:
    secret = secret.strip()
    if not secret:
        raise ValueError("the auth token from %s is empty" % origin)
    if any(c not in _ALLOWED for c in secret):
        raise ValueError(
            "the auth token from %s has a character that is not allowed: use "
            "letters, digits and -._~+/= only" % origin)
    if len(secret) < MIN_TOKEN_LEN:
        raise ValueError(
            "the auth token from %s is %d characters long; it must have at "
            "least %d" % (origin, len(secret), MIN_TOKEN_LEN))
    return secret


def load_token(path: Optional[str] = None) -> Optional[str]:
    """The token in the file ``path`` if given, else in
    ``FERROBEAM_AUTH_TOKEN``, else None.

    Raises:
      ValueError: If the token is empty, too short or has odd characters.
      OSError: If the file cannot be read.
    """
    if path:
        with open(path, encoding="utf-8") as f:
            return _validate(f.read(), "file %s" % path)
    value = os.environ.get(TOKEN_ENV)
    if value is None:
        return None
    return _validate(value, "$" + TOKEN_ENV)


# Tokens FerrobeamRunner was given for a job endpoint, so that the result's
# drain() / cancel() / savepoint() reach the same server with them.
_TOKENS: dict[str, str] = {}


def remember_token(endpoint: str, token: str) -> None:
    """Remembers that ``endpoint`` takes ``token``."""
    _TOKENS[endpoint] = token


def token_for(endpoint: str) -> Optional[str]:
    """The token to send to ``endpoint``: the one the runner was given for
    it, else ``FERROBEAM_AUTH_TOKEN``'s."""
    return _TOKENS.get(endpoint) or load_token()


class _CallDetails(
        collections.namedtuple(
            "_CallDetails",
            ("method", "timeout", "metadata", "credentials", "wait_for_ready",
             "compression")),
        grpc.ClientCallDetails):
    """grpc.ClientCallDetails with other metadata."""


class _BearerInterceptor(
        grpc.UnaryUnaryClientInterceptor,
        grpc.UnaryStreamClientInterceptor,
        grpc.StreamUnaryClientInterceptor,
        grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", "Bearer " + token)

    def __repr__(self) -> str:
        return "_BearerInterceptor(<redacted>)"

    def _details(self, details: Any) -> _CallDetails:
        metadata = [
            (k, v) for k, v in (details.metadata or ()) if k.lower() != "authorization"
        ]
        metadata.append(self._header)
        return _CallDetails(
            details.method, details.timeout, metadata, details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def authed_channel(channel: grpc.Channel, token: Optional[str]) -> grpc.Channel:
    """``channel``, sending ``token`` on every call (unchanged without one)."""
    if not token:
        return channel
    return grpc.intercept_channel(channel, _BearerInterceptor(token))


def expansion_service(endpoint: str, token: str) -> Any:
    """A stub for Beam's ``expansion_service=`` argument that sends
    ``token``: Beam opens a plain string endpoint without metadata (and with
    local-only credentials), but takes any object with ``Expand``."""
    from apache_beam.transforms import external  # pylint: disable=import-outside-toplevel
    channel = grpc.insecure_channel(
        endpoint, options=[("grpc.max_receive_message_length", -1),
                           ("grpc.max_send_message_length", -1)])
    return external.ExpansionAndArtifactRetrievalStub(authed_channel(channel, token))


_HOOK_LOCK = threading.Lock()
_HOOKED = False
# A token the runner was given by file, for workers in this process.
_PROCESS_TOKEN: Optional[str] = None


def _worker_token() -> Optional[str]:
    return load_token() or _PROCESS_TOKEN


def install_channel_hook(process_token: Optional[str] = None) -> None:
    """Makes Beam's ``GRPCChannelFactory`` channels carry the token.

    The stock harness opens its control, data, state and logging channels
    through ``GRPCChannelFactory.insecure_channel`` / ``secure_channel``;
    after this call those return channels that send
    ``FERROBEAM_AUTH_TOKEN`` (read when each channel is made) as a bearer
    token (else ``process_token``, the one :class:`ferrobeam.FerrobeamRunner`
    was given, for LOOPBACK and in-process workers). Without either they are
    Beam's channels, unchanged.
    """
    global _HOOKED, _PROCESS_TOKEN
    if process_token:
        _PROCESS_TOKEN = process_token
    from apache_beam.runners.worker.channel_factory import GRPCChannelFactory  # pylint: disable=import-outside-toplevel
    with _HOOK_LOCK:
        if _HOOKED:
            return
        stock_insecure = GRPCChannelFactory.insecure_channel
        stock_secure = GRPCChannelFactory.secure_channel

        def insecure_channel(target: str, options: Any = None) -> grpc.Channel:
            return authed_channel(stock_insecure(target, options), _worker_token())

        def secure_channel(target: str, credentials: Any, options: Any = None) -> grpc.Channel:
            return authed_channel(stock_secure(target, credentials, options), _worker_token())

        GRPCChannelFactory.insecure_channel = staticmethod(insecure_channel)
        GRPCChannelFactory.secure_channel = staticmethod(secure_channel)
        _HOOKED = True
