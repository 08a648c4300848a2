"""The KCP listener: one UDP socket, many sessions, and the table that holds them.

Which session a datagram belongs to is its demux's business (:mod:`kcp.demux`): by remote address
with kcp-go's rules and :mod:`kcp.admission`'s proof of address (a :class:`kcp.CompatWire`), or by
connection ID after the secure handshake (a :class:`kcp.SecureWire`). A listener serves one wire
(docs/security.md explains why).

Every table is bounded: at most ``max_sessions`` sessions, ``backlog`` created but not yet
accepted (half-open), ``AdmissionConfig.max_pending`` pending peers (expiring after
``pending_timeout``), and new sessions per source prefix are rate limited. Datagrams refused for
any reason are dropped and counted (``dropped_table_full``, ``dropped_backlog_full``,
``dropped_no_session``, ``dropped_bad_conv``, ``dropped_replay``, ``dropped_rate_limited``, and
the ``pending_*``/``restart_deferred``/``sessions_replaced`` counters in
:attr:`Listener.counters` and :data:`kcp.stats.SNMP`). Closed sessions leave the table at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from kcp.admission import AdmissionConfig
from kcp.batch import Address, open_udp_socket
from kcp.client import check_wire
from kcp.config import CompatWire, IOOptions, SessionConfig, Wire, exempt_networks
from kcp.demux import Demux
from kcp.demux.address import AddressDemux
from kcp.endpoint import Endpoint
from kcp.errors import ConnectionClosedError, KCPUsageError
from kcp.gcpolicy import GcFreezer, GcPolicy
from kcp.logutil import RateLimitedLog
from kcp.ratelimit import SourceTally, address_keys
from kcp.session import KCPSession
from kcp.stats import SNMP, Counters

if TYPE_CHECKING:
    from kcp.demux.secure import SecureDemux
    from kcp.secure import SecureServer

# a peer decides how often the accept callback runs: what it raises goes to the loop's exception
# handler 10 times a minute at most
_callback_log = RateLimitedLog(logging.getLogger("kcp.listener"), burst=10, interval=60.0)

__all__ = ["AdmissionConfig", "GcPolicy", "Listener", "listen"]


AcceptCallback = Callable[[KCPSession], "Awaitable[None] | None"]


class Listener:
    """Accepts KCP sessions on one UDP address; iterate it (``async for``) or pass ``on_accept``."""

    passive = True

    def __init__(
        self,
        ep: Endpoint,
        wire: Wire,
        config: SessionConfig,
        *,
        max_sessions: int,
        backlog: int,
        on_accept: AcceptCallback | None,
        rng: Callable[[int], bytes],
        admission: AdmissionConfig | None = None,
        gc: GcPolicy | None = None,
        max_sessions_per_address: int | None = None,
        sources: SourceTally | None = None,
    ) -> None:
        self._ep = ep
        self._loop = ep.loop
        self._config = config
        self._max_sessions = max_sessions
        self.backlog = backlog
        self._on_accept = on_accept
        self._rng = rng
        self.counters: Counters = ep.counters
        self._sessions: dict[Any, KCPSession] = {}  # by remote address (compat) or connection ID (secure)
        self._pending: deque[KCPSession] = deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._closed_fut: asyncio.Future[None] = self._loop.create_future()
        self._admission_config = admission or AdmissionConfig()
        exempt = exempt_networks(wire, self._admission_config.exempt)
        self._sources = (
            sources if sources is not None else SourceTally(address_keys(exempt), max_sessions_per_address)
        )
        """Sessions per IPv4 address or IPv6 /64, against ``max_sessions_per_address`` (or a
        tally the caller shares with its other listeners: ``sources``)."""
        self._demux: Demux
        self._secure: SecureDemux | None = None
        if isinstance(wire, CompatWire):
            self._demux = AddressDemux(self, wire, self._admission_config)
        else:
            from kcp.demux.secure import SecureDemux  # kcp.secure is loaded by secure listeners only

            self._demux = self._secure = SecureDemux(self, wire)
        ep.dispatch = self._demux.dispatch
        self.sessions_started = 0  # sessions ever put in the table
        # the session table's garbage-collector tuning (kcp.gcpolicy): one timer per listener
        self.gc_freezer: GcFreezer | None = GcFreezer(gc) if gc is not None and gc.freeze else None
        self._gc_timer: asyncio.TimerHandle | None = None
        if self.gc_freezer is not None:
            self.gc_freezer.start()
            self._gc_timer = self._loop.call_later(self.gc_freezer.policy.check_interval, self._gc_check)

    def _gc_check(self) -> None:
        freezer = self.gc_freezer
        if freezer is None or self._closed:
            return
        freezer.check(len(self._sessions), self.sessions_started)
        self._gc_timer = self._loop.call_later(freezer.policy.check_interval, self._gc_check)

    # -- the demux's and the sessions' view (kcp.demux.DemuxHost, kcp.session.SessionHost) --------
    @property
    def endpoint(self) -> Endpoint:
        return self._ep

    @property
    def config(self) -> SessionConfig:
        """The session configuration of accepted sessions."""
        return self._config

    @property
    def max_sessions(self) -> int:
        return self._max_sessions

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def rng(self) -> Callable[[int], bytes]:
        return self._rng

    def session_at(self, key: Any) -> KCPSession | None:
        return self._sessions.get(key)

    @property
    def table(self) -> Mapping[Any, KCPSession]:
        return self._sessions  # the same dict for the listener's life (cleared, never replaced)

    def session_count(self) -> int:
        return len(self._sessions)

    def count(self, name: str) -> None:
        for c in (self.counters, SNMP):
            setattr(c, name, getattr(c, name) + 1)

    def room_for_one(self, replacing: bool = False, addr: Address = None) -> str | None:
        """None if one more session from ``addr`` fits (``replacing``: one that takes the place of
        a live one of the same address); else count the drop and say why."""
        if len(self._sessions) - replacing >= self._max_sessions:
            self.count("dropped_table_full")
            return "session table full"
        if addr is not None and self._sources.over(addr, replacing):
            self.count("dropped_address_full")
            return f"too many sessions from one address (max_sessions_per_address {self._sources.cap})"
        if self._on_accept is None and len(self._pending) >= self.backlog:
            self.count("dropped_backlog_full")
            return "accept backlog full"
        return None

    def register(self, key: Any, s: KCPSession) -> None:
        """Put a new session in the table (by address or connection ID) and hand it out."""
        self._sessions[key] = s
        self._sources.add(key, s.remote_address)
        self.sessions_started += 1
        if self._on_accept is not None:
            self._run_callback(s)
        else:
            self._pending.append(s)
            w = self._accept_waiter
            if w is not None and not w.done():
                w.set_result(None)

    def conv_mismatch(self, session: KCPSession, datagram: bytes, packet: bytes, now: int) -> bool:
        return self._demux.conv_mismatch(session, datagram, packet, now)

    def rebind(self, remote: Address, local_addr: tuple[str, int] | None) -> Address:
        raise KCPUsageError("rebind() is for client sessions: a listener's sessions share its socket")

    def session_ended(self, session: KCPSession) -> None:
        key = self._demux.key_of(session)
        removed = self._sessions.get(key) is session
        if removed:
            del self._sessions[key]
            self._sources.remove(key)
        self._demux.session_gone(key, removed)
        self._ep.kick()

    # -- properties ------------------------------------------------------------------------------
    @property
    def demux(self) -> Demux:
        """The lookup (:class:`kcp.demux.address.AddressDemux` or :class:`kcp.demux.secure.SecureDemux`)."""
        return self._demux

    @property
    def address(self) -> Address:
        """The local address (host, port, ...)."""
        return self._ep.local_address

    @property
    def sessions(self) -> dict[Any, KCPSession]:
        """A copy of the session table: by remote address (compat) or connection ID (secure)."""
        return dict(self._sessions)

    @property
    def mode(self) -> str:
        """``"secure"`` or ``"compat"``."""
        return self._demux.mode

    @property
    def secure_server(self) -> SecureServer | None:
        """The secure core (its ``counters``, ``half_open``, ``state_sizes()``), or None in compat mode."""
        return self._secure.server if self._secure is not None else None

    @property
    def draining(self) -> bool:
        """True after :meth:`drain` or :meth:`goaway`."""
        return self._secure is not None and self._secure.draining

    def drain(self) -> None:
        """Secure mode: refuse new handshakes from now on, with a clear reason the client sees
        (``server is going away (draining)``); existing sessions are untouched. Compat mode has no
        handshake to refuse: there, stop accepting instead."""
        if self._secure is None:
            raise KCPUsageError("drain() needs a secure-mode listener (compat mode has no handshake)")
        self._secure.draining = True
        self._secure.update_load()

    def goaway(self, code: int = 9, message: str = "server is draining") -> None:
        """Secure mode: :meth:`drain`, and every session gets an authenticated GOAWAY (its peer's
        ``goaway_received`` and event callbacks). Sessions stay open so calls in flight finish; the
        mux/RPC layers act on the event (kcprpc's client stops starting calls on that connection).
        """
        self.drain()
        for s in list(self._sessions.values()):
            if not s.is_closing():
                s.goaway(code, message)

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def admission(self) -> AdmissionConfig:
        """The compat-mode admission bounds (pending peers, rate limit, restarts)."""
        return self._admission_config

    def state_sizes(self) -> dict[str, int]:
        """Sizes of every per-peer table this listener keeps (they return to 0 when peers go)."""
        out = {"sessions": len(self._sessions), "backlog": len(self._pending)}
        out.update(self._demux.sizes())
        out["recv_addr_cache"], out["send_addr_cache"] = self._ep.io.cache_sizes()
        out["forgets_waiting"] = len(self._ep.forgets)
        return out

    @property
    def stats(self) -> dict[str, int]:
        """Listener counters (socket I/O and drops) plus table sizes."""
        # the process-wide secure_* fields stay out: secure mode's own counters follow, by their names
        out = {k: v for k, v in self.counters.snapshot().items() if not k.startswith("secure_")}
        out["sessions"] = len(self._sessions)
        out["backlog"] = len(self._pending)
        out["pending"] = self._demux.sizes()["pending"]
        out["tx_dropped"] = self._ep.tx_dropped
        out["forgets_skipped"] = self._ep.forgets_skipped
        if self._secure is not None:
            for k, v in self._secure.server.counters.snapshot().items():
                out["secure_" + k] = v
        return out

    def _run_callback(self, s: KCPSession) -> None:
        assert self._on_accept is not None
        try:
            result = self._on_accept(s)
        except Exception as exc:
            self._callback_failed(s, exc)
            return
        if asyncio.iscoroutine(result):
            task = self._loop.create_task(result)
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._callback_done(s, t))

    def _callback_done(self, s: KCPSession, task: asyncio.Task[Any]) -> None:
        """An async callback ended: one that raised aborts its session as a plain one does (before,
        the session stayed in the table, counted against its bounds, the error unseen until the
        task was collected)."""
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._callback_failed(s, exc)

    def _callback_failed(self, s: KCPSession, exc: BaseException) -> None:
        _callback_log.report_exception(self._loop, "accept", "KCP accept callback failed", exc)
        s.abort()

    # -- accepting -------------------------------------------------------------------------------
    async def accept(self) -> KCPSession:
        """The next new session; raises :class:`ConnectionClosedError` once the listener is closed."""
        if self._on_accept is not None:
            raise KCPUsageError("this listener hands sessions to its on_accept callback")
        while True:
            while self._pending:
                s = self._pending.popleft()
                if not s.closed:
                    return s
            if self._closed:
                raise ConnectionClosedError("listener closed")
            if self._accept_waiter is not None:
                raise KCPUsageError("another coroutine is already waiting in accept()")
            fut = self._loop.create_future()
            self._accept_waiter = fut
            try:
                await fut
            finally:
                self._accept_waiter = None

    def __aiter__(self) -> AsyncIterator[KCPSession]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[KCPSession]:
        while True:
            try:
                yield await self.accept()
            except ConnectionClosedError:
                return

    # -- closing ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop accepting, end every session and close the socket."""
        if self._closed:
            return
        self._closed = True
        if self._gc_timer is not None:
            self._gc_timer.cancel()
            self._gc_timer = None
        if self.gc_freezer is not None:
            self.gc_freezer.release()
        now = self._ep.timers.now_ms()
        for s in list(self._sessions.values()):
            s.end(now, "listener closed", flush=True)
        self._sessions.clear()
        self._pending.clear()
        self._demux.close()
        self._ep.close()
        w = self._accept_waiter
        if w is not None and not w.done():
            w.set_result(None)
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)

    async def wait_closed(self) -> None:
        """Wait for :meth:`close` and for the accept callbacks still running."""
        await asyncio.shield(self._closed_fut)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        return f"<Listener {self.address} sessions={len(self._sessions)}>"


