"""The Broker contract: how rooms and topics reach every server that shares a broker, with a
per-key sequence, history for recovery, and :class:`MemoryBroker` (one process).

Rooms and topics both go through the broker (rooms under ``"room:<name>"``, topics under
``"topic:<name>"``), so a broker that spans processes (Redis, NATS) needs no change elsewhere.
Every broker message carries a per-key sequence number (from 1) and the broker's epoch: together
they are its :class:`Position`, from which a client resumes.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from kcprpc.codec import EVENT, encode_frame_raw, pack
from kcprpc.service import Delivery

__all__ = [
    "Broker",
    "BrokerCallback",
    "BrokerMessage",
    "MemoryBroker",
    "Position",
    "room_key",
    "topic_key",
    "unnumbered",
]


class Position(NamedTuple):
    """Where a message sits in its room's or topic's stream: the broker's ``epoch`` (changes when
    the numbering restarts) and the message's ``offset`` (its sequence number, from 1; 0 before
    the first message)."""

    epoch: int
    offset: int


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

    # -- presence (kcprpc.presence): who is in a key, on every server sharing the broker
    def publish_unnumbered(
        self, key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE
    ) -> None:
        """Deliver a message to the subscribers of ``key`` without a sequence number and without
        keeping it in the history (presence's Joined / Left): build it with :func:`unnumbered`.
        A broker across processes sends it in the background, in order with the key's other
        messages from this process."""
        ...

    def presence_add(self, key: str, member: str, info: dict[str, Any]) -> None:
        """Record ``member`` (a session id) as present in ``key`` with ``info`` (plain msgpack
        values, small), replacing an earlier entry. Applied in order, like :meth:`subscribe`."""
        ...

    def presence_remove(self, key: str, member: str) -> None:
        """Forget ``member`` in ``key`` (nothing if it is not there)."""
        ...

    async def presence(self, key: str, limit: int | None) -> tuple[list[tuple[str, dict[str, Any]]], int]:
        """Up to ``limit`` (None: all) entries ``(member, info)`` of ``key``, oldest first, and how
        many there are in all."""
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
        self._presence: dict[str, dict[str, dict[str, Any]]] = {}  # key -> member -> info

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

    # -- presence
    def publish_unnumbered(
        self, key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE
    ) -> None:
        """Deliver now, unnumbered and not kept (presence's Joined / Left)."""
        msg = unnumbered(key, event, payload, delivery)
        for cb in list(self._subs.get(key, ())):
            cb(msg)

    def presence_add(self, key: str, member: str, info: dict[str, Any]) -> None:
        """Record a member."""
        self._presence.setdefault(key, {})[member] = info

    def presence_remove(self, key: str, member: str) -> None:
        """Forget a member."""
        members = self._presence.get(key)
        if members is not None and members.pop(member, None) is not None and not members:
            del self._presence[key]

    async def presence(self, key: str, limit: int | None) -> tuple[list[tuple[str, dict[str, Any]]], int]:
        """The first ``limit`` members and the count."""
        members = self._presence.get(key)
        if not members:
            return [], 0
        items = members.items()
        entries = list(items if limit is None else itertools.islice(items, limit))
        return entries, len(members)


def room_key(room: str) -> str:
    """Broker key of a room."""
    return "room:" + room


def topic_key(topic: str) -> str:
    """Broker key of a topic."""
    return "topic:" + topic


def unnumbered(key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE) -> BrokerMessage:
    """A message outside the key's numbering (:meth:`Broker.publish_unnumbered`): ``seq`` 0, and
    its EVENT frame carries nil sequence number and epoch, so that clients track no offset for it."""
    body = pack([event, payload, key, None, None])
    return BrokerMessage(key, event, payload, 0, 0, delivery, encode_frame_raw(EVENT, 0, body))
