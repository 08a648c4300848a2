"""One client connection, pumped: the control stream, call streams, datagrams and heartbeats.

A :class:`Link` owns a :class:`~kcprpc.protocol.client.ClientProtocol` (call ids, the call table,
the connection state) and does the I/O around it: it reads frames from the control stream and
the call streams and datagrams from the connection, feeds them to the protocol, and acts on what
comes back: a call's frame goes to that call's :class:`~kcprpc.calls.ClientCall`, a push to the
client's :class:`~kcprpc.subscriptions.Subscriptions`, a GOAWAY or a lost connection to the
client (through :class:`LinkHooks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol

from kcprpc.calls import ClientCall
from kcprpc.codec import Frame
from kcprpc.direct_events import ACK_DELAY, ACK_EVERY
from kcprpc.errors import RpcError
from kcprpc.frame_writer import FrameWriter
from kcprpc.heartbeat import Heartbeat, HeartbeatAction, HeartbeatConfig
from kcprpc.inbox import INBOX_LIMIT, ParkingLot
from kcprpc.mux import MuxSession
from kcprpc.protocol.client import (
    CallAborted,
    ClientProtocol,
    ClosedByServer,
    ConnectRefused,
    Draining,
    HeadersReceived,
    NumberedEvent,
    PongReceived,
    Replied,
    RoomChanged,
    Streamed,
    Trailed,
    Welcomed,
)
from kcprpc.protocol.frames import Event, EventAck, Ping, Welcome
from kcprpc.push import send_datagram
from kcprpc.receive import ReceiveLimits, read_datagrams, read_frames
from kcprpc.status import Status
from kcprpc.transport import ByteStream, Connection

__all__ = ["EventSink", "Link", "LinkHooks"]

log = logging.getLogger("kcprpc.client")


class EventSink(Protocol):
    """Takes a pushed event (``unreliable``: it came as a datagram)."""

    def __call__(self, event: Event, unreliable: bool = False) -> None: ...


class LinkHooks(NamedTuple):
    """What a link tells its client."""

    on_event: EventSink  # a push
    on_room: Callable[[bool, str], None]  # the server put the client in (True) or out of a room
    on_draining: Callable[[Link], None]  # the server drains (RPC GOAWAY or a transport GOAWAY)
    on_lost: Callable[[Link, str], None]  # the connection is gone (with why)


def _always() -> bool:
    return True


class Link:
    """One physical connection and its control stream (see the module docstring)."""

    def __init__(
        self,
        conn: Connection,
        control: ByteStream,
        hooks: LinkHooks,
        *,
        max_message_size: int,
        heartbeat: HeartbeatConfig | None,
        receive: tuple[int, int, float | None],
        counters: dict[str, int],
    ) -> None:
        self.conn = conn
        self.hooks = hooks
        self.loop = asyncio.get_running_loop()
        self.writer = FrameWriter(control)
        self.control = control
        self.protocol = ClientProtocol(max_message_size, counters)
        self.calls = self.protocol.calls  # call id -> ClientCall (the protocol's table)
        self.max_message_size = max_message_size
        self.closed = False
        self.goaway = False
        self.peer_reason: str | None = None  # secure mode: why the server closed the transport
        self.peer_error: RpcError | None = None  # the status the server ended the connection with
        self.session_id: str | None = None
        self.welcome: asyncio.Future[Welcome] = self.loop.create_future()
        self.hb = Heartbeat(heartbeat, self.now()) if heartbeat is not None else None
        # WELCOME said the server hears the transport's keepalives: heartbeats go as those (secure
        # KCP: an authenticated PING its transport answers) instead of PING frames through the mux
        self.transport_ping = False
        # what this side sent besides its PINGs (for the heartbeat's skip rule): the mux's framed
        # stream bytes less the PINGs' own; a connection without a mux (in memory) never skips
        mux = getattr(conn, "mux", None)
        self._mux: MuxSession | None = mux if isinstance(mux, MuxSession) else None
        self._ping_bytes = 0
        self.tasks: list[asyncio.Task[Any]] = []
        self.parking = ParkingLot(conn.max_paused_streams, INBOX_LIMIT)
        # pushed events that come before the WELCOME (replays, the session's own events) are held
        # until it was handled (release_held): only then does the client know which session they
        # are of, so a new session's events follow the news that the old one is gone; numbered
        # direct events (kcprpc.direct_events) are then handled and acknowledged
        self._held: list[Event | NumberedEvent] | None = []
        self.last_direct = 0
        """The number of the last numbered direct event handled for the session (0: none)."""
        self._unacked = 0
        self._ack_timer: asyncio.TimerHandle | None = None
        decoded, partial, partial_timeout = receive
        self.receive = ReceiveLimits(
            max_decoded_bytes=decoded,
            max_partial_frame_bytes=partial,
            partial_frame_timeout=partial_timeout,
            held_types=(),  # per body only: a hostile server is out of scope, streams pay nothing
            parking=self.parking,
            counters=counters,
        )
        # what to do with each event of the protocol (one argument: the event)
        self._on_event: dict[type, Callable[[Any], Any]] = {
            Replied: self._replied,
            Streamed: self._streamed,
            Trailed: self._trailed,
            HeadersReceived: self._headers,
            CallAborted: self._aborted,
            Event: self._event,  # a reliable push: on_event(event), unreliable=False
            NumberedEvent: self._numbered,
            PongReceived: self._pong,
            RoomChanged: self._room,
            Welcomed: self._welcomed,
            ConnectRefused: self._refused,
            Draining: self._draining,
            ClosedByServer: self._closed_by_server,
        }

    def now(self) -> int:
        return int(self.loop.time() * 1000)

    def next_id(self) -> int:
        return self.protocol.next_id()

    # Peer protocol (push.route)
    def send_frame(self, frame: bytes, unreliable: bool = False) -> None:
        self.writer.send(frame)

    def send_datagram(self, frame: bytes) -> bool:
        return not self.closed and send_datagram(self.conn, frame, self.conn.max_datagram_size)

    # ------------------------------------------------------------------ frames in
    def on_frames(self, frames: list[Frame], costs: list[int]) -> None:
        """A batch of frames from the control stream. The client's decoder charges no frame type
        to its budget (each body is only checked against ``max_decoded_bytes`` on its own), so
        ``costs`` is empty."""
        self._on_frames(frames, True)

    def on_call_frames(self, frames: list[Frame], costs: list[int]) -> None:
        """A batch of frames from a call's own stream (numbered events come on the control stream
        only: one here is a bad frame)."""
        self._on_frames(frames, False)

    def _on_frames(self, frames: list[Frame], control: bool) -> None:
        if self.hb is not None:
            self.hb.last_receive = self.now()
        receive = self.protocol.receive
        on_event = self._on_event
        for ftype, cid, body in frames:
            out = receive(ftype, cid, body)
            if out is None:
                continue
            if not control and type(out) is NumberedEvent:
                self.protocol.counters["bad_frames"] += 1
                continue
            if type(out) is Replied:  # the hot path: a unary reply, inline (as _replied)
                out.handle.on_reply(out.payload, out.initial_metadata, out.trailing_metadata)
            elif type(out) is bytes:
                self.writer.send(out)
            else:
                on_event[type(out)](out)

    def _replied(self, ev: Replied) -> None:
        call: ClientCall = ev.handle
        call.on_reply(ev.payload, ev.initial_metadata, ev.trailing_metadata)

    def _streamed(self, ev: Streamed) -> None:
        call: ClientCall = ev.handle
        call.on_message(ev.payload)

    def _trailed(self, ev: Trailed) -> None:
        call: ClientCall = ev.handle
        call.on_trailer(ev.error, ev.metadata)

    def _headers(self, ev: HeadersReceived) -> None:
        call: ClientCall = ev.handle
        call.on_headers(ev.metadata)

    def _aborted(self, ev: CallAborted) -> None:
        call: ClientCall = ev.handle
        call.abort(ev.error, ev.cancel)

    def _event(self, ev: Event) -> None:
        held = self._held
        if held is not None:
            held.append(ev)
            return
        self.hooks.on_event(ev)

    def _numbered(self, ev: NumberedEvent) -> None:
        held = self._held
        if held is not None:
            held.append(ev)
            return
        self.hooks.on_event(ev.event)
        self.last_direct = ev.number
        self._unacked += 1
        if self._unacked >= ACK_EVERY:
            self.send_ack()
        elif self._ack_timer is None:
            self._ack_timer = self.loop.call_later(ACK_DELAY, self.send_ack)

    def release_held(self, last: int) -> None:
        """The WELCOME was handled: handle the events held until now, in order. ``last``: the
        number of the last direct event handled for its session (the claim's on a resume, 0 for a
        new session)."""
        held, self._held = self._held, None
        self.last_direct = last
        for ev in held or ():
            if isinstance(ev, NumberedEvent):
                self._numbered(ev)
            else:
                self.hooks.on_event(ev)

    def send_ack(self) -> None:
        """Acknowledge the numbered direct events handled so far (an EVENT_ACK frame)."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._unacked and not self.closed:
            self._unacked = 0
            self.writer.send(EventAck(self.last_direct).encode())

    def _pong(self, ev: PongReceived) -> None:
        self.pong(ev.nonce)

    def pong(self, nonce: int) -> None:
        """The answer to heartbeat ``nonce``: a PONG frame, or the transport's answer to its keepalive."""
        if self.hb is not None:
            self.hb.on_pong(nonce, self.now())

    def _room(self, ev: RoomChanged) -> None:
        self.hooks.on_room(ev.joined, ev.room)

    def _welcomed(self, ev: Welcomed) -> None:
        hb_ms = ev.welcome.heartbeat_ms
        if self.hb is not None and type(hb_ms) is int and hb_ms > 0:
            self.hb.limit_interval(hb_ms * 5 // 2)  # the server sweeps at its own interval
        self.transport_ping = ev.welcome.transport_ping is True
        if self.transport_ping:  # HELLO said tping too: liveness is the transport's, the mux goes quiet
            self.conn.use_transport_keepalive()
        ack_hold = ev.welcome.ack_hold
        if type(ack_hold) is int and ack_hold > 0:  # the server asks for held acks (docs/tuning.md)
            self.conn.hold_acks(ack_hold)
        if not self.welcome.done():
            self.welcome.set_result(ev.welcome)

    def _refused(self, ev: ConnectRefused) -> None:
        if not self.welcome.done():
            self.welcome.set_exception(ev.error)
        self.hooks.on_draining(self)

    def _draining(self, ev: Draining) -> None:
        if self.peer_reason is None:  # why the link will end, unless the server says more then
            err = ev.error
            self.peer_reason = f"the server is draining: {err.status.name}: {err.message}"
        self.hooks.on_draining(self)

    def _closed_by_server(self, ev: ClosedByServer) -> None:
        if not self.closed:
            err = ev.error
            self.peer_error = err
            self.hooks.on_lost(self, f"closed by the server: {err.status.name}: {err.message}")

    # ------------------------------------------------------------------ tasks
    async def read_control(self) -> None:
        ended = "connection closed"
        try:
            await read_frames(
                self.control,
                self.on_frames,
                max_message_size=self.max_message_size,
                limits=self.receive,
                control=_always,
            )
        except (ConnectionError, OSError, EOFError, asyncio.IncompleteReadError) as exc:
            if isinstance(exc, ConnectionError) and str(exc):  # the mux's error says why the transport ended
                ended = f"connection closed ({exc})"
        except Exception as exc:
            # a bug in handling what came: the link is lost (and reconnects), never silent
            log.exception("reading the control stream failed")
            ended = f"internal error reading the control stream: {type(exc).__name__}: {exc}"
        self.hooks.on_lost(self, self.peer_reason or ended)

    async def read_datagrams(self) -> None:
        await read_datagrams(self.conn, self._on_datagram, self._bad_datagram)

    def _bad_datagram(self) -> None:
        self.protocol.counters["bad_frames"] += 1

    def _on_datagram(self, ftype: int, cid: int, body: Any) -> None:
        if self.hb is not None:
            self.hb.last_receive = self.now()
        out = self.protocol.receive_datagram(ftype, cid, body)
        if type(out) is Event:
            self.hooks.on_event(out, True)
        elif out is not None and type(out) is not bytes:
            self._on_event[type(out)](out)

    async def heartbeat(self) -> None:
        hb = self.hb
        assert hb is not None
        mux = self._mux
        while not self.closed:
            activity = mux.bytes_sent - self._ping_bytes if mux is not None else 0
            if self.transport_ping:  # our transport's acks reach the server's silence check too
                activity += self.conn.packets_sent()
            action, nonce = hb.poll(self.now(), activity)
            if action is HeartbeatAction.DEAD:
                self.hooks.on_lost(self, "peer did not answer heartbeats")
                return
            if action is HeartbeatAction.PING and not (self.transport_ping and self.conn.ping(nonce)):
                rtt_us = int(hb.srtt_ms * 1000) if hb.srtt_ms is not None else None
                ping = Ping(nonce, rtt_us).encode()
                self._ping_bytes += len(ping)
                self.writer.send(ping)
            await asyncio.sleep(hb.next_wakeup(self.now()) / 1000.0)

    async def open_call_writer(self) -> tuple[FrameWriter, list[ClientCall]]:
        """A new stream for one call (stream framing): its writer, and the box the call goes in
        (its reader pauses the stream while the call's queue is full)."""
        stream = await self.conn.open_stream()
        w = FrameWriter(stream)
        box: list[ClientCall] = []
        t = self.loop.create_task(self._read_call_stream(stream, box))
        self.tasks.append(t)
        t.add_done_callback(self._forget_task)
        return w, box

    def _forget_task(self, t: asyncio.Task[Any]) -> None:
        with contextlib.suppress(ValueError):
            self.tasks.remove(t)

    async def _read_call_stream(self, stream: ByteStream, box: list[ClientCall]) -> None:
        def pause() -> Awaitable[None] | None:
            # a slow consumer of a streaming call stops the reading of its stream: the mux window
            # then pushes back on the server (as long as the connection's parking budget allows)
            if box and box[0].queue is not None:
                return self.parking.pause(box[0].queue, box[0].overflow)
            return None

        with contextlib.suppress(ConnectionError, OSError, EOFError, asyncio.IncompleteReadError):
            await read_frames(
                stream,
                self.on_call_frames,
                max_message_size=self.max_message_size,
                pause=pause,
                limits=self.receive,
            )
        # the stream ended (the server refused it at max_streams_total, the mux reset it) and the
        # call is still waiting for its status: an EOF before the end cancels the call (without
        # this, a call with no deadline waited for good)
        if box and not box[0].done and not self.closed:
            box[0].fail(RpcError(Status.CANCELLED, "the server ended the call's stream before its status"))

    def shutdown(self, err: RpcError) -> None:
        if self.closed:
            return
        self.closed = True
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if not self.welcome.done():  # lost before WELCOME: the connect fails now, with why
            self.welcome.set_exception(err)
            self.welcome.exception()  # retrieved: a connect that gave up already does not log it
        self.protocol.close()
        self.receive.close()
        for call in list(self.calls.values()):
            call.fail(err)
        self.calls.clear()
        for t in self.tasks:
            t.cancel()
