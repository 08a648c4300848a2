"""The WebTransport listener against the Python aioquic client, on 127.0.0.1: calls of every
kind, pushes, unreliable events as WebTransport datagrams, refusals (token, origin, path) and the
bad-input counters (a second stream, a unidirectional stream, a datagram before ACCEPT, garbage
instead of OPEN, no OPEN in time, a stream past the receive buffer)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, ProtocolNegotiated, QuicEvent, StreamDataReceived
from pydantic import BaseModel

import kcprpc
import kcprpc.web
from kcp.relay import LossyRelay
from kcprpc.errors import RpcError, UsageError
from kcprpc.metrics import families
from kcprpc.status import Status
from kcprpc.web import webtransport, webtransport_client
from kcprpc.web.capsules import CapsuleReader, close_capsule
from kcprpc.web.framing import REFUSE, encode_open
from kcprpc.web.options import WebTransportOptions
from kcprpc.web.quic import CLOSE_TIMEOUT, quic_client_configuration
from kcprpc.web.webtransport import WebTransportListener, listen_webtransport
from kcprpc.web.webtransport_client import connect_webtransport
from tests.integration.web_support import (
    FAST,
    Cert,
    Pos,
    Started,
    Svc,
    Tick,
    authorizing_server,
    dev_cert,
    running,
    until,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return dev_cert(tmp_path_factory.mktemp("wt-cert"))


def client_for(started: Started, **kw: Any) -> kcprpc.Client:
    _, listener, dev = started
    return connect_webtransport(listener.url, certificate_hashes=[dev.sha256], **kw)


# -- calls ---------------------------------------------------------------------------------------


async def test_calls_of_every_kind_over_webtransport(cert: Any) -> None:
    async with running(cert) as started, client_for(started) as client:
        server, listener, _ = started
        assert await client.call(Svc.echo, "hi") == "HI"
        assert [i async for i in client.stream(Svc.count, 5)] == [0, 1, 2, 3, 4]

        async def nums() -> AsyncIterator[int]:
            for i in range(10):
                yield i

        assert await client.stub(Svc).total(nums()) == 45

        async def words() -> AsyncIterator[str]:
            yield "a"
            yield "b"

        assert [w async for w in client.stream(Svc.shout, words())] == ["A", "B"]
        # a reply far bigger than a QUIC packet and than the stream high-water mark
        assert await client.call(Svc.big, 600_000) == b"x" * 600_000
        stats = listener.stats()
        assert stats["accepted"] == 1 and stats["connections_open"] == 1
        assert server.listener_stats()["webtransport_accepted"] == 1
        metrics = {f.name: f for f in families(server)}  # the /metrics endpoint's view
        assert metrics["kcprpc_listener_webtransport_quic_connections"].kind == "gauge"
        assert metrics["kcprpc_listener_webtransport_packets_in"].kind == "counter"


async def test_pushes_arrive_in_order(cert: Any) -> None:
    async with running(cert) as started, client_for(started) as client:
        got: asyncio.Queue[int] = asyncio.Queue()
        client.on(Tick, lambda t: got.put_nowait(t.n))
        assert await client.call(Svc.ticks, 20) == 20
        assert [await asyncio.wait_for(got.get(), 5) for _ in range(20)] == list(range(20))


async def test_unreliable_event_arrives_as_a_datagram(cert: Any) -> None:
    async with running(cert) as started, client_for(started) as client:
        seen: asyncio.Queue[tuple[int, bool]] = asyncio.Queue()
        client.on(Pos, lambda p, info: seen.put_nowait((p.x, info.unreliable)))
        conn = client.lifecycle.link.conn  # type: ignore[union-attr]
        before = conn.pipe.counters["datagrams_in"]
        assert await client.call(Svc.pos, 7) == 8
        assert await asyncio.wait_for(seen.get(), 5) == (7, True)
        assert conn.pipe.counters["datagrams_in"] == before + 1


async def test_client_notify_goes_as_a_datagram(cert: Any) -> None:
    async with running(cert) as started, client_for(started) as client:
        await client.health()
        svc = started[0].services[0]
        assert isinstance(svc, Svc)
        conn = client.lifecycle.link.conn  # type: ignore[union-attr]
        sent = conn.pipe.counters["datagrams_out"]
        client.notify(Svc.moved, 3)
        assert await asyncio.wait_for(svc.moves.get(), 5) == 3
        assert conn.pipe.counters["datagrams_out"] == sent + 1


@kcprpc.event("wt.blob")
class Blob(BaseModel):
    data: str


async def test_a_client_that_stops_reading_ends_as_a_slow_consumer(cert: Any) -> None:
    config = kcprpc.ServerConfig(max_message_size=64 * 1024, max_send_backlog=1024 * 1024)
    async with running(cert, config=config) as started, client_for(started) as client:
        server, listener, _ = started
        await client.health()
        conn = client.lifecycle.link.conn  # type: ignore[union-attr]
        proto = conn.pipe._send_stream.__self__.proto  # the client's QUIC connection (test only)
        proto.datagram_received = lambda data, addr: None  # deaf: no data, no acknowledgements
        (sess,) = list(server.sessions)
        for _ in range(200):  # 1.6 MB of reliable events for a client that takes none
            sess.send(Blob(data="x" * 8000))
            await asyncio.sleep(0)  # let the writers flush, tick by tick
        await until(lambda: server.stats["slow_consumers"] == 1, timeout=10)
        await until(lambda: listener.stats()["connections_open"] == 0, timeout=10)
        # what the server held for it stayed bounded: the QUIC stream's unacknowledged bytes
        # stopped at the high-water mark, the rest waited in the mux until the session ended
        assert server.stats["send_backlog"] <= 2 * 1024 * 1024


async def test_a_client_whose_connection_is_cut_resumes_its_session(cert: Any) -> None:
    async with running(cert) as started, client_for(started, config=FAST) as client:
        server, listener, _ = started
        await client.subscribe("news")
        ticks: asyncio.Queue[Tick] = asyncio.Queue()
        client.on(Tick, ticks.put_nowait)
        await server.push.publish("news", Tick(n=1))
        assert await asyncio.wait_for(ticks.get(), 10) == Tick(n=1)
        sid = client.session_id
        (sess,) = server.sessions
        back = asyncio.Event()
        client.on_reconnect = lambda _c: back.set()
        (quic,) = listener._protocols  # the server ends the QUIC connection (a network failure)
        quic.end("cut")
        await asyncio.wait_for(back.wait(), 10)
        assert client.session_id == sid and client.resumes == 1  # ACCEPT's binding made resume work
        assert server.stats["sessions_resumed"] == 1 and server.sessions == {sess}
        await server.push.publish("news", Tick(n=2))
        assert await asyncio.wait_for(ticks.get(), 10) == Tick(n=2)
        assert listener.stats()["accepted"] == 2


async def test_a_client_whose_close_is_never_acknowledged_still_closes_its_socket(
    cert: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path (100 ms each way) dies, then the client closes: nothing it sends is acknowledged,
    its QUIC close drains for three probe timeouts (seconds, on this path), and once its close
    waits ran out its UDP socket is closed all the same (it was kept, with the connection's
    objects, for good)."""
    monkeypatch.setattr(webtransport_client, "CLOSE_TIMEOUT", 0.2)
    async with running(cert) as started:
        _, listener, dev = started
        async with LossyRelay(("127.0.0.1", 0), listener.address, delay=100) as relay:
            host, port = relay.address
            url = f"https://{host}:{port}{listener.options.path}"
            conn = await kcprpc.web.dial_webtransport(url, certificate_hashes=[dev.sha256])
            proto = conn.transport
            assert isinstance(proto, webtransport_client._ClientProtocol)
            sock = proto._transport.get_extra_info("socket")
            assert sock.fileno() >= 0
            relay.loss = (1.0, 1.0)  # the path is gone both ways
            await conn.abort()
            assert proto.closer is not None
            await asyncio.wait_for(proto.closer, 5)
            assert proto._transport.is_closing()  # (QUIC itself never heard back)
            await until(lambda: sock.fileno() == -1)


