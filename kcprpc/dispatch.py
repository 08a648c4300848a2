"""The server's stream pump: one mux stream of a client connection (the control stream or a stream
per call), driving its :class:`~kcprpc.protocol.server.ServerStream`: frames read go to the
protocol; what comes back is sent (bytes) or done (a call's handler started, a message queued,
the HELLO answered); the handlers' results go back out as REPLY, MSG and TRAILER frames."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import ValidationError

from kcp.logutil import RateLimitedLog
from kcprpc import codec
from kcprpc.broker import BrokerUnavailable, Position, room_key, topic_key
from kcprpc.codec import Frame, Refused
from kcprpc.context import ServerContext, reset_current, set_current
from kcprpc.eager import start_eager
from kcprpc.errors import RpcError
from kcprpc.frame_writer import FrameWriter
from kcprpc.inbox import INBOX_LIMIT, Inbox
from kcprpc.interceptors import ServerInterceptor, chain_server
from kcprpc.packed import Packed
from kcprpc.protocol.frames import encode_headers, encode_msg, encode_reply, encode_trailer
from kcprpc.protocol.server import (
    CallCancel,
    CallEnd,
    CallMessage,
    ClientLeaving,
    EventsAcked,
    HelloAccepted,
    HelloRefused,
    StartCall,
    StartNotify,
)
from kcprpc.push import Recovery
from kcprpc.reply_hold import collect_holds, settle
from kcprpc.request_stream import bad_request, request_iter
from kcprpc.server_config import ServerConfig
from kcprpc.server_session import (
    CANCEL_CLIENT,
    CANCEL_DEADLINE,
    CANCEL_OVERFLOW,
    CANCEL_REFUSED,
    CANCEL_SHUTDOWN,
    END_OF_REQUESTS,
    ServerCall,
    ServerHost,
    ServerSession,
)
from kcprpc.service import MethodSpec
from kcprpc.status import Status
from kcprpc.transport import ByteStream, maybe_await, spawn

log = logging.getLogger("kcprpc.server")
_handler_log = RateLimitedLog(log, burst=10, interval=60.0)
"""A handler's tracebacks, per method: 10 a minute, then how many were left out (a client that
finds an input a handler fails on must not flood the log with one traceback per call)."""

STATUS_COUNTERS: dict[Status, str] = {s: f"status_{s.name.lower()}" for s in Status if s is not Status.OK}
"""The server counter (``server.stats``) of each non-OK status a handler's call ended with
(``status_deadline_exceeded`` ...): the metrics endpoint's ``kcprpc_server_call_errors_total``."""


class PumpHost(ServerHost, Protocol):
    """What a stream pump uses of its server, beyond what a session does."""

    interceptors: tuple[ServerInterceptor, ...]

    def run_notify(self, sess: ServerSession, start: StartNotify) -> None:
        """Run a NOTIFY the protocol admitted."""

    def through_interceptors(
        self, ctx: ServerContext, handler: Callable[..., Any], req: Any
    ) -> Awaitable[Any]:
        """Run ``handler(req)`` behind the server's interceptors."""


__all__ = ["PumpHost", "StreamPump", "invoke"]

SUBSCRIBE = "kcprpc.Push/Subscribe"


def restore_claims(restore: Any, config: ServerConfig) -> tuple[list[str], list[str], dict[str, Any]] | None:
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


def invoke(handler: Callable[..., Any], spec: MethodSpec, req: Any) -> Any:
    return spec.invoke(handler, req)


