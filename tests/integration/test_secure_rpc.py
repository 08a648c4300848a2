"""kcprpc calls over secure-mode KCP sessions: a server stream and unary calls in flight continue
across a client socket rebind (a phone switching networks); the server sees the path change."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_rpc_support import Demo, Probe, Req

import kcprpc
from kcp.secure import PathChanged
from kcprpc.net import MuxConnection, dial

TIMEOUT = 20.0
KEY = "rpc secure passphrase"


async def test_calls_continue_across_a_client_rebind() -> None:
    server = kcprpc.Server([Demo(Probe())], "127.0.0.1", 0, key=KEY, transport_options={"mode": "secure"})
    host, port = await server.start()
    conns: list[MuxConnection] = []

    async def connector() -> MuxConnection:
        c = await dial(host, port, key=KEY, mode="secure")
        conns.append(c)
        return c

    async with server, kcprpc.Client(connector) as client:
        d = client.stub(Demo, timeout=TIMEOUT)
        assert (await d.hello(Req(name="before"))).text == "hello before"
        (conn,) = conns
        session: Any = conn.datagrams  # the kcp.KCPSession under the mux
        assert session.mode == "secure"
        (srv_session,) = server._listener.listener.sessions.values()
        moves: list[Any] = []
        srv_session.add_event_callback(lambda ev: moves.append(ev) if isinstance(ev, PathChanged) else None)
        n = 3000
        texts: list[str] = []
        unary: list[asyncio.Task[Any]] = []
        async for r in d.count(Req(name="s", n=n)):
            texts.append(r.text)
            if len(texts) == n // 3:
                unary = [asyncio.create_task(d.echo(bytes([i]) * 2000)) for i in range(32)]
                session.rebind()  # mid-stream, with unary calls in flight
        assert texts == [f"s{i}" for i in range(n)]
        assert [bytes(b) for b in await asyncio.gather(*unary)] == [bytes([i]) * 2000 for i in range(32)]
        assert (await d.hello(Req(name="after"))).text == "hello after"
        assert len(moves) == 1 and srv_session.remote_address[1] == session.local_address[1]
        assert srv_session.stats["secure_path_changes"] == 1
        (rpc_session,) = server.sessions
        assert rpc_session.remote_address == srv_session.remote_address  # the RPC layer follows the move
        assert client.reconnects == 0 and len(conns) == 1  # the same connection, no redial
