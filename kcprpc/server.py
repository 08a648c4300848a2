"""The RPC server: dispatch, validation, deadlines, cancellation, limits, push and heartbeats.

A :class:`Server` serves any :class:`~kcprpc.transport.Connection` given to
:meth:`Server.handle_connection` (in-memory pairs in tests); :meth:`Server.serve` listens on KCP.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from kcp.logutil import RateLimitedLog
from kcprpc import codec
from kcprpc.codec import (
    CALL,
    CANCEL,
    END,
    GOAWAY,
    HEADERS,
    HELLO,
    MSG,
    NOTIFY,
    OVERSIZED,
    PING,
    PONG,
    REPLY,
    TRAILER,
    UNDECODABLE,
    WELCOME,
    Frame,
    Refused,
    encode_frame,
)
from kcprpc.config import SecureWire, Transport, described_transport, effective_transport
from kcprpc.context import ServerContext, _current, current_context
from kcprpc.errors import RpcError, UsageError
from kcprpc.heartbeat import HeartbeatConfig, SendStall
from kcprpc.interceptors import ServerInterceptor, chain_server
from kcprpc.push import (
    Broker,
    BrokerMessage,
    MemoryBroker,
    PushHub,
    room_key,
    route,
    send_datagram,
    topic_key,
)
from kcprpc.service import Delivery, MethodKind, MethodSpec, event_info, service_spec
from kcprpc.status import Status
from kcprpc.transport import (
    INBOX_LIMIT,
    RECEIVE_COUNTERS,
    TRIM_AFTER,
    ByteStream,
    Connection,
    FrameWriter,
    Inbox,
    ParkingLot,
    ReceiveLimits,
    SendGuard,
    close_code,
    read_frames,
    receive_limit_defaults,
    spawn,
    trim_soon,
)

log = logging.getLogger("kcprpc.server")

__all__ = ["PushHub", "Server", "ServerConfig", "ServerContext", "ServerSession", "current_context"]


@dataclass(frozen=True)
class ServerConfig:
    """Limits and timings of a server (per connection unless said otherwise)."""

    max_message_size: int = codec.DEFAULT_MAX_MESSAGE_SIZE
    max_concurrent_calls: int = 1000
    max_subscriptions: int = 1000  # topics plus streaming calls open at once
    heartbeat: HeartbeatConfig = field(default_factory=lambda: HeartbeatConfig(interval=1.0, timeout=10.0))
    shutdown_grace: float = 5.0
    stream_high_water: int = 64 * 1024
    max_rooms: int = 256  # rooms one session may be in (ServerSession.join past it: RESOURCE_EXHAUSTED)
    max_name_length: int = 256  # characters in a room or topic name (longer: INVALID_ARGUMENT)
    max_concurrent_notifications: int = 64  # notify handlers running per session; past it they are dropped
    max_metadata_size: int = 16 * 1024  # bytes of HELLO metadata a session keeps (more: RESOURCE_EXHAUSTED)
    # -- the send side: clients that stop reading (docs/rpc.md, "Clients that stop reading") --
    max_send_backlog: int = 8 * 1024 * 1024  # bytes held for one client: past it, "slow consumer"
    max_send_backlog_total: int = 64 * 1024 * 1024  # the same for every client together (per process)
    slow_consumer_timeout: float | None = 10.0  # s with data waiting and none of it consumed
    # -- receive-side memory per connection (docs/rpc.md, "Flow control and memory per connection")
    max_decoded_bytes: int | None = None
    """Estimated bytes of decoded request bodies one connection may hold (those of running calls
    and of unread streamed messages); a body that would exceed it is refused without being decoded
    (RESOURCE_EXHAUSTED). None: 8 MiB, or ``2 * max_message_size`` if larger."""
    max_partial_frame_bytes: int | None = None
    """Bytes of frames received in part that the streams of one connection may hold together
    (the control stream may hold one frame more); a stream whose frame does not fit stops being
    read until it does (or, with no pause slot left, the frame is refused). None:
    ``max_message_size + 9 + 256 KiB`` (4.25 MiB)."""
    partial_frame_timeout: float | None = 10.0
    """A frame received in part that gets no further byte for this long is dropped (its call fails
    with RESOURCE_EXHAUSTED) and its buffer space given back. None: never."""

    def __post_init__(self) -> None:
        if (
            self.max_message_size <= 0
            or self.max_concurrent_calls <= 0
            or self.max_subscriptions < 0
            or self.max_rooms < 0
            or self.max_name_length <= 0
            or self.max_concurrent_notifications <= 0
            or self.max_metadata_size <= 0
        ):
            raise UsageError("limits must be positive")
        if self.max_send_backlog <= self.max_message_size:
            raise UsageError("max_send_backlog must be larger than max_message_size (one reply must fit)")
        if self.max_send_backlog_total < self.max_send_backlog:
            raise UsageError("max_send_backlog_total must be at least max_send_backlog")
        if self.slow_consumer_timeout is not None and self.slow_consumer_timeout <= 0:
            raise UsageError("slow_consumer_timeout must be positive or None")
        self.receive_limits()

    def receive_limits(self) -> tuple[int, int]:
        """The effective ``(max_decoded_bytes, max_partial_frame_bytes)``."""
        return receive_limit_defaults(
            self.max_message_size, self.max_decoded_bytes, self.max_partial_frame_bytes, self.partial_frame_timeout
        )


_slow_log = RateLimitedLog(log, burst=10, interval=60.0)
"""Slow consumers ended: at most 10 lines a minute (a flood of them must not flood the log)."""


# why a call's task was cancelled
_CLIENT, _DEADLINE, _SHUTDOWN, _OVERFLOW, _REFUSED = 1, 2, 3, 4, 5


class _ServerCall:
    __slots__ = ("cid", "cost", "ctx", "inbound", "reason", "refusal", "started", "task", "timer", "writer")

    def __init__(self, cid: int, writer: FrameWriter) -> None:
        self.cid = cid
        self.writer = writer
        self.ctx: ServerContext | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.inbound: Inbox | None = None
        self.reason = 0
        self.cost = 0  # decode budget held by the CALL body until the call ends
        self.started = False
        self.refusal = ""

    def overflow(self) -> None:
        self.cancel(_OVERFLOW)

    def refuse(self, refused: Refused) -> None:
        """A message of this call was refused by a receive budget: fail it (RESOURCE_EXHAUSTED)."""
        self.refusal = refused.reason
        self.cancel(_REFUSED)

    def cancel(self, reason: int) -> None:
        task = self.task
        if task is not None and not task.done():
            if not self.reason:
                self.reason = reason
            if self.started:
                task.cancel()
            else:  # a task cancelled before its first step never runs its finally: let it start
                task.get_loop().call_soon(task.cancel)


_END = object()


class ServerSession:
    """One connected client, as seen by the server (``ctx.session`` in handlers)."""

    _ids = itertools.count(1)

    def __init__(self, server: Server, conn: Connection) -> None:
        self.server = server
        self.conn = conn
        self.id = f"{os.getpid():x}-{next(self._ids)}"
        self.metadata: dict[str, Any] = {}
        self.state: dict[str, Any] = {}  # free for the application
        self.rooms: set[str] = set()
        self.topics: set[str] = set()
        self.rtt_ms: float | None = None  # as measured and reported by the client
        self.active_calls = 0
        self.streaming_calls = 0
        self.notify_running = 0  # notify handlers running for this session
        self.path_changes = 0  # secure mode: times this client moved to a new address
        self.closed = False
        self.ready = False  # HELLO answered with WELCOME
        self.control: FrameWriter | None = None
        self._loop = asyncio.get_running_loop()
        self.last_receive = self._loop.time()
        self._max_dgram = conn.max_datagram_size
        self.calls: set[_ServerCall] = set()
        self.parking = ParkingLot(getattr(conn, "max_paused_streams", None), INBOX_LIMIT)
        # the send side (docs/rpc.md, "Clients that stop reading"): what the transport holds for
        # this client, checked after every write (O(1)) and by the sweep (with the stall watch)
        cfg = server.config
        self._send_limit = cfg.max_send_backlog
        self._drop_unreliable_at = cfg.max_send_backlog // 8
        backlog = getattr(conn, "send_backlog", None)
        progress = getattr(conn, "send_progress", None)
        self._backlog: Callable[[], int] | None = backlog if callable(backlog) else None
        self._progress: Callable[[], int] | None = progress if callable(progress) else None
        self.send_backlog = 0  # bytes held for this client, as of the last check
        # checked after every 1/32 of the bound written (at most 64 KiB): the bound holds within that
        self._guard = (
            SendGuard(self._check_send, min(64 * 1024, cfg.max_send_backlog // 32))
            if self._backlog is not None
            else None
        )
        timeout = cfg.slow_consumer_timeout
        self._stall = (
            SendStall(max(1, int(timeout * 1000)))
            if timeout is not None and self._backlog is not None and self._progress is not None
            else None
        )
        decoded, partial = server.config.receive_limits()
        self.receive = ReceiveLimits(
            max_decoded_bytes=decoded,
            max_partial_frame_bytes=partial,
            partial_frame_timeout=server.config.partial_frame_timeout,
            held_types=(CALL, MSG),
            parking=self.parking,
            counters=server.stats,
        )

    @property
    def remote_address(self) -> Any:
        """The client's address (in secure mode it follows the client when its path changes)."""
        return self.conn.remote_address

    @property
    def peer_public_key(self) -> bytes | None:
        """Secure mode: the client's static public key when it ran the pinned-key handshake (its
        identity, also given to the server's ``authorize`` hook), else None."""
        key = getattr(self.conn, "peer_public_key", None)
        return key if isinstance(key, bytes) else None

    # -- Peer protocol (push.route) --
    def send_frame(self, frame: bytes, unreliable: bool = False) -> None:
        """Queue a frame on the control stream. An ``unreliable`` frame (an unreliable event too big
        for a datagram) is dropped and counted instead while much is already waiting for this
        client (more than ``max_send_backlog // 8``): it is never worth queueing behind a backlog."""
        if self.control is not None:
            if unreliable and self.send_backlog > self._drop_unreliable_at:
                self.server.stats["unreliable_dropped"] += 1
                return
            self.control.send(frame)

    # -- the send bounds --
    def _check_send(self) -> None:
        """After every ``SendGuard.every`` bytes this session's writers wrote (O(1)), and from the
        sweep: past ``max_send_backlog`` the session ends as a slow consumer; past
        ``max_send_backlog_total`` the server sheds the largest backlogs."""
        backlog = self._backlog
        if backlog is None or self.closed:
            return
        b = backlog()
        server = self.server
        server._backlog_total += b - self.send_backlog
        self.send_backlog = b
        if b > self._send_limit:
            self._end_slow_consumer(
                "slow_consumers",
                f"{b} bytes unsent or unacknowledged, over max_send_backlog ({self._send_limit})",
            )
        elif server._backlog_total > server.config.max_send_backlog_total:
            server._shed_soon()

    def _end_slow_consumer(self, counter: str, why: str) -> None:
        """End this session now because it does not read what it is sent: count it (``counter``),
        tell the client (RESOURCE_EXHAUSTED "slow consumer: <why>", as an OOB GOAWAY datagram and,
        in secure mode, in the transport's authenticated CLOSE), drop what waits for it."""
        if self.closed:
            return
        self.closed = True
        server = self.server
        server.stats[counter] += 1
        server._note_release(self.send_backlog)
        server._backlog_total -= self.send_backlog
        self.send_backlog = 0
        message = f"slow consumer: {why}"
        _slow_log.warning("slow consumer", "session %s (%s): %s", self.id, self.remote_address, message)
        if self.control is not None:
            self.control.discard()
        goaway = encode_frame(GOAWAY, 0, [int(Status.RESOURCE_EXHAUSTED), message[:200]])
        for _ in range(2):  # a lost datagram costs the client a heartbeat timeout; a duplicate nothing
            send_datagram(self.conn, goaway, self._max_dgram)
        spawn(server._tasks, self._abort(message))

    async def _abort(self, message: str) -> None:
        abort = getattr(self.conn, "abort", None)
        try:
            if callable(abort):
                await abort(close_code(Status.RESOURCE_EXHAUSTED), message[:500])
            else:
                await self.conn.close()
        except Exception:
            log.warning("session %s: closing the connection failed", self.id, exc_info=False)

    def send_datagram(self, frame: bytes) -> bool:
        """Send a frame as one OOB datagram if it fits."""
        return not self.closed and send_datagram(self.conn, frame, self._max_dgram)

    # -- push API --
    def send(self, event: Any, *, delivery: Delivery | str | None = None) -> None:
        """Push one typed event to this session only."""
        name, default, adapter = event_info(type(event))
        frame = encode_frame(codec.EVENT, 0, [name, adapter.dump_python(event), None, None, None])
        self.server.stats["events_sent"] += 1
        route(self, frame, Delivery(delivery) if delivery is not None else default)

    def join(self, room: str) -> None:
        """Add this session to ``room`` (it leaves on disconnect)."""
        self.server.push.join(self, room)

    def leave(self, room: str) -> None:
        """Remove this session from ``room``."""
        self.server.push.leave(self, room)

    def deliver(self, msg: BrokerMessage) -> None:
        """Broker fan-out target."""
        if not self.closed:
            route(self, msg.frame(), msg.delivery)

    async def close(self) -> None:
        """Disconnect this client."""
        await self.conn.close()


