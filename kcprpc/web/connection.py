"""A web connection as the RPC layer sees it: :class:`WebConnection`, a
:class:`~kcprpc.net.MuxConnection` over a :class:`~kcprpc.web.pipe.WebPipe`.

What it adds to a ``MuxConnection``: an abort that tells the peer its status (a WebSocket close
code ``4000 + status``, docs/wire-format/web.md), the pipe's counters in :meth:`stats`, and the
peer's close as a :class:`~kcprpc.transport_events.PeerClosed` event (:meth:`peer_closed`, called
by the transport's reader).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kcprpc.mux import MuxConfig, MuxSession
from kcprpc.net import MuxConnection
from kcprpc.status import Status
from kcprpc.transport import close_code, close_status
from kcprpc.transport_events import PeerClosed, TransportEvent
from kcprpc.web.pipe import WebPipe

__all__ = ["REFUSE_CLOSE_BASE", "WebConnection", "close_code_status", "status_close_code"]

REFUSE_CLOSE_BASE = 4000
"""A web connection closed with code ``4000 + status`` ended with that RPC status."""


def status_close_code(status: Status | int) -> int:
    """The WebSocket close code that carries ``status``."""
    return close_code(status, REFUSE_CLOSE_BASE)


def close_code_status(code: int | None) -> Status | None:
    """The RPC status a WebSocket close code carries, or None."""
    return close_status(code, REFUSE_CLOSE_BASE)


class WebConnection(MuxConnection):
    """A :class:`~kcprpc.net.MuxConnection` whose mux and datagrams run on ``pipe``."""

    def __init__(
        self,
        pipe: WebPipe,
        *,
        client: bool,
        mux_config: MuxConfig,
        binding: bytes,
        max_datagram_size: int,
        remote_address: Any = None,
        transport: Any = None,
    ) -> None:
        super().__init__(
            MuxSession(pipe, client=client, config=mux_config),
            pipe,
            max_datagram_size=max_datagram_size,
            remote_address=remote_address,
            channel_binding=binding,
        )
        self.pipe = pipe
        self.transport = transport
        """The network connection under the pipe (a ``websockets`` connection, a WebTransport
        session), for diagnostics and tests."""
        self.reader_task: asyncio.Future[None] | None = None
        """The task that feeds the pipe from the network, when the connection's dial made one."""
        self._callbacks: list[Callable[[TransportEvent], None]] = []

    async def abort(self, code: int | None = None, message: str = "") -> None:
        """Close at once, dropping what waits to be sent; a transport close code that carries a
        status (:func:`kcprpc.transport.close_code`) reaches the peer as ``4000 + status``."""
        status = close_status(code)
        self.pipe.abort(status_close_code(status) if status is not None else None, message)
        await self.close()

    def stats(self) -> dict[str, int]:
        """The mux counters and the pipe's (``web_*``)."""
        out = super().stats()
        out.update({f"web_{k}": v for k, v in self.pipe.counters.items()})
        return out

    def add_event_callback(self, callback: Callable[[TransportEvent], None]) -> bool:
        """``callback(event)`` for the peer's close (:class:`PeerClosed`, see :meth:`peer_closed`)."""
        self._callbacks.append(callback)
        return True

    def peer_closed(self, code: int | None, reason: str) -> None:
        """The transport's reader saw the peer close with ``code`` and ``reason``: tell the
        callbacks (a ``4000 + status`` code carries the status the server ended the connection with)."""
        status = close_code_status(code)
        text = f"{status.name}: {reason}" if status is not None else f"code {code}: {reason}"
        ev = PeerClosed(status, reason, text)
        for cb in list(self._callbacks):
            cb(ev)
