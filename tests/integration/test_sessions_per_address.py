"""``max_sessions_per_address``: one client that holds the key, on one address, cannot fill the
session table for everyone else (secure and compat KCP listeners, the RPC server, its web
listener). The "attacker" dials from 127.0.0.2 (Linux routes all of 127/8 to lo); the listeners
exempt only 127.0.0.1, where the other players dial from. Real sockets on loopback, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from web_support import until

import kcp
import kcprpc
from kcp.admission import AdmissionConfig
from kcp.demo import echo
from kcp.secure import SecureConfig
from kcprpc.web.listener import WebListenerBase
from kcprpc.web.options import WebOptions

TIMEOUT = 10.0
KEY = "every player has it"
OTHER = ("127.0.0.2", 0)
SECURE = kcp.SecureWire(key=KEY, config=SecureConfig(exempt=("127.0.0.1/32",)))
COMPAT = kcp.CompatWire(crypt="aes", key=KEY)
FROM_OTHER = kcp.IOOptions(local_address=OTHER)


async def _round_trip(s: kcp.KCPSession, data: bytes) -> bytes:
    s.write(data)
    return await asyncio.wait_for(s.readexactly(len(data)), TIMEOUT)


@contextlib.asynccontextmanager
async def _served(wire: kcp.Wire, **kw: Any) -> AsyncIterator[kcp.Listener]:
    listener = await kcp.listen("127.0.0.1", 0, wire, on_accept=echo, **kw)
    try:
        yield listener
    finally:
        listener.close()
        await listener.wait_closed()


async def test_secure_listener_refuses_a_session_past_the_cap_and_counts_it() -> None:
    async with _served(SECURE, max_sessions_per_address=3) as listener:
        port = listener.address[1]
        mine = [await kcp.dial("127.0.0.1", port, SECURE, io=FROM_OTHER) for _ in range(3)]
        for i, s in enumerate(mine):
            assert await _round_trip(s, b"ping %d" % i) == b"ping %d" % i
        fourth = await kcp.dial("127.0.0.1", port, SECURE, io=FROM_OTHER)  # handshake, then CLOSE
        await asyncio.wait_for(fourth.wait_closed(), TIMEOUT)
        assert "too many sessions from one address" in fourth.close_reason
        assert listener.stats["dropped_address_full"] == 1
        player = await kcp.dial("127.0.0.1", port, SECURE)  # 127.0.0.1: another address (exempt here)
        assert await _round_trip(player, b"hello") == b"hello"
        mine[0].close()
        await until(lambda: listener.session_count() == 3)  # its place is free again
        again = await kcp.dial("127.0.0.1", port, SECURE, io=FROM_OTHER)
        assert await _round_trip(again, b"again") == b"again"
        assert listener.stats["dropped_address_full"] == 1
        for s in [*mine[1:], player, again]:
            s.close()


async def test_compat_listener_keeps_a_peer_past_the_cap_pending() -> None:
    only_this_host = AdmissionConfig(exempt=("127.0.0.1/32",))  # compat's exemptions are admission's
    async with _served(COMPAT, max_sessions_per_address=2, admission=only_this_host) as listener:
        port = listener.address[1]
        mine = [await kcp.dial("127.0.0.1", port, COMPAT, io=FROM_OTHER) for _ in range(2)]
        for i, s in enumerate(mine):
            assert await _round_trip(s, b"ping %d" % i) == b"ping %d" % i
        third = await kcp.dial("127.0.0.1", port, COMPAT, io=FROM_OTHER)
        third.write(b"let me in")
        await until(lambda: listener.stats["dropped_address_full"] >= 1)
        assert listener.session_count() == 2
        player = await kcp.dial("127.0.0.1", port, COMPAT)  # 127.0.0.1: exempt
        assert await _round_trip(player, b"hello") == b"hello"
        mine[0].close()
        # compat has no close on the wire: the listener lets the address's session go when it ends
        # (here at once: the test ends it on the server's side), then the third one is admitted
        for key, s in listener.sessions.items():
            if key == mine[0].local_address or s.remote_address == mine[0].local_address:
                s.close()
        assert await asyncio.wait_for(third.readexactly(9), TIMEOUT) == b"let me in"
        for s in [*mine[1:], third, player]:
            s.close()


async def test_rpc_server_refuses_a_connection_past_the_cap_with_the_reason() -> None:
    server = kcprpc.Server(
        [],
        "127.0.0.1",
        0,
        transport=kcprpc.Transport(SECURE),
        config=kcprpc.ServerConfig(max_connections_per_address=2),
    )
    host, port = await server.start()
    other = kcprpc.Transport(SECURE, io=FROM_OTHER)
    clients = [kcprpc.connect(host, port, transport=other) for _ in range(3)]
    try:
        await clients[0].connect()
        await clients[1].connect()
        with pytest.raises(kcprpc.RpcError) as refused:
            await clients[2].connect()
        assert refused.value.status == kcprpc.Status.UNAVAILABLE
        assert "too many sessions from one address" in str(refused.value)
        player = kcprpc.connect(host, port, transport=kcprpc.Transport(SECURE))
        clients.append(player)
        await player.connect()
        assert all(c.connected for c in (clients[0], clients[1], player))
        assert len(server.sessions) == 3
    finally:
        for c in clients:
            await c.close()
        await server.shutdown(grace=0.5)


class _Web(WebListenerBase):
    name = "test"


async def test_web_listener_charges_each_address_until_its_connections_end() -> None:
    server = kcprpc.Server([], config=kcprpc.ServerConfig(max_connections_per_address=2))
    lst = _Web(server, WebOptions())
    other = ("198.51.100.9", 5000)
    assert lst.arrived("ws-0", other) and lst.arrived("ws-1", (other[0], 5001))
    assert not lst.arrived("ws-2", (other[0], 5002))  # a third from the same address: refused
    assert lst.stats()["refused_address_full"] == 1
    assert lst.arrived("ws-3", ("198.51.100.10", 5000))  # another address
    assert lst.arrived("ws-4", ("127.0.0.1", 5000))  # loopback: exempt by default
    lst.left("ws-0")
    assert lst.arrived("ws-5", other)
