"""The aioquic pieces both WebTransport ends use (:mod:`kcprpc.web.webtransport`, the listener, and
:mod:`kcprpc.web.webtransport_client`): :class:`H3Protocol` (a QUIC connection speaking HTTP/3 with
WebTransport), :class:`Channel` (one session's stream and datagrams, sent with bounds), the client's
QUIC configuration and the server certificate it saw.

aioquic (1.x, the ``web`` extra pins ``<2``) has no public API for some of this, so a few of its
attributes are read here, each in one place: a stream's unacknowledged bytes
(``QuicStream.sender._buffer``) and the datagrams it holds (``QuicConnection._datagrams_pending``)
for the send bounds, the server's certificate (``tls._peer_certificate``) for the client's hash
check, the client's address (``_network_paths``), the UDP transport under a connection
(``_transport``, which the client closes itself when its close timed out), and, for the listener's
receive bounds, the streams the peer may open (``_local_max_streams_*``), the stream bytes
received (``_local_max_data.used``) and what is held of them (``QuicStream.receiver._buffer``,
``H3Stream.buffer``). The integration tests
(a client that stops reading, a pinned hash, a close that is never acknowledged) fail if they move.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import (
    H3Event,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    ProtocolNegotiated,
    QuicEvent,
    StreamReset,
)

from kcprpc.web.capsules import close_capsule
from kcprpc.web.options import MAX_WEBTRANSPORT_DATAGRAM
from kcprpc.web.pipe import MAX_RECEIVE_BUFFER, WebPipe

MAX_WT_DATAGRAM = MAX_WEBTRANSPORT_DATAGRAM
"""The largest RPC datagram over WebTransport: Chromium's ``datagrams.maxDatagramSize`` on a
1200-byte QUIC path, and what fits one of aioquic's 1200-byte packets with room to spare."""


SEND_HIGH_WATER = 256 * 1024
"""Stream bytes given to QUIC and not acknowledged above which the pipe's sender waits."""
MAX_DATAGRAM_BACKLOG = 64 * 1024
"""Datagram bytes QUIC may hold (congestion control) before more are dropped."""
CLOSE_TIMEOUT = 2.0
"""Seconds a closing session waits for the peer to acknowledge what was sent."""
IDLE_TIMEOUT = 60.0
"""QUIC idle timeout (seconds); the mux's keepalives keep a live session busier than that."""

QUIC_DATAGRAM_FRAME = 65536
"""The ``max_datagram_frame_size`` transport parameter both sides send."""


class H3Protocol(QuicConnectionProtocol):
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

    def close_transport(self) -> None:
        """Close the UDP endpoint under this connection (its socket), whatever state QUIC is in."""
        transport = self._transport
        if transport is not None:
            transport.close()

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


