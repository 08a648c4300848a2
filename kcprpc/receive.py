"""Frames in: the per-connection receive budgets (:class:`FrameBudget`, :class:`ReceiveLimits`) and
:func:`read_frames`, the loop that reads a stream, feeds the frame decoder and pauses the stream
while its frames do not fit (docs/rpc.md, "Flow control and memory per connection")."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from kcp.logutil import RateLimitedLog
from kcprpc.codec import (
    BUFFER_REFUSED,
    DEFAULT_MAX_MESSAGE_SIZE,
    HEADER_SIZE,
    STALLED,
    DecodeBudget,
    Frame,
    FrameDecoder,
    decode_datagram,
)
from kcprpc.heap import TRIM_AFTER, trim_soon, trimmer
from kcprpc.inbox import ParkingLot
from kcprpc.transport import ByteStream, Connection

_bug_reports = RateLimitedLog(logging.getLogger("kcprpc.receive"), burst=3, interval=60.0)


class ReceiveTotal:
    """The bytes that the :class:`FrameBudget` of every connection of a server reserve together (one
    process), and the process-wide bound on what its clients make it hold on the receive side.

    Each budget reports its changes (:meth:`add`); the budgets that hold something are
    :attr:`holders`, so that the server looks only at those when it sheds. Past ``limit``,
    ``over()`` is called (the server sheds the largest holders soon: docs/rpc.md, "Flow control and
    memory per connection"). A connection whose transport holds more and more out of order (what
    no frame reserves) reports that too (:meth:`grew`): it joins :attr:`grown`, and the server
    counts again soon."""

    __slots__ = ("grown", "holders", "limit", "over", "peak", "reserved")

    def __init__(self, limit: int, over: Callable[[], None]) -> None:
        self.limit = limit
        self.over = over
        self.reserved = 0
        self.peak = 0
        self.holders: set[FrameBudget] = set()
        self.grown: set[object] = set()  # owners whose transport reported growth (pruned on a count)

    def grew(self, owner: object) -> None:
        """``owner``'s connection holds more out of order than when it last reported: count soon."""
        self.grown.add(owner)
        self.over()

    def add(self, budget: FrameBudget, n: int) -> None:
        """``budget`` reserved ``n`` more bytes (less, when negative)."""
        self.reserved += n
        if budget.used > 0:
            self.holders.add(budget)
        else:
            self.holders.discard(budget)
        if n > 0:
            if self.reserved > self.peak:
                self.peak = self.reserved
            if self.reserved > self.limit:
                self.over()


