"""What the brokers that span processes (:class:`~kcprpc.redis_broker.RedisBroker`,
:class:`~kcprpc.nats_broker.NatsBroker`) do the same way: ``epoch``, ``available`` and
``stats()`` (:class:`BrokerBase`) and the background tasks they own (a key's callbacks are run
by :func:`kcprpc.broker.run_callbacks`, as in every broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

__all__ = ["BrokerBase", "spawn"]


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
