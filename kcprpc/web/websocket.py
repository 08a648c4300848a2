"""kcprpc over WebSocket (docs/wire-format/web.md, "Over WebSocket"), with the ``websockets``
package's asyncio API: the listener (:func:`listen_websocket`) and the Python client
(:func:`connect_websocket`).

The listener answers the WebSocket handshake at ``options.path`` only for the subprotocol
``kcprpc.v1`` and an allowed ``Origin``, then reads the messages: ``OPEN`` within
``open_timeout``, answered by :class:`~kcprpc.web.listener.WebListenerBase`; then ``STREAM``
chunks into the connection's :class:`~kcprpc.web.pipe.WebPipe` (under which the mux runs) and
``DATAGRAM``s into its datagram queue. Anything else ends the connection (1002; 1009 for a
message over ``max_message_size``) and is counted. Other plain ``GET`` requests are the discovery
document and the ``web_root`` files (:mod:`kcprpc.web.static`).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.http11 import Request, Response

from kcp.logutil import limit_logger
from kcp.ratelimit import SourceBytes, SourceTally
from kcprpc.client import Client
from kcprpc.client_config import ClientConfig
from kcprpc.config import RPC_MUX_CONFIG
from kcprpc.errors import RpcError, UsageError
from kcprpc.interceptors import ClientInterceptor
from kcprpc.mux import MuxConfig
from kcprpc.status import Status
from kcprpc.transport import spawn
from kcprpc.web.connection import WebConnection, status_close_code
from kcprpc.web.fdlimit import ensure_fd_limit
from kcprpc.web.framing import (
    DATAGRAM,
    STREAM,
    Accept,
    Open,
    Refuse,
    decode,
    encode_open,
)
from kcprpc.web.listener import Admitted, WebListenerBase
from kcprpc.web.options import WebSocketOptions
from kcprpc.web.pipe import WebPipe
from kcprpc.web.static import DISCOVERY_PATH, FileCache, HttpReply, discovery_document, discovery_reply
from kcprpc.web.tls_accept import accept_tls

if TYPE_CHECKING:
    from kcprpc.server import Server

__all__ = ["SUBPROTOCOL", "WebSocketListener", "connect_websocket", "dial_websocket", "listen_websocket"]

SUBPROTOCOL = "kcprpc.v1"
"""The WebSocket subprotocol a kcprpc client offers and the listener requires."""

log = logging.getLogger("kcprpc.web")

_CLOSE_TIMEOUT = 2.0  # seconds a close handshake may take before the TCP connection is cut
_MAX_REASON = 123  # bytes of a WebSocket close reason
_MAX_EARLY_TLS = 64 * 1024  # bytes read before a TLS handshake began (uvloop): a ClientHello's room


def _reason(text: str) -> str:
    """``text`` cut to what a close frame carries (123 UTF-8 bytes)."""
    raw = text.encode("utf-8")
    if len(raw) <= _MAX_REASON:
        return text
    return raw[:_MAX_REASON].decode("utf-8", "ignore")


def _make_pipe(
    ws: ServerConnection | ClientConnection, max_datagram: int, max_receive_buffer: int
) -> WebPipe:
    """The pipe of one WebSocket: STREAM and DATAGRAM messages out, its close as the pipe's."""

    def backlog() -> int:
        try:
            return int(ws.transport.get_write_buffer_size())
        except Exception:
            return 0

    async def on_close(code: int | None, reason: str) -> None:
        closing = asyncio.ensure_future(ws.close(code or 1000, _reason(reason)))
        try:
            await asyncio.wait_for(asyncio.shield(closing), 1.0 if code else _CLOSE_TIMEOUT)
        except (TimeoutError, ConnectionClosed):
            ws.transport.abort()  # a peer that does not read does not answer the close either

    return WebPipe(
        lambda chunk: ws.send(b"\x03" + chunk),
        lambda data: ws.send(b"\x04" + data),
        transport_backlog=backlog,
        on_close=on_close,
        max_receive_buffer=max_receive_buffer,
        max_datagram_size=max_datagram,
    )


async def _recv(ws: ServerConnection | ClientConnection) -> bytes | str | None:
    """The next message, None once the connection closed."""
    try:
        return await ws.recv()
    except ConnectionClosed:
        return None


