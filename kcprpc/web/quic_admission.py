"""Which new QUIC connections the WebTransport listener lets start a TLS handshake (sans-I/O:
``now`` in milliseconds): :class:`QuicAdmission`.

A QUIC Initial for a connection the server does not know makes it run a TLS handshake (a
signature and a key agreement, about 2 ms of CPU in Python) and keep the connection until the
client opens a session or ``open_timeout`` ends it. An off-path attacker can send such Initials
from any source address: 400 a second took a whole core, and the calls of the clients already
connected slowed down by a third (docs/BENCHMARKS.md, "WebTransport: a flood of Initials").

So new connections have a budget, as the secure KCP listener's handshakes do (docs/security.md,
"Denial of service"):

* an Initial without a token starts a handshake while the budget has a token (``rate`` a second,
  ``burst`` at once); past it, it gets a **Retry** (RFC 9000, 8.1.2): a stateless answer that
  carries a token bound to the source address, which only a client that receives at that address
  can send back. The server keeps nothing for it, and the Retry is smaller than the Initial;
* an Initial with a token (the client answered a Retry) has proven its address and starts its
  handshake. While the server is under load (it sent a Retry in the last second) a proven
  address may start at most ``rate`` a second, ``burst`` at once (per IPv4 address or IPv6 /64,
  loopback exempt as for every per-address limit); more are dropped and counted, and the client
  sends its Initial again;
* ``rate`` 0 sends a Retry to every new connection (each connect costs one round trip more).
"""

from __future__ import annotations

from typing import Any, Final

from kcp.ratelimit import PrefixLimiter, SourceKeys
from kcp.token_bucket import TokenBucket

__all__ = ["ADMIT", "DROP", "RETRY", "QuicAdmission"]

ADMIT: Final = "admit"
"""Start the handshake."""
RETRY: Final = "retry"
"""Answer with a Retry (nothing kept)."""
DROP: Final = "drop"
"""Drop the Initial (counted): a proven address over its budget under load."""

LOAD_HOLD_MS: Final = 1000
"""How long after a Retry the server counts as under load."""
MAX_PREFIXES: Final = 4096
"""Addresses whose budgets are kept (the least recently used go first)."""


class QuicAdmission:
    """The budget of new QUIC connections (see the module); the listener counts its verdicts."""

    __slots__ = ("_loaded_until", "bucket", "per_address")

    def __init__(self, rate: float, burst: int, keys: SourceKeys, now: int) -> None:
        self.bucket = TokenBucket(rate, burst, now) if rate > 0 else None
        self.per_address = PrefixLimiter(rate, burst, keys, max_prefixes=MAX_PREFIXES)
        self._loaded_until = -LOAD_HOLD_MS

    def initial(self, address: Any, proven: bool, now: int) -> str:
        """What to do with an Initial of a new connection from ``address``; ``proven``: it carries
        a valid Retry token."""
        if not proven:
            if self.bucket is not None and self.bucket.take(now):
                return ADMIT
            self._loaded_until = now + LOAD_HOLD_MS
            return RETRY
        if not self.under_load(now) or self.per_address.allow(address, now):  # (rate 0: no limit)
            return ADMIT
        return DROP

    def under_load(self, now: int) -> bool:
        """True within a second of the last Retry."""
        return now < self._loaded_until
