"""The RPC client: typed stubs, calls of every kind, events, heartbeats and reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast, overload

from pydantic import ValidationError

from kcprpc import codec
from kcprpc.calls import StreamCall, UnaryCall, _bad_response, _ClientCall, _Stub, _trailer_error
from kcprpc.codec import (
    CALL,
    END,
    EVENT,
    GOAWAY,
    HELLO,
    MSG,
    NOTIFY,
    PING,
    PONG,
    ROOMS,
    WELCOME,
    Frame,
    encode_frame,
)
from kcprpc.config import Transport
from kcprpc.errors import RpcError, UsageError
from kcprpc.heartbeat import Heartbeat, HeartbeatAction, HeartbeatConfig, ReconnectPolicy
from kcprpc.interceptors import ClientCallDetails, ClientInterceptor, chain_client
from kcprpc.push import ResumeFailed, route, send_datagram
from kcprpc.service import MethodKind, MethodSpec, event_info, method_spec, raw_method, service_spec
from kcprpc.status import Status
from kcprpc.transport import (
    INBOX_LIMIT,
    RECEIVE_COUNTERS,
    ByteStream,
    Connection,
    FrameWriter,
    ParkingLot,
    ReceiveLimits,
    close_status,
    read_frames,
    receive_limit_defaults,
    spawn,
)

log = logging.getLogger("kcprpc.client")

__all__ = ["Client", "ClientConfig", "RawEvent", "StreamCall", "UnaryCall", "connect"]

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

Connector = Callable[[], Awaitable[Connection]]


@dataclass(frozen=True)
class ClientConfig:
    """Client behaviour. ``unary_framing``: ``"shared"`` sends unary calls on the control stream with
    call ids (cheap), ``"stream"`` opens a mux stream per call. ``stream_framing`` is the same choice
    for streaming calls (own streams give per-call flow control)."""

    max_message_size: int = codec.DEFAULT_MAX_MESSAGE_SIZE
    heartbeat: HeartbeatConfig | None = field(
        default_factory=lambda: HeartbeatConfig(interval=1.0, timeout=5.0)
    )
    reconnect: ReconnectPolicy | None = None
    unary_framing: Literal["shared", "stream"] = "shared"
    stream_framing: Literal["shared", "stream"] = "stream"
    default_timeout: float | None = None
    connect_timeout: float = 5.0
    metadata: Mapping[str, Any] = field(default_factory=dict)
    wait_for_ready: bool = False  # calls made while (re)connecting wait for the link (up to their timeout)
    # -- receive-side memory per connection, as the server's (docs/rpc.md, "Flow control and memory"):
    # decoded messages held unread (None: 8 MiB, at least 2 * max_message_size); frames received in
    # part (None: max_message_size + 9 + 256 KiB); a partial frame with no new byte for this long is
    # dropped (None: never)
    max_decoded_bytes: int | None = None
    max_partial_frame_bytes: int | None = None
    partial_frame_timeout: float | None = 10.0

    def __post_init__(self) -> None:
        self.receive_limits()

    def receive_limits(self) -> tuple[int, int]:
        """The effective ``(max_decoded_bytes, max_partial_frame_bytes)``."""
        return receive_limit_defaults(
            self.max_message_size, self.max_decoded_bytes, self.max_partial_frame_bytes, self.partial_frame_timeout
        )


class _Link:
    """One physical connection and its control stream."""

    def __init__(self, client: Client, conn: Connection, control: ByteStream) -> None:
        self.client = client
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        self.writer = FrameWriter(control)
        self.control = control
        self.calls: dict[int, _ClientCall] = {}
        self._next = 0
        self.closed = False
        self.goaway = False
        self.peer_reason: str | None = None  # secure mode: why the server closed the transport
        self.peer_error: RpcError | None = None  # the status the server ended the connection with
        self.session_id: str | None = None
        self.welcome: asyncio.Future[Any] = self.loop.create_future()
        hb = client.config.heartbeat
        self.hb = Heartbeat(hb, self.now()) if hb is not None else None
        self.tasks: list[asyncio.Task[Any]] = []
        self._max_dgram = conn.max_datagram_size
        self.parking = ParkingLot(getattr(conn, "max_paused_streams", None), INBOX_LIMIT)
        decoded, partial = client.config.receive_limits()
        self.receive = ReceiveLimits(
            max_decoded_bytes=decoded,
            max_partial_frame_bytes=partial,
            partial_frame_timeout=client.config.partial_frame_timeout,
            held_types=(),  # per body only: a hostile server is out of scope, streams pay nothing
            parking=self.parking,
            counters=client.counters,
        )

    def now(self) -> int:
        return int(self.loop.time() * 1000)

    def next_id(self) -> int:
        self._next = (self._next + 1) & 0xFFFFFFFF or 1
        return self._next

    # Peer protocol (push.route)
    def send_frame(self, frame: bytes, unreliable: bool = False) -> None:
        self.writer.send(frame)

    def send_datagram(self, frame: bytes) -> bool:
        return not self.closed and send_datagram(self.conn, frame, self._max_dgram)

    def on_frames(self, frames: list[Frame], costs: list[int]) -> None:
        """A batch of frames. The client's decoder charges no frame type to its budget (each body is
        only checked against ``max_decoded_bytes`` on its own), so ``costs`` is empty."""
        if self.hb is not None:
            self.hb.last_receive = self.now()
        calls = self.calls
        for ftype, cid, body in frames:
            if cid:
                call = calls.get(cid)
                if call is not None:
                    call.on_frame(ftype, body)
                continue
            if ftype == EVENT:
                self.client._handle_event(body, False)
            elif ftype == PONG:
                if self.hb is not None and isinstance(body, list) and body and isinstance(body[0], int):
                    self.hb.on_pong(body[0], self.now())
            elif ftype == PING:
                nonce = body[0] if isinstance(body, list) and body else 0
                self.writer.send(encode_frame(PONG, 0, [nonce]))
            elif ftype == ROOMS:
                if isinstance(body, list) and len(body) == 2 and isinstance(body[1], str):
                    if body[0]:
                        self.client.rooms.add(body[1])
                    else:
                        self.client.rooms.discard(body[1])
            elif ftype == WELCOME:
                if not self.welcome.done():
                    self.welcome.set_result(body)
            elif ftype == GOAWAY:
                if not self.welcome.done():  # refused during the handshake
                    err, _ = _trailer_error([*body, None, None] if isinstance(body, list) else body)
                    self.welcome.set_exception(err or RpcError(Status.UNAVAILABLE, "refused"))
                self.client._on_goaway(self)

    async def read_control(self) -> None:
        with contextlib.suppress(ConnectionError, OSError, EOFError, asyncio.IncompleteReadError):
            await read_frames(
                self.control,
                self.on_frames,
                max_message_size=self.client.config.max_message_size,
                limits=self.receive,
                control=_always,
            )
        self.client._link_lost(self, self.peer_reason or "connection closed")

    async def read_datagrams(self) -> None:
        conn = self.conn
        while True:
            try:
                data = await conn.recv_datagram()
            except (ConnectionError, OSError, EOFError):
                return
            try:
                ftype, _cid, body = codec.decode_datagram(data)
            except Exception:
                continue
            if self.hb is not None:
                self.hb.last_receive = self.now()
            if ftype == EVENT:
                self.client._handle_event(body, True)
            elif ftype == GOAWAY and self.welcome.done():
                # the server ends the connection now, with a status (a slow consumer: its stream
                # is backed up, so this comes as a datagram): calls in flight fail with it
                err, _ = _trailer_error([*body, None, None] if isinstance(body, list) else body)
                if err is not None and not self.closed:
                    self.peer_error = err
                    self.client._link_lost(self, f"closed by the server: {err.status.name}: {err.message}")

    async def heartbeat(self) -> None:
        hb = self.hb
        assert hb is not None
        while not self.closed:
            action, nonce = hb.poll(self.now())
            if action is HeartbeatAction.DEAD:
                self.client._link_lost(self, "peer did not answer heartbeats")
                return
            if action is HeartbeatAction.PING:
                rtt_us = int(hb.srtt_ms * 1000) if hb.srtt_ms is not None else None
                self.writer.send(encode_frame(PING, 0, [nonce, rtt_us]))
            await asyncio.sleep(hb.next_wakeup(self.now()) / 1000.0)

    async def open_call_writer(self) -> tuple[FrameWriter, list[_ClientCall]]:
        stream = await self.conn.open_stream()
        w = FrameWriter(stream)
        box: list[_ClientCall] = []
        t = self.loop.create_task(self._read_call_stream(stream, box))
        self.tasks.append(t)
        t.add_done_callback(self._forget_task)
        return w, box

    def _forget_task(self, t: asyncio.Task[Any]) -> None:
        with contextlib.suppress(ValueError):
            self.tasks.remove(t)

    async def _read_call_stream(self, stream: ByteStream, box: list[_ClientCall]) -> None:
        def pause() -> Awaitable[None] | None:
            # a slow consumer of a streaming call stops the reading of its stream: the mux window
            # then pushes back on the server (as long as the connection's parking budget allows)
            if box and box[0].queue is not None:
                return self.parking.pause(box[0].queue, box[0].overflow)
            return None

        with contextlib.suppress(ConnectionError, OSError, EOFError, asyncio.IncompleteReadError):
            await read_frames(
                stream,
                self.on_frames,
                max_message_size=self.client.config.max_message_size,
                pause=pause,
                limits=self.receive,
            )

    def shutdown(self, err: RpcError) -> None:
        if self.closed:
            return
        self.closed = True
        self.receive.close()
        for call in list(self.calls.values()):
            call.fail(err)
        self.calls.clear()
        for t in self.tasks:
            t.cancel()


def _always() -> bool:
    return True


EventHandler = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class RawEvent:
    """A pushed event as it came off the wire (see :meth:`Client.on_raw_event`): the event's wire name,
    its payload as a plain msgpack value, and for room and topic messages the broker key
    (``"room:<name>"`` / ``"topic:<name>"``), sequence number and epoch."""

    name: str
    payload: Any
    key: str | None
    seq: int | None
    epoch: int | None
    unreliable: bool  # came as an OOB datagram

    @property
    def topic(self) -> str | None:
        """The topic it was published on, if any."""
        return self.key[6:] if self.key is not None and self.key.startswith("topic:") else None

    @property
    def room(self) -> str | None:
        """The room it was sent to, if any."""
        return self.key[5:] if self.key is not None and self.key.startswith("room:") else None


class Client:
    """A connection to a server. Use ``kcprpc.connect(...)`` or :mod:`kcprpc.testing` to make one."""

    def __init__(
        self,
        connector: Connector,
        *,
        config: ClientConfig | None = None,
        interceptors: Sequence[ClientInterceptor] = (),
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._connector = connector
        self.config = config or ClientConfig()
        self.interceptors = tuple(interceptors)
        self._rng = rng
        self._link: _Link | None = None
        self._closing = False
        self._handlers: dict[str, list[tuple[Any, EventHandler]]] = {}
        self._queues: dict[str, list[tuple[Any, asyncio.Queue[Any]]]] = {}
        self.rooms: set[str] = set()
        self.topics: set[str] = set()
        self.topic_offsets: dict[str, tuple[int, int]] = {}  # broker key -> (epoch, last seq)
        self._reconnect_task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.reconnects = 0
        self.on_reconnect: Callable[[Client], Any] | None = None
        self.on_disconnect: Callable[[Client, str], Any] | None = None
        # secure mode: on_path_change(client, old, new) when the server's address as seen by this
        # client changes (the server moved; the client's own moves are seen by the server)
        self.on_path_change: Callable[[Client, Any, Any], Any] | None = None
        self.path_changes = 0
        self.events_dropped = 0
        self.notifications_dropped = 0  # notify() while not connected (docs/rpc.md, Heartbeats and reconnects)
        self.events_stale = 0  # unreliable events dropped because a newer one had arrived
        # receive budgets (kcprpc.transport.ReceiveLimits), over all connections of this client
        self.counters: dict[str, int] = dict.fromkeys(RECEIVE_COUNTERS, 0)
        self._raw_handlers: list[Callable[[RawEvent], Any]] = []
        self._latest: dict[str, tuple[int, int]] = {}
        self._background: set[asyncio.Future[Any]] = set()
        self._stubs: dict[type, _Stub] = {}

    def _spawn(self, aw: Awaitable[Any]) -> None:
        spawn(self._background, aw)

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> Client:
        """Open the connection (once)."""
        if self._link is None:
            await self._connect_once(restore=False)
        return self

    def __await__(self) -> Generator[Any, None, Client]:
        return self.connect().__await__()

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connect_once(self, restore: bool) -> None:
        timeout = self.config.connect_timeout
        try:
            # a secure handshake gives up after connect_timeout with its own reason; the slack lets
            # that reason (not this generic one) reach the caller
            conn = await asyncio.wait_for(self._connector(), timeout + 1.0)
        except asyncio.TimeoutError:
            raise RpcError(Status.UNAVAILABLE, f"no connection to the server within {timeout:g} s") from None
        link: _Link | None = None
        try:
            control = await conn.open_stream()
            link = _Link(self, conn, control)
            add_cb = getattr(conn, "add_event_callback", None)
            if add_cb is not None:
                add_cb(lambda ev, lk=link: self._on_transport_event(lk, ev))
            hello: dict[str, Any] = {"v": codec.PROTOCOL_VERSION, "md": dict(self.config.metadata)}
            if restore:
                keys = {f"room:{r}" for r in self.rooms} | {f"topic:{t}" for t in self.topics}
                offsets = {k: list(v) for k, v in self.topic_offsets.items() if k in keys}
                hello["restore"] = {
                    "rooms": sorted(self.rooms),
                    "topics": sorted(self.topics),
                    "offsets": offsets,
                }
            link.writer.send(encode_frame(HELLO, 0, hello))
            reader = link.loop.create_task(link.read_control())
            link.tasks.append(reader)
            try:
                welcome = await asyncio.wait_for(asyncio.shield(link.welcome), self.config.connect_timeout)
            except asyncio.TimeoutError:
                raise RpcError(
                    Status.UNAVAILABLE,
                    f"no answer from the server within {self.config.connect_timeout:g} s",
                ) from None
        except BaseException:
            if link is not None:
                link.shutdown(RpcError(Status.UNAVAILABLE, "connect failed"))
            abort = getattr(conn, "abort", None)  # the peer never answered: nothing to linger for
            await (abort() if callable(abort) else conn.close())
            raise
        if isinstance(welcome, dict):
            sid = welcome.get("sid")
            link.session_id = sid if isinstance(sid, str) else None
            if restore:
                self._restored(welcome.get("restored"))
        link.tasks.append(link.loop.create_task(link.read_datagrams()))
        old = self._link
        if link.hb is not None:
            if old is not None and old.hb is not None and link.hb.srtt_ms is None:
                link.hb.srtt_ms = old.hb.srtt_ms  # keep showing the last RTT until the new link measures
            link.tasks.append(link.loop.create_task(link.heartbeat()))
        self._link = link
        self._connected.set()

    async def close(self) -> None:
        """Close the connection; in-flight calls fail with CANCELLED."""
        self._closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        link = self._link
        if link is not None:
            link.writer.flush()
            link.shutdown(RpcError(Status.CANCELLED, "client closed"))
            await link.conn.close()
        self._connected.clear()

    @property
    def connected(self) -> bool:
        """True while a connection is up."""
        return self._link is not None and not self._link.closed

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until (re)connected."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    @property
    def session_id(self) -> str | None:
        """The server's id for this connection."""
        return self._link.session_id if self._link is not None else None

    @property
    def rtt_ms(self) -> float | None:
        """Smoothed heartbeat round-trip time in milliseconds (None before the first pong)."""
        link = self._link
        return link.hb.srtt_ms if link is not None and link.hb is not None else None

    @property
    def last_rtt_ms(self) -> float | None:
        """The latest heartbeat RTT sample in milliseconds."""
        link = self._link
        return link.hb.last_rtt_ms if link is not None and link.hb is not None else None

    def transport_stats(self) -> dict[str, int]:
        """This end's counters of its connection, read locally (no round trip; :meth:`stats` asks
        the server for its side). Over KCP: the session's counters (``out_pkts``, ``in_segs``,
        ``retrans_segs``, ``fast_retrans_segs``, ``lost_segs``, ``fec_recovered`` ...), its RTT
        figures in milliseconds (``srtt``, ``rttvar``, ``rto``), window state (``cwnd``,
        ``snd_wnd``, ``rcv_wnd``, ``rmt_wnd``, ``waitsnd``, ``mtu``), the mux counters
        (``mux_*``) and in secure mode the ``secure_*`` counters; in memory, the pipe's counters.

        The counters are those of the current connection (after a reconnect they start again);
        while disconnected, those of the last one; ``{}`` before the first connect. Only integer
        values are returned."""
        link = self._link
        if link is None:
            return {}
        try:
            raw = link.conn.stats()
        except Exception:  # a transport torn down under us: nothing left to read
            return {}
        return {k: int(v) for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def _link_lost(self, link: _Link, reason: str) -> None:
        if link.closed:
            return
        link.shutdown(link.peer_error or RpcError(Status.UNAVAILABLE, reason))
        self._spawn(link.conn.close())
        current = self._link is link
        if current:
            self._connected.clear()
        if self._closing or not current:
            return  # an old link (replaced after a GOAWAY) ending changes nothing
        if self.on_disconnect is not None:
            self.on_disconnect(self, reason)
        self._start_reconnect()

    def _start_reconnect(self) -> None:
        if self.config.reconnect is not None and (
            self._reconnect_task is None or self._reconnect_task.done()
        ):
            self._reconnect_task = asyncio.ensure_future(self._reconnect_loop(self.config.reconnect))

    def _on_goaway(self, link: _Link) -> None:
        # The server drains: calls in flight on this link finish there; new calls fail fast with
        # UNAVAILABLE until a new connection is up (dialled now when a reconnect policy is set).
        # The one drain path, for the RPC GOAWAY frame and for a secure transport GOAWAY alike.
        if link.goaway:
            return
        link.goaway = True
        if self._link is link and not self._closing:
            self._connected.clear()
            self._start_reconnect()

    def _on_transport_event(self, link: _Link, ev: Any) -> None:
        """Secure-mode events of the KCP session under ``link`` (runs in the receive path)."""
        from kcp.secure import ConnectionClosed, GoAwayReceived, PathChanged
        from kcp.secure.connection import reason_text

        if isinstance(ev, GoAwayReceived):
            # a transport GOAWAY (a kcp-level listener.goaway()) drains like the RPC GOAWAY frame
            self._on_goaway(link)
        elif isinstance(ev, ConnectionClosed) and ev.by_peer:
            # data already received is still read to the end; the link ends with this reason
            status = close_status(ev.code)
            if status is not None:  # the server ended the RPC connection with a status
                link.peer_error = RpcError(status, ev.message or status.name)
                link.peer_reason = f"closed by the server: {status.name}: {ev.message}"
            else:
                link.peer_reason = "closed by the server: " + reason_text(ev.code, ev.message)
        elif isinstance(ev, PathChanged):
            self.path_changes += 1
            if self.on_path_change is not None:
                try:
                    r = self.on_path_change(self, ev.old, ev.new)
                    if inspect.isawaitable(r):
                        self._spawn(r)
                except Exception:
                    log.exception("on_path_change handler raised")

    def rebind(self) -> Any:
        """Secure mode: move this connection to a new local UDP socket, as a phone that changes
        networks does; calls in flight continue, the server sees a path change. Returns the new
        local address. Raises :class:`UsageError` without a secure KCP connection."""
        link = self._link
        rebind = getattr(link.conn, "rebind", None) if link is not None and not link.closed else None
        if rebind is None:
            raise UsageError("rebind() needs an open secure-mode KCP connection")
        return rebind()

    async def _reconnect_loop(self, policy: ReconnectPolicy) -> None:
        attempt = 0
        while not self._closing:
            if policy.max_attempts is not None and attempt >= policy.max_attempts:
                return
            await asyncio.sleep(policy.delay(attempt, self._rng))
            attempt += 1
            try:
                await self._connect_once(restore=policy.restore)
            except (ConnectionError, OSError, asyncio.TimeoutError, EOFError, RpcError):
                continue
            self.reconnects += 1
            if self.on_reconnect is not None:
                r = self.on_reconnect(self)
                if inspect.isawaitable(r):
                    await r
            return

    def _require_link(self) -> _Link:
        link = self._link
        if link is None or link.closed or link.goaway:
            if self._closing:
                raise RpcError(Status.CANCELLED, "client closed")
            raise RpcError(Status.UNAVAILABLE, "not connected")
        return link

    def _timeout(self, timeout: float | None) -> float | None:
        return self.config.default_timeout if timeout is None else timeout

    # ------------------------------------------------------------------ calls
    def stub(
        self, service: type[S], *, timeout: float | None = None, metadata: Mapping[str, Any] | None = None
    ) -> S:
        """A client for ``service``, typed as the service class itself so that calls are type-checked.

        Stubs without options are cached, so calling ``client.stub(Svc)`` per call is cheap.
        """
        if timeout is None and not metadata:
            stub = self._stubs.get(service)
            if stub is None:
                stub = self._stubs[service] = _Stub(self, service, None, None)
            return cast(S, stub)
        return cast(S, _Stub(self, service, timeout, metadata))

    def call(
        self,
        method: Callable[[Any, T], Awaitable[R]],
        request: T,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> UnaryCall[R]:
        """A unary call with per-call options and access to response metadata::

        call = client.call(Greeter.hello, HelloRequest(name="x"), timeout=1, metadata={"k": "v"})
        reply = await call
        call.trailing_metadata
        """
        call = self.invoke(method_spec(method), request, kind="unary", timeout=timeout, metadata=metadata)
        return cast(UnaryCall[R], call)

    def stream(
        self,
        method: Callable[[Any, T], AsyncIterator[R]],
        request: T,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> StreamCall[R]:
        """A server-streaming or bidi call with per-call options, typed as a :class:`StreamCall`: an
        async iterator of the responses and an async context manager (leaving the block early
        cancels the server's handler), with ``initial_metadata`` / ``trailing_metadata``::

            async with client.stream(Game.watch, JoinRequest(...), timeout=5) as snaps:
                async for snap in snaps: ...

        ``request`` is the request (bidi: the async iterable of requests). A stub's streaming
        methods are typed as the service declares them (``AsyncIterator[...]``), so ``async for``
        over them type-checks but ``async with`` does not: use this for that.
        Raises :class:`UsageError` for a method whose responses do not stream."""
        spec = method_spec(method)
        if not spec.streams_responses:
            raise UsageError(f"{spec.wire_name} is {spec.kind.value}: stream() takes server_stream or bidi")
        call = self.invoke(spec, request, timeout=timeout, metadata=metadata)
        return cast(StreamCall[R], call)

    def invoke(
        self,
        method: MethodSpec | str,
        request: Any = None,
        *,
        kind: MethodKind | str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call a method without a stub class: by wire name (``"game.v1.Game/join"``, with its
        ``kind``, default unary; requests and responses are then plain msgpack values, not validated,
        as :func:`kcprpc.service.raw_method` makes them) or by :class:`MethodSpec`. ``request`` is the
        whole request (for client streaming and bidi: an async iterable of requests).

        Returns, by kind: unary and client streaming, a :class:`UnaryCall` (await it for the
        response; metadata after); server streaming and bidi, a :class:`StreamCall` (iterate it,
        ``async with`` to end early); notify, ``None`` (sent)::

            reply = await client.invoke("quickstart.Greeter/hello", {"name": "ann"})
            async for n in client.invoke("quickstart.Greeter/count", {"to": 3}, kind="server_stream"): ...
        """
        if isinstance(method, MethodSpec):
            spec = method
            if kind is not None and MethodKind(kind) is not spec.kind:
                raise UsageError(f"{spec.wire_name} is {spec.kind.value}, not {MethodKind(kind).value}")
        else:
            spec = raw_method(method, kind or MethodKind.UNARY)
        k = spec.kind
        if k is MethodKind.UNARY:
            return UnaryCall(lambda uc: self._unary(spec, request, timeout, metadata, uc))
        if k is MethodKind.CLIENT_STREAM:
            return UnaryCall(lambda uc: self._unary(spec, request, timeout, metadata, uc, True))
        if k is MethodKind.SERVER_STREAM:
            return StreamCall(self, spec, request, timeout, metadata)
        if k is MethodKind.BIDI:
            return StreamCall(self, spec, None, timeout, metadata, request)
        self.notify(spec, request, metadata=metadata)
        return None

    async def _begin(
        self,
        spec: MethodSpec,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
        end: bool,
    ) -> _ClientCall:
        link = self._link
        if (link is None or link.closed or link.goaway) and self.config.wait_for_ready and not self._closing:
            t0 = asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self._connected.wait(), timeout)
            except asyncio.TimeoutError:
                raise RpcError(
                    Status.DEADLINE_EXCEEDED, "deadline exceeded while waiting for a connection"
                ) from None
            if timeout is not None:
                timeout = max(0.0, timeout - (asyncio.get_running_loop().time() - t0))
        link = self._require_link()
        own = (
            self.config.stream_framing
            if spec.streams_responses or spec.streams_requests
            else self.config.unary_framing
        ) == "stream"
        box: list[_ClientCall] | None = None
        if own:
            writer, box = await link.open_call_writer()
        else:
            writer = link.writer
        cid = link.next_id()
        call = _ClientCall(link, cid, spec, writer, own)
        if box is not None:
            box.append(call)
        payload = spec.dump_request(request) if end and spec.has_request else None
        timeout_ms = None if timeout is None else max(0, int(timeout * 1000))
        frame = encode_frame(
            CALL,
            cid,
            [
                spec.wire_name,
                dict(metadata) if metadata else None,
                timeout_ms,
                codec.FLAG_END if end else 0,
                payload,
            ],
        )
        if len(frame) - codec.HEADER_SIZE > self.config.max_message_size:
            if own:
                writer.close()
            raise RpcError(Status.RESOURCE_EXHAUSTED, "request larger than max_message_size")
        link.calls[cid] = call
        if timeout is not None:
            call.timer = link.loop.call_later(timeout, call.expire)
        writer.send(frame)
        return call

    async def _unary(
        self,
        spec: MethodSpec,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
        uc: UnaryCall[Any] | None,
        streaming: bool = False,
    ) -> Any:
        """A unary call, or with ``streaming`` a client-streaming one (``request`` is then the
        async iterable of requests), through the client interceptors."""
        timeout = self._timeout(timeout)
        if self.interceptors:
            details = ClientCallDetails(spec, request, dict(metadata or {}), timeout)

            async def last(d: ClientCallDetails) -> Any:
                return await self._unary_core(d.method, d.request, d.timeout, d.metadata, uc, streaming)

            return await chain_client(self.interceptors, details, last)
        return await self._unary_core(spec, request, timeout, metadata, uc, streaming)

    async def _unary_core(
        self,
        spec: MethodSpec,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
        uc: UnaryCall[Any] | None,
        streaming: bool,
    ) -> Any:
        call = await self._begin(spec, None if streaming else request, timeout, metadata, not streaming)
        sender = asyncio.ensure_future(self._send_requests(call, request)) if streaming else None
        try:
            payload = await call.fut
        except asyncio.CancelledError:
            call.cancel(RpcError(Status.CANCELLED, "cancelled by the client"))
            raise
        finally:
            if sender is not None:
                sender.cancel()
            if uc is not None:
                uc.initial_metadata = call.initial_md
                uc.trailing_metadata = call.trailing_md
        try:
            return spec.load_response(payload)
        except ValidationError as e:
            raise _bad_response(e) from None

    async def _send_requests(self, call: _ClientCall, requests: AsyncIterable[Any]) -> None:
        dump = call.spec.dump_request
        w = call.writer
        cid = call.cid
        try:
            async for item in requests:
                if call.done:
                    return
                w.send(encode_frame(MSG, cid, dump(item)))
                if w.pending_bytes >= 64 * 1024:
                    await w.drain()
            if not call.done:
                w.send(encode_frame(END, cid, None))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the request iterator failed: cancel the call
            log.debug("request iterator of %s failed: %r", call.spec.wire_name, e)
            call.cancel(RpcError(Status.CANCELLED, f"request iterator raised {type(e).__name__}"))

    @overload
    def notify(
        self,
        method: Callable[[Any, T], Awaitable[None]],
        message: T,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> None: ...

    @overload
    def notify(
        self, method: MethodSpec, message: Any, *, metadata: Mapping[str, Any] | None = None
    ) -> None: ...

    def notify(
        self,
        method: MethodSpec | Callable[[Any, Any], Awaitable[None]],
        message: Any,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Fire-and-forget: send one message to a notify method (unreliable unless declared reliable).

        ``client.notify(Game.position, PositionUpdate(...))`` is type-checked like a call: the
        message must be the method's request type. Nothing comes back, so nothing fails: while the
        client is not connected (before ``connect()``, during a reconnect, after ``close()``) the
        message is dropped and counted in :attr:`notifications_dropped`; check :attr:`connected`
        first if that matters. A method that is not a notify method raises :class:`UsageError`."""
        spec = method if isinstance(method, MethodSpec) else method_spec(method)
        if spec.kind is not MethodKind.NOTIFY:
            raise UsageError(f"{spec.wire_name} is not a notify method")
        link = self._link
        if link is None or link.closed:
            self.notifications_dropped += 1  # fire-and-forget: counted, not raised
            return
        frame = encode_frame(
            NOTIFY, 0, [spec.wire_name, spec.dump_request(message), dict(metadata) if metadata else None]
        )
        route(link, frame, spec.delivery)

    # ------------------------------------------------------------------ events
    def on(self, event_type: type[T], handler: Callable[[T], Any]) -> Callable[[], None]:
        """Call ``handler(event)`` (sync or async) for each pushed ``event_type``; returns an unsubscribe function."""
        name, _, adapter = event_info(event_type)
        entry = (adapter, cast(EventHandler, handler))
        self._handlers.setdefault(name, []).append(entry)

        def off() -> None:
            with contextlib.suppress(ValueError, KeyError):
                self._handlers[name].remove(entry)

        return off

    def on_raw_event(self, handler: Callable[[RawEvent], Any]) -> Callable[[], None]:
        """Call ``handler(RawEvent)`` for every pushed event, of any type, before validation (after
        the duplicate and stale ones are dropped): for tools that know events only by wire name.
        Returns an unsubscribe function."""
        self._raw_handlers.append(handler)

        def off() -> None:
            with contextlib.suppress(ValueError):
                self._raw_handlers.remove(handler)

        return off

    async def events(self, event_type: type[T]) -> AsyncGenerator[T, None]:
        """Async iterator over pushed events of ``event_type`` (registered when iteration starts)."""
        name, _, adapter = event_info(event_type)
        q: asyncio.Queue[Any] = asyncio.Queue()
        entry = (adapter, q)
        self._queues.setdefault(name, []).append(entry)
        try:
            while True:
                yield cast(T, await q.get())
        finally:
            with contextlib.suppress(ValueError, KeyError):
                self._queues[name].remove(entry)

    def _restored(self, restored: Any) -> None:
        """After a reconnect: keep the rooms and topics the server says this client is back in, and
        tell the application of each one it lost (``ResumeFailed`` with reason ``"not restored"``)."""
        if not isinstance(restored, dict):
            return
        rooms, topics = restored.get("rooms"), restored.get("topics")
        back_rooms = {r for r in rooms if isinstance(r, str)} if isinstance(rooms, list) else set()
        back_topics = {t for t in topics if isinstance(t, str)} if isinstance(topics, list) else set()
        lost = [f"room:{r}" for r in sorted(self.rooms - back_rooms)]
        lost += [f"topic:{t}" for t in sorted(self.topics - back_topics)]
        self.rooms = back_rooms
        self.topics = back_topics
        for key in lost:
            epoch, seq = self.topic_offsets.pop(key, (0, 0))
            self._latest.pop(key, None)
            ev = ResumeFailed(key=key, epoch=epoch, last_seq=seq, reason="not restored")
            self._handle_event(["kcprpc.ResumeFailed", ev.model_dump(), None, None, None], False)

    def _handle_event(self, body: Any, unreliable: bool) -> None:
        if not isinstance(body, list) or len(body) != 5 or not isinstance(body[0], str):
            self.events_dropped += 1
            return
        name, payload, key, seq, epoch = body
        if isinstance(key, str) and isinstance(seq, int) and isinstance(epoch, int):
            # Reliable (stream) and unreliable (datagram) messages of one key share its sequence
            # numbers but are tracked apart: the stream's offset drives resume and drops replay
            # duplicates; datagrams are latest-wins (an older one arriving late is dropped).
            offsets = self._latest if unreliable else self.topic_offsets
            prev = offsets.get(key)
            if prev is not None and prev[0] == epoch and seq <= prev[1]:
                if unreliable:
                    self.events_stale += 1
                return
            offsets[key] = (epoch, seq)
        if self._raw_handlers:
            raw = RawEvent(
                name,
                payload,
                key if isinstance(key, str) else None,
                seq if isinstance(seq, int) else None,
                epoch if isinstance(epoch, int) else None,
                unreliable,
            )
            for raw_handler in list(self._raw_handlers):
                try:
                    raw_handler(raw)
                except Exception:
                    log.exception("raw event handler raised")
        for adapter, handler in self._handlers.get(name, ()):
            try:
                ev = adapter.validate_python(payload)
            except ValidationError:
                self.events_dropped += 1
                continue
            try:
                r = handler(ev)
                if inspect.isawaitable(r):
                    self._spawn(r)
            except Exception:
                log.exception("event handler for %s raised", name)
        for adapter, q in self._queues.get(name, ()):
            try:
                q.put_nowait(adapter.validate_python(payload))
            except ValidationError:
                self.events_dropped += 1

    async def subscribe(self, topic: str) -> None:
        """Subscribe to a topic; its events arrive through :meth:`on` / :meth:`events`. Restored on reconnect."""
        from kcprpc.health import PushService, SubscribeRequest

        await self._unary(
            service_spec(PushService).methods["Subscribe"], SubscribeRequest(topic=topic), None, None, None
        )
        self.topics.add(topic)

    async def unsubscribe(self, topic: str) -> None:
        """Unsubscribe from a topic."""
        from kcprpc.health import PushService, SubscribeRequest

        self.topics.discard(topic)
        await self._unary(
            service_spec(PushService).methods["Unsubscribe"], SubscribeRequest(topic=topic), None, None, None
        )

    async def health(self, service: str = "") -> str:
        """``SERVING``, ``NOT_SERVING`` or ``SERVICE_UNKNOWN``."""
        from kcprpc.health import HealthCheckRequest, HealthService

        r = await self._unary(
            service_spec(HealthService).methods["Check"],
            HealthCheckRequest(service=service),
            None,
            None,
            None,
        )
        return cast(str, r.status)

    async def stats(self) -> Any:
        """The server's ``kcprpc.Health/Stats`` answer (transport and server counters)."""
        from kcprpc.health import HealthService

        return await self._unary(service_spec(HealthService).methods["Stats"], None, None, None, None)


def connect(
    host: str,
    port: int,
    *,
    key: bytes | str | None = None,
    transport: Transport | None = None,
    config: ClientConfig | None = None,
    interceptors: Sequence[ClientInterceptor] = (),
) -> Client:
    """A client for a KCP server. ``async with kcprpc.connect(host, port, key="...") as client:`` or ``await``.

    ``transport`` describes the wire, the KCP session, the mux and the socket
    (:class:`kcprpc.Transport`; docs/rpc.md, "Wire modes"); the default is a secure wire.
    ``key="..."`` is the short form of ``transport=Transport(SecureWire(key="..."))`` (the shared
    passphrase, or a 32-byte PSK); give one or the other. In compat mode (a
    :class:`kcprpc.CompatWire`) FEC and the session settings must match the server's; in secure
    mode MTU, windows, FEC and the mux version are negotiated in the handshake (the client
    proposes, the server decides). ``config.connect_timeout`` bounds the secure handshake unless
    the wire's :class:`kcp.secure.SecureConfig` sets ``handshake_timeout_ms``. Reconnects (with
    ``config.reconnect``) dial again with the same transport.

    Connecting raises :class:`RpcError`: ``UNAVAILABLE`` when no answer comes within
    ``config.connect_timeout`` (in secure mode also a wrong passphrase or pinned key: the server
    stays silent to those), ``UNAUTHENTICATED`` for a refused token or a PSK that does not match a
    pinned server, ``FAILED_PRECONDITION`` for refused parameters, or the status an ``on_connect``
    hook raised. A transport this client cannot run raises :class:`UsageError` at once.
    """
    from kcprpc.config import described_transport, effective_transport

    described = described_transport(key, transport, where="kcprpc.connect")
    cfg = config or ClientConfig()
    run = effective_transport(described, side="client", handshake_timeout=cfg.connect_timeout)

    async def connector() -> Connection:
        from kcprpc.net import dial

        return await dial(host, port, run)

    return Client(connector, config=cfg, interceptors=interceptors)
