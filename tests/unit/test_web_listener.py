"""kcprpc.web.listener and Server.add_listener: the OPEN verdicts (versions, limits, authorize),
an accepted connection served end to end over two WebPipes in memory (a real Server and a real
Client: unary, datagrams, the channel binding), the listener's counters in the stats call, and
the listener closed on shutdown. kcprpc.web.options: bad values are UsageErrors."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

import kcprpc
from kcprpc import Client, RpcError, Status
from kcprpc.errors import UsageError
from kcprpc.mux import MuxConfig
from kcprpc.web.connection import WebConnection, close_code_status, status_close_code
from kcprpc.web.framing import Accept, Open, Refuse, decode
from kcprpc.web.listener import Admitted, Refused, WebListenerBase
from kcprpc.web.options import WebOptions, WebSocketOptions
from kcprpc.web.pipe import WebPipe

TIMEOUT = 5.0


class Echo(kcprpc.Service, name="test.WebEcho"):
    async def echo(self, data: bytes) -> bytes:
        return data


class Listener(WebListenerBase):
    """The shared part with the transport-less close of a test listener."""

    name = "test"

    def __init__(self, server: kcprpc.Server, options: WebOptions) -> None:
        super().__init__(server, options)
        self.closed = False

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        await self.close_connections()


def back_to_back() -> tuple[WebPipe, WebPipe]:
    ab: list[WebPipe] = []
    a = WebPipe(lambda d: ab[1].feed_stream(d), lambda d: ab[1].feed_datagram(d))
    b = WebPipe(lambda d: ab[0].feed_stream(d), lambda d: ab[0].feed_datagram(d))
    ab.extend([a, b])
    return a, b


async def connect_through(listener: Listener, token: bytes = b"", mux_version: int = 2) -> Client:
    """A Client whose connector runs OPEN through the listener and serves the server end."""

    async def connector() -> WebConnection:
        verdict = await listener.admit(Open(1, mux_version, token), ("203.0.113.9", 4000))
        reply = decode(verdict.reply)
        if isinstance(reply, Refuse):
            raise RpcError(Status(reply.status), reply.message)
        assert isinstance(reply, Accept) and isinstance(verdict, Admitted)
        client_end, server_end = back_to_back()
        listener.serve(server_end, verdict, ("203.0.113.9", 4000))
        return WebConnection(
            client_end,
            client=True,
            mux_config=verdict.mux,
            binding=reply.binding,
            max_datagram_size=reply.max_datagram,
        )

    return await Client(connector).connect()


async def test_an_accepted_open_is_served_and_counted() -> None:
    connected: list[Any] = []
    server = kcprpc.Server([Echo()], on_connect=connected.append)
    listener = Listener(server, WebOptions())
    server.add_listener(listener)
    client = await connect_through(listener)
    try:
        assert await client.stub(Echo, timeout=TIMEOUT).echo(b"hi") == b"hi"
        (sess,) = server.sessions
        assert connected == [sess] and sess.remote_address == ("203.0.113.9", 4000)
        assert len(sess.conn.channel_binding or b"") == 16
        assert sess.conn.channel_binding == client.lifecycle.link.conn.channel_binding  # type: ignore[union-attr]
        stats = await client.stats()
        assert stats.server["test_accepted"] == 1 and stats.server["test_connections_open"] == 1
        assert "web_stream_bytes_in" in stats.transport
    finally:
        await client.close()
        await server.shutdown()
    assert listener.closed and not listener.connections


async def test_the_verdicts_on_open() -> None:
    seen: list[tuple[bytes, Any, Any]] = []

    async def authorize(token: bytes, key: bytes | None, address: Any) -> str | None:
        seen.append((token, key, address))
        return None if token == b"good" else "bad token"

    server = kcprpc.Server([Echo()])
    lst = Listener(server, WebOptions(authorize=authorize, max_connections=1, mux=MuxConfig(version=2)))
    addr = ("198.51.100.1", 1)
    refused = await lst.admit(Open(1, 2, b"bad"), addr)
    assert isinstance(refused, Refused) and refused.status == Status.UNAUTHENTICATED
    assert decode(refused.reply) == Refuse(16, "bad token")
    assert seen == [(b"bad", None, addr)]
    v = await lst.admit(Open(2, 2, b"good"), addr)
    assert isinstance(v, Refused) and v.status == Status.FAILED_PRECONDITION and "version 2" in v.message
    v = await lst.admit(Open(1, 0, b"good"), addr)
    assert isinstance(v, Refused) and v.status == Status.FAILED_PRECONDITION
    ok = await lst.admit(Open(1, 1, b"good"), addr)  # a v1-only client gets v1
    assert isinstance(ok, Admitted) and ok.mux.version == 1
    acc = decode(ok.reply)
    assert isinstance(acc, Accept) and acc.mux_version == 1 and acc.binding == ok.binding
    ok3 = await lst.admit(Open(1, 3, b"good"), addr)  # a newer client gets the server's
    assert isinstance(ok3, Admitted) and ok3.mux.version == 2
    assert ok.binding != ok3.binding
    lst.connections.add(object())  # type: ignore[arg-type]
    busy = await lst.admit(Open(1, 2, b"good"), addr)
    assert isinstance(busy, Refused) and busy.status == Status.RESOURCE_EXHAUSTED
    lst.connections.clear()
    lst.drain()
    going = await lst.admit(Open(1, 2, b"good"), addr)
    assert isinstance(going, Refused) and going.status == Status.UNAVAILABLE
    assert {k: v for k, v in lst.stats().items() if v} == {
        "refused_unauthenticated": 1,
        "refused_version": 2,
        "refused_busy": 2,
    }


async def test_the_secure_wires_authorize_hook_is_the_default_and_a_raising_hook_refuses() -> None:
    def hook(token: bytes, key: bytes | None, address: Any) -> str | None:
        if token == b"boom":
            raise RuntimeError("bug")
        return None if token == b"ok" else f"who is {token.decode()}?"

    server = kcprpc.Server([Echo()], transport=kcprpc.Transport(kcprpc.SecureWire(key="k", authorize=hook)))
    lst = Listener(server, WebOptions())
    v = await lst.admit(Open(1, 2, b"eve"), None)
    assert isinstance(v, Refused) and v.message == "who is eve?"
    v = await lst.admit(Open(1, 2, b"boom"), None)
    assert isinstance(v, Refused) and v.message == "authorization hook raised RuntimeError"
    assert isinstance(await lst.admit(Open(1, 2, b"ok"), None), Admitted)
    with pytest.raises(RpcError) as e:
        await connect_through(lst, b"eve")
    assert e.value.status == Status.UNAUTHENTICATED and e.value.message == "who is eve?"


async def test_a_refusing_on_connect_hook_fails_the_connect() -> None:
    def on_connect(session: Any) -> None:
        raise RpcError(Status.PERMISSION_DENIED, "not today")

    server = kcprpc.Server([Echo()], on_connect=on_connect)
    lst = Listener(server, WebOptions())
    with pytest.raises(RpcError) as e:
        await connect_through(lst)
    assert e.value.status == Status.PERMISSION_DENIED and "not today" in e.value.message
    await server.shutdown()


async def test_within_open_timeout_counts_a_silent_connection() -> None:
    lst = Listener(kcprpc.Server([Echo()]), WebOptions(open_timeout=0.05))
    never: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    assert await lst.within_open_timeout(never) is None
    assert lst.counters["open_timeouts"] == 1
    done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    done.set_result(b"x")
    assert await lst.within_open_timeout(done) == b"x"


def test_origins() -> None:
    lst = Listener(kcprpc.Server([Echo()]), WebOptions(origins=("https://a.example",)))
    assert lst.origin_allowed(None)  # not a browser
    assert lst.origin_allowed("https://a.example")
    assert not lst.origin_allowed("https://b.example")
    assert lst.counters["origins_refused"] == 1
    assert WebOptions(origins=("*",)).origin_allowed("http://anything:1")
    assert not WebOptions().origin_allowed("http://localhost:8000")
    assert WebOptions(origins="http://x.example").origins == ("http://x.example",)  # type: ignore[arg-type]


def test_close_codes_carry_a_status() -> None:
    assert status_close_code(Status.UNAUTHENTICATED) == 4016
    assert close_code_status(4008) == Status.RESOURCE_EXHAUSTED
    assert close_code_status(1000) is None and close_code_status(4000) is None
    assert close_code_status(4017) is None and close_code_status(None) is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": "kcprpc"}, "path"),
        ({"origins": ("localhost:8000",)}, "origin"),
        ({"origins": ("https://a.example/",)}, "origin"),
        ({"authorize": "yes"}, "authorize"),
        ({"open_timeout": 0}, "open_timeout"),
        ({"max_message_size": 10}, "max_message_size"),
        ({"max_message_size": 1024}, "largest token"),
        ({"max_datagram": 70000}, "max_datagram"),
        ({"max_connections": 0}, "max_connections"),
        ({"mux": "v2"}, "mux"),
    ],
)
def test_bad_options_are_usage_errors(kwargs: Mapping[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        WebOptions(**kwargs)


def test_websocket_options(tmp_path: Any) -> None:
    with pytest.raises(UsageError, match="max_datagram"):
        WebSocketOptions(max_message_size=8192, max_datagram=8192)
    with pytest.raises(UsageError, match="web_root"):
        WebSocketOptions(web_root=tmp_path / "missing")
    with pytest.raises(UsageError, match="ssl"):
        WebSocketOptions(ssl="yes")  # type: ignore[arg-type]
    assert WebSocketOptions(web_root=tmp_path).web_root == tmp_path.resolve()


async def test_add_listener_checks_its_argument_and_the_stats_take_each_listeners() -> None:
    server = kcprpc.Server([Echo()])
    with pytest.raises(UsageError, match="stats"):
        server.add_listener(object())  # type: ignore[arg-type]
    a = Listener(server, WebOptions())
    a.counters["accepted"] = 3
    server.add_listener(a)
    server.add_listener(a)  # once only
    assert server.listener_stats()["test_accepted"] == 3
    await server.shutdown()
    assert a.closed and a.draining
    with pytest.raises(UsageError, match="shutting down"):
        server.add_listener(Listener(server, WebOptions()))
