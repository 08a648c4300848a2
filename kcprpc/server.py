"""The RPC server: accepts connections, keeps their sessions, sweeps the silent and the slow ones,
and shuts down gracefully.

A :class:`Server` serves any :class:`~kcprpc.transport.Connection` given to
:meth:`Server.handle_connection` (in-memory pairs in tests); :meth:`Server.serve` listens on KCP.
Each connection is a :class:`~kcprpc.server_session.ServerSession` with its sans-I/O
:class:`~kcprpc.protocol.server.ServerProtocol`; each of its streams is pumped by a
:class:`~kcprpc.dispatch.StreamPump`. The built-in services (health, stats, topic subscription,
reflection) are handed in (``builtins=``, by default :attr:`Server.default_builtins`, which
``kcprpc/__init__`` sets to :func:`kcprpc.builtins.default_services`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import ValidationError

from kcp.config import exempt_networks
from kcp.fieldcheck import check_port
from kcp.logutil import RateLimitedLog
from kcp.ratelimit import SourceTally, address_keys
from kcprpc.broker import Broker, MemoryBroker
from kcprpc.config import SecureWire, Transport, described_transport, effective_transport
from kcprpc.context import ServerContext, current_context, set_current
from kcprpc.direct_events import DIRECT_COUNTERS
from kcprpc.dispatch import STATUS_COUNTERS, StreamPump, invoke
from kcprpc.errors import RpcError, UsageError
from kcprpc.heap import CONNECTION_HEAP, TRIM_AFTER, trim_soon
from kcprpc.interceptors import ServerInterceptor, chain_server
from kcprpc.presence import PRESENCE_COUNTERS
from kcprpc.process_bounds import COUNTERS as BOUNDS_COUNTERS
from kcprpc.process_bounds import ProcessBounds, shed_largest
from kcprpc.protocol.server import StartNotify
from kcprpc.push import RECOVERY_COUNTERS, PushHub
from kcprpc.receive import RECEIVE_COUNTERS, ReceiveTotal, read_datagrams, read_frames
from kcprpc.send_lanes import LANE_COUNTERS
from kcprpc.server_config import ServerConfig
from kcprpc.server_session import (
    CANCEL_CLIENT,
    CANCEL_SHUTDOWN,
    PathHook,
    RestoreHook,
    ServerSession,
    SessionHook,
)
from kcprpc.service import MethodSpec, service_spec
from kcprpc.session_table import ResumeTable, SessionKeeper
from kcprpc.status import Status
from kcprpc.transport import ByteStream, Connection, maybe_await, spawn
from kcprpc.transport_events import PathChanged, PathFailed, PathValidated, TransportEvent

if TYPE_CHECKING:
    from kcprpc.net import RpcListener

Lifespan = Callable[["Server"], contextlib.AbstractAsyncContextManager[object]]
"""``lifespan(server)``: an async context manager (e.g. ``contextlib.asynccontextmanager``) entered
by :meth:`Server.start` once the socket is bound and before any client is accepted (start a tick
loop there), and exited by :meth:`Server.shutdown` after every connection closed (stop it there)."""

log = logging.getLogger("kcprpc.server")
_bug_log = RateLimitedLog(log, burst=10, interval=60.0)  # bugs a client's input can trigger at will

__all__ = [
    "PushHub",
    "Server",
    "ServerConfig",
    "ServerContext",
    "ServerListener",
    "ServerSession",
    "current_context",
]

_SWEEP_SLICE = 500
"""Sessions the sweep checks before it lets the event loop run other callbacks."""
_RECEIVE_SWEEP = 4
"""Every 4th sweep also counts what every session holds on the receive side."""


def _silent(conn: Connection, timeout: float) -> bool:
    """Has the transport under ``conn`` heard nothing for ``timeout`` seconds either? (A client whose
    WELCOME said ``tping`` sends its heartbeats as transport keepalives, which no frame shows.)"""
    ms = conn.silent_ms()
    return ms is None or ms >= timeout * 1000


class ServerListener(Protocol):
    """Something more that brings connections to a server (:meth:`Server.add_listener`): the web
    listeners of :mod:`kcprpc.web`. It hands each connection to :meth:`Server.handle_connection`."""

    name: str
    """Prefixes its counters in the server's stats call (``websocket_accepted`` ...)."""

    def close(self) -> None:
        """Stop listening and end its connections."""
        ...

    async def wait_closed(self) -> None:
        """Wait until closed."""
        ...

    def stats(self) -> Mapping[str, int]:
        """Its counters."""
        ...


BuiltinServices = Callable[[bool], list[object]]
"""Makes the built-in service instances of one server (the argument: with reflection or not)."""


