"""Holding a unary call's reply until something completes (:func:`hold_reply`).

A room joined in a handler goes through the server's broker subscription, which a broker across
processes makes in the background (a round trip to Redis or NATS). The call's reply waits for it,
so that once the client hears back, a push from any server reaches it
(:meth:`kcprpc.push.PushHub.join`, :meth:`kcprpc.broker.Broker.live`)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable
from typing import Any, Final

__all__ = ["REPLY_HOLD_S", "collect_holds", "hold_reply", "settle"]

REPLY_HOLD_S: Final = 2.0
"""The longest a reply waits for what :func:`hold_reply` named (then it goes anyway, counted)."""

_holds: contextvars.ContextVar[list[Awaitable[Any]] | None] = contextvars.ContextVar(
    "kcprpc_reply_holds", default=None
)


def collect_holds() -> list[Awaitable[Any]]:
    """Start collecting the holds of the unary call this task runs (the server does this)."""
    holds: list[Awaitable[Any]] = []
    _holds.set(holds)
    return holds


def hold_reply(aw: Awaitable[Any]) -> None:
    """Send the reply of the unary call being handled, if any, only once ``aw`` completes (at most
    :data:`REPLY_HOLD_S` later); outside a unary handler, nothing."""
    holds = _holds.get()
    if holds is not None:
        holds.append(aw)


async def settle(holds: list[Awaitable[Any]]) -> bool:
    """Wait for ``holds`` (at most :data:`REPLY_HOLD_S`); False if they did not all complete."""
    _done, pending = await asyncio.wait([asyncio.ensure_future(a) for a in holds], timeout=REPLY_HOLD_S)
    holds.clear()
    return not pending