def _oversized(ws: ServerConnection | ClientConnection) -> bool:
    """True when this side closed the connection for a message over ``max_size`` (1009)."""
    sent = ws.protocol.close_sent
    return sent is not None and sent.code == 1009


async def _pump(
    ws: ServerConnection | ClientConnection,
    pipe: WebPipe,
    max_message: int,
    bad: Any,
    closed: Callable[[], None] | None = None,
) -> None:
    """Feed ``pipe`` with the messages of ``ws`` until it closes (or a protocol error:
    ``bad(counter, detail, message)`` is told and the pipe aborted with 1002); ``closed()`` runs
    then, before the pipe's end of stream."""
    try:
        while not pipe.closed:
            await pipe.wait_room(max_message)
            if pipe.closed:
                break
            data = await _recv(ws)
            if data is None:
                if _oversized(ws):
                    bad("oversized", f"a message over {max_message} bytes", None)
                break
            if isinstance(data, str):
                bad("text_messages", "a text message", None)
                pipe.abort(1002, "text message")
                break
            # the hot path: no decode() copy for the two kinds that flow
            if data and data[0] == STREAM and len(data) > 1:
                if not pipe.feed_stream(data[1:]):
                    bad("receive_overflows", "stream bytes past the receive buffer", None)
                    pipe.abort(1002, "receive buffer overflow")
                    break
                continue
            if data and data[0] == DATAGRAM:
                pipe.feed_datagram(data[1:])
                continue
            msg = decode(data)
            bad(None, "", msg)
            pipe.abort(1002, "protocol error")
            break
    finally:
        if closed is not None:
            closed()
        pipe.feed_eof()


