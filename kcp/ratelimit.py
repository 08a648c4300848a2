"""Token buckets per source network: how much one network may cost the server per second.

Three places use it, all sans-I/O (``now`` in milliseconds):

* compat mode's admission (:mod:`kcp.admission`): new sessions per IPv4 /24 or IPv6 /64;
* the secure handshake under load (:class:`kcp.secure.SecureServer`): the Diffie-Hellman work of
  initiations per IPv4 address or IPv6 /64, once the address is proven by a cookie;
* the listener's session table (:class:`SourceTally`): at most ``max_sessions_per_address``
  sessions per IPv4 address or IPv6 /64, so that one client cannot fill the table.

A bucket holds at most ``burst`` tokens and refills at ``rate`` per second; one unit of work takes
one token. The table keeps at most ``max_prefixes`` buckets (the least recently used goes first,
which can only be generous to the network it forgets), and :meth:`PrefixLimiter.prune` drops the
buckets that have refilled (they are the same as no bucket). Addresses in ``exempt`` (CIDR
strings, loopback by default) are never limited; neither is an address that is no IP address.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from kcp.token_bucket import TokenBucket

__all__ = [
    "LOOPBACK",
    "PrefixLimiter",
    "SourceBytes",
    "SourceKeys",
    "SourceTally",
    "address_keys",
    "parse_networks",
]

LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
"""The default exemption: loopback cannot be spoofed from the network, and a local relay or
proxy puts all of its clients behind one loopback address."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(networks: tuple[str, ...]) -> tuple[Network, ...]:
    """``networks`` (CIDR strings) parsed; raises ValueError naming the bad one."""
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


class SourceKeys:
    """The network a source address counts as: its IPv4 prefix of ``prefix_v4`` bits or its IPv6
    prefix of ``prefix_v6`` bits (an IPv4-mapped IPv6 address counts as IPv4), or None for an
    address in ``exempt`` or one that is no IP address. Parsed keys are cached (at most
    ``max_cached``; the cache of a pure function is simply cleared when full)."""

    __slots__ = ("_cache", "_exempt", "max_cached", "prefix_v4", "prefix_v6")

    def __init__(
        self, *, prefix_v4: int, prefix_v6: int, exempt: tuple[str, ...] = LOOPBACK, max_cached: int = 4096
    ) -> None:
        self.prefix_v4 = prefix_v4
        self.prefix_v6 = prefix_v6
        self.max_cached = max_cached
        self._exempt = parse_networks(exempt)
        self._cache: dict[str, Network | None] = {}  # host -> key: parsing costs more than a bucket

    def key(self, addr: Any) -> Network | None:
        """The network of ``addr`` (a socket address or a host string), or None (not limited)."""
        host = addr[0] if isinstance(addr, tuple) and addr else addr
        if not isinstance(host, str):
            return None
        cache = self._cache
        try:
            return cache[host]
        except KeyError:
            pass
        if len(cache) >= self.max_cached:
            cache.clear()
        k = cache[host] = self._parse(host)
        return k

    def _parse(self, host: str) -> Network | None:
        try:
            ip = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self._exempt):
            return None
        bits = self.prefix_v4 if ip.version == 4 else self.prefix_v6
        return ipaddress.ip_network(f"{ip}/{bits}", strict=False)

    def cached(self) -> int:
        """Parsed keys held (bounded by ``max_cached``)."""
        return len(self._cache)

    def clear(self) -> None:
        self._cache.clear()


def address_keys(exempt: tuple[str, ...] = LOOPBACK, max_cached: int = 4096) -> SourceKeys:
    """Keys of the limits per address: an IPv4 address, an IPv6 /64 (what one subscriber gets)."""
    return SourceKeys(prefix_v4=32, prefix_v6=64, exempt=exempt, max_cached=max_cached)