async def listen(
    host: str,
    port: int,
    wire: Wire = CompatWire(),  # noqa: B008 - frozen, validated once
    *,
    session: SessionConfig | None = None,
    io: IOOptions | None = None,
    max_sessions: int = 16384,
    max_sessions_per_address: int | None = 256,
    backlog: int = 1024,
    admission: AdmissionConfig | None = None,
    on_accept: AcceptCallback | None = None,
    rng: Callable[[int], bytes] = os.urandom,
    gc: GcPolicy | None = GcPolicy(),  # noqa: B008 - frozen, validated once
    sock: socket.socket | None = None,
    sources: SourceTally | None = None,
) -> Listener:
    """Listen for KCP sessions on ``host:port`` (kcp-go's ``ListenWithOptions``).

    ``wire`` must match the clients': a :class:`kcp.CompatWire` (the default: no crypt, no FEC) is
    kcp-go's format; a :class:`kcp.SecureWire` accepts only kcprpc's secure handshake, its
    ``static_private_key`` is the identity clients pin, ``authorize(token, client_static_public,
    addr)`` returns None to accept or a refusal message the client sees, and its FEC and
    ``session``'s MTU and windows are the most any client gets (each client's proposal is
    negotiated). ``session`` (:class:`kcp.SessionConfig`) tunes every accepted session; ``io``
    (:class:`kcp.IOOptions`) the socket (``reuse_port`` lets several processes share the port).

    Sessions are returned by ``async for session in listener`` / :meth:`Listener.accept`, or
    handed to ``on_accept(session)`` (a coroutine function runs as a task). In compat mode
    ``admission`` (:class:`kcp.admission.AdmissionConfig`) bounds what peers that have not proved
    themselves may cost: the pending table, the rate of new sessions per source prefix, and when a
    new conversation may replace a live one from the same address.

    ``max_sessions`` bounds the session table, and ``max_sessions_per_address`` what one IPv4
    address or IPv6 /64 may hold of it (None: no limit), so that one client cannot fill the table
    for everyone else: a new session past it is refused (secure mode: an authenticated
    ``SERVER_BUSY`` with the reason; counter ``dropped_address_full``). The networks of
    ``SecureConfig.exempt`` (secure) or ``AdmissionConfig.exempt`` (compat), loopback by default,
    are not limited.

    ``gc`` (:class:`kcp.GcPolicy`) moves the long-lived session table out of the garbage
    collector's full collections (``gc.freeze()`` as the table grows, docs/tuning.md, "Many
    sessions"); ``None`` or ``GcPolicy(freeze=False)`` leaves the collector alone.

    ``sock``: serve on this bound UDP socket instead of opening one (``host``, ``port`` and
    ``io.reuse_port`` are then unused): a worker's socket of a reuseport group
    (:func:`kcp.reuseport.open_reuseport_group`). The listener owns it from here and closes it.
    ``sources``: the tally of sessions per address to count against, shared with the caller's
    other listeners (its cap stands for ``max_sessions_per_address``); None: the listener's own.
    """
    wire = check_wire(wire)
    if max_sessions < 1 or backlog < 1:
        raise KCPUsageError("max_sessions and backlog must be >= 1")
    if max_sessions_per_address is not None and max_sessions_per_address < 1:
        raise KCPUsageError("max_sessions_per_address must be >= 1 (None: no limit per address)")
    cfg = session or SessionConfig()
    io = io or IOOptions()
    if not isinstance(wire, CompatWire):
        wire.check_server()
    loop = asyncio.get_running_loop()
    if sock is None:
        sock = open_udp_socket(host, port, reuse_port=io.reuse_port)
    elif sock.type != socket.SOCK_DGRAM:
        raise KCPUsageError("listen(sock=...) needs a UDP socket")
    else:
        sock.setblocking(False)
    try:
        ep = Endpoint(loop, sock, Counters(), mmsg=io.mmsg, gso=io.gso, coalesce_ms=io.read_coalesce_ms)
    except BaseException:
        sock.close()
        raise
    try:
        return Listener(
            ep,
            wire,
            cfg,
            max_sessions=max_sessions,
            backlog=backlog,
            on_accept=on_accept,
            rng=rng,
            admission=admission,
            gc=gc,
            max_sessions_per_address=max_sessions_per_address,
            sources=sources,
        )
    except BaseException:
        ep.close()
        raise