class WebSocketListener(WebListenerBase):
    """A WebSocket listener of a :class:`kcprpc.Server` (made by :func:`listen_websocket`).

    ``address`` is the bound (host, port); :meth:`stats` its counters (also in the server's stats
    call as ``websocket_<counter>``); :meth:`announce` adds to the discovery document."""

    name = "websocket"

    def __init__(self, server: Server, options: WebSocketOptions) -> None:
        super().__init__(server, options)
        self.options: WebSocketOptions = options
        self.counters.update(
            {
                "subprotocol_refused": 0,
                "http_files": 0,
                "http_not_found": 0,
                "http_busy": 0,
                "refused_handshaking": 0,
                "tls_failed": 0,
            }
        )
        self._ws: WsServer | None = None
        self._announced: dict[str, Any] = {}
        self._opening = 0  # connections not yet past OPEN
        # TCP connections still in their handshake (TLS, HTTP), per address and in all (_Accepted)
        self.handshake_sources = SourceTally(self.sources.keys, server.config.max_connections_per_address)
        self._handshakes: set[ServerConnection] = set()
        self._tls: set[asyncio.Future[Any]] = set()  # TLS handshakes under way (begin_tls)
        root = options.web_root
        self._files = FileCache(root) if isinstance(root, Path) else None
        # file replies sent and not yet known delivered: charged until their connection closes
        self.static_bytes = SourceBytes(
            self.sources.keys, options.max_static_bytes, options.max_static_bytes // 4
        )
        self.address: tuple[str, int] = ("", 0)

    # -- discovery ----------------------------------------------------------------------------------

    def announce(self, key: str, value: Any) -> None:
        """Put ``key: value`` in the discovery document (``GET /kcprpc.json``). A listener added
        to the server with a ``discovery()`` method needs no call: its dict is merged in."""
        self._announced[key] = value

    def discovery(self) -> dict[str, Any]:
        """What this listener announces (nothing: its own path is the document's ``websocket``)."""
        return {}

    def discovery_document(self) -> dict[str, Any]:
        """The document ``GET /kcprpc.json`` answers."""
        doc = discovery_document(self.options.path, [lst for lst in self.server.listeners if lst is not self])
        doc.update(self._announced)
        return doc

    def stats(self) -> dict[str, int]:
        """Counters, ``connections_open``, and the TCP connections still in their handshake
        (TLS, HTTP: ``handshakes_open``)."""
        out = super().stats()
        out["handshakes_open"] = len(self._handshakes)
        return out

    # -- TCP ----------------------------------------------------------------------------------------

    def tcp_accepted(self, conn: ServerConnection, peer: Any) -> bool:
        """A TCP connection from ``peer`` before its handshake (TLS, HTTP): False (counted; the caller
        resets it) when that address already has ``max_connections_per_address`` of them in
        their handshake, or ``max_connections`` are; else it is charged until
        :meth:`tcp_done`. Before this, a client that never finished its request held a socket for
        ``open_timeout`` uncounted, as many as it could open (a slowloris)."""
        limit = self.options.max_connections
        if limit is not None and len(self._handshakes) >= limit:
            self.count("refused_handshaking", f"over {limit} TCP connections in their handshake")
            return False
        if self.handshake_sources.over(peer):
            self.count(
                "refused_handshaking",
                f"over {self.handshake_sources.cap} TCP connections in their handshake from {peer!r}",
            )
            return False
        self.handshake_sources.add(conn, peer)
        self._handshakes.add(conn)
        return True

    def tcp_done(self, conn: ServerConnection) -> None:
        """``conn``'s handshake is over (the handler runs, or the connection is gone)."""
        self.static_bytes.release(conn)
        if conn in self._handshakes:
            self._handshakes.discard(conn)
            self.handshake_sources.remove(conn)

    def begin_tls(
        self,
        conn: ServerConnection,
        transport: asyncio.Transport,
        context: ssl.SSLContext,
        early: Callable[[], bytes],
    ) -> None:
        """Run ``conn``'s TLS handshake (charged since its accept) within ``open_timeout``; then
        its WebSocket handshake begins on the TLS transport. One that fails or times out is closed
        and counted (``tls_failed``), and its charge goes."""

        async def run() -> None:
            try:
                await accept_tls(
                    transport,
                    conn,
                    context,
                    handshake_timeout=self.options.open_timeout,
                    shutdown_timeout=_CLOSE_TIMEOUT,
                    early=early,
                )
            except Exception as e:  # ssl.SSLError and a timeout's ConnectionAbortedError are OSErrors
                self.tcp_done(conn)
                self.count("tls_failed", f"TLS handshake from {transport.get_extra_info('peername')!r}: {e}")
            except asyncio.CancelledError:  # the listener closing
                self.tcp_done(conn)
                raise

        spawn(self._tls, run())

    # -- HTTP ---------------------------------------------------------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        """Before the WebSocket handshake: path, subprotocol and origin checks; plain GETs."""
        path = request.path.split("?", 1)[0]
        if path != self.options.path:
            if path == DISCOVERY_PATH:
                return _response(discovery_reply(self.discovery_document()))
            files = self._files
            if files is not None:
                reply = files.get(request.path)
                if reply.status != 200:
                    self.count("http_not_found")
                elif not self.static_bytes.charge(conn, conn.remote_address, len(reply.body)):
                    self.count("http_busy", f"GET {path[:100]} over max_static_bytes")
                    return _response(HttpReply.text(503, "busy: try again\n"))
                else:
                    self.count("http_files")
                return _response(reply)
            self.count("bad_requests", f"GET {path[:100]}")
            return _response(HttpReply.text(404, "not found\n"))
        headers = request.headers
        origins = headers.get_all("Origin")  # (get() raises on a repeated header: a 500 and a traceback)
        if len(origins) > 1:
            self.count("bad_requests", "more than one Origin header")
            return _response(HttpReply.text(400, "one Origin header at most\n"))
        if not self.origin_allowed(origins[0] if origins else None):
            return _response(HttpReply.text(403, "origin not allowed\n"))
        if "upgrade" not in ",".join(headers.get_all("Connection")).lower():
            self.count("bad_requests", "a plain GET of the WebSocket path")
            return _response(HttpReply.text(426, "a WebSocket client connects here\n"))
        offered = [p.strip() for h in headers.get_all("Sec-WebSocket-Protocol") for p in h.split(",")]
        if SUBPROTOCOL not in offered:
            self.count("subprotocol_refused", f"subprotocols offered: {offered[:4]}")
            return _response(HttpReply.text(400, f"the subprotocol {SUBPROTOCOL} is required\n"))
        if self.draining:
            return _response(HttpReply.text(503, "server is going away\n"))
        return None

    # -- a connection ---------------------------------------------------------------------------------

    def _bad(self, counter: str | None, detail: str, msg: Any) -> None:
        if counter is not None:
            self.count(counter, detail)
        else:
            self.count_unexpected(msg, first=False)

    async def _handle(self, ws: ServerConnection) -> None:
        self.tcp_done(ws)
        opts = self.options
        limit = opts.max_connections
        if limit is not None and len(self.connections) + self._opening >= limit:
            self.count("refused_busy", f"over {limit} web connections (with those not yet open)")
            await ws.close(1013, "too many connections")
            return None
        if not self.arrived(ws, ws.remote_address):
            await ws.close(1013, "too many connections from one address")
            return None
        try:
            self._opening += 1
            try:
                pipe = await self._open(ws)
            finally:
                self._opening -= 1  # (an accepted one is in self.connections by now)
            if pipe is not None:
                try:
                    await _pump(ws, pipe, opts.max_message_size, self._bad)
                finally:
                    pipe.feed_eof()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(pipe.wait_closed(), _CLOSE_TIMEOUT * 2)
        finally:
            self.left(ws)

    async def _open(self, ws: ServerConnection) -> WebPipe | None:
        """The connection until OPEN is answered: the pipe of an accepted one (its session
        served), None when it ended (refused, a protocol error, no OPEN in time)."""
        address = ws.remote_address
        first = await self.within_open_timeout(_recv(ws))
        if first is None:
            if _oversized(ws):
                self.count("oversized", "a first message over max_message_size")
            elif ws.protocol.close_rcvd is None and ws.protocol.close_sent is None:
                await ws.close(1008, "no OPEN in time")
            return None
        if isinstance(first, str):
            self.count("text_messages", "a text message")
            await ws.close(1002, "text message")
            return None
        msg = decode(first)
        if not isinstance(msg, Open):
            self.count_unexpected(msg, first=True)
            await ws.close(1002, "OPEN expected")
            return None
        verdict = await self.admit(msg, address)
        try:
            await ws.send(verdict.reply)
        except ConnectionClosed:
            return None
        if not isinstance(verdict, Admitted):
            await ws.close(status_close_code(verdict.status), _reason(verdict.message))
            return None
        pipe = _make_pipe(ws, verdict.max_datagram, self.options.max_receive_buffer)
        self.serve(pipe, verdict, address, ws)
        return pipe

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self, host: str | None, port: int | None, sock: socket.socket | None = None) -> None:
        """Bind and listen on ``host:port``, or listen on ``sock`` (a bound TCP socket) when given."""
        opts = self.options
        # a socket per connection: room for max_connections of them (kcprpc.web.fdlimit)
        ensure_fd_limit(opts.max_connections, what="WebSocket listener")
        where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": host, "port": port}
        listener = self

        tls = opts.ssl

        class _Accepted(ServerConnection):
            """Charged against the listener's bounds from the TCP accept (:meth:`tcp_accepted`),
            before its TLS handshake when it has one (:meth:`begin_tls`)."""

            made = False  # websockets' connection has its transport
            in_tls = False  # its TLS handshake has begun: the next connection_made is the result
            raw: asyncio.Transport
            early: bytearray

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                # (asyncio's or uvloop's: the latter's are no asyncio.Transport subclasses)
                transport = cast(asyncio.Transport, transport)
                if not self.in_tls:
                    if not listener.tcp_accepted(self, transport.get_extra_info("peername")):
                        transport.abort()  # websockets never hears of it
                        return
                    if tls is not None:
                        self.in_tls, self.raw, self.early = True, transport, bytearray()
                        transport.pause_reading()  # (uvloop reads all the same: data_received)
                        listener.begin_tls(self, transport, tls, self.take_early)
                        return
                self.made = True
                super().connection_made(transport)

            def data_received(self, data: bytes) -> None:
                if self.made:
                    super().data_received(data)
                elif len(self.early) + len(data) <= _MAX_EARLY_TLS:
                    self.early += data  # uvloop: read before the TLS handshake took the transport
                else:
                    self.raw.abort()

            def eof_received(self) -> None:
                if self.made:  # (before TLS: None closes the connection)
                    super().eof_received()

            def connection_lost(self, exc: Exception | None) -> None:
                listener.tcp_done(self)
                if self.made:
                    super().connection_lost(exc)

            def take_early(self) -> bytes:
                data, self.early = bytes(self.early), bytearray()
                return data

        # the library logs per TCP connection, and a traceback for a request its own checks trip on
        limit_logger("kcprpc.web.websockets")
        self._ws = await ws_serve(
            self._handle,
            **where,
            create_connection=_Accepted,
            process_request=self._process_request,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            compression=None,
            max_size=opts.max_message_size,
            open_timeout=opts.open_timeout,
            close_timeout=_CLOSE_TIMEOUT,
            logger=logging.getLogger("kcprpc.web.websockets"),
        )
        sock = next(iter(self._ws.sockets))
        name = sock.getsockname()
        self.address = (str(name[0]), int(name[1]))

    def close(self) -> None:
        """Stop listening and close every connection."""
        for t in list(self._tls):
            t.cancel()
        if self._ws is not None:
            self._ws.close(close_connections=True, code=1001, reason="server shutting down")

    async def wait_closed(self) -> None:
        """Wait until the listener and its connections are closed."""
        await self.close_connections()
        if self._ws is not None:
            await self._ws.wait_closed()


