"""The WebTransport listener and the Python WebTransport client, on aioquic
(docs/wire-format/web.md, "Over WebTransport").

A browser opens a WebTransport session (an HTTP/3 extended CONNECT at the listener's path), then
**one** bidirectional stream: ``OPEN`` from the client, ``ACCEPT`` or ``REFUSE`` from the server,
then the raw smux byte stream both ways. WebTransport datagrams carry RPC datagrams as they are.
On the server the stream and the datagrams feed a :class:`~kcprpc.web.pipe.WebPipe`, under a
``MuxConnection`` that ``server.handle_connection`` serves like any KCP session.

aioquic gives the HTTP/3 and WebTransport pieces (``H3Connection(enable_webtransport=True)``:
``SETTINGS_ENABLE_WEBTRANSPORT``, H3 datagrams); this module adds, per QUIC connection, at most
one session and one stream, and the bounds aioquic has not:

* aioquic queues stream data and datagrams without a limit: the pipe's sender waits while more
  than ``send_high_water`` bytes of the stream are unacknowledged, and a datagram is dropped (and
  counted) while ``max_datagram_backlog`` bytes of them wait, or when it is over the datagram size
  (aioquic would keep a datagram that fits no packet at the head of its queue for ever). The
  unacknowledged bytes count in the connection's ``send_backlog``, so a browser that stops
  reading is bounded by the server's slow-consumer checks exactly as a KCP session is.
* aioquic opens its receive windows as data arrives, whether the application read it or not: the
  pipe's receive buffer (``max_receive_buffer`` bytes) is a hard bound, and a peer past it is
  closed and counted (``receive_overflows``).

Bad input (each counted in :meth:`WebTransportListener.stats`, then the session closed): a second
bidirectional stream, a unidirectional stream, a datagram before ``ACCEPT``, an ``OPEN`` that is not
one or not within ``open_timeout``, stream bytes past the receive buffer, capsules past their
bound. A request that is not a WebTransport CONNECT at the path, or from an origin outside
``origins``, is answered ``404``/``403`` (a browser shows only "Opening handshake failed").

What a real browser needs (Chromium 150, found by the spike): see docs/wire-format/web.md,
"WebTransport notes".

aioquic (1.x, the ``web`` extra pins ``<2``) has no public API for some of this, so a few of its
attributes are read here, each in one place: a stream's unacknowledged bytes
(``QuicStream.sender._buffer``) and the datagrams it holds (``QuicConnection._datagrams_pending``)
for the send bounds, the server's certificate (``tls._peer_certificate``) for the client's hash
check, and the client's address (``_network_paths``). The integration tests (a client that stops
reading, a pinned hash) fail if they move.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import ssl
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    ProtocolNegotiated,
    QuicEvent,
    StreamDataReceived,
    StreamReset,
)

from kcprpc.client import Client
from kcprpc.client_config import ClientConfig
from kcprpc.config import RPC_MUX_CONFIG
from kcprpc.errors import RpcError, UsageError
from kcprpc.interceptors import ClientInterceptor
from kcprpc.mux import MuxConfig
from kcprpc.status import Status
from kcprpc.transport import Connection, spawn
from kcprpc.web.connection import WebConnection, status_close_code
from kcprpc.web.framing import (
    MAX_TOKEN,
    Accept,
    FramingError,
    HandshakeReader,
    Message,
    Open,
    Refuse,
    encode_open,
)
from kcprpc.web.listener import Refused, WebListenerBase
from kcprpc.web.options import DEFAULT_PATH, MAX_WEBTRANSPORT_DATAGRAM, WebTransportOptions
from kcprpc.web.pipe import WebPipe

if TYPE_CHECKING:
    from kcprpc.server import Server

log = logging.getLogger("kcprpc.web")

MAX_WT_DATAGRAM = MAX_WEBTRANSPORT_DATAGRAM
"""The largest RPC datagram over WebTransport: Chromium's ``datagrams.maxDatagramSize`` on a
1200-byte QUIC path, and what fits one of aioquic's 1200-byte packets with room to spare."""

CLOSE_WEBTRANSPORT_SESSION = 0x2843
"""The capsule that closes a WebTransport session (draft-02)."""

SEND_HIGH_WATER = 256 * 1024
"""Stream bytes given to QUIC and not acknowledged above which the pipe's sender waits."""
MAX_DATAGRAM_BACKLOG = 64 * 1024
"""Datagram bytes QUIC may hold (congestion control) before more are dropped."""
CLOSE_TIMEOUT = 2.0
"""Seconds a closing session waits for the peer to acknowledge what was sent."""
IDLE_TIMEOUT = 60.0
"""QUIC idle timeout (seconds); the mux's keepalives keep a live session busier than that."""

