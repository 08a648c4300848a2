"""The real transport: ``kcprpc.mux`` streams over a ``kcp`` session, and KCP OOB datagrams.

:class:`MuxConnection` adapts a :class:`~kcprpc.mux.MuxSession` (plus anything with
``send_datagram``/``recv_datagram``) to :class:`~kcprpc.transport.Connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from kcp.weakrefs import mypyc_attr
from kcprpc.config import SecureWire, Transport, effective_transport
from kcprpc.errors import RpcError, UsageError
from kcprpc.mux import MuxConfig, MuxSession
from kcprpc.status import Status
from kcprpc.transport import ByteStream, ReceiveHeld, SendBacklog, close_status
from kcprpc.transport_events import (
    PathChanged,
    PathFailed,
    PathValidated,
    PeerClosed,
    PeerDraining,
    PingAnswered,
    TransportEvent,
)

if TYPE_CHECKING:
    from kcp.gcpolicy import GcPolicy
    from kcp.listener import Listener
    from kcp.ratelimit import SourceTally
    from kcp.session import KCPSession


class DatagramPort(Protocol):
    """Unreliable datagrams (a KCP session's OOB path)."""

    def send_datagram(self, data: bytes) -> None:
        """Send one datagram."""
        ...

    async def recv_datagram(self) -> bytes:
        """Receive one datagram."""
        ...


@mypyc_attr(allow_interpreted_subclasses=True)  # kcprpc.web.connection.WebConnection
class MuxConnection:
    """A :class:`~kcprpc.transport.Connection` made of a mux session and a datagram port.

    Over KCP, ``session`` is the :class:`kcp.KCPSession` under the mux: it is also the datagram
    port, and it gives the capabilities an in-memory pipe has not (abort with a reason, counters,
    the peer's address and key, secure-mode events, rebind)."""

    def __init__(
        self,
        mux: MuxSession,
        datagrams: DatagramPort | None = None,
        *,
        session: KCPSession | None = None,
        max_datagram_size: int = 1100,
        remote_address: Any = None,
        on_close: Any = None,
        channel_binding: bytes | None = None,
    ) -> None:
        self.mux = mux
        self.session = session
        self.datagrams = session if session is not None else datagrams
        self._max_dgram = max_datagram_size if self.datagrams is not None else 0
        self._remote = remote_address
        self._on_close = on_close
        self._binding = channel_binding
        self._closed_ev = asyncio.Event()

    async def open_stream(self) -> ByteStream:
        """Open a mux stream."""
        return await self.mux.open_stream()

    async def accept_stream(self) -> ByteStream:
        """Accept a mux stream (raises a ``ConnectionError`` subclass once closed)."""
        return await self.mux.accept_stream()

    def send_datagram(self, data: bytes) -> None:
        """Send an OOB datagram."""
        if self.datagrams is None or self.mux.closed:
            raise ConnectionError("no datagram path")
        self.datagrams.send_datagram(data)

    async def recv_datagram(self) -> bytes:
        """Receive an OOB datagram."""
        if self.datagrams is None:
            await self._closed_ev.wait()
            raise ConnectionError("connection closed")
        return await self.datagrams.recv_datagram()  # raises a ConnectionError once the session ended

    def set_datagram_reader(self, reader: Callable[[bytes], None] | None) -> bool:
        """Have each received datagram handed to ``reader(data)`` in the loop turn that read it
        (:meth:`kcp.KCPSession.set_datagram_receiver`) rather than kept for :meth:`recv_datagram`;
        False when this connection's datagram port cannot (then nothing changed)."""
        setter = getattr(self.datagrams, "set_datagram_receiver", None)
        if setter is None:
            return False
        setter(reader)
        return True

    @property
    def max_datagram_size(self) -> int:
        """Largest OOB payload now (it follows the session's MTU as path MTU probing moves it)."""
        s = self.session
        return s.max_datagram_size() if s is not None else self._max_dgram

    @property
    def max_paused_streams(self) -> int:
        """How many streams may stop being read at once (see :class:`kcprpc.inbox.ParkingLot`).
        smux v2: each holds at most one stream window of the session's receive buffer, and one
        window stays free for the rest (the control stream); v1 has no per-stream window: none."""
        cfg = self.mux.config
        if cfg.version < 2:
            return 0
        return max(0, cfg.max_receive_buffer // cfg.max_stream_buffer - 1)

    @property
    def closed(self) -> bool:
        """True once the mux session is dead."""
        return self.mux.closed or self._closed_ev.is_set()

    async def close(self) -> None:
        """Close the mux session and the transport under it."""
        self._closed_ev.set()
        with contextlib.suppress(Exception):
            await self.mux.close()
        if self._on_close is not None:
            with contextlib.suppress(Exception):
                r = self._on_close()
                if asyncio.iscoroutine(r):
                    await r

    async def abort(self, code: int | None = None, message: str = "") -> None:
        """Close at once, dropping unsent and unacknowledged data (a peer that never answered, or
        one that stopped reading). A secure KCP session tells the peer ``code`` and ``message`` in
        its authenticated CLOSE."""
        if self.session is not None:
            with contextlib.suppress(Exception):
                self.session.abort(code, message)
        await self.close()

    def send_backlog(self) -> int:
        """Bytes held for the peer: written to mux streams and not sent yet, plus what the KCP
        session has not had acknowledged (:meth:`kcprpc.mux.MuxSession.send_backlog`)."""
        return self.mux.send_backlog()

    def send_progress(self) -> int:
        """A count that changes whenever the peer consumes some of what waits for it (KCP
        acknowledgements, mux windows): :meth:`kcprpc.mux.MuxSession.send_progress`."""
        return self.mux.send_progress()

    def stats(self) -> dict[str, int]:
        """Mux counters plus, when available, the KCP session's counters."""
        out = {f"mux_{k}": v for k, v in self.mux.counters.items()}
        if self.session is not None:
            out.update(self.session.stats)
        return out

    @property
    def remote_address(self) -> Any:
        """Peer address (follows a secure-mode session when its peer migrates)."""
        return self.session.remote_address if self.session is not None else self._remote

    def add_event_callback(self, callback: Callable[[TransportEvent], None]) -> bool:
        """Call ``callback(event)`` for each transport event of the KCP session, translated into
        :mod:`kcprpc.transport_events`. Secure mode: a path change, validated or failed; the peer
        draining; the peer closing. A compat dial: the server's wire hint that it speaks the secure
        wire (a :class:`~kcprpc.transport_events.PeerClosed` with FAILED_PRECONDITION, before the
        session ends). It runs in the receive path and must not block. Returns False (and does
        nothing) when the connection has no such events (in memory)."""
        if self.session is None:
            return False
        translate = _secure_event_translator() if self.session.mode == "secure" else _compat_event
        self.session.add_event_callback(_forward(translate, callback))
        return True

    @property
    def send_bounds(self) -> SendBacklog:
        """What this connection holds for its peer (the server bounds it for slow consumers)."""
        return self

    @property
    def receive_bounds(self) -> ReceiveHeld:
        """What this connection holds from its peer (the server bounds it for all clients together):
        its mux session's :meth:`~kcprpc.mux.MuxSession.receive_held`, with no call between."""
        return self.mux

    def rebind(self) -> Any:
        """Secure client connections: move to a new local UDP socket (a phone changing networks);
        calls continue. Returns the new local address."""
        if self.session is None or self.session.mode != "secure":
            raise UsageError("rebind() needs a secure-mode KCP connection")
        return self.session.rebind()

    def ping(self, nonce: int) -> bool:
        """Secure KCP: send an authenticated keepalive PING (:meth:`kcp.KCPSession.ping`); its answer
        arrives as :class:`~kcprpc.transport_events.PingAnswered`. False over compat KCP and web
        transports, which have none."""
        return self.session.ping(nonce) if self.session is not None else False

    def silent_ms(self) -> int | None:
        """Secure KCP: milliseconds since the last authenticated datagram from the peer; None
        otherwise (compat KCP accepts unauthenticated packets, so they prove nothing)."""
        s = self.session
        return s.silent_ms() if s is not None and s.mode == "secure" else None

    def packets_sent(self) -> int:
        """Secure KCP: the session's datagrams out (data and acks; its keepalives are the secure
        path's and not among them), which the peer authenticates; 0 otherwise."""
        s = self.session
        return s.counters.out_pkts if s is not None and s.mode == "secure" else 0

    def use_transport_keepalive(self) -> bool:
        """Secure KCP: stop the mux's keepalive (its NOPs and silence check); the session's
        authenticated keepalives and the RPC heartbeat prove liveness. False over compat KCP and web
        transports, whose mux keeps its NOPs."""
        if self.silent_ms() is None:
            return False
        self.mux.stop_keepalive()
        return True

    def hold_acks(self, ms: int) -> bool:
        """Secure KCP: the session holds its lone acks up to ``ms`` once it only receives
        (:meth:`kcp.KCPSession.hold_acks`); False otherwise."""
        s = self.session
        return s.hold_acks(ms) if s is not None else False

    @property
    def wire_mode(self) -> str | None:
        """``"secure"`` or ``"compat"`` for a KCP session, None in memory."""
        return self.session.mode if self.session is not None else None

    @property
    def channel_binding(self) -> bytes | None:
        """Secure mode: the Noise handshake hash of this connection's handshake (both ends know it,
        no other connection has it); without a secure session the ``channel_binding`` given (an
        in-memory pipe's), else None (compat mode: nothing binds, so nothing resumes)."""
        sec = self.session.secure if self.session is not None else None
        if sec is not None and sec.handshake_hash:
            return bytes(sec.handshake_hash)
        return self._binding

    @property
    def peer_public_key(self) -> bytes | None:
        """Secure mode: the peer's static X25519 public key (a client that ran the pinned-key
        handshake; a server's is the key the client pinned), else None."""
        sec = self.session.secure if self.session is not None else None
        return sec.peer_static if sec is not None else None


def _forward(
    translate: Callable[[Any], TransportEvent | None], callback: Callable[[TransportEvent], None]
) -> Callable[[Any], None]:
    """The KCP session's event callback: ``callback`` gets what ``translate`` makes of each event."""

    def on_event(ev: Any) -> None:
        out = translate(ev)
        if out is not None:
            callback(out)

    return on_event


def _compat_event(ev: Any) -> TransportEvent | None:
    """A compat dial's one event: the server's wire hint (kcp.wirehint.WireMismatch)."""
    from kcp.wirehint import WireMismatch

    if isinstance(ev, WireMismatch):
        return PeerClosed(Status.FAILED_PRECONDITION, ev.message, ev.message)
    return None


def _secure_event_translator() -> Callable[[Any], TransportEvent | None]:
    """Translates ``kcp.secure`` events into :mod:`kcprpc.transport_events` (None: not one the RPC
    layer uses, such as a key update, or a close that was ours)."""
    from kcp.secure import ConnectionClosed, GoAwayReceived
    from kcp.secure import PathChanged as KcpPathChanged
    from kcp.secure import PathFailed as KcpPathFailed
    from kcp.secure import PathValidated as KcpPathValidated
    from kcp.secure import PingAnswered as KcpPingAnswered
    from kcp.secure.connection import reason_text

    def translate(ev: Any) -> TransportEvent | None:
        if type(ev) is KcpPingAnswered:  # the most frequent: an idle connection's keepalive
            return PingAnswered(ev.nonce)
        if isinstance(ev, KcpPathChanged):
            return PathChanged(ev.old, ev.new)
        if isinstance(ev, KcpPathValidated):
            return PathValidated(ev.addr)
        if isinstance(ev, KcpPathFailed):
            return PathFailed(ev.addr, ev.reverted_to)
        if isinstance(ev, GoAwayReceived):
            return PeerDraining(ev.message)
        if isinstance(ev, ConnectionClosed) and ev.by_peer:
            return PeerClosed(close_status(ev.code), ev.message, reason_text(ev.code, ev.message))
        return None

    return translate


def handshake_error(e: Exception) -> RpcError:
    """The :class:`RpcError` ``kcprpc.connect`` raises for a failed secure handshake (docs/rpc.md,
    "Connect errors"); the message is the handshake's own (it names HOST:PORT and what to check).

    * ``UNAVAILABLE``: nothing listens (ICMP refused, at once), no answer at all, answers that
      never authenticated, refusals for load or draining;
    * ``UNAUTHENTICATED``: wrong key (the server's wire hint, or a PSK that does not match a pinned
      server), a token the server's ``authorize`` hook refused;
    * ``FAILED_PRECONDITION``: the wrong wire mode or wire version (the server's hint), version,
      cipher suite or parameter refusals.
    """
    from kcp.secure import (
        HandshakeKeyMismatch,
        HandshakeRefused,
        HandshakeWireMismatch,
        Reason,
    )

    if isinstance(e, HandshakeRefused):
        if e.code == Reason.BAD_TOKEN:
            status = Status.UNAUTHENTICATED
        elif e.code in (Reason.SERVER_BUSY, Reason.GOING_AWAY):
            status = Status.UNAVAILABLE
        else:
            status = Status.FAILED_PRECONDITION
    elif isinstance(e, HandshakeKeyMismatch):
        status = Status.UNAUTHENTICATED
    elif isinstance(e, HandshakeWireMismatch):
        status = Status.FAILED_PRECONDITION
    else:  # unreachable, no answer, unauthenticated answers, a malformed answer
        status = Status.UNAVAILABLE
    return RpcError(status, f"secure {e}" if str(e).startswith("handshake") else str(e))


def wrap_session(session: KCPSession, *, client: bool, mux_config: MuxConfig) -> MuxConnection:
    """A :class:`MuxConnection` over a ``kcp.KCPSession`` (streams on the session, OOB datagrams beside)."""
    mux = MuxSession(session, client=client, config=mux_config)
    max_dgram = session.max_datagram_size()

    async def close_session() -> None:
        session.close()

    return MuxConnection(mux, session=session, max_datagram_size=max_dgram, on_close=close_session)


def server_route(conn: MuxConnection) -> bytes:
    """The first byte of the server's connection ID on a secure connection (with workers: the
    worker that serves it, docs/workers.md); empty for any other connection."""
    sec = conn.session.secure if conn.session is not None else None
    return bytes(sec.remote_cid[:1]) if sec is not None else b""


def redial_transport(transport: Transport, route: bytes) -> Transport:
    """The transport a client dials again with after a connection whose :func:`server_route` was
    ``route`` was lost: in secure mode its initiation asks for that server worker
    (``SecureConfig.cid_prefix`` on the client), where the session waits to be resumed
    (docs/workers.md); a server without workers ignores it. No route, a compat wire, or a wire
    whose config sets ``cid_prefix`` itself: ``transport`` unchanged."""
    wire = transport.wire
    if not route or not isinstance(wire, SecureWire) or (wire.config is not None and wire.config.cid_prefix):
        return transport
    return replace(transport, wire=wire.with_config(cid_prefix=route))


async def dial(host: str, port: int, transport: Transport) -> MuxConnection:
    """Dial a KCP session to ``host:port`` and start a client mux on it.

    ``transport`` is run as :func:`kcprpc.config.effective_transport` completes it: its wire,
    session and socket options go to ``kcp.dial`` unchanged, its mux config to the mux. A failed
    secure handshake raises the :class:`RpcError` of :func:`handshake_error`.
    """
    import kcp
    from kcp.secure import HandshakeError

    run = effective_transport(transport, side="client")
    try:
        session = await kcp.dial(host, port, run.wire, session=run.session, io=run.io)
    except HandshakeError as e:
        raise handshake_error(e) from None
    except kcp.KCPUsageError as e:
        raise UsageError(str(e)) from None
    return wrap_session(session, client=True, mux_config=run.mux)


class RpcListener:
    """Accepts KCP sessions and hands them out as server-side :class:`MuxConnection` objects."""

    def __init__(self, listener: Listener, mux_config: MuxConfig) -> None:
        self.listener = listener
        self.mux_config = mux_config

    @property
    def address(self) -> tuple[str, int]:
        """Bound (host, port)."""
        a = self.listener.address
        return (a[0], a[1])

    async def accept(self) -> MuxConnection:
        """The next connection (raises ``ConnectionError`` once closed)."""
        session = await self.listener.accept()
        return wrap_session(session, client=False, mux_config=self.mux_config)

    def stats(self) -> dict[str, int]:
        """Listener counters."""
        return dict(self.listener.stats)

    def drain(self) -> None:
        """Secure mode: refuse new handshakes with a clear reason (the client's ``connect()`` fails
        with UNAVAILABLE at once); a compat listener has no handshake, nothing to do."""
        if self.listener.mode == "secure":
            self.listener.drain()

    def close(self) -> None:
        """Stop listening and end every session."""
        self.listener.close()

    async def wait_closed(self) -> None:
        """Wait until closed."""
        await self.listener.wait_closed()


async def listen(
    host: str,
    port: int,
    transport: Transport,
    gc: GcPolicy | None = None,
    *,
    sock: socket.socket | None = None,
    max_sessions: int = 16384,
    max_sessions_per_address: int | None = 256,
    sources: SourceTally | None = None,
) -> RpcListener:
    """Listen for KCP sessions on ``host:port``: ``transport`` as
    :func:`kcprpc.config.effective_transport` completes it, its parts passed down unchanged;
    ``gc``: the listener's garbage-collector tuning (:class:`kcp.GcPolicy`, None: off); ``sock``:
    a bound UDP socket to serve on instead (a worker's, ``kcprpc.workers``); ``max_sessions`` and
    ``max_sessions_per_address``: the session table's bounds (:func:`kcp.listen`); ``sources``:
    a tally of connections per address shared with other listeners (``Server.connection_sources``)."""
    import kcp

    run = effective_transport(transport, side="server")
    try:
        listener = await kcp.listen(
            host,
            port,
            run.wire,
            session=run.session,
            io=run.io,
            gc=gc,
            sock=sock,
            max_sessions=max_sessions,
            max_sessions_per_address=max_sessions_per_address,
            sources=sources,
        )
    except kcp.KCPUsageError as e:
        raise UsageError(str(e)) from None
    return RpcListener(listener, run.mux)
