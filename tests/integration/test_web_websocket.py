"""kcprpc over WebSocket on 127.0.0.1 (docs/wire-format/web.md): a real ``websockets`` listener
in front of a real Server, the Python client (``kcprpc.web.connect_websocket``) and raw
``websockets`` clients for the bad input. Every refusal is counted and the server goes on serving."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import kcprpc
from kcp.secure import SecureConfig
from kcprpc import ClientConfig, ReconnectPolicy, RpcError, ServerConfig, Status
from kcprpc.errors import UsageError
from kcprpc.metrics import families
from kcprpc.transport import close_code
from kcprpc.web import WebSocketListener, WebSocketOptions, connect_websocket, listen_websocket
from kcprpc.web.certs import make_dev_certificate
from kcprpc.web.framing import Accept, Refuse, decode, encode_datagram, encode_open, encode_stream
from tests.integration.web_support import FAST, authorizing_server, until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_rpc_support import Demo, Pos, Probe, Req, Tick

TIMEOUT = 10.0


@kcprpc.event("web.news")
class News(BaseModel):
    data: bytes


@pytest.fixture
async def served() -> AsyncIterator[tuple[kcprpc.Server, WebSocketListener, str]]:
    """A started Server (KCP on a free port) with a WebSocket listener on a free port."""
    server = kcprpc.Server([Demo(Probe())], "127.0.0.1", 0)
    await server.start()
    lst = await listen_websocket(server, "127.0.0.1", 0, WebSocketOptions(open_timeout=0.5))
    host, port = lst.address
    try:
        yield server, lst, f"ws://{host}:{port}/kcprpc"
    finally:
        await server.shutdown()


async def test_calls_streams_and_pushes_over_websocket(served: Any) -> None:
    server, lst, url = served
    async with connect_websocket(url) as client:
        d = client.stub(Demo, timeout=TIMEOUT)
        assert (await d.hello(Req(name="web"))).text == "hello web"
        assert await d.echo(b"\x00" * 100_000) == b"\x00" * 100_000  # many STREAM chunks
        assert [r.text async for r in d.count(Req(name="n", n=5))] == [f"n{i}" for i in range(5)]
        ticks: asyncio.Queue[Tick] = asyncio.Queue()
        client.on(Tick, ticks.put_nowait)
        positions: asyncio.Queue[Pos] = asyncio.Queue()
        client.on(Pos, positions.put_nowait)
        await d.join(Req(name="arena"))
        await client.subscribe("news")
        (sess,) = server.sessions
        sess.send(Tick(n=1))  # this session only
        await server.push.to_room("arena", Tick(n=2))
        await server.push.publish("news", Tick(n=3))
        assert [await asyncio.wait_for(ticks.get(), TIMEOUT) for _ in range(3)] == [
            Tick(n=i) for i in (1, 2, 3)
        ]
        # unreliable: DATAGRAM messages both ways
        before = sess.conn.stats()["web_datagrams_out"]
        await server.push.to_room("arena", Pos(x=1, y=2))
        assert await asyncio.wait_for(positions.get(), TIMEOUT) == Pos(x=1, y=2)
        assert sess.conn.stats()["web_datagrams_out"] == before + 1
        probe = server.services[0].probe
        await d.position(Pos(x=3, y=4))  # an unreliable notify
        assert await asyncio.wait_for(probe.notified.get(), TIMEOUT) == Pos(x=3, y=4)
        assert sess.conn.stats()["web_datagrams_in"] >= 1
        stats = await client.stats()
        assert stats.server["websocket_accepted"] == 1 and stats.server["websocket_connections_open"] == 1
        metrics = {f.name: f for f in families(server)}  # the /metrics endpoint's view
        assert metrics["kcprpc_listener_websocket_accepted"].samples == [({}, 1.0)]
        assert metrics["kcprpc_listener_websocket_connections_open"].kind == "gauge"
        assert metrics["kcprpc_listener_websocket_handshakes_open"].kind == "gauge"
    assert lst.counters["protocol_errors"] == 0


async def test_a_client_that_reconnects_resumes_its_session_and_catches_up(served: Any) -> None:
    server, lst, url = served
    async with connect_websocket(url, config=FAST) as client:
        d = client.stub(Demo, timeout=TIMEOUT)
        await client.subscribe("news")
        ticks: asyncio.Queue[Tick] = asyncio.Queue()
        client.on(Tick, ticks.put_nowait)
        await server.push.publish("news", Tick(n=1))
        assert await asyncio.wait_for(ticks.get(), TIMEOUT) == Tick(n=1)
        sid = client.session_id
        (sess,) = server.sessions
        back = asyncio.Event()
        client.on_reconnect = lambda _c: back.set()
        # the server's end of the TCP connection is cut (a network failure): no close handshake
        assert lst._ws is not None
        ws_conn = next(iter(lst._ws.connections))
        ws_conn.transport.abort()
        await asyncio.wait_for(back.wait(), TIMEOUT)
        assert client.session_id == sid and client.resumes == 1  # the binding made resume work
        assert server.stats["sessions_resumed"] == 1 and server.sessions == {sess}
        await server.push.publish("news", Tick(n=2))
        assert await asyncio.wait_for(ticks.get(), TIMEOUT) == Tick(n=2)
        assert await d.whoami() == sid
        assert lst.counters["accepted"] == 2


async def test_subscribe_since_a_saved_position_after_a_new_client(served: Any) -> None:
    server, _lst, url = served
    async with connect_websocket(url) as first:
        await first.subscribe("news")
        got: asyncio.Queue[Tick] = asyncio.Queue()
        first.on(Tick, got.put_nowait)
        await server.push.publish("news", Tick(n=1))
        await asyncio.wait_for(got.get(), TIMEOUT)
        saved = first.position("news")
    await server.push.publish("news", Tick(n=2))
    await server.push.publish("news", Tick(n=3))
    async with connect_websocket(url) as second:
        missed: asyncio.Queue[Tick] = asyncio.Queue()
        second.on(Tick, missed.put_nowait)
        await second.subscribe("news", since=saved)
        assert [await asyncio.wait_for(missed.get(), TIMEOUT) for _ in range(2)] == [Tick(n=2), Tick(n=3)]


async def test_authorize_refuses_a_token_and_on_connect_runs_for_the_accepted() -> None:
    async with authorizing_server([Demo()]) as (server, connected):
        lst = await listen_websocket(server, "127.0.0.1", 0)
        url = f"ws://127.0.0.1:{lst.address[1]}/kcprpc"
        with pytest.raises(RpcError) as e:
            await connect_websocket(url, token="wrong")
        assert e.value.status == Status.UNAUTHENTICATED and e.value.message == "unknown token"
        assert connected == [] and lst.counters["refused_unauthenticated"] == 1
        async with connect_websocket(url, token=b"letmein") as ok:
            assert await ok.stub(Demo, timeout=TIMEOUT).whoami() == connected[0]
        # a raw client sees the REFUSE and the close code 4000 + status
        async with ws_connect(url, subprotocols=["kcprpc.v1"]) as raw:  # type: ignore[list-item]
            await raw.send(encode_open(2, b"nope"))
            assert decode(await recv_bytes(raw)) == Refuse(16, "unknown token")
            with pytest.raises(ConnectionClosed):
                await raw.recv()
            assert raw.close_code == 4016 and raw.close_reason == "unknown token"


async def opened(url: str, **kw: Any) -> ClientConnection:
    """A raw WebSocket past OPEN/ACCEPT."""
    ws = await ws_connect(url, subprotocols=["kcprpc.v1"], **kw)  # type: ignore[list-item]
    await ws.send(encode_open(2))
    assert isinstance(decode(await recv_bytes(ws)), Accept)
    return ws


async def recv_bytes(ws: ClientConnection) -> bytes:
    """The next message, which must be binary."""
    msg = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(msg, bytes)
    return msg


async def closed_with(ws: ClientConnection) -> int | None:
    """Read until the server closes; its close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    except ConnectionClosed:
        pass
    return ws.close_code


