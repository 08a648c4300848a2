"""The pipe a web connection's mux runs on: :class:`WebPipe`.

A :class:`WebPipe` is both the :class:`~kcprpc.mux.session.ByteTransport` of a
:class:`~kcprpc.mux.MuxSession` and the :class:`~kcprpc.net.DatagramPort` beside it, so that
``MuxConnection(MuxSession(pipe, ...), pipe, ...)`` is a web connection (docs/wire-format/web.md).
It does no I/O of its own: whoever reads the network feeds it (:meth:`WebPipe.feed_stream`,
:meth:`WebPipe.feed_datagram`, :meth:`WebPipe.feed_eof`), and what the mux writes goes out
through the ``send_stream`` and ``send_datagram`` callables it is given (a WebSocket's
``STREAM``/``DATAGRAM`` messages, or a WebTransport stream's raw bytes and its datagrams), one
at a time, from the pipe's sender task.

Bounds: received stream bytes wait in a buffer of at most ``max_receive_buffer`` bytes (the
reader awaits :meth:`WebPipe.wait_room` before it takes the next message off the network, so the
peer is held back by TCP/QUIC flow control; a feed past the bound is refused and counted);
received datagrams wait in a queue of at most ``max_datagram_queue`` datagrams and
``max_datagram_queue_bytes`` bytes (more are dropped and counted; they count in
:meth:`WebPipe.receive_held`, so in the server's process-wide ``max_receive_total`` too). Sent
stream bytes wait up to ``send_high_water`` (:meth:`WebPipe.drain` waits above it); sent
datagrams are dropped and counted while ``max_datagram_backlog`` bytes of them wait.
:meth:`WebPipe.send_backlog` and :meth:`WebPipe.send_acked` give the mux (and through it the
server's slow-consumer checks, docs/rpc.md "Clients that stop reading") what the peer has not
taken yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from kcp.logutil import RateLimitedLog
from kcprpc.errors import UsageError

__all__ = ["PIPE_COUNTERS", "SendFn", "WebPipe"]

log = logging.getLogger("kcprpc.web")
_rlog = RateLimitedLog(log)

SendFn = Callable[[bytes], object]
"""Sends one chunk: sync, or returning an awaitable the pipe awaits before it sends the next."""

PIPE_COUNTERS = (
    "stream_bytes_in",
    "stream_bytes_out",
    "datagrams_in",
    "datagrams_out",
    "datagrams_in_dropped",  # received while max_datagram_queue (or _bytes) waited unread
    "datagrams_out_dropped",  # sent while max_datagram_backlog bytes of datagrams waited (or too big)
    "receive_overflows",  # stream bytes fed past max_receive_buffer (the peer ignored flow control)
    "send_errors",  # the send callable raised (the connection is over)
)
"""The counters of one pipe (:attr:`WebPipe.counters`)."""


MAX_RECEIVE_BUFFER = 4 * 1024 * 1024
"""The default bound of the stream bytes a pipe holds for its reader."""


class WebPipe:
    """A byte pipe plus a datagram port for one web connection (see the module).

    ``send_stream(chunk)`` sends a chunk of the mux byte stream (at most ``chunk_size`` bytes);
    ``send_datagram(data)`` one datagram; ``transport_backlog()``, when given, the bytes the
    network transport below still holds (a WebSocket's write buffer), counted as not taken by
    the peer. ``on_close(code, reason)`` is called once when the pipe ends (``code`` None for an
    ordinary close, else the code :meth:`abort` was given; after the queued data was sent, or
    at once for an abort); the transport closes there.
    """

    def __init__(
        self,
        send_stream: SendFn,
        send_datagram: SendFn | None = None,
        *,
        transport_backlog: Callable[[], int] | None = None,
        on_close: Callable[[int | None, str], Awaitable[None] | None] | None = None,
        max_receive_buffer: int = MAX_RECEIVE_BUFFER,
        max_datagram_queue: int = 256,
        max_datagram_queue_bytes: int = 256 * 1024,
        send_high_water: int = 256 * 1024,
        max_datagram_backlog: int = 256 * 1024,
        max_datagram_size: int = 65535,
        chunk_size: int = 16 * 1024,
        close_timeout: float = 2.0,
    ) -> None:
        for name, v in (
            ("max_receive_buffer", max_receive_buffer),
            ("max_datagram_queue", max_datagram_queue),
            ("max_datagram_queue_bytes", max_datagram_queue_bytes),
            ("send_high_water", send_high_water),
            ("max_datagram_backlog", max_datagram_backlog),
            ("max_datagram_size", max_datagram_size),
            ("chunk_size", chunk_size),
        ):
            if type(v) is not int or v <= 0:
                raise UsageError(f"WebPipe: {name} must be a positive int, not {v!r}")
        if close_timeout <= 0:
            raise UsageError("WebPipe: close_timeout must be positive")
        self._loop = asyncio.get_running_loop()
        self._send_stream = send_stream
        self._send_dgram = send_datagram
        self._transport_backlog = transport_backlog
        self._on_close = on_close
        self.max_receive_buffer = max_receive_buffer
        self.max_datagram_queue = max_datagram_queue
        self.max_datagram_queue_bytes = max_datagram_queue_bytes
        self.send_high_water = send_high_water
        self.max_datagram_backlog = max_datagram_backlog
        self.max_datagram_size = max_datagram_size
        self.chunk_size = chunk_size
        self.close_timeout = close_timeout
        self.counters: dict[str, int] = dict.fromkeys(PIPE_COUNTERS, 0)
        """Counters (:data:`PIPE_COUNTERS`)."""
        # receive side
        self._rbuf: deque[bytes] = deque()
        self._rbytes = 0
        self._eof = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._room_waiter: asyncio.Future[None] | None = None
        self._room_need = 0
        self._dgrams: deque[bytes] = deque()
        self._dgram_bytes = 0
        self._dgram_waiter: asyncio.Future[None] | None = None
        # send side
        self._out: deque[bytes] = deque()
        self._out_bytes = 0  # queued and being sent
        self._out_dgrams: deque[bytes] = deque()
        self._out_dgram_bytes = 0
        self._sent = 0  # stream and datagram bytes the send callables took
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._send_ev = asyncio.Event()
        self._closing = False  # close() or abort(): no more writes
        self._force: asyncio.TimerHandle | None = None  # close()'s deadline, cancelled when the pipe ends
        self._dead = False  # the pipe is over: reads end, the sender stops
        self._close_code: int | None = None
        self._close_reason = ""
        self._closed = self._loop.create_future()
        self._sender = self._loop.create_task(self._send_loop(), name="web-pipe-sender")

    # -- receive side: fed by the transport's reader ---------------------------------------------

    @property
    def buffered(self) -> int:
        """Stream bytes received and not read by the mux yet."""
        return self._rbytes

    def feed_stream(self, data: bytes) -> bool:
        """Stream bytes from the peer. False (nothing taken, ``receive_overflows`` counted) when
        they would pass ``max_receive_buffer``: the peer sent past the flow control, the caller
        ends the connection. After the pipe ended: ignored (True)."""
        if self._dead or self._eof or not data:
            return True
        if self._rbytes + len(data) > self.max_receive_buffer:
            self.counters["receive_overflows"] += 1
            return False
        self._rbuf.append(bytes(data))
        self._rbytes += len(data)
        self.counters["stream_bytes_in"] += len(data)
        _wake(self._read_waiter)
        return True

    async def wait_room(self, need: int) -> None:
        """Wait until ``need`` more stream bytes fit the receive buffer (or the pipe ended): the
        reader calls it before it takes the next message (at most ``need`` bytes) off the network."""
        need = min(need, self.max_receive_buffer)
        while not self._dead and self._rbytes + need > self.max_receive_buffer:
            fut = self._loop.create_future()
            self._room_waiter, self._room_need = fut, need
            try:
                await fut
            finally:
                self._room_waiter = None

    def feed_datagram(self, data: bytes) -> bool:
        """One datagram from the peer; False (dropped and counted) when ``max_datagram_queue``
        datagrams or ``max_datagram_queue_bytes`` bytes wait unread, or it is over
        ``max_datagram_size``. (A WebSocket's datagrams may be 16 KiB: 256 of them held 4 MiB a
        connection, which no process-wide bound counted.)"""
        if self._dead:
            return False
        n = len(data)
        if (
            len(self._dgrams) >= self.max_datagram_queue
            or n > self.max_datagram_size
            or self._dgram_bytes + n > self.max_datagram_queue_bytes
        ):
            self.counters["datagrams_in_dropped"] += 1
            return False
        self._dgram_bytes += n
        self._dgrams.append(bytes(data))
        self.counters["datagrams_in"] += 1
        _wake(self._dgram_waiter)
        return True

    def feed_eof(self) -> None:
        """The peer's stream ended (the connection closed): the mux reads what is buffered, then EOF."""
        self._eof = True
        _wake(self._read_waiter)
        _wake(self._dgram_waiter)

    # -- ByteTransport: what the mux reads and writes ----------------------------------------------

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` buffered stream bytes (all when -1), waiting for at least one; ``b""`` at EOF."""
        if n == 0:
            return b""
        while not self._rbuf:
            if self._eof or self._dead:
                return b""
            fut = self._loop.create_future()
            self._read_waiter = fut
            try:
                await fut
            finally:
                self._read_waiter = None
        parts: list[bytes] = []
        got = 0
        buf = self._rbuf
        while buf and (n < 0 or got < n):
            chunk = buf.popleft()
            if n >= 0 and got + len(chunk) > n:
                keep = n - got
                buf.appendleft(chunk[keep:])
                chunk = chunk[:keep]
            parts.append(chunk)
            got += len(chunk)
        self._rbytes -= got
        w = self._room_waiter
        if w is not None and self._rbytes + self._room_need <= self.max_receive_buffer:
            _wake(w)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue stream bytes for the peer (raises ``ConnectionError`` once closing)."""
        if self._closing:
            raise ConnectionError("web pipe closed")
        if not len(data):
            return
        self._out.append(bytes(data))
        self._out_bytes += len(data)
        self._send_ev.set()

    def write_ready(self) -> bool:
        """True while fewer than ``send_high_water`` bytes wait (the mux may write without waiting)."""
        return not self._closing and self._out_bytes < self.send_high_water

    async def drain(self) -> None:
        """Wait while ``send_high_water`` bytes or more wait to be sent; ``ConnectionError`` once ended."""
        while True:
            if self._dead:
                raise ConnectionError("web pipe closed")
            if self._out_bytes < self.send_high_water:
                return
            fut = self._loop.create_future()
            self._drain_waiters.append(fut)
            try:
                await fut
            finally:
                with contextlib.suppress(ValueError):
                    self._drain_waiters.remove(fut)

    def close(self) -> None:
        """Close: what is queued is still sent (within ``close_timeout``), then ``on_close``."""
        if self._closing:
            return
        self._closing = True
        if self._eof:  # the transport is gone: nothing more can be sent
            self.abort()
            return
        self._send_ev.set()
        self._force = self._loop.call_later(self.close_timeout, self._force_end)

    def abort(self, code: int | None = None, reason: str = "") -> None:
        """Close at once, dropping what waits to be sent; ``on_close(code, reason)``."""
        self._closing = True
        if self._close_code is None:
            self._close_code, self._close_reason = code, reason
        self._out.clear()
        self._out_bytes = 0
        self._out_dgrams.clear()
        self._out_dgram_bytes = 0
        self._end()

    async def wait_closed(self) -> None:
        """Wait until the pipe ended and ``on_close`` ran."""
        await asyncio.shield(self._closed)

    @property
    def closed(self) -> bool:
        """True once the pipe ended (closed, aborted, or its transport lost)."""
        return self._dead

    # -- DatagramPort ------------------------------------------------------------------------------

    def send_datagram(self, data: bytes) -> None:
        """Queue one datagram (dropped and counted behind ``max_datagram_backlog`` bytes of them,
        when over ``max_datagram_size``, or without a datagram path)."""
        if self._closing:
            raise ConnectionError("web pipe closed")
        if (
            self._send_dgram is None
            or len(data) > self.max_datagram_size
            or self._out_dgram_bytes + len(data) > self.max_datagram_backlog
        ):
            self.counters["datagrams_out_dropped"] += 1
            return
        self._out_dgrams.append(bytes(data))
        self._out_dgram_bytes += len(data)
        self._send_ev.set()

    async def recv_datagram(self) -> bytes:
        """The next datagram from the peer; ``ConnectionError`` once the pipe ended."""
        while not self._dgrams:
            if self._dead or self._eof:
                raise ConnectionError("web pipe closed")
            fut = self._loop.create_future()
            self._dgram_waiter = fut
            try:
                await fut
            finally:
                self._dgram_waiter = None
        data = self._dgrams.popleft()
        self._dgram_bytes -= len(data)
        return data

    # -- the send bounds (the mux reads them: send_backlog / send_acked) ---------------------------

    def send_backlog(self) -> int:
        """Bytes not taken by the peer yet: queued here (stream bytes and datagrams, the chunk
        being sent included) plus what the transport below still holds."""
        tb = self._transport_backlog
        held = tb() if tb is not None else 0
        return self._out_bytes + self._out_dgram_bytes + held

    def receive_held(self) -> int:
        """Bytes received and not read yet: stream bytes (at most ``max_receive_buffer``) and
        datagrams (at most ``max_datagram_queue_bytes``)."""
        return self._rbytes + self._dgram_bytes

    def send_acked(self) -> int:
        """A count that grows only as the peer takes data: bytes the send callables took, less
        what the transport below still holds."""
        tb = self._transport_backlog
        return self._sent - (tb() if tb is not None else 0)

    send_progress = send_acked

    # -- internals ---------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        ev = self._send_ev
        try:
            while True:
                await ev.wait()
                ev.clear()
                while self._out_dgrams or self._out:
                    if self._out_dgrams:  # datagrams first: they are the latency-sensitive ones
                        d = self._out_dgrams.popleft()
                        assert self._send_dgram is not None
                        try:
                            await _maybe_await(self._send_dgram(d))
                        finally:
                            self._out_dgram_bytes -= len(d)
                        self._sent += len(d)
                        self.counters["datagrams_out"] += 1
                        continue
                    chunk = self._take_chunk()
                    try:
                        await _maybe_await(self._send_stream(chunk))
                    finally:
                        self._out_bytes -= len(chunk)
                    self._sent += len(chunk)
                    self.counters["stream_bytes_out"] += len(chunk)
                    self._wake_drain()
                if self._closing:
                    break
        except asyncio.CancelledError:
            pass
        except Exception as e:  # the transport failed: the connection is over
            self.counters["send_errors"] += 1
            _rlog.info("send failed", "web connection: sending failed (%s): closing", e)
        self._end()

    def _take_chunk(self) -> bytes:
        """Up to ``chunk_size`` bytes off the front of the send queue (small writes coalesced)."""
        out = self._out
        first = out.popleft()
        limit = self.chunk_size
        if len(first) > limit:
            out.appendleft(first[limit:])
            return first[:limit]
        if not out or len(first) + len(out[0]) > limit:
            return first
        parts, size = [first], len(first)
        while out and size + len(out[0]) <= limit:
            c = out.popleft()
            parts.append(c)
            size += len(c)
        return b"".join(parts)

    def _wake_drain(self) -> None:
        if self._out_bytes < self.send_high_water:
            for w in self._drain_waiters:
                _wake(w)

    def _force_end(self) -> None:
        if not self._dead:
            self._out.clear()
            self._out_bytes = 0
            self._end()

    def _end(self) -> None:
        """The pipe is over: wake everyone, stop the sender, call ``on_close`` (once)."""
        if self._dead:
            return
        self._dead = True
        self._closing = True
        if self._force is not None:  # (its handle would keep this pipe alive until it fired)
            self._force.cancel()
            self._force = None
        for w in (self._read_waiter, self._dgram_waiter, self._room_waiter, *self._drain_waiters):
            _wake(w)
        if self._sender is not asyncio.current_task() and not self._sender.done():
            self._sender.cancel()
        self._loop.create_task(self._finish(), name="web-pipe-close")

    async def _finish(self) -> None:
        try:
            if self._on_close is not None:
                await _maybe_await(self._on_close(self._close_code, self._close_reason))
        except Exception as e:
            _rlog.info("close failed", "web connection: closing the transport failed (%s)", e)
        finally:
            if not self._closed.done():
                self._closed.set_result(None)


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


async def _maybe_await(r: Any) -> None:
    if inspect.isawaitable(r):
        await r
