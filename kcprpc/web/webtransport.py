"""The WebTransport listener, on aioquic
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
  pipe's receive buffer (``max_receive_buffer`` bytes) is a hard bound on what reaches it, and a
  peer past it is closed and counted (``receive_overflows``). What aioquic itself holds is bounded
  too: bytes behind a gap in a stream (reassembly: twice ``max_receive_buffer``) and HTTP/3 frames
  not yet complete (a frame that claims terabytes is held whole: :data:`MAX_HELD_FRAME_BYTES`),
  summed every :data:`HELD_CHECK_BYTES` received; past either, the connection is closed and
  counted (``receive_overflows``). A client may open :data:`PEER_BIDI_STREAMS` and
  :data:`PEER_UNI_STREAMS` streams (aioquic grants 128 of each).

Bad input (each counted in :meth:`WebTransportListener.stats`, then the session closed): a second
bidirectional stream, a unidirectional stream, a datagram before ``ACCEPT``, an ``OPEN`` that is not
one or not within ``open_timeout``, stream bytes past the receive buffer, capsules past their
bound. A request that is not a WebTransport CONNECT at the path, or from an origin outside
``origins``, is answered ``404``/``403`` (a browser shows only "Opening handshake failed").

What a real browser needs (Chromium 150, found by the spike): see docs/wire-format/web.md,
"WebTransport notes".

The aioquic pieces the client shares, and the aioquic attributes read for lack of an API, are in
:mod:`kcprpc.web.quic`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from aioquic.asyncio.server import QuicServer
from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # (its C module's, re-exported)
from aioquic.h3.connection import H3_ALPN
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    QuicEvent,
)
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from aioquic.quic.retry import QuicRetryTokenHandler

from kcp.batch import open_udp_socket
from kcp.logutil import limit_logger
from kcprpc.errors import UsageError
from kcprpc.transport import spawn
from kcprpc.web.capsules import CapsuleReader
from kcprpc.web.connection import WebConnection, status_close_code
from kcprpc.web.framing import (
    FramingError,
    HandshakeReader,
    Open,
)
from kcprpc.web.listener import Refused, WebListenerBase
from kcprpc.web.options import WebTransportOptions
from kcprpc.web.pipe import WebPipe
from kcprpc.web.quic import (
    CLOSE_TIMEOUT,
    IDLE_TIMEOUT,
    QUIC_DATAGRAM_FRAME,
    Channel,
    CloseAfterStream,
    H3Protocol,
    first_headers,
    limit_peer_streams,
    path_addresses,
    peer_address,
    receive_held,
    stream_bytes_received,
)
from kcprpc.web.quic_admission import DROP, RETRY, QuicAdmission
from kcprpc.web.udp import BatchedDatagramTransport

if TYPE_CHECKING:
    from kcprpc.server import Server

log = logging.getLogger("kcprpc.web")

PEER_BIDI_STREAMS = 4
"""Bidirectional streams a client may open on one QUIC connection: the session's CONNECT stream and
its one stream, and room to spare (aioquic grants 128)."""
PEER_UNI_STREAMS = 8
"""Unidirectional streams: HTTP/3's control and QPACK streams, and room for a browser's others."""
HELD_CHECK_BYTES = 64 * 1024
"""Stream bytes received between two sums of what aioquic holds (:func:`~kcprpc.web.quic.receive_held`):
the check costs nothing while a client sends acks and small calls."""
MAX_HELD_FRAME_BYTES = 64 * 1024
"""HTTP/3 bytes held in frames not yet complete (a request's HEADERS are a few hundred bytes); a
frame that claims more would be held whole, and aioquic's buffer grows by copying itself."""

# -- the listener --------------------------------------------------------------------------------

WT_COUNTERS = (
    "sessions_refused",  # a second WebTransport session on one QUIC connection (HTTP 429)
    "second_streams",  # a second bidirectional stream in a session
    "uni_streams",  # a unidirectional stream
    "datagrams_before_accept",  # a datagram before ACCEPT
    "capsule_errors",  # a capsule on the CONNECT stream over its bound
    "datagrams_congested",  # datagrams dropped while max_datagram_backlog bytes of them waited in QUIC
    "quic_retries",  # new QUIC connections answered with a Retry (past handshake_rate: under load)
    "invalid_tokens",  # Initials whose Retry token did not validate (dropped)
    "handshakes_rate_limited",  # proven Initials over their address's budget under load (dropped)
)
"""The WebTransport listener's own counters (besides :data:`kcprpc.web.listener.LISTENER_COUNTERS`)."""

_WT_PROTOCOL_ERRORS = frozenset(
    {"second_streams", "uni_streams", "datagrams_before_accept", "capsule_errors"}
)


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
        self._udp: BatchedDatagramTransport | None = None
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

    async def start(self, host: str | None, port: int | None, sock: socket.socket | None = None) -> None:
        """Bind the UDP socket and serve (or serve on ``sock``, a bound UDP socket, when given)."""
        opts = self.options
        limit_logger("quic")  # aioquic logs a WARNING for a wrong ALPN or too many streams, per peer
        cfg = QuicConfiguration(
            is_client=False,
            alpn_protocols=H3_ALPN,
            max_datagram_frame_size=QUIC_DATAGRAM_FRAME,
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
            if sock is None:
                sock = open_udp_socket(str(host), int(port or 0))
        except OSError as e:
            raise UsageError(f"cannot listen for WebTransport on {host}:{port}: {e.strerror or e}") from None
        self._quic_server = _AdmittingQuicServer(self, configuration=cfg, create_protocol=make)
        # (batched reads and sends, not asyncio's transport: kcprpc.web.udp says why)
        self._udp = BatchedDatagramTransport(sock, self._quic_server)
        sockname = sock.getsockname()
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
        """Counters, ``connections_open``, the QUIC connections open (``quic_connections``), and
        the socket's: ``packets_in``, ``packets_out``, ``packets_send_dropped`` (past the bound of
        datagrams waiting for a full socket buffer)."""
        out = super().stats()
        out["quic_connections"] = len(self._protocols)
        udp = self._udp
        out["packets_in"] = udp.counters.in_pkts if udp is not None else 0
        out["packets_out"] = udp.counters.out_pkts if udp is not None else 0
        out["packets_send_dropped"] = udp.send_dropped if udp is not None else 0
        return out


class _AdmittingQuicServer(QuicServer):
    """aioquic's server, with the listener's budget of new connections in front of it
    (:mod:`kcprpc.web.quic_admission`): an Initial of a new connection starts its handshake, gets
    a Retry (aioquic makes it, with its address-bound token), or is dropped; one whose token does
    not validate is dropped and counted (``invalid_tokens``) without an answer. aioquic has no
    hook for this: the server's connections by ID (``_protocols``) are read and its token handler
    (``_retry``) set for each new connection's Initial; the integration tests (a client through a
    Retry, a flood past the budget, a forged token) fail if they move."""

    def __init__(self, listener: WebTransportListener, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._listener = listener
        self._tokens = QuicRetryTokenHandler()
        opts = listener.options
        self.admission = QuicAdmission(opts.handshake_rate, opts.handshake_burst, listener.sources.keys, 0)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """Admit (or not) an Initial of a new connection; hand the datagram to aioquic."""
        raw = cast(bytes, data)  # (a datagram transport's: bytes)
        if len(raw) >= 1200 and raw[0] & 0x80:  # a long header, the size of an Initial
            try:
                header = pull_quic_header(
                    Buffer(data=raw), host_cid_length=self._configuration.connection_id_length
                )
            except ValueError:
                return  # (aioquic drops it too)
            new = (
                header.packet_type == QuicPacketType.INITIAL and header.destination_cid not in self._protocols
            )
            if new and not self._admit(header.token, header.destination_cid, addr):
                return
        super().datagram_received(raw, addr)

    def _admit(self, token: bytes, dcid: bytes, addr: Any) -> bool:
        now = self._loop.time()
        if token:
            try:
                self._tokens.validate_token(address=addr, destination_cid=dcid, token=token, now=now)
            except ValueError:
                self._listener.count("invalid_tokens", f"a Retry token that does not validate from {addr!r}")
                return False
        verdict = self.admission.initial(addr, bool(token), int(now * 1000))
        if verdict == RETRY:
            self._listener.count("quic_retries")
        elif verdict == DROP:
            self._listener.count("handshakes_rate_limited", f"new QUIC connections over budget from {addr!r}")
            return False
        # aioquic answers with a Retry, or checks the token, when it has a token handler
        self._retry = self._tokens if verdict == RETRY or token else None  # type: ignore[assignment]
        return True


class _ServerProtocol(H3Protocol):
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
        self._charged = False  # counted against its address's share (WebListenerBase.arrived)
        self._session_timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            opts.open_timeout, self._no_session
        )
        # what aioquic may hold received (receive_held): streams the client may open, and the
        # received bytes at which it is next summed
        limit_peer_streams(self._quic, bidi=PEER_BIDI_STREAMS, uni=PEER_UNI_STREAMS)
        self._held_checked = 0
        self._max_reassembly = 2 * opts.max_receive_buffer

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """As :class:`H3Protocol`; then, every :data:`HELD_CHECK_BYTES` of stream data received, what
        aioquic holds of it is summed: past its bounds the connection is closed and counted."""
        super().datagram_received(data, addr)
        received = stream_bytes_received(self._quic)
        if received - self._held_checked < HELD_CHECK_BYTES or self.terminated:
            return
        self._held_checked = received
        reassembly, frames = receive_held(self._quic, self.h3)
        if reassembly > self._max_reassembly:
            self.listener.count("receive_overflows", f"aioquic held {reassembly} bytes behind gaps")
        elif frames > MAX_HELD_FRAME_BYTES:
            self.listener.count(
                "receive_overflows", f"aioquic held {frames} bytes of unfinished HTTP/3 frames"
            )
        else:
            return
        self._close_quic("receive bound")

    def quic_event_received(self, event: QuicEvent) -> None:
        """Close a connection over the bounds at its first event; else as :class:`H3Protocol`."""
        if self._busy and not self.terminated:
            self._busy = False
            self.listener.count("refused_busy", "over max_connections QUIC connections")
            self._close_quic("server busy")
        elif not self._charged and not self.terminated:  # its address is known from the first event
            self._charged = True
            if not self.listener.arrived(self, peer_address(self._quic)):
                self._close_quic("too many connections from one address")
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
        h = first_headers(event.headers)
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
        h3.send_headers(
            event.stream_id, [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")]
        )
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
        self.listener.left(self)
        udp = self.listener._udp
        if udp is not None:
            for addr in path_addresses(self._quic):
                udp.forget(addr)
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
        self.channel = Channel(proto, session_id, counters=self.listener.counters)
        self.reader = HandshakeReader("open")
        self.capsules = CapsuleReader()
        self.pipe: WebPipe | None = None
        self.conn: WebConnection | None = None
        self.ended = False
        self._aborting = False
        self._opening = False
        self._early = bytearray()  # stream bytes behind OPEN while the authorize hook runs
        self._early_eof = False
        self._close_wait = CloseAfterStream(lambda: self.peer_gone("the client closed the session"))
        loop = asyncio.get_running_loop()
        self._open_timer: asyncio.TimerHandle | None = loop.call_later(opts.open_timeout, self._open_timeout)
        self.address = peer_address(proto._quic)

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
            self._close_wait.on_stream_end()

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
            # (a client's GOAWAY behind the capsule ends its session for good, not kept for a resume)
            self._close_wait.capsule(self.pipe is not None and not self.proto.terminated)

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
            self._close_later(status_close_code(verdict.status), verdict.message, linger=True)
            return
        self.proto._quic.send_stream_data(ch.stream_id, verdict.reply)
        self.proto.transmit()
        pipe = ch.pipe(self._pipe_closed, verdict.max_datagram, self.listener.options.max_receive_buffer)
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
        self._aborting = True
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
        self._close_later(code or 0, reason, linger=not self._aborting)

    def _close_later(self, code: int, reason: str, *, linger: bool = False) -> None:
        if self.ended:
            return
        self.ended = True
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None
        self._close_wait.cancel()
        spawn(self.listener.tasks, self._close(code, reason, linger))

    async def _close(self, code: int, reason: str, linger: bool) -> None:
        """Close the session, let the peer acknowledge the close capsule, close QUIC; each wait
        bounded by :data:`CLOSE_TIMEOUT`.

        ``linger`` (a refusal, an orderly close): first end our stream and wait for the client to
        close the session, so that it reads the stream's last words (``REFUSE``, the mux's
        GOAWAY) before it learns the session is over. Chromium drops a stream's unread bytes,
        and at times the close code too ("Connection lost"), when the session closes under
        them."""
        proto, ch = self.proto, self.channel
        loop = asyncio.get_running_loop()
        try:
            if linger:
                ch.end_stream()
                await ch.wait_for(ch.peer_closed, loop.time() + CLOSE_TIMEOUT)
            ch.close_session(code, reason)
            await ch.wait_for(ch.delivered, loop.time() + CLOSE_TIMEOUT)
            if not proto.terminated:
                proto._quic.close(error_code=0, reason_phrase=reason[:100])
                proto.transmit()
        finally:
            # the pipe is over: the QUIC connection, which drains for three probe timeouts more
            # (seconds on a slow path), holds none of the RPC connection's objects meanwhile
            self.pipe = None
            self.conn = None


async def listen_webtransport(
    server: Server,
    host: str | None = None,
    port: int | None = None,
    options: WebTransportOptions | None = None,
    *,
    sock: socket.socket | None = None,
) -> WebTransportListener:
    """Start a WebTransport listener for ``server`` on UDP ``host:port`` (0: any free port) and
    register it with ``server.add_listener`` (closed by ``server.shutdown()``); returns it (its
    ``address``, ``url`` and ``certificate_hashes`` say where and how a browser connects).
    ``options.certificate`` and ``options.private_key`` are required (``kcprpc web-cert``).
    ``sock``: a UDP socket already bound, served instead of ``host:port`` (e.g. one of the
    ``SO_REUSEPORT`` group :func:`kcprpc.serve_workers` binds before it forks, docs/workers.md)."""
    if sock is None and (host is None or port is None):
        raise UsageError("listen_webtransport needs host and port, or sock=")
    if sock is not None and (host is not None or port is not None):
        raise UsageError("listen_webtransport takes host and port, or sock=, not both")
    if sock is not None and sock.type != socket.SOCK_DGRAM:
        raise UsageError("listen_webtransport: sock must be a UDP (SOCK_DGRAM) socket")
    if options is None or options.certificate is None or options.private_key is None:
        raise UsageError(
            "listen_webtransport needs WebTransportOptions(certificate=..., private_key=...) "
            "(kcprpc web-cert --out DIR makes a development pair)"
        )
    listener = WebTransportListener(server, options)
    await listener.start(host, port, sock)
    server.add_listener(listener)
    return listener


# -- the Python client ---------------------------------------------------------------------------


__all__ = ["WT_COUNTERS", "WebTransportListener", "listen_webtransport"]