BAD_FIRST = [
    (b"\xffgarbage", "unknown_kind"),
    (b"\x01\x01", "malformed"),  # a short OPEN
    (encode_stream(b"smux"), "not_open"),  # STREAM before ACCEPT
    (encode_datagram(b"rpc"), "not_open"),
    ("hello", "text_messages"),
]


@pytest.mark.parametrize(("first", "counter"), BAD_FIRST)
async def test_a_bad_first_message_is_counted_and_closed(served: Any, first: Any, counter: str) -> None:
    _server, lst, url = served
    async with ws_connect(url, subprotocols=["kcprpc.v1"]) as ws:  # type: ignore[list-item]
        await ws.send(first)
        assert await closed_with(ws) == 1002
    assert lst.counters[counter] == 1 and lst.counters["protocol_errors"] == 1
    async with connect_websocket(url) as ok:  # the server still serves others
        assert (await ok.stub(Demo, timeout=TIMEOUT).hello(Req(name="x"))).text == "hello x"


BAD_LATER = [
    (b"\x07what", "unknown_kind"),
    (encode_open(2), "second_open"),
    (b"\x03", "malformed"),  # an empty STREAM
    ("text", "text_messages"),
]


@pytest.mark.parametrize(("later", "counter"), BAD_LATER)
async def test_a_bad_message_after_accept_is_counted_and_closed(
    served: Any, later: Any, counter: str
) -> None:
    _server, lst, url = served
    ws = await opened(url)
    await ws.send(later)
    assert await closed_with(ws) == 1002
    assert lst.counters[counter] == 1 and lst.counters["protocol_errors"] == 1
    async with connect_websocket(url) as ok:
        assert (await ok.stub(Demo, timeout=TIMEOUT).hello(Req(name="x"))).text == "hello x"
    await until(lambda: lst.stats()["connections_open"] == 0, TIMEOUT)


