"""The connection the RPC layer runs on: :class:`Connection` (reliable byte streams both ways,
unreliable datagrams, and the optional capabilities every implementation declares), the close
codes that carry an RPC status, and :func:`spawn`.

:mod:`kcprpc.memory` implements :class:`Connection` in memory for tests; :mod:`kcprpc.net`
implements it with ``kcprpc.mux`` over a ``kcp`` session. Frame I/O over a stream lives in
:mod:`kcprpc.frame_writer` (out) and :mod:`kcprpc.receive` (in).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from kcprpc.status import Status
from kcprpc.transport_events import TransportEvent


@runtime_checkable
class ByteStream(Protocol):
    """A reliable, ordered byte stream (a mux stream)."""

    async def read(self, n: int = -1) -> bytes:
        """Return up to ``n`` bytes (any amount when -1); ``b""`` at end of stream."""
        ...

    def write(self, data: bytes) -> None:
        """Queue bytes for sending."""
        ...

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark."""
        ...

    def close(self) -> None:
        """Half-close: no more writes from this side."""
        ...


class Connection(Protocol):
    """One peer: streams both ways plus unreliable datagrams."""

    async def open_stream(self) -> ByteStream:
        """Open a new stream to the peer."""
        ...

    async def accept_stream(self) -> ByteStream:
        """Wait for a stream opened by the peer; raises ``ConnectionError`` once the connection is closed."""
        ...

    def send_datagram(self, data: bytes) -> None:
        """Send one unreliable datagram (may be dropped)."""
        ...

    async def recv_datagram(self) -> bytes:
        """Wait for one datagram; raises ``ConnectionError`` once the connection is closed."""
        ...

    @property
    def max_datagram_size(self) -> int:
        """Largest payload :meth:`send_datagram` carries."""
        ...

    @property
    def closed(self) -> bool:
        """True once closed by either side."""
        ...

    async def close(self) -> None:
        """Close the connection and every stream on it."""
        ...

    def stats(self) -> dict[str, int]:
        """Transport counters (KCP, mux) for the ``stats`` call."""
        ...

    @property
    def remote_address(self) -> Any:
        """The peer's address, when it has one."""
        ...

    # -- optional capabilities: every Connection declares them; one without says None/False
    @property
    def send_bounds(self) -> SendBacklog | None:
        """What the connection holds for its peer (a server bounds it for clients that stop
        reading), or None when nothing is held (in memory)."""
        ...

    @property
    def receive_bounds(self) -> ReceiveHeld | None:
        """What the connection holds that its peer sent and nobody read yet (a server bounds it for
        all clients together), or None when nothing is held (in memory)."""
        ...

    @property
    def max_paused_streams(self) -> int | None:
        """How many streams may stop being read at once (:class:`kcprpc.inbox.ParkingLot`); None: no limit."""
        ...

    @property
    def wire_mode(self) -> str | None:
        """``"secure"`` or ``"compat"`` over KCP, None otherwise."""
        ...

    @property
    def peer_public_key(self) -> bytes | None:
        """Secure mode: the peer's static public key when the handshake proved one, else None."""
        ...

    @property
    def channel_binding(self) -> bytes | None:
        """Bytes unique to this connection that both ends know and no other connection shares (secure
        mode: the Noise handshake hash; an in-memory pair: random bytes per pair, in-process only),
        or None (compat mode). A resume proof is bound to them (:mod:`kcprpc.resume`)."""
        ...

    def add_event_callback(self, callback: Callable[[TransportEvent], None]) -> bool:
        """Call ``callback`` with each :mod:`kcprpc.transport_events` event (in the receive path:
        it must not block); False (and nothing done) when the connection has no such events."""
        ...

    def rebind(self) -> Any:
        """Move to a new local socket (secure KCP clients); raises :class:`UsageError` otherwise."""
        ...

    def ping(self, nonce: int) -> bool:
        """Send a transport keepalive that the peer's transport answers by itself (secure KCP: an
        authenticated PING, answered with no mux or RPC work); the answer arrives as a
        :class:`~kcprpc.transport_events.PingAnswered` event. False, and nothing sent, when the
        transport has none (compat KCP, web transports, in memory)."""
        ...

    def silent_ms(self) -> int | None:
        """Milliseconds since the transport last heard from the peer (secure KCP: an authenticated
        datagram, keepalives included), or None when the transport cannot tell."""
        ...

    def packets_sent(self) -> int:
        """Datagrams the transport sent so far that show the peer this side is alive (secure KCP:
        its authenticated data and acks, which reset the peer's :meth:`silent_ms`; not its
        keepalives), or 0 when the transport's own traffic proves nothing to the peer (compat KCP,
        web transports, in memory). The RPC heartbeat counts them as traffic sent: a subscriber
        whose acks reach the server needs no PING to prove itself."""
        ...

    def use_transport_keepalive(self) -> bool:
        """Both ends agreed (HELLO and WELCOME ``tping``) that the transport's keepalives and the RPC
        heartbeat prove liveness: the mux stops its own keepalive (its NOPs and its silence check),
        so an idle connection sends nothing but keepalives. False, and nothing changed, when the
        transport has no keepalives (see :meth:`ping`)."""
        ...

    def hold_acks(self, ms: int) -> bool:
        """Let the transport, once it only receives, hold each lone ack up to ``ms`` for a second
        segment (held acks, WELCOME ``ackhold``: docs/tuning.md "Delayed acks"). False, and nothing
        changed, when it cannot (compat KCP, a peer that did not agree, web transports, in memory)
        or its own configuration already says (``kcp.SessionConfig.ack_hold``)."""
        ...

    async def abort(self, code: int | None = None, message: str = "") -> None:
        """Close at once, dropping what waits to be sent; a secure session tells the peer
        ``code`` and ``message`` in its authenticated CLOSE."""
        ...