_MAX_CAPSULE_BUFFER = 4096  # bytes of CONNECT-stream data held while a capsule is incomplete
_QUIC_DATAGRAM_FRAME = 65536  # the max_datagram_frame_size transport parameter both sides send


# -- small pieces both ends use ------------------------------------------------------------------


def _pull_varint(buf: bytes | bytearray, at: int) -> tuple[int, int] | None:
    """A QUIC variable-length integer at ``buf[at:]``: (value, next offset), None if cut short."""
    if at >= len(buf):
        return None
    first = buf[at]
    size = 1 << (first >> 6)
    if at + size > len(buf):
        return None
    value = first & 0x3F
    for i in range(1, size):
        value = (value << 8) | buf[at + i]
    return value, at + size


def _push_varint(value: int) -> bytes:
    if value < 0x40:
        return value.to_bytes(1, "big")
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x40000000:
        return (value | 0x80000000).to_bytes(4, "big")
    return (value | 0xC000000000000000).to_bytes(8, "big")


def close_capsule(code: int = 0, message: str = "") -> bytes:
    """A ``CLOSE_WEBTRANSPORT_SESSION`` capsule: error code u32 and a UTF-8 message (cut to 1024 bytes)."""
    body = (code & 0xFFFFFFFF).to_bytes(4, "big") + message.encode("utf-8")[:1024]
    return _push_varint(CLOSE_WEBTRANSPORT_SESSION) + _push_varint(len(body)) + body


class CapsuleReader:
    """Reads the capsules on a session's CONNECT stream (RFC 9297): only the close matters; others
    (Chromium greases the stream with a reserved type) are skipped. Bounded: a capsule whose
    head says more than ``limit`` bytes is an error."""

    def __init__(self, limit: int = _MAX_CAPSULE_BUFFER) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._close: tuple[int, str] = (0, "")

    def feed(self, data: bytes) -> str | None:
        """``"close"`` once a close capsule is whole, ``"error"`` past the bound, else None."""
        self._buf += data
        while True:
            t = _pull_varint(self._buf, 0)
            if t is None:
                return None
            n = _pull_varint(self._buf, t[1])
            if n is None:
                return None
            ctype, (length, at) = t[0], n
            if length > self._limit:
                return "error"
            if len(self._buf) < at + length:
                return None
            if ctype == CLOSE_WEBTRANSPORT_SESSION:
                body = bytes(self._buf[at : at + length])
                self._close = (int.from_bytes(body[:4], "big") if len(body) >= 4 else 0,
                               body[4:].decode("utf-8", "replace"))
                return "close"
            del self._buf[: at + length]

    def close_info(self) -> tuple[int, str]:
        """The close capsule's error code and message."""
        return self._close