async def still_serves(url: str) -> None:
    """A well-behaved client is served (after some bad input)."""
    async with connect_websocket(url) as ok:
        assert (await ok.stub(Demo, timeout=TIMEOUT).hello(Req(name="ok"))).text == "hello ok"


async def test_an_oversized_message_closes_with_1009(served: Any) -> None:
    _server, lst, url = served
    ws = await opened(url)
    await ws.send(encode_stream(b"x" * (64 * 1024)))  # 64 KiB + the kind byte
    assert await closed_with(ws) == 1009
    await until(lambda: lst.counters["oversized"] == 1, TIMEOUT)
    await still_serves(url)


async def test_no_open_within_the_timeout(served: Any) -> None:
    _server, lst, url = served
    async with ws_connect(url, subprotocols=["kcprpc.v1"]) as ws:  # type: ignore[list-item]
        assert await closed_with(ws) == 1008
    assert lst.counters["open_timeouts"] == 1
    await still_serves(url)


@pytest.mark.parametrize("subprotocols", [None, ["other.v1"]])
async def test_the_subprotocol_is_required(served: Any, subprotocols: Any) -> None:
    _server, lst, url = served
    with pytest.raises(InvalidStatus) as e:
        await ws_connect(url, subprotocols=subprotocols)
    assert e.value.response.status_code == 400
    assert lst.counters["subprotocol_refused"] == 1
    await still_serves(url)


async def test_only_allowed_origins_connect() -> None:
    server = kcprpc.Server([Demo()])
    try:
        lst = await listen_websocket(
            server, "127.0.0.1", 0, WebSocketOptions(origins=("http://game.example",))
        )
        url = f"ws://127.0.0.1:{lst.address[1]}/kcprpc"
        with pytest.raises(RpcError) as e:
            await connect_websocket(url, origin="http://evil.example")
        assert e.value.status == Status.PERMISSION_DENIED
        assert lst.counters["origins_refused"] == 1
        async with connect_websocket(url, origin="http://game.example") as ok:
            assert (await ok.stub(Demo, timeout=TIMEOUT).hello(Req(name="o"))).text == "hello o"
        async with connect_websocket(url) as no_origin:  # not a browser: allowed
            assert (await no_origin.stub(Demo, timeout=TIMEOUT).hello(Req(name="n"))).text == "hello n"
    finally:
        await server.shutdown()


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


