""":class:`NatsBroker`: the :class:`~kcprpc.broker.Broker` contract on NATS, with JetStream for
history (extra ``kcprpc[nats]``, nats-py). See docs/brokers.md, "NatsBroker".

Layout (``P`` is ``prefix``, ``T`` a key's subject token: its UTF-8 bytes in unpadded base64url):

* stream ``<PREFIX>_HISTORY`` keeps every numbered message under ``P.h.T``. Its description holds
  the broker's epoch (random, written when the stream is created): a stream that is recreated or
  whose store was wiped gets a new epoch; a restart that keeps the store keeps it. Its
  ``MaxBytes`` is ``max_history_bytes``: past it NATS discards the oldest messages of any key.
* a key with no message left (new, or all of its messages discarded) numbers on above the
  *floor*: the stream sequence of the first floor mark still kept (subject ``P.h.~floor``) minus
  one. Discarding goes oldest first, so every message discarded is older than the mark, and a key
  number is never above its message's stream sequence: the floor is above every number such a key
  had. The stream's creator writes the first mark as its first message (floor 0: keys number from
  1 until the bound first discards); when the mark is discarded, the next reader writes another.
* one gap-free sequence per key, across processes: a message carries its key's sequence number
  in its body, and is published with ``Nats-Expected-Last-Subject-Sequence`` set to the stream
  sequence of the key's last message, so the stream stores it only if no other publisher got
  there first; on that conflict (JetStream error 10071) the publisher reads the key's last message
  again and retries with the next number.
* live delivery: the stream republishes each *stored* message to ``P.l.T`` (``RePublish``, so a
  message refused on a conflict never goes out), where every process core-subscribes to the keys
  it has sessions in. Core NATS may drop (a slow consumer, a reconnect): a sequence jump or a
  reconnect fills the gap from the history, so callbacks see each key's messages in order.
* presence: stream ``<PREFIX>_PRESENCE``, one subject ``P.p.T.<member token>`` per entry (the last
  one kept), ``MaxAge`` = ``presence_ttl``; each process re-writes its own entries every third of
  it, so the entries of a dead process expire.
* unnumbered messages (presence's Joined / Left) are core-published on ``P.l.T``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from kcprpc.broker import (
    BrokerCallback,
    BrokerHistory,
    BrokerMessage,
    BrokerUnavailable,
    HistoryPolicies,
    HistoryPolicy,
    gap_report,
    history_settings,
    policy_of,
    run_callbacks,
    unnumbered,
)
from kcprpc.broker_support import BrokerBase, check_urls, spawn
from kcprpc.codec import pack, unpack
from kcprpc.errors import UsageError
from kcprpc.service import Delivery

__all__ = ["NATS_COUNTERS", "NatsBroker"]

log = logging.getLogger("kcprpc.broker")

NATS_COUNTERS = (
    "published",  # numbered messages stored by this process
    "delivered",  # messages handed to local callbacks (numbered and unnumbered)
    "publish_errors",  # publishes that failed (BrokerUnavailable raised)
    "reconnects",  # reconnections to NATS after an outage
    "outages",  # times NATS became unreachable
    "conflicts",  # publishes retried: another publisher took the key's next number first
    "gap_fills",  # history reads that filled a gap in live delivery (a jump, a reconnect)
    "gap_lost",  # messages a gap fill could not find any more (history too short): skipped
    "duplicates",  # live messages already delivered (after a gap fill): dropped
    "reorder_dropped",  # live messages dropped past max_reorder_bytes (refetched from history)
    "stale_epoch",  # live messages of another epoch (the stream was recreated): dropped
    "bad_messages",  # messages from NATS that do not decode: dropped
    "callback_errors",  # exceptions raised by subscriber callbacks (logged)
    "queued_dropped",  # background operations dropped: past max_queued_bytes, or NATS down
    "presence_refreshes",  # presence entries re-written (their TTL renewed)
    "trims",  # purges of a key's history down to its policy size
    "history_seeks",  # history reads of a short gap that searched where it starts
    "slow_consumer_drops",  # live messages nats-py dropped past its pending bound (then filled)
    "last_forgotten",  # keys' last numbers forgotten past LAST_KEYS (the next publish reads it again)
    "history_evicted",  # messages NATS discarded past max_history_bytes (the stream's, as sampled: see below)
    "history_bytes",  # a gauge: the bytes the history stream holds, as this process last sampled it
    "history_floors",  # publishes on a key with no message left numbered on above the floor (not from 1)
)
"""The counters of :meth:`NatsBroker.stats` (plus the gauges ``unavailable``, ``queued_bytes``,
``reorder_bytes``, ``subscriptions`` and ``history_bytes``). ``history_evicted`` is sampled from
the stream (at most every :data:`SAMPLE_EVERY` seconds while this process publishes): how far
the stream's first sequence moved while the stream was full (7/8 of ``max_history_bytes`` or
more), so every process sees the whole stream's (do not add them up), and a purge of the oldest
messages down to a key's size while full counts too."""

SAMPLE_EVERY = 1.0
"""Seconds between two samples of the history stream's state (``history_bytes``,
``history_evicted``) while this process publishes."""

LAST_KEYS = 65536
"""Keys whose last number a :class:`NatsBroker` remembers for its publishes (the least recently
published is forgotten first, counted in ``last_forgotten``: its next publish reads it again,
one more request to NATS)."""

_WRONG_LAST_SEQUENCE = 10071  # JetStream's JSStreamWrongLastSequenceErrF
_STREAM_NOT_FOUND = 10059  # JSStreamNotFoundErr
_SEEK_GAP = 64  # history(since) this close to the key's end ...
_SEEK_ABOVE = 256  # ... of a key keeping more than this: seek the start instead of reading all
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
_EXPECTED_STREAM_LAST = "Nats-Expected-Last-Sequence"
_NO_MESSAGE = 10037  # JSNoMessageFoundErr
_FLOOR_TOKEN = "~floor"  # not base64url: no key's subject token
_UNNUMBERED = "Kcprpc-Unnumbered"
_DELIVERIES = (Delivery.RELIABLE, Delivery.UNRELIABLE)
_EPOCH = re.compile(r"kcprpc epoch=(\d+)")
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,32}")
_TRANSIENT = (
    nats.errors.Error,
    OSError,
    asyncio.TimeoutError,
)


