"""The connection the RPC layer runs on, and frame I/O over a byte stream.

The RPC core only needs a :class:`Connection`: reliable byte streams it can open and accept (the
mux gives these) and unreliable datagrams (KCP's OOB). :mod:`kcprpc.memory` implements it in
memory for tests; :mod:`kcprpc.net` implements it with ``kcprpc.mux`` over a ``kcp`` session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from kcprpc.codec import (
    BUFFER_REFUSED,
    DEFAULT_MAX_MESSAGE_SIZE,
    HEADER_SIZE,
    STALLED,
    DecodeBudget,
    Frame,
    FrameDecoder,
)
from kcprpc.errors import UsageError
from kcprpc.status import Status
from kcprpc.transport_events import TransportEvent


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

    # -- optional capabilities: every Connection declares them; one without says None/False
    @property
    def send_bounds(self) -> SendBacklog | None:
        """What the connection holds for its peer (a server bounds it for clients that stop
        reading), or None when nothing is held (in memory)."""
        ...

    @property
    def max_paused_streams(self) -> int | None:
        """How many streams may stop being read at once (:class:`ParkingLot`); None: no limit."""
        ...

    @property
    def wire_mode(self) -> str | None:
        """``"secure"`` or ``"compat"`` over KCP, None otherwise."""
        ...

    @property
    def peer_public_key(self) -> bytes | None:
        """Secure mode: the peer's static public key when the handshake proved one, else None."""
        ...

    def add_event_callback(self, callback: Callable[[TransportEvent], None]) -> bool:
        """Call ``callback`` with each :mod:`kcprpc.transport_events` event (in the receive path:
        it must not block); False (and nothing done) when the connection has no such events."""
        ...

    def rebind(self) -> Any:
        """Move to a new local socket (secure KCP clients); raises :class:`UsageError` otherwise."""
        ...

    async def abort(self, code: int | None = None, message: str = "") -> None:
        """Close at once, dropping what waits to be sent; a secure session tells the peer
        ``code`` and ``message`` in its authenticated CLOSE."""
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

    def release_all(self) -> None:
        """Give back the budget of every waiting item (their owner is gone); the items stay."""
        if self._bytes and self.budget is not None:
            self.budget.release(self._bytes)
        self._bytes = 0
        self._costs = deque(0 for _ in self._costs)

    def __del__(self) -> None:
        if self._bytes and self.budget is not None:
            self.budget.release(self._bytes)
            self._bytes = 0


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


TRIM_AFTER = 1024 * 1024
"""A frame reservation this large, given back, asks for :func:`trim_soon`."""


class _Trimmer:
    """glibc keeps the memory of freed buffers (the holes of a fragmented heap, large chunks below its
    moving mmap threshold) and so the process's RSS stays at its peak after a burst of large frames.
    ``malloc_trim(0)`` gives the free pages back; this runs it a second after it was asked for, then
    every 2 s until 10 s after the last ask (a no-op where the C library has no ``malloc_trim``). A
    trim of a ~100 MB heap takes ~1-3 ms."""

    def __init__(self) -> None:
        self._fn: Callable[[int], int] | None = None
        self._loaded = False
        self._handle: asyncio.TimerHandle | None = None
        self._late: asyncio.TimerHandle | None = None
        self._asked = 0.0
        self.runs = 0
        self.seconds = 0.0  # time spent in malloc_trim

    def _load(self) -> Callable[[int], int] | None:
        if not self._loaded:
            self._loaded = True
            try:
                import ctypes
                import ctypes.util

                name = ctypes.util.find_library("c")
                fn = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
                if fn is not None:
                    fn.argtypes = [ctypes.c_size_t]
                    fn.restype = ctypes.c_int
                    self._fn = fn
            except (OSError, AttributeError):
                self._fn = None
        return self._fn

    def soon(self) -> None:
        if self._load() is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no running loop (a test driving the budget by hand)
            return
        self._asked = loop.time()
        if self._handle is None:
            self._handle = loop.call_later(1.0, self._run)

    def after_close(self) -> None:
        """A connection that held large buffers ended: trim once things settled (its transport's
        buffers go a little later than its streams'); a later close pushes this back."""
        if self._load() is None:
            return
        if self._late is not None:
            self._late.cancel()
        try:
            self._late = asyncio.get_running_loop().call_later(3.0, self._run_late)
        except RuntimeError:
            self._late = None

    def _run_late(self) -> None:
        self._late = None
        self._run(False)

    def _run(self, debounced: bool = True) -> None:
        if debounced:
            self._handle = None
        fn = self._fn
        if fn is not None:
            t0 = time.perf_counter()
            fn(0)
            self.runs += 1
            self.seconds += time.perf_counter() - t0
        if debounced:
            # what was asked for may still be on its way out (a burst of data being dropped):
            # keep trimming every 2 s until 10 s after the last ask
            loop = asyncio.get_running_loop()
            if loop.time() - self._asked < 10.0:
                self._handle = loop.call_later(2.0, self._run)


