"""In-memory transports and session pairs for tests and benchmarks.

:func:`memory_pipe` returns two connected :class:`MemoryTransport` ends with the byte-transport
shape the mux expects (``read``/``write``/``drain``/``close``/``wait_closed``). It is lossless and
ordered; ``limit`` bounds the bytes in flight per direction (``drain()`` waits), and ``rng`` +
``max_chunk`` make reads return small random chunks so frame reassembly is exercised.
:meth:`MemoryTransport.blackhole` silently drops everything written from then on, which looks to
the peer like a dead host (no EOF), for keepalive tests.

:func:`memory_pair` builds a connected ``(client, server)`` :class:`MuxSession` pair on a pipe.
"""

from __future__ import annotations

import asyncio
import random

from .core import MuxConfig
from .errors import MuxClosedError, MuxUsageError
from .session import MuxSession, wake

_DEFAULT_CONFIG = MuxConfig()


class MemoryTransport:
    """One end of an in-memory byte pipe (see :func:`memory_pipe`)."""

    def __init__(
        self, *, limit: int | None = None, rng: random.Random | None = None, max_chunk: int = 0
    ) -> None:
        if limit is not None and limit <= 0:
            raise MuxUsageError("limit must be positive or None")
        self.peer: MemoryTransport | None = None
        self._buf = bytearray()
        self._eof = False  # peer closed its end: read() returns b"" once drained
        self._closed = False
        self._blackholed = False
        self._limit = limit
        self._rng = rng
        self._max_chunk = max_chunk
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self.bytes_written = 0
        self.bytes_read = 0

    # reading side ----------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self._closed:
            return
        self._buf += data
        wake(self._read_waiter)

    def _feed_eof(self) -> None:
        self._eof = True
        wake(self._read_waiter)

    async def read(self, n: int = -1) -> bytes:
        """Return up to ``n`` bytes (all buffered if ``n < 0``); ``b""`` at EOF or after close()."""
        while not self._buf:
            if self._eof or self._closed:
                return b""
            fut = asyncio.get_running_loop().create_future()
            self._read_waiter = fut
            try:
                await fut
            finally:
                self._read_waiter = None
        size = len(self._buf) if n < 0 else min(n, len(self._buf))
        if self._rng is not None and self._max_chunk > 0:
            size = min(size, self._rng.randint(1, self._max_chunk))
        data = bytes(self._buf[:size])
        del self._buf[:size]
        self.bytes_read += size
        peer = self.peer
        if peer is not None and (self._limit is None or len(self._buf) <= self._limit):
            wake(peer._drain_waiter)
        return data

    # writing side ----------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Deliver ``data`` to the peer (or drop it silently once blackholed)."""
        if self._closed:
            raise MuxClosedError("memory transport is closed")
        self.bytes_written += len(data)
        if self._blackholed or self.peer is None:
            return
        self.peer._feed(bytes(data))

    def send_backlog(self) -> int:
        """Bytes written and not read by the peer yet (a KCP session's unacknowledged bytes)."""
        peer = self.peer
        return len(peer._buf) if peer is not None and not self._blackholed else 0

    def send_acked(self) -> int:
        """Bytes the peer has read of what this end wrote (a KCP session's ``snd_una``)."""
        peer = self.peer
        return peer.bytes_read if peer is not None else 0

    async def drain(self) -> None:
        """Wait while more than ``limit`` bytes sit unread at the peer."""
        peer = self.peer
        while (
            self._limit is not None
            and peer is not None
            and not self._closed
            and not peer._closed
            and len(peer._buf) > self._limit
        ):
            fut = asyncio.get_running_loop().create_future()
            self._drain_waiter = fut
            try:
                await fut
            finally:
                self._drain_waiter = None

    def close(self) -> None:
        """Close this end: the peer reads EOF after the bytes already sent."""
        if self._closed:
            return
        self._closed = True
        self._buf.clear()
        wake(self._read_waiter)
        wake(self._drain_waiter)
        peer = self.peer
        if peer is not None and not self._blackholed:
            peer._feed_eof()
            wake(peer._drain_waiter)

    async def wait_closed(self) -> None:
        """Nothing to wait for in memory."""
        return None

    def blackhole(self) -> None:
        """From now on, drop every write and never signal EOF: the peer sees a silent dead host."""
        self._blackholed = True

    def is_closing(self) -> bool:
        """True after close()."""
        return self._closed


def memory_pipe(
    *, limit: int | None = None, seed: int | None = None, max_chunk: int = 0
) -> tuple[MemoryTransport, MemoryTransport]:
    """Return two connected in-memory transports ``(a, b)``.

    ``limit``: bytes in flight per direction before ``drain()`` blocks (None: unbounded).
    ``seed`` + ``max_chunk``: reads return random chunks of 1..max_chunk bytes (seeded).
    """
    rng_a = random.Random(seed) if seed is not None else None
    rng_b = random.Random(seed + 1) if seed is not None else None
    a = MemoryTransport(limit=limit, rng=rng_a, max_chunk=max_chunk)
    b = MemoryTransport(limit=limit, rng=rng_b, max_chunk=max_chunk)
    a.peer = b
    b.peer = a
    return a, b


def memory_pair(
    config: MuxConfig = _DEFAULT_CONFIG,
    *,
    server_config: MuxConfig | None = None,
    limit: int | None = 1 << 20,
    seed: int | None = None,
    max_chunk: int = 0,
) -> tuple[MuxSession, MuxSession]:
    """Return a connected ``(client, server)`` :class:`MuxSession` pair over :func:`memory_pipe`.

    Call it from inside a running event loop. ``server_config`` defaults to ``config``.
    """
    a, b = memory_pipe(limit=limit, seed=seed, max_chunk=max_chunk)
    client = MuxSession(a, client=True, config=config)
    server = MuxSession(b, client=False, config=server_config if server_config is not None else config)
    return client, server


__all__ = ["MemoryTransport", "memory_pair", "memory_pipe"]
