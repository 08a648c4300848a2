"""Presence: who is in a room or subscribed to a topic, on every server that shares the broker,
and the ``kcprpc.Joined`` / ``kcprpc.Left`` events the rooms and topics that opt in push to their
members (docs/rpc.md, "Presence").

A room or topic keeps presence when its broker key (``"room:<name>"`` / ``"topic:<name>"``)
matches a pattern of :class:`PresenceConfig` (``ServerConfig(presence=...)``). The entries live
in the :class:`~kcprpc.broker.Broker` (``presence_add`` / ``presence_remove`` / ``presence``),
so a broker that spans processes lists the members of every server. The hub
(:class:`~kcprpc.push.PushHub`) calls :meth:`Presence.check` before a session joins a room or
subscribes to a topic, :meth:`Presence.joined` after, and :meth:`Presence.left` when it leaves,
unsubscribes or is dropped. Joined and Left go through the broker unnumbered: they take no
sequence number and are not kept in the history, so they neither open gaps in a key's offsets
nor push its messages out of the history.
"""

from __future__ import annotations

import fnmatch
import re
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, TypeAdapter

from kcp.fieldcheck import check_fields
from kcp.ratelimit import PrefixLimiter, SourceKeys
from kcprpc.broker import Broker, KeyNames, room_key, topic_key
from kcprpc.codec import pack, unpack
from kcprpc.errors import RpcError, UsageError, shown
from kcprpc.msgpack_size import decoded_size
from kcprpc.service import Delivery, event, event_info
from kcprpc.status import Status

__all__ = [
    "PRESENCE_COUNTERS",
    "Joined",
    "Left",
    "MemberInfo",
    "MemberList",
    "Presence",
    "PresenceConfig",
]

PRESENCE_COUNTERS = (
    "presence_entries",  # a gauge: this server's sessions recorded in the presence of a key
    "presence_refused",  # joins/subscriptions refused: info over max_info_size, or over max_keys
    "presence_events",  # Joined / Left events published
    "presence_lists",  # member lists served to clients (kcprpc.Push/Members)
    "presence_lists_denied",  # ... refused: not a member, or a key without presence
    "presence_lists_truncated",  # ... cut at max_members or at the message size
    "presence_lists_refused",  # ... refused: the address read member lists faster than list_rate
)
"""The counters presence keeps in ``server.stats``."""

_REPLY_SLACK = 1024  # bytes of a member list besides its entries (frame header, key, counts)

INFO_DECODED_FACTOR = 16
"""A session's presence info is kept decoded: besides ``max_info_size`` packed, its decoded
estimate may be at most this many times that (256 bytes of empty lists are 16 KB of objects)."""


@dataclass(frozen=True)
class PresenceConfig:
    """Which rooms and topics keep presence, and its bounds (``ServerConfig(presence=...)``).

    ``keys`` and ``events`` are :mod:`fnmatch` patterns over broker keys, ``"room:<name>"`` and
    ``"topic:<name>"`` (``"room:match:*"``, ``"topic:chat:*"``, ``"room:lobby"``). A key that
    matches ``keys`` keeps presence (its members can be listed); one that matches ``events``
    keeps presence too, and its members get ``kcprpc.Joined`` / ``kcprpc.Left``. No pattern
    (the default): no presence anywhere."""

    keys: Sequence[str] = ()
    events: Sequence[str] = ()
    max_info_size: int = 256
    """Bytes of a session's ``session.presence`` info, msgpack-encoded (more: the join or
    subscription fails with RESOURCE_EXHAUSTED)."""
    max_keys: int = 64
    """Rooms and topics with presence one session may be in at once (more: RESOURCE_EXHAUSTED)."""
    max_members: int = 1000
    """Members one listing returns at most (a client's listing is also cut to fit
    ``max_message_size``); a cut listing says ``truncated`` and the ``total``."""
    join_rate: float = 10.0
    """Joins and subscriptions per second one session may make into keys with presence, on
    average (a token bucket of ``join_burst``); more fail with RESOURCE_EXHAUSTED. Each one costs
    a broker write and, with events, a Joined and a Left to every member: a client churning a
    subscription must not make every member's traffic."""
    join_burst: int = 64  # as many as max_keys: a fresh session restoring all its keys fits
    address_join_rate: float = 40.0
    """The same, for all the sessions of one address (IPv4, or IPv6 /64; loopback exempt, as the
    server counts connections), with a bucket of ``address_join_burst``: a client that churns
    sessions, each with a fresh ``join_burst``, still makes every member's traffic no faster."""
    address_join_burst: int = 256
    list_rate: int = 256 * 1024
    """Bytes of member listings (``kcprpc.Push/Members``) one address may be answered a second
    (IPv4, or IPv6 /64; loopback exempt), with a bucket of ``list_burst``; past it a listing
    fails with RESOURCE_EXHAUSTED (``presence_lists_refused``). A listing of 1,000 members is
    about 50 KB and costs the server about 70 echo calls' CPU: a client listing a large room in
    a loop must not take a core."""
    list_burst: int = 1024 * 1024

    def __post_init__(self) -> None:
        check_fields(self, UsageError)
        for name in ("keys", "events"):
            patterns = getattr(self, name)
            if isinstance(patterns, str):
                raise UsageError(f"PresenceConfig.{name} takes a list of patterns, not one string")
            patterns = tuple(patterns)
            for p in patterns:
                if not isinstance(p, str) or not p.startswith(("room:", "topic:")):
                    raise UsageError(
                        f"PresenceConfig.{name}: {p!r} must start with 'room:' or 'topic:' "
                        "(patterns match broker keys, e.g. 'room:match:*')"
                    )
            object.__setattr__(self, name, patterns)
        if (
            self.max_info_size <= 0
            or self.max_keys <= 0
            or self.max_members <= 0
            or not self.join_rate > 0
            or self.join_burst <= 0
            or not self.address_join_rate > 0
            or self.address_join_burst <= 0
            or self.list_rate <= 0
            or self.list_burst <= 0
        ):
            raise UsageError(
                "PresenceConfig: max_info_size, max_keys, max_members, join_rate, join_burst, "
                "address_join_rate, address_join_burst, list_rate and list_burst must be positive"
            )


