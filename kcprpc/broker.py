"""The Broker contract: how rooms and topics reach every server that shares a broker, with a
per-key sequence, history for recovery, and :class:`MemoryBroker` (one process).

Rooms and topics both go through the broker (rooms under ``"room:<name>"``, topics under
``"topic:<name>"``), so a broker that spans processes (Redis, NATS) needs no change elsewhere.
Every broker message carries a per-key sequence number (from 1) and the broker's epoch: together
they are its :class:`Position`, from which a client resumes.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, ClassVar, NamedTuple, Protocol

from kcp.fieldcheck import check_count, check_fields, is_number, shown
from kcprpc.codec import EVENT, HEADER_SIZE, encode_frame_raw, pack
from kcprpc.errors import RpcError, UsageError
from kcprpc.msgpack_size import decoded_size
from kcprpc.service import Delivery
from kcprpc.status import Status

__all__ = [
    "BROKER_COUNTERS",
    "GAP_EVENT",
    "MEMORY_BROKER_COUNTERS",
    "MESSAGE_OVERHEAD",
    "REPLAYED",
    "Broker",
    "BrokerCallback",
    "BrokerHistory",
    "BrokerMessage",
    "BrokerUnavailable",
    "HistoryPolicies",
    "HistoryPolicy",
    "KeyNames",
    "MemoryBroker",
    "Position",
    "gap_report",
    "policy_of",
    "room_key",
    "run_callbacks",
    "topic_key",
    "unnumbered",
]

log = logging.getLogger("kcprpc.broker")

REPLAYED = 1
"""EVENT flags bit 0: the event is replayed from history after a reconnect or a ``since=``
subscribe, not live (docs/wire-format/rpc.md, "Push")."""


BROKER_COUNTERS = ("published", "delivered", "publish_errors", "reconnects", "unavailable")
"""The counters every broker's :meth:`Broker.stats` has (``unavailable`` is a 0/1 gauge)."""


class BrokerUnavailable(RpcError):
    """The broker cannot be reached (a :class:`~kcprpc.errors.KcpRpcError`): raised by
    ``publish``, ``history`` and ``presence`` while it is down, quickly (within the broker's
    timeout), and by ``start`` when it cannot connect. It is an :class:`~kcprpc.errors.RpcError`
    with status ``UNAVAILABLE``, so a handler that lets it through fails its call with that
    status; the server keeps serving other calls while the broker reconnects in the background."""

    def __init__(self, message: str = "broker unavailable") -> None:
        super().__init__(Status.UNAVAILABLE, message)


class Position(NamedTuple):
    """Where a message sits in its room's or topic's stream: the broker's ``epoch`` (changes when
    the numbering restarts) and the message's ``offset`` (its sequence number, from 1; 0 before
    the first message)."""

    epoch: int
    offset: int


@dataclass(eq=False)
class BrokerMessage:
    """One published message. ``payload`` is already dumped to msgpack-able values; ``at`` is the
    broker's clock when it was published (set only where a history TTL needs it)."""

    key: str
    event: str
    payload: Any
    seq: int
    epoch: int
    delivery: Delivery = Delivery.RELIABLE
    at: float = 0.0
    _frame: bytes | None = field(default=None, repr=False)
    _replayed: bytes | None = field(default=None, repr=False)
    _held: int = field(default=0, repr=False)  # MemoryBroker: bytes charged while kept (0: not kept)

    @property
    def topic(self) -> str:
        """The name without the ``room:``/``topic:`` prefix."""
        return self.key.split(":", 1)[1] if ":" in self.key else self.key

    @property
    def position(self) -> Position:
        """``Position(epoch, seq)``."""
        return Position(self.epoch, self.seq)

    def frame(self) -> bytes:
        """The EVENT frame, encoded once and shared by every local receiver."""
        f = self._frame
        if f is None:
            body = pack([self.event, self.payload, self.key, self.seq, self.epoch])
            f = self._frame = encode_frame_raw(EVENT, 0, body)
        return f

    def replay_frame(self) -> bytes:
        """The EVENT frame flagged ``REPLAYED`` (its 6th element), encoded once and shared by
        every session it is replayed to."""
        f = self._replayed
        if f is None:
            body = pack([self.event, self.payload, self.key, self.seq, self.epoch, REPLAYED])
            f = self._replayed = encode_frame_raw(EVENT, 0, body)
        return f


