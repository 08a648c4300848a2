"""kcprpc for browsers: the WebSocket and WebTransport listeners and clients
(docs/wire-format/web.md).

One concern per module: :mod:`~kcprpc.web.framing` (the messages, sans-I/O),
:mod:`~kcprpc.web.pipe` (the byte pipe and datagram port a web connection's mux runs on),
:mod:`~kcprpc.web.options` (listener options), :mod:`~kcprpc.web.listener` (what both listeners
share: OPEN, authorize, counters). The ``websockets`` and ``aioquic`` packages (the ``web`` extra)
are imported only by the modules that speak them.
"""