def _token(s: str) -> str:
    """A subject token for any string: unpadded base64url of its UTF-8 bytes (no ``.``, ``*``, ``>``)."""
    return base64.urlsafe_b64encode(s.encode()).rstrip(b"=").decode()


def _untoken(t: str) -> str:
    return base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)).decode()


def _decode(key: str, data: bytes) -> BrokerMessage | None:
    """A stored message's body ``[seq, event, payload, delivery, at, epoch]``; None if malformed."""
    try:
        v = unpack(data)
    except Exception:
        return None
    if not isinstance(v, list) or len(v) != 6:
        return None
    seq, ev, payload, d, at, epoch = v
    if (
        type(seq) is not int
        or seq < 1
        or not isinstance(ev, str)
        or type(d) is not int
        or not 0 <= d < len(_DELIVERIES)
        or not isinstance(at, (int, float))
        or type(epoch) is not int
    ):
        return None
    return BrokerMessage(key, ev, payload, seq, epoch, _DELIVERIES[d], at=float(at))


@dataclass(eq=False)
class _Sub:
    """One key this process is subscribed to: its callbacks and where live delivery stands."""

    callbacks: list[BrokerCallback] = field(default_factory=list)
    last: int | None = None  # last sequence number delivered (None: position not read yet)
    buf: dict[int, tuple[BrokerMessage, int]] = field(default_factory=dict)  # held back: seq -> (msg, bytes)
    buf_bytes: int = 0
    nsub: Subscription | None = None
    opening: asyncio.Task[None] | None = None
    placing: asyncio.Task[None] | None = (
        None  # the fill that reads where the key is (live delivery holds until then)
    )
    filling: bool = False
    again: bool = False  # a fill was asked for while one was running


def _pending(sub: _Sub) -> bool:
    """Is ``sub`` still being opened, or its position still being read?"""
    return any(t is not None and not t.done() for t in (sub.opening, sub.placing))


@dataclass(eq=False)
class _Op:
    """A background operation, in order: a presence write, an unnumbered message, a trim."""

    key: str
    run: Callable[[], Awaitable[Any]] | None
    size: int
    done: asyncio.Future[None] | None = None  # a barrier: set when reached


