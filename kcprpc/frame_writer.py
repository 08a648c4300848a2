"""Frames out: :class:`FrameWriter` batches the frames of one event-loop tick into one stream write
(a tick flusher per loop), and :class:`SendGuard` counts what a session's writers wrote."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable

from kcprpc.transport import ByteStream


class SendGuard:
    """Shared by the :class:`FrameWriter` objects of one connection: after every ``every`` bytes
    they wrote together, ``check()`` runs (the server's send bounds, docs/rpc.md "Clients that stop
    reading"). Between checks a flush costs one addition and one comparison, so a push to a
    thousand sessions does not pay a check per event; what one connection can add unchecked is
    ``every`` bytes plus one write."""

    __slots__ = ("check", "every", "unchecked")

    def __init__(self, check: Callable[[], None], every: int = 64 * 1024) -> None:
        self.check = check
        self.every = max(1, every)
        self.unchecked = 0


class _TickFlusher:
    """Flushes every :class:`FrameWriter` of a loop that has frames queued, with one ``call_soon``
    per loop tick for all of them (a push to a thousand sessions schedules one callback, not a
    thousand)."""

    __slots__ = ("__weakref__", "_loop", "_scheduled", "_writers")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._writers: list[FrameWriter] = []
        self._scheduled = False

    def add(self, writer: FrameWriter) -> None:
        self._writers.append(writer)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        writers = self._writers
        self._writers = []
        for w in writers:
            if w._scheduled:
                w.flush()


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _TickFlusher] = weakref.WeakKeyDictionary()


def _flusher(loop: asyncio.AbstractEventLoop) -> _TickFlusher:
    f = _flushers.get(loop)
    if f is None:
        f = _flushers[loop] = _TickFlusher(loop)
    return f


class FrameWriter:
    """Writes frames to a stream, coalescing every frame sent in one loop tick into one write.

    Many small frames (64 replies to 64 calls in flight) then cost one mux frame and one KCP send.
    The writers of one loop share one flush callback per tick. More than ``high_water`` bytes
    queued in one tick are written at once (so one tick never holds more than that here), and the
    writes are counted against ``guard`` (a :class:`SendGuard`): the server enforces its send
    bounds there.
    """

    __slots__ = (
        "_flusher",
        "_guard",
        "_loop",
        "_pending",
        "_pending_bytes",
        "_scheduled",
        "_stream_buffered",
        "closed",
        "high_water",
        "stream",
    )

    def __init__(
        self,
        stream: ByteStream,
        *,
        high_water: int = 256 * 1024,
        guard: SendGuard | None = None,
    ) -> None:
        self.stream = stream
        self._loop = asyncio.get_running_loop()
        self._flusher = _flusher(self._loop)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._scheduled = False
        self.closed = False
        self.high_water = high_water
        self._guard = guard
        wbs = getattr(stream, "write_buffer_size", None)
        self._stream_buffered: Callable[[], int] | None = wbs if callable(wbs) else None

    def send(self, frame: bytes) -> None:
        """Queue one encoded frame; it is written at the end of this loop tick (or at once when
        more than ``high_water`` bytes are queued)."""
        if self.closed:
            return
        self._pending.append(frame)
        n = self._pending_bytes + len(frame)
        self._pending_bytes = n
        if not self._scheduled:
            self._scheduled = True
            self._flusher.add(self)
        elif n > self.high_water:
            self.flush()

    def flush(self) -> None:
        """Write everything queued now."""
        self._scheduled = False
        if not self._pending or self.closed:
            return
        pending = self._pending
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        n = self._pending_bytes
        self._pending_bytes = 0
        try:
            self.stream.write(data)
        except Exception:
            self.closed = True
            return
        g = self._guard
        if g is not None:
            u = g.unchecked + n
            if u >= g.every:
                g.unchecked = 0
                g.check()
            else:
                g.unchecked = u

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet handed to the stream."""
        return self._pending_bytes

    def stream_backlog(self) -> int:
        """Bytes queued here plus what the stream holds unsent (its ``write_buffer_size()``, when
        it has one: a mux stream waiting for its peer's window)."""
        wbs = self._stream_buffered
        return self._pending_bytes + (wbs() if wbs is not None else 0)

    def discard(self) -> None:
        """Drop what is queued and refuse further frames (the connection is being ended)."""
        self.closed = True
        self._pending.clear()
        self._pending_bytes = 0

    async def drain(self) -> None:
        """Flush and wait for the stream's buffer to drain (backpressure for streaming calls)."""
        self.flush()
        if not self.closed:
            await self.stream.drain()

    def close(self) -> None:
        """Flush and half-close the stream."""
        self.flush()
        self.closed = True
        with contextlib.suppress(Exception):
            self.stream.close()