class FrameBudget:
    """The bytes of partial frames that the stream readers of one connection may hold together.

    A reader that has the start of a frame (its 9-byte header gives the size) reserves the whole
    frame before it holds more of it than the header; it gives the reservation back when the frame
    is complete. A reservation is granted at once while it fits and nobody waits, otherwise in FIFO
    order as others give theirs back. Since no waiting reader holds any of the budget (it gives the
    bytes it read back to its stream first), and ``limit`` fits the largest frame, every
    reservation is granted eventually while the peer completes its frames. The control stream never
    waits: :meth:`force` charges its frame even past the limit (at most one frame at a time).

    With a ``total`` (a server's :class:`ReceiveTotal`), every change is reported to it too, until
    :meth:`detach`; ``owner`` is what the total's holder stands for (the server's session)."""

    __slots__ = ("_waiters", "limit", "owner", "peak", "total", "used")

    def __init__(self, limit: int, total: ReceiveTotal | None = None, owner: object = None) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0  # most reserved at once
        self.total = total
        self.owner = owner
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _take(self, n: int) -> None:
        self.used += n
        if self.used > self.peak:
            self.peak = self.used
        if self.total is not None:
            self.total.add(self, n)

    def try_reserve(self, n: int) -> bool:
        """Reserve ``n`` bytes if that needs no wait."""
        if not self._waiters and self.used + n <= self.limit:
            self._take(n)
            return True
        return False

    def force(self, n: int) -> None:
        """Reserve ``n`` bytes now, past the limit if need be (the control stream's frame)."""
        self._take(n)

    def detach(self) -> None:
        """The connection ended: what it still reserves leaves the process total, later changes stay
        local (its readers may still give back reservations as they stop), and ``owner`` is
        forgotten."""
        self.owner = None  # (the session that owns this budget: no cycle left once it ended)
        total = self.total
        if total is not None:
            self.total = None
            total.reserved -= self.used
            total.holders.discard(self)

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
        if self.total is not None:
            self.total.add(self, -n)
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
            self._take(n)
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
      dropped (None: forever);
    * ``total``: a server's :class:`ReceiveTotal`, which ``frames`` reports to (its holder stands
      for ``owner``).

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
        total: ReceiveTotal | None = None,
        owner: object = None,
    ) -> None:
        for k in RECEIVE_COUNTERS:
            counters.setdefault(k, 0)
        self.counters = counters
        self.decode = DecodeBudget(max_decoded_bytes, held_types, counters)
        self.frames = FrameBudget(max_partial_frame_bytes, total, owner)
        self.parking = parking
        self.partial_frame_timeout = partial_frame_timeout
        self._watched: set[_PartialReader] = set()
        self._timer: asyncio.TimerHandle | None = None

    def close(self) -> None:
        """The connection ended: if it ever held large frames, give the freed memory back to the OS
        a little later (:class:`_Trimmer`). Its reservations leave the process total."""
        self.frames.detach()
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

    A stream that can call its reader back (a mux stream's ``set_reader``) is read in the loop
    turn its data arrives, ``on_frames`` included (:class:`_Reader`); this coroutine then only
    waits out what makes the reading stop (a pause, a reservation), and ends as above.
    """
    r = _Reader(stream, on_frames, max_message_size, pause, limits, control)
    try:
        set_reader = getattr(stream, "set_reader", None)
        if callable(set_reader):
            await r.run_direct(set_reader)
        read = stream.read
        while True:
            data = await read(r.size)
            if not data:
                return
            w = r.step(data)
            if w is not None:
                await w
    finally:
        r.close()


_LEAVE: Any = object()  # the direct reader's hand-over: go on with stream.read() (EOF, an error)


class _Reader:
    """:func:`read_frames`'s state between reads, and one read's handling (:meth:`step`), so that
    either a task that awaits ``stream.read()`` or the stream's own callback (:meth:`run_direct`)
    can drive it."""

    __slots__ = (
        "busy",
        "control",
        "dec",
        "fut",
        "limits",
        "me",
        "now",
        "on_frames",
        "pause",
        "size",
        "stream",
        "unread",
    )

    def __init__(
        self,
        stream: ByteStream,
        on_frames: Callable[[list[Frame], list[int]], None],
        max_message_size: int,
        pause: Callable[[], Awaitable[None] | None] | None,
        limits: ReceiveLimits | None,
        control: Callable[[], bool] | None,
    ) -> None:
        self.stream = stream
        self.on_frames = on_frames
        self.pause = pause
        self.limits = limits
        self.control = control
        self.dec = FrameDecoder(max_message_size, limits.decode if limits is not None else None)
        self.unread: Callable[[bytes], None] | None = getattr(stream, "unread", None)
        self.me = _PartialReader(self.dec, on_frames)  # watched while a reserved frame is in progress
        self.now = asyncio.get_running_loop().time
        self.size = READ_SIZE
        self.busy = False  # direct reading: a drain runs, or the task waits out what step returned
        self.fut: asyncio.Future[Any] | None = None

    def step(self, data: bytes) -> Awaitable[None] | None:
        """Decode ``data`` and hand its frames out; what to wait for before the next read, if
        anything (a pause, or a reservation that must wait)."""
        dec = self.dec
        frames = dec.feed(data)
        limits = self.limits
        if limits is None:
            if frames:
                self.on_frames(frames, dec.costs)
                if self.pause is not None:
                    return self.pause()
            return None
        budget = limits.frames
        me = self.me
        unread = self.unread
        if frames:
            self.size = READ_SIZE if len(frames) < 64 else READ_SIZE // 4
            costs = dec.costs
            self.on_frames(frames, costs)
            if dec.charged:
                rest = sum(costs)  # what the callee did not keep
                if rest:
                    limits.decode.release(rest)
            if self.pause is not None:
                w = self.pause()
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
                    return w
        if not dec.attention:  # the hot path: every frame complete, nothing reserved
            if me.watched:
                limits.unwatch(me)
            return None
        _settle(dec, budget)
        if not dec.reserved:
            need = dec.partial
            if not need:
                if me.watched:
                    limits.unwatch(me)
                return None
            if budget.try_reserve(need):
                dec.reserved = need
            elif self.control is not None and self.control():
                budget.force(need)
                dec.reserved = need
            elif unread is not None and limits.parking.try_park():
                limits.counters["recv_frame_waits"] += 1
                unread(dec.take_tail())
                if me.watched:
                    limits.unwatch(me)
                return self._reserve(need)
            else:
                limits.counters["recv_frame_refused"] += 1
                trim_soon()  # what the peer sends of it is read and dropped: a burst of garbage
                self.on_frames([dec.refuse_pending(BUFFER_REFUSED)], [0])
                _settle(dec, budget)
                if me.watched:
                    limits.unwatch(me)
                return None
        me.since = self.now()  # the reserved frame made progress (or just began)
        if not me.watched:
            limits.watch(me)
        return None

    async def _reserve(self, need: int) -> None:
        limits = self.limits
        assert limits is not None
        try:
            await limits.frames.reserve(need)
        finally:
            limits.parking.unpark()
        self.dec.reserved = need  # for the frame at the head of what the stream reads next

    def close(self) -> None:
        limits = self.limits
        if limits is None:
            return
        if self.me.watched:
            limits.unwatch(self.me)
        dec = self.dec
        if dec.reserved:
            limits.frames.release(dec.reserved)
            dec.reserved = 0

    async def run_direct(self, set_reader: Callable[[Callable[[], None] | None], None]) -> None:
        """Read in the stream's callback until EOF or an error (then :func:`read_frames` goes on
        with ``stream.read()``, which reports them); the task only waits out what :meth:`step`
        returns. The callback runs in a copy of this task's context variables."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()

        def on_readable() -> None:
            if not self.busy:  # else a drain runs (it reads on) or the task waits (it drains after)
                context.run(self._drain)

        set_reader(on_readable)
        try:
            while True:
                fut = self.fut = loop.create_future()
                self.busy = False
                self._drain()
                got = await fut
                if got is _LEAVE:
                    return
                if type(got) is _Raised:
                    raise got.exc
                await got
        finally:
            self.fut = None
            set_reader(None)

    def _drain(self) -> None:
        """Take and handle what the stream holds; hand the task what must be waited for."""
        self.busy = True
        read_nowait = self.stream.read_nowait  # type: ignore[attr-defined]
        while True:
            try:
                data = read_nowait(self.size)
            except Exception:
                self._hand_over(_LEAVE)  # the task's read() raises it again, as without a callback
                return
            if data is None:
                self.busy = False
                return
            if not data:
                self._hand_over(_LEAVE)
                return
            try:
                w = self.step(data)
            except BaseException as exc:
                self._hand_over(_Raised(exc))
                return
            if w is not None:
                self._hand_over(w)
                return

    def _hand_over(self, what: Any) -> None:
        fut = self.fut
        if fut is not None and not fut.done():
            fut.set_result(what)


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def read_datagrams(
    conn: Connection, on_frame: Callable[[int, int, Any], None], on_bad: Callable[[], None]
) -> None:
    """Read a connection's OOB datagrams until it ends: each holds one frame, given to
    ``on_frame(ftype, call_id, body)``; one that does not decode is counted by ``on_bad()``.

    A connection that can hand its datagrams over in the turn that read them
    (``set_datagram_reader``, a KCP connection) does so; this coroutine then only waits for the
    connection's end. An exception ``on_frame`` raises is reported (a few times a minute) and the
    reading goes on, on either path."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()

    def decoded(data: bytes) -> Frame | None:
        try:
            return decode_datagram(data)
        except Exception:
            on_bad()
            return None

    def take(data: bytes) -> None:
        frame = decoded(data)
        if frame is None:
            return
        try:
            context.run(on_frame, *frame)
        except Exception as exc:  # the input path must go on: report, a few times
            _bug_reports.report_exception(
                loop, "datagram frame handling failed", "datagram frame handling failed", exc
            )

    setter: Callable[[Callable[[bytes], None] | None], bool] | None = getattr(
        conn, "set_datagram_reader", None
    )
    direct = setter is not None and setter(take)
    try:
        while True:
            try:
                data = await conn.recv_datagram()
            except (ConnectionError, OSError, EOFError):
                return
            take(data)  # (guarded as the direct path is: one bad frame must not end the reading)
    finally:
        if direct and setter is not None:
            setter(None)