@dataclass(frozen=True, slots=True)
class BrokerHistory:
    """What :meth:`Broker.history` answers for one key.

    ``messages``: the kept messages asked for, oldest first (all deliveries). ``epoch``: the
    broker's epoch they belong to. ``last``: the offset of the last message published on the key
    when the history was read (0: none), so ``Position(epoch, last)`` is "now". ``missed``: how
    many messages after ``since`` the history no longer holds (evicted by its size, expired by its
    TTL): the first kept offset minus ``since + 1``, or ``last - since`` when none is kept; 0 when
    ``since`` was None."""

    messages: list[BrokerMessage]
    epoch: int
    last: int
    missed: int

    @property
    def position(self) -> Position:
        """``Position(epoch, last)``: where the key is now."""
        return Position(self.epoch, self.last)


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How much history a key keeps: at most ``size`` messages (0: none), none older than ``ttl``
    seconds (None: no age limit)."""

    size: int = 1024
    ttl: float | None = None

    def __post_init__(self) -> None:
        check_fields(self, UsageError)
        if self.size < 0:
            raise UsageError(f"HistoryPolicy.size must be 0 or more, not {self.size!r}")
        if self.ttl is not None and not self.ttl > 0:
            raise UsageError(f"HistoryPolicy.ttl must be positive or None, not {self.ttl!r}")


BrokerCallback = Callable[[BrokerMessage], None]
HistoryPolicies = Callable[[str], HistoryPolicy] | Mapping[str, HistoryPolicy]


def history_settings(
    who: str, history: int, history_ttl: float | None, policies: HistoryPolicies | None
) -> tuple[HistoryPolicy, HistoryPolicies | None]:
    """A broker's ``history``, ``history_ttl`` and ``policies`` (every broker takes them) as its
    default :class:`HistoryPolicy` and its policies, checked where they are given: a
    :class:`UsageError` naming ``who``, the parameter and the value (``history="x"`` raised a
    comparison TypeError, a policy that is not a :class:`HistoryPolicy` an AttributeError at
    the first publish of a key it matched)."""
    check_count(history, f"{who}: history", UsageError, 0)
    if history_ttl is not None and (not is_number(history_ttl) or history_ttl <= 0):
        raise UsageError(
            f"{who}: history_ttl must be a number of seconds > 0 or None, not {shown(history_ttl)}"
        )
    given: object = policies
    if isinstance(given, Mapping):
        for pattern, pol in given.items():
            if not isinstance(pattern, str) or not isinstance(pol, HistoryPolicy):
                raise UsageError(
                    f"{who}: policies maps key patterns (str) to HistoryPolicy, not {shown(pattern)} "
                    f"to {shown(pol)}"
                )
    elif given is not None and not callable(given):
        raise UsageError(
            f"{who}: policies must be a mapping of key patterns to HistoryPolicy, or a function "
            f"key -> HistoryPolicy, not {shown(given)}"
        )
    return HistoryPolicy(history, history_ttl), policies


class Broker(Protocol):
    """Pub/sub backend. Implementations: :class:`MemoryBroker` (one process).

    The contract another broker (Redis streams, NATS JetStream) implements:

    * one sequence per key, from 1, without gaps; a message's ``(epoch, seq)`` is its
      :class:`Position`. The ``epoch`` changes whenever the numbering restarts or history is lost
      (a new broker, a flushed store), so that a position of another epoch is never read as one
      of this one;
    * ``subscribe``'s callbacks see each key's messages in sequence order;
    * ``history(key, since, limit)`` answers from the same sequence: the kept messages after
      ``since``, how many after it are no longer kept (``missed``), and the key's last offset;
      a message published before ``history`` is called is either in the answer or counted in
      ``missed``. History has a size and an age limit per key (:class:`HistoryPolicy`);
    * ``history`` may be slow (a round trip): the server holds live messages back per session
      while it replays, so none overtakes the replay (:meth:`kcprpc.push.PushHub.recover`);
    * a subscription is live at the latest once a ``history`` call on its key, made after
      ``subscribe``, has returned (a broker across processes subscribes in the background);
    * while the broker is unreachable ``publish``, ``history`` and ``presence`` raise
      :class:`BrokerUnavailable` (quickly); when it is back, the broker resubscribes by itself
      and fills what its subscribers missed from the history, so callbacks still see each key's
      messages in sequence order, once.
    """

    @property
    def epoch(self) -> int:
        """Changes when sequence numbers restart (a new broker, a lost history)."""
        ...

    # -- lifecycle and outages
    async def start(self) -> None:
        """Connect (``Server.start()`` awaits it before accepting); :class:`BrokerUnavailable`
        when the broker cannot be reached."""
        ...

    async def close(self) -> None:
        """Release the broker's connections and background tasks (``Server.shutdown()`` awaits it
        last); this process's presence entries are removed."""
        ...

    @property
    def available(self) -> bool:
        """False while the broker is unreachable (calls raise :class:`BrokerUnavailable`)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters: at least :data:`BROKER_COUNTERS`, plus the broker's own."""
        ...

    def subscribe(self, key: str, callback: BrokerCallback) -> None:
        """Deliver messages published on ``key`` to ``callback`` (once per callback)."""
        ...

    def unsubscribe(self, key: str, callback: BrokerCallback) -> None:
        """Stop delivering ``key`` to ``callback``."""
        ...

    def live(self, key: str) -> Awaitable[None] | None:
        """After :meth:`subscribe`: None when every message published on ``key`` from now on
        reaches the subscribers, else an awaitable that completes once it does (a subscription
        made in the background, a round trip to a broker across processes). It never raises; the
        server holds a room join's reply on it (``kcprpc.context.hold_reply``)."""
        ...

    async def publish(
        self, key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE
    ) -> BrokerMessage:
        """Publish; returns the message with its sequence number."""
        ...

    async def history(self, key: str, since: int | None = None, limit: int | None = None) -> BrokerHistory:
        """The kept messages of ``key``: with ``since`` (an offset of the current epoch), those
        after it, oldest first, at most ``limit`` (the first ones); with ``since=None``, the last
        ``limit`` (all when None). ``limit=0`` reads only the position. See :class:`BrokerHistory`."""
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


