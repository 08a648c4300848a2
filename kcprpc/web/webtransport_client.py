"""The Python WebTransport client (docs/wire-format/web.md, "Over WebTransport"), on aioquic:
:func:`dial_webtransport` opens one connection, :func:`connect_webtransport` a :class:`kcprpc.Client`
that dials again on reconnect. The server certificate is checked against ``certificate_hashes``
(as a browser's ``serverCertificateHashes``) before ``OPEN`` carries the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from aioquic.asyncio.client import connect
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    HeadersReceived,
)
from aioquic.quic.events import (
    QuicEvent,
    StreamDataReceived,
)

from kcprpc.client import Client
from kcprpc.client_config import ClientConfig
from kcprpc.config import RPC_MUX_CONFIG
from kcprpc.errors import RpcError, UsageError
from kcprpc.interceptors import ClientInterceptor
from kcprpc.mux import MuxConfig
from kcprpc.status import Status
from kcprpc.transport import Connection
from kcprpc.web.capsules import CapsuleReader
from kcprpc.web.connection import WebConnection
from kcprpc.web.framing import (
    MAX_TOKEN,
    Accept,
    FramingError,
    HandshakeReader,
    Message,
    Refuse,
    encode_open,
)
from kcprpc.web.options import DEFAULT_PATH
from kcprpc.web.pipe import WebPipe
from kcprpc.web.quic import (
    CLOSE_TIMEOUT,
    IDLE_TIMEOUT,
    Channel,
    CloseAfterStream,
    H3Protocol,
    first_headers,
    quic_client_configuration,
    server_certificate,
)

log = logging.getLogger("kcprpc.web")


class _ClientProtocol(H3Protocol):
    """The client's QUIC connection: one session, its stream and datagrams."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_id: int | None = None
        self.response: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.channel: Channel | None = None
        self.reader = HandshakeReader("reply")
        self.reply: asyncio.Future[Message | FramingError] = asyncio.get_running_loop().create_future()
        self.pipe: WebPipe | None = None
        self.conn: WebConnection | None = None
        self.capsules = CapsuleReader()
        self.ended = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.closer: asyncio.Future[None] | None = None  # closes QUIC once the session ended
        self.close_wait = CloseAfterStream(self._session_ended)

    def quic_event_received(self, event: QuicEvent) -> None:
        """Our session's stream is read here, past HTTP/3 (aioquic's H3 layer would parse the
        server's bytes on a stream the client opened as HTTP frames)."""
        ch = self.channel
        if isinstance(event, StreamDataReceived) and ch is not None and event.stream_id == ch.stream_id:
            self._on_stream(event.data, event.end_stream)
            return
        super().quic_event_received(event)

    def _on_stream(self, data: bytes, ended: bool) -> None:
        if self.pipe is None:
            if self.reply.done():
                return
            msg = self.reader.feed(data)
            if msg is None and ended:
                msg = FramingError("malformed", "the stream ended before ACCEPT")
            if msg is not None:
                self.reply.set_result(msg)
            return
        if data and not self.pipe.feed_stream(data):
            self.pipe.abort(None, "receive buffer overflow")
        if ended:
            self.pipe.feed_eof()
            self.close_wait.on_stream_end()

    def h3_event_received(self, event: H3Event) -> None:
        """Route one HTTP/3 event of our session."""
        if isinstance(event, HeadersReceived) and event.stream_id == self.session_id:
            if not self.response.done():
                status = first_headers(event.headers).get(b":status", b"0")
                self.response.set_result(int(status) if status.isdigit() else 0)
        elif isinstance(event, DatagramReceived) and event.stream_id == self.session_id:
            if self.pipe is not None:
                self.pipe.feed_datagram(event.data)
        elif isinstance(event, DataReceived) and event.stream_id == self.session_id:
            verdict = self.capsules.feed(event.data) if event.data else None
            if verdict == "close":
                self.close_code, self.close_reason = self.capsules.close_info()
            if verdict is not None or event.stream_ended:
                self.close_wait.capsule(self.pipe is not None)

    def stream_reset(self, stream_id: int) -> None:
        """The server reset our session's stream: nothing more comes on it."""
        ch = self.channel
        if ch is not None and stream_id == ch.stream_id:
            self.close_wait.on_stream_end()

    def _session_ended(self) -> None:
        if self.conn is not None and not self.ended.is_set():
            self.conn.peer_closed(self.close_code, self.close_reason)
        self.ended.set()
        if self.pipe is not None:
            self.pipe.feed_eof()
        if not self.response.done():
            self.response.set_result(0)

    def connection_ended(self, reason: str) -> None:
        """The QUIC connection is over."""
        self.close_wait.cancel()
        if not self.close_reason:
            self.close_reason = reason
        self._session_ended()
        if self.pipe is not None:
            self.pipe.abort(None, reason)
        if not self.reply.done():
            self.reply.set_result(FramingError("malformed", f"the connection ended before ACCEPT: {reason}"))


