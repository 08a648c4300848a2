"""An in-memory :class:`~kcprpc.transport.Connection` pair, for tests and for :mod:`kcprpc.testing`."""

from __future__ import annotations

import asyncio
import os
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from kcprpc.config import RPC_MUX_CONFIG
from kcprpc.errors import UsageError
from kcprpc.mux import MuxConfig
from kcprpc.net import MuxConnection
from kcprpc.transport import NoTransportKeepalive, ReceiveHeld, SendBacklog
from kcprpc.transport_events import TransportEvent


class _Pipe:
    __slots__ = ("buf", "eof", "waiter")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.eof = False
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)
        self.waiter = None


class MemoryStream:
    """One end of an in-memory byte stream."""

    def __init__(self, rx: _Pipe, tx: _Pipe, owner: MemoryConnection | None = None) -> None:
        self._owner = owner
        self._rx = rx
        self._tx = tx
        self._closed_tx = False

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes; ``b""`` at EOF."""
        rx = self._rx
        while not rx.buf:
            if rx.eof:
                return b""
            rx.waiter = asyncio.get_running_loop().create_future()
            await rx.waiter
        if n < 0 or n >= len(rx.buf):
            data = bytes(rx.buf)
            rx.buf.clear()
        else:
            data = bytes(rx.buf[:n])
            del rx.buf[:n]
        return data

    def unread(self, data: bytes) -> None:
        """Put bytes just read back at the front of the stream (they are read again next)."""
        if data:
            self._rx.buf[:0] = data

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes or ``asyncio.IncompleteReadError``."""
        out = bytearray()
        while len(out) < n:
            chunk = await self.read(n - len(out))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(out), n)
            out += chunk
        return bytes(out)

    def write(self, data: bytes) -> None:
        """Append to the peer's receive buffer."""
        if self._closed_tx:
            raise ConnectionError("stream closed for writing")
        if self._owner is not None and self._owner.blackholed:
            return
        self._tx.buf += data
        self._tx.wake()

    async def drain(self) -> None:
        """Yield once (the memory pipe has no window)."""
        await asyncio.sleep(0)

    def close(self) -> None:
        """Half-close (EOF to the peer)."""
        if not self._closed_tx:
            self._closed_tx = True
            self._tx.eof = True
            self._tx.wake()

    def abort(self) -> None:
        """Both directions closed (connection gone)."""
        self.close()
        self._rx.eof = True
        self._rx.wake()

    async def wait_closed(self) -> None:
        """Nothing to wait for in memory."""


