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
from typing import Any, Generic, Literal, TypeVar, cast

from pydantic import ValidationError

from kcprpc import codec
from kcprpc.codec import (
    CALL,
    CANCEL,
    END,
    EVENT,
    GOAWAY,
    HEADERS,
    HELLO,
    MSG,
    NOTIFY,
    PING,
    PONG,
    REPLY,
    ROOMS,
    TRAILER,
    WELCOME,
    Frame,
    encode_frame,
)
from kcprpc.errors import RpcError, UsageError
from kcprpc.heartbeat import Heartbeat, HeartbeatAction, HeartbeatConfig, ReconnectPolicy
from kcprpc.interceptors import ClientCallDetails, ClientInterceptor, chain_client
from kcprpc.push import route
from kcprpc.service import MethodKind, MethodSpec, event_info, method_spec, service_spec
from kcprpc.status import Status
from kcprpc.transport import ByteStream, Connection, FrameWriter, Inbox, read_frames

log = logging.getLogger("kcprpc.client")

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


class _Trailer:
    __slots__ = ("error", "md")

    def __init__(self, error: RpcError | None, md: dict[str, Any] | None) -> None:
        self.error = error
        self.md = md


def _trailer_error(body: Any) -> tuple[RpcError | None, dict[str, Any] | None]:
    if not isinstance(body, list) or len(body) < 2:
        return RpcError(Status.INTERNAL, "malformed trailer"), None
    code = Status.from_wire(body[0])
    details = body[2] if len(body) > 2 else None
    md = body[3] if len(body) > 3 and isinstance(body[3], dict) else None
    if code is Status.OK:
        return None, md
    return RpcError(code, str(body[1]), details, trailing_metadata=md), md


class _ClientCall:
    """Client side state of one call (any kind)."""

    __slots__ = (
        "cid",
        "done",
        "fut",
        "initial_md",
        "link",
        "own",
        "queue",
        "spec",
        "timer",
        "trailing_md",
        "writer",
    )

    def __init__(self, link: _Link, cid: int, spec: MethodSpec, writer: FrameWriter, own: bool) -> None:
        self.link = link
        self.cid = cid
        self.spec = spec
        self.writer = writer
        self.own = own
        self.fut: asyncio.Future[Any] = link.loop.create_future()
        self.queue: Inbox | None = Inbox() if spec.streams_responses else None
        self.initial_md: dict[str, Any] | None = None
        self.trailing_md: dict[str, Any] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.done = False

    def on_frame(self, ftype: int, body: Any) -> None:
        if body is codec.OVERSIZED:
            self.cancel(RpcError(Status.RESOURCE_EXHAUSTED, "response larger than max_message_size"))
            return
        if ftype == REPLY:
            if isinstance(body, list) and len(body) == 3:
                self.initial_md = body[1]
                self.trailing_md = body[2]
                self._finish()
                if not self.fut.done():
                    self.fut.set_result(body[0])
            else:
                self.fail(RpcError(Status.INTERNAL, "malformed reply"))
        elif ftype == MSG:
            if self.queue is not None:
                self.queue.put(body)
            elif not self.fut.done():
                self._finish()
                self.fut.set_result(body)
        elif ftype == TRAILER:
            err, md = _trailer_error(body)
            self.trailing_md = md
            if self.queue is not None:
                self._finish()
                self.queue.put(_Trailer(err, md))
                if not self.fut.done():
                    self.fut.set_result(None)
            elif err is not None:
                self.fail(err)
            else:
                self._finish()
                if not self.fut.done():
                    self.fut.set_exception(RpcError(Status.INTERNAL, "call ended without a response"))
        elif ftype == HEADERS and isinstance(body, dict):
            self.initial_md = {**(self.initial_md or {}), **body}

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        self.link.calls.pop(self.cid, None)
        if self.own:
            self.writer.close()

    def fail(self, err: RpcError) -> None:
        """End the call locally with ``err``."""
        if self.done:
            return
        self._finish()
        if self.queue is not None:
            self.queue.put(_Trailer(err, err.trailing_metadata or None))
        if not self.fut.done():
            self.fut.set_exception(err)
            self.fut.exception()  # mark retrieved: streaming calls may never await fut

    def cancel(self, err: RpcError) -> None:
        """Tell the server to stop, and fail locally."""
        if self.done:
            return
        self.writer.send(encode_frame(CANCEL, self.cid, None))
        self.fail(err)

    def expire(self) -> None:
        self.timer = None
        self.cancel(RpcError(Status.DEADLINE_EXCEEDED, "deadline exceeded"))


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
        self.session_id: str | None = None
        self.welcome: asyncio.Future[Any] = self.loop.create_future()
        hb = client.config.heartbeat
        self.hb = Heartbeat(hb, self.now()) if hb is not None else None
        self.tasks: list[asyncio.Task[Any]] = []
        self._max_dgram = conn.max_datagram_size

    def now(self) -> int:
        return int(self.loop.time() * 1000)

    def next_id(self) -> int:
        self._next = (self._next + 1) & 0xFFFFFFFF or 1
        return self._next

    # Peer protocol (push.route)
    def send_frame(self, frame: bytes) -> None:
        self.writer.send(frame)

    def send_datagram(self, frame: bytes) -> bool:
        if self.closed or len(frame) > self._max_dgram:
            return False
        try:
            self.conn.send_datagram(frame)
        except Exception:
            return False
        return True

    def on_frames(self, frames: list[Frame]) -> None:
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
                self.client._on_event(body)
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
                self.goaway = True
                if not self.welcome.done():  # refused during the handshake
                    err, _ = _trailer_error([*body, None, None] if isinstance(body, list) else body)
                    self.welcome.set_exception(err or RpcError(Status.UNAVAILABLE, "refused"))
                self.client._on_goaway(self)

    async def read_control(self) -> None:
        with contextlib.suppress(ConnectionError, OSError, EOFError, asyncio.IncompleteReadError):
            await read_frames(
                self.control, self.on_frames, max_message_size=self.client.config.max_message_size
            )
        self.client._link_lost(self, "connection closed")

    async def read_datagrams(self) -> None:
        conn = self.conn
        while True:
            try:
                data = await conn.recv_datagram()
            except (ConnectionError, OSError, EOFError):
                return
            try:
                frame = codec.decode_datagram(data)
            except Exception:
                continue
            self.on_frames([frame])

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
            # then pushes back on the server
            if box and box[0].queue is not None and box[0].queue.full:
                return box[0].queue.wait_space()
            return None

        with contextlib.suppress(ConnectionError, OSError, EOFError, asyncio.IncompleteReadError):
            await read_frames(
                stream, self.on_frames, max_message_size=self.client.config.max_message_size, pause=pause
            )

    def shutdown(self, err: RpcError) -> None:
        if self.closed:
            return
        self.closed = True
        for call in list(self.calls.values()):
            call.fail(err)
        self.calls.clear()
        for t in self.tasks:
            t.cancel()