class MemberInfo(BaseModel):
    """One member of a room or topic: its session's id (``client.session_id``,
    ``ServerSession.id``) and the small info the application gave it (``session.presence``)."""

    id: str
    info: dict[str, Any] = {}


class MemberList(BaseModel):
    """The members of a room or topic, oldest first. ``total`` counts all of them; ``truncated``
    says the list stops short of it (``max_members``, or the message size)."""

    key: str  # "room:<name>" or "topic:<name>"
    members: list[MemberInfo]
    total: int
    truncated: bool = False


@event("kcprpc.Joined")
class Joined(BaseModel, KeyNames):
    """Pushed to the members of a room or topic whose presence has events when a session joins it
    or subscribes to it (on any server sharing the broker); the new member gets its own."""

    key: str  # "room:<name>" or "topic:<name>"
    member: MemberInfo


@event("kcprpc.Left")
class Left(BaseModel, KeyNames):
    """Pushed to the remaining members when a session leaves a room or topic whose presence has
    events: it left, unsubscribed, or its session is gone (a session that may resume stays a
    member until then)."""

    key: str  # "room:<name>" or "topic:<name>"
    member: MemberInfo  # the info it joined with


class PresenceSession(Protocol):
    """A session as presence sees it (:class:`kcprpc.ServerSession`)."""

    id: str
    rooms: set[str]
    topics: set[str]

    @property
    def remote_address(self) -> Any:
        """The client's address (the join budget per address)."""
        ...

    @property
    def presence(self) -> Mapping[str, Any]:
        """The info its entries carry (``session.presence``)."""
        ...


class PresenceLimits(Protocol):
    """The settings presence reads (:class:`kcprpc.ServerConfig`)."""

    @property
    def presence(self) -> PresenceConfig: ...

    @property
    def max_message_size(self) -> int: ...


class PresenceHost(Protocol):
    """What presence uses of its server: its counters and its settings."""

    stats: dict[str, int]

    @property
    def config(self) -> PresenceLimits: ...


MAX_ADDRESS_BUCKETS = 4096
"""Addresses whose join buckets are kept (the least recently used go first)."""