class MemoryConnection(NoTransportKeepalive):
    """One side of an in-memory connection; build pairs with :func:`connection_pair`."""

    def __init__(self, *, max_datagram_size: int = 1200, loss: float = 0.0, seed: int = 0) -> None:
        self.peer: MemoryConnection | None = None
        self._accept: deque[MemoryStream] = deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        self._dgrams: deque[bytes] = deque()
        self._dgram_waiter: asyncio.Future[None] | None = None
        self._streams: list[MemoryStream] = []
        self._closed = False
        self.blackholed = False
        self._max_dgram = max_datagram_size
        self.loss = loss
        self._rng = random.Random(seed)
        self.counters = {"streams_opened": 0, "datagrams_sent": 0, "datagrams_dropped": 0}
        self.binding: bytes | None = None  # set per pair by connection_pair

    @staticmethod
    def _wake(fut: asyncio.Future[None] | None) -> None:
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def open_stream(self) -> MemoryStream:
        """Open a stream; the peer gets the other end from :meth:`accept_stream`."""
        peer = self.peer
        if self._closed or peer is None or peer._closed:
            raise ConnectionError("connection closed")
        a, b = _Pipe(), _Pipe()
        mine, theirs = MemoryStream(a, b, self), MemoryStream(b, a, peer)
        self._streams.append(mine)
        peer._streams.append(theirs)
        peer._accept.append(theirs)
        self._wake(peer._accept_waiter)
        self.counters["streams_opened"] += 1
        return mine

    async def accept_stream(self) -> MemoryStream:
        """Next stream opened by the peer."""
        while not self._accept:
            if self._closed:
                raise ConnectionError("connection closed")
            self._accept_waiter = asyncio.get_running_loop().create_future()
            await self._accept_waiter
        return self._accept.popleft()

    def send_datagram(self, data: bytes) -> None:
        """Deliver (or, with ``loss``, drop) one datagram."""
        peer = self.peer
        if self._closed or peer is None:
            return
        if len(data) > self._max_dgram:
            raise ValueError("datagram too large")
        if self.blackholed:
            return
        self.counters["datagrams_sent"] += 1
        if self.loss and self._rng.random() < self.loss:
            self.counters["datagrams_dropped"] += 1
            return
        peer._dgrams.append(bytes(data))
        self._wake(peer._dgram_waiter)

    async def recv_datagram(self) -> bytes:
        """Next datagram."""
        while not self._dgrams:
            if self._closed:
                raise ConnectionError("connection closed")
            self._dgram_waiter = asyncio.get_running_loop().create_future()
            await self._dgram_waiter
        return self._dgrams.popleft()

    @property
    def max_datagram_size(self) -> int:
        """Largest datagram accepted."""
        return self._max_dgram

    @property
    def closed(self) -> bool:
        """True once either side closed."""
        return self._closed

    def blackhole(self) -> None:
        """Silently drop everything this side sends from now on (a dead peer, no EOF)."""
        self.blackholed = True

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for s in self._streams:
            s.abort()
        self._streams.clear()
        self._wake(self._accept_waiter)
        self._wake(self._dgram_waiter)

    async def close(self) -> None:
        """Close both sides (like a transport reset)."""
        self._shutdown()
        if self.peer is not None:
            self.peer._shutdown()

    def stats(self) -> dict[str, int]:
        """Counters of this side."""
        return dict(self.counters)

    @property
    def remote_address(self) -> Any:
        """A fake address."""
        return ("memory", id(self.peer))

    # -- the optional capabilities of a Connection: none in memory
    @property
    def send_bounds(self) -> SendBacklog | None:
        """None: writes land in the peer at once, nothing is held for it."""
        return None

    @property
    def receive_bounds(self) -> ReceiveHeld | None:
        """None: reads come from the peer's writes, nothing is buffered between them."""
        return None

    @property
    def max_paused_streams(self) -> int | None:
        """None: memory streams need no buffer budget to stop being read."""
        return None

    @property
    def wire_mode(self) -> str | None:
        """None: no wire."""
        return None

    @property
    def peer_public_key(self) -> bytes | None:
        """None: no handshake."""
        return None

    @property
    def channel_binding(self) -> bytes | None:
        """Random bytes of this pair (both sides the same, drawn by :func:`connection_pair`): unique
        to the pair within this process, which is all an in-memory peer can be."""
        return self.binding

    def add_event_callback(self, callback: Callable[[TransportEvent], None]) -> bool:
        """False: no transport events in memory."""
        return False

    def rebind(self) -> Any:
        """Raises :class:`UsageError`: only a secure KCP connection moves."""
        raise UsageError("rebind() needs a secure-mode KCP connection")

    async def abort(self, code: int | None = None, message: str = "") -> None:
        """Close at once (in memory: the same as :meth:`close`)."""
        await self.close()


def connection_pair(
    *, max_datagram_size: int = 1200, loss: float = 0.0, seed: int = 0
) -> tuple[MemoryConnection, MemoryConnection]:
    """(client side, server side) of one in-memory connection."""
    c = MemoryConnection(max_datagram_size=max_datagram_size, loss=loss, seed=seed)
    s = MemoryConnection(max_datagram_size=max_datagram_size, loss=loss, seed=seed + 1)
    c.peer, s.peer = s, c
    c.binding = s.binding = os.urandom(32)
    return c, s


class _DatagramPipe:
    """In-memory datagram port (for mux-over-memory tests)."""

    def __init__(self) -> None:
        self.peer: _DatagramPipe | None = None
        self._q: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    def send_datagram(self, data: bytes) -> None:
        if self.peer is not None and not self.closed:
            self.peer._q.put_nowait(bytes(data))

    async def recv_datagram(self) -> bytes:
        item = await self._q.get() if not self.closed else None
        if item is None:
            self.closed = True
            raise ConnectionError("connection closed")
        return item

    def close(self) -> None:
        for p in (self, self.peer):
            if p is not None and not p.closed:
                p._q.put_nowait(None)


def mux_memory_pair(config: MuxConfig | None = None) -> tuple[MuxConnection, MuxConnection]:
    """(client, server) connections: the real mux over an in-memory pipe, with in-memory datagrams."""
    from kcprpc.mux.testing import memory_pair

    c, s = memory_pair(config or RPC_MUX_CONFIG)
    dc, ds = _DatagramPipe(), _DatagramPipe()
    dc.peer, ds.peer = ds, dc
    binding = os.urandom(32)  # the pair's channel binding (in-process only)
    return MuxConnection(c, dc, remote_address=("mux-memory", 1), channel_binding=binding), MuxConnection(
        s, ds, remote_address=("mux-memory", 2), channel_binding=binding
    )