def _response(reply: HttpReply) -> Response:
    headers = Headers()
    headers["Content-Type"] = reply.content_type
    headers["Content-Length"] = str(len(reply.body))
    headers["Cache-Control"] = "no-cache"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Connection"] = "close"
    return Response(reply.status, http.HTTPStatus(reply.status).phrase, headers, reply.body)


async def listen_websocket(
    server: Server,
    host: str | None = None,
    port: int | None = None,
    options: WebSocketOptions | None = None,
    *,
    sock: socket.socket | None = None,
) -> WebSocketListener:
    """Serve ``server``'s services to WebSocket clients (browsers) on ``host:port`` (port 0: any
    free one, see the listener's ``address``): the listener, added to the server
    (``Server.add_listener``: closed by its shutdown, counters in its stats). It hands connections
    to the server at once: start the server first (``await server.start()``) when it has a
    lifespan or a broker to start. ``options``: :class:`WebSocketOptions` (default: all defaults);
    a port that cannot be bound raises :class:`UsageError`. ``sock``: a TCP socket already bound
    (and listening or not) to serve instead of ``host:port``, e.g. one of the ``SO_REUSEPORT``
    group :func:`kcprpc.serve_workers` binds before it forks (docs/workers.md)."""
    if sock is None and (host is None or port is None):
        raise UsageError("listen_websocket needs host and port, or sock=")
    if sock is not None and (host is not None or port is not None):
        raise UsageError("listen_websocket takes host and port, or sock=, not both")
    if sock is not None and sock.type != socket.SOCK_STREAM:
        raise UsageError("listen_websocket: sock must be a TCP (SOCK_STREAM) socket")
    if options is None:
        options = WebSocketOptions()
    elif not isinstance(options, WebSocketOptions):
        raise UsageError(
            f"listen_websocket: options must be a WebSocketOptions, not {type(options).__name__}"
        )
    listener = WebSocketListener(server, options)
    try:
        await listener.start(host, port, sock)
    except OSError as e:
        where = f"{host}:{port}" if sock is None else "its socket"
        raise UsageError(f"listen_websocket: cannot listen on {where}: {e}") from None
    server.add_listener(listener)
    return listener


