"""What the brokers that span processes (:class:`~kcprpc.redis_broker.RedisBroker`,
:class:`~kcprpc.nats_broker.NatsBroker`) do the same way: ``epoch``, ``available`` and
``stats()`` (:class:`BrokerBase`) and the background tasks they own (a key's callbacks are run
by :func:`kcprpc.broker.run_callbacks`, as in every broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit

from kcprpc.errors import UsageError

__all__ = ["BrokerBase", "check_urls", "spawn"]


def check_urls(url: object, schemes: tuple[str, ...], who: str) -> str:
    """``url`` (a comma-separated list of URLs too) when each has one of ``schemes`` and, but for
    a ``unix://`` path, a host and a port in 0..65535; else a :class:`UsageError` naming it, where
    the client library would fail at start (or report a bad URL as an outage)."""
    if not isinstance(url, str) or not url.strip():
        raise UsageError(f"{who}: the server URL must be a non-empty str, not {url!r}")
    for one in url.split(","):
        try:
            parts = urlsplit(one.strip())
            parts.port  # noqa: B018 (raises ValueError past 65535 or for a port that is not a number)
        except ValueError as e:
            raise UsageError(f"{who}: bad server URL {one.strip()!r}: {e}") from None
        if parts.scheme not in schemes:
            raise UsageError(
                f"{who}: server URL {one.strip()!r} must start with {' or '.join(s + '://' for s in schemes)}"
            )
        if parts.scheme != "unix" and not parts.hostname:
            raise UsageError(f"{who}: server URL {one.strip()!r} names no host")
    return url


class BrokerBase:
    """The state every broker across processes reports the same way: the epoch its server
    answered last, whether the server is reachable, and the counters (a subclass sets
    ``_epoch``, ``_available`` and ``_stats``)."""

    _epoch: int
    _available: bool
    _stats: dict[str, int]

    @property
    def epoch(self) -> int:
        """The epoch the broker's server answered last (0 before :meth:`start`)."""
        return self._epoch

    @property
    def available(self) -> bool:
        """False while the broker's server cannot be reached (and before :meth:`start`)."""
        return self._available

    def stats(self) -> dict[str, int]:
        """A snapshot of the counters, with the gauge ``unavailable`` (1 while the server cannot
        be reached)."""
        s = dict(self._stats)
        s["unavailable"] = 0 if self._available else 1
        return s


def spawn(tasks: set[asyncio.Task[Any]], coro: Awaitable[Any]) -> asyncio.Task[Any]:
    """Run ``coro`` as a task kept in ``tasks`` until it ends (so the broker can cancel what is
    still running when it closes)."""
    t: asyncio.Task[Any] = asyncio.ensure_future(coro)
    tasks.add(t)
    t.add_done_callback(tasks.discard)
    return t
