"""What the brokers that span processes (:class:`~kcprpc.redis_broker.RedisBroker`,
:class:`~kcprpc.nats_broker.NatsBroker`) do the same way: ``epoch``, ``available`` and
``stats()`` (:class:`BrokerBase`), the background tasks they own, and handing one message to a
key's callbacks (one callback's exception neither stops the others nor reaches the broker: it is
counted and logged)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

from kcprpc.broker import BrokerCallback, BrokerMessage

__all__ = ["BrokerBase", "run_callbacks", "spawn"]

log = logging.getLogger("kcprpc.broker")


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


def run_callbacks(callbacks: Sequence[BrokerCallback], msg: BrokerMessage, stats: dict[str, int]) -> None:
    """Call each of ``callbacks`` (a snapshot: one may unsubscribe meanwhile) with ``msg``; an
    exception is counted in ``stats["callback_errors"]`` and logged on ``kcprpc.broker``."""
    for cb in tuple(callbacks):
        try:
            cb(msg)
        except Exception:
            stats["callback_errors"] += 1
            log.exception("broker callback for %r raised", msg.key)
