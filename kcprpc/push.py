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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kcprpc.codec import EVENT, encode_frame_raw, pack
from kcprpc.service import Delivery


class Peer(Protocol):
    """What :func:`route` needs from either end of a connection."""

    def send_frame(self, frame: bytes) -> None:
        """Queue a frame on the reliable control stream."""
        ...

    def send_datagram(self, frame: bytes) -> bool:
        """Send a frame as one OOB datagram; False if it cannot go that way (too big, no datagrams)."""
        ...


def route(peer: Peer, frame: bytes, delivery: Delivery) -> None:
    """Send ``frame`` the way ``delivery`` asks. Unreliable frames too big for a datagram go reliably."""
    if delivery is Delivery.UNRELIABLE and peer.send_datagram(frame):
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


class MemoryBroker:
    """In-process broker. Delivery happens synchronously inside :meth:`publish`."""

    def __init__(self, *, rng: Callable[[int], bytes] = os.urandom) -> None:
        self._epoch = int.from_bytes(rng(4), "big") or 1
        self._subs: dict[str, list[BrokerCallback]] = {}
        self._seq: dict[str, int] = {}

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


def room_key(room: str) -> str:
    """Broker key of a room."""
    return "room:" + room


def topic_key(topic: str) -> str:
    """Broker key of a topic."""
    return "topic:" + topic
