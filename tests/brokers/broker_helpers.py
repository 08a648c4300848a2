"""Helpers the broker tests share: :class:`Got`, a callback that records what it receives, and
:func:`until`, a bounded wait on a condition."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from kcprpc.broker import BrokerMessage


class Got:
    """A callback that records what it receives."""

    def __init__(self) -> None:
        self.msgs: list[BrokerMessage] = []

    def __call__(self, m: BrokerMessage) -> None:
        self.msgs.append(m)

    @property
    def seqs(self) -> list[int]:
        return [m.seq for m in self.msgs]

    @property
    def ns(self) -> list[Any]:
        return [m.payload.get("n") for m in self.msgs]


async def _poll() -> None:
    await asyncio.sleep(0.01)  # the poll interval of a bounded wait on the condition


async def until(
    pred: Callable[[], object],
    what: str,
    timeout: float = 10.0,
    *,
    tick: Callable[[], Awaitable[None]] = _poll,
) -> None:
    """Wait until ``pred()`` (or the awaitable it returns) is true, ``await tick()`` between tries
    (10 ms by default; a simulated clock's step); AssertionError naming ``what`` after ``timeout``
    seconds of the event loop's time."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        r = pred()
        if inspect.isawaitable(r):
            r = await r
        if r:
            return
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await tick()
