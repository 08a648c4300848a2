"""Server push: events to one session, to rooms and to topics, through a :class:`Broker`.

The broker contract is :mod:`kcprpc.broker`. The server subscribes *itself* to a broker key when its first local session joins, and fans the
message out to its local sessions, encoding the frame once for all of them.

:func:`route` is the one place where a frame's :class:`~kcprpc.service.Delivery` picks its path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel

from kcprpc.broker import Broker, BrokerMessage, room_key, topic_key
from kcprpc.codec import ROOMS, encode_frame
from kcprpc.errors import RpcError
from kcprpc.frame_writer import FrameWriter
from kcprpc.presence import Presence, PresenceConfig
from kcprpc.service import Delivery, event, event_info
from kcprpc.status import Status
from kcprpc.transport import Connection


class Member(Protocol):
    """A session as the hub sees it (:class:`kcprpc.Member`)."""

    id: str
    presence: dict[str, Any]  # the info presence lists (kcprpc.presence)
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

    @property
    def max_message_size(self) -> int: ...

    @property
    def presence(self) -> PresenceConfig: ...


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


class PushHub:
    """Local membership of rooms and topics, wired to the broker (``server.push``)."""

    def __init__(self, server: HubHost, broker: Broker) -> None:
        self.server = server
        self.broker = broker
        self._local: dict[str, set[Member]] = {}
        self._callbacks: dict[str, Callable[[BrokerMessage], None]] = {}
        self.presence = Presence(server, broker)
        """Who is in a room or topic that keeps presence, on every server (``kcprpc.presence``)."""

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
        self.presence.joined(session, key)

    def _remove(self, session: Member, key: str) -> None:
        members = self._local.get(key)
        if not members:
            return
        members.discard(session)
        self.presence.left(session, key)
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
        self.presence.check(session, room_key(room))
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
        self.presence.check(session, topic_key(topic))
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
        """Local sessions in a room (on every server, with their info: ``presence.members``)."""
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