# -- the Python client ---------------------------------------------------------------------------------


async def dial_websocket(
    url: str,
    *,
    token: bytes | str | None = None,
    origin: str | None = None,
    mux: MuxConfig = RPC_MUX_CONFIG,
    timeout: float = 5.0,
    max_message_size: int = 1024 * 1024,
    max_receive_buffer: int = 4 * 1024 * 1024,
    ssl: Any = None,
) -> WebConnection:
    """Open one web connection to ``url`` (``ws://host:port/kcprpc`` or ``wss://``): the
    WebSocket handshake, ``OPEN`` with ``token``, the server's ``ACCEPT``. Raises
    :class:`RpcError`: the server's ``REFUSE`` status and message; UNAVAILABLE when nothing answers
    or the handshake fails (PERMISSION_DENIED for a refused origin)."""
    raw_token = token.encode() if isinstance(token, str) else bytes(token or b"")
    hello = encode_open(mux.version, raw_token)  # UsageError for a token too long
    kwargs: dict[str, Any] = {}
    if ssl is not None:
        kwargs["ssl"] = ssl
    try:
        ws = await asyncio.wait_for(
            ws_connect(
                url,
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                origin=origin,  # type: ignore[arg-type]
                compression=None,
                max_size=max_message_size,
                open_timeout=timeout,
                close_timeout=_CLOSE_TIMEOUT,
                logger=logging.getLogger("kcprpc.web.websockets"),
                **kwargs,
            ),
            timeout + 1.0,
        )
    except InvalidURI as e:
        raise UsageError(f"connect_websocket: {e}") from None
    except InvalidStatus as e:
        code = e.response.status_code
        status = Status.PERMISSION_DENIED if code == 403 else Status.UNAVAILABLE
        raise RpcError(status, f"websocket {url}: the server answered HTTP {code}") from None
    except (TimeoutError, OSError, InvalidHandshake) as e:
        raise RpcError(Status.UNAVAILABLE, f"websocket {url}: {e or type(e).__name__}") from None
    try:
        msg = await _answer(ws, hello, url, timeout, mux.version)
    except BaseException:
        ws.transport.abort()  # refused, no answer, or the dial was cancelled: nothing to linger for
        raise
    cfg = mux if msg.mux_version == mux.version else replace(mux, version=msg.mux_version)
    pipe = _make_pipe(ws, msg.max_datagram, max_receive_buffer)
    conn = WebConnection(
        pipe,
        client=True,
        mux_config=cfg,
        binding=msg.binding,
        max_datagram_size=msg.max_datagram,
        remote_address=ws.remote_address,
        transport=ws,
    )

    async def pump() -> None:
        def bad(counter: str | None, detail: str, m: Any) -> None:
            log.info("websocket %s: %s", url, detail or "a message the client does not take")

        def closed() -> None:
            rcvd = ws.protocol.close_rcvd
            if rcvd is not None and rcvd.code != 1000:
                conn.peer_closed(rcvd.code, rcvd.reason)

        await _pump(ws, pipe, max_message_size, bad, closed)

    task = asyncio.ensure_future(pump())
    conn.reader_task = task
    return conn