class PrefixLimiter:
    """A token bucket per source network (``keys``: what network an address counts as; see the
    module docstring). ``rate=0`` turns the limit off."""

    __slots__ = ("_buckets", "burst", "keys", "max_prefixes", "rate")

    def __init__(self, rate: float, burst: int, keys: SourceKeys, *, max_prefixes: int) -> None:
        self.rate = rate
        self.burst = burst
        self.keys = keys
        self.max_prefixes = max_prefixes
        self._buckets: OrderedDict[Network, TokenBucket] = OrderedDict()

    def allow(self, addr: Any, now: int) -> bool:
        """Take one token from ``addr``'s bucket; False (and nothing taken) when it is empty."""
        if self.rate <= 0:
            return True
        key = self.keys.key(addr)
        if key is None:
            return True
        buckets = self._buckets
        b = buckets.get(key)
        if b is None:
            self.prune(now)  # a new network: the table lets go of those whose buckets refilled
            while len(buckets) >= self.max_prefixes:
                buckets.popitem(last=False)
            b = buckets[key] = TokenBucket(self.rate, self.burst, now)
        else:
            buckets.move_to_end(key)
        return b.take(now)

    def empty(self, addr: Any, now: int) -> bool:
        """True when ``addr``'s bucket holds less than one token now (nothing is taken): work that
        :meth:`allow` would refuse can be skipped before it is done."""
        if self.rate <= 0:
            return False
        key = self.keys.key(addr)
        b = self._buckets.get(key) if key is not None else None
        return b is not None and b.level(now) < 1.0

    def charge(self, addr: Any, n: float, now: int) -> None:
        """Spend ``n`` more tokens of ``addr``'s bucket (after :meth:`allow` let its work start),
        into debt if need be: its next work waits until it is paid back."""
        if self.rate <= 0:
            return
        key = self.keys.key(addr)
        b = self._buckets.get(key) if key is not None else None
        if b is not None:
            b.charge(n, now)

    def prune(self, now: int) -> None:
        """Drop the buckets, least recently used first, that are full again (one in debt after
        :meth:`charge` stays until it is paid back): forgetting them changes nothing."""
        buckets = self._buckets
        if not buckets or self.rate <= 0:
            return
        while buckets:
            key, b = next(iter(buckets.items()))
            if b.level(now) < b.burst:
                break
            del buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

    def clear(self) -> None:
        self._buckets.clear()
        self.keys.clear()


class SourceBytes:
    """Bytes held by owners (connections), against ``total`` for all of them and ``per_network``
    for those of one source network (:class:`SourceKeys`; an exempt address counts only in the
    total). One charge larger than a bound passes while nothing is held against it, so that no
    single charge is refused for good. An owner holds one charge at a time; :meth:`release`
    gives it back."""

    __slots__ = ("_by_network", "_owners", "held", "keys", "per_network", "total")

    def __init__(self, keys: SourceKeys, total: int, per_network: int) -> None:
        self.keys = keys
        self.total = total
        self.per_network = per_network
        self.held = 0
        """Bytes charged now."""
        self._by_network: dict[Network, int] = {}
        self._owners: dict[Hashable, tuple[Network | None, int]] = {}

    def charge(self, owner: Hashable, addr: Any, n: int) -> bool:
        """Charge ``n`` bytes to ``owner`` (opened from ``addr``) in place of what it held; False
        (nothing charged) when that would pass the total or its network's share."""
        self.release(owner)
        if self.held and self.held + n > self.total:
            return False
        k = self.keys.key(addr)
        if k is not None:
            mine = self._by_network.get(k, 0)
            if mine and mine + n > self.per_network:
                return False
            self._by_network[k] = mine + n
        self._owners[owner] = (k, n)
        self.held += n
        return True

    def release(self, owner: Hashable) -> None:
        """Give back what ``owner`` holds (nothing if it holds nothing)."""
        entry = self._owners.pop(owner, None)
        if entry is None:
            return
        k, n = entry
        self.held -= n
        if k is not None:
            left = self._by_network[k] - n
            if left:
                self._by_network[k] = left
            else:
                del self._by_network[k]


class SourceTally:
    """How many sessions each source network (:class:`SourceKeys`) holds, against ``cap`` (None: no
    cap). A session is charged by its owner key (what the session table files it under) to the
    network of the address that opened it, and released by the same key; charging an owner again
    (a session replaced under its key) moves the charge."""

    __slots__ = ("_counts", "_owners", "cap", "keys")

    def __init__(self, keys: SourceKeys, cap: int | None) -> None:
        self.keys = keys
        self.cap = cap
        self._counts: dict[Network, int] = {}
        self._owners: dict[Hashable, Network] = {}

    def over(self, addr: Any, replacing: bool = False) -> bool:
        """True when one more session from ``addr`` would pass the cap (``replacing``: it takes the
        place of one of that network's own)."""
        cap = self.cap
        if cap is None:
            return False
        k = self.keys.key(addr)
        return k is not None and self._counts.get(k, 0) - replacing >= cap

    def add(self, owner: Hashable, addr: Any) -> None:
        self.remove(owner)
        k = self.keys.key(addr)
        if k is not None:
            self._owners[owner] = k
            self._counts[k] = self._counts.get(k, 0) + 1

    def remove(self, owner: Hashable) -> None:
        k = self._owners.pop(owner, None)
        if k is not None:
            n = self._counts[k] - 1
            if n:
                self._counts[k] = n
            else:
                del self._counts[k]

    def count(self, addr: Any) -> int:
        """Sessions charged to ``addr``'s network (0 when exempt)."""
        k = self.keys.key(addr)
        return 0 if k is None else self._counts.get(k, 0)

    def __len__(self) -> int:
        """Networks holding at least one session."""
        return len(self._counts)

    def clear(self) -> None:
        self._counts.clear()
        self._owners.clear()