async def test_a_closed_session_leaves_its_objects_while_quic_drains(
    cert: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends a session whose path (100 ms each way) then dies: its QUIC connection
    drains for three probe timeouts, seconds on this path, and holds the connection's objects
    no longer than the session's close (they were kept until QUIC ended)."""
    monkeypatch.setattr(webtransport, "CLOSE_TIMEOUT", 0.2)
    async with running(cert, config=kcprpc.ServerConfig(resume_window=0)) as started:
        server, listener, dev = started
        async with LossyRelay(("127.0.0.1", 0), listener.address, delay=100) as relay:
            host, port = relay.address
            url = f"https://{host}:{port}{listener.options.path}"
            async with kcprpc.web.connect_webtransport(url, certificate_hashes=[dev.sha256]) as client:
                assert await client.call(Svc.echo, "x") == "X"
                (sess,) = server.sessions
                (quic,) = listener._protocols
                conn = weakref.ref(sess.conn)
                relay.loss = (1.0, 1.0)
                await sess.conn.abort()
                del sess

                def freed() -> bool:
                    gc.collect()
                    return conn() is None

                await until(freed)
                assert not quic.terminated and quic in listener._protocols  # QUIC still drains
                await until(lambda: quic.terminated, timeout=20)


async def test_shutdown_closes_the_listener_and_its_clients(cert: Any) -> None:
    _, cert_path, key_path = cert
    server = kcprpc.Server([Svc()], "127.0.0.1", 0, config=kcprpc.ServerConfig(shutdown_grace=0.5))
    listener = await listen_webtransport(
        server, "127.0.0.1", 0, WebTransportOptions(certificate=cert_path, private_key=key_path)
    )
    gone = asyncio.Event()
    client = connect_webtransport(listener.url, certificate_hashes=[cert[0].sha256])
    client.on_disconnect = lambda _c, _why: gone.set()
    try:
        await client.connect()
        assert await client.call(Svc.echo, "x") == "X"
        await server.shutdown()
        assert server.listeners == [listener] and listener.stats()["connections_open"] == 0
        assert listener.stats()["quic_connections"] == 0
        await asyncio.wait_for(gone.wait(), 10)
    finally:
        await client.close()


# -- new connections under a budget -------------------------------------------------------------


def _initial(addr: tuple[str, int], token: bytes = b"") -> bytes:
    """A client's first datagram (an Initial with a new connection ID), as a browser's would be."""
    c = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, token=token))
    c.connect(addr, now=0.0)
    return c.datagrams_to_send(now=0.0)[0][0]