_HTTP_STATUS = {
    403: (Status.PERMISSION_DENIED, "the server refused this origin (HTTP 403)"),
    404: (Status.UNAVAILABLE, "no WebTransport endpoint at this path (HTTP 404)"),
    429: (Status.RESOURCE_EXHAUSTED, "the server refused the session (HTTP 429)"),
}


async def dial_webtransport(
    url: str,
    *,
    token: bytes | str | None = None,
    certificate_hashes: list[bytes] | tuple[bytes, ...] | None = None,
    cafile: str | None = None,
    verify: bool = True,
    origin: str | None = None,
    mux: MuxConfig | None = None,
    timeout: float = 5.0,
) -> WebConnection:
    """One WebTransport connection to ``url`` (``https://HOST:PORT/PATH``): the QUIC and TLS
    handshake (the server's certificate checked against ``certificate_hashes``, SHA-256 of its DER,
    or against ``cafile``/the system's roots unless ``verify=False``), the session, ``OPEN`` with
    ``token``; returns the connection once ``ACCEPT`` came. Raises :class:`RpcError`: the REFUSE's
    status, ``UNAUTHENTICATED`` for a certificate that matches no hash, ``PERMISSION_DENIED`` for
    a refused origin, ``UNAVAILABLE`` when nothing answers within ``timeout``."""
    return await _dial(_target(url, token, certificate_hashes, cafile, verify, origin, mux), timeout)


@dataclass(frozen=True)
class _Target:
    """What :func:`dial_webtransport` and :func:`connect_webtransport` are given, checked once."""

    url: str
    host: str
    port: int
    path: str
    token: bytes
    hashes: list[bytes]
    cafile: str | None
    verify: bool
    origin: str | None
    mux: MuxConfig


