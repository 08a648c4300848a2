"""What the WebSocket and WebTransport listeners share (docs/wire-format/web.md): answering
``OPEN`` (web wire version, mux version, the connection bound, the ``authorize`` hook) with
``ACCEPT`` or ``REFUSE``, handing an accepted connection to ``server.handle_connection`` as a
:class:`~kcprpc.web.connection.WebConnection`, and the counters of every refusal and drop.

A listener module (``websocket.py``, ``webtransport.py``) reads its transport, passes the first
message to :meth:`WebListenerBase.admit`, sends the bytes of the verdict and, for an
:class:`Admitted`, calls :meth:`WebListenerBase.serve` with the pipe it feeds. The server knows the
listener through ``Server.add_listener`` (closed on shutdown, its :meth:`~WebListenerBase.stats`
in the server's stats call).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from kcp.logutil import RateLimitedLog
from kcp.ratelimit import SourceTally
from kcprpc.config import SecureWire
from kcprpc.mux import MuxConfig
from kcprpc.status import Status
from kcprpc.transport import maybe_await, spawn
from kcprpc.web.connection import WebConnection
from kcprpc.web.framing import (
    BINDING_SIZE,
    VERSION,
    FramingError,
    Message,
    Open,
    encode_accept,
    encode_refuse,
)
from kcprpc.web.options import Authorize, WebOptions
from kcprpc.web.pipe import WebPipe

if TYPE_CHECKING:
    from kcprpc.server import Server

__all__ = ["LISTENER_COUNTERS", "Admitted", "Refused", "WebListenerBase"]

log = logging.getLogger("kcprpc.web")

T = TypeVar("T")

LISTENER_COUNTERS = (
    "accepted",  # OPEN answered with ACCEPT: a session began
    "refused_unauthenticated",  # the authorize hook said no (REFUSE UNAUTHENTICATED)
    "refused_version",  # a web wire or mux version this server does not speak (FAILED_PRECONDITION)
    "refused_busy",  # over max_connections, or the server shutting down (RESOURCE_EXHAUSTED/UNAVAILABLE)
    "refused_address_full",  # over ServerConfig.max_connections_per_address from one address (closed before OPEN)
    "open_timeouts",  # no OPEN within open_timeout
    "origins_refused",  # a browser Origin not in the allow-list
    "bad_requests",  # not a handshake for this listener: wrong path, subprotocol missing (HTTP 4xx)
    "protocol_errors",  # every message below that ended a connection, together
    "malformed",  # a known kind with the wrong length (or an empty message)
    "unknown_kind",  # a kind byte this wire does not have, or a server's kind from a client
    "not_open",  # the first message was no OPEN (a STREAM or DATAGRAM before ACCEPT)
    "second_open",  # an OPEN after the first message
    "text_messages",  # a WebSocket text message
    "oversized",  # a message over max_message_size
    "receive_overflows",  # stream bytes past max_receive_buffer (the client ignored flow control)
)
"""Every listener's counters (a listener may add its own)."""

_PROTOCOL_ERRORS = frozenset(
    {
        "malformed",
        "unknown_kind",
        "not_open",
        "second_open",
        "text_messages",
        "oversized",
        "receive_overflows",
        "token_too_long",
        "message_too_long",
        "empty",
    }
)
_FRAMING_COUNTER = {
    "empty": "malformed",
    "malformed": "malformed",
    "token_too_long": "malformed",
    "message_too_long": "malformed",
    "unknown_kind": "unknown_kind",
}


@dataclass(frozen=True)
class Admitted:
    """``OPEN`` accepted: send :attr:`reply` (``ACCEPT``), then :meth:`WebListenerBase.serve`."""

    reply: bytes
    mux: MuxConfig
    binding: bytes
    max_datagram: int


@dataclass(frozen=True)
class Refused:
    """``OPEN`` refused: send :attr:`reply` (``REFUSE``) and close (WebSocket: code ``4000 + status``)."""

    reply: bytes
    status: Status
    message: str