trimmer = _Trimmer()


def trim_soon() -> None:
    """Ask the C allocator to return free memory to the OS about a second from now (debounced)."""
    trimmer.soon()


class FrameBudget:
    """The bytes of partial frames that the stream readers of one connection may hold together.

    A reader that has the start of a frame (its 9-byte header gives the size) reserves the whole
    frame before it holds more of it than the header; it gives the reservation back when the frame
    is complete. A reservation is granted at once while it fits and nobody waits, otherwise in FIFO
    order as others give theirs back. Since no waiting reader holds any of the budget (it gives the
    bytes it read back to its stream first), and ``limit`` fits the largest frame, every
    reservation is granted eventually while the peer completes its frames. The control stream never
    waits: :meth:`force` charges its frame even past the limit (at most one frame at a time)."""

    __slots__ = ("_waiters", "limit", "peak", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0  # most reserved at once
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def try_reserve(self, n: int) -> bool:
        """Reserve ``n`` bytes if that needs no wait."""
        if not self._waiters and self.used + n <= self.limit:
            self.used += n
            if self.used > self.peak:
                self.peak = self.used
            return True
        return False

    def force(self, n: int) -> None:
        """Reserve ``n`` bytes now, past the limit if need be (the control stream's frame)."""
        self.used += n
        if self.used > self.peak:
            self.peak = self.used

    async def reserve(self, n: int) -> None:
        """Wait (FIFO) until ``n`` bytes can be reserved, and reserve them."""
        if self.try_reserve(n):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._grant()
            raise

    def release(self, n: int) -> None:
        """Give back ``n`` reserved bytes."""
        self.used -= n
        if n >= TRIM_AFTER:  # a large frame's buffer is free now
            trim_soon()
        if self._waiters:
            self._grant()

    def _grant(self) -> None:
        waiters = self._waiters
        while waiters:
            n, fut = waiters[0]
            if fut.done():
                waiters.popleft()
                continue
            if self.used + n > self.limit:
                return
            self.used += n
            if self.used > self.peak:
                self.peak = self.used
            waiters.popleft()
            fut.set_result(None)

    @property
    def waiting(self) -> int:
        """Readers waiting for a reservation."""
        return len(self._waiters)


class ReceiveLimits:
    """The receive-side memory bounds of one connection, shared by all its stream readers
    (docs/rpc.md, "Flow control and memory per connection"):

    * ``decode``: a :class:`~kcprpc.codec.DecodeBudget` of ``max_decoded_bytes``, the estimated
      bytes of decoded bodies held (by running calls, by unread streamed messages);
    * ``frames``: a :class:`FrameBudget` of ``max_partial_frame_bytes``, the bytes of frames
      received in part (the control stream may hold one more frame past it);
    * ``parking``: the :class:`ParkingLot` of streams that may stop being read;
    * ``partial_frame_timeout``: how long a reserved frame may wait for its next byte before it is
      dropped (None: forever).

    Counters go to ``counters``: ``recv_decode_scanned``, ``recv_decode_refused`` (see
    :class:`~kcprpc.codec.DecodeBudget`), ``recv_frame_waits`` (a stream stopped reading until its
    frame fitted), ``recv_frame_refused`` (a frame that could neither fit nor wait was refused),
    ``recv_frame_timeouts`` (a frame stalled for ``partial_frame_timeout`` was dropped).
    """

    __slots__ = ("_timer", "_watched", "counters", "decode", "frames", "parking", "partial_frame_timeout")

    def __init__(
        self,
        *,
        max_decoded_bytes: int,
        max_partial_frame_bytes: int,
        partial_frame_timeout: float | None,
        held_types: Iterable[int],
        parking: ParkingLot,
        counters: dict[str, int],
    ) -> None:
        for k in RECEIVE_COUNTERS:
            counters.setdefault(k, 0)
        self.counters = counters
        self.decode = DecodeBudget(max_decoded_bytes, held_types, counters)
        self.frames = FrameBudget(max_partial_frame_bytes)
        self.parking = parking
        self.partial_frame_timeout = partial_frame_timeout
        self._watched: set[_PartialReader] = set()
        self._timer: asyncio.TimerHandle | None = None

    def close(self) -> None:
        """The connection ended: if it ever held large frames, give the freed memory back to the OS
        a little later (:class:`_Trimmer`)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watched.clear()
        if self.frames.peak >= TRIM_AFTER:
            trimmer.after_close()

    # -- stalled frames: one timer per connection while frames are being received in part
    def watch(self, reader: _PartialReader) -> None:
        """``reader`` holds a reservation for a frame in progress (its ``since`` is kept fresh)."""
        if self.partial_frame_timeout is None:
            return
        reader.watched = True
        self._watched.add(reader)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.partial_frame_timeout / 4, self._check)

    def unwatch(self, reader: _PartialReader) -> None:
        """``reader`` holds no reservation any more."""
        reader.watched = False
        self._watched.discard(reader)

    def _check(self) -> None:
        """Drop the frames that got no byte for ``partial_frame_timeout``: the reader is parked in its
        stream's read (or will find the decoder skipping): the frame is refused from here."""
        self._timer = None
        timeout = self.partial_frame_timeout
        if timeout is None or not self._watched:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for reader in list(self._watched):
            if now - reader.since < timeout:
                continue
            self.unwatch(reader)
            dec = reader.dec
            if not dec.reserved:
                continue
            self.counters["recv_frame_timeouts"] += 1
            trim_soon()
            if dec.buffered >= HEADER_SIZE:
                frame = dec.refuse_pending(STALLED)
                self.frames.release(dec.released)
                dec.released = 0
                reader.on_frames([frame], [0])
            else:
                self.frames.release(dec.reserved)
                dec.reserved = 0
        if self._watched:
            self._timer = loop.call_later(timeout / 4, self._check)


class _PartialReader:
    """A stream reader as :meth:`ReceiveLimits.watch` sees it."""

    __slots__ = ("dec", "on_frames", "since", "watched")

    def __init__(self, dec: FrameDecoder, on_frames: Callable[[list[Frame], list[int]], None]) -> None:
        self.dec = dec
        self.on_frames = on_frames
        self.since = 0.0  # when its frame last made progress (loop time)
        self.watched = False


DEFAULT_MAX_DECODED_BYTES = 8 * 1024 * 1024
"""``max_decoded_bytes`` when not set (or ``2 * max_message_size`` if that is larger)."""

PARTIAL_FRAME_SLACK = 256 * 1024
"""Room that ``max_partial_frame_bytes`` leaves by default beside one frame of ``max_message_size``:
the tails of small frames on other streams fit there while a large frame is in progress."""


def receive_limit_defaults(
    max_message_size: int,
    max_decoded_bytes: int | None,
    max_partial_frame_bytes: int | None,
    partial_frame_timeout: float | None,
) -> tuple[int, int]:
    """The effective ``(max_decoded_bytes, max_partial_frame_bytes)`` of a server or client config
    (None: :data:`DEFAULT_MAX_DECODED_BYTES` or ``2 * max_message_size`` if larger, and
    ``max_message_size + 9 + 256 KiB``); raises :class:`~kcprpc.errors.UsageError` for values that could not admit one
    message of ``max_message_size``."""
    decoded = (
        max(DEFAULT_MAX_DECODED_BYTES, 2 * max_message_size)
        if max_decoded_bytes is None
        else max_decoded_bytes
    )
    partial = (
        max_message_size + HEADER_SIZE + PARTIAL_FRAME_SLACK
        if max_partial_frame_bytes is None
        else max_partial_frame_bytes
    )
    if decoded < max_message_size:
        raise UsageError("max_decoded_bytes must be at least max_message_size")
    if partial < max_message_size + HEADER_SIZE:
        raise UsageError("max_partial_frame_bytes must be at least max_message_size + 9 (one whole frame)")
    if partial_frame_timeout is not None and not partial_frame_timeout > 0:
        raise UsageError("partial_frame_timeout must be positive (or None)")
    return decoded, partial


RECEIVE_COUNTERS = (
    "recv_decode_scanned",
    "recv_decode_refused",
    "recv_frame_waits",
    "recv_frame_refused",
    "recv_frame_timeouts",
)
"""The counters of :class:`ReceiveLimits` (in ``Server.stats`` and ``Client.counters``)."""

READ_SIZE = 65536
"""Bytes asked from a stream per read (a quarter of it after a batch of many frames: small
messages are then decoded, and charged, a few hundred at a time, not a thousand)."""


def _settle(dec: FrameDecoder, budget: FrameBudget) -> None:
    """Act on what the decoder's last feed flagged: give back the reservations of completed frames,
    trim after a refused body."""
    dec.attention = False
    if dec.released:
        budget.release(dec.released)
        dec.released = 0
    if dec.refused:
        dec.refused = False
        trim_soon()


async def read_frames(
    stream: ByteStream,
    on_frames: Callable[[list[Frame], list[int]], None],
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    pause: Callable[[], Awaitable[None] | None] | None = None,
    limits: ReceiveLimits | None = None,
    control: Callable[[], bool] | None = None,
) -> None:
    """Read ``stream`` until EOF, handing each batch of decoded frames to ``on_frames(frames,
    costs)``: ``costs[i]`` is what ``frames[i]``'s body was charged to ``limits.decode``; the
    callee zeroes the entries it keeps (and releases them later), the rest is released after it
    returns.

    After each batch ``pause()`` may return an awaitable: reading stops until it completes.

    With ``limits``, every byte taken from the stream beyond a frame header is covered by a
    reservation in ``limits.frames`` (so the mux grants the peer more window only for bytes the
    RPC layer may hold): a stream whose next frame does not fit gives back what it read of it,
    takes a parking slot and stops reading until the frame fits; with no slot free, the frame is
    refused (``(type, call_id, BUFFER_REFUSED)``, the rest of it skipped). The stream for which
    ``control()`` is true never waits. A reserved frame that gets no byte for
    ``limits.partial_frame_timeout`` seconds is dropped (``STALLED``).
    """
    dec = FrameDecoder(max_message_size, limits.decode if limits is not None else None)
    read = stream.read
    feed = dec.feed
    if limits is None:
        while True:
            data = await read(READ_SIZE)
            if not data:
                return
            frames = feed(data)
            if frames:
                on_frames(frames, dec.costs)
                if pause is not None:
                    w = pause()
                    if w is not None:
                        await w
    decode = limits.decode
    budget = limits.frames
    counters = limits.counters
    unread: Callable[[bytes], None] | None = getattr(stream, "unread", None)
    me = _PartialReader(dec, on_frames)  # watched while a reserved frame is in progress
    now = asyncio.get_running_loop().time
    size = READ_SIZE
    try:
        while True:
            data = await read(size)
            if not data:
                return
            frames = feed(data)
            if frames:
                size = READ_SIZE if len(frames) < 64 else READ_SIZE // 4
                costs = dec.costs
                on_frames(frames, costs)
                if dec.charged:
                    rest = sum(costs)  # what the callee did not keep
                    if rest:
                        decode.release(rest)
                if pause is not None:
                    w = pause()
                    if w is not None:
                        if dec.attention:
                            _settle(dec, budget)
                        if unread is not None and dec.buffered:
                            # a paused stream holds its data in the mux only (one window at most)
                            unread(dec.take_tail())
                            if dec.reserved:
                                budget.release(dec.reserved)
                                dec.reserved = 0
                        if me.watched:
                            limits.unwatch(me)
                        await w
                        continue
            if not dec.attention:  # the hot path: every frame complete, nothing reserved
                if me.watched:
                    limits.unwatch(me)
                continue
            _settle(dec, budget)
            if not dec.reserved:
                need = dec.partial
                if not need:
                    if me.watched:
                        limits.unwatch(me)
                    continue
                if budget.try_reserve(need):
                    dec.reserved = need
                elif control is not None and control():
                    budget.force(need)
                    dec.reserved = need
                elif unread is not None and limits.parking.try_park():
                    counters["recv_frame_waits"] += 1
                    unread(dec.take_tail())
                    if me.watched:
                        limits.unwatch(me)
                    try:
                        await budget.reserve(need)
                    finally:
                        limits.parking.unpark()
                    dec.reserved = need  # for the frame at the head of what the stream reads next
                else:
                    counters["recv_frame_refused"] += 1
                    trim_soon()  # what the peer sends of it is read and dropped: a burst of garbage
                    on_frames([dec.refuse_pending(BUFFER_REFUSED)], [0])
                    _settle(dec, budget)
                    if me.watched:
                        limits.unwatch(me)
                    continue
            me.since = now()  # the reserved frame made progress (or just began)
            if not me.watched:
                limits.watch(me)
    finally:
        if me.watched:
            limits.unwatch(me)
        if dec.reserved:
            budget.release(dec.reserved)
            dec.reserved = 0