async def _answer(ws: ClientConnection, hello: bytes, url: str, timeout: float, mux_version: int) -> Accept:
    """Send ``OPEN``, read the server's answer: its ``ACCEPT``, or the :class:`RpcError` of a
    ``REFUSE`` (its status and message), of no answer, or of anything else."""
    try:
        await ws.send(hello)
        reply = await asyncio.wait_for(_recv(ws), timeout)
    except TimeoutError:
        raise RpcError(
            Status.UNAVAILABLE, f"websocket {url}: no answer to OPEN within {timeout:g} s"
        ) from None
    except ConnectionClosed as e:
        raise RpcError(Status.UNAVAILABLE, f"websocket {url}: closed ({e})") from None
    if reply is None:
        rcvd = ws.protocol.close_rcvd
        raise RpcError(Status.UNAVAILABLE, f"websocket {url}: closed before ACCEPT ({rcvd})")
    msg = decode(reply) if isinstance(reply, bytes) else None
    if isinstance(msg, Refuse):
        try:
            status = Status(msg.status)
        except ValueError:
            status = Status.UNKNOWN
        raise RpcError(status, msg.message)
    if not isinstance(msg, Accept) or not 1 <= msg.mux_version <= mux_version:
        raise RpcError(Status.UNAVAILABLE, f"websocket {url}: the server did not answer OPEN with ACCEPT")
    return msg


def connect_websocket(
    url: str,
    *,
    token: bytes | str | None = None,
    origin: str | None = None,
    config: ClientConfig | None = None,
    interceptors: Sequence[ClientInterceptor] = (),
    mux: MuxConfig = RPC_MUX_CONFIG,
    ssl: Any = None,
) -> Client:
    """A :class:`kcprpc.Client` for a server's WebSocket listener at ``url``
    (``ws://127.0.0.1:8080/kcprpc``): ``async with connect_websocket(url) as client:`` or
    ``await``. ``token`` goes to the server's ``authorize`` hook; ``origin`` is sent as the
    ``Origin`` header (as a browser would); reconnects dial again. A refusal raises
    :class:`RpcError` with the ``REFUSE`` status and message (UNAUTHENTICATED for a refused token)."""
    cfg = config or ClientConfig()
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        raise UsageError(f"connect_websocket: a ws:// or wss:// URL, not {url!r}")

    async def connector() -> WebConnection:
        return await dial_websocket(
            url, token=token, origin=origin, mux=mux, timeout=cfg.connect_timeout, ssl=ssl
        )

    return Client(connector, config=cfg, interceptors=interceptors)