def policy_of(policies: HistoryPolicies | None, default: HistoryPolicy, key: str) -> HistoryPolicy:
    """The :class:`HistoryPolicy` of ``key``: the first :mod:`fnmatch` pattern of ``policies``
    (a mapping) that matches it, or what ``policies`` (a callable) answers, else ``default``."""
    if policies is None:
        return default
    if callable(policies):
        pol = policies(key)
        if not isinstance(pol, HistoryPolicy):
            raise UsageError(f"policies({key!r}) returned {shown(pol)}, not a HistoryPolicy")
        return pol
    for pattern, pol in policies.items():
        if fnmatch.fnmatchcase(key, pattern):
            return pol
    return default


MESSAGE_OVERHEAD = 400
"""Bytes :class:`MemoryBroker` charges a kept message besides its frame and its payload's decoded
estimate: the message object, its position and its place in the queues."""

MEMORY_BROKER_COUNTERS = ("callback_errors", "history_bytes", "history_evicted", "keys", "keys_forgotten")
""":class:`MemoryBroker`'s own :meth:`~MemoryBroker.stats`: the subscriber callbacks that raised
(each logged; the other subscribers still got the message), the bytes its history holds (a
gauge, at most ``max_history_bytes``), the messages evicted to stay under that bound, the keys it
knows (a gauge), and the idle keys it forgot past ``max_idle_keys``."""


_FLOOR_SLOTS = 4096


def _slot(key: str) -> int:
    """The floor slot of a key's name (a stable hash: the same in every run)."""
    return zlib.crc32(key.encode()) & (_FLOOR_SLOTS - 1)


class _Key:
    """One key of a :class:`MemoryBroker`: its sequence, its kept messages (None: none) and their
    policy."""

    __slots__ = ("kept", "name", "seq", "size", "ttl")

    def __init__(self, name: str, policy: HistoryPolicy, seq: int) -> None:
        self.name = name
        self.seq = seq
        self.kept: deque[BrokerMessage] | None = None
        self.size = policy.size
        self.ttl = policy.ttl