class StreamPump:
    """One stream on the server: the control stream (after HELLO) or a call stream. The pump of a
    :class:`~kcprpc.protocol.server.ServerStream`: it feeds it the frames read and acts on what
    comes back (bytes to send, calls to start, messages to queue)."""

    def __init__(self, server: PumpHost, sess: ServerSession, stream: ByteStream) -> None:
        self.server = server
        self.sess = sess
        self.writer = FrameWriter(stream, guard=sess.send_guard)
        self.proto = sess.protocol.open_stream()
        self.calls: dict[int, ServerCall] = self.proto.calls  # the protocol's call table
        self.loop = sess.loop
        self.decode = sess.receive.decode
        self.eager = False  # start handlers eagerly (the batch on_frames is in holds one frame)
        self._hello_tping = False  # the control stream's HELLO said tping (its mux needs no NOPs)

    @property
    def is_control(self) -> bool:
        """True for the control stream (the one whose first frame was HELLO)."""
        return self.proto.is_control

    # ---------------------------------------------------------------- frames in
    def control(self) -> bool:
        """True for the control stream (its reader never waits for buffer space)."""
        return self.proto.is_control

    def on_frames(self, frames: list[Frame], costs: list[int]) -> None:
        """A batch of frames; ``costs[i]`` is the decode budget ``frames[i]`` holds (zeroed here for
        the bodies kept: a call's request, an inbox's message; the reader releases the rest)."""
        self.sess.last_receive = self.loop.time()
        # a lone frame (a quiet connection): a call's handler starts eagerly, so that its reply can
        # leave in this turn; in a batch of many, the replies go out together at the next turn
        # anyway, and a plain task costs less than an eager start (about 0.8 against 1.7 us)
        self.eager = len(frames) == 1
        receive = self.proto.receive
        send = self.writer.send
        on_event = _ON_EVENT
        for i, (ftype, cid, body) in enumerate(frames):
            out = receive(ftype, cid, body)
            if out is None:
                continue
            if type(out) is bytes:
                send(out)
            elif on_event[type(out)](self, out, costs[i]):
                costs[i] = 0
        if self.writer.pending_bytes:
            self.writer.flush()  # the replies of the handlers that finished in their first step

    def _on_message(self, ev: CallMessage, cost: int) -> bool:
        call: ServerCall = ev.handle
        inbound = call.inbound
        if inbound is None:
            return False
        body = ev.payload
        if type(body) is Refused:
            call.refuse(body)
        elif self.proto.is_control and inbound.qsize() >= INBOX_LIMIT:
            # the shared stream cannot be paused for one call: refuse to buffer without end
            call.cancel(CANCEL_OVERFLOW)
        else:
            inbound.put(body, cost)
            return True
        return False

    def _on_end(self, ev: CallEnd, cost: int) -> bool:
        call: ServerCall = ev.handle
        if call.inbound is not None:
            call.inbound.put(END_OF_REQUESTS)
        return False

    def _on_cancel(self, ev: CallCancel, cost: int) -> bool:
        call: ServerCall = ev.handle
        call.cancel(CANCEL_CLIENT)
        return False

    def _on_notify(self, ev: StartNotify, cost: int) -> bool:
        self.server.run_notify(self.sess, ev)
        return False

    def _on_hello(self, ev: HelloAccepted, cost: int) -> bool:
        sess = self.sess
        sess.control = self.writer
        hello = ev.hello
        sess.metadata = hello.metadata
        sess.numbered = hello.numbered  # it takes numbered direct events (kcprpc.direct_events)
        self._hello_tping = hello.transport_ping
        if self.server.on_connect is None and hello.restore is None and hello.resume is None:
            self._welcome(None)
        else:
            spawn(self.server.tasks, self._handshake(hello.restore, hello.resume))
        return False

    def _on_hello_refused(self, ev: HelloRefused, cost: int) -> bool:
        self.sess.control = self.writer
        spawn(self.server.tasks, self._refuse(ev.code, ev.message))
        return False

    def _on_events_acked(self, ev: EventsAcked, cost: int) -> bool:
        ring = self.sess.direct
        if ring is None:  # nothing numbered was sent on this session
            self.server.stats["bad_frames"] += 1
        else:
            ring.ack(ev.number)
        return False

    def _on_leaving(self, ev: ClientLeaving, cost: int) -> bool:
        self.sess.may_resume = False  # the client closes on purpose: its session ends with the connection
        return False

    def _welcome(
        self,
        restored: dict[str, Any] | None,
        resumed: bool | None = None,
        resume_error: str | None = None,
    ) -> None:
        sess, server = self.sess, self.server
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
        ticket = server.resume_ticket(sess)
        if ticket is not None:
            body["resume"] = ticket
        if resumed is not None:
            body["resumed"] = resumed
        if resume_error is not None:
            body["resume_error"] = resume_error
        if sess.direct_report is not None:  # a resume: its numbered direct events sent again, missed
            body["direct"] = sess.direct_report
            sess.direct_report = None
        if server.config.ack_hold and sess.conn.wire_mode == "secure":  # held acks (docs/tuning.md)
            body["ackhold"] = server.config.ack_hold
        if sess.conn.silent_ms() is not None:  # its sweep hears the transport's keepalives
            body["tping"] = True
            if self._hello_tping:  # and the client needs no mux NOPs: both muxes go quiet
                sess.conn.use_transport_keepalive()
        self.writer.send(sess.protocol.welcome(body))

    async def _handshake(self, restore: Any, resume: Any = None) -> None:
        """Resume the session a HELLO's ``resume`` names (its ownership proven, ``on_resume``
        agreeing), or else run ``on_connect`` (which may refuse the connection by raising
        RpcError) and restore what a reconnecting client names in its HELLO; then answer WELCOME
        (with what the session is in, when the client asked). Calls that arrive before WELCOME are
        refused with UNAVAILABLE."""
        server, sess = self.server, self.sess
        restored: dict[str, Any] | None = None
        resumed: bool | None = None
        error: str | None = None
        try:
            if resume is not None:
                got = await server.resume(sess, resume)
                if isinstance(got, str):
                    resumed, error = False, got
                else:
                    self.sess = sess = got  # the resumed session runs on this connection now
                    resumed = True
            if resumed:
                # membership is the server's: the HELLO's restore only picks what to replay, for
                # the rooms and topics the session is in
                claims = restore_claims(restore, server.config) if restore is not None else None
                restored = self._restored(await self._replay(claims[2] if claims is not None else {}))
            else:
                if server.on_connect is not None:
                    await maybe_await(server.on_connect(sess))
                if restore is not None:
                    restored = await self._restore(restore)
        except Exception as e:
            if isinstance(e, RpcError):
                code, message = e.status, e.message
            else:
                _handler_log.exception("on_connect", "on_connect/on_restore failed")
                code, message = Status.INTERNAL, "internal error"
            await self._refuse(code, message)
            return
        if not sess.closed:
            self._welcome(restored, resumed, error)

    async def _refuse(self, code: Status, message: str) -> None:
        """Refuse the connection at its HELLO: GOAWAY with the reason (the client's ``connect()``
        raises it), then close."""
        self.writer.send(self.sess.protocol.goaway(code, message))
        self.writer.flush()
        await self.sess.conn.close()

    async def _restore(self, restore: Any) -> dict[str, Any]:
        """Restore the rooms and topics a reconnecting client names, through the checks of a first
        join, and replay what it missed on them; returns what it is back in, with each key's
        recovery (``{"rooms", "topics", "recovery": {key: [recovered, replayed, missed|nil,
        [epoch, offset]]}}``).

        The client's word is a claim, never membership: a topic is re-subscribed through the
        ``kcprpc.Push/Subscribe`` method (the server's interceptors, the name and count limits),
        exactly as ``client.subscribe()`` would; rooms are server-side membership, so only the
        application's ``on_restore`` hook may join them again (without one, none is). A claim over
        the limits (``max_rooms`` rooms, ``max_subscriptions`` topics) restores nothing."""
        server, sess = self.server, self.sess
        stats = server.stats
        claims = restore_claims(restore, server.config)
        if claims is None:
            stats["restores_refused"] += 1
            return self._restored(None)
        rooms, topics, offsets = claims
        hub = server.push
        budget, address = hub.restore_budget, sess.remote_address
        if budget is not None and (rooms or topics):
            now = int(time.monotonic() * 1000)
            if not budget.allow(address, now):  # the address restored its share: nothing now
                stats["restores_refused"] += 1
                return self._restored(None)
            budget.charge(address, len(rooms) + len(topics) - 1, now)
        # live messages of the claimed keys are held back from now until their replay is sent
        held = [room_key(r) for r in rooms] + [topic_key(t) for t in topics]
        for key in held:
            hub.hold(sess, key)
        try:
            for t in topics:
                if await self._resubscribe(t):
                    stats["restored_topics"] += 1
                else:
                    stats["restores_denied"] += 1
            if server.on_restore is not None and (rooms or topics):
                await maybe_await(server.on_restore(sess, rooms, [t for t in topics if t in sess.topics]))
            denied = sum(1 for r in rooms if r not in sess.rooms)
            stats["restored_rooms"] += len(rooms) - denied
            stats["restores_denied"] += denied
            recovery = await self._replay(offsets)
        finally:
            for key in held:
                hub.release(sess, key)
        return self._restored(recovery)

    def _restored(self, recovery: dict[str, Recovery] | None) -> dict[str, Any]:
        """``WELCOME.restored``: what the session is in now, with each key's recovery report."""
        sess = self.sess
        out: dict[str, Any] = {"rooms": sorted(sess.rooms), "topics": sorted(sess.topics)}
        if recovery is not None:
            out["recovery"] = {k: r.wire() for k, r in recovery.items()}
        return out

    async def _resubscribe(self, topic: str) -> bool:
        """Subscribe this session to ``topic`` through the Subscribe method's whole path (request
        validation, interceptors, handler): True when it is subscribed."""
        server, sess = self.server, self.sess
        entry = server.method_table.get(SUBSCRIBE)
        if entry is None:
            return False
        spec, handler = entry
        ctx = ServerContext(spec, dict(sess.metadata), sess, None, None)
        token = set_current(ctx)
        try:
            ctx.request = req = spec.load_request({"topic": topic})
            await server.through_interceptors(ctx, handler, req)
        except (RpcError, ValidationError):
            return False
        except Exception:
            _handler_log.exception("restore", "restoring topic %r failed", topic[:100])
            return False
        finally:
            reset_current(token)
        return topic in sess.topics

    async def _replay(self, offsets: dict[str, Any]) -> dict[str, Recovery]:
        """Recover every room and topic this session is in from the client's positions
        (``offsets``: ``{key: [epoch, offset]}``, untrusted): replay what it missed, flagged, with
        no live message overtaking the replay (:meth:`PushHub.recover`); returns each key's report.
        A key without a valid position gets none replayed and ``missed`` unknown (and its position
        now, for the next time). While the broker is unavailable a key is reported not recovered,
        at the client's own position."""
        sess = self.sess
        hub = self.server.push
        keys = sorted({room_key(r) for r in sess.rooms} | {topic_key(t) for t in sess.topics})
        for key in keys:  # before the first await: nothing live slips in between
            hub.hold(sess, key)
        out: dict[str, Recovery] = {}
        try:
            for key in keys:
                off = offsets.get(key)
                since = (
                    Position(off[0], off[1])
                    if isinstance(off, list) and len(off) == 2 and all(type(x) is int for x in off)
                    else None
                )
                try:
                    out[key] = await hub.recover(sess, key, since)
                except BrokerUnavailable:
                    # the broker is down: not recovered, and the client keeps its position (the
                    # same epoch, the same offset) for its next reconnect or since= subscribe
                    self.server.stats["recoveries_failed"] += 1
                    out[key] = Recovery(False, 0, None, since or Position(hub.broker.epoch, 0))
        finally:
            for key in keys:
                hub.release(sess, key)
        return out

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
                call.inbound.put(END_OF_REQUESTS)
            if not self.is_control:
                call.cancel(CANCEL_CLIENT)
        if self.is_control:
            for call in list(self.calls.values()):
                call.cancel(CANCEL_CLIENT)
        if not self.is_control and not self.calls:
            self.writer.close()

    # ---------------------------------------------------------------- calls
    def _trailer(self, cid: int, status: Status, message: str, details: Any = None, md: Any = None) -> None:
        if status is not Status.OK:
            self.server.stats[STATUS_COUNTERS[status]] += 1
        self.writer.send(encode_trailer(cid, status, message, details, md))

    def _start_call(self, ev: StartCall, cost: int) -> bool:
        """Start the handler of a CALL the protocol admitted; True: the call keeps ``cost`` (the
        decode budget its body holds) until it ends."""
        cid, md, timeout_ms, request, spec, handler = ev
        sess = self.sess
        if sess.resumed_into is not None:  # a stream opened before its connection resumed a session
            self.sess = sess = sess.resumed_into
        if sess.closed:  # ended (a penalty, a shutdown): what it queued runs no handler
            self.proto.closed(cid, spec.streams_responses)
            self.server.stats["calls_refused"] += 1
            return False
        loop = self.loop
        call = ServerCall(cid, self.writer)
        call.cost = cost
        deadline = None if timeout_ms is None else loop.time() + timeout_ms / 1000.0
        ctx = call.ctx = ServerContext(spec, md or {}, sess, deadline, call)
        if spec.streams_requests:
            call.inbound = Inbox(budget=sess.receive.decode)
        self.calls[cid] = call  # the protocol's table (ServerStream.opened)
        sess.calls.add(call)
        self.server.stats["calls_started"] += 1
        if self.eager:
            # the handler's first step runs now, inside its task: a handler that does not suspend
            # has its reply queued in this turn (on_frames flushes it)
            call.task, done = start_eager(loop, self._run(call, ctx, handler, request))
        else:
            call.task, done = loop.create_task(self._run(call, ctx, handler, request)), False
        if deadline is not None and not done:
            # armed once the handler has suspended: no step can be cut short before that, and a
            # handler that answered in its first step (most do) needs no timer at all
            call.timer = loop.call_at(deadline, call.cancel, CANCEL_DEADLINE)
        return True

    async def _run(
        self, call: ServerCall, ctx: ServerContext, handler: Callable[..., Any], payload: Any
    ) -> None:
        call.started = True
        set_current(ctx)
        spec = ctx.spec
        server = self.server
        w = self.writer
        cid = call.cid
        try:
            try:
                if spec.streams_requests:
                    req: Any = request_iter(call, spec)
                elif spec.has_request:
                    req = ctx.request = spec.load_request(payload)
                else:
                    req = None
            except ValidationError as e:
                raise bad_request(e) from None
            if spec.streams_responses:
                if server.interceptors:
                    await chain_server(
                        server.interceptors, ctx, lambda: self._stream_out(call, ctx, handler, req)
                    )
                else:
                    await self._stream_out(call, ctx, handler, req)
                self._trailer(cid, Status.OK, "", None, ctx._trailing_md)
            else:
                holds = collect_holds()  # e.g. a room joined: its subscription (kcprpc.reply_hold)
                result = await server.through_interceptors(ctx, handler, req)
                if holds and not await settle(holds):
                    server.stats["replies_hold_timeouts"] += 1
                try:
                    out = result if type(result) is Packed else spec.dump_response(result)
                except Exception:
                    _handler_log.exception(spec.wire_name, "%s: cannot serialize the response", spec.wire_name)
                    raise RpcError(Status.INTERNAL, "response serialization failed") from None
                frame = encode_reply(cid, out, ctx._initial_md, ctx._trailing_md)
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
            if call.reason == CANCEL_DEADLINE:
                self._trailer(cid, Status.DEADLINE_EXCEEDED, "deadline exceeded")
            elif call.reason == CANCEL_SHUTDOWN:
                self._trailer(cid, Status.UNAVAILABLE, "server shutting down")
            elif call.reason == CANCEL_OVERFLOW:
                self._trailer(cid, Status.RESOURCE_EXHAUSTED, "too many unread messages")
            elif call.reason == CANCEL_REFUSED:
                self._trailer(cid, Status.RESOURCE_EXHAUSTED, call.refusal)
            else:
                self._trailer(cid, Status.CANCELLED, "cancelled")
        except Exception:
            server.stats["calls_failed"] += 1
            _handler_log.exception(spec.wire_name, "handler %s raised", spec.wire_name)
            self._trailer(cid, Status.INTERNAL, "internal error")
        finally:
            if call.timer is not None:
                call.timer.cancel()
            self.proto.closed(cid, spec.streams_responses)
            if call.cost:  # the request body's decode budget
                self.decode.held -= call.cost
                call.cost = 0
            if call.inbound is not None:
                call.inbound.release_all()
            self.sess.calls.discard(call)
            if not self.proto.is_control:
                self.writer.close()

    async def _stream_out(
        self, call: ServerCall, ctx: ServerContext, handler: Callable[..., Any], req: Any
    ) -> None:
        spec = ctx.spec
        w = self.writer
        cid = call.cid
        it = spec.invoke(handler, req)
        if inspect.isawaitable(it):
            it = await it
        if ctx._initial_md:
            w.send(encode_headers(cid, ctx._initial_md))
            ctx._initial_md = None
        dump = spec.dump_response
        high = self.server.config.stream_high_water
        limit = self.server.config.max_message_size
        async for item in it:
            if ctx._initial_md:
                w.send(encode_headers(cid, ctx._initial_md))
                ctx._initial_md = None
            frame = encode_msg(cid, dump(item))
            if len(frame) - codec.HEADER_SIZE > limit:
                raise RpcError(Status.RESOURCE_EXHAUSTED, "response larger than max_message_size")
            w.send(frame)
            pending = w.pending_bytes
            # a tick's frames past the high-water mark, or (checked on the first frame of a tick)
            # a stream that still holds that much unsent: wait (the stream's window is closed)
            if pending >= high or (pending == len(frame) and w.stream_backlog() >= high):
                await w.drain()
        if ctx._initial_md:
            w.send(encode_headers(cid, ctx._initial_md))


_ON_EVENT: dict[type, Callable[[StreamPump, Any, int], bool]] = {
    StartCall: StreamPump._start_call,
    CallMessage: StreamPump._on_message,
    CallEnd: StreamPump._on_end,
    CallCancel: StreamPump._on_cancel,
    HelloAccepted: StreamPump._on_hello,
    HelloRefused: StreamPump._on_hello_refused,
    StartNotify: StreamPump._on_notify,
    ClientLeaving: StreamPump._on_leaving,
    EventsAcked: StreamPump._on_events_acked,
}
"""What the pump does with each event of the protocol (one table for all streams); True: the
frame's decode budget stays with what it was given to."""
