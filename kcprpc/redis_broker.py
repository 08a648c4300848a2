"""A :class:`~kcprpc.broker.Broker` on Redis (redis-py's asyncio client): rooms and topics across
processes and machines, history in Redis Streams, presence with expiry, and outages.

Install with ``pip install 'kcprpc[redis]'``. Every server (process) that shares one Redis database
and ``prefix`` shares the rooms, topics and presence (docs/brokers.md).

Redis key layout (``P`` is ``prefix``, ``K`` a broker key such as ``topic:news``):

* ``P:epoch`` (string): the epoch, a random 32-bit number set by the first script that finds none,
  so a Redis that lost its data (restarted without persistence, flushed) gets a new one;
* ``P:seq:K`` (string): the key's sequence counter (``INCR``); no TTL, but past ``max_idle_keys``
  keys with no message kept and no subscriber, the one idle longest is forgotten (its counter and
  empty stream deleted, its number kept in ``P:seqfloor``);
* ``P:hist:K`` (stream): the kept messages, entry ID ``<seq>-0``, fields ``m`` (msgpack
  ``[event, payload, delivery]``) and ``t`` (Redis time, ms); ``MAXLEN`` the key's history size;
  with a TTL, entries older than it are trimmed and the stream expires when idle that long;
* ``P:idle`` (sorted set K -> ms): the keys with a counter and no message kept, since when;
  ``P:seqfloor`` (hash slot -> number): per hash slot of the names (:data:`FLOOR_SLOTS`), the
  highest number a forgotten key had: a key with no counter numbers on above its slot's floor;
* ``P:ch:K`` (channel): live messages, ``"n <epoch> <seq> <t> " + m`` or ``"u " + m`` (unnumbered);
* ``P:pres:K`` (sorted set member -> expiry, ms) and ``P:presi:K`` (hash member ->
  ``"<order> " + msgpack(info)``): presence; ``P:presn`` (string): the order counter;
* ``P:ctl`` (channel): subscribed by every broker so its subscription link is always open.

One Lua script per publish takes the epoch, ``INCR``\\s the key, ``XADD``\\s and ``PUBLISH``\\es, so
every process sees one sequence per key in order. Redis Cluster is not supported (the scripts
touch the global epoch key); use one Redis (with a replica and Sentinel for failover).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from redis.exceptions import NoScriptError, RedisError, ResponseError

from kcprpc.broker import (
    BROKER_COUNTERS,
    BrokerCallback,
    BrokerHistory,
    BrokerMessage,
    BrokerUnavailable,
    HistoryPolicies,
    HistoryPolicy,
    Position,
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

__all__ = ["REDIS_COUNTERS", "RedisBroker"]

log = logging.getLogger("kcprpc.broker")

REDIS_COUNTERS = (
    *BROKER_COUNTERS,
    "outages",  # times the broker became unreachable (each logged once)
    "dropped",  # background writes (unnumbered messages, presence) given up: outage or full backlog
    "backlog_full",  # publishes refused because max_pending_bytes were queued
    "pending_bytes",  # a gauge: bytes queued for Redis now
    "gaps_filled",  # fills from the history after a gap or a reconnect
    "filled",  # messages those fills handed to the callbacks
    "lost",  # messages a fill could not find any more (history too short)
    "fill_overflows",  # fills whose held-back live messages went over max_fill_bytes
    "history_evicted",  # kept messages this process's publishes evicted past max_history_bytes
    "history_bytes",  # a gauge: the bytes every key's history holds, as this process's last publish saw
    "idle_keys",  # a gauge: keys with a counter and no message kept, as this process's last publish saw
    "keys_forgotten",  # idle keys this process's publishes forgot past max_idle_keys
    "bad_messages",  # messages from Redis that did not parse: dropped
    "callback_errors",  # subscriber callbacks that raised
    "reads_waited",  # history reads that waited for one of the max_reads slots
    "reads_busy",  # history reads refused after waiting `timeout` for a slot
)
"""The counters of :meth:`RedisBroker.stats`."""

_DELIVERY = {Delivery.RELIABLE: 0, Delivery.UNRELIABLE: 1}
_DELIVERIES = (Delivery.RELIABLE, Delivery.UNRELIABLE)

ENTRY_OVERHEAD = 64
"""Bytes ``max_history_bytes`` counts for a kept entry besides its message ``m`` (its ID, its
time ``t``, the stream's node)."""

FLOOR_SLOTS = 4096
"""The hash slots of the names that ``P:seqfloor`` keeps a floor for (as MemoryBroker's)."""


def floor_slot(key: str) -> int:
    """The ``P:seqfloor`` slot of ``key`` (what the scripts compute: ``h = (h * 31 + byte) % 4096``
    over its UTF-8 bytes)."""
    h = 0
    for c in key.encode():
        h = (h * 31 + c) % FLOOR_SLOTS
    return h


_TRIM = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function slot(k)
  local h = 0
  for i = 1, #k do h = (h * 31 + string.byte(k, i)) % FLOOR_SLOTS end
  return h
end
-- the history's bytes (P:hbytes), each key's (P:hsize: K -> bytes) and each key's oldest kept
-- entry's time (P:hkeys: K -> ms), so that max_history_bytes bounds every key's history together;
-- a key with nothing left becomes idle (P:idle: K -> ms, acct[4])
local function entry_size(e) return #e[2][2] + ENTRY_OVERHEAD end
local function account(acct, k, h, freed)
  local have = tonumber(redis.call('HGET', acct[3], k) or '0')
  if freed > have then freed = have end  -- entries from before the accounting were never counted
  if freed > 0 then
    redis.call('DECRBY', acct[1], freed)
    have = have - freed
  end
  local first = redis.call('XRANGE', h, '-', '+', 'COUNT', 1)
  if #first == 0 then
    redis.call('ZREM', acct[2], k)
    redis.call('HDEL', acct[3], k)
    if have > 0 then redis.call('DECRBY', acct[1], have) end
    redis.call('ZADD', acct[4], now_ms(), k)
  else
    redis.call('HSET', acct[3], k, have)
    redis.call('ZADD', acct[2], tonumber(first[1][2][4]), k)
  end
end
local function drop_oldest(acct, k, h, n)
  local es = redis.call('XRANGE', h, '-', '+', 'COUNT', n)
  if #es == 0 then account(acct, k, h, 0); return 0 end
  local freed = 0
  for i = 1, #es do freed = freed + entry_size(es[i]) end
  redis.call('XTRIM', h, 'MINID', (tonumber(string.match(es[#es][1], '^%d+')) + 1) .. '-0')
  account(acct, k, h, freed)
  return #es
end
local function trim(acct, k, h, cutoff)
  local freed = 0
  for _ = 1, 64 do
    local es = redis.call('XRANGE', h, '-', '+', 'COUNT', 64)
    if #es == 0 then break end
    local stop = false
    for i = 1, #es do
      if tonumber(es[i][2][4]) > cutoff then
        if i > 1 then redis.call('XTRIM', h, 'MINID', es[i][1]) end
        stop = true
        break
      end
      freed = freed + entry_size(es[i])
    end
    if stop then break end
    redis.call('XTRIM', h, 'MINID', (tonumber(string.match(es[#es][1], '^%d+')) + 1) .. '-0')
  end
  if freed > 0 then account(acct, k, h, freed) end
end
-- past max bytes, the oldest entries of any key go first; a key whose stream expired (a TTL)
-- gives its count back. Returns how many entries went.
local function evict(acct, hist_prefix, max)
  local n = 0
  for _ = 1, 1024 do
    if tonumber(redis.call('GET', acct[1]) or '0') <= max then break end
    local oldest = redis.call('ZRANGE', acct[2], 0, 0)
    if #oldest == 0 then redis.call('SET', acct[1], 0); break end
    local k = oldest[1]
    local h = hist_prefix .. k
    if redis.call('EXISTS', h) == 0 then account(acct, k, h, 0)
    else n = n + drop_oldest(acct, k, h, 1) end
  end
  return n
end
-- past max idle keys (a counter, no message kept), the one idle longest is forgotten: its counter
-- and its empty stream go, its number stays in its slot's floor (P:seqfloor); a key with a
-- subscriber is idle again from now instead. p: the prefix. Returns how many were forgotten, and
-- how many idle keys are left.
local function forget(idle, floors, p, max, now)
  local n = 0
  local card = redis.call('ZCARD', idle)
  if card <= max then return n, card end
  -- the oldest, and a few more in case some are subscribed (at most 64 a publish)
  local ks = redis.call('ZRANGE', idle, 0, math.min(card - max, 56) + 7)
  for i = 1, #ks do
    if card <= max then break end
    local k = ks[i]
    local h = p .. ':hist:' .. k
    if redis.call('XLEN', h) > 0 then
      redis.call('ZREM', idle, k)  -- it has messages again: counted in P:hkeys
      card = card - 1
    elseif redis.call('PUBSUB', 'NUMSUB', p .. ':ch:' .. k)[2] > 0 then
      redis.call('ZADD', idle, now, k)
    else
      redis.call('ZREM', idle, k)
      card = card - 1
      local c = p .. ':seq:' .. k
      local seq = tonumber(redis.call('GET', c) or '0')
      if seq > 0 then
        local s = slot(k)
        if seq > tonumber(redis.call('HGET', floors, s) or '0') then redis.call('HSET', floors, s, seq) end
        n = n + 1
      end
      redis.call('DEL', c, h)
    end
  end
  return n, card
end
-- the key's last number: its counter, or (forgotten, or never written) its slot's floor
local function last_of(c, floors, k)
  local v = redis.call('GET', c)
  if v then return tonumber(v) end
  return tonumber(redis.call('HGET', floors, slot(k)) or '0')
end
local function epoch(k, candidate)
  local e = redis.call('GET', k)
  if not e then redis.call('SET', k, candidate); e = candidate end
  return e
end
""".replace("ENTRY_OVERHEAD", str(ENTRY_OVERHEAD)).replace("FLOOR_SLOTS", str(FLOOR_SLOTS))

# KEYS: epoch, seq, hist, hbytes, hkeys, hsize, idle, seqfloor; ARGV: candidate epoch, channel,
# message, size, ttl (ms, 0: none), key, hist prefix, max history bytes, prefix, max idle keys
_PUBLISH = (
    _TRIM
    + """
local acct = {KEYS[4], KEYS[5], KEYS[6], KEYS[7]}
local k = ARGV[6]
local e = epoch(KEYS[1], ARGV[1])
local now = now_ms()
local seq = redis.call('INCR', KEYS[2])
if seq == 1 then  -- no counter: never written, or forgotten: on above its slot's floor
  local f = tonumber(redis.call('HGET', KEYS[8], slot(k)) or '0')
  if f > 0 then
    seq = f + 1
    redis.call('SET', KEYS[2], seq)
  end
end
local size = tonumber(ARGV[4])
local evicted = 0
if size == 0 then redis.call('ZADD', KEYS[7], now, k) end  -- keeps nothing: idle
if size > 0 then
  if redis.call('EXISTS', KEYS[3]) == 0 then account(acct, k, KEYS[3], 0) end  -- expired: uncount
  local r = redis.pcall('XADD', KEYS[3], seq .. '-0', 'm', ARGV[3], 't', now)
  if type(r) == 'table' and r.err then
    -- the counter was lost but not the stream: go on from the stream's last number
    local top = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
    seq = tonumber(string.match(top[1][1], '^%d+')) + 1
    redis.call('SET', KEYS[2], seq)
    redis.call('XADD', KEYS[3], seq .. '-0', 'm', ARGV[3], 't', now)
  end
  local added = #ARGV[3] + ENTRY_OVERHEAD
  redis.call('INCRBY', KEYS[4], added)
  if redis.call('HINCRBY', KEYS[6], k, added) == added then  -- its first kept entry: not idle
    redis.call('ZADD', KEYS[5], now, k)
    redis.call('ZREM', KEYS[7], k)
  end
  local over = redis.call('XLEN', KEYS[3]) - size
  if over > 0 then drop_oldest(acct, k, KEYS[3], over) end
  local ttl = tonumber(ARGV[5])
  if ttl > 0 then
    trim(acct, k, KEYS[3], now - ttl)
    redis.call('PEXPIRE', KEYS[3], ttl)
  end
  evicted = evict(acct, ARGV[7], tonumber(ARGV[8]))
end
local forgotten, idle = forget(KEYS[7], KEYS[8], ARGV[9], tonumber(ARGV[10]), now)
redis.call('PUBLISH', ARGV[2], 'n ' .. e .. ' ' .. seq .. ' ' .. now .. ' ' .. ARGV[3])
return {e, seq, now, evicted, tonumber(redis.call('GET', KEYS[4]) or '0'), forgotten, idle}
""".replace("ENTRY_OVERHEAD", str(ENTRY_OVERHEAD))
)

# KEYS: epoch, seq, hist, hbytes, hkeys, hsize, idle, seqfloor; ARGV: candidate epoch, since
# (-1: none), limit (-1: none), ttl (ms, 0: none), key
_HISTORY = (
    _TRIM
    + """
local e = epoch(KEYS[1], ARGV[1])
local last = last_of(KEYS[2], KEYS[8], ARGV[5])
local ttl = tonumber(ARGV[4])
if ttl > 0 then trim({KEYS[4], KEYS[5], KEYS[6], KEYS[7]}, ARGV[5], KEYS[3], now_ms() - ttl) end
local since = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
if since < 0 then
  if limit == 0 then return {e, last, 0, {}} end
  if limit < 0 then return {e, last, 0, redis.call('XRANGE', KEYS[3], '-', '+')} end
  return {e, last, 0, redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', limit), 1}
end
if since >= last then return {e, last, 0, {}} end
local es
if limit < 0 then
  es = redis.call('XRANGE', KEYS[3], (since + 1) .. '-0', '+')
else
  es = redis.call('XRANGE', KEYS[3], (since + 1) .. '-0', '+', 'COUNT', math.max(limit, 1))
end
if #es == 0 then return {e, last, last - since, {}} end
local missed = tonumber(string.match(es[1][1], '^%d+')) - (since + 1)
if missed < 0 then missed = 0 end
if limit == 0 then es = {} end
return {e, last, missed, es}
"""
)

# KEYS: zset, hash, order counter; ARGV: member, info, ttl (ms)
_PRESENCE_ADD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local old = redis.call('HGET', KEYS[2], ARGV[1])
local order
if old then order = string.match(old, '^%d+') else order = redis.call('INCR', KEYS[3]) end
redis.call('HSET', KEYS[2], ARGV[1], order .. ' ' .. ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
"""

# KEYS: zset, hash; ARGV: member
_PRESENCE_REMOVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# KEYS: zset, hash: drops the expired members, returns the others (member, "<order> info" ...)
_PRESENCE_LIST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(dead) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end
return redis.call('HGETALL', KEYS[2])
"""

_SCRIPTS = {
    "publish": _PUBLISH,
    "history": _HISTORY,
    "presence_add": _PRESENCE_ADD,
    "presence_remove": _PRESENCE_REMOVE,
    "presence_list": _PRESENCE_LIST,
}

_LINK_ERRORS: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError, EOFError, RedisError)
"""What a broken or slow link to Redis raises (redis-py's ConnectionError and TimeoutError are
RedisErrors; a script error is one too, and is treated the same: the call fails loudly)."""
_READ_ERRORS: tuple[type[BaseException], ...] = (
    *_LINK_ERRORS,
    RuntimeError,
)  # + redis-py's "pubsub connection not set"


@dataclass(eq=False)
class _Op:
    """One script call queued for the writer (in order with this process's other writes)."""

    script: str
    keys: tuple[str, ...]
    args: tuple[Any, ...]
    size: int
    fut: asyncio.Future[Any] | None = None  # None: a background write (dropped when it fails)


@dataclass(eq=False)
class _Sub:
    """One subscribed key: its callbacks, what they saw, and the state of its subscription."""

    callbacks: list[BrokerCallback] = field(default_factory=list)
    ready: asyncio.Future[None] | None = None  # done once Redis confirmed the SUBSCRIBE
    last: Position | None = None  # the last numbered message handed to the callbacks
    base: Position | None = None  # the key's position when the subscription became live
    unsub_pending: bool = False  # an UNSUBSCRIBE is on its way
    needs_fill: bool = False  # a reconnect: fill from the history once resubscribed
    filling: bool = False
    refill: bool = False
    buf: list[BrokerMessage] = field(default_factory=list)  # live messages held during a fill
    buf_bytes: int = 0
    deferred: list[_Op] = field(default_factory=list)  # unnumbered writes waiting for `ready`


class RedisBroker(BrokerBase):
    """The :class:`~kcprpc.broker.Broker` contract on Redis, for servers in several processes and
    on several machines.

    ``url``: the Redis database (``redis://[user:password@]host:port/db``, ``rediss://`` for TLS).
    ``prefix``: the namespace of every key and channel (servers that share one must share both).
    ``history`` / ``history_ttl`` / ``policies``: how much history each key keeps, as for
    :class:`~kcprpc.broker.MemoryBroker`. ``presence_ttl``: seconds a process's presence entries
    outlive it (a background heartbeat refreshes them every third of it). ``timeout``: seconds a
    call waits on Redis before it raises :class:`~kcprpc.broker.BrokerUnavailable`.
    ``reconnect_initial`` / ``reconnect_max``: the backoff between reconnect attempts.
    ``max_pending_bytes``: bytes of writes queued for Redis at most (past it publishes raise
    BrokerUnavailable and background writes are dropped, counted). ``max_fill_bytes``: bytes of
    live messages held back per key while its gap is filled from the history (past it they are
    dropped and read from the history again). ``max_history_bytes``: bytes the history of every key
    together holds in Redis (each entry's message and :data:`ENTRY_OVERHEAD`): past it the oldest
    entries of any key go first (``history_evicted``), as in :class:`~kcprpc.broker.MemoryBroker`
    (every process on the prefix must use the same). ``max_idle_keys``: keys with a counter but no
    message kept (all evicted or expired, or a history size of 0) and no subscriber that Redis
    keeps at most: past it the one idle longest is forgotten (``keys_forgotten``), and numbers on
    above every number it had when written again (the highest forgotten per hash slot of the
    names stays in ``P:seqfloor``), as in MemoryBroker (the same on every process of the prefix).
    ``max_reads``: history reads sent to Redis at once
    (each takes a pooled connection; more wait their turn, up to ``timeout``, so that a burst of
    subscribes is no outage). ``rng``: the source of epoch candidates."""

    stats_gauges: ClassVar[frozenset[str]] = frozenset({"history_bytes", "idle_keys"})
    """The entries of :meth:`stats` that are gauges besides ``kcprpc.metrics.BROKER_GAUGES``."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "kcprpc",
        history: int = 1024,
        history_ttl: float | None = None,
        policies: HistoryPolicies | None = None,
        presence_ttl: float = 30.0,
        timeout: float = 1.0,
        reconnect_initial: float = 0.05,
        reconnect_max: float = 2.0,
        max_pending_bytes: int = 1 << 20,
        max_fill_bytes: int = 1 << 20,
        max_history_bytes: int = 256 << 20,
        max_idle_keys: int = 65536,
        max_reads: int = 32,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not prefix or any(c.isspace() for c in prefix):
            raise UsageError("RedisBroker prefix must be a non-empty name without spaces")
        if not presence_ttl > 0 or not timeout > 0 or not 0 < reconnect_initial <= reconnect_max:
            raise UsageError(
                "RedisBroker: presence_ttl and timeout must be positive, 0 < reconnect_initial <= reconnect_max"
            )
        if max_pending_bytes <= 0 or max_fill_bytes <= 0 or max_reads <= 0:
            raise UsageError("RedisBroker: max_pending_bytes, max_fill_bytes and max_reads must be positive")
        for name, v in (("max_history_bytes", max_history_bytes), ("max_idle_keys", max_idle_keys)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UsageError(f"RedisBroker: {name} must be an int >= 0, not {v!r}")
        self.url = check_urls(url, ("redis", "rediss", "unix"), "RedisBroker")
        self.prefix = prefix
        self._default, self._policies = history_settings("RedisBroker", history, history_ttl, policies)
        self.presence_ttl = presence_ttl
        self.timeout = timeout
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.max_pending_bytes = max_pending_bytes
        self.max_fill_bytes = max_fill_bytes
        self.max_history_bytes = max_history_bytes
        self.max_idle_keys = max_idle_keys
        self.max_reads = max_reads
        self._reads = asyncio.Semaphore(max_reads)
        self._rng = rng
        self._epoch = 0
        self._stats = dict.fromkeys(REDIS_COUNTERS, 0)
        self._subs: dict[str, _Sub] = {}
        self._mine: dict[tuple[str, str], bytes] = {}  # (key, member) -> info: this process's presence
        self._ops: deque[_Op] = deque()
        self._wake = asyncio.Event()
        self._redis: Any = None
        self._pubsub: Any = None
        self._shas: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._available = False
        self._started = False
        self._closing = False
        self._down_since = 0.0
        self._ping_sent = 0.0  # monotonic time of an unanswered PING on the subscription link
        self._ch = prefix + ":ch:"
        self.node_id = rng(4).hex()
        """This process's id: its Redis connections are named ``<prefix>/<node_id>`` (CLIENT LIST)."""

    # ------------------------------------------------------------------ names
    def _k(self, kind: str, key: str) -> str:
        return f"{self.prefix}:{kind}:{key}"

    def _history_keys(self, key: str) -> tuple[str, ...]:
        """The Redis keys the publish and history scripts touch for ``key``: the epoch, its
        counter and stream, the history's byte accounting, the idle keys and the floors."""
        p = self.prefix
        return (
            f"{p}:epoch",
            self._k("seq", key),
            self._k("hist", key),
            f"{p}:hbytes",
            f"{p}:hkeys",
            f"{p}:hsize",
            f"{p}:idle",
            f"{p}:seqfloor",
        )

    @property
    def where(self) -> str:
        """Where Redis is, without credentials (for logs)."""
        rest = self.url.split("@", 1)[-1].split("://", 1)[-1]
        return f"redis {rest} prefix {self.prefix!r}"

    def policy(self, key: str) -> HistoryPolicy:
        """The history policy of ``key``."""
        return policy_of(self._policies, self._default, key)

    def _candidate(self) -> int:
        while True:
            e = int.from_bytes(self._rng(4), "big")
            if e and e != self._epoch:
                return e

    # ------------------------------------------------------------------ lifecycle
    def stats(self) -> dict[str, int]:
        """:data:`REDIS_COUNTERS`."""
        return super().stats()

    async def start(self) -> None:
        """Connect, load the scripts, read the epoch and subscribe; :class:`BrokerUnavailable`
        when Redis cannot be reached within ``timeout``."""
        if self._started:
            return
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._redis = aioredis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
            # the reads, the writer's pipeline, the subscription link: never "Too many connections"
            max_connections=self.max_reads + 4,
            client_name=f"{self.prefix}/{self.node_id}",
        )
        try:
            await asyncio.wait_for(self._connect(), self.timeout * 3)
        except _LINK_ERRORS as e:
            await self._drop_links()
            await self._redis.aclose()
            self._redis = None
            raise BrokerUnavailable(f"cannot reach {self.where}: {e or type(e).__name__}") from e
        self._started = True
        self._available = True
        self._writer = asyncio.ensure_future(self._write_loop())
        self._heartbeat = asyncio.ensure_future(self._heartbeat_loop())

    async def close(self) -> None:
        """Remove this process's presence entries (bounded by ``timeout``), send what is queued,
        and close the connections."""
        if self._closing or not self._started:
            self._closing = True
            return
        mine = list(self._mine)
        self._mine.clear()
        if self._available:
            for key, member in mine:
                self._enqueue(self._presence_remove_op(key, member), force=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained(), self.timeout)
        await self.abort()

    async def abort(self) -> None:
        """Stop at once as a killed process would: no cleanup, so this process's presence entries
        stay until ``presence_ttl`` expires them (tests; a forked child dropping its parent's broker)."""
        self._closing = True
        await self._stop_tasks()
        await self._drop_links()
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
        self._available = False

    async def _stop_tasks(self) -> None:
        tasks = [
            t for t in (self._writer, self._heartbeat, self._reconnecting, self._reader) if t is not None
        ]
        tasks += list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_queued()

    async def _drained(self) -> None:
        while self._ops or self._stats["pending_bytes"]:
            await asyncio.sleep(0.005)

    async def _connect(self) -> None:
        """(Re)connect: PING, load the scripts, read the epoch, open the subscription link and
        subscribe every key."""
        r = self._redis
        await r.ping()
        for name, text in _SCRIPTS.items():
            sha = await r.script_load(text)
            self._shas[name] = sha.decode() if isinstance(sha, bytes) else str(sha)
        await r.set(f"{self.prefix}:epoch", self._candidate(), nx=True)
        raw = await r.get(f"{self.prefix}:epoch")
        self._note_epoch(int(raw))
        ps = r.pubsub()
        loop = asyncio.get_running_loop()
        for key in [k for k, s in self._subs.items() if not s.callbacks]:
            del self._subs[key]
        for s in self._subs.values():
            s.unsub_pending = False
            if s.ready is None or s.ready.done():
                s.ready = loop.create_future()
        await ps.subscribe(f"{self.prefix}:ctl", *(self._ch + k for k in self._subs))
        self._pubsub = ps
        self._ping_sent = 0.0
        self._reader = asyncio.ensure_future(self._read_loop(ps))

    async def _drop_links(self) -> None:
        ps, self._pubsub = self._pubsub, None
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        if ps is not None:
            with contextlib.suppress(Exception):
                await ps.aclose()

    def _note_epoch(self, epoch: int) -> None:
        if epoch != self._epoch:
            if self._epoch:
                log.warning(
                    "%s: the epoch changed (%d -> %d): Redis lost its data", self.where, self._epoch, epoch
                )
            self._epoch = epoch

    # ------------------------------------------------------------------ outages
    def _check(self) -> None:
        if not self._started:
            raise UsageError("RedisBroker: await broker.start() first (Server.start() does it)")
        if not self._available:
            raise BrokerUnavailable(f"{self.where} is unreachable")

    def _down(self, error: BaseException | str) -> None:
        """The link to Redis failed: mark the broker unavailable (logged once per outage), fail
        what is queued, and reconnect in the background."""
        if self._closing:
            return
        if self._available:
            self._available = False
            self._down_since = time.monotonic()
            self._stats["outages"] += 1
            log.warning("%s unavailable (%s): reconnecting in the background", self.where, error)
            for s in self._subs.values():
                for op in s.deferred:
                    self._settle_failed(op)
                s.deferred.clear()
                if s.last is not None or s.base is not None:
                    s.needs_fill = True
                if s.ready is not None and s.ready.done():
                    s.ready = asyncio.get_running_loop().create_future()
            self._fail_queued()
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.ensure_future(self._reconnect_loop())

    def _fail_queued(self) -> None:
        while self._ops:
            self._settle_failed(self._ops.popleft())

    def _settle_failed(self, op: _Op, error: BaseException | None = None) -> None:
        self._stats["pending_bytes"] -= op.size
        if op.fut is None:
            self._stats["dropped"] += 1
        elif not op.fut.done():
            if op.script == "publish":
                self._stats["publish_errors"] += 1
            op.fut.set_exception(error or BrokerUnavailable(f"{self.where} is unreachable"))

    async def _reconnect_loop(self) -> None:
        await self._drop_links()
        delay = self.reconnect_initial
        while not self._closing:
            await asyncio.sleep(delay)  # the backoff timer before each attempt
            delay = min(delay * 2, self.reconnect_max)
            try:
                await asyncio.wait_for(self._connect(), self.timeout * 3)
                break
            except _LINK_ERRORS as e:
                await self._drop_links()
                log.debug("%s: reconnect failed: %s", self.where, e)
            except Exception:  # not documented by redis-py: keep trying (a dead task never would)
                await self._drop_links()
                log.warning("%s: reconnect failed unexpectedly", self.where, exc_info=True)
        if self._closing:
            return
        self._available = True
        self._stats["reconnects"] += 1
        log.warning("%s is back after %.1f s", self.where, time.monotonic() - self._down_since)
        for (key, member), info in list(self._mine.items()):  # what this process holds, again
            self._enqueue(self._presence_add_op(key, member, info), force=True)

    # ------------------------------------------------------------------ the writer
    def _enqueue(self, op: _Op, force: bool = False) -> bool:
        if not force and self._stats["pending_bytes"] + op.size > self.max_pending_bytes:
            return False
        self._stats["pending_bytes"] += op.size
        self._ops.append(op)
        self._wake.set()
        return True

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ops and self._available:
                batch = [self._ops.popleft() for _ in range(min(256, len(self._ops)))]
                try:
                    results = await asyncio.wait_for(self._execute(batch), self.timeout * 2)
                except _LINK_ERRORS as e:
                    for op in batch:
                        self._settle_failed(op)
                    self._down(e)
                    break
                except Exception as e:  # not documented by redis-py: fail the batch, keep the writer
                    log.warning("%s: writing to Redis failed unexpectedly", self.where, exc_info=True)
                    for op in batch:
                        self._settle_failed(op, BrokerUnavailable(f"{self.where}: {type(e).__name__}: {e}"))
                    self._down(e)
                    break
                noscript = False
                for op, res in zip(batch, results, strict=False):
                    if isinstance(res, BaseException):
                        noscript = noscript or isinstance(res, NoScriptError)
                        err = res if not isinstance(res, ResponseError) else None
                        self._settle_failed(op, BrokerUnavailable(f"{self.where}: {err or res}"))
                        continue
                    self._stats["pending_bytes"] -= op.size
                    if op.fut is not None and not op.fut.done():
                        op.fut.set_result(res)
                if noscript:  # Redis restarted under us: reload everything
                    self._down("scripts lost")

    async def _execute(self, batch: list[_Op]) -> list[Any]:
        """Send ``batch`` in one pipeline; each op's result or error, in order."""
        pipe = self._redis.pipeline(transaction=False)
        for op in batch:
            if op.script == "PUBLISH":
                pipe.publish(*op.args)
            else:
                pipe.evalsha(self._shas[op.script], len(op.keys), *op.keys, *op.args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    # ------------------------------------------------------------------ publish
    async def _ready(self, key: str) -> None:
        s = self._subs.get(key)
        if s is not None and s.ready is not None and not s.ready.done():
            try:
                await asyncio.wait_for(asyncio.shield(s.ready), self.timeout)
            except TimeoutError:
                raise BrokerUnavailable(f"{self.where}: subscribing to {key!r} timed out") from None

    async def publish(
        self, key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE
    ) -> BrokerMessage:
        """Publish through Redis: numbered atomically, kept in the key's stream, then delivered
        to every subscribed process. :class:`BrokerUnavailable` when Redis is unreachable or
        ``max_pending_bytes`` are queued (a publish that raised may still have gone out, if the
        link broke after Redis took it)."""
        try:
            self._check()
            await self._ready(key)
        except BrokerUnavailable:
            self._stats["publish_errors"] += 1
            raise
        pol = self.policy(key)
        blob = pack([event, payload, _DELIVERY[delivery]])
        ttl = 0 if pol.ttl is None else max(1, round(pol.ttl * 1000))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        args = (
            self._candidate(),
            self._ch + key,
            blob,
            pol.size,
            ttl,
            key,
            f"{self.prefix}:hist:",
            self.max_history_bytes,
            self.prefix,
            self.max_idle_keys,
        )
        op = _Op("publish", self._history_keys(key), args, len(blob) + 64, fut)
        if not self._enqueue(op):
            self._stats["backlog_full"] += 1
            self._stats["publish_errors"] += 1
            raise BrokerUnavailable(f"{self.where}: {self.max_pending_bytes} bytes already queued")
        e, seq, at, evicted, held, forgotten, idle = await fut
        self._note_epoch(int(e))
        self._stats["published"] += 1
        self._stats["history_evicted"] += int(evicted)
        self._stats["history_bytes"] = int(held)
        self._stats["keys_forgotten"] += int(forgotten)
        self._stats["idle_keys"] = int(idle)
        return BrokerMessage(key, event, payload, int(seq), int(e), delivery, at=int(at) / 1000)

    def publish_unnumbered(
        self, key: str, event: str, payload: Any, delivery: Delivery = Delivery.RELIABLE
    ) -> None:
        """Send in the background, after this process's earlier writes; dropped (counted) while
        Redis is unreachable or the backlog is full."""
        if not self._available:
            self._stats["dropped"] += 1
            return
        data = b"u " + pack([event, payload, _DELIVERY[delivery]])
        op = _Op("PUBLISH", (), (self._ch + key, data), len(data) + 32)
        s = self._subs.get(key)
        if s is not None and s.ready is not None and not s.ready.done() and not s.unsub_pending:
            # this process's own subscription is not live yet: send it once it is, so that its
            # sessions get it too (a new member's own Joined), before any later publish
            if self._stats["pending_bytes"] + op.size > self.max_pending_bytes:
                self._stats["dropped"] += 1
                return
            self._stats["pending_bytes"] += op.size
            s.deferred.append(op)
            return
        if not self._enqueue(op):
            self._stats["dropped"] += 1

    # ------------------------------------------------------------------ history
    async def history(self, key: str, since: int | None = None, limit: int | None = None) -> BrokerHistory:
        """See :meth:`kcprpc.broker.Broker.history` (one script: reads are atomic)."""
        self._check()
        await self._ready(key)
        return await self._history(key, since, limit)

    async def _history(self, key: str, since: int | None, limit: int | None) -> BrokerHistory:
        pol = self.policy(key)
        ttl = 0 if pol.ttl is None else max(1, round(pol.ttl * 1000))
        args = (
            self._candidate(),
            -1 if since is None else max(0, since),
            -1 if limit is None else max(0, limit),
            ttl,
            key,
        )
        keys = self._history_keys(key)
        if self._reads.locked():  # max_reads in flight: wait for a slot (a busy process, not an outage)
            self._stats["reads_waited"] += 1
            try:
                await asyncio.wait_for(self._reads.acquire(), self.timeout)
            except TimeoutError:
                self._stats["reads_busy"] += 1
                raise BrokerUnavailable(
                    f"{self.where}: {self.max_reads} history reads busy for {self.timeout:g} s"
                ) from None
        else:
            await self._reads.acquire()
        try:
            r = await self._redis.evalsha(self._shas["history"], len(keys), *keys, *args)
        except _LINK_ERRORS as e:
            self._down(e)
            raise BrokerUnavailable(f"{self.where}: {e or type(e).__name__}") from e
        except Exception as e:  # not documented by redis-py: as loud, and a gap fill retries it
            log.warning("%s: a history read failed unexpectedly", self.where, exc_info=True)
            self._down(e)
            raise BrokerUnavailable(f"{self.where}: {type(e).__name__}: {e}") from e
        finally:
            self._reads.release()
        epoch, last, missed, entries = int(r[0]), int(r[1]), int(r[2]), r[3]
        self._note_epoch(epoch)
        msgs: list[BrokerMessage] = []
        for ent in reversed(entries) if len(r) > 4 else entries:
            m = self._entry(key, epoch, ent)
            if m is not None:
                msgs.append(m)
        return BrokerHistory(msgs, epoch, last, missed)

    def _entry(self, key: str, epoch: int, ent: Any) -> BrokerMessage | None:
        try:
            seq = int(ent[0].split(b"-", 1)[0])
            f = ent[1]
            fields = dict(zip(f[::2], f[1::2], strict=False))
            event, payload, d = unpack(fields[b"m"])
            return BrokerMessage(key, event, payload, seq, epoch, _DELIVERIES[d], at=int(fields[b"t"]) / 1000)
        except Exception:
            self._stats["bad_messages"] += 1
            return None

    # ------------------------------------------------------------------ subscribe
    def subscribe(self, key: str, callback: BrokerCallback) -> None:
        """Deliver ``key``'s messages to ``callback``; Redis is subscribed in the background (live
        once a ``history`` call on the key made after this returned)."""
        s = self._subs.get(key)
        if s is None:
            s = self._subs[key] = _Sub()
        if callback not in s.callbacks:
            s.callbacks.append(callback)
        if s.ready is None or (s.unsub_pending and s.ready.done()):
            s.ready = asyncio.get_running_loop().create_future()
            if not s.unsub_pending:
                self._pubsub_command("subscribe", key)

    def live(self, key: str) -> Awaitable[None] | None:
        """None once Redis confirmed the subscription of ``key`` (or while Redis is unreachable:
        nothing to wait for), else a future done when it does."""
        s = self._subs.get(key)
        if s is None or s.ready is None or s.ready.done() or not self._available:
            return None
        return asyncio.shield(s.ready)

    def unsubscribe(self, key: str, callback: BrokerCallback) -> None:
        """Stop delivering ``key`` to ``callback``; the last one unsubscribes from Redis."""
        s = self._subs.get(key)
        if s is None or callback not in s.callbacks:
            return
        s.callbacks.remove(callback)
        if not s.callbacks and not s.unsub_pending:
            s.unsub_pending = True
            self._pubsub_command("unsubscribe", key)

    def _pubsub_command(self, what: str, key: str) -> None:
        ps = self._pubsub
        if ps is None or not self._available:
            return  # (re)connecting subscribes every key with callbacks
        self._spawn(self._send_pubsub(ps, what, key))

    async def _send_pubsub(self, ps: Any, what: str, key: str) -> None:
        try:
            await (ps.subscribe if what == "subscribe" else ps.unsubscribe)(self._ch + key)
        except _LINK_ERRORS as e:
            self._down(e)
        except Exception as e:  # not documented by redis-py: the link is suspect, reconnect it
            log.warning("%s: %s failed unexpectedly", self.where, what, exc_info=True)
            self._down(e)

    def _spawn(self, coro: Any) -> None:
        spawn(self._tasks, coro)

    async def _read_loop(self, ps: Any) -> None:
        try:
            while True:
                m = await ps.get_message(timeout=None)
                if m is not None:
                    self._on_pubsub(m)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # _READ_ERRORS; anything else (redis-py's, or ours) is logged
            if not isinstance(e, _READ_ERRORS):
                log.warning(
                    "%s: reading the subscription link failed unexpectedly", self.where, exc_info=True
                )
            if self._pubsub is ps:
                self._reader = None  # this task ends here: not cancelled by _drop_links
                self._down(e)

    def _on_pubsub(self, m: dict[str, Any]) -> None:
        typ = m["type"]
        if typ == "pong":
            self._ping_sent = 0.0
            return
        ch = m["channel"]
        ch = ch.decode(errors="replace") if isinstance(ch, bytes) else str(ch)
        if not ch.startswith(self._ch):
            return
        key = ch[len(self._ch) :]
        s = self._subs.get(key)
        if s is None:
            return
        if typ == "message":
            self._on_data(key, s, m["data"])
        elif typ == "subscribe":
            if s.unsub_pending or s.ready is None or s.ready.done():
                return
            s.ready.set_result(None)
            if s.deferred:
                self._ops.extend(s.deferred)  # their bytes are counted in pending_bytes already
                s.deferred.clear()
                self._wake.set()
            if s.needs_fill:
                self._spawn(self._fill(key, s))
            elif s.last is None and s.base is None:
                self._spawn(self._read_base(key, s))
        elif typ == "unsubscribe":
            s.unsub_pending = False
            if not s.callbacks:
                del self._subs[key]
            else:  # subscribed again meanwhile
                self._pubsub_command("subscribe", key)

    async def _read_base(self, key: str, s: _Sub) -> None:
        with contextlib.suppress(BrokerUnavailable):
            h = await self._history(key, None, 0)
            if s.base is None:
                s.base = h.position

    def _on_data(self, key: str, s: _Sub, data: Any) -> None:
        try:
            if data[:2] == b"u ":
                event, payload, d = unpack(data[2:])
                msg = unnumbered(key, event, payload, _DELIVERIES[d])
            else:
                tag, e, seq, at, blob = data.split(b" ", 4)
                if tag != b"n":
                    raise ValueError("not a message")
                event, payload, d = unpack(blob)
                msg = BrokerMessage(key, event, payload, int(seq), int(e), _DELIVERIES[d], at=int(at) / 1000)
        except Exception:
            self._stats["bad_messages"] += 1
            return
        if s.filling:
            self._hold(s, msg, len(data))
            return
        if self._in_order(s, msg) == "gap":
            self._hold(s, msg, len(data))
            self._spawn(self._fill(key, s))

    def _hold(self, s: _Sub, msg: BrokerMessage, size: int) -> None:
        s.buf_bytes += size
        s.buf.append(msg)
        if s.buf_bytes > self.max_fill_bytes:  # bounded: read them from the history again
            s.buf.clear()
            s.buf_bytes = 0
            s.refill = True
            self._stats["fill_overflows"] += 1

    def _in_order(self, s: _Sub, msg: BrokerMessage, jump: bool = False) -> str:
        """Hand ``msg`` to the callbacks if it is the next of its key ("ok"); "dup" if it was
        seen, "gap" if some are missing before it (unless ``jump``: the history has no more)."""
        if msg.seq:
            last = s.last
            if last is not None and not jump:
                nxt = last.offset + 1 if msg.epoch == last.epoch else 1
                if msg.epoch == last.epoch and msg.seq < nxt:
                    return "dup"
                if msg.seq > nxt:
                    return "gap"
            elif last is not None and msg.epoch == last.epoch and msg.seq <= last.offset:
                return "dup"
            s.last = msg.position
        self._deliver(s, msg)
        return "ok"

    def _deliver(self, s: _Sub, msg: BrokerMessage) -> None:
        run_callbacks(s.callbacks, msg, self._stats)
        self._stats["delivered"] += len(s.callbacks)

    async def _fill(self, key: str, s: _Sub) -> None:
        """Fill the gap of ``key`` from the history, then hand over the live messages held
        meanwhile, in order."""
        if s.filling:
            s.refill = True
            return
        s.filling = True
        self._stats["gaps_filled"] += 1
        try:
            while True:
                s.refill = False
                ref = s.last or s.base
                hist = await self._history(key, None if ref is None else ref.offset, None)
                if ref is not None and hist.epoch != ref.epoch:  # a new epoch: from its start
                    hist = await self._history(key, 0, None)
                elif hist.missed:
                    self._stats["lost"] += hist.missed
                    at = hist.messages[0].seq - 1 if hist.messages else hist.last
                    run_callbacks(s.callbacks, gap_report(key, hist.epoch, hist.missed, at), self._stats)
                if s.last is None and ref is not None and hist.epoch == ref.epoch:
                    s.last = ref  # the base: what was before it is not this subscription's
                for m in hist.messages:
                    if self._in_order(s, m, jump=True) == "ok":
                        self._stats["filled"] += 1
                if s.refill:
                    continue
                buf, s.buf, s.buf_bytes = s.buf, [], 0
                gap = False
                for m in buf:
                    if gap:
                        continue
                    gap = self._in_order(s, m) == "gap"
                if not gap and not s.refill:
                    break
            s.needs_fill = False
        except BrokerUnavailable:
            s.needs_fill = True  # the reconnect fills again
        finally:
            s.filling = False

    # ------------------------------------------------------------------ presence
    def _presence_add_op(self, key: str, member: str, info: bytes) -> _Op:
        keys = (self._k("pres", key), self._k("presi", key), f"{self.prefix}:presn")
        ttl = max(1, round(self.presence_ttl * 1000))
        return _Op("presence_add", keys, (member, info, ttl), len(info) + len(member) + 64)

    def _presence_remove_op(self, key: str, member: str) -> _Op:
        keys = (self._k("pres", key), self._k("presi", key))
        return _Op("presence_remove", keys, (member,), len(member) + 64)

    def presence_add(self, key: str, member: str, info: dict[str, Any]) -> None:
        """Record ``member`` in ``key`` (in the background, in order with this process's other
        writes); refreshed by the heartbeat, and again after an outage."""
        blob = pack(info)
        self._mine[(key, member)] = blob
        if self._available and not self._enqueue(self._presence_add_op(key, member, blob)):
            self._stats["dropped"] += 1  # the heartbeat writes it again

    def presence_remove(self, key: str, member: str) -> None:
        """Forget ``member`` in ``key`` (in the background)."""
        self._mine.pop((key, member), None)
        if self._available and not self._enqueue(self._presence_remove_op(key, member)):
            self._stats["dropped"] += 1  # it expires after presence_ttl

    async def presence(self, key: str, limit: int | None) -> tuple[list[tuple[str, dict[str, Any]]], int]:
        """The members of ``key`` on every process, oldest first (after this process's earlier
        writes: the call goes through the same queue)."""
        self._check()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        op = _Op("presence_list", (self._k("pres", key), self._k("presi", key)), (), 64, fut)
        self._enqueue(op, force=True)
        try:
            flat = await fut
        except BrokerUnavailable:
            raise
        entries: list[tuple[int, str, dict[str, Any]]] = []
        for i in range(0, len(flat) - 1, 2):
            try:
                order, blob = flat[i + 1].split(b" ", 1)
                info = unpack(blob)
                if not isinstance(info, dict):
                    raise ValueError("info is not a map")
                entries.append((int(order), flat[i].decode(), info))
            except Exception:
                self._stats["bad_messages"] += 1
        entries.sort(key=lambda e: e[0])
        out = entries if limit is None else entries[: max(0, limit)]
        return [(m, i) for _, m, i in out], len(entries)

    async def _heartbeat_loop(self) -> None:
        """Every third of ``presence_ttl`` (at most every few seconds): refresh this process's
        presence entries and PING the subscription link (no answer within ``timeout``: down)."""
        period = min(self.presence_ttl / 3, 5.0)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)  # the heartbeat's timer
            if not self._available:
                continue
            if self._ping_sent and loop.time() - self._ping_sent > max(self.timeout, period):
                self._down("no answer to PING on the subscription link")
                continue
            for (key, member), info in list(self._mine.items()):
                if not self._enqueue(self._presence_add_op(key, member, info)):
                    self._stats["dropped"] += 1
            ps = self._pubsub
            if ps is not None and not self._ping_sent:
                self._ping_sent = loop.time()
                self._spawn(self._send_ping(ps))

    async def _send_ping(self, ps: Any) -> None:
        try:
            await ps.ping()
        except _LINK_ERRORS as e:
            self._down(e)
