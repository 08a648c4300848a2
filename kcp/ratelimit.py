"""Token buckets per source network: how much one network may cost the server per second.

Two places use it, both sans-I/O (``now`` in milliseconds):

* compat mode's admission (:mod:`kcp.admission`): new sessions per IPv4 /24 or IPv6 /64;
* the secure handshake under load (:class:`kcp.secure.SecureServer`): the Diffie-Hellman work of
  initiations per IPv4 address or IPv6 /64, once the address is proven by a cookie.

A bucket holds at most ``burst`` tokens and refills at ``rate`` per second; one unit of work takes
one token. The table keeps at most ``max_prefixes`` buckets (the least recently used goes first,
which can only be generous to the network it forgets), and :meth:`PrefixLimiter.prune` drops the
buckets that have refilled (they are the same as no bucket). Addresses in ``exempt`` (CIDR
strings, loopback by default) are never limited; neither is an address that is no IP address.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Any

__all__ = ["LOOPBACK", "PrefixLimiter", "parse_networks"]

LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
"""The default exemption: loopback cannot be spoofed from the network, and a local relay or
proxy puts all of its clients behind one loopback address."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(networks: tuple[str, ...]) -> tuple[Network, ...]:
    """``networks`` (CIDR strings) parsed; raises ValueError naming the bad one."""
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


class PrefixLimiter:
    """A token bucket per source network of ``prefix_v4``/``prefix_v6`` bits (see the module
    docstring). ``rate=0`` turns the limit off."""

    __slots__ = ("_buckets", "_exempt", "_keys", "burst", "max_prefixes", "prefix_v4", "prefix_v6", "rate")

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        prefix_v4: int,
        prefix_v6: int,
        max_prefixes: int,
        exempt: tuple[str, ...] = LOOPBACK,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.prefix_v4 = prefix_v4
        self.prefix_v6 = prefix_v6
        self.max_prefixes = max_prefixes
        self._exempt = parse_networks(exempt)
        self._buckets: OrderedDict[Network, list[float]] = OrderedDict()  # network -> [tokens, last ms]
        self._keys: dict[str, Network | None] = {}  # host -> key(): parsing costs more than the bucket

    def key(self, addr: Any) -> Network | None:
        """The network ``addr`` (a socket address or a host string) is limited as, or None when it
        is exempt or no IP address."""
        host = addr[0] if isinstance(addr, tuple) and addr else addr
        if not isinstance(host, str):
            return None
        keys = self._keys
        try:
            return keys[host]
        except KeyError:
            pass
        if len(keys) >= self.max_prefixes:
            keys.clear()  # a cache of a pure function: forgetting costs only the parsing again
        k = keys[host] = self._parse(host)
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

    def allow(self, addr: Any, now: int) -> bool:
        """Take one token from ``addr``'s bucket; False (and nothing taken) when it is empty."""
        if self.rate <= 0:
            return True
        key = self.key(addr)
        if key is None:
            return True
        buckets = self._buckets
        b = buckets.get(key)
        if b is None:
            while len(buckets) >= self.max_prefixes:
                buckets.popitem(last=False)
            b = buckets[key] = [float(self.burst), float(now)]
        else:
            buckets.move_to_end(key)
            b[0] = min(float(self.burst), b[0] + (now - b[1]) * self.rate / 1000.0)
            b[1] = float(now)
        if b[0] < 1.0:
            return False
        b[0] -= 1.0
        return True

    def prune(self, now: int) -> None:
        """Drop the buckets that have refilled since they were last used."""
        buckets = self._buckets
        if not buckets or self.rate <= 0:
            return
        full_ms = self.burst * 1000.0 / self.rate
        while buckets:
            key, b = next(iter(buckets.items()))
            if now - b[1] < full_ms:
                break
            del buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

    def clear(self) -> None:
        self._buckets.clear()
        self._keys.clear()
