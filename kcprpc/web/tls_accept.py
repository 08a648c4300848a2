"""TLS on an accepted TCP connection, run by the listener rather than by asyncio's server.

``loop.create_server(ssl=...)`` runs the TLS handshake before the protocol sees the connection:
until it ends (``ssl_handshake_timeout``), a socket that never finishes its ClientHello is held
uncounted, however many of them one address opens. The WebSocket listener therefore serves plain
TCP, charges each connection against its bounds at the accept (when its peer address is known),
and then runs the handshake itself with :func:`accept_tls` (``loop.start_tls``, public on asyncio's
loop and uvloop's).

``start_tls`` hands the connection's first bytes after the handshake to its protocol at once, in
the same turn of the loop that ends the handshake, before the caller can attach its own protocol:
:class:`_Held` keeps them (and an end of stream or a loss) and replays them to the protocol
:func:`accept_tls` attaches, in order.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

__all__ = ["accept_tls"]


class _Held(asyncio.Protocol):
    """What the TLS transport delivers between the end of its handshake and :meth:`attach`."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        return True  # keep the transport open until the real protocol has its say

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)

    def attach(self, transport: asyncio.Transport, protocol: asyncio.Protocol) -> None:
        """Make ``protocol`` the transport's protocol (``connection_made``), then replay."""
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for chunk in self.data:
            protocol.data_received(chunk)
        self.data.clear()
        if self.eof and not protocol.eof_received():
            transport.close()
        if self.lost is not None:
            protocol.connection_lost(self.lost[0])


def _feed(transport: asyncio.BaseTransport, early: Callable[[], bytes]) -> None:
    """Hand ``early`` bytes to the TLS protocol ``start_tls`` put on ``transport``."""
    data = early()
    proto = transport.get_protocol()
    if not data or transport.is_closing():
        return
    if hasattr(proto, "get_buffer"):  # asyncio's and uvloop's TLS protocols are buffered ones
        buffered = cast(asyncio.BufferedProtocol, proto)  # (uvloop's are no asyncio subclasses)
        view = memoryview(data)
        while view:
            buf = memoryview(buffered.get_buffer(len(view)))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            buffered.buffer_updated(n)
            view = view[n:]
    else:
        cast(asyncio.Protocol, proto).data_received(data)


async def accept_tls(
    transport: asyncio.BaseTransport,
    protocol: asyncio.Protocol,
    context: ssl.SSLContext,
    *,
    handshake_timeout: float,
    shutdown_timeout: float,
    early: Callable[[], bytes] = bytes,
) -> None:
    """Run the server side of a TLS handshake on the accepted ``transport`` (whose protocol has not
    been told of it), then give ``protocol`` the TLS transport (``connection_made``) and whatever
    arrived with the handshake's end. Raises what the handshake raised (``OSError``,
    ``ssl.SSLError``: the connection is closed) or ``CancelledError`` (the connection is aborted);
    asyncio logs neither.

    ``early`` returns the bytes the transport delivered to its first protocol before the handshake
    began: uvloop starts reading right after ``connection_made`` whatever it asked, so a fast
    client's ClientHello can come before ``start_tls`` took the transport. They go to the TLS
    protocol after its ``connection_made`` and before anything read later: ``start_tls`` schedules
    that call and the resumed reading when its task first runs, so a callback scheduled by a
    callback scheduled after that task runs right behind them."""
    held = _Held()
    loop = asyncio.get_running_loop()
    handshake = asyncio.ensure_future(
        loop.start_tls(
            cast(asyncio.WriteTransport, transport),
            held,
            context,
            server_side=True,
            ssl_handshake_timeout=handshake_timeout,
            ssl_shutdown_timeout=shutdown_timeout,
        )
    )
    loop.call_soon(loop.call_soon, _feed, transport, early)
    try:
        tls = await handshake
    except BaseException:
        cast(asyncio.WriteTransport, transport).abort()  # uvloop's are no asyncio subclasses
        raise
    if tls is None:  # the loop gave no transport: nothing to serve (asyncio documents none)
        cast(asyncio.WriteTransport, transport).abort()
        raise ConnectionAbortedError("start_tls returned no transport")
    held.attach(tls, protocol)