async def test_static_files_and_discovery(tmp_path: Path) -> None:
    root = tmp_path / "site"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("<h1>game</h1>")
    (root / "js" / "app.js").write_text("console.log(1)")
    (root / "js" / "app.js.map").write_text("{}")
    (root / "style.css").write_text("body{}")
    (root / "logo.png").write_bytes(b"\x89PNG")
    (root / "data.json").write_text("[]")
    (tmp_path / "secret.txt").write_text("no")
    server = kcprpc.Server([Demo()])
    try:
        lst = await listen_websocket(server, "127.0.0.1", 0, WebSocketOptions(web_root=root))

        class FakeWT:
            name = "webtransport"

            def close(self) -> None: ...

            async def wait_closed(self) -> None: ...

            def stats(self) -> dict[str, int]:
                return {}

            def discovery(self) -> dict[str, Any]:
                return {
                    "webtransport": {
                        "url": "https://127.0.0.1:4433/kcprpc",
                        "certificateHashes": ["aGFzaA=="],
                    }
                }

        base = f"http://127.0.0.1:{lst.address[1]}"

        async def get(path: str) -> tuple[int, str, bytes]:
            return await asyncio.to_thread(_get, base + path)

        assert await get("/") == (200, "text/html; charset=utf-8", b"<h1>game</h1>")
        assert await get("/js/app.js") == (200, "text/javascript; charset=utf-8", b"console.log(1)")
        assert (await get("/js/app.js.map"))[:2] == (200, "application/json")
        assert (await get("/style.css"))[:2] == (200, "text/css; charset=utf-8")
        assert (await get("/logo.png"))[:2] == (200, "image/png")
        assert (await get("/data.json?v=1"))[:2] == (200, "application/json")
        for bad in ("/../secret.txt", "/js/../../secret.txt", "/%2e%2e/secret.txt", "/missing.html"):
            assert (await get(bad))[0] == 404, bad
        status, ctype, body = await get("/kcprpc.json")
        assert status == 200 and ctype == "application/json" and json.loads(body) == {"websocket": "/kcprpc"}
        server.add_listener(FakeWT())
        doc = json.loads((await get("/kcprpc.json"))[2])
        assert doc["webtransport"]["certificateHashes"] == ["aGFzaA=="] and doc["websocket"] == "/kcprpc"
        assert lst.counters["http_files"] == 6
    finally:
        await server.shutdown()


