"""kcprpc for browsers: the WebSocket and WebTransport listeners and clients
(docs/wire-format/web.md).

One concern per module: :mod:`~kcprpc.web.framing` (the messages, sans-I/O),
:mod:`~kcprpc.web.pipe` (the byte pipe and datagram port a web connection's mux runs on),
:mod:`~kcprpc.web.options` (listener options), :mod:`~kcprpc.web.listener` (what both listeners
share: OPEN, authorize, counters), :mod:`~kcprpc.web.websocket` (the WebSocket listener and Python client),
:mod:`~kcprpc.web.webtransport` (the WebTransport listener), :mod:`~kcprpc.web.webtransport_client`
(its Python client), :mod:`~kcprpc.web.quic` (the aioquic pieces both share), :mod:`~kcprpc.web.capsules`
(the CONNECT stream's capsules, sans-I/O), :mod:`~kcprpc.web.certs` (a development certificate). The ``websockets`` and ``aioquic`` packages (the ``web`` extra)
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
    from kcprpc.web.webtransport import WebTransportListener, listen_webtransport
    from kcprpc.web.webtransport_client import connect_webtransport, dial_webtransport

__all__ = [
    "SUBPROTOCOL",
    "WebConnection",
    "WebOptions",
    "WebPipe",
    "WebSocketListener",
    "WebSocketOptions",
    "WebTransportListener",
    "WebTransportOptions",
    "connect_websocket",
    "connect_webtransport",
    "dial_websocket",
    "dial_webtransport",
    "listen_websocket",
    "listen_webtransport",
]

_LAZY = {
    "SUBPROTOCOL": "kcprpc.web.websocket",
    "WebSocketListener": "kcprpc.web.websocket",
    "connect_websocket": "kcprpc.web.websocket",
    "dial_websocket": "kcprpc.web.websocket",
    "listen_websocket": "kcprpc.web.websocket",
    "WebTransportListener": "kcprpc.web.webtransport",
    "connect_webtransport": "kcprpc.web.webtransport_client",
    "dial_webtransport": "kcprpc.web.webtransport_client",
    "listen_webtransport": "kcprpc.web.webtransport",
}


def __getattr__(name: str) -> Any:
    """The names whose modules need the ``web`` extra (``websockets``, ``aioquic``), imported on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kcprpc.web' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