async def test_a_client_connects_through_a_retry(cert: Any) -> None:
    """``handshake_rate=0``: every new connection gets a Retry first; the client answers it with
    the token and its session works."""
    async with running(cert, handshake_rate=0) as started, client_for(started) as client:
        assert await client.call(Svc.echo, "x") == "X"
        assert started[1].stats()["quic_retries"] == 1


async def test_a_flood_of_new_connections_past_the_budget_gets_retries_and_holds_nothing(cert: Any) -> None:
    """Initials from 12 sources (as a spoofing attacker sends them) against a budget of 2: two
    start handshakes, the other 10 get a Retry each (smaller than the Initial) and leave no
    connection behind; a real client still connects (through a Retry: the server is under load)."""
    async with running(cert, handshake_rate=0.5, handshake_burst=2) as started:
        listener = started[1]
        socks = []
        try:
            for i in range(12):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((f"127.0.3.{i + 1}", 0))
                s.setblocking(False)
                s.sendto(_initial(listener.address), listener.address)
            await until(lambda: listener.stats()["quic_retries"] == 10)
            assert listener.stats()["quic_connections"] == 2
            loop = asyncio.get_running_loop()
            sizes = []
            for s in socks:  # each source got an answer: a Retry (54-ish bytes) or a handshake
                data = await asyncio.wait_for(loop.sock_recv(s, 2048), 5)
                sizes.append((len(data), data[0] & 0x30 == 0x30))  # long header type 3: Retry
            retries = [n for n, retry in sizes if retry]
            assert len(retries) == 10 and all(n < 200 for n in retries), sizes
        finally:
            for s in socks:
                s.close()
        async with client_for(started) as client:
            assert await client.call(Svc.echo, "x") == "X"
        assert listener.stats()["quic_retries"] == 11