async def test_file_replies_not_yet_delivered_are_bounded_in_bytes(tmp_path: Path) -> None:
    # a client that asks for a large file and never reads the answer held the whole file in the
    # server's send buffer, per connection: 20 such GETs of a 32 MB file took 1.3 GB
    (tmp_path / "big.bin").write_bytes(b"x" * 6_000_000)  # more than a socket buffer takes
    server = kcprpc.Server([Demo()])
    try:
        lst = await listen_websocket(
            server, "127.0.0.1", 0, WebSocketOptions(web_root=tmp_path, max_static_bytes=15_000_000)
        )
        loop = asyncio.get_running_loop()

        async def stalled_get() -> tuple[socket.socket, bytes]:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setblocking(False)
            await loop.sock_connect(s, lst.address)
            await loop.sock_sendall(s, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            return s, await loop.sock_recv(s, 12)  # the status line's start, then never read

        held = [await stalled_get() for _ in range(3)]
        assert [head for _, head in held] == [b"HTTP/1.1 200", b"HTTP/1.1 200", b"HTTP/1.1 503"]
        assert lst.stats()["http_busy"] == 1 and lst.static_bytes.held == 12_000_000
        held[0][0].close()  # a connection that goes gives its bytes back
        async with asyncio.timeout(10):
            while lst.static_bytes.held > 6_000_000:
                await asyncio.sleep(0.01)
        s, head = await stalled_get()
        assert head == b"HTTP/1.1 200"
        for sock in [s, *(x for x, _ in held[1:])]:
            sock.close()
    finally:
        await server.shutdown()


async def test_shutdown_closes_the_listener_and_its_clients() -> None:
    server = kcprpc.Server([Demo()], config=ServerConfig(shutdown_grace=0.5))
    lst = await listen_websocket(server, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{lst.address[1]}/kcprpc"
    client = await connect_websocket(url)
    try:
        await client.stub(Demo, timeout=TIMEOUT).whoami()
        await server.shutdown()
        assert server.listeners == [lst] and lst.stats()["connections_open"] == 0
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", lst.address[1])
    finally:
        await client.close()


async def test_a_websocket_client_that_stops_reading_ends_as_a_slow_consumer() -> None:
    """As over KCP (test_rpc_slow_consumer.py): the client stops reading its TCP socket, the
    kernel buffers fill, then what the server holds for it (mux, pipe, WebSocket write buffer)
    grows until max_send_backlog ends the session; the other clients go on."""
    cfg = ServerConfig(max_message_size=64 * 1024, max_send_backlog=1024 * 1024, slow_consumer_timeout=None)
    server = kcprpc.Server([Demo()], config=cfg)
    try:
        lst = await listen_websocket(server, "127.0.0.1", 0)
        url = f"ws://127.0.0.1:{lst.address[1]}/kcprpc"
        slow = await connect_websocket(url, config=ClientConfig(reconnect=ReconnectPolicy(max_attempts=0)))
        other = await connect_websocket(url)
        try:
            sid = await slow.stub(Demo, timeout=TIMEOUT).whoami()
            sess = next(s for s in server.sessions if s.id == sid)
            lost = asyncio.Event()
            slow.on_disconnect = lambda _c, _reason: lost.set()
            link: Any = slow.lifecycle.link
            link.conn.transport.transport.pause_reading()  # the client reads nothing more off its socket
            peak = 0
            for _ in range(8000):  # 32 MB at most: far more than the socket buffers and the bound hold
                if sess.closed:
                    break
                sess.send(News(data=b"n" * 4096))
                sess.send(Pos(x=0, y=0))  # unreliable: dropped behind the backlog, never held unbounded
                peak = max(peak, sess.conn.send_bounds.send_backlog())  # type: ignore[union-attr]
                await asyncio.sleep(0)
            assert sess.closed, "the session was never ended"
            assert server.stats["slow_consumers"] == 1
            assert 512 * 1024 < peak <= 1024 * 1024 + 64 * 1024
            link.conn.transport.transport.resume_reading()
            await asyncio.wait_for(lost.wait(), TIMEOUT)  # the server closed its connection
            assert (await other.stub(Demo, timeout=TIMEOUT).hello(Req(name="still"))).text == "hello still"
        finally:
            await other.close()
            await slow.close()
    finally:
        await server.shutdown()


async def test_kcprpc_serve_with_ws_answers_a_websocket_client(tmp_path: Path) -> None:
    from serve_process import ServeProcess

    from examples.quickstart.service import Greeter, HelloRequest

    (tmp_path / "index.html").write_text("<p>hi</p>")
    flags = ("--ws", "127.0.0.1:0", "--web-origin", "http://localhost:8000", "--web-root", str(tmp_path))
    with ServeProcess("examples.quickstart.service:app", *flags) as proc:
        line = await asyncio.to_thread(proc.expect, "websocket: ws://127.0.0.1:")
        url = line.split()[1]
        assert url.endswith("/kcprpc") and "origins: http://localhost:8000" in line
        async with connect_websocket(url, origin="http://localhost:8000") as client:
            reply = await client.stub(Greeter, timeout=TIMEOUT).hello(HelloRequest(name="cli"))
            assert reply.message == "Hello, cli!"
            stats = await client.stats()
            assert stats.server["websocket_accepted"] == 1
        with pytest.raises(RpcError) as e:
            await connect_websocket(url, origin="http://elsewhere.example")
        assert e.value.status == Status.PERMISSION_DENIED
        base = url.removeprefix("ws://").removesuffix("/kcprpc")
        assert await asyncio.to_thread(_get, f"http://{base}/") == (
            200,
            "text/html; charset=utf-8",
            b"<p>hi</p>",
        )
        code, _rest = await asyncio.to_thread(proc.stop)
        assert code == 0


async def test_connections_over_max_connections_are_refused_and_a_plain_get_is_426() -> None:
    server = kcprpc.Server([Demo()])
    try:
        lst = await listen_websocket(server, "127.0.0.1", 0, WebSocketOptions(max_connections=1))
        await _one_too_many(lst, "refused_busy", lambda: not lst.connections)
        assert (await asyncio.to_thread(_get, f"http://127.0.0.1:{lst.address[1]}/kcprpc"))[0] == 426
        assert lst.counters["bad_requests"] == 1
    finally:
        await server.shutdown()


async def test_connections_past_the_cap_per_address_are_closed_before_open() -> None:
    """ServerConfig.max_connections_per_address on a WebSocket listener: one address holds at most
    that many connections, opening or open (127.0.0.1 is not exempt here)."""
    wire = kcprpc.SecureWire(key="k", config=SecureConfig(exempt=()))
    server = kcprpc.Server(
        [Demo()], transport=kcprpc.Transport(wire), config=kcprpc.ServerConfig(max_connections_per_address=1)
    )
    try:
        lst = await listen_websocket(server, "127.0.0.1", 0, WebSocketOptions())
        await _one_too_many(
            lst, "refused_address_full", lambda: len(lst.sources) == 0
        )  # its share given back
    finally:
        await server.shutdown()


async def test_the_cap_per_address_counts_the_connections_of_every_transport_together() -> None:
    """One address held ``max_connections_per_address`` on KCP, as many again on WebSocket (and on
    WebTransport): each listener had its own tally. Now the server's one tally
    (``Server.connection_sources``) counts them all (127.0.0.1 is not exempt here)."""
    wire = kcprpc.SecureWire(key="k", config=SecureConfig(exempt=()))
    server = kcprpc.Server(
        [Demo()],
        "127.0.0.1",
        0,
        transport=kcprpc.Transport(wire),
        config=kcprpc.ServerConfig(max_connections_per_address=1),
    )
    try:
        host, port = await server.start()
        lst = await listen_websocket(server, "127.0.0.1", 0, WebSocketOptions())
        url = f"ws://127.0.0.1:{lst.address[1]}/kcprpc"
        kcp_client = await kcprpc.connect(host, port, transport=kcprpc.Transport(wire))
        await kcp_client.stub(Demo, timeout=TIMEOUT).whoami()
        assert len(server.connection_sources) == 1 and lst.sources is server.connection_sources
        async with ws_connect(url, subprotocols=["kcprpc.v1"]) as ws:  # type: ignore[list-item]
            assert await closed_with(ws) == 1013  # the address's one is taken, on KCP
        assert lst.counters["refused_address_full"] == 1
        await kcp_client.close()
        await until(lambda: len(server.connection_sources) == 0, TIMEOUT)
        async with connect_websocket(url) as web:
            await web.stub(Demo, timeout=TIMEOUT).whoami()
            with pytest.raises(RpcError) as e:  # and now the KCP side is the one refused
                await kcprpc.connect(host, port, transport=kcprpc.Transport(wire))
            assert e.value.status is Status.UNAVAILABLE
    finally:
        await server.shutdown()


@pytest.mark.parametrize("bound", ["per-address", "in-all"])
@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_tcp_connections_that_never_finish_their_request_are_bounded(
    bound: str, tls: bool, tmp_path: Path
) -> None:
    """A slowloris: TCP connections that send half an HTTP request (``wss://``: half a TLS
    ClientHello) and wait. One address may hold ``max_connections_per_address`` of them
    (127.0.0.1 is not exempt here), all addresses together ``max_connections``; the rest are reset
    at once and counted (before, each held a socket for ``open_timeout``, uncounted; with TLS,
    whose handshake asyncio ran before the listener saw the connection, still so until session
    30). A client from another address is served meanwhile, and the charges go when the sockets
    do."""
    import ssl

    server_ctx: ssl.SSLContext | None = None
    client_ctx: ssl.SSLContext | None = None
    if tls:
        cert, key = make_dev_certificate(days=1).write(tmp_path)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        client_ctx = ssl.create_default_context(cafile=str(cert))
    # a ClientHello's first bytes (a TLS record header that promises 512 bytes), and nothing more
    half = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" if tls else b"GET /kcprpc HTTP/1.1\r\nHost: x\r\n"
    wire = kcprpc.SecureWire(key="k", config=SecureConfig(exempt=()))
    per_address = 3 if bound == "per-address" else 100
    server = kcprpc.Server(
        [Demo()],
        transport=kcprpc.Transport(wire),
        config=kcprpc.ServerConfig(max_connections_per_address=per_address),
    )
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    try:
        opts = WebSocketOptions(max_connections=3 if bound == "in-all" else 10_000, ssl=server_ctx)
        lst = await listen_websocket(server, "127.0.0.1", 0, opts)
        for i in range(6):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.2" if bound == "per-address" else f"127.0.0.{2 + i}", 0))
            s.setblocking(False)
            await loop.sock_connect(s, lst.address)
            await loop.sock_sendall(s, half)  # and nothing more
        await until(lambda: lst.counters["refused_handshaking"] == 3, TIMEOUT)
        assert lst.stats()["handshakes_open"] == 3  # the three let in wait for their requests
        if bound == "per-address":  # another address is served meanwhile
            scheme = "wss" if tls else "ws"
            async with connect_websocket(
                f"{scheme}://127.0.0.1:{lst.address[1]}/kcprpc", ssl=client_ctx
            ) as c:
                await c.stub(Demo, timeout=TIMEOUT).whoami()
        for s in socks:
            s.close()
        await until(lambda: lst.stats()["handshakes_open"] == 0 and len(lst.handshake_sources) == 0, TIMEOUT)
    finally:
        for s in socks:
            s.close()
        await server.shutdown()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_tls_handshakes_that_fail_or_stall_are_closed_counted_and_given_back(
    loop: str, tmp_path: Path
) -> None:
    """wss:// on either event loop (uvloop's transports are no asyncio subclasses): the listener
    runs TLS itself after the accept. A connection that sends no TLS, and one that stalls in its
    ClientHello past ``open_timeout``, are closed and counted (``tls_failed``) and their charges
    go; a client in the middle of it all is served, its first bytes after the handshake intact."""
    import ssl

    import kcp

    cert, key = make_dev_certificate(days=1).write(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        server = kcprpc.Server([Demo()])
        aio = asyncio.get_running_loop()
        try:
            lst = await listen_websocket(
                server, "127.0.0.1", 0, WebSocketOptions(ssl=server_ctx, open_timeout=0.5)
            )
            garbage, stall = socket.socket(), socket.socket()
            for s in (garbage, stall):
                s.setblocking(False)
                await aio.sock_connect(s, lst.address)
            await aio.sock_sendall(garbage, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # no TLS at all
            await aio.sock_sendall(stall, b"\x16\x03\x01\x02\x00")  # a ClientHello's record header
            url = f"wss://127.0.0.1:{lst.address[1]}/kcprpc"
            async with connect_websocket(url, ssl=client_ctx) as c:
                assert (await c.stub(Demo, timeout=TIMEOUT).hello(Req(name="tls"))).text == "hello tls"
                await until(
                    lambda: lst.counters["tls_failed"] == 2, TIMEOUT
                )  # garbage at once, stall at 0.5 s
                assert lst.stats()["handshakes_open"] == 0 and len(lst.handshake_sources) == 0
                for s in (garbage, stall):  # both closed by the server (after an alert, or reset)
                    assert await asyncio.wait_for(_until_closed(aio, s), TIMEOUT)
                    s.close()
            pending = socket.socket()  # in its handshake when the server shuts down
            pending.setblocking(False)
            await aio.sock_connect(pending, lst.address)
            await aio.sock_sendall(pending, b"\x16\x03\x01\x02\x00")
            await until(lambda: lst.stats()["handshakes_open"] == 1, TIMEOUT)
            await asyncio.wait_for(server.shutdown(), TIMEOUT)
            assert lst.stats()["handshakes_open"] == 0
            assert await asyncio.wait_for(_until_closed(aio, pending), TIMEOUT)
            pending.close()
        finally:
            await server.shutdown()

    if loop == "uvloop":
        kcp.run(main())
    else:
        asyncio.run(main())


async def _until_closed(loop: asyncio.AbstractEventLoop, s: socket.socket) -> bool:
    """Read ``s`` until the peer closes it (True; reset counts) or 64 KiB came without an end."""
    got = 0
    while got < 65536:
        try:
            data = await loop.sock_recv(s, 4096)
        except ConnectionResetError:
            return True
        if not data:
            return True
        got += len(data)
    return False


async def _one_too_many(lst: Any, counter: str, freed: Callable[[], bool]) -> None:
    """With one client connected, a second connection is closed with 1013 (``counter`` counts it);
    once the first is gone (``freed``), another one connects."""
    url = f"ws://127.0.0.1:{lst.address[1]}/kcprpc"
    async with connect_websocket(url) as first:
        await first.stub(Demo, timeout=TIMEOUT).whoami()
        async with ws_connect(url, subprotocols=["kcprpc.v1"]) as ws:  # type: ignore[list-item]
            assert await closed_with(ws) == 1013
        assert lst.counters[counter] == 1
    await until(freed, TIMEOUT)
    async with connect_websocket(url) as again:  # room again
        await again.stub(Demo, timeout=TIMEOUT).whoami()


async def test_a_server_that_ends_a_session_with_a_status_fails_the_clients_calls_with_it(
    served: Any,
) -> None:
    server, _lst, url = served
    async with connect_websocket(
        url, config=ClientConfig(reconnect=ReconnectPolicy(max_attempts=0))
    ) as client:
        sid = await client.stub(Demo, timeout=TIMEOUT).whoami()
        probe = server.services[0].probe
        pending = asyncio.ensure_future(client.stub(Demo, timeout=TIMEOUT).slow(Req(name="s")))
        await asyncio.wait_for(probe.started.wait(), TIMEOUT)
        sess = next(s for s in server.sessions if s.id == sid)
        await sess.conn.abort(close_code(Status.RESOURCE_EXHAUSTED), "go away now")  # WebSocket close 4008
        with pytest.raises(RpcError) as e:
            await asyncio.wait_for(pending, TIMEOUT)
        assert e.value.status == Status.RESOURCE_EXHAUSTED and e.value.message == "go away now"


async def test_wss_with_an_ssl_context(tmp_path: Path) -> None:
    import ssl

    cert, key = make_dev_certificate(days=1).write(tmp_path)  # for 127.0.0.1
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    server = kcprpc.Server([Demo()])
    try:
        lst = await listen_websocket(server, "127.0.0.1", 0, WebSocketOptions(ssl=server_ctx))
        url = f"wss://127.0.0.1:{lst.address[1]}/kcprpc"
        async with connect_websocket(url, ssl=client_ctx) as client:
            assert (await client.stub(Demo, timeout=TIMEOUT).hello(Req(name="tls"))).text == "hello tls"
        with pytest.raises(RpcError) as e:  # a client that does not trust the certificate
            await connect_websocket(url)
        assert e.value.status == Status.UNAVAILABLE and "certificate" in e.value.message.lower()
    finally:
        await server.shutdown()


async def test_misuse_is_a_usage_error_and_nothing_listening_is_unavailable(served: Any) -> None:
    server, lst, _url = served
    with pytest.raises(UsageError, match="cannot listen"):
        await listen_websocket(server, "127.0.0.1", lst.address[1])  # the port is taken
    with pytest.raises(UsageError, match="WebSocketOptions"):
        await listen_websocket(server, "127.0.0.1", 0, object())  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="ws://"):
        connect_websocket("http://127.0.0.1:1/kcprpc")
    with pytest.raises(UsageError, match="token"):
        await connect_websocket(f"ws://127.0.0.1:{lst.address[1]}/kcprpc", token=b"t" * 1025)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    with pytest.raises(RpcError) as e:
        await connect_websocket(f"ws://127.0.0.1:{port}/kcprpc")
    assert e.value.status == Status.UNAVAILABLE


async def test_a_listener_on_a_socket_bound_by_the_caller() -> None:
    server = kcprpc.Server([Demo()], config=ServerConfig(shutdown_grace=0.5))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # what serve_workers does before it forks (not listening yet)
    port = sock.getsockname()[1]
    lst = await listen_websocket(server, sock=sock)
    try:
        assert lst.address == ("127.0.0.1", port)
        async with connect_websocket(f"ws://127.0.0.1:{port}/kcprpc") as client:
            assert await client.stub(Demo, timeout=TIMEOUT).whoami() is not None
    finally:
        await server.shutdown()


async def test_listen_websocket_misuse_is_named() -> None:
    server = kcprpc.Server([Demo()])
    with pytest.raises(UsageError, match="host and port, or sock="):
        await listen_websocket(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(UsageError, match="TCP"):
            await listen_websocket(server, sock=udp)
        with pytest.raises(UsageError, match="not both"):
            await listen_websocket(server, "127.0.0.1", 0, sock=udp)


async def test_a_repeated_header_is_a_counted_400_not_a_traceback(
    served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Two ``Origin`` headers made the origin check raise inside the websockets library, which
    logged an ERROR with its traceback for each such request and answered 500, uncounted (an
    audit: 100 requests, 100 tracebacks, no key needed). Now a 400, counted; a repeated
    ``Connection`` header is read whole."""
    _, lst, url = served
    port = int(url.split(":")[2].split("/")[0])
    upgrade = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"

    async def get(headers: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /kcprpc HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        writer.close()
        return head.split(b"\r\n", 1)[0]

    caplog.set_level(logging.INFO)
    for _ in range(20):
        assert b" 400 " in await get(f"Origin: http://a\r\nOrigin: http://b\r\nConnection: Upgrade\r\n{upgrade}")
    assert lst.counters["bad_requests"] == 20
    # Connection split over two headers still asks for the upgrade (the subprotocol check is next)
    assert b" 400 " in await get(f"Connection: keep-alive\r\nConnection: Upgrade\r\n{upgrade}")
    assert lst.counters["subprotocol_refused"] == 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