class _H3Protocol(QuicConnectionProtocol):
    """A QUIC connection speaking HTTP/3 with WebTransport; :meth:`progress` wakes whoever waits
    for the peer to acknowledge data (aioquic has no event for it: each :meth:`transmit`, which
    follows every received packet and timer, may be one)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3: H3Connection | None = None
        self._progress: asyncio.Future[None] | None = None
        self.terminated = False

    def transmit(self) -> None:
        """Send what aioquic has to send; wake :meth:`progress` waiters."""
        super().transmit()
        fut = self._progress
        if fut is not None and not fut.done():
            self._progress = None
            fut.set_result(None)

    async def progress(self) -> None:
        """Wait until the next packet or timer was handled."""
        if self._progress is None or self._progress.done():
            self._progress = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._progress)

    def quic_event_received(self, event: QuicEvent) -> None:
        """Hand QUIC events to HTTP/3, and HTTP/3 events to :meth:`h3_event_received`."""
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN and self.h3 is None:
            self.h3 = H3Connection(self._quic, enable_webtransport=True)
        if isinstance(event, ConnectionTerminated):
            self.terminated = True
            self.connection_ended(event.reason_phrase or f"QUIC error 0x{event.error_code:x}")
        if isinstance(event, StreamReset):
            self.stream_reset(event.stream_id)
        if self.h3 is not None:
            for ev in self.h3.handle_event(event):
                self.h3_event_received(ev)
        fut = self._progress  # also the moment the connection ended: waiters must look again
        if self.terminated and fut is not None and not fut.done():
            self._progress = None
            fut.set_result(None)

    def h3_event_received(self, event: H3Event) -> None:
        """One HTTP/3 event (subclasses)."""

    def connection_ended(self, reason: str) -> None:
        """The QUIC connection is over (subclasses)."""

    def stream_reset(self, stream_id: int) -> None:
        """The peer reset a stream (subclasses)."""

    def connection_lost(self, exc: Exception | None) -> None:
        """The UDP endpoint closed."""
        super().connection_lost(exc)
        if not self.terminated:
            self.terminated = True
            self.connection_ended("connection lost")


class _Channel:
    """What both ends do with one session's stream and datagrams: send them with bounds, report
    what the peer has not acknowledged (the pipe's ``transport_backlog``)."""

    def __init__(
        self,
        proto: _H3Protocol,
        session_id: int,
        *,
        send_high_water: int,
        max_datagram_backlog: int,
        counters: dict[str, int],
    ) -> None:
        self.proto = proto
        self.quic: QuicConnection = proto._quic
        self.session_id = session_id
        self.stream_id: int | None = None
        self.send_high_water = send_high_water
        self.max_datagram_backlog = max_datagram_backlog
        self.counters = counters

    def stream_unacked(self) -> int:
        """Stream bytes given to aioquic and not acknowledged by the peer yet."""
        if self.stream_id is None:
            return 0
        stream = self.quic._streams.get(self.stream_id)
        if stream is None:
            return 0
        return len(stream.sender._buffer)

    def datagrams_waiting(self) -> int:
        """Datagram bytes aioquic holds until congestion control lets them go."""
        return sum(len(d) for d in self.quic._datagrams_pending)

    def backlog(self) -> int:
        """Bytes held for the peer below the pipe."""
        return self.stream_unacked() + self.datagrams_waiting()

    async def send_stream(self, chunk: bytes) -> None:
        """Send a chunk of the mux byte stream; returns once fewer than ``send_high_water`` bytes
        wait for the peer's acknowledgement (so a peer that stops reading holds the pipe's queue,
        which the mux and the server's checks see)."""
        assert self.stream_id is not None
        if self.proto.terminated:
            raise ConnectionError("the QUIC connection ended")
        self.quic.send_stream_data(self.stream_id, chunk)
        self.proto.transmit()
        while self.stream_unacked() > self.send_high_water:
            if self.proto.terminated:
                raise ConnectionError("the QUIC connection ended")
            await self.proto.progress()

    def send_datagram(self, data: bytes) -> None:
        """Send one RPC datagram as a WebTransport datagram (dropped and counted while
        ``max_datagram_backlog`` bytes of datagrams wait in aioquic)."""
        if self.proto.terminated:
            raise ConnectionError("the QUIC connection ended")
        if self.datagrams_waiting() + len(data) > self.max_datagram_backlog:
            self.counters["datagrams_congested"] = self.counters.get("datagrams_congested", 0) + 1
            return
        h3 = self.proto.h3
        assert h3 is not None
        h3.send_datagram(self.session_id, data)
        self.proto.transmit()

    def close_session(self, code: int = 0, message: str = "") -> None:
        """End the session: FIN on our stream, the close capsule with FIN on the CONNECT stream."""
        if self.proto.terminated:
            return
        with contextlib.suppress(Exception):
            if self.stream_id is not None:
                self.quic.send_stream_data(self.stream_id, b"", end_stream=True)
        with contextlib.suppress(Exception):
            h3 = self.proto.h3
            if h3 is not None:
                h3.send_data(self.session_id, close_capsule(code, message), end_stream=True)
        self.proto.transmit()


def _peer_address(quic: QuicConnection) -> Any:
    """The client's (host, port), as aioquic's current network path has it."""
    paths = getattr(quic, "_network_paths", None)
    if not paths:
        return None
    addr = paths[0].addr
    host = str(addr[0]).removeprefix("::ffff:")
    return (host, int(addr[1]))


def _headers(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for k, v in headers:
        out.setdefault(k, v)
    return out


def quic_client_configuration(
    host: str,
    *,
    certificate_hashes: list[bytes] | None,
    cafile: str | None,
    verify: bool,
    idle_timeout: float,
) -> QuicConfiguration:
    """The aioquic client configuration for a WebTransport dial."""
    cfg = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        max_datagram_frame_size=_QUIC_DATAGRAM_FRAME,
        server_name=host,
        idle_timeout=idle_timeout,
    )
    if certificate_hashes or not verify:
        cfg.verify_mode = ssl.CERT_NONE  # checked against the hashes once the handshake is done
    elif cafile is not None:
        cfg.load_verify_locations(cafile=cafile)
    return cfg


def server_certificate(proto: QuicConnectionProtocol) -> bytes | None:
    """The DER of the certificate the server showed in the TLS handshake (aioquic keeps it in its
    TLS context only)."""
    cert = getattr(proto._quic.tls, "_peer_certificate", None)
    if cert is None:
        return None
    from cryptography.hazmat.primitives import serialization

    der: bytes = cert.public_bytes(serialization.Encoding.DER)
    return der


# -- the listener --------------------------------------------------------------------------------

WT_COUNTERS = (
    "sessions_refused",  # a second WebTransport session on one QUIC connection (HTTP 429)
    "second_streams",  # a second bidirectional stream in a session
    "uni_streams",  # a unidirectional stream
    "datagrams_before_accept",  # a datagram before ACCEPT
    "capsule_errors",  # a capsule on the CONNECT stream over its bound
    "datagrams_congested",  # datagrams dropped while max_datagram_backlog bytes of them waited in QUIC
)
"""The WebTransport listener's own counters (besides :data:`kcprpc.web.listener.LISTENER_COUNTERS`)."""

_WT_PROTOCOL_ERRORS = frozenset({"second_streams", "uni_streams", "datagrams_before_accept", "capsule_errors"})


class WebTransportListener(WebListenerBase):
    """A WebTransport listener (HTTP/3 over QUIC on one UDP port): see the module.
    :func:`listen_webtransport` starts one."""

    name = "webtransport"

    def __init__(self, server: Server, options: WebTransportOptions) -> None:
        super().__init__(server, options)
        self.options: WebTransportOptions = options
        for c in WT_COUNTERS:
            self.counters.setdefault(c, 0)
        self.address: tuple[str, int] = ("", 0)
        """The (host, port) the listener's UDP socket is bound to."""
        self.certificate_hashes: tuple[str, ...] = options.certificate_hashes
        """Base64 SHA-256 hashes a browser pins (``serverCertificateHashes``): the options', else
        the certificate's own when it is a development certificate (:mod:`kcprpc.web.certs`)."""
        self._quic_server: QuicServer | None = None
        self._protocols: set[_ServerProtocol] = set()
        self._closed = asyncio.Event()

    def count(self, counter: str, detail: str = "") -> None:
        """Count one refusal or drop (the WebTransport protocol errors also in ``protocol_errors``)."""
        super().count(counter, detail)
        if counter in _WT_PROTOCOL_ERRORS:
            self.counters["protocol_errors"] += 1

    @property
    def url(self) -> str:
        """``https://HOST:PORT/PATH`` of this listener."""
        host, port = self.address[0], self.address[1]
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{port}{self.options.path}"

    async def start(self, host: str, port: int) -> None:
        """Bind the UDP socket and serve."""
        opts = self.options
        cfg = QuicConfiguration(
            is_client=False,
            alpn_protocols=H3_ALPN,
            max_datagram_frame_size=_QUIC_DATAGRAM_FRAME,
            idle_timeout=IDLE_TIMEOUT,
        )
        try:
            cfg.load_cert_chain(str(opts.certificate), str(opts.private_key))
        except (OSError, ValueError) as e:
            raise UsageError(
                f"WebTransportOptions: cannot load certificate {opts.certificate} / key {opts.private_key}: {e}"
            ) from None
        if not self.certificate_hashes:
            from kcprpc.web.certs import dev_certificate_hash

            with contextlib.suppress(UsageError, OSError):
                h = dev_certificate_hash(Path(str(opts.certificate)).read_bytes())
                if h is not None:
                    self.certificate_hashes = (base64.b64encode(h).decode("ascii"),)

        def make(*args: Any, **kwargs: Any) -> _ServerProtocol:
            return _ServerProtocol(self, *args, **kwargs)

        try:
            self._quic_server = await serve(host, port, configuration=cfg, create_protocol=make)
        except OSError as e:
            raise UsageError(f"cannot listen for WebTransport on {host}:{port}: {e.strerror or e}") from None
        transport = self._quic_server._transport
        sockname = transport.get_extra_info("sockname") if transport is not None else (host, port)
        self.address = (str(sockname[0]), int(sockname[1]))

    def close(self) -> None:
        """Stop taking sessions, end those open (their sessions close on the server), close the socket."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.drain()
        for p in list(self._protocols):
            p.end("listener closed")  # CONNECTION_CLOSE goes out while the socket is open
        if self._quic_server is not None:
            self._quic_server.close()
        for p in list(self._protocols):  # no event reaches them once the socket is closed
            if not p.terminated:
                p.terminated = True
                p.connection_ended("listener closed")

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` and every connection's session ended."""
        await self._closed.wait()
        await self.close_connections()

    def discovery(self) -> dict[str, Any]:
        """What ``/kcprpc.json`` announces for this listener (docs/wire-format/web.md,
        "Discovery"): its URL and, for a development certificate, the hashes a browser pins.
        A listener bound to every address (``0.0.0.0``, ``::``) names that address: a browser
        client puts the page's host in its place."""
        wt: dict[str, Any] = {"url": self.url}
        if self.certificate_hashes:
            wt["certificateHashes"] = list(self.certificate_hashes)
        return {"webtransport": wt}

    def stats(self) -> dict[str, int]:
        """Counters, ``connections_open`` and the QUIC connections open (``quic_connections``)."""
        out = super().stats()
        out["quic_connections"] = len(self._protocols)
        return out


class _ServerProtocol(_H3Protocol):
    """One QUIC connection to the listener: at most one WebTransport session on it."""

    def __init__(self, listener: WebTransportListener, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listener = listener
        self.session: _ServerSession | None = None
        opts = listener.options
        # QUIC connections are bounded like sessions (one session each): past max_connections a
        # new one is closed at once; one that opens no session within open_timeout is closed
        self._busy = opts.max_connections is not None and len(listener._protocols) >= opts.max_connections
        listener._protocols.add(self)
        self._session_timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            opts.open_timeout, self._no_session
        )

    def quic_event_received(self, event: QuicEvent) -> None:
        """Close a connection over the bound at its first event; else as :class:`_H3Protocol`."""
        if self._busy and not self.terminated:
            self._busy = False
            self.listener.count("refused_busy", "over max_connections QUIC connections")
            self._close_quic("server busy")
        super().quic_event_received(event)

    def _no_session(self) -> None:
        self._session_timer = None
        if self.session is None and not self.terminated:
            self.listener.count("open_timeouts", "no WebTransport session within open_timeout")
            self._close_quic("no session in time")

    def _close_quic(self, reason: str) -> None:
        with contextlib.suppress(Exception):
            self._quic.close(error_code=0, reason_phrase=reason)
        self.transmit()

    def h3_event_received(self, event: H3Event) -> None:
        """Route one HTTP/3 event."""
        s = self.session
        if isinstance(event, HeadersReceived):
            if s is not None and event.stream_id == s.session_id:
                return  # trailers on the CONNECT stream: nothing to do
            self._on_request(event)
        elif isinstance(event, WebTransportStreamDataReceived):
            if s is not None and event.session_id == s.session_id:
                s.on_stream_data(event.stream_id, event.data, event.stream_ended)
            else:  # a stream for no session of ours: stop it
                self._reset(event.stream_id)
        elif isinstance(event, DatagramReceived):
            if s is not None and event.stream_id == s.session_id:
                s.on_datagram(event.data)
        elif isinstance(event, DataReceived) and s is not None and event.stream_id == s.session_id:
            s.on_capsules(event.data, event.stream_ended)

    def _reset(self, stream_id: int) -> None:
        with contextlib.suppress(Exception):
            self._quic.reset_stream(stream_id, 0x10C)  # H3_REQUEST_REJECTED-like
        with contextlib.suppress(Exception):
            self._quic.stop_stream(stream_id, 0x10C)
        self.transmit()

    def _respond(self, stream_id: int, status: int, counter: str | None, detail: str) -> None:
        if counter is not None:
            self.listener.count(counter, detail)
        h3 = self.h3
        assert h3 is not None
        with contextlib.suppress(Exception):
            h3.send_headers(stream_id, [(b":status", str(status).encode())], end_stream=True)
        self.transmit()

    def _on_request(self, event: HeadersReceived) -> None:
        h = _headers(event.headers)
        opts = self.listener.options
        if h.get(b":method") != b"CONNECT" or h.get(b":protocol") != b"webtransport":
            self._respond(event.stream_id, 404, "bad_requests", "not a WebTransport CONNECT")
            return
        path = h.get(b":path", b"").decode("latin-1").split("?", 1)[0]
        if path != opts.path:
            self._respond(event.stream_id, 404, "bad_requests", f"path {path!r}")
            return
        raw_origin = h.get(b"origin")
        origin = raw_origin.decode("latin-1") if raw_origin is not None else None
        if not self.listener.origin_allowed(origin):
            self._respond(event.stream_id, 403, None, "")
            return
        if self.session is not None:
            self._respond(event.stream_id, 429, "sessions_refused", "a second session on one QUIC connection")
            return
        h3 = self.h3
        assert h3 is not None
        h3.send_headers(event.stream_id, [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")])
        self.transmit()
        self.session = _ServerSession(self, event.stream_id)
        if self._session_timer is not None:
            self._session_timer.cancel()
            self._session_timer = None

    def stream_reset(self, stream_id: int) -> None:
        """A reset of the session's stream or CONNECT stream ends the session."""
        s = self.session
        if s is not None and stream_id in (s.channel.stream_id, s.session_id):
            s.peer_gone("stream reset")

    def connection_ended(self, reason: str) -> None:
        """The QUIC connection ended: the session too."""
        self.listener._protocols.discard(self)
        if self._session_timer is not None:
            self._session_timer.cancel()
            self._session_timer = None
        if self.session is not None:
            self.session.peer_gone(reason)

    def end(self, reason: str) -> None:
        """Close the QUIC connection (the listener closes)."""
        if self.session is not None:
            self.session.abort(reason)
        self._close_quic(reason)


class _ServerSession:
    """One WebTransport session: ``OPEN`` on its stream, then the pipe."""

    def __init__(self, proto: _ServerProtocol, session_id: int) -> None:
        self.proto = proto
        self.listener = proto.listener
        self.session_id = session_id
        opts = self.listener.options
        self.channel = _Channel(
            proto,
            session_id,
            send_high_water=SEND_HIGH_WATER,
            max_datagram_backlog=MAX_DATAGRAM_BACKLOG,
            counters=self.listener.counters,
        )
        self.reader = HandshakeReader("open")
        self.capsules = CapsuleReader()
        self.pipe: WebPipe | None = None
        self.conn: WebConnection | None = None
        self.ended = False
        self._opening = False
        self._early = bytearray()  # stream bytes behind OPEN while the authorize hook runs
        self._early_eof = False
        loop = asyncio.get_running_loop()
        self._open_timer: asyncio.TimerHandle | None = loop.call_later(opts.open_timeout, self._open_timeout)
        self.address = _peer_address(proto._quic)

    # -- input -------------------------------------------------------------------------------------

    def on_stream_data(self, stream_id: int, data: bytes, ended: bool) -> None:
        """Bytes on a stream of this session."""
        if self.ended:
            return
        if stream_id & 0x2:  # unidirectional
            self.proto._reset(stream_id)
            self.protocol_error("uni_streams", "a unidirectional stream")
            return
        ch = self.channel
        if ch.stream_id is None:
            ch.stream_id = stream_id
        elif stream_id != ch.stream_id:
            self.proto._reset(stream_id)
            self.protocol_error("second_streams", "a second bidirectional stream")
            return
        if self.pipe is None:
            if self._opening:  # more bytes while the hook decides: they wait behind OPEN
                self._early.extend(data)
                if len(self._early) > self.listener.options.max_message_size:
                    self.protocol_error("oversized", "bytes behind OPEN past max_message_size")
                elif ended:
                    self._early_eof = True
                return
            msg = self.reader.feed(data)
            if msg is None:
                if ended:
                    self.protocol_error("malformed", "the stream ended inside OPEN")
                return
            if isinstance(msg, FramingError):
                self.listener.count_framing(msg)
                self.abort("not an OPEN")
                return
            if not isinstance(msg, Open):
                self.listener.count_unexpected(msg, first=True)
                self.abort("not an OPEN")
                return
            self._opening = True
            self._early = bytearray(self.reader.rest)
            self._early_eof = ended
            spawn(self.listener.tasks, self._admit(msg))
            return
        self._feed(data, ended)

    def _feed(self, data: bytes, ended: bool) -> None:
        pipe = self.pipe
        assert pipe is not None
        if data and not pipe.feed_stream(data):
            self.listener.count("receive_overflows", "stream bytes past max_receive_buffer")
            self.abort("receive buffer overflow")
            return
        if ended:
            pipe.feed_eof()

    def on_datagram(self, data: bytes) -> None:
        """One WebTransport datagram of this session."""
        if self.ended:
            return
        if self.pipe is None:
            self.protocol_error("datagrams_before_accept", "a datagram before ACCEPT")
            return
        self.pipe.feed_datagram(data)  # over the size or the queue: dropped and counted by the pipe

    def on_capsules(self, data: bytes, ended: bool) -> None:
        """Data on the CONNECT stream: capsules; the close capsule or the stream's end ends the session."""
        if self.ended:
            return
        verdict = self.capsules.feed(data) if data else None
        if verdict == "error":
            self.protocol_error("capsule_errors", "a capsule over its bound")
        elif verdict == "close" or ended:
            self.peer_gone("the client closed the session")

    # -- OPEN ----------------------------------------------------------------------------------------

    def _open_timeout(self) -> None:
        self._open_timer = None
        if self.pipe is None and not self._opening and not self.ended:
            self.listener.count("open_timeouts", f"no OPEN within {self.listener.options.open_timeout} s")
            self.abort("no OPEN in time")

    async def _admit(self, msg: Open) -> None:
        verdict = await self.listener.admit(msg, self.address)
        if self.ended:
            return
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None
        ch = self.channel
        assert ch.stream_id is not None
        if isinstance(verdict, Refused):
            with contextlib.suppress(Exception):
                self.proto._quic.send_stream_data(ch.stream_id, verdict.reply, end_stream=True)
            self._close_later(status_close_code(verdict.status), verdict.message)
            return
        self.proto._quic.send_stream_data(ch.stream_id, verdict.reply)
        self.proto.transmit()
        opts = self.listener.options
        pipe = WebPipe(
            ch.send_stream,
            ch.send_datagram,
            transport_backlog=ch.backlog,
            on_close=self._pipe_closed,
            max_receive_buffer=opts.max_receive_buffer,
            max_datagram_size=min(verdict.max_datagram, MAX_WT_DATAGRAM),
            send_high_water=SEND_HIGH_WATER,
            max_datagram_backlog=MAX_DATAGRAM_BACKLOG,
        )
        self.pipe = pipe
        self.conn = self.listener.serve(pipe, verdict, self.address, transport=self.proto)
        early, self._early = bytes(self._early), bytearray()
        self._feed(early, self._early_eof)

    # -- ending --------------------------------------------------------------------------------------

    def protocol_error(self, counter: str, detail: str) -> None:
        """Count ``counter`` and close the session."""
        self.listener.count(counter, detail)
        self.abort(detail)

    def abort(self, reason: str) -> None:
        """End the session now (a protocol error, the listener closing)."""
        if self.pipe is not None:
            self.pipe.abort(None, reason)  # its on_close closes the session
        else:
            self._close_later(0, reason)

    def peer_gone(self, reason: str) -> None:
        """The client closed the session or the QUIC connection ended."""
        if self.pipe is not None:
            self.pipe.feed_eof()
            if self.proto.terminated:
                self.pipe.abort(None, reason)
        elif not self.ended:
            self._close_later(0, reason)

    async def _pipe_closed(self, code: int | None, reason: str) -> None:
        self._close_later(code or 0, reason)

    def _close_later(self, code: int, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None
        spawn(self.listener.tasks, self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        """Close the session, let the peer acknowledge what was sent (bounded), close QUIC."""
        proto, ch = self.proto, self.channel
        ch.close_session(code, reason)
        loop = asyncio.get_running_loop()
        end = loop.time() + CLOSE_TIMEOUT
        while not proto.terminated and ch.stream_unacked() > 0 and loop.time() < end:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proto.progress(), max(0.0, end - loop.time()))
        if not proto.terminated:
            proto._quic.close(error_code=0, reason_phrase=reason[:100])
            proto.transmit()


async def listen_webtransport(
    server: Server, host: str, port: int, options: WebTransportOptions | None = None
) -> WebTransportListener:
    """Start a WebTransport listener for ``server`` on UDP ``host:port`` (0: any free port) and
    register it with ``server.add_listener`` (closed by ``server.shutdown()``); returns it (its
    ``address``, ``url`` and ``certificate_hashes`` say where and how a browser connects).
    ``options.certificate`` and ``options.private_key`` are required (``kcprpc web-cert``)."""
    if options is None or options.certificate is None or options.private_key is None:
        raise UsageError(
            "listen_webtransport needs WebTransportOptions(certificate=..., private_key=...) "
            "(kcprpc web-cert --out DIR makes a development pair)"
        )
    listener = WebTransportListener(server, options)
    await listener.start(host, port)
    server.add_listener(listener)
    return listener


# -- the Python client ---------------------------------------------------------------------------


class _ClientProtocol(_H3Protocol):
    """The client's QUIC connection: one session, its stream and datagrams."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_id: int | None = None
        self.response: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.channel: _Channel | None = None
        self.reader = HandshakeReader("reply")
        self.reply: asyncio.Future[Message | FramingError] = asyncio.get_running_loop().create_future()
        self.pipe: WebPipe | None = None
        self.conn: WebConnection | None = None
        self.capsules = CapsuleReader()
        self.ended = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.closer: asyncio.Future[None] | None = None  # closes QUIC once the session ended

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

    def h3_event_received(self, event: H3Event) -> None:
        """Route one HTTP/3 event of our session."""
        if isinstance(event, HeadersReceived) and event.stream_id == self.session_id:
            if not self.response.done():
                status = _headers(event.headers).get(b":status", b"0")
                self.response.set_result(int(status) if status.isdigit() else 0)
        elif isinstance(event, DatagramReceived) and event.stream_id == self.session_id:
            if self.pipe is not None:
                self.pipe.feed_datagram(event.data)
        elif isinstance(event, DataReceived) and event.stream_id == self.session_id:
            verdict = self.capsules.feed(event.data) if event.data else None
            if verdict == "close":
                self.close_code, self.close_reason = self.capsules.close_info()
            if verdict is not None or event.stream_ended:
                self._session_ended()

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
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(f"a WebTransport URL is https://HOST:PORT/PATH, not {url!r}")
    host, port, path = parts.hostname, parts.port or 443, parts.path or DEFAULT_PATH
    raw_token = token.encode("utf-8") if isinstance(token, str) else bytes(token or b"")
    if len(raw_token) > MAX_TOKEN:
        raise UsageError(f"the token is {len(raw_token)} bytes, at most {MAX_TOKEN}")
    hashes = [bytes(h) for h in certificate_hashes or ()]
    for h in hashes:
        if len(h) != 32:
            raise UsageError("certificate_hashes are SHA-256 digests (32 bytes each)")
    mux_config = mux or RPC_MUX_CONFIG
    cfg = quic_client_configuration(
        host, certificate_hashes=hashes, cafile=cafile, verify=verify, idle_timeout=IDLE_TIMEOUT
    )
    stack = contextlib.AsyncExitStack()
    try:
        try:
            proto = await asyncio.wait_for(
                stack.enter_async_context(connect(host, port, configuration=cfg, create_protocol=_ClientProtocol)),
                timeout,
            )
        except asyncio.TimeoutError:
            raise RpcError(Status.UNAVAILABLE, f"no QUIC answer from {host}:{port} within {timeout} s") from None
        except ConnectionError as e:
            raise RpcError(Status.UNAVAILABLE, f"WebTransport to {host}:{port}: {e}") from None
        assert isinstance(proto, _ClientProtocol)
        if hashes:
            der = server_certificate(proto)
            if der is None or hashlib.sha256(der).digest() not in hashes:
                raise RpcError(Status.UNAUTHENTICATED, f"the certificate of {host}:{port} matches no certificate hash")
        conn = await asyncio.wait_for(
            _open_session(proto, host, port, path, origin, raw_token, mux_config), timeout
        )
    except asyncio.TimeoutError:
        await stack.aclose()
        raise RpcError(Status.UNAVAILABLE, f"WebTransport to {url}: no ACCEPT within {timeout} s") from None
    except BaseException:
        await stack.aclose()
        raise
    proto.closer = asyncio.ensure_future(_close_when_done(proto, stack))  # held as long as the connection
    return conn


async def _open_session(
    proto: _ClientProtocol, host: str, port: int, path: str, origin: str | None, token: bytes, mux: MuxConfig
) -> WebConnection:
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
    ch = _Channel(proto, sid, send_high_water=SEND_HIGH_WATER, max_datagram_backlog=MAX_DATAGRAM_BACKLOG, counters={})
    ch.stream_id = stream_id
    proto.channel = ch
    quic.send_stream_data(stream_id, encode_open(mux.version, token))
    proto.transmit()
    reply = await proto.reply
    if isinstance(reply, Refuse):
        raise RpcError(Status(reply.status) if reply.status in Status._value2member_map_ else Status.UNAVAILABLE,
                       reply.message)
    if not isinstance(reply, Accept):
        detail = reply.detail if isinstance(reply, FramingError) else type(reply).__name__
        raise RpcError(Status.UNAVAILABLE, f"WebTransport: not an ACCEPT from the server: {detail}")
    if reply.mux_version > mux.version or reply.mux_version < 1:
        raise RpcError(Status.FAILED_PRECONDITION, f"the server chose mux version {reply.mux_version}")
    if reply.mux_version != mux.version:
        mux = replace(mux, version=reply.mux_version)
    maxd = min(reply.max_datagram, MAX_WT_DATAGRAM)

    async def on_close(code: int | None, reason: str) -> None:
        ch.close_session(code or 0, reason)
        proto.ended.set()

    pipe = WebPipe(
        ch.send_stream,
        ch.send_datagram,
        transport_backlog=ch.backlog,
        on_close=on_close,
        max_datagram_size=maxd,
        send_high_water=SEND_HIGH_WATER,
        max_datagram_backlog=MAX_DATAGRAM_BACKLOG,
    )
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
        loop = asyncio.get_running_loop()
        end = loop.time() + CLOSE_TIMEOUT
        while ch is not None and not proto.terminated and ch.stream_unacked() > 0 and loop.time() < end:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proto.progress(), max(0.0, end - loop.time()))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stack.aclose(), CLOSE_TIMEOUT)


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
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(f"a WebTransport URL is https://HOST:PORT/PATH, not {url!r}")
    cfg = config or ClientConfig()

    async def connector() -> Connection:
        return await dial_webtransport(
            url,
            token=token,
            certificate_hashes=certificate_hashes,
            cafile=cafile,
            verify=verify,
            origin=origin,
            mux=mux,
            timeout=cfg.connect_timeout,
        )

    return Client(connector, config=cfg, interceptors=interceptors)


__all__ = [
    "CLOSE_WEBTRANSPORT_SESSION",
    "MAX_WT_DATAGRAM",
    "WT_COUNTERS",
    "CapsuleReader",
    "WebTransportListener",
    "close_capsule",
    "connect_webtransport",
    "dial_webtransport",
    "listen_webtransport",
    "quic_client_configuration",
    "server_certificate",
]
