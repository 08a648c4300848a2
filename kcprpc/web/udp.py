"""The WebTransport listener's UDP socket: :class:`BatchedDatagramTransport`, an asyncio
``DatagramTransport`` over :class:`kcp.endpoint.Endpoint`, the socket layer the KCP listener runs
on.

asyncio's own datagram transport reads one datagram each time the loop finds the socket readable,
and makes one ``sendto`` system call per datagram. A listener's socket takes every client's
datagrams, so while the loop is busy (QUIC and TLS in Python, the RPC work of the same process)
they pile up in the kernel's receive buffer and the rest are dropped: on a default 208 KiB buffer
the WebTransport churn test (9 clients at a time in one process) lost one datagram in seven. Here
a readable socket is read in batches (``recvmmsg``, up to 256 datagrams a callback), and what the
QUIC connections send in one loop turn leaves in ``sendmmsg`` batches, held while the socket
buffer is full (the endpoint's bound, :data:`kcp.endpoint.TX_LIMIT`, then dropped and counted).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from kcp.batch import Address
from kcp.endpoint import Endpoint
from kcp.stats import Counters

__all__ = ["BatchedDatagramTransport"]


class BatchedDatagramTransport(asyncio.DatagramTransport):
    """``protocol``'s transport on ``sock`` (a bound UDP socket, which it owns and closes): each
    datagram read goes to ``protocol.datagram_received(data, addr)``, :meth:`sendto` queues one
    for this loop turn's send batch. :attr:`counters` are the socket's (datagrams and system calls
    each way)."""

    def __init__(self, sock: socket.socket, protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._protocol = protocol
        self.counters = Counters()
        """The socket's counters (``in_pkts``, ``out_pkts``, ``recv_syscalls``, ...)."""
        self._endpoint = Endpoint(self._loop, sock, self.counters, snmp=False)
        self._endpoint.dispatch = self._dispatch
        self._closing = False
        protocol.connection_made(self)

    def _dispatch(self, data: bytes, addr: Address, now: int) -> None:
        if not self._closing:
            self._protocol.datagram_received(data, addr)

    def sendto(self, data: Any, addr: Any = None) -> None:
        """Queue one datagram to ``addr``; nothing once closing. The queue leaves at the end of
        this loop turn, or as soon as it fills a send batch: a fan-out's first peers do not wait
        until every connection has written."""
        if self._closing:
            return
        ep = self._endpoint
        ep.send(bytes(data), addr)
        if len(ep.tx) >= ep.io.batch and not ep.writer_armed:
            ep.send_now()

    def forget(self, addr: Address) -> None:
        """``addr`` is no longer served: out of the socket's address caches (once what is queued
        for it has left)."""
        if not self._closing:
            self._endpoint.forget(addr)

    @property
    def send_dropped(self) -> int:
        """Datagrams dropped because more than the endpoint's bound waited for a full socket buffer."""
        return self._endpoint.tx_dropped

    def get_write_buffer_size(self) -> int:
        """Datagrams waiting to be sent."""
        return len(self._endpoint.tx)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``sockname`` and ``socket``, as asyncio's transports give them."""
        if name == "sockname":
            return self._sock.getsockname() if not self._closing else default
        if name == "socket":
            return self._sock
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Send what is queued (best effort), close the socket; then ``protocol.connection_lost(None)``."""
        if self._closing:
            return
        self._closing = True
        self._endpoint.close()
        self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()
