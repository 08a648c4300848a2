"""The connection the RPC layer runs on, and frame I/O over a byte stream.

The RPC core only needs a :class:`Connection`: reliable byte streams it can open and accept (the
mux gives these) and unreliable datagrams (KCP's OOB). :mod:`kcprpc.memory` implements it in
memory for tests; :mod:`kcprpc.net` implements it with ``kcprpc.mux`` over a ``kcp`` session.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from kcprpc.codec import DEFAULT_MAX_MESSAGE_SIZE, Frame, FrameDecoder
from kcprpc.status import Status


@runtime_checkable
class ByteStream(Protocol):
    """A reliable, ordered byte stream (a mux stream)."""

    async def read(self, n: int = -1) -> bytes:
        """Return up to ``n`` bytes (any amount when -1); ``b""`` at end of stream."""
        ...

    def write(self, data: bytes) -> None:
        """Queue bytes for sending."""
        ...

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark."""
        ...

    def close(self) -> None:
        """Half-close: no more writes from this side."""
        ...


class Connection(Protocol):
    """One peer: streams both ways plus unreliable datagrams."""

    async def open_stream(self) -> ByteStream:
        """Open a new stream to the peer."""
        ...

    async def accept_stream(self) -> ByteStream:
        """Wait for a stream opened by the peer; raises ``ConnectionError`` once the connection is closed."""
        ...

    def send_datagram(self, data: bytes) -> None:
        """Send one unreliable datagram (may be dropped)."""
        ...

    async def recv_datagram(self) -> bytes:
        """Wait for one datagram; raises ``ConnectionError`` once the connection is closed."""
        ...

    @property
    def max_datagram_size(self) -> int:
        """Largest payload :meth:`send_datagram` carries."""
        ...

    @property
    def closed(self) -> bool:
        """True once closed by either side."""
        ...

    async def close(self) -> None:
        """Close the connection and every stream on it."""
        ...

    def stats(self) -> dict[str, int]:
        """Transport counters (KCP, mux) for the ``stats`` call."""
        ...

    @property
    def remote_address(self) -> Any:
        """The peer's address, when it has one."""
        ...


@runtime_checkable
class SendBacklog(Protocol):
    """What a :class:`Connection` may add so that the server can bound what a client that stops
    reading makes it hold (docs/rpc.md, "Clients that stop reading"). :class:`kcprpc.net.MuxConnection`
    has it; a connection without it (in memory: writes land in the peer at once) is not bounded."""

    def send_backlog(self) -> int:
        """Bytes held for the peer: written and not sent yet, or sent and not acknowledged yet."""
        ...

    def send_progress(self) -> int:
        """A count that changes whenever the peer consumes some of what waits for it (any unit;
        only changes matter), and only then: not when more is written behind data that waits."""
        ...


CLOSE_CODE_BASE = 0x4B00
"""A transport close code (secure mode's authenticated CLOSE) ``CLOSE_CODE_BASE + status`` ends an
RPC connection with that :class:`~kcprpc.status.Status`: the client's pending calls fail with it."""


def close_code(status: Status) -> int:
    """The transport close code that carries ``status``."""
    return CLOSE_CODE_BASE + int(status)


def close_status(code: int | None) -> Status | None:
    """The status a transport close code carries (see :func:`close_code`), or None."""
    if code is None or not CLOSE_CODE_BASE < code <= CLOSE_CODE_BASE + max(Status):
        return None
    try:
        return Status(code - CLOSE_CODE_BASE)
    except ValueError:
        return None


def spawn(tasks: set[Any], aw: Awaitable[Any]) -> asyncio.Future[Any]:
    """Run ``aw`` as a task held in ``tasks`` (so it is not garbage-collected, and its owner can
    cancel what is left at shutdown) until it is done."""
    t = asyncio.ensure_future(aw)
    tasks.add(t)
    t.add_done_callback(tasks.discard)
    return t


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


class Inbox:
    """The inbound messages of one streaming call: a FIFO that never blocks its writer but tells
    the stream's reader to stop reading (so the mux window pushes back on the peer) while more
    than ``high`` messages wait."""

    __slots__ = ("_getter", "_items", "_space", "high")

    def __init__(self, high: int = 256) -> None:
        self._items: deque[Any] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        self.high = high

    def put(self, item: Any) -> None:
        """Append (never blocks)."""
        self._items.append(item)
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
        sp = self._space
        if sp is not None and len(items) <= self.high // 2 and not sp.done():
            sp.set_result(None)
        return item

    def qsize(self) -> int:
        """Items waiting."""
        return len(self._items)

    @property
    def full(self) -> bool:
        """True while the reader should pause."""
        return len(self._items) >= self.high

    async def wait_space(self) -> None:
        """Wait until at most ``high // 2`` items wait."""
        while len(self._items) > self.high // 2:
            self._space = asyncio.get_running_loop().create_future()
            try:
                await self._space
            finally:
                self._space = None


INBOX_LIMIT = 4096
"""Unread messages one streaming call may hold when its stream cannot be paused (a call on the shared
control stream, which cannot be paused for one call, or a call over the :class:`ParkingLot`'s
budget); past it the call fails with RESOURCE_EXHAUSTED."""


class ParkingLot:
    """Bounds how many streams of one connection may stop being read at the same time.

    A stream whose reader pauses (its call has too many unread messages) keeps up to one mux window
    of data unread, and unread data counts against the connection's receive buffer (smux's
    session-wide bucket); once that is empty the mux stops reading everything, the control stream
    and heartbeats included. So only ``budget`` streams may pause at once (``None``: no limit, for
    transports without such a buffer); a call that cannot pause keeps being read into its inbox up
    to ``overflow`` messages and then fails with RESOURCE_EXHAUSTED instead of stalling the link.
    """

    __slots__ = ("budget", "overflow", "parked")

    def __init__(self, budget: int | None, overflow: int = INBOX_LIMIT) -> None:
        self.budget = budget
        self.overflow = overflow
        self.parked = 0

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


async def read_frames(
    stream: ByteStream,
    on_frames: Callable[[list[Frame]], None],
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    pause: Callable[[], Awaitable[None] | None] | None = None,
) -> None:
    """Read ``stream`` until EOF, handing each batch of decoded frames to ``on_frames``.

    After each batch ``pause()`` may return an awaitable: reading stops until it completes.
    """
    dec = FrameDecoder(max_message_size)
    read = stream.read
    feed = dec.feed
    while True:
        data = await read(65536)
        if not data:
            return
        frames = feed(data)
        if frames:
            on_frames(frames)
            if pause is not None:
                w = pause()
                if w is not None:
                    await w