def _compile(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


_JOINED = event_info(Joined)
_LEFT = event_info(Left)


class Presence:
    """The presence of the rooms and topics of one server (``server.push.presence``)."""

    def __init__(
        self,
        server: PresenceHost,
        broker: Broker,
        clock: Callable[[], float] = time.monotonic,
        keys: SourceKeys | None = None,
    ) -> None:
        self.server = server
        self.broker = broker
        cfg = server.config.presence
        self.config = cfg
        self._events = _compile(cfg.events)
        self._keys = _compile([*cfg.keys, *cfg.events])
        # session id -> {key: the info it was recorded with} (for Left, and the max_keys bound)
        self._entries: dict[str, dict[str, dict[str, Any]]] = {}
        # session -> (tokens, when): its join_rate bucket, for as long as the session lives (a
        # session that churns one key keeps its bucket between its entries)
        self._buckets: weakref.WeakKeyDictionary[PresenceSession, tuple[float, float]] = (
            weakref.WeakKeyDictionary()
        )
        self._clock = clock
        # session -> (its info packed, decoded): the copy its keys share
        self._decoded: weakref.WeakKeyDictionary[PresenceSession, tuple[bytes, dict[str, Any]]] = (
            weakref.WeakKeyDictionary()
        )
        # the address_join_rate buckets (``keys``: the server's keys per address; None: none)
        self._by_address = (
            PrefixLimiter(
                cfg.address_join_rate, cfg.address_join_burst, keys, max_prefixes=MAX_ADDRESS_BUCKETS
            )
            if keys is not None
            else None
        )
        # the list_rate buckets: bytes of member listings answered per address
        self._lists = (
            PrefixLimiter(cfg.list_rate, cfg.list_burst, keys, max_prefixes=MAX_ADDRESS_BUCKETS)
            if keys is not None
            else None
        )

    def keeps(self, key: str) -> bool:
        """True if ``key`` (``"room:<name>"`` / ``"topic:<name>"``) keeps presence."""
        return self._keys is not None and self._keys.fullmatch(key) is not None

    def has_events(self, key: str) -> bool:
        """True if the members of ``key`` get Joined / Left."""
        return self._events is not None and self._events.fullmatch(key) is not None

    # -- the hub's hooks
    def check(self, session: PresenceSession, key: str) -> None:
        """Before ``session`` joins ``key``: RESOURCE_EXHAUSTED (counted) when its info is over
        ``max_info_size``, it is in ``max_keys`` keys with presence already, or it joins them
        faster than ``join_rate``."""
        if not self.keeps(key):
            return
        cfg = self.config
        entries = self._entries.get(session.id)
        if entries is not None and key in entries:
            return
        if entries is not None and len(entries) >= cfg.max_keys:
            self.server.stats["presence_refused"] += 1
            raise RpcError(
                Status.RESOURCE_EXHAUSTED,
                f"in the presence of {len(entries)} rooms and topics already (max_keys {cfg.max_keys})",
            )
        self._info(session)
        now = self._clock()
        tokens, then = self._buckets.get(session, (float(cfg.join_burst), now))
        tokens = min(float(cfg.join_burst), tokens + (now - then) * cfg.join_rate)
        if tokens < 1.0:
            self.server.stats["presence_refused"] += 1
            raise RpcError(
                Status.RESOURCE_EXHAUSTED,
                f"joining rooms and topics with presence faster than join_rate ({cfg.join_rate:g}/s)",
            )
        by_address = self._by_address
        if by_address is not None and not by_address.allow(session.remote_address, int(now * 1000)):
            self.server.stats["presence_refused"] += 1
            raise RpcError(
                Status.RESOURCE_EXHAUSTED,
                "joining rooms and topics with presence from one address faster than "
                f"address_join_rate ({cfg.address_join_rate:g}/s)",
            )
        self._buckets[session] = (tokens - 1.0, now)

    def joined(self, session: PresenceSession, key: str) -> None:
        """``session`` joined ``key`` (after :meth:`check`): record it, push Joined."""
        if not self.keeps(key):
            return
        info = self._info(session)
        entries = self._entries.setdefault(session.id, {})
        if key not in entries:
            self.server.stats["presence_entries"] += 1
        entries[key] = info
        self.broker.presence_add(key, session.id, info)
        if self.has_events(key):
            self._publish(key, _JOINED, Joined(key=key, member=MemberInfo(id=session.id, info=info)))

    def left(self, session: PresenceSession, key: str) -> None:
        """``session`` left ``key`` (left, unsubscribed or dropped): forget it, push Left."""
        entries = self._entries.get(session.id)
        if entries is None:
            return
        info = entries.pop(key, None)
        if info is None:
            return
        if not entries:
            del self._entries[session.id]
        self.server.stats["presence_entries"] -= 1
        self.broker.presence_remove(key, session.id)
        if self.has_events(key):
            self._publish(key, _LEFT, Left(key=key, member=MemberInfo(id=session.id, info=info)))

    def _info(self, session: PresenceSession) -> dict[str, Any]:
        """The session's info as plain msgpack values, checked against ``max_info_size``."""
        info = session.presence
        if not isinstance(info, Mapping):
            raise UsageError(f"session.presence must be a dict, not {type(info).__name__}")
        try:
            packed = pack(dict(info))
        except Exception as e:
            raise UsageError(f"session.presence cannot be encoded: {e}") from None
        limit = self.config.max_info_size
        if len(packed) > limit or decoded_size(packed, INFO_DECODED_FACTOR * limit) < 0:
            self.server.stats["presence_refused"] += 1
            raise RpcError(
                Status.RESOURCE_EXHAUSTED,
                f"presence info is {len(packed)} bytes (or more than {INFO_DECODED_FACTOR} times that "
                f"decoded), over max_info_size ({limit})",
            )
        cached = self._decoded.get(session)
        if cached is not None and cached[0] == packed:
            return cached[1]  # one copy for every key the session is in (it was one per key)
        out: dict[str, Any] = unpack(packed)
        self._decoded[session] = (packed, out)
        return out

    def _publish(self, key: str, kind: tuple[str, Delivery, TypeAdapter[Any]], ev: BaseModel) -> None:
        name, delivery, adapter = kind
        self.server.stats["presence_events"] += 1
        self.broker.publish_unnumbered(key, name, adapter.dump_python(ev), delivery)

    # -- listing
    async def members(
        self, *, room: str | None = None, topic: str | None = None, limit: int | None = None
    ) -> MemberList:
        """The members of ``room`` or subscribers of ``topic`` (give one) on every server sharing
        the broker, oldest first, at most ``limit`` (None: all). :class:`UsageError` for a room or
        topic that does not keep presence."""
        key = _key(room, topic, UsageError)
        if not self.keeps(key):
            raise UsageError(f"{key!r} does not keep presence (see ServerConfig.presence)")
        if limit is not None and limit < 0:
            raise UsageError("limit must be >= 0 or None")
        entries, total = await self.broker.presence(key, limit)
        return MemberList(
            key=key,
            members=[MemberInfo(id=m, info=i) for m, i in entries],
            total=total,
            truncated=len(entries) < total,
        )

    async def listing(self, session: PresenceSession, room: str | None, topic: str | None) -> MemberList:
        """What a client's ``kcprpc.Push/Members`` call gets: only a member of the room (a
        subscriber of the topic) may list it, and only a key that keeps presence; at most
        ``max_members`` entries and what fits ``max_message_size``."""
        stats = self.server.stats
        try:
            key = _key(room, topic, _invalid)
            mine = room in session.rooms if room is not None else topic in session.topics
            if not mine:
                what = (
                    f"in room {shown(room)}"
                    if room is not None
                    else f"subscribed to topic {shown(topic or '')}"
                )
                raise RpcError(Status.PERMISSION_DENIED, f"not {what}")
            if not self.keeps(key):
                raise RpcError(Status.FAILED_PRECONDITION, f"{shown(key)} does not keep presence")
        except RpcError:
            stats["presence_lists_denied"] += 1
            raise
        lists, address = self._lists, session.remote_address
        now = int(self._clock() * 1000)
        if lists is not None and not lists.allow(address, now):
            stats["presence_lists_refused"] += 1
            raise RpcError(
                Status.RESOURCE_EXHAUSTED,
                f"member lists read faster than list_rate ({self.config.list_rate} bytes a second per address)",
            )
        entries, total = await self.broker.presence(key, self.config.max_members)
        space = budget = self.server.config.max_message_size - _REPLY_SLACK - len(key)
        members: list[MemberInfo] = []
        for m, i in entries:
            budget -= len(pack({"id": m, "info": i}))
            if budget < 0:
                break
            members.append(MemberInfo(id=m, info=i))
        if lists is not None:
            lists.charge(address, space - max(budget, 0), now)  # (allow()'s token stands for the call)
        stats["presence_lists"] += 1
        truncated = len(members) < total
        if truncated:
            stats["presence_lists_truncated"] += 1
        return MemberList(key=key, members=members, total=total, truncated=truncated)


def _invalid(message: str) -> RpcError:
    return RpcError(Status.INVALID_ARGUMENT, message)


def _key(room: str | None, topic: str | None, error: Callable[[str], Exception]) -> str:
    if room is not None and topic is None:
        return room_key(room)
    if topic is not None and room is None:
        return topic_key(topic)
    raise error("give a room or a topic (one of them)")
