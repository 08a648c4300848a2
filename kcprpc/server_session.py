"""One connected client on the server: :class:`ServerSession` (``ctx.session`` in handlers), the
state of one running call (:class:`ServerCall`), and the send bounds of a client that stops
reading (docs/rpc.md, "Clients that stop reading")."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, Protocol

from kcp.logutil import RateLimitedLog
from kcprpc import codec
from kcprpc.broker import BrokerMessage
from kcprpc.codec import CALL, MSG, Refused, encode_frame
from kcprpc.direct_events import DirectRing
from kcprpc.errors import UsageError
from kcprpc.frame_writer import FrameWriter, SendGuard
from kcprpc.heartbeat import SendStall
from kcprpc.inbox import INBOX_LIMIT, Inbox, ParkingLot
from kcprpc.protocol.frames import encode_goaway
from kcprpc.protocol.server import MethodEntry, ServerLimits, ServerProtocol
from kcprpc.push import PushHub, route, send_datagram
from kcprpc.receive import ReceiveLimits, ReceiveTotal
from kcprpc.send_lanes import Put, SendLanes, encode_keyed_event
from kcprpc.server_config import ServerConfig
from kcprpc.service import Delivery, MethodSpec, event_info, event_send
from kcprpc.status import Status
from kcprpc.transport import (
    ByteStream,
    Connection,
    NoTransportKeepalive,
    ReceiveHeld,
    SendBacklog,
    close_code,
    spawn,
)
from kcprpc.transport_events import TransportEvent

log = logging.getLogger("kcprpc.server")

__all__ = ["END_OF_REQUESTS", "DetachedConnection", "ServerCall", "ServerHost", "ServerSession"]

_slow_log = RateLimitedLog(log, burst=10, interval=60.0)
"""Sessions ended for what they made the server hold (slow consumers; receive memory, streams and
memberships past the process-wide bounds): at most 10 lines a minute per label (a flood of them
must not flood the log)."""


# why a call's task was cancelled
CANCEL_CLIENT, CANCEL_DEADLINE, CANCEL_SHUTDOWN, CANCEL_OVERFLOW, CANCEL_REFUSED = 1, 2, 3, 4, 5


class ServerCall:
    __slots__ = ("cid", "cost", "ctx", "inbound", "reason", "refusal", "started", "task", "timer", "writer")

    def __init__(self, cid: int, writer: FrameWriter) -> None:
        self.cid = cid
        self.writer = writer
        self.ctx: Any = None  # its ServerContext (kcprpc.context sits above this module)
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.inbound: Inbox | None = None
        self.reason = 0
        self.cost = 0  # decode budget held by the CALL body until the call ends
        self.started = False
        self.refusal = ""

    def overflow(self) -> None:
        self.cancel(CANCEL_OVERFLOW)

    def refuse(self, refused: Refused) -> None:
        """A message of this call was refused by a receive budget: fail it (RESOURCE_EXHAUSTED)."""
        self.refusal = refused.reason
        self.cancel(CANCEL_REFUSED)

    def cancel(self, reason: int) -> None:
        task = self.task
        if task is not None and not task.done():
            if not self.reason:
                self.reason = reason
            if self.started:
                task.cancel()
            else:  # a task cancelled before its first step never runs its finally: let it start
                task.get_loop().call_soon(task.cancel)


END_OF_REQUESTS: Final = object()
"""What a streaming call's inbox holds after its last request (END or the stream's end)."""


class ServerSession:
    """One connected client, as seen by the server (``ctx.session`` in handlers)."""

    # its own attributes in slots: a push reads ``closed`` and ``control`` of every member, and a
    # slot is one read at a fixed offset where the instance dict was a lookup in another object.
    # ``__dict__`` stays: an application may keep its own attributes on a session
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_drop_unreliable_at",
        "_held_events",
        "_lw_epoch",
        "_lw_seq",
        "_pump",
        "backlog_probe",
        "calls",
        "closed",
        "conn",
        "control",
        "detached",
        "detaches",
        "direct",
        "direct_report",
        "expiry",
        "held_events_bytes",
        "id",
        "lanes",
        "last_receive",
        "loop",
        "may_resume",
        "memberships",
        "metadata",
        "numbered",
        "parking",
        "path_changes",
        "presence",
        "progress_probe",
        "protocol",
        "receive",
        "receive_probe",
        "resume_token",
        "resume_window",
        "resumed_into",
        "rooms",
        "send_backlog",
        "send_guard",
        "send_limit",
        "server",
        "stall",
        "state",
        "streams",
        "topics",
    )

    _ids = itertools.count(1)

    def __init__(self, server: ServerHost, conn: Connection) -> None:
        self.server = server
        self.conn = conn
        self.id = f"{os.getpid():x}-{next(self._ids)}"
        self.metadata: dict[str, Any] = {}
        self.state: dict[str, Any] = {}  # free for the application
        self.presence: dict[str, Any] = {}  # its info in presence listings and events (kcprpc.presence)
        self.rooms: set[str] = set()
        self.topics: set[str] = set()
        self.memberships = 0  # bytes its rooms and topics cost (kcprpc.push.PushHub counts them)
        self.path_changes = 0  # secure mode: times this client moved to a new address
        self.streams = 0  # streams open on this session's connection (the server's stream bound)
        self.closed = False
        cfg = server.config
        # -- resume (docs/rpc.md, "Resume: the same session after a reconnect") --
        self.resume_window: float | None = cfg.resume_window
        """Seconds this session is kept for a resume once its connection is lost (read when it
        detaches: set it in ``on_connect`` or ``on_detach``; None or 0: gone at once)."""
        self.detached = False  # its connection was lost; it may resume (nothing is sent to it)
        self.detaches = 0  # times its connection was lost and it was kept for a resume
        self.may_resume = True  # False once it ended on purpose or as a penalty (slow consumer)
        self.resume_token: bytes | None = None  # the token of its last WELCOME (used once)
        self.resumed_into: ServerSession | None = None  # a new connection's session that resumed another
        self.expiry: asyncio.TimerHandle | None = None  # while detached: when the window ends
        # the protocol state of this connection (sans-I/O): call tables, limits, HELLO/WELCOME
        self.protocol = ServerProtocol(
            server.method_table,
            ServerLimits(
                cfg.max_concurrent_calls,
                cfg.max_subscriptions,
                cfg.max_metadata_size,
                cfg.max_concurrent_notifications,
            ),
            server.stats,
            self.topics,
        )
        self.control: FrameWriter | None = None
        self.loop = asyncio.get_running_loop()
        self.last_receive = self.loop.time()
        self.calls: set[ServerCall] = set()
        self.parking = ParkingLot(conn.max_paused_streams, INBOX_LIMIT)
        # the send side (docs/rpc.md, "Clients that stop reading"): what the transport holds for
        # this client, checked after every write (O(1)) and by the sweep (with the stall watch)
        self.send_limit = cfg.max_send_backlog
        self._drop_unreliable_at = cfg.max_send_backlog // 8
        bounds = conn.send_bounds
        self.backlog_probe: Callable[[], int] | None = bounds.send_backlog if bounds is not None else None
        self.progress_probe: Callable[[], int] | None = bounds.send_progress if bounds is not None else None
        self.send_backlog = 0  # bytes held for this client, as of the last check
        # checked after every 1/32 of the bound written (at most 64 KiB): the bound holds within that
        self.send_guard = (
            SendGuard(self.check_send, min(64 * 1024, cfg.max_send_backlog // 32))
            if self.backlog_probe is not None
            else None
        )
        timeout = cfg.slow_consumer_timeout
        self.stall = (
            SendStall(max(1, int(timeout * 1000)))
            if timeout is not None and self.backlog_probe is not None and self.progress_probe is not None
            else None
        )
        # send lanes (docs/rpc.md, "Latest-wins and priorities"): made on first use
        self.lanes: SendLanes | None = None
        # reliable events sent while detached, for the resume (hold); past the buffer: None
        self._held_events: list[bytes] | None = None
        self.held_events_bytes = 0
        # numbered direct events (kcprpc.direct_events), for a client that takes them (its HELLO)
        self.numbered = False
        self.direct: DirectRing | None = None  # made on the first one
        self.direct_report: list[int] | None = None  # a resume's [replayed, missed], for its WELCOME
        self._pump: asyncio.Handle | None = None
        self._lw_seq = 0  # keyed events sent to this session only: their order
        self._lw_epoch = int.from_bytes(os.urandom(4), "big") >> 1  # ... within this session
        decoded, partial = server.config.receive_limits()
        self.receive = ReceiveLimits(
            max_decoded_bytes=decoded,
            max_partial_frame_bytes=partial,
            partial_frame_timeout=server.config.partial_frame_timeout,
            held_types=(CALL, MSG),
            parking=self.parking,
            counters=server.stats,
            total=server.receive_total,  # all clients together: max_receive_total
            owner=self,
        )
        held = conn.receive_bounds
        self.receive_probe: Callable[[], int] | None = held.receive_held if held is not None else None
        if held is not None:  # an out-of-order buffer that grows is counted as it grows
            held.watch_receive(self._receive_grew)

    @property
    def ready(self) -> bool:
        """True once the HELLO was answered with WELCOME (until the server drains)."""
        return self.protocol.ready

    @property
    def rtt_ms(self) -> float | None:
        """The client's smoothed RTT in ms, as it reports it in its PING frames; until it has (its
        heartbeats go as transport keepalives, WELCOME's ``tping``), the transport's own estimate
        (KCP's smoothed RTT of what the server sent), or None when there is none yet."""
        rtt = self.protocol.rtt_ms
        if rtt is None:
            st = self.conn.stats()  # KCP's: an RTT sample comes with the ack of the first segment sent
            return float(st["srtt"]) if "srtt" in st and st.get("out_segs", 0) > 0 else None
        return rtt

    @property
    def active_calls(self) -> int:
        """Calls of this session running now."""
        return self.protocol.active_calls

    @property
    def streaming_calls(self) -> int:
        """Server-streaming and bidi calls of this session running now."""
        return self.protocol.streaming_calls

    @property
    def notify_running(self) -> int:
        """Notify handlers of this session running now."""
        return self.protocol.notify_running

    @property
    def remote_address(self) -> Any:
        """The client's address (in secure mode it follows the client when its path changes)."""
        return self.conn.remote_address

    @property
    def peer_public_key(self) -> bytes | None:
        """Secure mode: the client's static public key when it ran the pinned-key handshake (its
        identity, also given to the server's ``authorize`` hook), else None."""
        return self.conn.peer_public_key

    # -- Peer protocol (push.route) --
    def send_frame(self, frame: bytes, unreliable: bool = False) -> None:
        """Queue a frame on the control stream. An ``unreliable`` frame (an unreliable event too big
        for a datagram) is dropped and counted instead while much is already waiting for this
        client (more than ``max_send_backlog // 8``): it is never worth queueing behind a backlog.
        While the session is detached a reliable frame is held for its resume (:meth:`hold`)."""
        if self.control is not None:
            if unreliable and self.send_backlog > self._drop_unreliable_at:
                self.server.stats["unreliable_dropped"] += 1
                return
            self.control.send(frame)
        elif self.detached:
            self.hold(frame, unreliable)

    def send_direct(self, frame: bytes) -> None:
        """A reliable EVENT frame for this session alone: numbered when its client takes numbered
        events (kept until it acknowledges it, for a resume), then queued on the control stream;
        while detached, held (:meth:`hold`)."""
        if not self.numbered:
            self.send_frame(frame)
            return
        if self.closed and not self.detached:  # gone: nothing is kept for it
            return
        control = self.control
        if control is not None:
            ring = self.direct
            if ring is None:
                ring = self.direct = DirectRing(self.server.stats)
            control.send(ring.number(frame))
            limit = self.server.config.detached_send_buffer
            if ring.bytes > limit:
                ring.trim(limit)
        elif self.detached:
            self.hold(frame, False, True)

    def hold(self, frame: bytes, unreliable: bool, direct: bool = False) -> None:
        """A frame for this detached session (``direct``: a reliable event sent to it alone): a
        reliable one is held for its resume (sent first when it resumes), an unreliable one
        dropped (``unreliable_dropped``). Past ``ServerConfig.detached_send_buffer`` bytes the
        session is gone: its client's resume then fails with ``SessionExpired``, so it knows it
        missed something (before, such events were dropped and counted as sent). A client that
        takes numbered events is told exactly instead: the oldest numbered ones are forgotten
        first, and its resume reports how many it missed."""
        server = self.server
        if unreliable:
            server.stats["unreliable_dropped"] += 1
            return
        if self.numbered:
            self._hold_numbered(frame, direct)
            return
        held = self._held_events
        if held is None:
            if self.held_events_bytes:  # over the buffer already: the session is being ended
                return
            held = self._held_events = []
        n = self.held_events_bytes + len(frame)
        if n > server.config.detached_send_buffer:
            server.stats["detached_events_overflowed"] += 1
            self._held_events = None
            self.held_events_bytes = n
            self.may_resume = False  # also when a resume has already claimed it (on_resume runs)
            spawn(server.tasks, server.end_detached(self))
            return
        held.append(frame)
        self.held_events_bytes = n
        server.stats["detached_events_held"] += 1
        server.detached_grew(self, len(frame))

    def _hold_numbered(self, frame: bytes, direct: bool) -> None:
        server = self.server
        if not self.may_resume:  # over the buffer already (or ended): the session is being ended
            return
        ring = self.direct
        if ring is None:
            ring = self.direct = DirectRing(server.stats)
        before = ring.bytes
        if direct:
            ring.number(frame)
        else:
            ring.hold(frame)
        if ring.trim(server.config.detached_send_buffer):  # held frames alone are over the buffer
            server.stats["detached_events_overflowed"] += 1
            self.direct = None
            self.may_resume = False
            spawn(server.tasks, server.end_detached(self))
            return
        server.stats["detached_events_held"] += 1
        server.detached_grew(self, ring.bytes - before)

    def send_held(self, last: int = 0) -> None:
        """On a resume (:meth:`adopt`): send what was held for this session while it was detached,
        before anything sent to it from then on; to a client that takes numbered events, also
        what it had not received of them (after ``last``, the number it names)."""
        ring = self.direct
        if ring is not None:
            frames, replayed, missed = ring.resume(last)
            self.direct_report = [replayed, missed]
            control = self.control
            if control is not None:
                for frame in frames:
                    control.send(frame)
            return
        if self.numbered:
            self.direct_report = [0, 0]
        held, self._held_events = self._held_events, None
        self.held_events_bytes = 0
        control = self.control
        if held and control is not None:
            for frame in held:
                control.send(frame)

    # -- the send bounds --
    def check_send(self) -> None:
        """After every ``SendGuard.every`` bytes this session's writers wrote (O(1)), and from the
        sweep: past ``max_send_backlog`` the session ends as a slow consumer; past
        ``max_send_backlog_total`` the server sheds the largest backlogs."""
        if self.backlog_probe is None or self.closed:
            return
        b = self.held_for_client()
        server = self.server
        delta = b - self.send_backlog
        self.send_backlog = b
        waits = b - self.direct_held  # (direct_held: read, and not acknowledged yet)
        if waits > self.send_limit:
            server.backlog_changed(delta, shed=False)
            self.end_slow_consumer(
                "slow_consumers",
                f"{waits} bytes unsent or unacknowledged, over max_send_backlog ({self.send_limit})",
            )
        else:
            server.backlog_changed(delta)

    def held_for_client(self) -> int:
        """Bytes held for this client: what its transport holds unsent or unacknowledged, the
        events waiting in its send lanes (each lane bounded per session; both count against
        ``max_send_backlog``), and the numbered direct events it has not acknowledged
        (:attr:`direct_held`, bounded by ``detached_send_buffer`` instead: a client acknowledges
        them only every 2 s). All of it counts against the process-wide
        ``max_send_backlog_total``."""
        probe = self.backlog_probe
        held = probe() if probe is not None else 0
        lanes = self.lanes
        if lanes is not None:
            held += lanes.queued_bytes
        ring = self.direct
        return held + ring.bytes if ring is not None else held

    @property
    def direct_held(self) -> int:
        """Bytes of numbered direct events kept until the client acknowledges them."""
        ring = self.direct
        return ring.bytes if ring is not None else 0

    def end_slow_consumer(self, counter: str, why: str) -> None:
        """End this session now because it does not read what it is sent: count it (``counter``),
        tell the client (RESOURCE_EXHAUSTED "slow consumer: <why>", as an OOB GOAWAY datagram and,
        in secure mode, in the transport's authenticated CLOSE), drop what waits for it."""
        self.end_exhausted(counter, "slow consumer", why)

    def receive_held(self) -> int:
        """Bytes this client made the server hold on the receive side: frames received in part
        (reserved whole) and what the connection received and nobody read yet. Not the decode
        budget's charges: they are worst-case estimates per running call (a server with
        thousands of long calls holds them legitimately), bounded per connection by
        ``max_decoded_bytes``."""
        probe = self.receive_probe
        return self.receive.frames.used + (probe() if probe is not None else 0)

    def _receive_grew(self) -> None:
        """The connection holds more out of order (a KCP receive buffer above a hole, grown by a
        step): the process total counts it now, not at its next periodic count."""
        if not self.closed:
            self.server.receive_total.grew(self)

    def end_exhausted(self, counter: str, label: str, why: str) -> None:
        """End this session now, as a penalty (never resumable), for holding too much: count it
        (``counter``), tell the client (RESOURCE_EXHAUSTED "<label>: <why>", as an OOB GOAWAY
        datagram and, in secure mode, in the transport's authenticated CLOSE), drop what waits for
        it. ``label`` is "slow consumer" (the send side), or "receive memory", "streams" or
        "memberships" (:mod:`kcprpc.process_bounds`)."""
        if self.closed:
            return
        self.closed = True
        self.may_resume = False  # a penalty: never resumable
        server = self.server
        server.stats[counter] += 1
        server.backlog_released(self.send_backlog)
        self.send_backlog = 0
        message = f"{label}: {why}"
        _slow_log.warning(label, "session %s (%s): %s", self.id, self.remote_address, message)
        if self.control is not None:
            self.control.discard()
        self._stop_lanes()
        for call in list(self.calls):  # their replies would not be read: stop the work now
            call.cancel(CANCEL_CLIENT)
        goaway = encode_goaway(Status.RESOURCE_EXHAUSTED, message[:200])
        for _ in range(2):  # a lost datagram costs the client a heartbeat timeout; a duplicate nothing
            send_datagram(self.conn, goaway, self.conn.max_datagram_size)
        spawn(server.tasks, self._abort(message))

    async def _abort(self, message: str) -> None:
        try:
            await self.conn.abort(close_code(Status.RESOURCE_EXHAUSTED), message[:500])
        except Exception:
            log.warning("session %s: closing the connection failed", self.id, exc_info=False)

    def send_datagram(self, frame: bytes) -> bool:
        """Send a frame as one OOB datagram if it fits."""
        return not self.closed and send_datagram(self.conn, frame, self.conn.max_datagram_size)

    # -- push API --
    def send(
        self,
        event: Any,
        *,
        delivery: Delivery | str | None = None,
        key: str | None = None,
        lane: str | None = None,
    ) -> None:
        """Push one typed event to this session only.

        ``key``: its latest-wins key (e.g. ``"entity:42"``): a newer event of the same key replaces
        this one while it still waits in its lane, and the client drops one older than what it
        already has for that key. ``lane``: the send lane (priority class) it waits in. Both
        default to what the event type declares (``@event(key=..., lane=...)``); with neither, the
        event is sent at once, as before (docs/rpc.md, "Latest-wins and priorities")."""
        name, default, adapter = event_info(type(event))
        if key is not None and type(key) is not str:
            raise UsageError(f"send(key=...) is a str (a latest-wins key, e.g. an entity id), not {key!r}")
        if self.control is not None:  # (detached: held for the resume, counted there)
            self.server.stats["events_sent"] += 1
        decl = event_send(name)
        if decl is None and key is None and lane is None:  # the default path, as before
            frame = encode_frame(codec.EVENT, 0, [name, adapter.dump_python(event), None, None, None])
            d = Delivery(delivery) if delivery is not None else default
            if d is Delivery.RELIABLE:
                self.send_direct(frame)
            else:
                route(self, frame, d)
            return
        if decl is not None:
            if key is None and decl.key_field is not None:
                key = str(getattr(event, decl.key_field))
            lane = lane if lane is not None else decl.lane
        payload = adapter.dump_python(event)
        d = Delivery(delivery) if delivery is not None else default
        if key is None and lane is None:
            frame = encode_frame(codec.EVENT, 0, [name, payload, None, None, None])
            if d is Delivery.RELIABLE:
                self.send_direct(frame)
            else:
                route(self, frame, d)
            return
        cfg = self.server.config.lanes
        lane_name = lane if lane is not None else cfg.default_lane
        cfg.lane(lane_name)  # UsageError for a lane that does not exist
        if key is None:
            frame = encode_frame(codec.EVENT, 0, [name, payload, None, None, None])
        else:
            self._lw_seq += 1
            frame = encode_keyed_event(name, payload, None, self._lw_seq, self._lw_epoch, key)
        self.enqueue(frame, lane_name, None if key is None else "\0" + key, d is Delivery.UNRELIABLE)

    # -- send lanes (kcprpc.send_lanes) --
    def enqueue(
        self, frame: bytes, lane: str, key: str | None, unreliable: bool, order: str | None = None
    ) -> None:
        """Queue an EVENT frame in ``lane`` (``key``: replace an older frame of that key still
        waiting; ``order``: the room or topic of a reliable frame, kept in order with its others);
        the pump hands it to the transport while it holds less than ``ServerConfig.lanes.window``
        bytes for this client. A full lane ends this session as a slow consumer (an unreliable
        frame may be refused instead: ``"refuse"``)."""
        if self.closed or self.control is None:
            if self.detached:
                self.hold(frame, unreliable, order is None)
            return
        lanes = self.lanes
        if lanes is None:
            lanes = self.lanes = SendLanes(self.server.config.lanes, self.server.stats)
        if lanes.put(frame, lane, key, unreliable, order) == Put.OVERFLOW:
            self.end_slow_consumer("slow_consumers", f"send lane {lane!r} over its max_bytes")
            return
        if self._pump is None:
            self._pump = self.loop.call_soon(self.pump)

    def pump(self) -> None:
        """Hand waiting lane frames to the transport, by priority, while it holds less than the
        lanes' window for this client; look again after ``lanes.interval`` while some wait."""
        if self._pump is not None:  # called directly (a test's simulated clock): one pump pending at most
            self._pump.cancel()
        self._pump = None
        lanes = self.lanes
        control = self.control
        if lanes is None:
            return
        if self.closed or control is None:
            lanes.clear()
            return
        cfg = self.server.config.lanes
        probe = self.backlog_probe
        budget = cfg.window - control.pending_bytes - (probe() if probe is not None else 0)
        if budget > 0:
            for frame, unreliable, direct in lanes.take(budget):
                if unreliable:
                    route(self, frame, Delivery.UNRELIABLE)
                elif direct:
                    self.send_direct(frame)
                else:
                    control.send(frame)
        if lanes.queued_bytes and not self.closed:
            self._pump = self.loop.call_later(cfg.interval, self.pump)

    def _stop_lanes(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        if self.lanes is not None:
            self.lanes.clear()

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
        """Disconnect this client (for good: the session is not kept for a resume; a detached one
        is gone now, ``on_disconnect`` runs)."""
        self.may_resume = False
        if self.detached:
            await self.server.end_detached(self)
            return
        await self.conn.close()

    # -- resume: the session outlives its connection (docs/rpc.md, "Resume")
    def release(self) -> None:
        """The connection is lost and the session kept for a resume (``detached``): let go of the
        connection's parts (the connection itself, its writers, send and receive bounds; its calls were
        cancelled). Its id, ``state``, ``metadata``, rooms and topics stay; nothing is sent to it."""
        self.closed = True
        self.detached = True
        lanes = self.lanes
        waiting = list(lanes.take(lanes.queued_bytes)) if lanes is not None and lanes.queued_bytes else []
        self._stop_lanes()
        for frame, unreliable, direct in waiting:  # accepted, not yet handed to the transport: held
            self.hold(frame, unreliable, direct)
        held = self.conn.receive_bounds
        if held is not None:
            held.watch_receive(None)
        self.conn = DetachedConnection(self.conn.remote_address, self.conn.peer_public_key)
        self.control = None
        self.calls = set()
        self.backlog_probe = self.progress_probe = self.receive_probe = None
        self.send_guard = None
        self.stall = None
        self.send_backlog = 0
        self.protocol, self.receive, self.parking = _detached_parts()  # shared, closed: ~1 KiB a session

    def adopt(self, new: ServerSession, last: int = 0) -> None:
        """Resume: take the connection of ``new`` (the session a resuming HELLO arrived on, not yet
        welcomed) as this session's own. ``new`` forwards to this one from now on
        (``new.resumed_into``), for the pumps of its connection. ``last``: the last numbered
        direct event its client handled (its claim says)."""
        self.conn = new.conn
        self.protocol = new.protocol
        self.protocol.topics = self.topics  # they count against max_subscriptions
        self.control = new.control
        self.loop = new.loop
        self.last_receive = new.last_receive
        self.calls = new.calls
        self.parking = new.parking
        self.send_limit = new.send_limit
        self.backlog_probe = new.backlog_probe
        self.progress_probe = new.progress_probe
        self.send_backlog = new.send_backlog
        self.send_guard = new.send_guard
        if self.send_guard is not None:
            self.send_guard.check = self.check_send
        self.stall = new.stall
        self.receive = new.receive
        self.receive.frames.owner = self  # what the process total sheds is this session now
        self.receive_probe = new.receive_probe
        held = self.conn.receive_bounds
        if held is not None:
            held.watch_receive(self._receive_grew)
        self.path_changes += new.path_changes
        self.detached = False
        self.closed = False
        new.resumed_into = self
        new.closed = True
        self.send_held(last)  # first: before what is sent to it from now on (its replays, its WELCOME)


_DETACHED_PARTS: list[tuple[ServerProtocol, ReceiveLimits, ParkingLot]] = []


def _detached_parts() -> tuple[ServerProtocol, ReceiveLimits, ParkingLot]:
    """The closed protocol, receive budgets and parking lot every detached session shares in place
    of its own (nothing arrives for it: a resume brings the new connection's)."""
    if not _DETACHED_PARTS:
        protocol = ServerProtocol({}, ServerLimits(), {})
        protocol.close()
        parking = ParkingLot(0, INBOX_LIMIT)
        receive = ReceiveLimits(
            max_decoded_bytes=1,
            max_partial_frame_bytes=1,
            partial_frame_timeout=None,
            held_types=(),
            parking=parking,
            counters={},
        )
        receive.close()
        _DETACHED_PARTS.append((protocol, receive, parking))
    return _DETACHED_PARTS[0]


class DetachedConnection(NoTransportKeepalive):
    """What a detached session holds instead of its lost connection: the last address and the
    peer's key (read by ``remote_address`` / ``peer_public_key``), nothing else (it is closed)."""

    def __init__(self, remote_address: Any, peer_public_key: bytes | None) -> None:
        self._remote = remote_address
        self._peer_key = peer_public_key

    async def open_stream(self) -> ByteStream:
        """Raises ``ConnectionError``: the connection is gone."""
        raise ConnectionError("session detached")

    async def accept_stream(self) -> ByteStream:
        """Raises ``ConnectionError``: the connection is gone."""
        raise ConnectionError("session detached")

    def send_datagram(self, data: bytes) -> None:
        """Raises ``ConnectionError``: the connection is gone."""
        raise ConnectionError("session detached")

    async def recv_datagram(self) -> bytes:
        """Raises ``ConnectionError``: the connection is gone."""
        raise ConnectionError("session detached")

    @property
    def max_datagram_size(self) -> int:
        """0: no datagrams."""
        return 0

    @property
    def closed(self) -> bool:
        """True."""
        return True

    async def close(self) -> None:
        """Nothing to close."""

    def stats(self) -> dict[str, int]:
        """No counters."""
        return {}

    @property
    def remote_address(self) -> Any:
        """The address the session had last."""
        return self._remote

    @property
    def send_bounds(self) -> SendBacklog | None:
        """None: nothing is held."""
        return None

    @property
    def receive_bounds(self) -> ReceiveHeld | None:
        """None: nothing is held."""
        return None

    @property
    def max_paused_streams(self) -> int | None:
        """0: no streams."""
        return 0

    @property
    def wire_mode(self) -> str | None:
        """None: no wire."""
        return None

    @property
    def peer_public_key(self) -> bytes | None:
        """The peer's static public key of the lost connection, if it had one."""
        return self._peer_key

    @property
    def channel_binding(self) -> bytes | None:
        """None: no connection."""
        return None

    def add_event_callback(self, callback: Callable[[TransportEvent], None]) -> bool:
        """False: no events."""
        return False

    def rebind(self) -> Any:
        """Raises ``ConnectionError``: the connection is gone."""
        raise ConnectionError("session detached")

    async def abort(self, code: int | None = None, message: str = "") -> None:
        """Nothing to abort."""


RestoreHook = Callable[[ServerSession, list[str], list[str]], Awaitable[None] | None]
"""``on_restore(session, rooms, topics)``: a reconnecting client claims ``rooms`` (its word only)
and is back in ``topics`` (re-subscribed through Subscribe's checks). The hook joins the rooms the
application allows, with the checks of its own join (``session.join(room)``); rooms it does not
join stay left, and the client is told (``kcprpc.ResumeFailed``, reason ``"not restored"``)."""
SessionHook = Callable[[ServerSession], Awaitable[None] | None]
PathHook = Callable[[ServerSession, Any, Any], Awaitable[None] | None]
"""``on_path_change(session, old_address, new_address)``: a secure-mode client moved."""


class ServerHost(Protocol):
    """What sessions, stream pumps and handlers (``ctx.server``) use of their server
    (:class:`kcprpc.Server` is the one implementation)."""

    config: ServerConfig
    stats: dict[str, int]
    push: PushHub
    receive_total: ReceiveTotal
    services: list[object]
    sessions: set[ServerSession]
    tasks: set[asyncio.Task[Any]]
    on_connect: SessionHook | None
    on_restore: RestoreHook | None

    @property
    def closing(self) -> bool:
        """True once the server began shutting down."""

    @property
    def methods(self) -> dict[str, MethodSpec]:
        """Every served method by wire name."""

    @property
    def method_table(self) -> Mapping[str, MethodEntry]:
        """Wire name -> (spec, bound handler)."""

    def backlog_changed(self, delta: int, shed: bool = True) -> None:
        """A session's send backlog changed by ``delta`` bytes (``shed``: shed the largest
        backlogs if all of them together are now over ``max_send_backlog_total``)."""

    def backlog_released(self, nbytes: int) -> None:
        """A session that held ``nbytes`` of send backlog ended."""

    def listener_stats(self) -> dict[str, int]:
        """The counters of the server's added listeners (the web ones), ``<name>_<counter>``."""

    def resume_ticket(self, session: ServerSession) -> dict[str, Any] | None:
        """A fresh resume token for ``session``'s WELCOME (``{"token", "window_ms"}``; the previous
        one is no longer valid), or None when it cannot be resumed."""

    async def end_detached(self, session: ServerSession) -> None:
        """A detached ``session`` is gone now (out of its rooms and topics, ``on_disconnect``)."""

    def kept_sessions(self) -> Iterable[ServerSession]:
        """The sessions kept for a resume now (detached)."""

    def detached_grew(self, session: ServerSession, grew: int) -> None:
        """A detached ``session`` holds ``grew`` bytes more (events sent to it): charge them
        against ``max_detached_bytes``, ending the detached sessions evicted past it."""

    async def resume(self, session: ServerSession, claim: Any) -> ServerSession | str:
        """A HELLO on ``session`` (new, not welcomed) asks to resume with ``claim``: the resumed
        session (which took ``session``'s connection), or why not (``"session expired"`` /
        ``"resume refused"``: ``session`` goes on as a fresh one)."""