def _target(
    url: str,
    token: bytes | str | None,
    certificate_hashes: list[bytes] | tuple[bytes, ...] | None,
    cafile: str | None,
    verify: bool,
    origin: str | None,
    mux: MuxConfig | None,
) -> _Target:
    """The arguments checked (UsageError for a URL that is not https://, a token too long, a
    hash that is not 32 bytes) and normalised."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(f"a WebTransport URL is https://HOST:PORT/PATH, not {url!r}")
    raw_token = token.encode("utf-8") if isinstance(token, str) else bytes(token or b"")
    if len(raw_token) > MAX_TOKEN:
        raise UsageError(f"the token is {len(raw_token)} bytes, at most {MAX_TOKEN}")
    hashes = [bytes(h) for h in certificate_hashes or ()]
    for h in hashes:
        if len(h) != 32:
            raise UsageError("certificate_hashes are SHA-256 digests (32 bytes each)")
    return _Target(
        url, parts.hostname, parts.port or 443, parts.path or DEFAULT_PATH, raw_token, hashes, cafile, verify, origin,
        mux or RPC_MUX_CONFIG,
    )  # fmt: skip


async def _dial(target: _Target, timeout: float) -> WebConnection:
    url, host, port, hashes = target.url, target.host, target.port, target.hashes
    cfg = quic_client_configuration(
        host, certificate_hashes=hashes, cafile=target.cafile, verify=target.verify, idle_timeout=IDLE_TIMEOUT
    )
    stack = contextlib.AsyncExitStack()
    try:
        try:
            proto = await asyncio.wait_for(
                stack.enter_async_context(
                    connect(host, port, configuration=cfg, create_protocol=_ClientProtocol)
                ),
                timeout,
            )
        except TimeoutError:
            raise RpcError(
                Status.UNAVAILABLE, f"no QUIC answer from {host}:{port} within {timeout} s"
            ) from None
        except ConnectionError as e:
            raise RpcError(Status.UNAVAILABLE, f"WebTransport to {host}:{port}: {e}") from None
        assert isinstance(proto, _ClientProtocol)
        if hashes:
            der = server_certificate(proto)
            if der is None or hashlib.sha256(der).digest() not in hashes:
                raise RpcError(
                    Status.UNAUTHENTICATED, f"the certificate of {host}:{port} matches no certificate hash"
                )
        conn = await asyncio.wait_for(_open_session(proto, target), timeout)
    except TimeoutError:
        await stack.aclose()
        raise RpcError(Status.UNAVAILABLE, f"WebTransport to {url}: no ACCEPT within {timeout} s") from None
    except BaseException:
        await stack.aclose()
        raise
    proto.closer = asyncio.ensure_future(_close_when_done(proto, stack))  # held as long as the connection
    return conn


async def _open_session(proto: _ClientProtocol, target: _Target) -> WebConnection:
    host, port, path, origin, token, mux = (
        target.host,
        target.port,
        target.path,
        target.origin,
        target.token,
        target.mux,
    )
    h3 = proto.h3
    if h3 is None:
        raise RpcError(Status.UNAVAILABLE, f"{host}:{port} does not speak HTTP/3")
    quic = proto._quic
    sid = quic.get_next_available_stream_id()
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    headers = [
        (b":method", b"CONNECT"),
        (b":protocol", b"webtransport"),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
        (b"sec-webtransport-http3-draft02", b"1"),
    ]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    proto.session_id = sid
    h3.send_headers(sid, headers)
    proto.transmit()
    status = await proto.response
    if status != 200:
        st, msg = _HTTP_STATUS.get(status, (Status.UNAVAILABLE, f"the server answered HTTP {status}"))
        raise RpcError(st, msg)
    stream_id = h3.create_webtransport_stream(sid, is_unidirectional=False)
    ch = Channel(proto, sid, counters={})
    ch.stream_id = stream_id
    proto.channel = ch
    quic.send_stream_data(stream_id, encode_open(mux.version, token))
    proto.transmit()
    reply = await proto.reply
    if isinstance(reply, Refuse):
        raise RpcError(
            Status(reply.status) if reply.status in Status._value2member_map_ else Status.UNAVAILABLE,
            reply.message,
        )
    if not isinstance(reply, Accept):
        detail = reply.detail if isinstance(reply, FramingError) else type(reply).__name__
        raise RpcError(Status.UNAVAILABLE, f"WebTransport: not an ACCEPT from the server: {detail}")
    if reply.mux_version > mux.version or reply.mux_version < 1:
        raise RpcError(Status.FAILED_PRECONDITION, f"the server chose mux version {reply.mux_version}")
    if reply.mux_version != mux.version:
        mux = replace(mux, version=reply.mux_version)

    async def on_close(code: int | None, reason: str) -> None:
        ch.close_session(code or 0, reason)
        proto.ended.set()

    pipe = ch.pipe(on_close, reply.max_datagram)
    maxd = pipe.max_datagram_size
    proto.pipe = pipe
    conn = WebConnection(
        pipe,
        client=True,
        mux_config=mux,
        binding=reply.binding,
        max_datagram_size=maxd,
        remote_address=(host, port),
        transport=proto,
    )
    proto.conn = conn
    if proto.reader.rest and not pipe.feed_stream(proto.reader.rest):
        pipe.abort(None, "receive buffer overflow")
    return conn


async def _close_when_done(proto: _ClientProtocol, stack: contextlib.AsyncExitStack) -> None:
    """Close the QUIC connection once the session ended (after the peer acknowledged our close,
    bounded by :data:`CLOSE_TIMEOUT`)."""
    try:
        await proto.ended.wait()
        ch = proto.channel
        if ch is not None:
            await ch.wait_for(ch.delivered, asyncio.get_running_loop().time() + CLOSE_TIMEOUT)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stack.aclose(), CLOSE_TIMEOUT)
        # aioquic's connect() closes its socket only after the connection has drained (three
        # probe timeouts, seconds after a stall or on a lossy path): when the wait above ran out,
        # that never happened, and the socket and the connection's objects stayed for good
        proto.close_transport()


def connect_webtransport(
    url: str,
    *,
    token: bytes | str | None = None,
    certificate_hashes: list[bytes] | tuple[bytes, ...] | None = None,
    cafile: str | None = None,
    verify: bool = True,
    origin: str | None = None,
    mux: MuxConfig | None = None,
    config: ClientConfig | None = None,
    interceptors: Sequence[ClientInterceptor] = (),
) -> Client:
    """A :class:`kcprpc.Client` over WebTransport to ``url`` (``https://HOST:PORT/kcprpc``), used
    as ``kcprpc.connect``'s is: ``async with connect_webtransport(url, certificate_hashes=[h]) as c``.
    Every (re)connect dials with :func:`dial_webtransport` (``config.connect_timeout`` bounds it)."""
    target = _target(url, token, certificate_hashes, cafile, verify, origin, mux)
    cfg = config or ClientConfig()

    async def connector() -> Connection:
        return await _dial(target, cfg.connect_timeout)

    return Client(connector, config=cfg, interceptors=interceptors)


__all__ = ["connect_webtransport", "dial_webtransport"]