class MemoryBroker:
    """In-process broker. Delivery happens synchronously inside :meth:`publish`.

    Each key keeps its last ``history`` messages, none older than ``history_ttl`` seconds (None:
    no age limit), for replay after a reconnect and for ``client.history()``. ``policies`` sets
    them per key: a mapping of :mod:`fnmatch` patterns over broker keys (``"topic:chat:*"``,
    ``"room:*"``; the first that matches wins) to :class:`HistoryPolicy`, or a callable
    ``key -> HistoryPolicy``; a key's policy is looked up once, on its first message. ``now`` is
    the clock TTLs are measured on (seconds; inject one for tests).

    ``max_history_bytes`` bounds what the history of every key together holds (each message's
    frame, its payload's decoded estimate and :data:`MESSAGE_OVERHEAD`): past it the oldest
    messages of any key go first (``history_evicted``), as if their keys' size had been smaller,
    so a later reader counts them in ``missed``. Expired messages are released as the history
    moves past them, not only when their key is read or written. A key whose messages have all
    gone keeps only its sequence number (about 200 bytes), so that its numbering goes on where
    it was; past ``max_idle_keys`` such keys without a subscriber, the one idle longest is
    forgotten (``keys_forgotten``), and a key written again after that numbers on above every
    number it had (a floor kept per hash of the name, so that no client's offset goes back)."""

    stats_gauges: ClassVar[frozenset[str]] = frozenset({"history_bytes", "keys"})
    """The entries of :meth:`stats` that are gauges (``kcprpc.metrics``)."""

    def __init__(
        self,
        *,
        history: int = 1024,
        history_ttl: float | None = None,
        policies: HistoryPolicies | None = None,
        max_history_bytes: int = 64 * 1024 * 1024,
        max_idle_keys: int = 65536,
        now: Callable[[], float] = time.monotonic,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        for name, v in (("max_history_bytes", max_history_bytes), ("max_idle_keys", max_idle_keys)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UsageError(f"MemoryBroker: {name} must be an int >= 0, not {v!r}")
        self._epoch = int.from_bytes(rng(4), "big") or 1
        self._subs: dict[str, list[BrokerCallback]] = {}
        self._keys: dict[str, _Key] = {}
        self._default, self._policies = history_settings("MemoryBroker", history, history_ttl, policies)
        self._now = now
        self._presence: dict[str, dict[str, dict[str, Any]]] = {}  # key -> member -> info
        self._stats = dict.fromkeys(BROKER_COUNTERS, 0)
        self._stats["callback_errors"] = 0
        self.max_history_bytes = max_history_bytes
        self._held = 0  # bytes of every kept message
        self._evicted = 0
        # every kept message in publish order (and some that went since: their _held is 0, skipped
        # when they reach the front, compacted when they outnumber the kept ones)
        self._order: deque[tuple[_Key, BrokerMessage]] = deque()
        self._live = 0  # kept messages in _order
        self.max_idle_keys = max_idle_keys
        # keys with nothing kept and no subscriber, the one idle longest first
        self._idle: OrderedDict[str, None] = OrderedDict()
        # per hash slot of a name: the highest number a forgotten key of that slot had
        self._floors = [0] * _FLOOR_SLOTS
        self._forgotten = 0

    @property
    def epoch(self) -> int:
        """Random per broker instance."""
        return self._epoch

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    @property
    def available(self) -> bool:
        """Always True: in-process."""
        return True

    def stats(self) -> dict[str, int]:
        """``published`` and ``delivered`` (callback calls); the others of :data:`BROKER_COUNTERS`
        stay 0 in one process; and :data:`MEMORY_BROKER_COUNTERS`."""
        out = dict(self._stats)
        out["history_bytes"] = self._held
        out["history_evicted"] = self._evicted
        out["keys"] = len(self._keys)
        out["keys_forgotten"] = self._forgotten
        return out

    def policy(self, key: str) -> HistoryPolicy:
        """The history policy of ``key``."""
        return policy_of(self._policies, self._default, key)

    def subscribe(self, key: str, callback: BrokerCallback) -> None:
        """Add a subscriber."""
        subs = self._subs.setdefault(key, [])
        if callback not in subs:
            subs.append(callback)
        self._idle.pop(key, None)

    def unsubscribe(self, key: str, callback: BrokerCallback) -> None:
        """Remove a subscriber."""
        subs = self._subs.get(key)
        if subs and callback in subs:
            subs.remove(callback)
            if not subs:
                del self._subs[key]
                k = self._keys.get(key)
                if k is not None and k.kept is None:
                    self._idled(k)

    def _idled(self, k: _Key) -> None:
        """``k`` keeps nothing: when nobody is subscribed it is idle, and past ``max_idle_keys``
        idle keys the one idle longest is forgotten, its number kept in its slot's floor."""
        name = k.name
        if name in self._subs:
            return
        idle = self._idle
        idle[name] = None
        idle.move_to_end(name)
        while len(idle) > self.max_idle_keys:
            old, _ = idle.popitem(last=False)
            gone = self._keys.pop(old)
            slot = _slot(old)
            if gone.seq > self._floors[slot]:
                self._floors[slot] = gone.seq
            self._forgotten += 1

    def live(self, key: str) -> None:
        """Always None: a subscription is live as soon as it is made."""
        return None

    def publish_nowait(
        self, key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE
    ) -> BrokerMessage:
        """Publish without awaiting (in-memory only)."""
        k = self._keys.get(key)
        if k is None:
            floor = self._floors[_slot(key)] if self._forgotten else 0
            k = self._keys[key] = _Key(key, self.policy(key), floor)
        elif self._idle:
            self._idle.pop(key, None)
        seq = k.seq = k.seq + 1
        msg = BrokerMessage(key, event, payload, seq, self._epoch, delivery)
        if k.size:
            self._keep(k, msg)
        subs = self._subs.get(key, ())
        stats = self._stats
        stats["published"] += 1
        stats["delivered"] += len(subs)
        if subs:
            run_callbacks(subs, msg, stats)
        if k.kept is None:
            self._idled(k)
        return msg

    def _keep(self, k: _Key, msg: BrokerMessage) -> None:
        """Add ``msg`` to its key's history; then drop what its key's size and TTL, and the bytes
        of every key together, no longer allow."""
        now = msg.at = self._now()
        if k.kept is not None:
            if k.ttl is not None:
                self._expire(k, now)
            if k.kept is not None and len(k.kept) >= k.size:
                self._drop(k)
        kept = k.kept
        if kept is None:
            kept = k.kept = deque()
        frame = msg.frame()
        # the frame twice: a replay caches its REPLAYED copy on the message (replay_frame)
        held = msg._held = 2 * len(frame) + decoded_size(frame[HEADER_SIZE:], 1 << 30) + MESSAGE_OVERHEAD
        kept.append(msg)
        self._held += held
        order = self._order
        order.append((k, msg))
        self._live += 1
        while order:  # the oldest message of any key: over the bytes, or expired
            k0, m0 = order[0]
            if not m0._held:
                order.popleft()
                continue
            if self._held > self.max_history_bytes:
                self._evicted += 1
            elif k0.ttl is None or m0.at > now - k0.ttl:
                break
            self._drop(k0)  # m0 is its key's oldest kept message
            if k0.kept is None and k0 is not k:
                self._idled(k0)
        if len(order) > 2 * self._live + 64:
            self._order = deque(x for x in order if x[1]._held)

    def _drop(self, k: _Key) -> None:
        """Release the oldest kept message of ``k``."""
        kept = k.kept
        assert kept is not None
        m = kept.popleft()
        self._held -= m._held
        m._held = 0
        self._live -= 1
        if not kept:
            k.kept = None

    def _expire(self, k: _Key, now: float) -> None:
        """Release the messages of ``k`` older than its TTL."""
        assert k.ttl is not None
        cutoff = now - k.ttl
        while k.kept and k.kept[0].at <= cutoff:
            self._drop(k)

    async def publish(
        self, key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE
    ) -> BrokerMessage:
        """Publish."""
        return self.publish_nowait(key, event, payload, delivery)

    def last_seq(self, key: str) -> int:
        """Last sequence number on ``key`` (0 if none; for a forgotten key, its slot's floor)."""
        k = self._keys.get(key)
        if k is not None:
            return k.seq
        return self._floors[_slot(key)] if self._forgotten else 0

    def history_nowait(self, key: str, since: int | None = None, limit: int | None = None) -> BrokerHistory:
        """:meth:`history` without awaiting (in-memory only)."""
        k = self._keys.get(key)
        if k is None:  # never written, or forgotten: nothing kept, numbered up to its floor
            last = self.last_seq(key)
            missed = last - since if since is not None and 0 <= since < last else 0
            return BrokerHistory([], self._epoch, last, missed)
        last = k.seq
        if k.kept and k.ttl is not None:
            self._expire(k, self._now())
            if k.kept is None:
                self._idled(k)
        kept = k.kept
        if since is None:
            if not kept or limit == 0:
                return BrokerHistory([], self._epoch, last, 0)
            n = len(kept)
            msgs = list(kept) if limit is None or limit >= n else list(islice(kept, n - limit, n))
            return BrokerHistory(msgs, self._epoch, last, 0)
        since = max(0, since)
        if since >= last:
            return BrokerHistory([], self._epoch, last, 0)
        if not kept or kept[-1].seq <= since:
            return BrokerHistory([], self._epoch, last, last - since)
        first = kept[0].seq
        missed = max(0, first - (since + 1))
        start = max(0, since + 1 - first)  # seqs are contiguous in the deque
        stop = len(kept) if limit is None else min(len(kept), start + max(0, limit))
        msgs = list(kept) if start == 0 and stop == len(kept) else list(islice(kept, start, stop))
        return BrokerHistory(msgs, self._epoch, last, missed)

    async def history(self, key: str, since: int | None = None, limit: int | None = None) -> BrokerHistory:
        """See :meth:`Broker.history`."""
        return self.history_nowait(key, since, limit)

    # -- presence
    def publish_unnumbered(
        self, key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE
    ) -> None:
        """Deliver now, unnumbered and not kept (presence's Joined / Left)."""
        subs = self._subs.get(key)
        if subs:
            run_callbacks(subs, unnumbered(key, event, payload, delivery), self._stats)

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
        entries = list(items if limit is None else islice(items, limit))
        return entries, len(members)


def run_callbacks(callbacks: Sequence[BrokerCallback], msg: BrokerMessage, stats: dict[str, int]) -> None:
    """Call each of ``callbacks`` (a snapshot: one may unsubscribe meanwhile) with ``msg``; an
    exception is counted in ``stats["callback_errors"]`` and logged on ``kcprpc.broker``, and the
    others still get the message."""
    for cb in tuple(callbacks):
        try:
            cb(msg)
        except Exception:
            stats["callback_errors"] += 1
            log.exception("broker callback for %r raised", msg.key)


class KeyNames:
    """``room`` and ``topic`` read from a broker key (``key``: ``"room:<name>"``,
    ``"topic:<name>"``, or None for an event sent to one session)."""

    __slots__ = ()
    key: str | None

    @property
    def topic(self) -> str | None:
        """The topic, for a topic's message."""
        k = self.key
        return k[6:] if k is not None and k.startswith("topic:") else None

    @property
    def room(self) -> str | None:
        """The room, for a room's message."""
        k = self.key
        return k[5:] if k is not None and k.startswith("room:") else None


def room_key(room: str) -> str:
    """Broker key of a room."""
    return "room:" + room


def topic_key(topic: str) -> str:
    """Broker key of a topic."""
    return "topic:" + topic


GAP_EVENT = "kcprpc.Recovered"
"""The event of :func:`gap_report` (:class:`kcprpc.Recovered`'s wire name)."""


def gap_report(key: str, epoch: int, missed: int, offset: int) -> BrokerMessage:
    """What a broker across processes hands the subscribers of ``key`` when its live delivery had
    a gap that the history no longer held (``missed`` messages; ``offset``: where delivery goes
    on): an unnumbered ``kcprpc.Recovered`` (``recovered=False``), which the server sends to
    every member, so that each client learns what it lost, as after a recovery that could not
    replay everything (before, only the broker's ``lost`` / ``gap_lost`` counted it)."""
    payload = {"key": key, "recovered": False, "replayed": 0, "missed": missed, "position": [epoch, offset]}
    return unnumbered(key, GAP_EVENT, payload)


def unnumbered(key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE) -> BrokerMessage:
    """A message outside the key's numbering (:meth:`Broker.publish_unnumbered`): ``seq`` 0, and
    its EVENT frame carries nil sequence number and epoch, so that clients track no offset for it."""
    body = pack([event, payload, key, None, None])
    return BrokerMessage(key, event, payload, 0, 0, delivery, _frame=encode_frame_raw(EVENT, 0, body))
