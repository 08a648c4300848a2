"""Helpers the broker tests share: :class:`Got`, a callback that records what it receives, and
:func:`until`, a bounded wait on a condition."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
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


async def until(pred: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Wait until ``pred()`` (or the awaitable it returns) is true, checking every 10 ms;
    AssertionError naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        r = pred()
        if inspect.isawaitable(r):
            r = await r
        if r:
            return
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)  # the poll interval of a bounded wait on the condition