class Server:
    """Serves a list of service instances.

    ``Server([GameService()], host, port, key="passphrase")`` then ``await server.serve()``.
    Built-in services (health, stats, topic subscription; reflection unless ``reflection=False``)
    are added: ``builtins`` when given, else :attr:`default_builtins`.

    ``transport`` (:class:`kcprpc.Transport`; docs/rpc.md, "Wire modes") describes the wire, the
    KCP sessions, the mux and the socket; ``key="..."`` is the short form of
    ``transport=Transport(SecureWire(key="..."))`` (give one or the other). A
    :class:`kcprpc.SecureWire` (the default) takes the shared passphrase and/or a
    ``static_private_key`` clients pin, an ``authorize`` hook for client tokens, and FEC as the
    most a client gets; a :class:`kcprpc.CompatWire` serves kcp-go's format (kcp-go/kcptun peers).
    A transport a server cannot run raises :class:`UsageError` here, not at :meth:`start`.

    Session hooks (each ``hook(session)``, sync or async): ``on_connect`` (may refuse with
    RpcError), ``on_detach`` (its connection was lost, it may resume; set
    ``session.resume_window``), ``on_resume`` (its client is back; may refuse with RpcError),
    ``on_disconnect`` (gone for good); see :class:`ServerConfig` ``resume_window``.

    ``lifespan(server)`` is the app's startup and shutdown (:data:`Lifespan`, an async context
    manager): :meth:`start` enters it once the socket is bound, before the first client;
    :meth:`shutdown` leaves it after the last connection closed. ``kcprpc serve`` runs it too.
    """

    default_builtins: ClassVar[BuiltinServices | None] = None
    """Makes the built-in services of a server given no ``builtins``: set by ``kcprpc/__init__`` to
    :func:`kcprpc.builtins.default_services` (health, stats, Push Subscribe, reflection)."""

    def __init__(
        self,
        services: Iterable[object],
        host: str | None = None,
        port: int | None = None,
        *,
        key: bytes | str | None = None,
        transport: Transport | None = None,
        config: ServerConfig | None = None,
        interceptors: Sequence[ServerInterceptor] = (),
        broker: Broker | None = None,
        on_connect: SessionHook | None = None,
        on_disconnect: SessionHook | None = None,
        on_restore: RestoreHook | None = None,
        on_path_change: PathHook | None = None,
        on_detach: SessionHook | None = None,
        on_resume: SessionHook | None = None,
        reflection: bool = True,
        builtins: Iterable[object] | None = None,
        lifespan: Lifespan | None = None,
    ) -> None:
        self.host = host
        self.lifespan = lifespan
        self._lifespan_cm: contextlib.AbstractAsyncContextManager[object] | None = None
        self.port = port
        self.transport = described_transport(key, transport, where="kcprpc.Server")
        effective_transport(self.transport, side="server")  # a wrong transport fails here, not at start()
        if config is not None and not isinstance(config, ServerConfig):
            raise UsageError(f"Server(config=...) must be a kcprpc.ServerConfig, not {config!r}")
        self.config = config or ServerConfig()
        self.interceptors = tuple(interceptors)
        for hook_name, hook in (
            ("on_connect", on_connect),
            ("on_disconnect", on_disconnect),
            ("on_restore", on_restore),
            ("on_path_change", on_path_change),
            ("on_detach", on_detach),
            ("on_resume", on_resume),
        ):
            if hook is not None and not callable(hook):
                raise UsageError(f"Server({hook_name}=...) must be a function, not {hook!r}")
        if not all(callable(i) for i in self.interceptors):
            raise UsageError("Server(interceptors=...) must be functions (kcprpc.interceptors)")
        self.source_keys = address_keys(exempt_networks(self.transport.wire))
        """What network a client's address counts as for every limit per address (an IPv4 address
        or an IPv6 /64; ``SecureConfig.exempt``, loopback by default, is not limited)."""
        self.push = PushHub(self, broker or MemoryBroker(), keys=self.source_keys)
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_restore = on_restore
        self.on_path_change = on_path_change
        self.on_detach = on_detach
        self.on_resume = on_resume
        self.sessions: set[ServerSession] = set()
        self.stats: dict[str, int] = {
            "connections": 0,
            "calls_started": 0,
            "calls_ok": 0,
            "calls_failed": 0,
            "calls_cancelled": 0,
            "calls_refused": 0,  # over max_concurrent_calls or max_subscriptions: RESOURCE_EXHAUSTED, no handler
            "notifications": 0,
            "notifications_dropped": 0,  # malformed, unknown, invalid, or over max_concurrent_notifications
            "notifications_refused": 0,  # an interceptor or the handler raised RpcError
            "notifications_failed": 0,  # the handler raised something else (logged)
            "notifications_cancelled": 0,  # handlers still running when shutdown's grace ended
            "events_sent": 0,
            "bad_frames": 0,
            "path_changes": 0,  # secure mode: a client moved to a new address (NAT rebinding, new network)
            "path_hooks_skipped": 0,  # ... while its async on_path_change still ran for the previous one
            "paths_validated": 0,  # ... and answered the probe there
            "paths_failed": 0,  # ... or did not, and the session went back to the old address
            "restored_rooms": 0,  # rooms a reconnecting client is back in (by the on_restore hook)
            "restored_topics": 0,  # topics re-subscribed through Subscribe's checks
            "restores_denied": 0,  # names a reconnecting client claimed and did not get back
            "restores_refused": 0,  # HELLOs naming more than a session may hold (nothing restored)
            "hellos_refused": 0,  # HELLOs whose metadata is over max_metadata_size (connection refused)
            # clients that stop reading (docs/rpc.md, "Clients that stop reading")
            "slow_consumers": 0,  # ended: more than max_send_backlog held for them
            "slow_consumers_stalled": 0,  # ended: nothing consumed for slow_consumer_timeout
            "slow_consumers_shed": 0,  # ended: the largest backlogs, all past max_send_backlog_total
            "unreliable_dropped": 0,  # unreliable events not queued behind a backlog
            "send_backlog": 0,  # bytes held for all clients at the last sweep (a gauge)
            "replies_hold_timeouts": 0,  # replies sent before what they waited for (a room's subscription)
        }
        self._backlog_total = 0  # bytes held for all clients (updated on every check)
        self._shedding = False
        self.bounds = ProcessBounds(self)
        """What all clients together may make this process hold (receive side, streams, rooms and
        topics): :mod:`kcprpc.process_bounds`."""
        self.receive_total: ReceiveTotal = self.bounds.receive
        """Frames received in part, all connections together (their budgets report here)."""
        self._sweeps = 0
        self._released = 0  # send backlog of the sessions ended since the heap was last trimmed
        self.stats.update(dict.fromkeys(RECEIVE_COUNTERS, 0))  # receive budgets (ReceiveLimits)
        self.stats.update(dict.fromkeys(BOUNDS_COUNTERS, 0))  # all clients together (ProcessBounds)
        self.stats.update(dict.fromkeys(PRESENCE_COUNTERS, 0))  # presence (kcprpc.presence)
        self.stats.update(dict.fromkeys(LANE_COUNTERS, 0))  # send lanes (kcprpc.send_lanes)
        self.stats.update(dict.fromkeys(DIRECT_COUNTERS, 0))  # numbered direct events (kcprpc.direct_events)
        self.stats.update(dict.fromkeys(RECOVERY_COUNTERS, 0))  # kcprpc.push: replay and history
        self.stats.update(dict.fromkeys(STATUS_COUNTERS.values(), 0))  # calls ended with an error status
        self.resumable = ResumeTable(self.config, self.stats, keys=self.source_keys)
        self.connection_sources = SourceTally(self.source_keys, self.config.max_connections_per_address)
        """Connections per IPv4 address or IPv6 /64 on every transport of this server together
        (KCP, WebSocket, WebTransport), against ``max_connections_per_address``."""
        """Sessions that may be resumed: tokens, and the detached ones (``kcprpc.session_table``)."""
        self._keeper = SessionKeeper(self, self.resumable, self._end_connection, self._gone)
        self._methods: dict[str, tuple[MethodSpec, Callable[..., Any]]] = {}
        self.services: list[object] = []
        if builtins is None:
            make = type(self).default_builtins
            builtins = make(reflection) if make is not None else ()
        if (
            isinstance(services, (str, bytes))
            or not isinstance(services, Iterable)
            or hasattr(services, "__rpc_name__")
        ):
            raise UsageError(f"Server(services, ...) takes a list of service instances, not {services!r}")
        for svc in [*services, *builtins]:
            self.add_service(svc)
        self._closing = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self._notifies: set[asyncio.Future[Any]] = set()  # notify handlers running (also in tasks)
        self._path_hooks: set[ServerSession] = set()  # sessions whose async on_path_change runs
        self._listener: RpcListener | None = None
        self.listeners: list[ServerListener] = []
        """The listeners added with :meth:`add_listener` (the KCP listener is not one of them)."""
        self._sweeper: asyncio.Future[None] | None = None
        self._accept_task: asyncio.Future[None] | None = None
        self._serving: asyncio.Future[None] | None = None
        self.address: tuple[str, int] | None = None

    def add_service(self, svc: object) -> None:
        """Register a service instance (before serving)."""
        if isinstance(svc, type):
            raise UsageError("pass service instances, not classes")
        if getattr(type(svc), "__module__", None) == "builtins":
            raise UsageError(f"{svc!r} is not a service: pass instances of kcprpc.Service subclasses")
        spec = service_spec(type(svc))
        for m in spec.methods.values():
            if m.wire_name in self._methods:
                raise UsageError(f"method {m.wire_name!r} registered twice")
            self._methods[m.wire_name] = (m, getattr(svc, m.attr))
        self.services.append(svc)

    def add_listener(self, listener: ServerListener) -> None:
        """Add a listener that brings connections (:func:`kcprpc.web.listen_websocket` adds
        itself): :meth:`shutdown` stops it taking new ones when it begins (its ``drain()``, when
        it has one), then closes it; its ``stats()`` join the stats call, each counter prefixed
        with its ``name``."""
        if self._closing:
            raise UsageError("add_listener() on a server that is shutting down")
        for a in ("close", "wait_closed", "stats"):
            if not callable(getattr(listener, a, None)):
                raise UsageError(
                    f"add_listener(): a listener has close(), wait_closed() and stats(); {listener!r} has no {a}()"
                )
        if listener not in self.listeners:
            self.listeners.append(listener)

    def listener_stats(self) -> dict[str, int]:
        """The counters of the listeners added with :meth:`add_listener`, ``<name>_<counter>``."""
        out: dict[str, int] = {}
        for lst in self.listeners:
            name = getattr(lst, "name", type(lst).__name__)
            try:
                stats = lst.stats()
            except Exception:
                log.exception("listener %s: stats() raised", name)
                continue
            for k, v in stats.items():
                key = f"{name}_{k}"
                out[key] = out.get(key, 0) + int(v)
        return out

    @property
    def wire_mode(self) -> Literal["secure", "compat"]:
        """``"secure"`` or ``"compat"``: the mode of ``transport.wire``."""
        return self.transport.mode

    @property
    def public_key(self) -> bytes | None:
        """The X25519 public key of the secure wire's ``static_private_key`` (what clients pin with
        ``SecureWire(server_public_key=...)``), or None without a static key."""
        wire = self.transport.wire
        if not isinstance(wire, SecureWire) or wire.static_private_key is None:
            return None
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        return (
            X25519PrivateKey.from_private_bytes(bytes(wire.static_private_key))
            .public_key()
            .public_bytes_raw()
        )

    @property
    def closing(self) -> bool:
        """True once :meth:`shutdown` began (health reports NOT_SERVING)."""
        return self._closing

    @property
    def methods(self) -> dict[str, MethodSpec]:
        """Every served method by wire name."""
        return {k: v[0] for k, v in self._methods.items()}

    # ------------------------------------------------------------------ connections
    async def handle_connection(self, conn: Connection) -> None:
        """Serve one connection until it closes."""
        if self._closing:
            await conn.close()
            return
        sess = ServerSession(self, conn)
        self.sessions.add(sess)
        # after a resume, ``sess`` forwards to the session it resumed (``resumed_into``)
        conn.add_event_callback(lambda ev: self._on_transport_event(sess.resumed_into or sess, ev))
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep())
        self.stats["connections"] += 1
        tasks: set[asyncio.Task[Any]] = set()
        dgram_task = asyncio.ensure_future(self._datagram_loop(sess, conn))
        try:
            while True:
                try:
                    stream = await conn.accept_stream()
                except (ConnectionError, OSError, EOFError):
                    break
                if not self.bounds.stream_opened(sess):  # over max_streams_total (the shed makes room)
                    abort = getattr(stream, "abort", None)  # a mux stream leaves the table at once
                    abort() if callable(abort) else stream.close()
                    continue
                spawn(tasks, self._serve_stream(sess.resumed_into or sess, stream, conn, sess))
        finally:
            if sess.conn is conn:  # (a session taken over by a resume runs on another one now)
                sess.closed = True
            dgram_task.cancel()
            for t in list(tasks):
                t.cancel()
            s = sess.resumed_into or sess
            if s is not sess:
                self.push.drop(sess)  # the session this connection began with, before it resumed another
            if s.conn is conn:  # else the session went on on another connection (a resume took it over)
                self._end_connection(s)
                self.sessions.discard(s)
                keeper = self._keeper
                if keeper.may_detach(s):
                    evicted = keeper.detach(s)  # at once: a resume may come while the close lingers
                    this = s.detaches
                    await conn.close()
                    await keeper.detached(s, evicted, this)
                else:
                    await self._gone(s, conn)
            await conn.close()  # idempotent; also ends the KCP session under a dead mux

    def _end_connection(self, s: ServerSession) -> None:
        """``s``'s connection is over: its protocol and receive budgets close, its calls are
        cancelled, its send backlog leaves the total."""
        s.closed = True
        s.protocol.close()
        s.receive.close()
        for call in list(s.calls):
            call.cancel(CANCEL_CLIENT)
        self._note_release(s.send_backlog + CONNECTION_HEAP)
        self._backlog_total -= s.send_backlog
        s.send_backlog = 0

    async def _gone(self, s: ServerSession, conn: Connection | None = None) -> None:
        """``s`` is gone for good: out of every room and topic, no longer resumable, then
        ``on_disconnect`` (after ``conn``, its connection, is closed)."""
        self._note_release(self.resumable.forget(s))  # a detached session's memory, handed back
        s.detached = False
        s.may_resume = False
        s.direct = None  # what it kept for a resume
        s.direct_report = None
        self.push.drop(s)
        self.sessions.discard(s)
        if conn is not None:
            await conn.close()
        if self.on_disconnect is not None:
            try:
                await maybe_await(self.on_disconnect(s))
            except Exception:
                _bug_log.exception("on_disconnect", "on_disconnect hook failed")

    # ------------------------------------------------------------------ resume (kcprpc.session_table)
    def resume_ticket(self, session: ServerSession) -> dict[str, Any] | None:
        """The ``resume`` of ``session``'s WELCOME: a fresh token (the previous one void), or None."""
        return self.resumable.ticket(session)

    async def resume(self, session: ServerSession, claim: Any) -> ServerSession | str:
        """A HELLO on ``session`` (new, not welcomed) asks to resume with ``claim``: the resumed
        session, which now runs on ``session``'s connection, or why not (:meth:`SessionKeeper.resume
        <kcprpc.session_table.SessionKeeper.resume>`)."""
        return await self._keeper.resume(session, claim)

    async def end_detached(self, session: ServerSession) -> None:
        """End a detached ``session`` now (``session.close()`` does): out of its rooms and topics,
        no longer resumable, then ``on_disconnect``."""
        if self.resumable.waiting(session):
            await self._gone(session)

    def kept_sessions(self) -> Iterable[ServerSession]:
        """The sessions kept for a resume now (detached)."""
        return self.resumable.detached.values()

    def detached_grew(self, session: ServerSession, grew: int) -> None:
        """A detached ``session`` holds ``grew`` bytes more (events sent to it): charge them
        against ``max_detached_bytes``, ending the detached sessions evicted past it."""
        for old in self.resumable.recharge(session, grew):
            self.stats["detached_evicted"] += 1
            spawn(self.tasks, self._gone(old))

    @property
    def detached_sessions(self) -> int:
        """Sessions kept for a resume now."""
        return len(self.resumable.detached)

    def _on_transport_event(self, sess: ServerSession, ev: TransportEvent) -> None:
        """Events of a client's transport (secure mode; runs in the receive path: never blocks)."""
        if isinstance(ev, PathChanged):
            self.stats["path_changes"] += 1
            sess.path_changes += 1
            if self.on_path_change is not None:
                if sess in self._path_hooks:  # its hook still runs for the previous change
                    self.stats["path_hooks_skipped"] += 1
                    return
                try:
                    r = self.on_path_change(sess, ev.old, ev.new)
                    if inspect.isawaitable(r):
                        self._path_hooks.add(sess)
                        spawn(self.tasks, self._path_hook(sess, r))
                except Exception:
                    _bug_log.exception("on_path_change", "on_path_change hook failed")
        elif isinstance(ev, PathValidated):
            self.stats["paths_validated"] += 1
        elif isinstance(ev, PathFailed):
            self.stats["paths_failed"] += 1

    async def _path_hook(self, sess: ServerSession, r: Awaitable[Any]) -> None:
        """An async ``on_path_change``: one at a time per session (a client that hops addresses
        made one task per datagram from a new address, an audit: 301 tasks in 1.5 s)."""
        try:
            await r
        except Exception:
            _bug_log.exception("on_path_change", "on_path_change hook failed")
        finally:
            self._path_hooks.discard(sess)

    async def _sweep(self) -> None:
        """Once per heartbeat interval, for all sessions: close those silent for longer than the
        heartbeat timeout, end those that consumed nothing for ``slow_consumer_timeout`` although
        data waited for them (their pings do not count), and recount the send backlog; every
        ``_RECEIVE_SWEEP`` sweeps, also what every session holds on the receive side (frames in
        part alone are counted as they come: :class:`ReceiveTotal`)."""
        hb = self.config.heartbeat
        loop = asyncio.get_running_loop()
        while self.sessions:
            await asyncio.sleep(hb.interval)
            now = loop.time()
            limit = now - hb.timeout
            now_ms = int(now * 1000)
            total = 0
            self._sweeps += 1
            held: list[tuple[int, ServerSession]] | None = [] if not self._sweeps % _RECEIVE_SWEEP else None
            for i, s in enumerate(list(self.sessions)):
                if i and not i % _SWEEP_SLICE:
                    await asyncio.sleep(0)  # let I/O in between slices: 10,000 sessions are ~20 ms
                try:
                    total += self._sweep_session(s, limit, now_ms, held)
                except Exception:  # one session's probe must not end the sweep of them all
                    _bug_log.exception("sweep", "sweeping session %s failed", s.id)
            self._backlog_total = total
            self.stats["send_backlog"] = total
            if total > self.config.max_send_backlog_total:
                self._shed()
            if held is not None:
                self.bounds.receive_over([(h, s) for h, s in held if not s.closed])

    def _sweep_session(
        self, s: ServerSession, limit: float, now_ms: int, held: list[tuple[int, ServerSession]] | None
    ) -> int:
        """One session's part of :meth:`_sweep`: its send backlog to count (0 once it ends)."""
        if s.closed:
            s.send_backlog = 0  # out of the total (its teardown subtracts what is left)
            return 0
        timeout = self.config.heartbeat.timeout
        if s.last_receive < limit and _silent(s.conn, timeout):
            log.info("session %s silent for %.1fs: closing", s.id, timeout)
            s.closed = True
            self._note_release(s.send_backlog)
            s.send_backlog = 0
            spawn(self.tasks, s.conn.close())  # concurrently: a dead peer's close may linger
            return 0
        if held is not None and (h := s.receive_held()) > 0:
            held.append((h, s))
        if s.backlog_probe is None:
            return 0
        b = s.send_backlog = s.held_for_client()  # (its lanes' and unacknowledged events too)
        waits = b - s.direct_held  # what the client has yet to read (direct_held: to acknowledge)
        if waits > s.send_limit:  # grown since its last check (which runs every 64 KiB written)
            s.end_slow_consumer(
                "slow_consumers",
                f"{waits} bytes unsent or unacknowledged, over max_send_backlog ({s.send_limit})",
            )
            return 0
        stall, progress = s.stall, s.progress_probe
        if (
            stall is not None
            and progress is not None
            # nothing waits (an idle session): its progress need not be read
            and stall.observe(now_ms, waits, progress() if waits > 0 else 0)
        ):
            s.end_slow_consumer(
                "slow_consumers_stalled",
                f"{waits} bytes waited and none was consumed for {self.config.slow_consumer_timeout:g} s",
            )
            return 0
        return b

    # -- the send bounds (ServerHost: sessions report their backlog here)
    @property
    def method_table(self) -> Mapping[str, tuple[MethodSpec, Callable[..., Any]]]:
        """Wire name -> (spec, bound handler) of every served method."""
        return self._methods

    def backlog_changed(self, delta: int, shed: bool = True) -> None:
        """A session's send backlog changed by ``delta`` bytes."""
        self._backlog_total += delta
        if shed and self._backlog_total > self.config.max_send_backlog_total:
            self._shed_soon()

    def backlog_released(self, nbytes: int) -> None:
        """A session that held ``nbytes`` of send backlog ended (as a slow consumer)."""
        self._note_release(nbytes)
        self._backlog_total -= nbytes

    def _note_release(self, nbytes: int) -> None:
        """Sessions that held ``nbytes`` of send backlog are gone: past ``TRIM_AFTER`` of them, ask
        for the heap to be handed back to the OS (:func:`kcprpc.heap.trim_soon` waits for the
        buffers to be freed, debounced)."""
        if nbytes > 0:
            self._released += nbytes
            if self._released >= TRIM_AFTER:
                self._released = 0
                trim_soon()

    def _shed_soon(self) -> None:
        if not self._shedding:
            self._shedding = True
            asyncio.get_running_loop().call_soon(self._shed)

    def _shed(self) -> None:
        """The backlogs of all sessions together passed ``max_send_backlog_total``: recount them and
        end the largest as slow consumers until the total is back under 90 % of the bound."""
        self._shedding = False
        cap = self.config.max_send_backlog_total
        sized: list[tuple[int, ServerSession]] = []
        total = 0
        for s in self.sessions:
            if not s.closed and s.backlog_probe is not None:
                b = s.send_backlog = s.held_for_client()
                total += b
                sized.append((b, s))
        self._backlog_total = total
        for b, s in shed_largest(sized, total, cap):
            s.end_slow_consumer(
                "slow_consumers_shed",
                f"{b} bytes unsent, unacknowledged or waiting in lanes, one of the largest while all "
                f"clients together were over max_send_backlog_total ({cap})",
            )

    # -- the rooms and topics of all sessions together (push.HubHost)
    def memberships_over(self) -> None:
        """The hub's memberships passed ``max_membership_bytes`` (a join or subscribe just did)."""
        self.bounds.memberships_over()

    async def _datagram_loop(self, sess: ServerSession, conn: Connection) -> None:
        def on_frame(ftype: int, cid: int, body: Any) -> None:
            s = sess.resumed_into or sess  # after a resume: the session it resumed
            if s.conn is not conn:
                return  # the session went on on another connection
            s.last_receive = s.loop.time()
            start = s.protocol.receive_datagram(ftype, cid, body)
            if start is not None:
                self.run_notify(s, start)

        await read_datagrams(conn, on_frame, self._bad_datagram)

    def _bad_datagram(self) -> None:
        self.stats["bad_frames"] += 1

    async def _serve_stream(
        self, sess: ServerSession, stream: ByteStream, conn: Connection, owner: ServerSession
    ) -> None:
        ch = StreamPump(self, sess, stream)
        try:
            await read_frames(
                stream,
                ch.on_frames,
                max_message_size=self.config.max_message_size,
                pause=ch.pause,
                limits=sess.receive,
                control=ch.control,
            )
        except (ConnectionError, OSError, EOFError, asyncio.IncompleteReadError):
            pass
        finally:
            self.bounds.stream_closed(owner)
            ch.on_eof()
            if ch.is_control and not conn.closed:  # this stream's connection (a resume may move the session)
                await conn.close()

    # ------------------------------------------------------------------ notify
    def run_notify(self, sess: ServerSession, start: StartNotify) -> None:
        """Run a NOTIFY admitted by the protocol (its payload is validated here)."""
        frame, spec, handler = start
        try:
            req = spec.load_request(frame.payload)
        except Exception as exc:  # ValidationError; anything else is the app validator's bug
            self.stats["notifications_dropped"] += 1
            sess.protocol.notify_done()  # (its slot: before, a non-ValidationError kept it for good)
            if not isinstance(exc, ValidationError):
                _bug_log.exception(
                    "notify validator",
                    "validating a notify of %s raised (not a ValidationError): dropped",
                    spec.wire_name,
                )
            return
        self.stats["notifications"] += 1
        ctx = ServerContext(spec, frame.metadata or {}, sess, None, None)
        ctx.request = req
        t = spawn(self.tasks, self._run_notify(ctx, handler, req))
        self._notifies.add(t)
        t.add_done_callback(self._notifies.discard)

    def through_interceptors(
        self, ctx: ServerContext, handler: Callable[..., Any], req: Any
    ) -> Awaitable[Any]:
        """Run ``handler(req)`` behind the server's interceptors (alone when there are none): the one
        path of unary calls, notifies and restored subscriptions."""
        spec = ctx.spec
        if self.interceptors:
            return chain_server(self.interceptors, ctx, lambda: invoke(handler, spec, req))
        return spec.invoke(handler, req)  # type: ignore[no-any-return]

    async def _run_notify(self, ctx: ServerContext, handler: Callable[..., Any], req: Any) -> None:
        set_current(ctx)
        try:
            await self.through_interceptors(ctx, handler, req)
        except RpcError:
            self.stats["notifications_refused"] += 1  # an interceptor or the handler said no: no one to tell
        except Exception:
            self.stats["notifications_failed"] += 1
            _bug_log.exception(ctx.method, "notify handler %s failed", ctx.method)
        except asyncio.CancelledError:  # the shutdown's grace ended before it did
            self.stats["notifications_cancelled"] += 1
            raise
        finally:
            ctx.session.protocol.notify_done()

    # ------------------------------------------------------------------ serving on KCP
    async def start(self, *, sock: socket.socket | None = None) -> tuple[str, int]:
        """Start the broker (:class:`~kcprpc.broker.BrokerUnavailable` when it cannot be
        reached), bind and start accepting KCP connections; returns the bound (host, port).
        ``sock``: serve on this bound UDP socket instead of binding ``host:port`` (a worker of
        :func:`kcprpc.serve_workers` serves on its socket of the group)."""
        from kcprpc.net import listen

        if self._closing:  # it would bind a socket and refuse every client: a shut-down server stays down
            raise UsageError("start(): this server was shut down (make a new Server)")
        if self._listener is not None:
            assert self.address is not None
            return self.address
        if sock is not None:
            self.host, self.port = sock.getsockname()[:2]
        if self.host is None or self.port is None:
            raise UsageError("Server needs host and port to listen")
        check_port(self.port, UsageError)
        await self.push.broker.start()  # BrokerUnavailable: nothing bound, nothing to undo
        cfg = self.config
        self._listener = await listen(
            self.host,
            self.port,
            self.transport,
            gc=cfg.gc,
            sock=sock,
            max_sessions=cfg.max_connections,
            max_sessions_per_address=cfg.max_connections_per_address,
            sources=self.connection_sources,
        )
        self.address = self._listener.address
        if self.lifespan is not None:  # the app's startup: bound, not yet accepting
            cm = self.lifespan(self)
            try:
                await cm.__aenter__()
            except BaseException:
                self._listener.close()
                await self._listener.wait_closed()
                self._listener = None
                self.address = None
                await self.push.broker.close()
                raise
            self._lifespan_cm = cm
        self._accept_task = asyncio.ensure_future(self._accept_loop())
        return self.address

    async def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn = await self._listener.accept()
            except (ConnectionError, OSError, EOFError) as exc:
                if not self._closing:  # the listener ended under a serving server: not silently
                    self._accept_failed(exc)
                return
            except Exception as exc:
                self._accept_failed(exc)
                return
            spawn(self.tasks, self.handle_connection(conn))
            del conn  # (else the last connection, ended long ago, stays referenced here)

    def _accept_failed(self, exc: BaseException) -> None:
        """The listener stopped handing over connections before :meth:`shutdown`: logged, and
        :meth:`serve` raises it, so that a process (or a worker, restarted by its supervisor)
        does not stay up accepting nothing."""
        log.error("accepting KCP connections failed: the server no longer accepts any", exc_info=exc)
        if self._serving is not None and not self._serving.done():
            self._serving.set_exception(exc)

    async def serve(self) -> None:
        """Start (if needed) and serve until :meth:`shutdown` (or cancellation)."""
        if self._listener is None:
            await self.start()
        self._serving = asyncio.get_running_loop().create_future()
        try:
            await self._serving
        finally:
            if not self._closing:
                await self.shutdown()

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, tell clients (GOAWAY), let in-flight calls finish up to ``grace`` seconds,
        then cancel what is left (those fail with UNAVAILABLE) and close every connection; the
        broker is closed last."""
        if self._closing:
            return
        self._closing = True
        grace = self.config.shutdown_grace if grace is None else grace
        # stop accepting, but keep the listener (its socket carries the live sessions) until the end;
        # a secure listener also refuses new handshakes at once (the client's connect() fails with
        # UNAVAILABLE: "server is going away") instead of completing them for nobody. Clients learn
        # of the drain from the RPC GOAWAY below (reliable, in order after the replies already sent).
        if self._accept_task is not None:
            self._accept_task.cancel()
        if self._listener is not None:
            self._listener.drain()
        for lst in self.listeners:
            drain = getattr(lst, "drain", None)
            if callable(drain):
                drain()
        for s in list(self.sessions):
            s.send_frame(s.protocol.goaway(Status.UNAVAILABLE, "server shutting down"))
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        # in-flight calls and the notify handlers accepted (a reliable notify was acknowledged to
        # its client) finish within the grace; what is left is cancelled and counted
        calls: list[asyncio.Future[Any]] = [
            c.task for s in self.sessions for c in s.calls if c.task is not None
        ]
        calls += self._notifies
        if calls:
            await asyncio.wait(calls, timeout=max(0.0, end - loop.time()))
        for s in list(self.sessions):
            for c in list(s.calls):
                c.cancel(CANCEL_SHUTDOWN)
        await asyncio.sleep(0)
        for s in list(self.sessions):
            if s.control is not None:
                s.control.flush()
        await asyncio.sleep(0)
        await asyncio.gather(*(s.conn.close() for s in list(self.sessions)), return_exceptions=True)
        for s in list(self.resumable.detached.values()):  # kept for a resume: gone now
            await self._gone(s)
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
        for lst in self.listeners:
            try:
                lst.close()
                await lst.wait_closed()
            except Exception:
                log.exception("closing listener %s raised", getattr(lst, "name", lst))
        for t in list(self.tasks):
            t.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        cm, self._lifespan_cm = self._lifespan_cm, None
        if cm is not None:  # the app's shutdown: every connection is closed by now
            try:
                await cm.__aexit__(None, None, None)
            except Exception:
                log.exception("the lifespan's shutdown raised")
        try:
            await self.push.broker.close()  # last: every session has left its rooms and topics
        except Exception:
            log.exception("closing the broker raised")
        if self._serving is not None and not self._serving.done():
            self._serving.set_result(None)

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