class NatsBroker(BrokerBase):
    """The broker on NATS JetStream (see the module doc and docs/brokers.md, "NatsBroker").

    ``url``: the NATS server(s) (a comma-separated list works too). ``prefix``: the subjects'
    first token and the streams' name prefix (letters, digits, ``_``, ``-``): servers that share
    a prefix share rooms and topics. ``history``, ``history_ttl`` and ``policies``: as
    :class:`~kcprpc.broker.MemoryBroker` (every server sharing the prefix must use the same ones).
    ``presence_ttl``: seconds a presence entry outlives its process. ``timeout``: seconds one NATS
    request may take before the call fails with :class:`BrokerUnavailable`. ``reconnect_wait``:
    seconds between reconnection attempts. ``max_reorder_bytes``: live messages held back per key
    while a gap is filled; ``max_queued_bytes``: background operations (presence writes,
    unnumbered messages) queued. ``max_history_bytes``: the history stream's ``MaxBytes``, every key
    together (NATS discards the oldest messages of any key past it; a key with none left numbers on
    above the floor, see the module doc; every server sharing the prefix must use the same).
    ``now``: the wall clock history TTLs are measured on (the same on every server); ``rng``: the
    source of a new epoch. ``options``: more keyword arguments for ``nats.connect`` (credentials,
    TLS)."""

    stats_gauges: ClassVar[frozenset[str]] = frozenset({"history_bytes"})
    """The entries of :meth:`stats` that are gauges besides ``kcprpc.metrics.BROKER_GAUGES``."""

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        prefix: str = "kcprpc",
        history: int = 1024,
        history_ttl: float | None = None,
        policies: HistoryPolicies | None = None,
        presence_ttl: float = 30.0,
        timeout: float = 2.0,
        reconnect_wait: float = 1.0,
        max_reorder_bytes: int = 1 << 20,
        max_queued_bytes: int = 1 << 20,
        max_fetch_bytes: int = 16 << 20,
        max_conflicts: int = 1000,
        max_history_bytes: int = 256 << 20,
        now: Callable[[], float] = time.time,
        rng: Callable[[int], bytes] = os.urandom,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise UsageError(f"NatsBroker prefix {prefix!r}: 1 to 32 letters, digits, '_' or '-'")
        if not presence_ttl > 0 or not timeout > 0 or not reconnect_wait > 0:
            raise UsageError("NatsBroker: presence_ttl, timeout and reconnect_wait must be positive")
        if min(max_reorder_bytes, max_queued_bytes, max_fetch_bytes, max_conflicts) <= 0:
            raise UsageError(
                "NatsBroker: max_reorder_bytes, max_queued_bytes, max_fetch_bytes and max_conflicts must be positive"
            )
        if (
            isinstance(max_history_bytes, bool)
            or not isinstance(max_history_bytes, int)
            or max_history_bytes <= 0
        ):
            raise UsageError(f"NatsBroker: max_history_bytes must be an int > 0, not {max_history_bytes!r}")
        self.url = check_urls(url, ("nats", "tls", "ws", "wss"), "NatsBroker")
        self.prefix = prefix
        base = prefix.upper().replace("-", "_")
        self.stream = base + "_HISTORY"
        self.presence_stream = base + "_PRESENCE"
        self._default, self._policies = history_settings("NatsBroker", history, history_ttl, policies)
        self.presence_ttl = presence_ttl
        self.timeout = timeout
        self.reconnect_wait = reconnect_wait
        self.max_reorder_bytes = max_reorder_bytes
        self.max_queued_bytes = max_queued_bytes
        self.max_fetch_bytes = max_fetch_bytes
        self.max_conflicts = max_conflicts
        self.max_history_bytes = max_history_bytes
        self._floor_subject = f"{prefix}.h.{_FLOOR_TOKEN}"
        self._sampled = -SAMPLE_EVERY  # time.monotonic() of the last sample of the stream's state
        self._first_seq: int | None = None  # the stream's first sequence at that sample
        self._now = now
        self._rng = rng
        self._options = dict(options or {})
        self._nc: Client | None = None
        self._available = False
        self._closing = False
        self._epoch = 0
        self._subs: dict[str, _Sub] = {}
        self._last: OrderedDict[str, tuple[int, int]] = OrderedDict()  # key -> (stream seq, key seq)
        self._locks: dict[str, asyncio.Lock] = {}
        self._ops: deque[_Op] = deque()
        self._ops_bytes = 0
        self._ops_wake = asyncio.Event()
        self._present: dict[
            str, dict[str, tuple[dict[str, Any], float]]
        ] = {}  # key -> member -> (info, since)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._recovering: asyncio.Task[None] | None = None
        self._rechecking: asyncio.Task[None] | None = None
        self._queued_keys: dict[str, int] = {}  # key -> background operations queued on it
        self._stats: dict[str, int] = dict.fromkeys(NATS_COUNTERS, 0)

    # ------------------------------------------------------------------ lifecycle
    def stats(self) -> dict[str, int]:
        """Counters (:data:`NATS_COUNTERS`) and gauges."""
        s = super().stats()
        s["queued_bytes"] = self._ops_bytes
        s["reorder_bytes"] = sum(sub.buf_bytes for sub in self._subs.values())
        s["subscriptions"] = len(self._subs)
        return s

    async def start(self) -> None:
        """Connect, create the streams if missing and read the epoch; :class:`BrokerUnavailable`
        if NATS cannot be reached. Afterwards the broker reconnects by itself."""
        if self._nc is not None:
            return
        self._closing = False
        opts: dict[str, Any] = {
            "servers": [u.strip() for u in self.url.split(",")],
            "name": f"kcprpc-{self.prefix}",
            "connect_timeout": self.timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": 1,  # the first connect gives up (then: forever, below)
            "reconnect_time_wait": self.reconnect_wait,
            "pending_size": self.max_queued_bytes,
            "disconnected_cb": self._disconnected,
            "reconnected_cb": self._reconnected,
            "error_cb": self._error,
        }
        opts.update(self._options)
        try:
            nc = await nats.connect(**opts)
        except Exception as e:  # nats-py raises several kinds for "not there"
            raise BrokerUnavailable(f"NATS at {self.url} is unreachable: {e!r}") from None
        nc.options["max_reconnect_attempts"] = -1  # once connected, reconnect for as long as it takes
        self._nc = nc
        try:
            await self._ensure_streams()
        except BrokerUnavailable:
            await nc.close()
            self._nc = None
            raise
        self._available = True
        self._worker = asyncio.ensure_future(self._work())
        self._refresher = asyncio.ensure_future(self._refresh_presence())
        for key, sub in self._subs.items():
            self._open(key, sub)

    async def close(self) -> None:
        """Remove this process's presence entries (best effort), stop the background work and
        close the connection (what is still queued is dropped)."""
        nc = self._nc
        if nc is not None and self._available and self._present:
            jsm = nc.jsm(timeout=self.timeout)
            purges = [
                jsm.purge_stream(self.presence_stream, subject=self._entry_subject(key, member))
                for key, members in self._present.items()
                for member in members
            ]
            with contextlib.suppress(Exception):  # else they expire after presence_ttl
                await asyncio.wait_for(asyncio.gather(*purges, return_exceptions=True), self.timeout)
        self._present.clear()
        self._closing = True
        self._available = False
        tasks = [t for t in (self._worker, self._refresher, self._recovering, *self._tasks) if t is not None]
        for sub in self._subs.values():
            if sub.opening is not None:
                tasks.append(sub.opening)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout)  # bounded, as everything in close
        self._tasks.clear()
        self._worker = self._refresher = self._recovering = None
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), self.timeout * 2)
        for sub in self._subs.values():
            sub.nsub = None
            sub.opening = None
            sub.last = None
        self._ops.clear()
        self._ops_bytes = 0
        self._queued_keys.clear()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        return spawn(self._tasks, coro)

    def _check(self) -> Client:
        nc = self._nc
        if nc is None or not self._available:
            raise BrokerUnavailable(f"NATS at {self.url} is unavailable")
        return nc

    def _failed(self, what: str, e: BaseException) -> BrokerUnavailable:
        return BrokerUnavailable(f"NATS at {self.url}: {what} failed: {e!r}")

    async def _disconnected(self) -> None:
        if self._available and not self._closing:
            self._available = False
            self._stats["outages"] += 1
            log.warning(
                "NATS at %s unreachable: publish, history and presence fail until it is back", self.url
            )

    async def _reconnected(self) -> None:
        if self._closing:
            return
        if self._recovering is None or self._recovering.done():
            self._recovering = asyncio.ensure_future(self._recover())

    async def _error(self, e: Exception) -> None:
        if isinstance(e, nats.errors.SlowConsumerError):
            # nats-py dropped live messages of a key (its pending bound): fill them from history
            self._stats["slow_consumer_drops"] += 1
            for key, sub in self._subs.items():
                if sub.nsub is not None and sub.nsub is e.sub:
                    self._fill(key, sub)
                    break
            return
        log.debug("NATS at %s: %r", self.url, e)

    async def _recover(self) -> None:
        """After a reconnect: check the streams (and the epoch), then resume: presence written
        again, gaps filled from history (nats-py subscribes again by itself)."""
        delay = self.reconnect_wait
        while not self._closing:
            try:
                await self._ensure_streams()
                break
            except BrokerUnavailable as e:
                log.debug("NATS at %s: streams not ready yet: %s", self.url, e)
            except Exception:  # (a UsageError: a stream kcprpc did not make; nats-py's undocumented)
                log.warning("NATS at %s: checking the streams failed: retrying", self.url, exc_info=True)
            await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
            delay = min(delay * 2, 10.0)
        else:
            return
        self._available = True
        self._stats["reconnects"] += 1
        log.warning("NATS at %s reachable again (epoch %d)", self.url, self._epoch)
        for key, members in list(self._present.items()):
            for member in list(members):
                self._queue_presence(key, member)
        for key, sub in self._subs.items():
            if sub.nsub is None:
                self._open(key, sub)
            else:
                self._fill(key, sub)

    async def _ensure_streams(self) -> None:
        """Create the streams when missing; read the epoch from the history stream."""
        nc = self._nc
        if nc is None:
            raise BrokerUnavailable("not started")
        jsm = nc.jsm(timeout=self.timeout)
        p = self.prefix
        epoch = int.from_bytes(self._rng(4), "big") or 1
        history = api.StreamConfig(
            name=self.stream,
            description=f"kcprpc epoch={epoch}",
            subjects=[f"{p}.h.>"],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.OLD,
            max_msgs_per_subject=-1,  # each key is trimmed to its own policy (the last message always stays)
            max_bytes=self.max_history_bytes,  # every key together: the oldest of any key go first
            allow_direct=True,
            republish=api.RePublish(src=f"{p}.h.>", dest=f"{p}.l.>"),
        )
        presence = api.StreamConfig(
            name=self.presence_stream,
            subjects=[f"{p}.p.>"],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.OLD,
            max_msgs_per_subject=1,
            max_age=self.presence_ttl,
            allow_direct=True,
        )
        try:
            info, created = await self._stream_info(jsm, history)
            await self._stream_info(jsm, presence)
        except (APIError, *_TRANSIENT) as e:
            raise self._failed("creating the streams", e) from None
        m = _EPOCH.fullmatch(info.config.description or "")
        if m is None:
            raise UsageError(
                f"stream {self.stream} exists but was not made by kcprpc (no epoch in its description)"
            )
        try:
            if created:
                await self._first_floor_mark(nc)
            elif info.config.max_bytes != self.max_history_bytes:
                info = await self._bound_history(jsm, info)
        except (APIError, *_TRANSIENT) as e:
            raise self._failed("bounding the history stream", e) from None
        new = int(m.group(1))
        if info.state is not None and (new != self._epoch or self._first_seq is None):
            self._first_seq = max(1, info.state.first_seq)  # where history_evicted counts from
            self._stats["history_bytes"] = info.state.bytes
        if new != self._epoch:
            if self._epoch:
                log.warning(
                    "NATS stream %s has a new epoch %d (was %d): its history was lost",
                    self.stream,
                    new,
                    self._epoch,
                )
                self._new_epoch()
            self._epoch = new

    async def _stream_info(self, jsm: Any, config: api.StreamConfig) -> tuple[api.StreamInfo, bool]:
        """The stream's info, and whether this call created it."""
        try:
            info: api.StreamInfo = await jsm.stream_info(config.name)
            return info, False
        except NotFoundError:
            pass
        try:
            info = await jsm.add_stream(config)
            return info, True
        except APIError:  # another process created it first, with its own epoch
            info = await jsm.stream_info(config.name)
            return info, False

    async def _first_floor_mark(self, nc: Client) -> None:
        """Write the floor mark as the new stream's first message (floor 0: keys number from 1).
        If another message was first, the mark is written where the floor is next read."""
        with contextlib.suppress(APIError):  # 10071: not empty any more
            await nc.jetstream(timeout=self.timeout).publish(
                self._floor_subject, b"", headers={_EXPECTED_STREAM_LAST: "0"}
            )

    async def _bound_history(self, jsm: Any, info: api.StreamInfo) -> api.StreamInfo:
        """Set the history stream's ``MaxBytes`` to ``max_history_bytes`` (a stream made by an
        older kcprpc had none: its history grew without bound)."""
        old = info.config.max_bytes
        if old is not None and old > 0:  # another process set another bound: the same for all
            log.warning(
                "NATS stream %s was bounded at %d bytes, this process says max_history_bytes=%d: "
                "set the same on every process of prefix %r",
                self.stream,
                old,
                self.max_history_bytes,
                self.prefix,
            )
        updated: api.StreamInfo = await jsm.update_stream(
            info.config.evolve(max_bytes=self.max_history_bytes)
        )
        return updated

    def _new_epoch(self) -> None:
        """The history was lost: numbering restarts; every subscription reads the new epoch from 0."""
        self._last.clear()
        for key, sub in self._subs.items():
            sub.buf.clear()
            sub.buf_bytes = 0
            if sub.last is not None:
                sub.last = 0
            self._fill(key, sub)

    # ------------------------------------------------------------------ policies
    def policy(self, key: str) -> HistoryPolicy:
        """The history policy of ``key`` (as :meth:`kcprpc.broker.MemoryBroker.policy`)."""
        return policy_of(self._policies, self._default, key)

    def _subject(self, kind: str, key: str) -> str:
        return f"{self.prefix}.{kind}.{_token(key)}"

    def _entry_subject(self, key: str, member: str) -> str:
        return f"{self.prefix}.p.{_token(key)}.{_token(member)}"

    # ------------------------------------------------------------------ publish
    async def publish(
        self, key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE
    ) -> BrokerMessage:
        """Store the message as the key's next number and deliver it to every subscriber;
        :class:`BrokerUnavailable` while NATS is down (nothing published)."""
        try:
            self._check()
            await self._opened(key)  # our own subscription sees what we publish next
            if key in self._queued_keys:
                await self._barrier(key)  # unnumbered messages queued before go out first
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = asyncio.Lock()
            try:
                async with lock:
                    return await self._publish(key, event, payload, delivery)
            finally:
                if not lock.locked() and self._locks.get(key) is lock:
                    del self._locks[key]
        except BrokerUnavailable:
            self._stats["publish_errors"] += 1
            raise

    async def _publish(self, key: str, event: str, payload: Any, delivery: Delivery) -> BrokerMessage:
        nc = self._check()
        js = nc.jetstream(timeout=self.timeout)
        subject = self._subject("h", key)
        code = _DELIVERIES.index(Delivery(delivery))
        state = self._last.get(key)
        known = state is not None
        recreated = False
        for _ in range(self.max_conflicts):
            if state is None:
                state = await self._read_last(key)
                if known and state[0] == 0:  # it had messages, it has none: discarded, or a new stream?
                    await self._ensure_streams()
                    known = False
                    state = await self._read_last(key)  # a new stream: numbered from its floor
            stream_seq, seq = state
            at = self._now()
            epoch = self._epoch
            data = pack([seq + 1, event, payload, code, at, epoch])
            try:
                ack = await js.publish(subject, data, headers={_EXPECTED_LAST: str(stream_seq)})
            except APIError as e:
                if e.err_code == _WRONG_LAST_SEQUENCE:
                    self._stats["conflicts"] += 1
                    state = None
                    continue
                raise self._failed("publish", e) from None
            except nats.errors.MaxPayloadError:
                raise UsageError(
                    f"a message of {len(data)} bytes is over the NATS server's max_payload"
                ) from None
            except NoStreamResponseError as e:
                # the stream is gone (deleted under us): recreate it once, with a new epoch
                if recreated:
                    raise self._failed("publish", e) from None
                recreated = True
                await self._ensure_streams()
                state = None
                continue
            except _TRANSIENT as e:
                self._last.pop(key, None)
                raise self._failed("publish", e) from None
            self._remember(key, (ack.seq, seq + 1))
            self._stats["published"] += 1
            if stream_seq == 0 and seq:
                self._stats["history_floors"] += 1
            self._trim(key, seq + 1)
            self._sample_soon()
            return BrokerMessage(key, event, payload, seq + 1, epoch, Delivery(delivery), at=at)
        raise BrokerUnavailable(f"publish on {key!r}: {self.max_conflicts} conflicts in a row")

    def _remember(self, key: str, state: tuple[int, int]) -> None:
        last = self._last
        last[key] = state
        last.move_to_end(key)
        if len(last) > LAST_KEYS:  # bounded: a forgotten key costs one read on its next publish
            last.popitem(last=False)
            self._stats["last_forgotten"] += 1

    async def _read_last(self, key: str) -> tuple[int, int]:
        """(stream sequence, key sequence) of the key's last message; (0, the floor) if none."""
        m = await self._get_last(key)
        return (0, await self._floor()) if m is None else (m[0], m[1].seq)

    async def _floor(self) -> int:
        """The number a key with no message left numbers on above: the stream sequence of the
        first floor mark kept, minus one (see the module doc). When the bound discarded every
        mark, one is written at the end of the stream (one writer wins) and read again."""
        nc = self._check()
        jsm = nc.jsm(timeout=self.timeout)
        for attempt in range(3):
            try:
                raw = await jsm.get_msg(self.stream, seq=1, subject=self._floor_subject, next=True)
                if raw.seq is None:
                    raise BrokerUnavailable(f"the floor mark in {self.stream} has no sequence")
                return raw.seq - 1
            except NotFoundError as e:
                if e.err_code == _STREAM_NOT_FOUND:
                    if attempt:
                        raise self._failed("reading the floor", e) from None
                    await self._ensure_streams()  # deleted under us: recreated, with a new epoch
                    continue
                if e.err_code != _NO_MESSAGE:
                    raise self._failed("reading the floor", e) from None
            except (APIError, *_TRANSIENT) as e:
                raise self._failed("reading the floor", e) from None
            try:  # no mark left: write one (only if still none; else another process did)
                await nc.jetstream(timeout=self.timeout).publish(
                    self._floor_subject, b"", headers={_EXPECTED_LAST: "0"}
                )
            except APIError as e:
                if e.err_code != _WRONG_LAST_SEQUENCE:
                    raise self._failed("writing the floor mark", e) from None
            except _TRANSIENT as e:
                raise self._failed("writing the floor mark", e) from None
        raise BrokerUnavailable(f"NATS at {self.url}: the floor mark of {self.stream} keeps being discarded")

    def _sample_soon(self) -> None:
        """Sample the history stream's state in the background, at most every SAMPLE_EVERY s."""
        now = time.monotonic()
        if now - self._sampled < SAMPLE_EVERY:
            return
        self._sampled = now
        self._queue(_Op("", self.sample_history, 64))

    async def sample_history(self) -> None:
        """Read the history stream's state now: ``history_bytes``, and ``history_evicted`` (how
        far its first sequence moved since the last sample, when the stream is full). Done in
        the background while this process publishes; :class:`BrokerUnavailable` if NATS fails."""
        nc = self._check()
        try:
            info = await nc.jsm(timeout=self.timeout).stream_info(self.stream)
        except (APIError, *_TRANSIENT) as e:
            raise self._failed("reading the history stream's state", e) from None
        state = info.state
        if state is None:
            return
        self._stats["history_bytes"] = state.bytes
        first, before = state.first_seq, self._first_seq
        self._first_seq = first
        if before is not None and first > before and state.bytes * 8 >= self.max_history_bytes * 7:
            self._stats["history_evicted"] += first - before

    async def _get_last(self, key: str) -> tuple[int, BrokerMessage] | None:
        nc = self._check()
        jsm = nc.jsm(timeout=self.timeout)
        for attempt in range(2):
            try:
                # the API's get, not the direct one: a missing stream is an error at once
                # (a direct get to it just times out)
                raw = await jsm.get_last_msg(self.stream, self._subject("h", key))
                break
            except NotFoundError as e:
                if e.err_code != _STREAM_NOT_FOUND:
                    return None  # the key has no message
                if attempt:
                    raise self._failed("reading the history", e) from None
                await self._ensure_streams()  # deleted under us: recreated, with a new epoch
            except (APIError, *_TRANSIENT) as e:
                raise self._failed("reading the history", e) from None
        msg = _decode(key, raw.data or b"")
        if msg is None or raw.seq is None:
            self._stats["bad_messages"] += 1
            raise BrokerUnavailable(f"the last message of {key!r} in {self.stream} does not decode")
        if msg.epoch != self._epoch:  # written in another epoch: the stream was recreated since
            await self._ensure_streams()
        return raw.seq, msg

    def _trim(self, key: str, seq: int) -> None:
        """Every eighth of its size, purge the key's history down to its policy (the last
        message always stays: it carries the key's number)."""
        keep = max(1, self.policy(key).size)
        if seq <= keep or seq % max(1, min(64, keep // 8)):
            return
        subject = self._subject("h", key)

        async def purge() -> None:
            nc = self._check()
            await nc.jsm(timeout=self.timeout).purge_stream(self.stream, subject=subject, keep=keep)
            self._stats["trims"] += 1

        self._queue(_Op("", purge, 64))  # no key: publishes on it need not wait for a trim

    # ------------------------------------------------------------------ subscribe and live delivery
    def subscribe(self, key: str, callback: BrokerCallback) -> None:
        """Deliver messages published on ``key`` from now on to ``callback``, in sequence order."""
        sub = self._subs.get(key)
        if sub is None:
            sub = self._subs[key] = _Sub()
            if self._nc is not None:
                self._open(key, sub)
        if callback not in sub.callbacks:
            sub.callbacks.append(callback)

    def unsubscribe(self, key: str, callback: BrokerCallback) -> None:
        """Stop delivering ``key`` to ``callback``."""
        sub = self._subs.get(key)
        if sub is None or callback not in sub.callbacks:
            return
        sub.callbacks.remove(callback)
        if sub.callbacks:
            return
        del self._subs[key]
        if sub.opening is not None and not sub.opening.done():
            sub.opening.cancel()
        nsub, sub.nsub = sub.nsub, None
        if nsub is not None:
            self._spawn(self._unsub(nsub))

    async def _unsub(self, nsub: Subscription) -> None:
        with contextlib.suppress(Exception):
            await nsub.unsubscribe()

    def live(self, key: str) -> Awaitable[None] | None:
        """None once the subscription of ``key`` is in place on the server and its position read
        (until then live messages are held, and one published meanwhile would be counted in the
        position, not delivered), else a task done when both are (it never raises; while NATS is
        unreachable: None, nothing to wait for)."""
        sub = self._subs.get(key)
        if sub is None or self._nc is None or not _pending(sub):
            return None
        return self._spawn(self._until_live(sub))

    async def _until_live(self, sub: _Sub) -> None:
        await self._settled(sub.opening)  # it starts the position's fill before it ends
        await self._settled(sub.placing)

    async def _settled(self, task: asyncio.Task[None] | None) -> None:
        """Wait (bounded by ``timeout``, never raising) for ``task``, if it is still running."""
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=self.timeout)

    async def _opened(self, key: str) -> None:
        """Wait (bounded) for the subscription of ``key`` being opened, if any: the contract's
        "live once a history call after subscribe returned"."""
        sub = self._subs.get(key)
        if sub is not None:
            await self._settled(sub.opening)

    async def ready(self) -> None:
        """Wait until every subscription made so far is in place on the server and its position
        read (each step bounded by ``timeout``): what is published after it reaches them."""
        pending = [self._until_live(s) for s in self._subs.values() if _pending(s)]
        if pending:
            await asyncio.gather(*pending)

    def _open(self, key: str, sub: _Sub) -> None:
        sub.opening = self._spawn(self._open_sub(key, sub))

    async def _open_sub(self, key: str, sub: _Sub) -> None:
        nc = self._nc
        if nc is None:
            return
        try:
            nsub = await nc.subscribe(
                self._subject("l", key),
                cb=self._live(key),
                pending_bytes_limit=self.max_reorder_bytes * 4,
            )
            if self._subs.get(key) is not sub:
                await nsub.unsubscribe()
                return
            sub.nsub = nsub
            await nc.flush(max(1, round(self.timeout)))
        except Exception as e:
            log.debug("NATS at %s: subscribing %r failed (%r): done again on reconnect", self.url, key, e)
            return
        self._fill(key, sub)

    def _live(self, key: str) -> Callable[[Msg], Awaitable[None]]:
        async def on_message(msg: Msg) -> None:
            sub = self._subs.get(key)
            if sub is None:
                return
            data = msg.data
            if msg.headers and _UNNUMBERED in msg.headers:
                um = self._decode_unnumbered(key, data)
                if um is not None:
                    self._deliver(sub, um)
                return
            m = _decode(key, data)
            if m is None:
                self._stats["bad_messages"] += 1
                return
            self._accept(key, sub, m, len(data))

        return on_message

    def _decode_unnumbered(self, key: str, data: bytes) -> BrokerMessage | None:
        try:
            v = unpack(data)
            ev, payload, d = v
            if not isinstance(ev, str) or type(d) is not int or not 0 <= d < len(_DELIVERIES):
                raise ValueError(d)
        except Exception:
            self._stats["bad_messages"] += 1
            return None
        return unnumbered(key, ev, payload, _DELIVERIES[d])

    def _accept(self, key: str, sub: _Sub, m: BrokerMessage, size: int) -> None:
        if m.epoch != self._epoch:
            self._stats["stale_epoch"] += 1
            if self._available and (self._rechecking is None or self._rechecking.done()):
                self._rechecking = self._spawn(self._recheck_epoch())
            return
        last = sub.last
        if last is None or sub.filling:
            self._hold(sub, m, size)
            return
        if m.seq <= last:
            self._stats["duplicates"] += 1
            return
        if m.seq == last + 1:
            sub.last = m.seq
            self._deliver(sub, m)
            return
        self._hold(sub, m, size)  # a jump: what is between comes from the history
        self._fill(key, sub)

    async def _recheck_epoch(self) -> None:
        with contextlib.suppress(BrokerUnavailable):
            await self._ensure_streams()

    def _hold(self, sub: _Sub, m: BrokerMessage, size: int) -> None:
        if sub.buf_bytes + size > self.max_reorder_bytes:
            self._stats["reorder_dropped"] += len(sub.buf) + 1
            sub.buf.clear()  # bounded: the fill reads them from the history instead
            sub.buf_bytes = 0
            return
        if m.seq not in sub.buf:
            sub.buf[m.seq] = (m, size)
            sub.buf_bytes += size

    def _deliver(self, sub: _Sub, m: BrokerMessage) -> None:
        self._stats["delivered"] += 1
        run_callbacks(sub.callbacks, m, self._stats)

    def _drain(self, sub: _Sub) -> None:
        """Deliver what is held back and now in order; forget what is behind."""
        buf = sub.buf
        last = sub.last
        if last is None:
            return
        for s in [s for s in buf if s <= last]:
            sub.buf_bytes -= buf.pop(s)[1]
        while last + 1 in buf:
            m, size = buf.pop(last + 1)
            sub.buf_bytes -= size
            last = sub.last = m.seq
            self._deliver(sub, m)

    def _fill(self, key: str, sub: _Sub) -> None:
        if sub.filling:
            sub.again = True  # asked again during a round: one more round after it
            return
        sub.filling = True
        task = self._spawn(self._fill_from_history(key, sub))
        if sub.last is None:
            sub.placing = task

    async def _fill_from_history(self, key: str, sub: _Sub) -> None:
        """Deliver from the history what live delivery missed (or, first, read where the key is)."""
        try:
            for _ in range(10_000):  # bounded: each round delivers or skips at least one message
                if self._subs.get(key) is not sub or not self._available:
                    return
                sub.again = False
                if sub.last is None:
                    h = await self.history(key, None, 0)
                    sub.last = h.last
                    self._drain(sub)
                    if not sub.buf and not sub.again:
                        return
                    continue
                before = sub.last
                h = await self.history(key, before, 256)
                if self._subs.get(key) is not sub or h.epoch != self._epoch or sub.last is None:
                    return
                self._stats["gap_fills"] += 1
                if h.missed:
                    self._stats["gap_lost"] += h.missed
                    sub.last += h.missed
                    run_callbacks(sub.callbacks, gap_report(key, h.epoch, h.missed, sub.last), self._stats)
                for m in h.messages:
                    if m.seq > sub.last:
                        sub.last = m.seq
                        self._deliver(sub, m)
                self._drain(sub)
                if sub.again:
                    continue  # a message was dropped (or jumped) while this round read
                if sub.last >= h.last and not sub.buf:
                    return
                if sub.last == before:
                    return  # nothing more to find now; a later message or reconnect fills again
        except BrokerUnavailable as e:
            log.debug("NATS at %s: filling %r failed (%s): done again on reconnect", self.url, key, e)
        finally:
            sub.filling = False

    # ------------------------------------------------------------------ history
    async def history(self, key: str, since: int | None = None, limit: int | None = None) -> BrokerHistory:
        """See :meth:`kcprpc.broker.Broker.history`. Reads the key's last message (one request),
        then, when more is asked for, its kept messages (an ephemeral consumer)."""
        self._check()
        await self._opened(key)
        got = await self._get_last(key)
        if got is None:  # none kept: the key is where its next number goes on from
            floor = await self._floor()
            epoch = self._epoch
            if since is None or since >= floor:
                return BrokerHistory([], epoch, floor, 0)
            return BrokerHistory([], epoch, floor, floor - max(0, since))
        epoch = self._epoch
        last_sseq, last_msg = got
        last = last_msg.seq
        if limit is not None and limit < 0:
            limit = 0
        if since is not None:
            since = max(0, since)
            if since >= last:
                return BrokerHistory([], epoch, last, 0)
        elif limit == 0:
            return BrokerHistory([], epoch, last, 0)
        pol = self.policy(key)
        floor = last - pol.size  # kept: numbers above it
        if pol.size == 0:
            kept: list[BrokerMessage] = []
        elif since == last - 1 or (since is None and limit == 1):
            kept = [last_msg]
        elif since is not None and last - since <= _SEEK_GAP and min(last, pol.size) > _SEEK_ABOVE:
            # a short gap in a long history: find where it starts, read only from there
            start = await self._seek(key, since, last_sseq)
            kept = await self._read_kept(key, since, start)
        else:
            kept = await self._read_kept(key, max(floor, since or 0))
        kept = [m for m in kept if m.seq > floor]
        if pol.ttl is not None:
            cutoff = self._now() - pol.ttl
            while kept and kept[0].at <= cutoff:
                kept.pop(0)
        if since is None:
            msgs = kept if limit is None else kept[max(0, len(kept) - limit) :]
            return BrokerHistory(msgs, epoch, last, 0)
        if not kept or kept[-1].seq <= since:
            return BrokerHistory([], epoch, last, last - since)
        first = kept[0].seq
        missed = max(0, first - (since + 1))
        msgs = [m for m in kept if m.seq > since]
        if limit is not None:
            msgs = msgs[:limit]
        return BrokerHistory(msgs, epoch, last, missed)

    async def _seek(self, key: str, since: int, last_sseq: int) -> int:
        """The stream sequence of the key's first stored message numbered above ``since``: a
        binary search over the stream with gets of "the key's next message from sequence x"
        (about log2 of the stream's length round trips)."""
        nc = self._check()
        jsm = nc.jsm(timeout=self.timeout)
        subject = self._subject("h", key)
        self._stats["history_seeks"] += 1
        # the smallest x whose "next message of the key from x" is numbered above since (that
        # number only grows with x); found is that message's stream sequence for x = hi
        lo, hi, found = 1, last_sseq, last_sseq
        try:
            while lo < hi:
                mid = (lo + hi) // 2
                raw = await jsm.get_msg(self.stream, seq=mid, subject=subject, next=True)
                m = _decode(key, raw.data or b"")
                if m is None or raw.seq is None:
                    raise BrokerUnavailable(f"a message of {key!r} in {self.stream} does not decode")
                if m.seq == since + 1:
                    return raw.seq
                if m.seq > since:
                    hi, found = mid, raw.seq
                else:
                    lo = max(mid, raw.seq) + 1
        except (APIError, *_TRANSIENT) as e:
            raise self._failed("reading the history", e) from None
        return found

    async def _read_kept(self, key: str, after: int, start: int | None = None) -> list[BrokerMessage]:
        """The key's stored messages numbered above ``after``, oldest first (from the stream
        sequence ``start`` on, when given)."""
        out: list[BrokerMessage] = []
        for _, data in await self._fetch(self.stream, self._subject("h", key), start):
            m = _decode(key, data)
            if m is None:
                self._stats["bad_messages"] += 1
            elif m.seq > after and m.epoch == self._epoch:
                out.append(m)
        out.sort(key=lambda m: m.seq)
        return out

    async def _fetch(self, stream: str, subject: str, start: int | None = None) -> list[tuple[str, bytes]]:
        """The subjects and bodies of every message on ``subject`` (a filter) in ``stream``, in
        stream order (from the stream sequence ``start`` on, when given): one ephemeral pull
        consumer, read in rounds of at most ``max_fetch_bytes``."""
        nc = self._check()
        jsm = nc.jsm(timeout=self.timeout)
        config = api.ConsumerConfig(
            filter_subject=subject,
            deliver_policy=api.DeliverPolicy.ALL if start is None else api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=api.AckPolicy.NONE,
            mem_storage=True,
            inactive_threshold=max(5.0, self.timeout * 5),
        )
        try:
            ci = await jsm.add_consumer(stream, config)
        except (APIError, *_TRANSIENT) as e:
            raise self._failed("reading the history", e) from None
        name = ci.name
        out: list[tuple[str, bytes]] = []
        try:
            n = ci.num_pending or 0
            if n == 0:
                return out
            inbox = nc.new_inbox()
            nsub = await nc.subscribe(inbox, pending_bytes_limit=self.max_fetch_bytes + (1 << 20))
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.timeout * 4
                while len(out) < n:  # in rounds of at most max_fetch_bytes
                    req = {"batch": n - len(out), "no_wait": True, "max_bytes": self.max_fetch_bytes}
                    await nc.publish(
                        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}", json.dumps(req).encode(), reply=inbox
                    )
                    before = len(out)
                    while len(out) < n:
                        msg = await nsub.next_msg(timeout=max(0.001, deadline - loop.time()))
                        if msg.headers and "Status" in msg.headers:
                            break  # 404/408: nothing more (expired meanwhile); 409: the round's bytes
                        out.append((msg.subject, msg.data))
                    if len(out) == before:
                        break
            finally:
                with contextlib.suppress(Exception):
                    await nsub.unsubscribe()
        except _TRANSIENT as e:
            raise self._failed("reading the history", e) from None
        finally:
            if name:
                self._spawn(self._delete_consumer(stream, name))
        return out

    async def _delete_consumer(self, stream: str, name: str) -> None:
        nc = self._nc
        if nc is not None:
            with contextlib.suppress(Exception):  # else its inactive_threshold removes it
                await nc.jsm(timeout=self.timeout).delete_consumer(stream, name)

    # ------------------------------------------------------------------ background operations
    def _queue(self, op: _Op) -> bool:
        if op.run is not None and (not self._available or self._ops_bytes + op.size > self.max_queued_bytes):
            self._stats["queued_dropped"] += 1
            return False
        self._ops.append(op)
        self._ops_bytes += op.size
        if op.key:
            self._queued_keys[op.key] = self._queued_keys.get(op.key, 0) + 1
        self._ops_wake.set()
        return True

    async def _barrier(self, key: str) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue(_Op(key, None, 0, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.timeout * 4)
        except TimeoutError:
            raise BrokerUnavailable(f"NATS at {self.url}: background writes on {key!r} are stuck") from None

    async def _work(self) -> None:
        """Run the queued operations one at a time, in order."""
        while True:
            while not self._ops:
                self._ops_wake.clear()
                await self._ops_wake.wait()
            op = self._ops.popleft()
            self._ops_bytes -= op.size
            if op.key:
                n = self._queued_keys[op.key] - 1
                if n:
                    self._queued_keys[op.key] = n
                else:
                    del self._queued_keys[op.key]
            if op.done is not None:
                if not op.done.done():
                    op.done.set_result(None)
                continue
            if op.run is None:
                continue
            if not self._available:
                self._stats["queued_dropped"] += 1
                continue
            try:
                await op.run()
            except Exception as e:
                self._stats["queued_dropped"] += 1
                log.debug("NATS at %s: a background operation on %r failed: %r", self.url, op.key, e)

    def publish_unnumbered(
        self, key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE
    ) -> None:
        """Send to the subscribers of ``key`` (every process), without a number, in the
        background, in order with this process's other operations on ``key``; dropped and
        counted while NATS is down."""
        data = pack([event, payload, _DELIVERIES.index(Delivery(delivery))])
        subject = self._subject("l", key)

        async def send() -> None:
            await self._opened(key)  # this process's own subscription, if opening, gets it too
            nc = self._check()
            await nc.publish(subject, data, headers={_UNNUMBERED: "1"})

        self._queue(_Op(key, send, len(data) + len(subject)))

    # ------------------------------------------------------------------ presence
    def presence_add(self, key: str, member: str, info: dict[str, Any]) -> None:
        """Record ``member`` in ``key`` (written in the background, renewed every third of
        ``presence_ttl`` for as long as this process lives)."""
        members = self._present.setdefault(key, {})
        old = members.get(member)
        members[member] = (info, old[1] if old is not None else self._now())
        self._queue_presence(key, member)

    def presence_remove(self, key: str, member: str) -> None:
        """Forget ``member`` in ``key``."""
        members = self._present.get(key)
        if members is None or members.pop(member, None) is None:
            return
        if not members:
            del self._present[key]
        subject = self._entry_subject(key, member)

        async def purge() -> None:
            nc = self._check()
            await nc.jsm(timeout=self.timeout).purge_stream(self.presence_stream, subject=subject)

        self._queue(_Op(key, purge, len(subject) + 64))

    def _queue_presence(self, key: str, member: str) -> None:
        subject = self._entry_subject(key, member)

        async def put() -> None:
            entry = self._present.get(key, {}).get(member)
            if entry is None:
                return  # removed meanwhile
            nc = self._check()
            await nc.jetstream(timeout=self.timeout).publish(subject, pack([entry[0], entry[1]]))

        self._queue(_Op(key, put, len(subject) + 256))

    async def _refresh_presence(self) -> None:
        """Re-write this process's entries every third of ``presence_ttl`` so they do not expire."""
        while True:
            await asyncio.sleep(self.presence_ttl / 3)  # a period, not synchronisation
            if not self._available:
                continue
            for key, members in list(self._present.items()):
                for member in list(members):
                    if self._queue_presence_counted(key, member):
                        self._stats["presence_refreshes"] += 1

    def _queue_presence_counted(self, key: str, member: str) -> bool:
        before = self._stats["queued_dropped"]
        self._queue_presence(key, member)
        return self._stats["queued_dropped"] == before

    async def presence(self, key: str, limit: int | None) -> tuple[list[tuple[str, dict[str, Any]]], int]:
        """Up to ``limit`` entries of ``key`` (every process's), oldest first, and the count.
        This process's own writes queued before are applied first."""
        self._check()
        if key in self._queued_keys:
            await self._barrier(key)
        prefix = f"{self.prefix}.p.{_token(key)}."
        entries: list[tuple[float, str, dict[str, Any]]] = []
        for subject, data in await self._fetch(self.presence_stream, prefix + "*"):
            try:
                member = _untoken(subject[len(prefix) :])
                info, since = unpack(data)
                if not isinstance(info, dict) or not isinstance(since, (int, float)):
                    raise ValueError(since)
            except Exception:
                self._stats["bad_messages"] += 1
                continue
            entries.append((float(since), member, info))
        entries.sort(key=lambda e: (e[0], e[1]))
        out = [(m, i) for _, m, i in (entries if limit is None else entries[:limit])]
        return out, len(entries)
