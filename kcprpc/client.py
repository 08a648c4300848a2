"""The RPC client: typed stubs, calls of every kind, pushed events, ``connect()``.

Its parts live beside it: the connection across reconnects in :mod:`kcprpc.lifecycle`, one
connection's pump in :mod:`kcprpc.link`, pushed events in :mod:`kcprpc.subscriptions`, the stub
object in :mod:`kcprpc.stub`, call handles in :mod:`kcprpc.calls`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Mapping,
    Sequence,
)
from typing import Any, Literal, TypeVar, cast, overload

from pydantic import ValidationError

from kcp.fieldcheck import check_port
from kcprpc.broker import Position
from kcprpc.calls import ClientCall, StreamCall, UnaryCall, bad_response
from kcprpc.client_config import ClientConfig
from kcprpc.config import Transport
from kcprpc.errors import RpcError, UsageError
from kcprpc.frame_writer import FrameWriter
from kcprpc.interceptors import ClientCallDetails, ClientInterceptor, chain_client
from kcprpc.lifecycle import Connector, Lifecycle
from kcprpc.link import Link
from kcprpc.presence import MemberList
from kcprpc.protocol.frames import Notify
from kcprpc.push import route
from kcprpc.push_events import Recovered
from kcprpc.push_service import HistoryPage, SubscribeReply, SubscribeRequest
from kcprpc.receive import RECEIVE_COUNTERS
from kcprpc.service import MethodKind, MethodSpec, method_spec, raw_method, service_spec
from kcprpc.status import Status
from kcprpc.stub import Stub
from kcprpc.subscriptions import EventInfo, RawEvent, Subscriptions
from kcprpc.transport import Connection, spawn

__all__ = [
    "Client",
    "ClientConfig",
    "EventInfo",
    "RawEvent",
    "Recovered",
    "StreamCall",
    "UnaryCall",
    "connect",
]

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")


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
        self.config = config or ClientConfig()
        self.interceptors = tuple(interceptors)
        self._background: set[asyncio.Future[Any]] = set()
        self.subscriptions = Subscriptions(self._spawn)
        """Pushed events: handlers, rooms, topics and their offsets (``kcprpc.subscriptions``)."""
        # receive budgets (kcprpc.receive.ReceiveLimits) and protocol errors (bad_frames: frames
        # malformed or of an unknown type; stale_frames: frames of calls that ended), over all
        # connections of this client
        self.counters: dict[str, int] = dict.fromkeys(RECEIVE_COUNTERS, 0)
        self.reconnects = 0
        self.resumes = 0  # reconnects that resumed the same server session (docs/rpc.md, "Resume")
        self.on_reconnect: Callable[[Client], Any] | None = None
        self.on_disconnect: Callable[[Client, str], Any] | None = None
        # on_give_up(client, error) when reconnecting stops after ReconnectPolicy.max_attempts
        self.on_give_up: Callable[[Client, RpcError], Any] | None = None
        # secure mode: on_path_change(client, old, new) when the server's address as seen by this
        # client changes (the server moved; the client's own moves are seen by the server)
        self.on_path_change: Callable[[Client, Any, Any], Any] | None = None
        self.path_changes = 0
        # notify() while not connected (docs/rpc.md, Heartbeats and reconnects)
        self.notifications_dropped = 0
        self._stubs: dict[type, Stub] = {}
        self.lifecycle = Lifecycle(self, connector, self.subscriptions, self.counters, self._spawn, rng)
        """The connection across reconnects: the current link, connect, drain, reconnect, close
        (``kcprpc.lifecycle``)."""

    # -- pushed events (kept by self.subscriptions)
    @property
    def rooms(self) -> set[str]:
        """The rooms the server put this client in (restored after a reconnect)."""
        return self.subscriptions.rooms

    @property
    def topics(self) -> set[str]:
        """The topics this client subscribed to (re-subscribed after a reconnect)."""
        return self.subscriptions.topics

    @property
    def topic_offsets(self) -> dict[str, Position]:
        """Broker key → :class:`Position` of the last event received on the stream (or reported
        by the server), sent in ``HELLO.restore`` after a reconnect."""
        return self.subscriptions.offsets

    @topic_offsets.setter
    def topic_offsets(self, value: dict[str, Position]) -> None:
        self.subscriptions.offsets = value

    def position(self, topic: str | None = None, *, room: str | None = None) -> Position | None:
        """Where this client is in ``topic`` (or ``room=``): the position of the last event it
        received there, or the one the server reported (a subscribe's reply, a recovery); None
        before any. Save it to resume a later process with ``subscribe(topic, since=...)``."""
        return self.subscriptions.position(_key(topic, room))

    @property
    def events_dropped(self) -> int:
        """Events that failed validation against a handler's type."""
        return self.subscriptions.events_dropped

    @property
    def events_stale(self) -> int:
        """Unreliable events dropped because a newer one of the same key had arrived."""
        return self.subscriptions.events_stale

    @property
    def events_stale_keyed(self) -> int:
        """Of :attr:`events_stale`: keyed events (``@event(key=...)``, ``send(key=...)``) dropped
        because a newer one of the same latest-wins key had arrived (docs/rpc.md, "Latest-wins and
        priorities")."""
        return self.subscriptions.events_stale_keyed

    def _spawn(self, aw: Awaitable[Any]) -> None:
        spawn(self._background, aw)

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> Client:
        """Open the connection (once); after reconnecting gave up (``on_give_up``), try again now
        (restoring rooms and topics as the reconnect policy says)."""
        lifecycle = self.lifecycle
        if lifecycle.link is None:
            await lifecycle.connect_first(restore=False)
        elif lifecycle.gave_up is not None:
            policy = self.config.reconnect
            await lifecycle.connect_first(restore=policy.restore if policy is not None else False)
        return self

    def __await__(self) -> Generator[Any, None, Client]:
        return self.connect().__await__()

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; in-flight calls fail with CANCELLED."""
        await self.lifecycle.close()

    @property
    def connected(self) -> bool:
        """True while a connection is up."""
        return self.lifecycle.connected

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until (re)connected."""
        await self.lifecycle.wait_connected(timeout)

    @property
    def session_id(self) -> str | None:
        """The server's id for this connection."""
        link = self.lifecycle.link
        return link.session_id if link is not None else None

    @property
    def rtt_ms(self) -> float | None:
        """Smoothed heartbeat round-trip time in milliseconds (None before the first pong)."""
        link = self.lifecycle.link
        return link.hb.srtt_ms if link is not None and link.hb is not None else None

    @property
    def last_rtt_ms(self) -> float | None:
        """The latest heartbeat RTT sample in milliseconds."""
        link = self.lifecycle.link
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
        return self.lifecycle.transport_stats()

    def rebind(self) -> Any:
        """Secure mode: move this connection to a new local UDP socket, as a phone that changes
        networks does; calls in flight continue, the server sees a path change. Returns the new
        local address. Raises :class:`UsageError` without a secure KCP connection."""
        return self.lifecycle.rebind()

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
                stub = self._stubs[service] = Stub(self, self._unary, service, None, None)
            return cast(S, stub)
        return cast(S, Stub(self, self._unary, service, timeout, metadata))

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
            return StreamCall(self._begin, self.interceptors, spec, request, self._timeout(timeout), metadata)
        if k is MethodKind.BIDI:
            return StreamCall(
                self._begin, self.interceptors, spec, None, self._timeout(timeout), metadata, request
            )
        self.notify(spec, request, metadata=metadata)
        return None

    async def _begin(
        self,
        spec: MethodSpec,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
        end: bool,
    ) -> ClientCall:
        lifecycle = self.lifecycle
        link = lifecycle.link
        if (
            (link is None or link.closed or link.goaway)
            and self.config.wait_for_ready
            and not lifecycle.closing
        ):
            t0 = asyncio.get_running_loop().time()
            try:
                await lifecycle.wait_connected(timeout)  # raises at once once reconnecting gave up
            except TimeoutError:
                raise RpcError(
                    Status.DEADLINE_EXCEEDED, "deadline exceeded while waiting for a connection"
                ) from None
            if timeout is not None:
                timeout = max(0.0, timeout - (asyncio.get_running_loop().time() - t0))
        link = lifecycle.require_link()
        own = (
            self.config.stream_framing
            if spec.streams_responses or spec.streams_requests
            else self.config.unary_framing
        ) == "stream"
        if not own:
            return self._send_call(link, link.writer, False, spec, request, timeout, metadata, end)
        writer, box = await link.open_call_writer()
        call = self._send_call(link, writer, True, spec, request, timeout, metadata, end)
        box.append(call)
        return call

    def _send_call(
        self,
        link: Link,
        writer: FrameWriter,
        own: bool,
        spec: MethodSpec,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
        end: bool,
    ) -> ClientCall:
        """Make the call object and send the CALL frame on ``writer`` (``own``: the call's own stream)."""
        protocol = link.protocol
        cid = protocol.next_id()
        call = ClientCall(protocol, link.loop, cid, spec, writer, own)
        payload = spec.dump_request(request) if end and spec.has_request else None
        timeout_ms = None if timeout is None else max(0, int(timeout * 1000))
        try:
            frame = protocol.call(
                call, cid, spec.wire_name, dict(metadata) if metadata else None, timeout_ms, end, payload
            )
        except RpcError:
            if own:
                writer.close()
            raise
        if timeout is not None:
            call.timer = link.loop.call_later(timeout, call.expire)
        writer.send(frame)
        if end and len(protocol.calls) == 1:
            # the only call in flight, its request complete: nothing to coalesce it with, it leaves
            # in this turn (with more in flight, the frames of one turn still go in one write at
            # its end; a client-streaming call's first messages follow it in the same write)
            writer.flush()
        return call

    def _unary(
        self,
        spec: MethodSpec,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
        uc: UnaryCall[Any] | None,
        streaming: bool = False,
    ) -> Awaitable[Any]:
        """A unary call, or with ``streaming`` a client-streaming one (``request`` is then the
        async iterable of requests), through the client interceptors (a coroutine to await;
        without interceptors, the core's own)."""
        if timeout is None:
            timeout = self.config.default_timeout
        if self.interceptors:
            return self._intercepted(spec, request, timeout, metadata, uc, streaming)
        return self._unary_core(spec, request, timeout, metadata, uc, streaming)

    async def _intercepted(
        self,
        spec: MethodSpec,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
        uc: UnaryCall[Any] | None,
        streaming: bool,
    ) -> Any:
        details = ClientCallDetails(spec, request, dict(metadata or {}), timeout)

        async def last(d: ClientCallDetails) -> Any:
            return await self._unary_core(d.method, d.request, d.timeout, d.metadata, uc, streaming)

        return await chain_client(self.interceptors, details, last)

    async def _unary_core(
        self,
        spec: MethodSpec,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
        uc: UnaryCall[Any] | None,
        streaming: bool,
    ) -> Any:
        link = self.lifecycle.link
        if (
            not streaming
            and link is not None
            and not link.closed
            and not link.goaway
            and self.config.unary_framing != "stream"
        ):  # the common case, without the coroutine of _begin
            call = self._send_call(link, link.writer, False, spec, request, timeout, metadata, True)
        else:
            call = await self._begin(spec, None if streaming else request, timeout, metadata, not streaming)
        sender = asyncio.ensure_future(call.send_requests(request)) if streaming else None
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
            raise bad_response(e) from None

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
        link = self.lifecycle.link
        if link is None or link.closed:
            self.notifications_dropped += 1  # fire-and-forget: counted, not raised
            return
        frame = Notify(
            spec.wire_name, spec.dump_request(message), dict(metadata) if metadata else None
        ).encode()
        route(link, frame, spec.delivery)

    # ------------------------------------------------------------------ events
    @overload
    def on(self, event_type: type[T], handler: Callable[[T], Any]) -> Callable[[], None]: ...

    @overload
    def on(self, event_type: type[T], handler: Callable[[T, EventInfo], Any]) -> Callable[[], None]: ...

    def on(self, event_type: type[T], handler: Callable[..., Any]) -> Callable[[], None]:
        """Call ``handler(event)`` (sync or async) for each pushed ``event_type``, or
        ``handler(event, info)`` when it takes a second positional parameter: an
        :class:`EventInfo` (position, key, replayed, unreliable). Returns an unsubscribe function."""
        return self.subscriptions.on(event_type, handler)

    def on_raw_event(self, handler: Callable[[RawEvent], Any]) -> Callable[[], None]:
        """Call ``handler(RawEvent)`` for every pushed event, of any type, before validation (after
        the duplicate and stale ones are dropped): for tools that know events only by wire name.
        Returns an unsubscribe function."""
        return self.subscriptions.on_raw_event(handler)

    @overload
    def events(self, event_type: type[T]) -> AsyncGenerator[T, None]: ...

    @overload
    def events(
        self, event_type: type[T], *, info: Literal[True]
    ) -> AsyncGenerator[tuple[T, EventInfo], None]: ...

    def events(self, event_type: type[T], *, info: bool = False) -> AsyncGenerator[Any, None]:
        """Async iterator over pushed events of ``event_type`` (registered when iteration starts);
        with ``info=True``, over ``(event, EventInfo)`` pairs."""
        return self.subscriptions.events(event_type, info)

    async def subscribe(self, topic: str, *, since: Position | None = None) -> SubscribeReply:
        """Subscribe to a topic; its events arrive through :meth:`on` / :meth:`events`. Restored
        on reconnect from the position the reply gives (``client.position(topic)``).

        ``since``: a position saved by an earlier process (``client.position(topic)``, or an
        event's ``info.position``): the server first replays what was published after it
        (flagged as replayed; no live event overtakes them), then goes on live; the reply and a
        local :class:`Recovered` event say whether nothing was lost (``recovered``), how many
        were replayed and how many the history no longer held (``missed``)."""
        from kcprpc.push_service import PushService

        req = SubscribeRequest(topic=topic, since=since)
        reply: SubscribeReply = await self._unary(
            service_spec(PushService).methods["Subscribe"], req, None, None, None
        )
        subs = self.subscriptions
        subs.topics.add(topic)
        key = "topic:" + topic
        if since is None:
            subs.advance(key, reply.position)
        else:
            rep = [reply.recovered, reply.replayed, reply.missed, list(reply.position)]
            subs.recovered(key, rep)
        return reply

    async def history(
        self,
        topic: str | None = None,
        *,
        room: str | None = None,
        since: Position | None = None,
        limit: int | None = None,
    ) -> HistoryPage:
        """The kept messages of a topic this client is subscribed to (or a room it is in,
        ``room=``): with ``since``, those after it (the first ``limit``); without, the last
        ``limit``. The server caps ``limit`` (``max_history_fetch``, 1000 by default) and the
        reply's size (``truncated``). ``page.events(Chat)`` decodes the messages of one type."""
        from kcprpc.push_service import HistoryRequest, PushService

        _key(topic, room)
        req = HistoryRequest(topic=topic, room=room, since=since, limit=limit)
        page: HistoryPage = await self._unary(
            service_spec(PushService).methods["History"], req, None, None, None
        )
        return page

    async def unsubscribe(self, topic: str) -> None:
        """Unsubscribe from a topic."""
        from kcprpc.push_service import PushService, SubscribeRequest

        self.topics.discard(topic)
        self.subscriptions.forget("topic:" + topic)
        await self._unary(
            service_spec(PushService).methods["Unsubscribe"], SubscribeRequest(topic=topic), None, None, None
        )

    async def members(self, *, room: str | None = None, topic: str | None = None) -> MemberList:
        """Who is in ``room`` (or subscribed to ``topic``; give one), on every server sharing the
        broker: a :class:`kcprpc.MemberList` (``members``: id and info each, oldest first; ``total``;
        ``truncated`` when the server cut the list). Only for a room this client is in or a topic
        it is subscribed to (PERMISSION_DENIED), that keeps presence on the server
        (FAILED_PRECONDITION); docs/rpc.md, "Presence"."""
        from kcprpc.push_service import MembersRequest, PushService

        if (room is None) == (topic is None):
            raise UsageError("members() takes room=... or topic=... (one of them)")
        r = await self._unary(
            service_spec(PushService).methods["Members"],
            MembersRequest(room=room, topic=topic),
            None,
            None,
            None,
        )
        return cast(MemberList, r)

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


def _key(topic: str | None, room: str | None) -> str:
    """The broker key of ``topic`` or ``room=`` (exactly one)."""
    if (topic is None) == (room is None):
        raise UsageError("name a topic or a room= (one of the two)")
    return "topic:" + topic if topic is not None else "room:" + cast(str, room)


def connect(
    host: str,
    port: int,
    *,
    key: bytes | str | None = None,
    transport: Transport | None = None,
    config: ClientConfig | None = None,
    interceptors: Sequence[ClientInterceptor] = (),
    fallbacks: Sequence[tuple[str, int]] = (),
) -> Client:
    """A client for a KCP server. ``async with kcprpc.connect(host, port, key="...") as client:`` or ``await``.

    ``fallbacks``: other ``(host, port)`` nodes of the same app (sharing its broker and its keys):
    a connect that finds ``host:port`` UNAVAILABLE tries each of them in turn, and after a failed
    reconnect attempt the next one goes to the next node, so a client whose node died moves to
    another and restores its rooms and topics there (docs/brokers.md, "Moving to another node").

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
    stays silent to those) and at once when nothing listens on the port (secure mode: "connection
    refused", from the host's ICMP port unreachable), ``UNAUTHENTICATED`` for a refused token or a PSK that does not match a
    pinned server, ``FAILED_PRECONDITION`` for refused parameters, or the status an ``on_connect``
    hook raised. A transport this client cannot run raises :class:`UsageError` at once.
    """
    from kcprpc.config import described_transport, effective_transport

    described = described_transport(key, transport, where="kcprpc.connect")
    cfg = config or ClientConfig()
    run = effective_transport(described, side="client", handshake_timeout=cfg.connect_timeout)

    addresses = [(host, port), *fallbacks]
    for a in addresses[1:]:
        if not (isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str) and type(a[1]) is int):
            raise UsageError(f"kcprpc.connect: fallbacks are (host, port) pairs, not {a!r}")
    for _, p in addresses:
        check_port(p, UsageError)
    at = 0  # the address the connector dials
    route = [b""]  # the server worker of the last connection: a reconnect asks for it (docs/workers.md)

    async def connector() -> Connection:
        from kcprpc.net import dial, redial_transport, server_route

        conn = await dial(*addresses[at], redial_transport(run, route[0]))
        route[0] = server_route(conn)
        return conn

    client = Client(connector, config=cfg, interceptors=interceptors)
    if fallbacks:

        def rotate() -> None:
            nonlocal at
            at = (at + 1) % len(addresses)
            route[0] = b""  # another node's workers: no worker to ask for

        client.lifecycle.addresses = len(addresses)
        client.lifecycle.rotate = rotate
    return client
