"""The datagram budget of a busy listener: how many authenticated datagrams per second the
connections admitted from one IPv4 address or IPv6 /64 may have the server process, together
(``kcp.secure.SecureConfig.datagram_rate``).

Every player holds the key, so a client can flood the server with datagrams that authenticate
(keepalive PINGs, KCP segments), each of which costs the server a decryption and the work behind
it. While the listener keeps up, nothing is limited. Once it falls behind its socket
(:attr:`kcp.endpoint.Endpoint.busy_until`), each address gets ``rate`` datagrams a second (a
token bucket of depth ``burst``); what one address sends beyond that is dropped before it is
decrypted, so a flood costs the server a lookup per datagram instead of a session's work, and
the other clients keep being served.

A connection is charged to the address it was admitted from (the handshake proved that address),
not to the address a datagram comes from: a key holder who spoofs a victim's address as the
source of its own connection's datagrams spends its own budget, never the victim's. Sans-I/O:
``now`` is in milliseconds.
"""

from __future__ import annotations

from typing import Any

from kcp.ratelimit import LOOPBACK, SourceKeys, address_keys
from kcp.token_bucket import TokenBucket

__all__ = ["AddressBudget", "DatagramBudget"]


class AddressBudget(TokenBucket):
    """The token bucket of one address (shared by the connections admitted from it)."""

    __slots__ = ("key", "users")

    def __init__(self, key: Any, rate: float, burst: int, now: int) -> None:
        super().__init__(rate, burst, now)
        self.key = key  # its address's network
        self.users = 0  # connections charged to it


class DatagramBudget:
    """A listener's buckets, one per address with a live connection (so bounded by its session
    table). ``rate=0`` turns the budget off; addresses in ``exempt`` (CIDR strings) have none."""

    __slots__ = ("_buckets", "burst", "keys", "rate")

    def __init__(self, rate: float, burst: int, exempt: tuple[str, ...] = LOOPBACK) -> None:
        self.rate = rate
        self.burst = burst
        self.keys: SourceKeys = address_keys(exempt)
        self._buckets: dict[Any, AddressBudget] = {}

    def charge(self, addr: Any, now: int) -> AddressBudget | None:
        """The bucket a connection admitted from ``addr`` spends (None: not limited); release it
        with :meth:`release` when the connection ends."""
        if self.rate <= 0:
            return None
        key = self.keys.key(addr)
        if key is None:
            return None
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = AddressBudget(key, self.rate, self.burst, now)
        b.users += 1
        return b

    def release(self, bucket: AddressBudget) -> None:
        """A connection charged to ``bucket`` ended (the last one takes the bucket along)."""
        bucket.users -= 1
        if bucket.users <= 0 and self._buckets.get(bucket.key) is bucket:
            del self._buckets[bucket.key]

    def __len__(self) -> int:
        """Addresses with a bucket."""
        return len(self._buckets)