class CloseAfterStream:
    """When a session whose close capsule came may end. The peer ends the session's stream before
    it sends the capsule, but the two travel on different QUIC streams and the capsule may arrive
    first: what the stream still carries (the mux's last frames, a GOAWAY) is read to its end
    (FIN or reset) before ``end()`` runs, at most :data:`CLOSE_TIMEOUT` after the capsule."""

    __slots__ = ("_end", "_timer", "stream_ended")

    def __init__(self, end: Callable[[], None]) -> None:
        self._end = end
        self._timer: asyncio.TimerHandle | None = None
        self.stream_ended = False
        """The session's stream ended (its FIN was fed to the pipe, or it was reset)."""

    def capsule(self, may_wait: bool) -> None:
        """The close capsule (or the CONNECT stream's end) came; ``may_wait``: the stream is still
        read (a pipe runs on it and QUIC is up). Ends now, or once the stream ends."""
        if may_wait and not self.stream_ended:
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._over)
            return
        self._end()

    def on_stream_end(self) -> None:
        """The session's stream ended: a capsule that came first ends the session now."""
        self.stream_ended = True
        if self._timer is not None:
            self.cancel()
            self._end()

    def cancel(self) -> None:
        """The session ended otherwise: no wait any more."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _over(self) -> None:
        self._timer = None
        self._end()


class Channel:
    """What both ends do with one session's stream and datagrams: send them with bounds, report
    what the peer has not acknowledged (the pipe's ``transport_backlog``)."""

    def __init__(
        self,
        proto: H3Protocol,
        session_id: int,
        *,
        counters: dict[str, int],
        send_high_water: int = SEND_HIGH_WATER,
        max_datagram_backlog: int = MAX_DATAGRAM_BACKLOG,
    ) -> None:
        self.proto = proto
        self.quic: QuicConnection = proto._quic
        self.session_id = session_id
        self.stream_id: int | None = None
        self.send_high_water = send_high_water
        self.max_datagram_backlog = max_datagram_backlog
        self.counters = counters

    def pipe(
        self,
        on_close: Callable[[int | None, str], Awaitable[None]],
        max_datagram: int,
        max_receive_buffer: int = MAX_RECEIVE_BUFFER,
    ) -> WebPipe:
        """The :class:`WebPipe` over this session's stream and datagrams, with the channel's send
        bounds: datagrams of at most ``max_datagram`` (the ACCEPT's) and :data:`MAX_WT_DATAGRAM`."""
        return WebPipe(
            self.send_stream,
            self.send_datagram,
            transport_backlog=self.backlog,
            on_close=on_close,
            max_receive_buffer=max_receive_buffer,
            max_datagram_size=min(max_datagram, MAX_WT_DATAGRAM),
            send_high_water=self.send_high_water,
            max_datagram_backlog=self.max_datagram_backlog,
        )

    def stream_unacked(self) -> int:
        """Stream bytes given to aioquic and not acknowledged by the peer yet."""
        if self.stream_id is None:
            return 0
        stream = self.quic._streams.get(self.stream_id)
        if stream is None:
            return 0
        return len(stream.sender._buffer)

    def _sender_done(self, stream_id: int | None) -> bool:
        """Whether everything sent on ``stream_id``, its end included when it was sent, is
        acknowledged (a stream aioquic has let go of is)."""
        if stream_id is None:
            return True
        stream = self.quic._streams.get(stream_id)
        if stream is None:
            return True
        sender = stream.sender
        return not sender._buffer and (sender._buffer_fin is None or sender.is_finished)

    def _peer_ended(self, stream_id: int | None) -> bool:
        """Whether the peer ended its side of ``stream_id`` (a stream aioquic has let go of has)."""
        if stream_id is None:
            return False
        stream = self.quic._streams.get(stream_id)
        return stream is None or stream.receiver.is_finished

    def delivered(self) -> bool:
        """Whether the peer acknowledged everything sent on this session's stream and on its
        CONNECT stream (the close capsule), the streams' ends included."""
        return self._sender_done(self.stream_id) and self._sender_done(self.session_id)

    def peer_closed(self) -> bool:
        """Whether the peer ended the session (its side of the CONNECT stream: the close capsule,
        RFC 9297) or its side of the session's stream."""
        return self._peer_ended(self.session_id) or self._peer_ended(self.stream_id)

    async def wait_for(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``done()`` (looked at after each packet or timer), the QUIC connection
        ended, or the loop time ``deadline``; returns ``done()``."""
        loop = asyncio.get_running_loop()
        proto = self.proto
        while not (ok := done()) and not proto.terminated and loop.time() < deadline:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proto.progress(), max(0.0, deadline - loop.time()))
        return ok

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

    def end_stream(self) -> None:
        """FIN on our stream: the peer reads what was sent, then its end."""
        if self.proto.terminated or self.stream_id is None:
            return
        stream = self.quic._streams.get(self.stream_id)
        if stream is not None and stream.sender._buffer_fin is None:
            with contextlib.suppress(Exception):
                self.quic.send_stream_data(self.stream_id, b"", end_stream=True)
        self.proto.transmit()

    def close_session(self, code: int = 0, message: str = "") -> None:
        """End the session: FIN on our stream, the close capsule with FIN on the CONNECT stream."""
        if self.proto.terminated:
            return
        self.end_stream()
        with contextlib.suppress(Exception):
            h3 = self.proto.h3
            if h3 is not None:
                h3.send_data(self.session_id, close_capsule(code, message), end_stream=True)
        self.proto.transmit()


def peer_address(quic: QuicConnection) -> Any:
    """The client's (host, port), as aioquic's current network path has it."""
    paths = getattr(quic, "_network_paths", None)
    if not paths:
        return None
    addr = paths[0].addr
    host = str(addr[0]).removeprefix("::ffff:")
    return (host, int(addr[1]))


def path_addresses(quic: QuicConnection) -> list[Any]:
    """Every address the connection has sent from or to (its network paths), as the socket gave
    them (to forget them from the socket's caches when it ends)."""
    return [path.addr for path in getattr(quic, "_network_paths", ())]


def limit_peer_streams(quic: QuicConnection, bidi: int, uni: int) -> None:
    """Let the peer open at most ``bidi`` bidirectional and ``uni`` unidirectional streams (aioquic
    grants 128 of each and never more): call before the handshake, whose transport parameters
    announce them. Each stream the peer may open is one more buffer :func:`receive_held` sums."""
    for limit, n in ((quic._local_max_streams_bidi, bidi), (quic._local_max_streams_uni, uni)):
        limit.value = limit.sent = n


def stream_bytes_received(quic: QuicConnection) -> int:
    """Stream bytes the peer has sent on all streams so far (aioquic's connection-level count)."""
    return int(quic._local_max_data.used)


def receive_held(quic: QuicConnection, h3: H3Connection | None) -> tuple[int, int]:
    """What aioquic holds of a connection's received bytes, not handed to the application: QUIC's
    per stream, behind a gap (its reassembly buffers, which the peer fills out of order), and
    HTTP/3's, of frames not yet complete (a HEADERS or SETTINGS frame waits whole). aioquic opens
    its receive windows as data arrives, whatever was read, so neither has a bound of its own."""
    reassembly = sum(len(stream.receiver._buffer) for stream in quic._streams.values())
    frames = sum(len(stream.buffer) for stream in h3._stream.values()) if h3 is not None else 0
    return reassembly, frames


def first_headers(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """HTTP/3 headers as a dict (the first value of a repeated name)."""
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
        max_datagram_frame_size=QUIC_DATAGRAM_FRAME,
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


__all__ = [
    "CLOSE_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_DATAGRAM_BACKLOG",
    "MAX_WT_DATAGRAM",
    "QUIC_DATAGRAM_FRAME",
    "SEND_HIGH_WATER",
    "Channel",
    "CloseAfterStream",
    "H3Protocol",
    "first_headers",
    "path_addresses",
    "peer_address",
    "quic_client_configuration",
    "server_certificate",
]
