"""Clients that come and go leave nothing on the server (secure KCP on loopback).

Each client joins a room, subscribes to a topic, keeps a server-streaming call open and makes a
unary call, then leaves one of three ways: it closes; its connection is lost (an authenticated
CLOSE, no goodbye: the session is kept for a resume until its window ends); or its connection is
lost and it reconnects and resumes, then closes. After each round, once the server has no session
and nothing detached, no room has a member, nothing published on a room or topic is delivered to
anyone, no server task runs, and the objects a session is made of are not more than after the
first round.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_rpc_support import Demo, Req, Tick

import kcprpc
from kcprpc import ClientConfig, HeartbeatConfig, ReconnectPolicy, ServerConfig, Transport
from kcprpc.client import Client
from kcprpc.net import MuxConnection, dial
from kcprpc.testing import client_transport

TIMEOUT = 10.0
ROUNDS = 3
CLIENTS = 9  # per round, three of each way of leaving
ROOMS = [f"room{i}" for i in range(3)]
TOPICS = [f"topic{i}" for i in range(3)]
TRACKED = ("ServerSession", "KCPSession", "MuxSession", "MuxConnection", "SecureConnection", "ClientCall")


async def _client(server: kcprpc.Server, transport: Transport, i: int) -> None:
    assert server.address is not None
    host, port = server.address
    conns: list[MuxConnection] = []

    async def connector() -> MuxConnection:
        c = await dial(host, port, transport)
        conns.append(c)
        return c

    way = i % 3
    config = ClientConfig(
        heartbeat=HeartbeatConfig(interval=0.1, timeout=2.0),
        reconnect=ReconnectPolicy(initial=0.01, maximum=0.05) if way == 2 else None,
    )
    client = Client(connector, config=config)
    await client.connect()
    try:
        d = client.stub(Demo, timeout=TIMEOUT)
        await d.join(Req(name=ROOMS[i % len(ROOMS)]))
        await client.subscribe(TOPICS[i % len(TOPICS)])
        stream = d.forever(Req(name="x")).__aiter__()
        assert (await asyncio.wait_for(stream.__anext__(), TIMEOUT)).text == "0"
        assert (await d.hello(Req(name="a"))).text == "hello a"
        if way == 0:
            return  # it closes
        first = conns[-1]
        await first.abort()  # lost: an authenticated CLOSE, no goodbye
        if way == 2:  # it comes back, resumes and calls again
            deadline = time.monotonic() + TIMEOUT
            while len(conns) == 1 or not client.connected:
                assert time.monotonic() < deadline, "no reconnect"
                await asyncio.sleep(0.01)
            assert (await d.hello(Req(name="b"))).text == "hello b"
    finally:
        await client.close()


def _tracked() -> Counter[str]:
    gc.collect()
    return Counter(n for o in gc.get_objects() if (n := type(o).__name__) in TRACKED)


async def test_clients_that_come_and_go_leave_nothing_behind() -> None:
    config = ServerConfig(resume_window=0.2, heartbeat=HeartbeatConfig(interval=0.1, timeout=1.0))
    server = kcprpc.Server([Demo()], "127.0.0.1", 0, key="churn", config=config)
    await server.start()
    transport = client_transport(server)
    after: list[Counter[str]] = []
    try:
        for r in range(ROUNDS):
            await asyncio.wait_for(
                asyncio.gather(*(_client(server, transport, r * CLIENTS + j) for j in range(CLIENTS))),
                TIMEOUT * 2,
            )
            deadline = time.monotonic() + TIMEOUT
            while server.sessions or server.detached_sessions or server.tasks:
                assert time.monotonic() < deadline, (len(server.sessions), server.detached_sessions)
                await asyncio.sleep(0.02)
            for room in ROOMS:
                assert not server.push.members(room), room
            delivered = server.push.broker.stats()["delivered"]
            for room in ROOMS:  # nobody left to deliver to: the hub subscribes to nothing
                await server.push.to_room(room, Tick(n=r))
            for topic in TOPICS:
                await server.push.publish(topic, Tick(n=r))
            assert server.push.broker.stats()["delivered"] == delivered
            after.append(_tracked())
        st = server.stats
        assert st["connections"] == ROUNDS * CLIENTS * 4 // 3  # the resumed ones connected twice
        assert st["sessions_resumed"] == ROUNDS * CLIENTS // 3
        assert st["sessions_expired"] == ROUNDS * CLIENTS // 3  # the lost ones, once their window ended
        grown = {n: after[-1][n] - after[0][n] for n in TRACKED if after[-1][n] > after[0][n] + 1}
        assert not grown, (grown, after)  # (a session or two may still be on its way out)
    finally:
        await server.shutdown(grace=0)


async def test_a_client_that_loses_its_connection_again_and_again_holds_no_more() -> None:
    """20 lost connections in a row, each resumed: the client's sockets and objects stay as after
    the first (each old connection's socket closed, its session and mux gone)."""
    server = kcprpc.Server([Demo()], "127.0.0.1", 0, key="churn", config=ServerConfig(resume_window=5.0))
    host, port = await server.start()
    config = ClientConfig(
        heartbeat=HeartbeatConfig(interval=0.1, timeout=2.0),
        reconnect=ReconnectPolicy(initial=0.01, maximum=0.05),
    )
    client = await kcprpc.connect(host, port, key="churn", config=config)
    try:
        d = client.stub(Demo, timeout=TIMEOUT)
        await d.join(Req(name="r"))
        sid = await d.whoami()
        seen: list[tuple[int, Counter[str]]] = []
        for k in range(20):
            (session,) = server.sessions
            await session.conn.abort()  # the server's side goes: the client must reconnect
            deadline = time.monotonic() + TIMEOUT
            while True:
                assert time.monotonic() < deadline, "no reconnect"
                try:
                    assert (await d.hello(Req(name="x"))).text == "hello x"
                    break
                except kcprpc.RpcError:
                    await asyncio.sleep(0.01)
            if k in (0, 19):
                seen.append((len(os.listdir("/proc/self/fd")), _tracked()))
        assert await d.whoami() == sid and server.stats["sessions_resumed"] == 20
        (fds0, first), (fds1, last) = seen
        assert fds1 <= fds0, (fds0, fds1)
        grown = {n: last[n] - first[n] for n in TRACKED if last[n] > first[n] + 1}
        assert not grown, (grown, first, last)
    finally:
        await client.close()
        await server.shutdown(grace=0)