class WebListenerBase:
    """The part of a web listener that does not depend on its transport (see the module).

    ``name`` prefixes its counters in the server's stats (``websocket_accepted`` ...)."""

    name = "web"

    def __init__(self, server: Server, options: WebOptions) -> None:
        self.server = server
        self.options = options
        self.counters: dict[str, int] = dict.fromkeys(LISTENER_COUNTERS, 0)
        """Refusals, drops and sessions (:data:`LISTENER_COUNTERS`)."""
        self.connections: set[WebConnection] = set()
        """The connections open now."""
        self.tasks: set[asyncio.Future[Any]] = set()
        self.mux_config = options.mux or server.transport.mux
        self.authorize: Authorize | None = options.authorize
        if self.authorize is None and isinstance(server.transport.wire, SecureWire):
            self.authorize = server.transport.wire.authorize
        self.draining = False
        self._rlog = RateLimitedLog(log)
        self.sources: SourceTally = server.connection_sources
        """Connections per IPv4 address or IPv6 /64, the server's over all its transports
        (``ServerConfig.max_connections_per_address``; a proxy forwards from its own address:
        loopback is exempt, another one belongs in ``SecureConfig.exempt``)."""

    # -- counting ----------------------------------------------------------------------------------

    def count(self, counter: str, detail: str = "") -> None:
        """Count one refusal or drop (and, for a protocol error, the total), with a rate-limited log line."""
        self.counters[counter] = self.counters.get(counter, 0) + 1
        if counter in _PROTOCOL_ERRORS:
            self.counters["protocol_errors"] += 1
        if detail:
            self._rlog.info(counter, "%s listener: %s: %s", self.name, counter, detail)

    def count_framing(self, err: FramingError) -> str:
        """Count a message the codec refused; returns the counter's name."""
        counter = _FRAMING_COUNTER.get(err.reason, "malformed")
        self.count(counter, err.detail)
        return counter

    def count_unexpected(self, msg: Message | FramingError, *, first: bool) -> None:
        """Count a message that is not what the connection's state expects: ``first``: anything
        but ``OPEN`` as the first message; else an ``OPEN`` (or a server's kind) later on."""
        if isinstance(msg, FramingError):
            self.count_framing(msg)
        elif first:
            kind = type(msg).__name__
            self.count("not_open" if kind in ("StreamChunk", "Datagram") else "unknown_kind", kind)
        elif isinstance(msg, Open):
            self.count("second_open", "an OPEN after the first message")
        else:
            self.count("unknown_kind", f"a {type(msg).__name__} from a client")

    def stats(self) -> dict[str, int]:
        """Counters plus ``connections_open``."""
        out = dict(self.counters)
        out["connections_open"] = len(self.connections)
        return out

    # -- connections per address ---------------------------------------------------------------------

    def arrived(self, owner: object, address: Any) -> bool:
        """A new network connection (``owner``) from ``address``, before its ``OPEN``: False (and
        counted) when that address already holds ``ServerConfig.max_connections_per_address``
        connections, opening or open; else it is charged until :meth:`left`."""
        if self.sources.over(address):
            self.count("refused_address_full", f"over {self.sources.cap} web connections from {address!r}")
            return False
        self.sources.add(owner, address)
        return True

    def left(self, owner: object) -> None:
        """The connection charged by :meth:`arrived` ended."""
        self.sources.remove(owner)

    # -- OPEN ----------------------------------------------------------------------------------------

    async def within_open_timeout(self, first: Awaitable[T]) -> T | None:
        """``first`` (the wait for a new connection's first message) within ``open_timeout``;
        None (counted as ``open_timeouts``) when it did not come in time."""
        try:
            return await asyncio.wait_for(first, self.options.open_timeout)
        except TimeoutError:
            self.count("open_timeouts", f"no OPEN within {self.options.open_timeout:g} s")
            return None

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a request with this ``Origin`` may connect (counts a refusal)."""
        if self.options.origin_allowed(origin):
            return True
        self.count("origins_refused", f"origin {origin!r} not allowed")
        return False

    def _refuse(self, status: Status, message: str, counter: str) -> Refused:
        self.count(counter, message)
        return Refused(encode_refuse(status, message), status, message)

    async def admit(self, msg: Open, address: Any) -> Admitted | Refused:
        """The verdict on an ``OPEN`` from ``address``: versions, limits, then the authorize hook."""
        if msg.version != VERSION:
            return self._refuse(
                Status.FAILED_PRECONDITION,
                f"web wire version {msg.version} is not spoken here (version {VERSION})",
                "refused_version",
            )
        if msg.mux_version < 1:
            return self._refuse(
                Status.FAILED_PRECONDITION,
                f"mux version {msg.mux_version} is not spoken here",
                "refused_version",
            )
        if self.draining or self.server.closing:
            return self._refuse(Status.UNAVAILABLE, "server is going away", "refused_busy")
        limit = self.options.max_connections
        if limit is not None and len(self.connections) >= limit:
            return self._refuse(Status.RESOURCE_EXHAUSTED, f"over {limit} web connections", "refused_busy")
        hook = self.authorize
        if hook is not None:
            try:
                verdict = hook(msg.token, None, address)
                if asyncio.iscoroutine(verdict) or isinstance(verdict, asyncio.Future):
                    verdict = await verdict
            except Exception as e:  # user code: refuse rather than crash the listener
                verdict = f"authorization hook raised {type(e).__name__}"
            if verdict is not None:
                return self._refuse(Status.UNAUTHENTICATED, str(verdict), "refused_unauthenticated")
        mux = self.mux_config
        if msg.mux_version < mux.version:
            mux = replace(mux, version=msg.mux_version)
        binding = os.urandom(BINDING_SIZE)
        maxd = self.options.max_datagram
        return Admitted(encode_accept(mux.version, maxd, binding), mux, binding, maxd)

    # -- serving -------------------------------------------------------------------------------------

    def serve(self, pipe: WebPipe, admitted: Admitted, address: Any, transport: Any = None) -> WebConnection:
        """Wrap ``pipe`` in a :class:`WebConnection` and hand it to ``server.handle_connection``
        (in a task this listener holds); returns the connection. ``transport``: the network
        connection under the pipe (kept as ``WebConnection.transport``)."""
        conn = WebConnection(
            pipe,
            client=False,
            mux_config=admitted.mux,
            binding=admitted.binding,
            max_datagram_size=admitted.max_datagram,
            remote_address=address,
            transport=transport,
        )
        self.counters["accepted"] += 1
        self.connections.add(conn)

        async def run() -> None:
            try:
                await self.server.handle_connection(conn)
            finally:
                self.connections.discard(conn)

        spawn(self.tasks, run())
        return conn

    def drain(self) -> None:
        """Refuse new connections (UNAVAILABLE); those open go on (the server ends them)."""
        self.draining = True

    async def close_connections(self) -> None:
        """Close every connection of this listener and wait for their sessions to end."""
        for conn in list(self.connections):
            await maybe_await(conn.close())
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5.0)