async def test_an_initial_with_a_forged_token_is_dropped_and_counted(cert: Any) -> None:
    async with running(cert) as started:
        listener = started[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            s.sendto(_initial(listener.address, token=b"\x01" * 40), listener.address)
            await until(lambda: listener.stats()["invalid_tokens"] == 1)
            assert listener.stats()["quic_connections"] == 0
            await asyncio.sleep(0.05)  # (nothing answers it)
            with pytest.raises(BlockingIOError):
                s.recv(2048)


# -- refusals ------------------------------------------------------------------------------------


async def test_refused_token_is_unauthenticated(cert: Any) -> None:
    def authorize(token: bytes, _static: bytes | None, _addr: Any) -> str | None:
        return None if token == b"good" else "bad token"

    async with running(cert, authorize=authorize) as started:
        with pytest.raises(RpcError) as ei:
            await client_for(started, token="nope").connect()
        assert ei.value.status == Status.UNAUTHENTICATED and "bad token" in str(ei.value)
        async with client_for(started, token="good") as client:
            assert await client.call(Svc.echo, "ok") == "OK"
        assert started[1].stats()["refused_unauthenticated"] == 1


async def test_the_secure_wires_authorize_hook_and_on_connect_apply(cert: Any) -> None:
    """Without an authorize in the options the token goes to the server's SecureWire.authorize,
    the hook a KCP secure client's token goes to; on_connect runs for the accepted session."""
    _, cert_path, key_path = cert
    async with authorizing_server([Svc()]) as (server, connected):
        listener = await listen_webtransport(
            server, "127.0.0.1", 0, WebTransportOptions(certificate=cert_path, private_key=key_path)
        )
        url, hashes = listener.url, [cert[0].sha256]
        with pytest.raises(RpcError) as ei:
            await connect_webtransport(url, token="wrong", certificate_hashes=hashes).connect()
        assert ei.value.status == Status.UNAUTHENTICATED and ei.value.message == "unknown token"
        assert connected == [] and listener.stats()["refused_unauthenticated"] == 1
        async with connect_webtransport(url, token=b"letmein", certificate_hashes=hashes) as client:
            assert await client.call(Svc.echo, "in") == "IN"
            assert client.session_id == connected[0]


async def test_origin_outside_the_list_is_refused(cert: Any) -> None:
    async with running(cert, origins=("http://good.test",)) as started:
        with pytest.raises(RpcError) as ei:
            await client_for(started, origin="http://evil.test").connect()
        assert ei.value.status == Status.PERMISSION_DENIED
        assert started[1].stats()["origins_refused"] == 1
        async with client_for(started, origin="http://good.test") as client:
            assert await client.call(Svc.echo, "o") == "O"
        async with client_for(started) as client:  # no Origin: not a browser, allowed
            assert await client.call(Svc.echo, "n") == "N"


async def test_wrong_certificate_hash_is_refused_before_open(cert: Any) -> None:
    async with running(cert) as started:
        _, listener, _ = started
        with pytest.raises(RpcError) as ei:
            await connect_webtransport(listener.url, certificate_hashes=[b"\0" * 32]).connect()
        assert ei.value.status == Status.UNAUTHENTICATED
        assert listener.stats()["accepted"] == 0


async def test_wrong_path_is_refused(cert: Any) -> None:
    async with running(cert) as started:
        _, listener, dev = started
        url = listener.url.replace("/kcprpc", "/other")
        with pytest.raises(RpcError) as ei:
            await connect_webtransport(url, certificate_hashes=[dev.sha256]).connect()
        assert ei.value.status == Status.UNAVAILABLE and "404" in str(ei.value)
        assert listener.stats()["bad_requests"] == 1


async def test_discovery_names_the_url_and_the_certificate_hash(cert: Any) -> None:
    async with running(cert) as started:
        server, listener, dev = started
        ws = await kcprpc.web.listen_websocket(server, "127.0.0.1", 0)
        port = ws.address[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /kcprpc.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        raw_reply = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        doc = json.loads(raw_reply.split(b"\r\n\r\n", 1)[1])
        assert doc == {
            "websocket": "/kcprpc",
            "webtransport": {"url": listener.url, "certificateHashes": [dev.hash_base64]},
        }
        assert listener.url == f"https://127.0.0.1:{listener.address[1]}/kcprpc"


def test_usage_errors() -> None:
    with pytest.raises(UsageError, match="https://HOST:PORT/PATH"):
        connect_webtransport("wss://127.0.0.1:1/kcprpc")
    with pytest.raises(UsageError, match="certificate"):
        asyncio.run(listen_webtransport(None, "127.0.0.1", 0, WebTransportOptions()))  # type: ignore[arg-type]


# -- bad input, with a raw WebTransport client ----------------------------------------------------


class RawClient(QuicConnectionProtocol):
    """A bare WebTransport client: a session, then whatever the test sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3: H3Connection | None = None
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()
        self.received = bytearray()
        self.mine: set[int] = set()
        self.capsules = CapsuleReader()
        self.events: list[str] = []  # "close capsule", "terminated", in the order they came
        self.drop = 0  # incoming datagrams still to drop (a loss the test makes)
        self.answer_close = True
        self.stream_ended = False  # the server ended the stream we opened

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id in self.mine:
            self.received += event.data  # a stream we opened: past aioquic's H3 (it would parse HTTP frames)
            if event.end_stream:
                self.stream_ended = True
            return
        if isinstance(event, ProtocolNegotiated):
            self.h3 = H3Connection(self._quic, enable_webtransport=True)
        if isinstance(event, ConnectionTerminated):
            self.events.append("terminated")
            self.closed.set()
        if self.h3 is not None:
            for ev in self.h3.handle_event(event):
                self.h3_event(ev)

    def h3_event(self, ev: H3Event) -> None:
        if isinstance(ev, HeadersReceived) and not self.status.done():
            self.status.set_result(int(dict(ev.headers)[b":status"]))
        elif isinstance(ev, DataReceived) and self.capsules.feed(ev.data) == "close":
            self.events.append("close capsule")
            if self.answer_close:  # as a browser does (RFC 9297): close our side of the CONNECT stream
                self._quic.send_stream_data(ev.stream_id, b"", end_stream=True)
                self.transmit()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if self.drop > 0:
            self.drop -= 1
            return
        super().datagram_received(data, addr)

    async def session(self, path: str = "/kcprpc") -> int:
        assert self.h3 is not None
        sid = self._quic.get_next_available_stream_id()
        self.h3.send_headers(
            sid,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"webtransport"),
                (b":scheme", b"https"),
                (b":authority", b"127.0.0.1"),
                (b":path", path.encode()),
            ],
        )
        self.transmit()
        assert await asyncio.wait_for(self.status, 5) == 200
        return sid

    def stream(self, sid: int, data: bytes, *, uni: bool = False) -> int:
        assert self.h3 is not None
        stream_id = self.h3.create_webtransport_stream(sid, is_unidirectional=uni)
        self.mine.add(stream_id)
        self._quic.send_stream_data(stream_id, data)
        self.transmit()
        return stream_id

    def datagram(self, sid: int, data: bytes) -> None:
        assert self.h3 is not None
        self.h3.send_datagram(sid, data)
        self.transmit()


@contextlib.asynccontextmanager
async def raw(listener: WebTransportListener) -> AsyncIterator[RawClient]:
    cfg = quic_client_configuration(
        "127.0.0.1", certificate_hashes=[b"\0" * 32], cafile=None, verify=False, idle_timeout=10.0
    )
    async with connect("127.0.0.1", listener.address[1], configuration=cfg, create_protocol=RawClient) as c:
        assert isinstance(c, RawClient)
        yield c


BadInput = Callable[[RawClient, int], Awaitable[None]]


async def second_stream(c: RawClient, sid: int) -> None:
    c.stream(sid, encode_open(2))
    await until(lambda: len(c.received) > 0)  # ACCEPT
    c.stream(sid, b"again")


async def uni_stream(c: RawClient, sid: int) -> None:
    c.stream(sid, encode_open(2))
    await until(lambda: len(c.received) > 0)
    c.stream(sid, b"uni", uni=True)


async def datagram_first(c: RawClient, sid: int) -> None:
    c.datagram(sid, b"early")


async def garbage_open(c: RawClient, sid: int) -> None:
    c.stream(sid, b"\x09garbage")


async def overflow(c: RawClient, sid: int) -> None:
    stream_id = c.stream(sid, encode_open(2))
    await until(lambda: len(c.received) > 0)  # ACCEPT
    # more than the 1024-byte receive buffer in one QUIC packet: aioquic opens its windows
    # whatever the pipe holds, so the buffer is the bound
    c._quic.send_stream_data(stream_id, b"\0" * 20_000)
    c.transmit()


async def closed_by_the_server(
    listener: WebTransportListener, send: BadInput | None = None, *, session: bool = True
) -> dict[str, int]:
    """A raw client opens a session (unless ``session=False``) and does ``send``; the server must
    close its connection (a bounded wait). Returns the listener's stats after."""
    async with raw(listener) as c:
        if session:
            sid = await c.session()
            if send is not None:
                await send(c, sid)
        await asyncio.wait_for(c.closed.wait(), 10)
    return listener.stats()


@pytest.mark.parametrize(
    ("send", "counter"),
    [
        (second_stream, "second_streams"),
        (uni_stream, "uni_streams"),
        (datagram_first, "datagrams_before_accept"),
        (garbage_open, "unknown_kind"),
    ],
)
async def test_bad_input_is_counted_and_closes_the_session(cert: Any, send: BadInput, counter: str) -> None:
    async with running(cert) as started:
        _, listener, _ = started
        stats = await closed_by_the_server(listener, send)
        assert stats[counter] == 1
        assert stats["protocol_errors"] >= 1
        await until(lambda: listener.stats()["connections_open"] == 0)
        # the listener goes on serving
        async with client_for(started) as client:
            assert await client.call(Svc.echo, "still") == "STILL"


async def test_the_quic_close_waits_for_the_client_to_close_the_session(cert: Any) -> None:
    """The server closes QUIC only once the client acknowledged the session's close capsule and
    ended the CONNECT stream in turn: a QUIC close that overtook the capsule would end a
    browser's session as "Connection lost", without the close code and reason (a refusal's
    status). The client loses the server's next two datagrams (the capsule, then what follows)."""
    async with running(cert) as started:
        _, listener, _ = started
        async with raw(listener) as c:
            sid = await c.session()
            await uni_stream(c, sid)  # after ACCEPT: the server closes the session
            c.drop = 2
            await asyncio.wait_for(c.closed.wait(), 10)
            assert c.events == ["close capsule", "terminated"]
        assert listener.stats()["uni_streams"] == 1


def _refuse_nope(token: bytes, _static: bytes | None, _addr: Any) -> str | None:
    return None if token == b"good" else "bad token"


async def _refused(c: RawClient) -> int:
    """Open a session with a refused token; returns the session id once REFUSE and the stream's
    end arrived."""
    sid = await c.session()
    c.stream(sid, encode_open(2, b"nope"))
    await until(lambda: c.stream_ended)
    assert c.received[0] == REFUSE and c.received.endswith(b"bad token")
    return sid


async def test_a_refusal_waits_for_the_client_to_close_the_session(cert: Any) -> None:
    """A refused OPEN gets REFUSE and the stream's end, and the session stays open until the
    client, having read it, closes the session; then the server closes at once (a browser that
    saw the session close first could lose the unread REFUSE)."""
    async with running(cert, authorize=_refuse_nope) as started:
        _, listener, _ = started
        async with raw(listener) as c:
            sid = await _refused(c)
            await asyncio.sleep(0.05)  # a window for a capsule the server must not send yet
            assert c.events == []
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert c.h3 is not None
            c.h3.send_data(sid, close_capsule(0, "connect failed"), end_stream=True)
            c.transmit()
            await asyncio.wait_for(c.closed.wait(), 10)
            assert loop.time() - t0 < CLOSE_TIMEOUT / 2  # not the linger's bound: the client's close ended it
        assert listener.stats()["refused_unauthenticated"] == 1


async def test_a_refused_client_that_never_closes_is_closed_in_time(cert: Any) -> None:
    """A refused client that keeps the session open is closed (the capsule, then QUIC) after
    CLOSE_TIMEOUT."""
    async with running(cert, authorize=_refuse_nope) as started:
        _, listener, _ = started
        async with raw(listener) as c:
            c.answer_close = False
            await _refused(c)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await asyncio.wait_for(c.closed.wait(), 10)
            assert c.events == ["close capsule", "terminated"]
            assert CLOSE_TIMEOUT - 0.5 < loop.time() - t0 < CLOSE_TIMEOUT * 2 + 3


async def test_no_open_in_time_is_closed(cert: Any) -> None:
    async with running(cert, open_timeout=0.3) as (_, listener, _):
        assert (await closed_by_the_server(listener))["open_timeouts"] == 1


async def test_a_quic_connection_without_a_session_is_closed_in_time(cert: Any) -> None:
    async with running(cert, open_timeout=0.3) as (_, listener, _):
        assert (await closed_by_the_server(listener, session=False))["open_timeouts"] == 1
        # the server's side of the connection ends after QUIC's draining period
        await until(lambda: listener.stats()["quic_connections"] == 0)


async def test_quic_connections_past_max_connections_are_closed(cert: Any) -> None:
    async with running(cert, max_connections=1) as started:
        _, listener, _ = started
        async with raw(listener) as first:
            await first.session()
            with pytest.raises(ConnectionError):  # closed during its handshake
                async with raw(listener):
                    pass
            assert listener.stats()["refused_busy"] == 1
            assert not first.closed.is_set()


async def test_quic_connections_past_the_cap_per_address_are_closed(cert: Any) -> None:
    config = kcprpc.ServerConfig(max_connections_per_address=1)
    async with running(cert, exempt=(), config=config) as started:
        _, listener, _ = started
        async with raw(listener) as first:
            await first.session()
            with pytest.raises(ConnectionError):  # closed at its first event
                async with raw(listener):
                    pass
            assert listener.stats()["refused_address_full"] == 1
            assert not first.closed.is_set()
        await until(lambda: len(listener.sources) == 0)  # given back when the connection ended
        async with raw(listener) as again:
            await again.session()


async def test_stream_past_the_receive_buffer_is_closed(cert: Any) -> None:
    async with running(cert, max_receive_buffer=1024) as (_, listener, _):
        assert (await closed_by_the_server(listener, overflow))["receive_overflows"] == 1


async def _send_paced(c: RawClient, stream_id: int, total: int) -> None:
    """``total`` bytes on ``stream_id`` in 16 KiB writes, as fast as the server's windows let them go
    (or until the server closed the connection)."""
    chunk = b"\0" * 16384
    sent = 0
    while sent < total and not c.closed.is_set():
        c._quic.send_stream_data(stream_id, chunk)
        c.transmit()
        sent += len(chunk)
        for _ in range(100):  # the client's own unsent data: wait for the windows
            if c.closed.is_set() or len(c._quic._streams[stream_id].sender._buffer) < 256 * 1024:
                break
            await asyncio.sleep(0.005)


async def test_a_frame_that_claims_terabytes_on_a_request_stream_is_bounded(cert: Any) -> None:
    """An authenticated client opens another HTTP/3 request stream and sends a HEADERS frame that
    claims 2^40 bytes, then its body: aioquic holds a frame whole until it is complete, and opens its
    windows as the bytes arrive. Before, all of it was held (4 MiB sent: 4 MiB held, 1.5 s of CPU
    copying aioquic's growing buffer; 16 MiB stalled the loop for a minute), counted nowhere. Now
    the connection is closed once more than 64 KiB wait in unfinished frames, and counted."""
    async with running(cert) as started:
        _, listener, _ = started
        async with raw(listener) as c:
            sid = await c.session()
            c.stream(sid, encode_open(2))
            await until(lambda: len(c.received) > 0)  # ACCEPT: authenticated
            request = c._quic.get_next_available_stream_id()
            c._quic.send_stream_data(request, bytes([0x01, 0xC0, 0, 0, 1, 0, 0, 0, 0]))  # HEADERS, 2^40
            await _send_paced(c, request, 2 * 1024 * 1024)
            await asyncio.wait_for(c.closed.wait(), 10)
        assert listener.stats()["receive_overflows"] == 1
        async with client_for(started) as client:  # the listener goes on serving
            assert await client.call(Svc.echo, "still") == "STILL"


async def test_stream_bytes_behind_a_gap_are_bounded(cert: Any) -> None:
    """A client leaves the first byte of a stream out and sends what follows: QUIC holds it all for
    reassembly, and aioquic's window doubles as it arrives. Now the connection is closed once more
    than twice ``max_receive_buffer`` wait behind gaps, and counted."""
    async with running(cert, max_receive_buffer=64 * 1024) as started:
        _, listener, _ = started
        async with raw(listener) as c:
            sid = await c.session()
            stream_id = c.stream(sid, encode_open(2))
            await until(lambda: len(c.received) > 0)  # ACCEPT
            sender = c._quic._streams[stream_id].sender
            hole = sender._buffer_stop  # the byte after what was sent: never sent
            sender._buffer_start = sender._buffer_stop = hole + 1
            await _send_paced(c, stream_id, 2 * 1024 * 1024)
            await asyncio.wait_for(c.closed.wait(), 10)
        assert listener.stats()["receive_overflows"] == 1


async def test_a_client_may_open_only_the_streams_a_session_needs(cert: Any) -> None:
    """aioquic grants 128 streams of each kind; the listener announces 4 bidirectional and 8
    unidirectional, so there are few buffers to hold or to sum."""
    async with running(cert) as started:
        _, listener, _ = started
        async with raw(listener) as c:
            await c.session()
            assert c._quic._remote_max_streams_bidi == webtransport.PEER_BIDI_STREAMS
            assert c._quic._remote_max_streams_uni == webtransport.PEER_UNI_STREAMS


async def test_a_datagram_over_max_datagram_is_dropped_and_counted(cert: Any) -> None:
    async with running(cert, max_datagram=512) as started:
        _, listener, _ = started
        async with raw(listener) as c:
            sid = await c.session()
            c.stream(sid, encode_open(2))
            await until(lambda: len(c.received) >= 21)  # ACCEPT
            assert int.from_bytes(c.received[3:5], "big") == 512  # its max datagram
            (conn,) = listener.connections
            c.datagram(sid, b"\0" * 513)
            c.datagram(sid, b"\0" * 600)
            await until(lambda: conn.pipe.counters["datagrams_in_dropped"] == 2)
            assert conn.pipe.counters["datagrams_in"] == 0
            assert not c.closed.is_set() and listener.stats()["protocol_errors"] == 0


async def test_a_second_session_on_one_connection_is_refused(cert: Any) -> None:
    async with running(cert) as started:
        _, listener, _ = started
        async with raw(listener) as c:
            await c.session()
            c.status = asyncio.get_running_loop().create_future()
            with pytest.raises(AssertionError):
                await c.session()
            assert c.status.result() == 429
        assert listener.stats()["sessions_refused"] == 1


async def test_kcprpc_serve_with_wt_and_ws(tmp_path: Path) -> None:
    import base64

    from serve_process import ServeProcess

    from examples.quickstart.service import Greeter, HelloRequest
    from kcprpc.cli import main

    assert main(["web-cert", "--out", str(tmp_path), "--days", "2"]) == 0
    flags = (
        "--ws", "127.0.0.1:0",
        "--wt", "127.0.0.1:0", "--wt-cert", str(tmp_path / "cert.pem"), "--wt-key", str(tmp_path / "key.pem"),
        "--web-origin", "http://localhost:8000",
    )  # fmt: skip
    repo = Path(__file__).resolve().parents[2]
    with ServeProcess("examples.quickstart.service:app", *flags, extra_path=repo) as proc:
        ws_line = await asyncio.to_thread(proc.expect, "websocket: ws://127.0.0.1:")
        line = await asyncio.to_thread(proc.expect, "webtransport: https://127.0.0.1:")
        url = line.split()[1]
        assert url.endswith("/kcprpc") and "origins: http://localhost:8000" in line
        hash_line = await asyncio.to_thread(proc.expect, "development certificate")
        b64 = hash_line.rsplit(" ", 1)[1]
        pem = (tmp_path / "cert.pem").read_bytes()
        from kcprpc.web.certs import certificate_hash

        assert base64.b64decode(b64) == certificate_hash(pem)
        async with connect_webtransport(url, certificate_hashes=[base64.b64decode(b64)]) as client:
            reply = await client.stub(Greeter).hello(HelloRequest(name="wt"))
            assert reply.message == "Hello, wt!"
            stats = await client.stats()
            assert stats.server["webtransport_accepted"] == 1
        ws_port = int(ws_line.split()[1].removeprefix("ws://").split("/")[0].rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", ws_port)
        writer.write(b"GET /kcprpc.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        body = (await asyncio.wait_for(reader.read(), 5)).split(b"\r\n\r\n", 1)[1]
        writer.close()
        assert json.loads(body)["webtransport"] == {"url": url, "certificateHashes": [b64]}
        code, _rest = await asyncio.to_thread(proc.stop)
        assert code == 0


def _ca_signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 it signed (valid 30 days: no hash would do)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(pem))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"


async def test_a_certificate_from_an_authority_is_verified_with_cafile(tmp_path: Path) -> None:
    ca, cert_path, key_path = _ca_signed(tmp_path)
    server = kcprpc.Server([Svc()], "127.0.0.1", 0)
    try:
        listener = await listen_webtransport(
            server, "127.0.0.1", 0, WebTransportOptions(certificate=cert_path, private_key=key_path)
        )
        assert listener.certificate_hashes == ()  # not a development certificate: no hash announced
        assert "certificateHashes" not in listener.discovery()["webtransport"]
        async with connect_webtransport(listener.url, cafile=str(ca)) as client:
            assert await client.call(Svc.echo, "ca") == "CA"
        with pytest.raises(RpcError) as ei:  # the default roots do not know this CA
            await connect_webtransport(listener.url).connect()
        assert ei.value.status == Status.UNAVAILABLE
        assert listener.stats()["accepted"] == 1
    finally:
        await server.shutdown(grace=0.5)


async def test_a_listener_on_a_udp_socket_bound_by_the_caller(cert: Any) -> None:
    _, cert_path, key_path = cert
    server = kcprpc.Server([Svc()], "127.0.0.1", 0, config=kcprpc.ServerConfig(shutdown_grace=0.5))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))  # what serve_workers does before it forks (one of a reuseport group)
    port = sock.getsockname()[1]
    options = WebTransportOptions(certificate=cert_path, private_key=key_path)
    with pytest.raises(UsageError, match="UDP"), socket.socket() as tcp:
        await listen_webtransport(server, options=options, sock=tcp)
    listener = await listen_webtransport(server, options=options, sock=sock)
    try:
        assert listener.address == ("127.0.0.1", port)
        async with connect_webtransport(listener.url, certificate_hashes=[cert[0].sha256]) as client:
            assert await client.call(Svc.echo, "x") == "X"
    finally:
        await server.shutdown()
