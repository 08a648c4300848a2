"""Server push: events to one session, to rooms and to topics, through a :class:`Broker`.

Rooms and topics both go through the broker (rooms under ``"room:<name>"``, topics under
``"topic:<name>"``), so a broker that spans processes (Redis, NATS) needs no change elsewhere.
The server subscribes *itself* to a broker key when its first local session joins, and fans the
message out to its local sessions, encoding the frame once for all of them.

Every broker message carries a per-key sequence number (from 1) and the broker's epoch, so a
client can later resume from its last offset.

:func:`route` is the one place where a frame's :class:`~kcprpc.service.Delivery` picks its path.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from kcprpc.codec import EVENT, ROOMS, encode_frame, encode_frame_raw, pack
from kcprpc.errors import RpcError
from kcprpc.frame_writer import FrameWriter
from kcprpc.service import Delivery, event, event_info
from kcprpc.status import Status
from kcprpc.transport import Connection


class Member(Protocol):
    """A session as the hub sees it (:class:`kcprpc.Member`)."""

    rooms: set[str]
    topics: set[str]
    closed: bool
    control: FrameWriter | None

    @property
    def streaming_calls(self) -> int: ...

    def send_frame(self, frame: bytes, unreliable: bool = False) -> None: ...

    def send_datagram(self, frame: bytes) -> bool: ...

    def send(self, event: Any, *, delivery: Delivery | str | None = None) -> None: ...


class HubLimits(Protocol):
    """The limits the hub applies (:class:`kcprpc.ServerConfig`)."""

    @property
    def max_name_length(self) -> int: ...

    @property
    def max_rooms(self) -> int: ...

    @property
    def max_subscriptions(self) -> int: ...


class HubHost(Protocol):
    """What the hub uses of its server: its counters and its limits."""

    stats: dict[str, int]

    @property
    def config(self) -> HubLimits: ...


@event("kcprpc.ResumeFailed")
class ResumeFailed(BaseModel):
    """Pushed after a reconnect when missed messages of a room or topic cannot be replayed
    (the broker's epoch changed or its history no longer reaches back far enough)."""

    key: str  # "room:<name>" or "topic:<name>"
    epoch: int  # the client's last epoch for the key
    last_seq: int  # the client's last sequence number
    reason: str


class Peer(Protocol):
    """What :func:`route` needs from either end of a connection."""

    def send_frame(self, frame: bytes, unreliable: bool = False) -> None:
        """Queue a frame on the reliable control stream. ``unreliable``: the frame is an unreliable
        message that did not fit a datagram; the peer may drop it (and count it) rather than queue
        it behind a backlog."""
        ...

    def send_datagram(self, frame: bytes) -> bool:
        """Send a frame as one OOB datagram; False if it cannot go that way (too big, no datagrams)."""
        ...


def send_datagram(conn: Connection, frame: bytes, max_size: int) -> bool:
    """Send ``frame`` as one OOB datagram of ``conn`` if it fits (``Peer.send_datagram`` of either end);
    False when it does not or the connection refuses, so that the caller sends it reliably."""
    if len(frame) > max_size:
        return False
    try:
        conn.send_datagram(frame)
    except Exception:
        return False
    return True


def route(peer: Peer, frame: bytes, delivery: Delivery) -> None:
    """Send ``frame`` the way ``delivery`` asks. Unreliable frames too big for a datagram go on the
    stream, unless the peer is backed up (then they are dropped and counted: they never queue)."""
    if delivery is Delivery.UNRELIABLE:
        if not peer.send_datagram(frame):
            peer.send_frame(frame, True)
        return
    peer.send_frame(frame)


@dataclass(eq=False)
class BrokerMessage:
    """One published message. ``payload`` is already dumped to msgpack-able values."""

    key: str
    event: str
    payload: Any
    seq: int
    epoch: int
    delivery: Delivery = Delivery.RELIABLE
    _frame: bytes | None = field(default=None, repr=False)

    @property
    def topic(self) -> str:
        """The name without the ``room:``/``topic:`` prefix."""
        return self.key.split(":", 1)[1] if ":" in self.key else self.key

    def frame(self) -> bytes:
        """The EVENT frame, encoded once and shared by every local receiver."""
        f = self._frame
        if f is None:
            body = pack([self.event, self.payload, self.key, self.seq, self.epoch])
            f = self._frame = encode_frame_raw(EVENT, 0, body)
        return f


BrokerCallback = Callable[[BrokerMessage], None]


class Broker(Protocol):
    """Pub/sub backend. Implementations: :class:`MemoryBroker` (one process)."""

    @property
    def epoch(self) -> int:
        """Changes when sequence numbers restart (a new broker, a lost history)."""
        ...

    def subscribe(self, key: str, callback: BrokerCallback) -> None:
        """Deliver messages published on ``key`` to ``callback`` (once per callback)."""
        ...

    def unsubscribe(self, key: str, callback: BrokerCallback) -> None:
        """Stop delivering ``key`` to ``callback``."""
        ...

    async def publish(
        self, key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE
    ) -> BrokerMessage:
        """Publish; returns the message with its sequence number."""
        ...

    def last_seq(self, key: str) -> int:
        """Sequence number of the last message published on ``key`` (0 if none)."""
        ...

    def history(self, key: str, after_seq: int) -> list[BrokerMessage] | None:
        """Messages on ``key`` with a sequence number above ``after_seq``, oldest first; ``None``
        when the history no longer reaches back that far."""
        ...


class MemoryBroker:
    """In-process broker. Delivery happens synchronously inside :meth:`publish`. The last
    ``history`` messages of each key are kept for replay after a reconnect."""

    def __init__(self, *, history: int = 1024, rng: Callable[[int], bytes] = os.urandom) -> None:
        self._epoch = int.from_bytes(rng(4), "big") or 1
        self._subs: dict[str, list[BrokerCallback]] = {}
        self._seq: dict[str, int] = {}
        self._history_len = history
        self._history: dict[str, deque[BrokerMessage]] = {}

    @property
    def epoch(self) -> int:
        """Random per broker instance."""
        return self._epoch

    def subscribe(self, key: str, callback: BrokerCallback) -> None:
        """Add a subscriber."""
        subs = self._subs.setdefault(key, [])
        if callback not in subs:
            subs.append(callback)

    def unsubscribe(self, key: str, callback: BrokerCallback) -> None:
        """Remove a subscriber."""
        subs = self._subs.get(key)
        if subs and callback in subs:
            subs.remove(callback)
            if not subs:
                del self._subs[key]

    def publish_nowait(
        self, key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE
    ) -> BrokerMessage:
        """Publish without awaiting (in-memory only)."""
        seq = self._seq.get(key, 0) + 1
        self._seq[key] = seq
        msg = BrokerMessage(key, event, payload, seq, self._epoch, delivery)
        if self._history_len:
            h = self._history.get(key)
            if h is None:
                h = self._history[key] = deque(maxlen=self._history_len)
            h.append(msg)
        for cb in list(self._subs.get(key, ())):
            cb(msg)
        return msg

    async def publish(
        self, key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE
    ) -> BrokerMessage:
        """Publish."""
        return self.publish_nowait(key, event, payload, delivery)

    def last_seq(self, key: str) -> int:
        """Last sequence number on ``key``."""
        return self._seq.get(key, 0)

    def history(self, key: str, after_seq: int) -> list[BrokerMessage] | None:
        """Kept messages after ``after_seq``; ``None`` if some of them are gone."""
        last = self._seq.get(key, 0)
        if after_seq >= last:
            return []
        h = self._history.get(key)
        if not h or h[0].seq > after_seq + 1:
            return None
        return [m for m in h if m.seq > after_seq]


def room_key(room: str) -> str:
    """Broker key of a room."""
    return "room:" + room


def topic_key(topic: str) -> str:
    """Broker key of a topic."""
    return "topic:" + topic


class PushHub:
    """Local membership of rooms and topics, wired to the broker (``server.push``)."""

    def __init__(self, server: HubHost, broker: Broker) -> None:
        self.server = server
        self.broker = broker
        self._local: dict[str, set[Member]] = {}
        self._callbacks: dict[str, Callable[[BrokerMessage], None]] = {}

    def _fanout(self, key: str) -> Callable[[BrokerMessage], None]:
        members = self._local[key]
        stats = self.server.stats

        def deliver(msg: BrokerMessage) -> None:
            frame = msg.frame()
            unreliable = msg.delivery is Delivery.UNRELIABLE
            n = 0
            for s in tuple(members):
                if s.closed:
                    continue
                n += 1
                if unreliable:
                    route(s, frame, msg.delivery)
                elif s.control is not None:
                    s.control.send(frame)
            stats["events_sent"] += n

        return deliver

    def _add(self, session: Member, key: str) -> None:
        members = self._local.get(key)
        if members is None:
            members = self._local[key] = set()
            cb = self._callbacks[key] = self._fanout(key)
            self.broker.subscribe(key, cb)
        members.add(session)

    def _remove(self, session: Member, key: str) -> None:
        members = self._local.get(key)
        if not members:
            return
        members.discard(session)
        if not members:
            del self._local[key]
            self.broker.unsubscribe(key, self._callbacks.pop(key))

    def _check_name(self, kind: str, name: str) -> None:
        limit = self.server.config.max_name_length
        if not name or len(name) > limit:
            raise RpcError(Status.INVALID_ARGUMENT, f"{kind} name must have 1 to {limit} characters")

    def join(self, session: Member, room: str) -> None:
        """Add a session to a room and tell its client. RESOURCE_EXHAUSTED past the server's
        ``max_rooms`` per session, INVALID_ARGUMENT for an empty name or one longer than
        ``max_name_length``."""
        if room in session.rooms or session.closed:
            return
        self._check_name("room", room)
        if len(session.rooms) >= self.server.config.max_rooms:
            raise RpcError(Status.RESOURCE_EXHAUSTED, "too many rooms")
        session.rooms.add(room)
        self._add(session, room_key(room))
        session.send_frame(encode_frame(ROOMS, 0, [True, room]))

    def leave(self, session: Member, room: str) -> None:
        """Remove a session from a room."""
        if room not in session.rooms:
            return
        session.rooms.discard(room)
        self._remove(session, room_key(room))
        if not session.closed:
            session.send_frame(encode_frame(ROOMS, 0, [False, room]))

    def subscribe(self, session: Member, topic: str) -> None:
        """Subscribe a session to a topic (RESOURCE_EXHAUSTED past ``max_subscriptions``,
        INVALID_ARGUMENT for an empty name or one longer than ``max_name_length``)."""
        if topic in session.topics:
            return
        self._check_name("topic", topic)
        if len(session.topics) + session.streaming_calls >= self.server.config.max_subscriptions:
            raise RpcError(Status.RESOURCE_EXHAUSTED, "too many subscriptions")
        session.topics.add(topic)
        self._add(session, topic_key(topic))

    def unsubscribe(self, session: Member, topic: str) -> None:
        """Unsubscribe a session from a topic."""
        if topic in session.topics:
            session.topics.discard(topic)
            self._remove(session, topic_key(topic))

    def replay(self, session: Member, key: str, epoch: int, seq: int) -> int:
        """Send ``session`` the reliable messages of ``key`` it missed after ``(epoch, seq)``, or a
        :class:`~kcprpc.push.ResumeFailed` event; returns how many were replayed."""
        broker = self.broker
        msgs = broker.history(key, seq) if epoch == broker.epoch else None
        if msgs is None:
            reason = "epoch changed" if epoch != broker.epoch else "history too short"
            session.send(ResumeFailed(key=key, epoch=epoch, last_seq=seq, reason=reason))
            return 0
        n = 0
        for m in msgs:
            if m.delivery is Delivery.RELIABLE:
                session.send_frame(m.frame())
                n += 1
        return n

    def members(self, room: str) -> set[Member]:
        """Local sessions in a room."""
        return set(self._local.get(room_key(room), ()))

    def drop(self, session: Member) -> None:
        """Forget a disconnected session everywhere."""
        for room in list(session.rooms):
            self._remove(session, room_key(room))
        for topic in list(session.topics):
            self._remove(session, topic_key(topic))
        session.rooms.clear()
        session.topics.clear()

    async def to_room(
        self, room: str, event: Any, *, delivery: Delivery | str | None = None
    ) -> BrokerMessage:
        """Push a typed event to every member of ``room`` (on every server sharing the broker)."""
        return await self._publish(room_key(room), event, delivery)

    async def publish(
        self, topic: str, event: Any, *, delivery: Delivery | str | None = None
    ) -> BrokerMessage:
        """Publish a typed event on ``topic``."""
        return await self._publish(topic_key(topic), event, delivery)

    async def _publish(self, key: str, event: Any, delivery: Delivery | str | None) -> BrokerMessage:
        name, default, adapter = event_info(type(event))
        d = Delivery(delivery) if delivery is not None else default
        return await self.broker.publish(key, name, adapter.dump_python(event), d)
