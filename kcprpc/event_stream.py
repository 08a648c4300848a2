"""``client.events(...)``: pushed events of one type as an async iterator.

An async generator, kept out of :mod:`kcprpc.subscriptions` because mypyc (which compiles
subscriptions in the compiled build) cannot compile async generators. :class:`Subscriptions`
hands each pushed event of a registered type to the queue this generator reads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from kcprpc.service import event_info

__all__ = ["EventQueues", "queued_events"]

EventQueues = dict[str, list[tuple[Any, "asyncio.Queue[Any]", bool]]]
"""Event type name → the ``(adapter, queue, with_info)`` entries of the iterators reading it."""


async def queued_events(queues: EventQueues, event_type: type[Any], info: bool) -> AsyncGenerator[Any, None]:
    """Yield what arrives in a queue registered in ``queues`` under ``event_type``'s name (when
    iteration starts), removed again when the iteration ends."""
    name, _, adapter = event_info(event_type)
    q: asyncio.Queue[Any] = asyncio.Queue()
    entry = (adapter, q, info)
    queues.setdefault(name, []).append(entry)
    try:
        while True:
            yield await q.get()
    finally:
        with contextlib.suppress(ValueError, KeyError):
            queues[name].remove(entry)