class NoTransportKeepalive:
    """The transport-keepalive capabilities of a :class:`Connection` whose transport has none (in
    memory, a detached session): :meth:`Connection.ping` sends nothing, :meth:`Connection.silent_ms`
    cannot tell, :meth:`Connection.packets_sent` counts nothing, and the mux keepalive stays as it
    is."""

    __slots__ = ()

    def ping(self, nonce: int) -> bool:
        """False: no transport keepalive (the RPC heartbeat's PING frames do the work)."""
        return False

    def silent_ms(self) -> int | None:
        """None: nothing tracks what the transport hears."""
        return None

    def packets_sent(self) -> int:
        """0: the transport's own traffic proves nothing to the peer."""
        return 0

    def use_transport_keepalive(self) -> bool:
        """False: no transport keepalive to rely on."""
        return False

    def hold_acks(self, ms: int) -> bool:
        """False: no transport acks to hold."""
        return False


@runtime_checkable
class SendBacklog(Protocol):
    """What a :class:`Connection` may add so that the server can bound what a client that stops
    reading makes it hold (docs/rpc.md, "Clients that stop reading"). :class:`kcprpc.net.MuxConnection`
    has it; a connection without it (in memory: writes land in the peer at once) is not bounded."""

    def send_backlog(self) -> int:
        """Bytes held for the peer: written and not sent yet, or sent and not acknowledged yet."""
        ...

    def send_progress(self) -> int:
        """A count that changes whenever the peer consumes some of what waits for it (any unit;
        only changes matter), and only then: not when more is written behind data that waits."""
        ...


@runtime_checkable
class ReceiveHeld(Protocol):
    """What a :class:`Connection` may add so that the server can bound what all its clients make it
    hold on the receive side together (``ServerConfig.max_receive_total``): a
    :class:`kcprpc.net.MuxConnection`'s mux session."""

    def receive_held(self) -> int:
        """Bytes received from the peer and not read yet (mux buffers, the transport's queues)."""
        ...

    def watch_receive(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` as what the transport holds out of order grows (``None``: stop)."""
        ...


CLOSE_CODE_BASE = 0x4B00
"""A transport close code (secure mode's authenticated CLOSE) ``CLOSE_CODE_BASE + status`` ends an
RPC connection with that :class:`~kcprpc.status.Status`: the client's pending calls fail with it."""


def close_code(status: Status | int, base: int = CLOSE_CODE_BASE) -> int:
    """The transport close code that carries ``status``: ``base + status`` (``base``: secure
    mode's :data:`CLOSE_CODE_BASE`, or a web connection's close code base, :mod:`kcprpc.web.connection`)."""
    return base + int(status)


def close_status(code: int | None, base: int = CLOSE_CODE_BASE) -> Status | None:
    """The status a transport close code carries (see :func:`close_code`, the same ``base``), or None."""
    if code is None or not base < code <= base + max(Status):
        return None
    try:
        return Status(code - base)
    except ValueError:
        return None


async def maybe_await(value: Any) -> None:
    """Await ``value`` if it is awaitable: the result of a user hook that may be sync or async."""
    if inspect.isawaitable(value):
        await value


def spawn(tasks: set[Any], aw: Awaitable[Any]) -> asyncio.Future[Any]:
    """Run ``aw`` as a task held in ``tasks`` (so it is not garbage-collected, and its owner can
    cancel what is left at shutdown) until it is done."""
    t = asyncio.ensure_future(aw)
    tasks.add(t)
    t.add_done_callback(tasks.discard)
    return t