class UnaryCall(Generic[R]):
    """A unary (or client-streaming) call: ``await`` it for the response; metadata after."""

    def __init__(self, run: Callable[[UnaryCall[R]], Awaitable[R]]) -> None:
        self._run = run
        self.initial_metadata: dict[str, Any] | None = None
        self.trailing_metadata: dict[str, Any] | None = None

    def __await__(self) -> Generator[Any, None, R]:
        return self._run(self).__await__()


class StreamCall(Generic[T]):
    """A server-streaming or bidi call: iterate it for the responses.

    Use ``async with`` (or :meth:`cancel`) to end it early; leaving the block cancels the server
    handler if the stream is not finished. Awaiting it starts it and returns it.
    """

    def __init__(
        self,
        client: Client,
        spec: MethodSpec,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
        requests: AsyncIterable[Any] | None = None,
    ) -> None:
        self._client = client
        self._spec = spec
        self._request = request
        self._requests = requests
        self._timeout = timeout
        self._metadata = metadata
        self._call: _ClientCall | None = None
        self._start_task: asyncio.Future[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._finished = False
        self.trailing_metadata: dict[str, Any] | None = None

    async def _start(self) -> None:
        if self._start_task is None:
            self._start_task = asyncio.ensure_future(self._do_start())
        await self._start_task

    async def _do_start(self) -> None:
        client = self._client

        async def last(details: ClientCallDetails) -> StreamCall[T]:
            self._call = await client._begin(
                details.method, details.request, details.timeout, details.metadata, self._requests is None
            )
            if self._requests is not None:
                self._sender = asyncio.ensure_future(client._send_requests(self._call, self._requests))
            return self

        details = ClientCallDetails(
            self._spec, self._request, dict(self._metadata or {}), client._timeout(self._timeout)
        )
        if client.interceptors:
            await chain_client(client.interceptors, details, last)
        else:
            await last(details)

    def __await__(self) -> Generator[Any, None, StreamCall[T]]:
        async def run() -> StreamCall[T]:
            await self._start()
            return self

        return run().__await__()

    def __aiter__(self) -> StreamCall[T]:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        if self._call is None:
            await self._start()
        call = self._call
        assert call is not None and call.queue is not None
        item = await call.queue.get()
        if isinstance(item, _Trailer):
            self._finished = True
            self.trailing_metadata = item.md
            if self._sender is not None:
                self._sender.cancel()
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        try:
            return cast(T, self._spec.load_response(item))
        except ValidationError as e:
            err = RpcError(Status.INTERNAL, "response validation failed", e.errors(include_url=False))
            call.cancel(err)
            self._finished = True
            raise err from None

    @property
    def initial_metadata(self) -> dict[str, Any] | None:
        """Metadata the server sent before its messages."""
        return self._call.initial_md if self._call is not None else None

    def cancel(self) -> None:
        """Cancel the call (the server handler's task is cancelled)."""
        if self._call is not None:
            self._call.cancel(RpcError(Status.CANCELLED, "cancelled by the client"))
        if self._sender is not None:
            self._sender.cancel()
        self._finished = True

    async def __aenter__(self) -> StreamCall[T]:
        await self._start()
        return self

    def __del__(self) -> None:
        # an abandoned stream must not keep the server handler parked on a full window forever
        call = self._call
        if call is not None and not call.done:
            with contextlib.suppress(Exception):
                call.cancel(RpcError(Status.CANCELLED, "stream abandoned"))

    async def __aexit__(self, *exc: object) -> None:
        if self._call is not None and not self._call.done:
            self.cancel()


class _Stub:
    """Runtime object behind ``client.stub(Service)``."""

    def __init__(
        self, client: Client, cls: type, timeout: float | None, metadata: Mapping[str, Any] | None
    ) -> None:
        spec = service_spec(cls)
        self.__service__ = spec
        for attr, m in spec.methods.items():
            setattr(self, attr, self._make(client, m, timeout, metadata))

    @staticmethod
    def _make(client: Client, m: MethodSpec, timeout: float | None, md: Mapping[str, Any] | None) -> Any:
        kind = m.kind
        pack = m.pack
        if kind is MethodKind.UNARY:
            if m.arg_names is not None:

                async def unary_args(*args: Any, **kwargs: Any) -> Any:
                    return await client._unary(m, pack(args, kwargs), timeout, md, None)

                return unary_args

            async def unary(request: Any = None) -> Any:
                return await client._unary(m, request, timeout, md, None)

            return unary
        if kind is MethodKind.SERVER_STREAM:

            def server_stream(*args: Any, **kwargs: Any) -> StreamCall[Any]:
                return StreamCall(client, m, pack(args, kwargs), timeout, md)

            return server_stream
        if kind is MethodKind.CLIENT_STREAM:

            async def client_stream(requests: AsyncIterable[Any]) -> Any:
                return await client._client_stream(m, requests, timeout, md, None)

            return client_stream
        if kind is MethodKind.BIDI:

            def bidi(requests: AsyncIterable[Any]) -> StreamCall[Any]:
                return StreamCall(client, m, None, timeout, md, requests)

            return bidi

        async def notify(*args: Any, **kwargs: Any) -> None:
            client.notify(m, pack(args, kwargs), metadata=md)

        return notify


EventHandler = Callable[[Any], Any]


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
        self.events_dropped = 0
        self._background: set[asyncio.Future[Any]] = set()
        self._stubs: dict[type, _Stub] = {}

    def _spawn(self, aw: Awaitable[Any]) -> None:
        t = asyncio.ensure_future(aw)
        self._background.add(t)
        t.add_done_callback(self._background.discard)

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
        conn = await asyncio.wait_for(self._connector(), self.config.connect_timeout)
        link: _Link | None = None
        try:
            control = await conn.open_stream()
            link = _Link(self, conn, control)
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
                raise ConnectionError(
                    f"no answer from the server within {self.config.connect_timeout:g} s"
                ) from None
        except BaseException:
            if link is not None:
                link.shutdown(RpcError(Status.UNAVAILABLE, "connect failed"))
            await conn.close()
            raise
        if isinstance(welcome, dict):
            sid = welcome.get("sid")
            link.session_id = sid if isinstance(sid, str) else None
        link.tasks.append(link.loop.create_task(link.read_datagrams()))
        if link.hb is not None:
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

    def _link_lost(self, link: _Link, reason: str) -> None:
        if link.closed:
            return
        link.shutdown(RpcError(Status.UNAVAILABLE, reason))
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
        if self._link is link and not self._closing:
            self._connected.clear()
            self._start_reconnect()

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
        spec = method_spec(method)
        if spec.kind is not MethodKind.UNARY:
            raise UsageError(f"{spec.wire_name} is {spec.kind.value}, not unary")

        async def run(uc: UnaryCall[R]) -> R:
            return cast(R, await self._unary(spec, request, timeout, metadata, uc))

        return UnaryCall(run)

    def stream(
        self,
        method: Callable[[Any, T], AsyncIterator[R]],
        request: T,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> StreamCall[R]:
        """A server-streaming call with per-call options."""
        spec = method_spec(method)
        if spec.kind is not MethodKind.SERVER_STREAM:
            raise UsageError(f"{spec.wire_name} is {spec.kind.value}, not server streaming")
        return StreamCall(self, spec, request, timeout, metadata)

    async def _begin(
        self,
        spec: MethodSpec,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
        end: bool,
    ) -> _ClientCall:
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
    ) -> Any:
        timeout = self._timeout(timeout)
        if self.interceptors:
            details = ClientCallDetails(spec, request, dict(metadata or {}), timeout)

            async def last(d: ClientCallDetails) -> Any:
                return await self._unary_core(d.method, d.request, d.timeout, d.metadata, uc)

            return await chain_client(self.interceptors, details, last)
        return await self._unary_core(spec, request, timeout, metadata, uc)

    async def _unary_core(
        self,
        spec: MethodSpec,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
        uc: UnaryCall[Any] | None,
    ) -> Any:
        call = await self._begin(spec, request, timeout, metadata, True)
        try:
            payload = await call.fut
        except asyncio.CancelledError:
            call.cancel(RpcError(Status.CANCELLED, "cancelled by the client"))
            raise
        finally:
            if uc is not None:
                uc.initial_metadata = call.initial_md
                uc.trailing_metadata = call.trailing_md
        try:
            return spec.load_response(payload)
        except ValidationError as e:
            raise RpcError(
                Status.INTERNAL, "response validation failed", e.errors(include_url=False)
            ) from None

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

    async def _client_stream(
        self,
        spec: MethodSpec,
        requests: AsyncIterable[Any],
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
        uc: UnaryCall[Any] | None,
    ) -> Any:
        timeout = self._timeout(timeout)

        async def last(d: ClientCallDetails) -> Any:
            call = await self._begin(d.method, None, d.timeout, d.metadata, False)
            sender = asyncio.ensure_future(self._send_requests(call, requests))
            try:
                payload = await call.fut
            except asyncio.CancelledError:
                call.cancel(RpcError(Status.CANCELLED, "cancelled by the client"))
                raise
            finally:
                sender.cancel()
                if uc is not None:
                    uc.initial_metadata = call.initial_md
                    uc.trailing_metadata = call.trailing_md
            try:
                return spec.load_response(payload)
            except ValidationError as e:
                raise RpcError(
                    Status.INTERNAL, "response validation failed", e.errors(include_url=False)
                ) from None

        details = ClientCallDetails(spec, requests, dict(metadata or {}), timeout)
        if self.interceptors:
            return await chain_client(self.interceptors, details, last)
        return await last(details)

    def notify(
        self,
        method: MethodSpec | Callable[..., Any],
        message: Any,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Fire-and-forget: send one message to a notify method (unreliable unless declared reliable)."""
        spec = method if isinstance(method, MethodSpec) else method_spec(method)
        if spec.kind is not MethodKind.NOTIFY:
            raise UsageError(f"{spec.wire_name} is not a notify method")
        link = self._link
        if link is None or link.closed:
            return  # fire-and-forget: nothing to report
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

    def _on_event(self, body: Any) -> None:
        if not isinstance(body, list) or len(body) != 5 or not isinstance(body[0], str):
            self.events_dropped += 1
            return
        name, payload, key, seq, epoch = body
        if isinstance(key, str) and isinstance(seq, int) and isinstance(epoch, int):
            prev = self.topic_offsets.get(key)
            if prev is not None and prev[0] == epoch and seq <= prev[1]:
                return  # already seen (a replay overlapping live delivery)
            self.topic_offsets[key] = (epoch, seq)
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
    crypt: str | None = None,
    key: bytes | str | None = None,
    fec: tuple[int, int] | None = None,
    config: ClientConfig | None = None,
    interceptors: Sequence[ClientInterceptor] = (),
    transport_options: Mapping[str, Any] | None = None,
) -> Client:
    """A client for a KCP server. ``async with kcprpc.connect(host, port) as client:`` or ``await``.

    ``crypt``/``key``/``fec`` must match the server's. ``transport_options`` go to ``kcp.dial``
    (session options such as ``nodelay``, ``snd_wnd``, ``mtu``) plus ``mux_config``. Reconnects
    (with ``config.reconnect``) dial again with the same options.
    """
    opts = dict(transport_options or {})

    async def connector() -> Connection:
        from kcprpc.net import dial

        return await dial(host, port, crypt=crypt, key=key, fec=fec, **opts)

    return Client(connector, config=config, interceptors=interceptors)
