"""A token bucket (sans-I/O: ``now`` in milliseconds): at most ``burst`` tokens, refilled at
``rate`` a second; one unit of work takes one. The per-network limits of :mod:`kcp.ratelimit` and
the datagram budget of :mod:`kcp.datagram_budget` keep one per network."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Full at ``now``; :meth:`take` spends one token when there is one."""

    __slots__ = ("burst", "last", "per_ms", "tokens")

    def __init__(self, rate: float, burst: int, now: int) -> None:
        self.per_ms = rate / 1000.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = now  # when the tokens were last counted

    def level(self, now: int) -> float:
        """The tokens at ``now`` (nothing is taken or counted)."""
        if now > self.last:
            return min(self.burst, self.tokens + (now - self.last) * self.per_ms)
        return self.tokens

    def _refilled(self, now: int) -> float:
        """The tokens at ``now`` (counted from then on)."""
        tokens = self.level(now)
        if now > self.last:
            self.last = now
        return tokens

    def take(self, now: int) -> bool:
        """One token; False (nothing taken) when the bucket is empty."""
        tokens = self._refilled(now)
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True

    def charge(self, n: float, now: int) -> None:
        """Spend ``n`` tokens, into debt if the bucket holds fewer (for work whose cost is known
        only once it is done: :meth:`take` then says no until the debt is paid back)."""
        self.tokens = self._refilled(now) - n
