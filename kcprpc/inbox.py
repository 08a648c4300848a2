"""Messages in, per call: :class:`Inbox` (a streaming call's unread messages, with their decode
budget) and :class:`ParkingLot` (how many streams of a connection may stop being read at once)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from kcprpc.codec import (
    DecodeBudget,
)


class Inbox:
    """The inbound messages of one streaming call: a FIFO that never blocks its writer but tells
    the stream's reader to stop reading (so the mux window pushes back on the peer) while more
    than ``high`` messages wait, or too many decoded bytes: a quarter of the connection's budget,
    or a sixteenth of it once the connection holds half its budget (so that all the streams that
    may pause fit in it together).

    With a ``budget`` (the connection's :class:`~kcprpc.codec.DecodeBudget`) each message carries
    the charge it was decoded with; it is given back when the message is taken, or by
    :meth:`release_all` (and, as a last resort, when the inbox is garbage collected)."""

    __slots__ = (
        "_bytes",
        "_costs",
        "_getter",
        "_items",
        "_space",
        "budget",
        "high",
        "high_bytes",
        "low_bytes",
    )

    def __init__(self, high: int = 256, *, budget: DecodeBudget | None = None) -> None:
        self._items: deque[Any] = deque()
        self._costs: deque[int] = deque()
        self._bytes = 0
        self._getter: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        self.high = high
        self.budget = budget
        limit = budget.limit if budget is not None else 1 << 62
        self.high_bytes = limit // 4
        self.low_bytes = limit // 16  # under pressure

    def put(self, item: Any, cost: int = 0) -> None:
        """Append (never blocks); ``cost`` is what the item was charged to the budget."""
        self._items.append(item)
        self._costs.append(cost)
        self._bytes += cost
        g = self._getter
        if g is not None and not g.done():
            g.set_result(None)

    async def get(self) -> Any:
        """Wait for and remove the oldest item."""
        items = self._items
        while not items:
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        item = items.popleft()
        cost = self._costs.popleft()
        if cost:
            self._bytes -= cost
            budget = self.budget
            if budget is not None:
                budget.held -= cost
        sp = self._space
        if sp is not None and not sp.done() and self._has_space():
            sp.set_result(None)
        return item

    def qsize(self) -> int:
        """Items waiting."""
        return len(self._items)

    @property
    def charged(self) -> int:
        """Budget bytes the waiting items hold."""
        return self._bytes

    @property
    def full(self) -> bool:
        """True while the reader should pause."""
        if len(self._items) >= self.high:
            return True
        b = self._bytes
        if b < self.low_bytes:
            return False
        if b >= self.high_bytes:
            return True
        budget = self.budget
        return budget is not None and budget.held >= budget._half

    def _has_space(self) -> bool:
        if len(self._items) > self.high // 2:
            return False
        b = self._bytes
        if b <= self.low_bytes // 2:
            return True
        if b > self.high_bytes // 2:
            return False
        budget = self.budget
        return budget is None or budget.held < budget._half

    async def wait_space(self) -> None:
        """Wait until at most ``high // 2`` items (and half the decoded bytes that paused it) wait."""
        while not self._has_space():
            self._space = asyncio.get_running_loop().create_future()
            try:
                await self._space
            finally:
                self._space = None

    def _release(self) -> None:
        if self._bytes and self.budget is not None:
            self.budget.release(self._bytes)
        self._bytes = 0

    def release_all(self) -> None:
        """Give back the budget of every waiting item (their owner is gone); the items stay."""
        self._release()
        self._costs = deque(0 for _ in self._costs)

    def __del__(self) -> None:
        self._release()


INBOX_LIMIT = 4096
"""Unread messages one streaming call may hold when its stream cannot be paused (a call on the shared
control stream, which cannot be paused for one call, or a call over the :class:`ParkingLot`'s
budget); past it the call fails with RESOURCE_EXHAUSTED."""


class ParkingLot:
    """Bounds how many streams of one connection may stop being read at the same time.

    A stream whose reader pauses (its call has too many unread messages, or its next frame waits
    for room in the connection's :class:`FrameBudget`) keeps up to one mux window of data unread,
    and unread data counts against the connection's receive buffer (smux's session-wide bucket);
    once that is empty the mux stops reading everything, the control stream and heartbeats
    included. So only ``budget`` streams may pause at once (``None``: no limit, for transports
    without such a buffer); a call that cannot pause keeps being read into its inbox up to
    ``overflow`` messages and then fails with RESOURCE_EXHAUSTED instead of stalling the link, and
    a frame that cannot wait for room is refused.
    """

    __slots__ = ("budget", "overflow", "parked")

    def __init__(self, budget: int | None, overflow: int = INBOX_LIMIT) -> None:
        self.budget = budget
        self.overflow = overflow
        self.parked = 0

    def try_park(self) -> bool:
        """Take a slot if one is free (give it back with :meth:`unpark`)."""
        if self.budget is None or self.parked < self.budget:
            self.parked += 1
            return True
        return False

    def unpark(self) -> None:
        """Give back a slot taken by :meth:`try_park`."""
        self.parked -= 1

    def pause(self, inbox: Inbox, overflowed: Callable[[], None]) -> Awaitable[None] | None:
        """What a stream reader does after a batch for a call with ``inbox``: nothing (``None``) while
        the inbox has room; wait for room while holding a slot; or, with no slot free, read on and
        call ``overflowed()`` once ``overflow`` messages wait."""
        if not inbox.full:
            return None
        if self.budget is None or self.parked < self.budget:
            return self._park(inbox)
        if inbox.qsize() >= self.overflow:
            overflowed()
        return None

    async def _park(self, inbox: Inbox) -> None:
        self.parked += 1
        try:
            await inbox.wait_space()
        finally:
            self.parked -= 1