Handler = Callable[..., Any]
RestoreHook = Callable[[ServerSession, list[str], list[str]], Awaitable[None] | None]
"""``on_restore(session, rooms, topics)``: a reconnecting client claims ``rooms`` (its word only)
and is back in ``topics`` (re-subscribed through Subscribe's checks). The hook joins the rooms the
application allows, with the checks of its own join (``session.join(room)``); rooms it does not
join stay left, and the client is told (``kcprpc.ResumeFailed``, reason ``"not restored"``)."""
SessionHook = Callable[[ServerSession], Awaitable[None] | None]
PathHook = Callable[[ServerSession, Any, Any], Awaitable[None] | None]
"""``on_path_change(session, old_address, new_address)``: a secure-mode client moved."""


class Server:
    """Serves a list of service instances.

    ``Server([GameService()], host, port, key="passphrase")`` then ``await server.serve()``.
    Built-in services (health, stats, topic subscription) are always added; reflection unless
    ``reflection=False``.

    ``transport`` (:class:`kcprpc.Transport`; docs/rpc.md, "Wire modes") describes the wire, the
    KCP sessions, the mux and the socket; ``key="..."`` is the short form of
    ``transport=Transport(SecureWire(key="..."))`` (give one or the other). A
    :class:`kcprpc.SecureWire` (the default) takes the shared passphrase and/or a
    ``static_private_key`` clients pin, an ``authorize`` hook for client tokens, and FEC as the
    most a client gets; a :class:`kcprpc.CompatWire` serves kcp-go's format (kcp-go/kcptun peers).
    A transport a server cannot run raises :class:`UsageError` here, not at :meth:`start`.
    """

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
        reflection: bool = True,
    ) -> None:
        from kcprpc.health import builtin_services

        self.host = host
        self.port = port
        self.transport = described_transport(key, transport, where="kcprpc.Server")
        effective_transport(self.transport, side="server")  # a wrong transport fails here, not at start()
        self.config = config or ServerConfig()
        self.interceptors = tuple(interceptors)
        self.push = PushHub(self, broker or MemoryBroker())
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_restore = on_restore
        self.on_path_change = on_path_change
        self.sessions: set[ServerSession] = set()
        self.stats: dict[str, int] = {
            "connections": 0,
            "calls_started": 0,
            "calls_ok": 0,
            "calls_failed": 0,
            "calls_cancelled": 0,
            "notifications": 0,
            "notifications_dropped": 0,  # malformed, unknown, invalid, or over max_concurrent_notifications
            "notifications_refused": 0,  # an interceptor or the handler raised RpcError
            "notifications_failed": 0,  # the handler raised something else (logged)
            "events_sent": 0,
            "bad_frames": 0,
            "path_changes": 0,  # secure mode: a client moved to a new address (NAT rebinding, new network)
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
        }
        self._backlog_total = 0  # bytes held for all clients (updated on every check)
        self._shedding = False
        self._released = 0  # send backlog of the sessions ended since the heap was last trimmed
        self.stats.update(dict.fromkeys(RECEIVE_COUNTERS, 0))  # receive budgets (ReceiveLimits)
        self._methods: dict[str, tuple[MethodSpec, Handler]] = {}
        self.services: list[object] = []
        for svc in [*services, *builtin_services()]:
            self.add_service(svc)
        if reflection:  # kcprpc.Reflection: lists services, returns their interface documents
            from kcprpc.reflection import ReflectionService

            self.add_service(ReflectionService())
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listener: Any = None
        self._sweeper: asyncio.Future[None] | None = None
        self._accept_task: asyncio.Future[None] | None = None
        self._serving: asyncio.Future[None] | None = None
        self.address: tuple[str, int] | None = None

    def add_service(self, svc: object) -> None:
        """Register a service instance (before serving)."""
        if isinstance(svc, type):
            raise UsageError("pass service instances, not classes")
        spec = service_spec(type(svc))
        for m in spec.methods.values():
            if m.wire_name in self._methods:
                raise UsageError(f"method {m.wire_name!r} registered twice")
            self._methods[m.wire_name] = (m, getattr(svc, m.attr))
        self.services.append(svc)

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

        return X25519PrivateKey.from_private_bytes(bytes(wire.static_private_key)).public_key().public_bytes_raw()

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
        add_cb = getattr(conn, "add_event_callback", None)
        if add_cb is not None:
            add_cb(lambda ev: self._on_transport_event(sess, ev))
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep())
        self.stats["connections"] += 1
        tasks: set[asyncio.Task[Any]] = set()
        dgram_task = asyncio.ensure_future(self._datagram_loop(sess))
        try:
            while True:
                try:
                    stream = await conn.accept_stream()
                except (ConnectionError, OSError, EOFError):
                    break
                spawn(tasks, self._serve_stream(sess, stream))
        finally:
            sess.closed = True
            sess.receive.close()
            dgram_task.cancel()
            for call in list(sess.calls):
                call.cancel(_CLIENT)
            for t in list(tasks):
                t.cancel()
            self._note_release(sess.send_backlog)
            self._backlog_total -= sess.send_backlog
            sess.send_backlog = 0
            self.push.drop(sess)
            self.sessions.discard(sess)
            await conn.close()  # idempotent; also ends the KCP session under a dead mux
            if self.on_disconnect is not None:
                try:
                    await _maybe_await(self.on_disconnect(sess))
                except Exception:
                    log.exception("on_disconnect hook failed")

    def _on_transport_event(self, sess: ServerSession, ev: Any) -> None:
        """Secure-mode events of a client's KCP session (runs in the receive path: never blocks)."""
        from kcp.secure import PathChanged, PathFailed, PathValidated

        if isinstance(ev, PathChanged):
            self.stats["path_changes"] += 1
            sess.path_changes += 1
            if self.on_path_change is not None:
                try:
                    r = self.on_path_change(sess, ev.old, ev.new)
                    if inspect.isawaitable(r):
                        spawn(self._tasks, r)
                except Exception:
                    log.exception("on_path_change hook failed")
        elif isinstance(ev, PathValidated):
            self.stats["paths_validated"] += 1
        elif isinstance(ev, PathFailed):
            self.stats["paths_failed"] += 1

    async def _sweep(self) -> None:
        """Once per heartbeat interval, for all sessions: close those silent for longer than the
        heartbeat timeout, end those that consumed nothing for ``slow_consumer_timeout`` although
        data waited for them (their pings do not count), and recount the send backlog."""
        hb = self.config.heartbeat
        loop = asyncio.get_running_loop()
        while self.sessions:
            await asyncio.sleep(hb.interval)
            now = loop.time()
            limit = now - hb.timeout
            now_ms = int(now * 1000)
            total = 0
            for s in list(self.sessions):
                if s.closed:
                    s.send_backlog = 0  # out of the total (its teardown subtracts what is left)
                    continue
                if s.last_receive < limit:
                    log.info("session %s silent for %.1fs: closing", s.id, hb.timeout)
                    s.closed = True
                    self._note_release(s.send_backlog)
                    s.send_backlog = 0
                    spawn(self._tasks, s.conn.close())  # concurrently: a dead peer's close may linger
                    continue
                backlog = s._backlog
                if backlog is None:
                    continue
                b = s.send_backlog = backlog()
                if b > s._send_limit:  # grown since its last check (which runs every 64 KiB written)
                    s._end_slow_consumer(
                        "slow_consumers",
                        f"{b} bytes unsent or unacknowledged, over max_send_backlog ({s._send_limit})",
                    )
                    continue
                stall = s._stall
                if stall is not None and s._progress is not None and stall.observe(now_ms, b, s._progress()):
                    s._end_slow_consumer(
                        "slow_consumers_stalled",
                        f"{b} bytes waited and none was consumed for {self.config.slow_consumer_timeout:g} s",
                    )
                    continue
                total += b
            self._backlog_total = total
            self.stats["send_backlog"] = total
            if total > self.config.max_send_backlog_total:
                self._shed()

    def _note_release(self, nbytes: int) -> None:
        """Sessions that held ``nbytes`` of send backlog are gone: past ``TRIM_AFTER`` of them, ask
        for the heap to be handed back to the OS (:func:`kcprpc.transport.trim_soon` waits for the
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
            if not s.closed and s._backlog is not None:
                b = s.send_backlog = s._backlog()
                total += b
                sized.append((b, s))
        self._backlog_total = total
        if total <= cap:
            return
        sized.sort(key=lambda t: t[0], reverse=True)
        target = cap - cap // 10
        for b, s in sized:
            if total <= target or b <= 0:
                break
            s._end_slow_consumer(
                "slow_consumers_shed",
                f"{b} bytes unsent or unacknowledged, one of the largest while all clients together "
                f"were over max_send_backlog_total ({cap})",
            )
            total -= b

    async def _datagram_loop(self, sess: ServerSession) -> None:
        conn = sess.conn
        while True:
            try:
                data = await conn.recv_datagram()
            except (ConnectionError, OSError, EOFError):
                return
            try:
                ftype, _cid, body = codec.decode_datagram(data)
            except Exception:
                self.stats["bad_frames"] += 1
                continue
            sess.last_receive = sess._loop.time()
            if ftype == NOTIFY:
                self._on_notify(sess, body)
            else:
                self.stats["bad_frames"] += 1

    async def _serve_stream(self, sess: ServerSession, stream: ByteStream) -> None:
        ch = _Channel(self, sess, stream)
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
            ch.on_eof()
            if ch.is_control and not sess.conn.closed:
                await sess.conn.close()

    # ------------------------------------------------------------------ notify
    def _on_notify(self, sess: ServerSession, body: Any) -> None:
        stats = self.stats
        if not isinstance(body, list) or len(body) < 2:
            stats["notifications_dropped"] += 1
            return
        entry = self._methods.get(body[0]) if isinstance(body[0], str) else None
        if entry is None or entry[0].kind is not MethodKind.NOTIFY:
            stats["notifications_dropped"] += 1
            return
        if sess.notify_running >= self.config.max_concurrent_notifications:
            stats["notifications_dropped"] += 1  # unreliable by contract: shed, never queued
            return
        spec, handler = entry
        try:
            req = spec.load_request(body[1])
        except ValidationError:
            stats["notifications_dropped"] += 1
            return
        md = body[2] if len(body) > 2 and isinstance(body[2], dict) else {}
        stats["notifications"] += 1
        ctx = ServerContext(spec, md, sess, None, None)
        ctx.request = req
        sess.notify_running += 1
        spawn(self._tasks, self._run_notify(ctx, handler, req))

    def _through_interceptors(self, ctx: ServerContext, handler: Handler, req: Any) -> Awaitable[Any]:
        """Run ``handler(req)`` behind the server's interceptors (alone when there are none): the one
        path of unary calls, notifies and restored subscriptions."""
        spec = ctx.spec
        if self.interceptors:
            return chain_server(self.interceptors, ctx, lambda: _invoke(handler, spec, req))
        return spec.invoke(handler, req)  # type: ignore[no-any-return]

    async def _run_notify(self, ctx: ServerContext, handler: Handler, req: Any) -> None:
        _current.set(ctx)
        try:
            await self._through_interceptors(ctx, handler, req)
        except RpcError:
            self.stats["notifications_refused"] += 1  # an interceptor or the handler said no: no one to tell
        except Exception:
            self.stats["notifications_failed"] += 1
            log.exception("notify handler %s failed", ctx.method)
        finally:
            ctx.session.notify_running -= 1

    # ------------------------------------------------------------------ serving on KCP
    async def start(self) -> tuple[str, int]:
        """Bind and start accepting KCP connections; returns the bound (host, port)."""
        from kcprpc.net import listen

        if self._listener is not None:
            assert self.address is not None
            return self.address
        if self.host is None or self.port is None:
            raise UsageError("Server needs host and port to listen")
        self._listener = await listen(self.host, self.port, self.transport)
        self.address = self._listener.address
        self._accept_task = asyncio.ensure_future(self._accept_loop())
        return self.address

    async def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn = await self._listener.accept()
            except (ConnectionError, OSError, EOFError):
                return
            spawn(self._tasks, self.handle_connection(conn))

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
        then cancel what is left (those fail with UNAVAILABLE) and close every connection."""
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
        drain = getattr(self._listener, "drain", None)
        if drain is not None:
            drain()
        goaway = encode_frame(GOAWAY, 0, [int(Status.UNAVAILABLE), "server shutting down"])
        for s in list(self.sessions):
            s.send_frame(goaway)
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        calls = [c.task for s in self.sessions for c in s.calls if c.task is not None]
        if calls:
            await asyncio.wait(calls, timeout=max(0.0, end - loop.time()))
        for s in list(self.sessions):
            for c in list(s.calls):
                c.cancel(_SHUTDOWN)
        await asyncio.sleep(0)
        for s in list(self.sessions):
            if s.control is not None:
                s.control.flush()
        await asyncio.sleep(0)
        await asyncio.gather(*(s.conn.close() for s in list(self.sessions)), return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
            wc = getattr(self._listener, "wait_closed", None)
            if wc is not None:
                await wc()
        for t in list(self._tasks):
            t.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._serving is not None and not self._serving.done():
            self._serving.set_result(None)

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()


_SUBSCRIBE = "kcprpc.Push/Subscribe"


def _restore_claims(
    restore: Any, config: ServerConfig
) -> tuple[list[str], list[str], dict[str, Any]] | None:
    """The rooms, topics and offsets of a HELLO's ``restore`` (names that are not strings are
    ignored), or None when it names more than a session may hold (``max_rooms`` rooms,
    ``max_subscriptions`` topics, an offset per name): such a restore is refused whole."""
    if not isinstance(restore, dict):
        return [], [], {}
    raw_rooms, raw_topics, offsets = restore.get("rooms"), restore.get("topics"), restore.get("offsets")
    raw_rooms = raw_rooms if isinstance(raw_rooms, list) else []
    raw_topics = raw_topics if isinstance(raw_topics, list) else []
    offsets = offsets if isinstance(offsets, dict) else {}
    if (
        len(raw_rooms) > config.max_rooms
        or len(raw_topics) > config.max_subscriptions
        or len(offsets) > config.max_rooms + config.max_subscriptions
    ):
        return None
    rooms = list(dict.fromkeys(r for r in raw_rooms if isinstance(r, str)))
    topics = list(dict.fromkeys(t for t in raw_topics if isinstance(t, str)))
    return rooms, topics, offsets


async def _maybe_await(v: Any) -> None:
    if inspect.isawaitable(v):
        await v


def _bad_request(e: ValidationError) -> RpcError:
    """A request that does not validate: INVALID_ARGUMENT with pydantic's error list."""
    return RpcError(
        Status.INVALID_ARGUMENT,
        "request validation failed",
        e.errors(include_url=False, include_context=False),
    )


def _invoke(handler: Handler, spec: MethodSpec, req: Any) -> Any:
    return spec.invoke(handler, req)


class _Channel:
    """One stream on the server: the control stream (after HELLO) or a call stream."""

    def __init__(self, server: Server, sess: ServerSession, stream: ByteStream) -> None:
        self.server = server
        self.sess = sess
        self.writer = FrameWriter(stream, guard=sess._guard)
        self.calls: dict[int, _ServerCall] = {}
        self.is_control = False
        self.loop = sess._loop
        self.decode = sess.receive.decode

    # ---------------------------------------------------------------- frames in
    def control(self) -> bool:
        """True for the control stream (its reader never waits for buffer space)."""
        return self.is_control

    def on_frames(self, frames: list[Frame], costs: list[int]) -> None:
        """A batch of frames; ``costs[i]`` is the decode budget ``frames[i]`` holds (zeroed here for
        the bodies kept: a call's request, an inbox's message; the reader releases the rest)."""
        sess = self.sess
        sess.last_receive = self.loop.time()
        for i, (ftype, cid, body) in enumerate(frames):
            if ftype == CALL:
                if self._on_call(cid, body, costs[i]):
                    costs[i] = 0
            elif ftype == MSG:
                call = self.calls.get(cid)
                if call is not None and call.inbound is not None:
                    if isinstance(body, Refused):
                        call.refuse(body)
                    elif self.is_control and call.inbound.qsize() >= INBOX_LIMIT:
                        # the shared stream cannot be paused for one call: refuse to buffer without end
                        call.cancel(_OVERFLOW)
                    else:
                        call.inbound.put(body, costs[i])
                        costs[i] = 0
            elif ftype == END:
                call = self.calls.get(cid)
                if call is not None and call.inbound is not None:
                    call.inbound.put(_END)
            elif ftype == CANCEL:
                call = self.calls.get(cid)
                if call is not None:
                    call.cancel(_CLIENT)
            elif ftype == PING:
                nonce = body[0] if isinstance(body, list) and body else 0
                if isinstance(body, list) and len(body) > 1 and isinstance(body[1], (int, float)):
                    sess.rtt_ms = body[1] / 1000.0
                self.writer.send(encode_frame(PONG, 0, [nonce]))
            elif ftype == PONG:
                pass
            elif ftype == NOTIFY:
                self.server._on_notify(sess, body)
            elif ftype == HELLO and not self.is_control and sess.control is None:
                self._on_hello(body)
            else:
                self.server.stats["bad_frames"] += 1

    def _on_hello(self, body: Any) -> None:
        sess = self.sess
        self.is_control = True
        sess.control = self.writer
        server = self.server
        if isinstance(body, dict):
            md = body.get("md")
            if isinstance(md, dict):
                if md and len(codec.pack(md)) > server.config.max_metadata_size:
                    server.stats["hellos_refused"] += 1
                    message = f"HELLO metadata larger than {server.config.max_metadata_size} bytes"
                    spawn(server._tasks, self._refuse(Status.RESOURCE_EXHAUSTED, message))
                    return
                sess.metadata = md
        restore = body.get("restore") if isinstance(body, dict) else None
        if server.on_connect is None and restore is None:
            self._welcome(None)
            return
        spawn(server._tasks, self._handshake(restore))

    def _welcome(self, restored: dict[str, list[str]] | None) -> None:
        sess, server = self.sess, self.server
        sess.ready = True
        hb = server.config.heartbeat
        body: dict[str, Any] = {
            "v": codec.PROTOCOL_VERSION,
            "sid": sess.id,
            "hb": int(hb.interval * 1000),
            "epoch": server.push.broker.epoch,
            "max_msg": server.config.max_message_size,
        }
        if restored is not None:
            body["restored"] = restored
        self.writer.send(encode_frame(WELCOME, 0, body))

    async def _handshake(self, restore: Any) -> None:
        """Run ``on_connect`` (which may refuse the connection by raising RpcError), then restore
        what a reconnecting client names in its HELLO, then answer WELCOME (with what was restored,
        when the client asked). Calls that arrive before WELCOME are refused with UNAVAILABLE."""
        server, sess = self.server, self.sess
        restored: dict[str, list[str]] | None = None
        try:
            if server.on_connect is not None:
                await _maybe_await(server.on_connect(sess))
            if restore is not None:
                restored = await self._restore(restore)
        except Exception as e:
            if isinstance(e, RpcError):
                code, message = e.status, e.message
            else:
                log.exception("on_connect/on_restore failed")
                code, message = Status.INTERNAL, "internal error"
            await self._refuse(code, message)
            return
        if not sess.closed:
            self._welcome(restored)

    async def _refuse(self, code: Status, message: str) -> None:
        """Refuse the connection at its HELLO: GOAWAY with the reason (the client's ``connect()``
        raises it), then close."""
        self.writer.send(encode_frame(GOAWAY, 0, [int(code), message]))
        self.writer.flush()
        await self.sess.conn.close()

    async def _restore(self, restore: Any) -> dict[str, list[str]]:
        """Restore the rooms and topics a reconnecting client names, through the checks of a first
        join, and replay what it missed on them; returns what it is back in.

        The client's word is a claim, never membership: a topic is re-subscribed through the
        ``kcprpc.Push/Subscribe`` method (the server's interceptors, the name and count limits),
        exactly as ``client.subscribe()`` would; rooms are server-side membership, so only the
        application's ``on_restore`` hook may join them again (without one, none is). A claim over
        the limits (``max_rooms`` rooms, ``max_subscriptions`` topics) restores nothing."""
        server, sess = self.server, self.sess
        stats = server.stats
        claims = _restore_claims(restore, server.config)
        if claims is None:
            stats["restores_refused"] += 1
            return {"rooms": sorted(sess.rooms), "topics": sorted(sess.topics)}
        rooms, topics, offsets = claims
        for t in topics:
            if await self._resubscribe(t):
                stats["restored_topics"] += 1
            else:
                stats["restores_denied"] += 1
        if server.on_restore is not None and (rooms or topics):
            await _maybe_await(server.on_restore(sess, rooms, [t for t in topics if t in sess.topics]))
        denied = sum(1 for r in rooms if r not in sess.rooms)
        stats["restored_rooms"] += len(rooms) - denied
        stats["restores_denied"] += denied
        self._replay(offsets)
        return {"rooms": sorted(sess.rooms), "topics": sorted(sess.topics)}

    async def _resubscribe(self, topic: str) -> bool:
        """Subscribe this session to ``topic`` through the Subscribe method's whole path (request
        validation, interceptors, handler): True when it is subscribed."""
        server, sess = self.server, self.sess
        entry = server._methods.get(_SUBSCRIBE)
        if entry is None:
            return False
        spec, handler = entry
        ctx = ServerContext(spec, dict(sess.metadata), sess, None, None)
        token = _current.set(ctx)
        try:
            ctx.request = req = spec.load_request({"topic": topic})
            await server._through_interceptors(ctx, handler, req)
        except (RpcError, ValidationError):
            return False
        except Exception:
            log.exception("restoring topic %r failed", topic)
            return False
        finally:
            _current.reset(token)
        return topic in sess.topics

    def _replay(self, offsets: dict[str, Any]) -> None:
        """Replay what the client missed on the rooms and topics it is back in."""
        sess = self.sess
        keys = {room_key(r) for r in sess.rooms} | {topic_key(t) for t in sess.topics}
        for key, off in offsets.items():
            if (
                key in keys
                and isinstance(off, list)
                and len(off) == 2
                and all(isinstance(x, int) for x in off)
            ):
                self.server.push.replay(sess, key, off[0], off[1])

    def pause(self) -> Awaitable[None] | None:
        """Stop reading a call stream while its call has too many unread requests."""
        if self.is_control:
            return None  # never stall the control stream: calls on it share it
        for call in self.calls.values():  # a call stream carries one call
            if call.inbound is not None:
                return self.sess.parking.pause(call.inbound, call.overflow)
        return None

    def on_eof(self) -> None:
        for call in list(self.calls.values()):
            if call.inbound is not None:
                call.inbound.put(_END)
            if not self.is_control:
                call.cancel(_CLIENT)
        if self.is_control:
            for call in list(self.calls.values()):
                call.cancel(_CLIENT)
        if not self.is_control and not self.calls:
            self.writer.close()

    # ---------------------------------------------------------------- calls
    def _trailer(self, cid: int, status: Status, message: str, details: Any = None, md: Any = None) -> None:
        self.writer.send(encode_frame(TRAILER, cid, [int(status), message, details, md]))

    def _on_call(self, cid: int, body: Any, cost: int = 0) -> bool:
        """Admit or refuse a CALL; True when the call was started and keeps ``cost`` (the decode
        budget its body holds) until it ends."""
        server = self.server
        if body is OVERSIZED:
            self._trailer(cid, Status.RESOURCE_EXHAUSTED, "message larger than max_message_size")
            return False
        if body is UNDECODABLE or not isinstance(body, list) or len(body) != 5:
            if isinstance(body, Refused):  # a receive budget refused it (not decoded)
                self._trailer(cid, Status.RESOURCE_EXHAUSTED, body.reason)
                return False
            server.stats["bad_frames"] += 1
            self._trailer(cid, Status.INVALID_ARGUMENT, "malformed call frame")
            return False
        method, md, timeout_ms, flags, payload = body
        entry = server._methods.get(method) if isinstance(method, str) else None
        if entry is None:
            self._trailer(cid, Status.UNIMPLEMENTED, f"unknown method {method!r}")
            return False
        if cid in self.calls:
            server.stats["bad_frames"] += 1
            return False
        spec, handler = entry
        sess = self.sess
        if server._closing or not sess.ready:
            self._trailer(
                cid, Status.UNAVAILABLE, "server shutting down" if server._closing else "no handshake"
            )
            return False
        if sess.active_calls >= server.config.max_concurrent_calls:
            self._trailer(cid, Status.RESOURCE_EXHAUSTED, "too many concurrent calls")
            return False
        streaming = spec.streams_responses
        if streaming and len(sess.topics) + sess.streaming_calls >= server.config.max_subscriptions:
            self._trailer(cid, Status.RESOURCE_EXHAUSTED, "too many subscriptions")
            return False
        if spec.kind is MethodKind.NOTIFY:
            self._trailer(cid, Status.UNIMPLEMENTED, "notify methods take no calls")
            return False
        call = _ServerCall(cid, self.writer)
        call.cost = cost
        deadline = None
        if isinstance(timeout_ms, (int, float)) and timeout_ms >= 0:
            deadline = self.loop.time() + timeout_ms / 1000.0
            call.timer = self.loop.call_at(deadline, call.cancel, _DEADLINE)
        ctx = call.ctx = ServerContext(spec, md if isinstance(md, dict) else {}, sess, deadline, call)
        if spec.streams_requests:
            call.inbound = Inbox(budget=sess.receive.decode)
        self.calls[cid] = call
        sess.calls.add(call)
        sess.active_calls += 1
        if streaming:
            sess.streaming_calls += 1
        server.stats["calls_started"] += 1
        has_payload = bool(flags & codec.FLAG_END)
        call.task = self.loop.create_task(self._run(call, ctx, handler, payload if has_payload else None))
        return True

    async def _run(self, call: _ServerCall, ctx: ServerContext, handler: Handler, payload: Any) -> None:
        call.started = True
        _current.set(ctx)
        spec = ctx.spec
        server = self.server
        w = self.writer
        cid = call.cid
        try:
            try:
                if spec.streams_requests:
                    req: Any = self._request_iter(call, spec)
                elif spec.has_request:
                    req = ctx.request = spec.load_request(payload)
                else:
                    req = None
            except ValidationError as e:
                raise _bad_request(e) from None
            if spec.streams_responses:
                if server.interceptors:
                    await chain_server(
                        server.interceptors, ctx, lambda: self._stream_out(call, ctx, handler, req)
                    )
                else:
                    await self._stream_out(call, ctx, handler, req)
                self._trailer(cid, Status.OK, "", None, ctx._trailing_md)
            else:
                result = await server._through_interceptors(ctx, handler, req)
                try:
                    out = spec.dump_response(result)
                except Exception:
                    log.exception("%s: cannot serialize the response", spec.wire_name)
                    raise RpcError(Status.INTERNAL, "response serialization failed") from None
                frame = encode_frame(REPLY, cid, [out, ctx._initial_md, ctx._trailing_md])
                if len(frame) - codec.HEADER_SIZE > server.config.max_message_size:
                    raise RpcError(Status.RESOURCE_EXHAUSTED, "response larger than max_message_size")
                w.send(frame)
            server.stats["calls_ok"] += 1
        except RpcError as e:
            server.stats["calls_failed"] += 1
            md = {**(ctx._trailing_md or {}), **e.trailing_metadata} or None
            self._trailer(cid, e.status, e.message, e.details, md)
        except asyncio.CancelledError:
            server.stats["calls_cancelled"] += 1
            if call.reason == _DEADLINE:
                self._trailer(cid, Status.DEADLINE_EXCEEDED, "deadline exceeded")
            elif call.reason == _SHUTDOWN:
                self._trailer(cid, Status.UNAVAILABLE, "server shutting down")
            elif call.reason == _OVERFLOW:
                self._trailer(cid, Status.RESOURCE_EXHAUSTED, "too many unread messages")
            elif call.reason == _REFUSED:
                self._trailer(cid, Status.RESOURCE_EXHAUSTED, call.refusal)
            else:
                self._trailer(cid, Status.CANCELLED, "cancelled")
        except Exception:
            server.stats["calls_failed"] += 1
            log.exception("handler %s raised", spec.wire_name)
            self._trailer(cid, Status.INTERNAL, "internal error")
        finally:
            if call.timer is not None:
                call.timer.cancel()
            self.calls.pop(cid, None)
            sess = self.sess
            if call.cost:  # the request body's decode budget
                self.decode.held -= call.cost
                call.cost = 0
            if call.inbound is not None:
                call.inbound.release_all()
            sess.calls.discard(call)
            sess.active_calls -= 1
            if spec.streams_responses:
                sess.streaming_calls -= 1
            if not self.is_control:
                self.writer.close()

    async def _stream_out(self, call: _ServerCall, ctx: ServerContext, handler: Handler, req: Any) -> None:
        spec = ctx.spec
        w = self.writer
        cid = call.cid
        it = spec.invoke(handler, req)
        if inspect.isawaitable(it):
            it = await it
        if ctx._initial_md:
            w.send(encode_frame(HEADERS, cid, ctx._initial_md))
            ctx._initial_md = None
        dump = spec.dump_response
        high = self.server.config.stream_high_water
        limit = self.server.config.max_message_size
        async for item in it:
            if ctx._initial_md:
                w.send(encode_frame(HEADERS, cid, ctx._initial_md))
                ctx._initial_md = None
            frame = encode_frame(MSG, cid, dump(item))
            if len(frame) - codec.HEADER_SIZE > limit:
                raise RpcError(Status.RESOURCE_EXHAUSTED, "response larger than max_message_size")
            w.send(frame)
            pending = w.pending_bytes
            # a tick's frames past the high-water mark, or (checked on the first frame of a tick)
            # a stream that still holds that much unsent: wait (the stream's window is closed)
            if pending >= high or (pending == len(frame) and w.stream_backlog() >= high):
                await w.drain()
        if ctx._initial_md:
            w.send(encode_frame(HEADERS, cid, ctx._initial_md))

    async def _request_iter(self, call: _ServerCall, spec: MethodSpec) -> AsyncIterator[Any]:
        q = call.inbound
        assert q is not None
        load = spec.load_request
        while True:
            item = await q.get()
            if item is _END:
                return
            if item is OVERSIZED:
                raise RpcError(Status.RESOURCE_EXHAUSTED, "message larger than max_message_size")
            try:
                yield load(item)
            except ValidationError as e:
                raise _bad_request(e) from None
