"""What the brokers that span processes (:class:`~kcprpc.redis_broker.RedisBroker`,
:class:`~kcprpc.nats_broker.NatsBroker`) do the same way: the background tasks they own, and
handing one message to a key's callbacks (one callback's exception neither stops the others nor
reaches the broker: it is counted and logged)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

from kcprpc.broker import BrokerCallback, BrokerMessage

__all__ = ["run_callbacks", "spawn"]

log = logging.getLogger("kcprpc.broker")


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
