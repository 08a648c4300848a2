"""kcprpc for browsers: the WebSocket and WebTransport listeners and clients
(docs/wire-format/web.md).

One concern per module: :mod:`~kcprpc.web.framing` (the messages, sans-I/O),
:mod:`~kcprpc.web.pipe` (the byte pipe and datagram port a web connection's mux runs on),
:mod:`~kcprpc.web.options` (listener options), :mod:`~kcprpc.web.listener` (what both listeners
share: OPEN, authorize, counters). The ``websockets`` and ``aioquic`` packages (the ``web`` extra)
are imported only by the modules that speak them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kcprpc.web.connection import WebConnection
from kcprpc.web.options import WebOptions, WebSocketOptions, WebTransportOptions
from kcprpc.web.pipe import WebPipe

if TYPE_CHECKING:
    from kcprpc.web.websocket import (
        SUBPROTOCOL,
        WebSocketListener,
        connect_websocket,
        dial_websocket,
        listen_websocket,
    )

__all__ = [
    "SUBPROTOCOL",
    "WebConnection",
    "WebOptions",
    "WebPipe",
    "WebSocketListener",
    "WebSocketOptions",
    "WebTransportOptions",
    "connect_websocket",
    "dial_websocket",
    "listen_websocket",
]

_LAZY = {
    "SUBPROTOCOL": "kcprpc.web.websocket",
    "WebSocketListener": "kcprpc.web.websocket",
    "connect_websocket": "kcprpc.web.websocket",
    "dial_websocket": "kcprpc.web.websocket",
    "listen_websocket": "kcprpc.web.websocket",
}


def __getattr__(name: str) -> Any:
    """The names whose modules need the ``web`` extra (``websockets``), imported on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kcprpc.web' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
