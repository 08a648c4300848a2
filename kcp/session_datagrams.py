"""A KCP session's received out-of-band datagrams (kcp-go's OOB packets, flag 0xf3).

:class:`DatagramQueue` is owned by :class:`kcp.session.KCPSession`: a bounded queue (the oldest
datagram is dropped, and counted, when it is full) and the one coroutine that may wait on it.
Sending stays in the session (it goes through the session's pipeline and packet path).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from kcp.errors import KCPUsageError

__all__ = ["DatagramQueue"]


class DatagramQueue:
    """Datagrams received and not yet taken by :meth:`get`, at most ``limit`` of them."""

    __slots__ = ("dropped", "limit", "loop", "queue", "waiter")

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: deque[bytes] = deque()
        self.limit = limit
        self.dropped = 0  # datagrams pushed out of a full queue
        self.loop = loop
        self.waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self.queue)

    def push(self, payload: bytes) -> None:
        """One datagram arrived: queue it (dropping the oldest if full), wake the waiter."""
        q = self.queue
        if len(q) >= self.limit:
            q.popleft()
            self.dropped += 1
        q.append(payload)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def wake(self) -> None:
        """Wake the waiter (the session ended or is closing: it re-checks and raises)."""
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def clear(self) -> None:
        self.queue.clear()

    async def get(self, check_open: Callable[[], None]) -> bytes:
        """The next datagram; while there is none, ``check_open()`` raises once the session ended."""
        q = self.queue
        while not q:
            check_open()
            if self.waiter is not None:
                raise KCPUsageError("another coroutine is already waiting in dgram_waiter")
            fut = self.waiter = self.loop.create_future()
            try:
                await fut
            finally:
                self.waiter = None
        return q.popleft()
