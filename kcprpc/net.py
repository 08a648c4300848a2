"""The real transport: ``kcprpc.mux`` streams over a ``kcp`` session, and KCP OOB datagrams.

:class:`MuxConnection` adapts a :class:`~kcprpc.mux.MuxSession` (plus anything with
``send_datagram``/``recv_datagram``) to :class:`~kcprpc.transport.Connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from kcprpc.mux import MuxConfig, MuxSession
from kcprpc.transport import ByteStream


class DatagramPort(Protocol):
    """Unreliable datagrams (a KCP session's OOB path)."""

    def send_datagram(self, data: bytes) -> None:
        """Send one datagram."""
        ...

    async def recv_datagram(self) -> bytes:
        """Receive one datagram."""
        ...


class MuxConnection:
    """A :class:`~kcprpc.transport.Connection` made of a mux session and a datagram port."""

    def __init__(
        self,
        mux: MuxSession,
        datagrams: DatagramPort | None = None,
        *,
        max_datagram_size: int = 1100,
        remote_address: Any = None,
        on_close: Any = None,
    ) -> None:
        self.mux = mux
        self.datagrams = datagrams
        self._max_dgram = max_datagram_size if datagrams is not None else 0
        self._remote = remote_address
        self._on_close = on_close
        self._closed_ev = asyncio.Event()

    async def open_stream(self) -> ByteStream:
        """Open a mux stream."""
        return await self.mux.open_stream()

    async def accept_stream(self) -> ByteStream:
        """Accept a mux stream (raises a ``ConnectionError`` subclass once closed)."""
        return await self.mux.accept_stream()

    def send_datagram(self, data: bytes) -> None:
        """Send an OOB datagram."""
        if self.datagrams is None or self.mux.closed:
            raise ConnectionError("no datagram path")
        self.datagrams.send_datagram(data)

    async def recv_datagram(self) -> bytes:
        """Receive an OOB datagram."""
        if self.datagrams is None:
            await self._closed_ev.wait()
            raise ConnectionError("connection closed")
        recv = asyncio.ensure_future(self.datagrams.recv_datagram())
        closed = asyncio.ensure_future(self._closed_ev.wait())
        try:
            done, _ = await asyncio.wait({recv, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if recv in done:
            return recv.result()
        recv.cancel()
        raise ConnectionError("connection closed")

    @property
    def max_datagram_size(self) -> int:
        """Largest OOB payload."""
        return self._max_dgram

    @property
    def closed(self) -> bool:
        """True once the mux session is dead."""
        return self.mux.closed or self._closed_ev.is_set()

    async def close(self) -> None:
        """Close the mux session and the transport under it."""
        self._closed_ev.set()
        with contextlib.suppress(Exception):
            await self.mux.close()
        if self._on_close is not None:
            with contextlib.suppress(Exception):
                r = self._on_close()
                if asyncio.iscoroutine(r):
                    await r

    def stats(self) -> dict[str, int]:
        """Mux counters plus, when available, the KCP session's counters."""
        out = {f"mux_{k}": v for k, v in self.mux.counters.items()}
        st = getattr(self.datagrams, "stats", None)
        if st is not None:
            with contextlib.suppress(Exception):
                out.update(st() if callable(st) else st)
        return out

    @property
    def remote_address(self) -> Any:
        """Peer address."""
        return self._remote


class _DatagramPipe:
    """In-memory datagram port (for mux-over-memory tests)."""

    def __init__(self) -> None:
        self.peer: _DatagramPipe | None = None
        self._q: asyncio.Queue[bytes] = asyncio.Queue()

    def send_datagram(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer._q.put_nowait(bytes(data))

    async def recv_datagram(self) -> bytes:
        return await self._q.get()


def mux_memory_pair(config: MuxConfig | None = None) -> tuple[MuxConnection, MuxConnection]:
    """(client, server) connections: real mux over an in-memory pipe, with in-memory datagrams."""
    from kcprpc.mux.testing import memory_pair

    c, s = memory_pair(config or MuxConfig())
    dc, ds = _DatagramPipe(), _DatagramPipe()
    dc.peer, ds.peer = ds, dc
    return MuxConnection(c, dc, remote_address=("mux-memory", 1)), MuxConnection(
        s, ds, remote_address=("mux-memory", 2)
    )


async def listen(*args: Any, **kwargs: Any) -> Any:
    """Listen for KCP connections (needs ``kcp.session``)."""
    raise NotImplementedError("kcp.session is not available yet")
