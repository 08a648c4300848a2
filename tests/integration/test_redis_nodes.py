"""Two kcprpc servers (nodes) on different ports sharing one real Redis (RedisBroker), in this
process and in two processes: room and topic pushes from either node reach the members on both
exactly once and in order; a client whose node goes away (shut down, or killed with SIGKILL) moves
to the other and resumes its topic from the broker's history with nothing missed; while Redis is
down, push and subscribe fail with UNAVAILABLE and ordinary calls go on."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "brokers"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from broker_helpers import until as wait_until
from node_service import WIRE, Node
from redis_server import RedisServer
from test_rpc_support import Tick

import kcprpc
from kcprpc import (
    Client,
    ClientConfig,
    EventInfo,
    HeartbeatConfig,
    ReconnectPolicy,
    Recovered,
    RpcError,
    Status,
)
from kcprpc.net import dial
from kcprpc.redis_broker import RedisBroker
from kcprpc.testing import client_transport

TIMEOUT = 20.0
FAST = ClientConfig(
    heartbeat=HeartbeatConfig(interval=0.1, timeout=2.0),
    reconnect=ReconnectPolicy(initial=0.01, maximum=0.1),
)
_n = itertools.count(1)


@contextlib.asynccontextmanager
async def nodes(
    redis: RedisServer, n: int, prefix: str | None = None, config: kcprpc.ServerConfig | None = None
) -> AsyncIterator[list[kcprpc.Server]]:
    prefix = prefix or f"nodes{next(_n)}"
    servers = [
        kcprpc.Server(
            [Node()],
            "127.0.0.1",
            0,
            transport=WIRE,
            config=config,
            broker=RedisBroker(
                redis.url(), prefix=prefix, timeout=0.5, reconnect_initial=0.02, reconnect_max=0.2
            ),
        )
        for _ in range(n)
    ]
    for s in servers:
        await s.start()
    try:
        yield servers
    finally:
        if not redis.running:
            redis.start()
        for s in servers:
            await s.shutdown(grace=0)


async def client_of(
    server: kcprpc.Server, target: list[Any] | None = None, config: ClientConfig = FAST
) -> Client:
    """A client of ``server`` (``target[0]``, when given, is where it dials: change it to move)."""
    where = target if target is not None else [server.address]
    transport = client_transport(server)

    async def connector() -> Any:
        return await dial(*where[0], transport)

    c = Client(connector, config=config)
    await c.connect()
    return c


class Seen:
    def __init__(self, c: Client) -> None:
        self.events: list[tuple[str | None, int, EventInfo]] = []
        c.on(Tick, lambda t, info: self.events.append((info.key, t.n, info)))

    def ns(self, key: str) -> list[int]:
        return [n for k, n, _ in self.events if k == key]

    def seqs(self, key: str) -> list[int]:
        return [i.position.offset for k, _, i in self.events if k == key and i.position is not None]


async def until(pred: Callable[[], object], what: str) -> None:
    await wait_until(pred, what, TIMEOUT)


async def news(node: kcprpc.Server, ns: range) -> None:
    """Publish ``Tick(n)`` for each n of ``ns`` on the topic "news" from ``node``."""
    for n in ns:
        await node.push.publish("news", Tick(n=n))


async def recovered_in_full(recovered: asyncio.Queue[Recovered]) -> None:
    """The client that moved to another node recovered "news" from the history with nothing missed."""
    r = await asyncio.wait_for(recovered.get(), TIMEOUT)
    assert r.key == "topic:news" and r.recovered and r.missed == 0


async def test_room_and_topic_pushes_reach_both_nodes_once_in_order(redis: RedisServer) -> None:
    async with nodes(redis, 2) as (s1, s2):
        clients = [await client_of(s) for s in (s1, s2, s2)]
        try:
            seen = [Seen(c) for c in clients]
            for c in clients:
                await c.stub(Node).join("lobby")
                await c.subscribe("news")
            for n in range(1, 31):  # from both nodes, alternately
                node = s1 if n % 2 else s2
                await node.push.to_room("lobby", Tick(n=n))
                await node.push.publish("news", Tick(n=n))
            await clients[2].stub(Node).shout(31)  # a handler's room push (node 2)
            await s1.push.publish("news", Tick(n=31))
            for s in seen:
                await until(lambda s=s: len(s.events) >= 62, "62 events on every client")
            for s in seen:
                assert s.ns("room:lobby") == list(range(1, 32)) and s.ns("topic:news") == list(range(1, 32))
                assert s.seqs("room:lobby") == list(range(1, 32)) and s.seqs("topic:news") == list(
                    range(1, 32)
                )
            assert len({i.position.epoch for s in seen for _, _, i in s.events if i.position}) == 1
            await s2.push.publish("news", Tick(n=99))  # a fence: nothing more came before it
            for s in seen:
                await until(lambda s=s: s.ns("topic:news")[-1:] == [99], "the fence")
                assert len(s.events) == 63
        finally:
            for c in clients:
                await c.close()


async def test_a_client_moves_to_the_other_node_and_resumes_its_topic(redis: RedisServer) -> None:
    async with nodes(redis, 2) as (s1, s2):
        target: list[Any] = [s1.address]
        c = await client_of(s1, target)
        try:
            seen = Seen(c)
            recovered: asyncio.Queue[Recovered] = asyncio.Queue()
            c.on(Recovered, recovered.put_nowait)
            await c.subscribe("news")
            await news(s1, range(1, 6))
            await until(lambda: len(seen.events) == 5, "the first five")
            target[0] = s2.address
            await s1.shutdown(grace=0)  # node A goes away: the client moves to B
            await news(s2, range(6, 16))  # while it moves
            await recovered_in_full(recovered)
            await news(s2, range(16, 21))
            await until(lambda: seen.ns("topic:news")[-1:] == [20], "message 20")
            assert seen.ns("topic:news") == list(range(1, 21))  # nothing missed, nothing twice
            assert seen.seqs("topic:news") == list(range(1, 21))
            assert any(i.replayed for _, _, i in seen.events)  # some came from the history
            assert c.position("news") == (s2.push.broker.epoch, 20)
        finally:
            await c.close()


async def test_while_redis_is_down_pushes_fail_with_unavailable_and_calls_go_on(redis: RedisServer) -> None:
    async with nodes(redis, 1) as (s1,):
        c = await client_of(s1)
        other = await client_of(s1)
        try:
            seen = Seen(c)
            await c.subscribe("news")
            await s1.push.publish("news", Tick(n=1))
            await until(lambda: len(seen.events) == 1, "the first")
            broker = s1.push.broker
            redis.stop()  # lost, data and all
            with pytest.raises(RpcError) as e:
                await other.subscribe("news")
            assert e.value.status == Status.UNAVAILABLE
            with pytest.raises(RpcError) as e:
                await other.stub(Node).shout(1)
            assert e.value.status == Status.UNAVAILABLE
            assert await other.stub(Node).hello() == "hi"  # ordinary calls are served
            with pytest.raises(kcprpc.BrokerUnavailable):
                await s1.push.publish("news", Tick(n=2))
            assert broker.stats()["unavailable"] == 1
            await asyncio.to_thread(redis.start)
            await until(lambda: broker.available, "the broker back")
            await other.subscribe("news")  # works again
            m = await s1.push.publish("news", Tick(n=3))
            assert m.seq == 1  # Redis came back empty: a new epoch
            await until(lambda: seen.ns("topic:news")[-1:] == [3], "the first subscriber, still subscribed")
            assert seen.ns("topic:news") == [1, 3]
        finally:
            await c.close()
            await other.close()


@contextlib.asynccontextmanager
async def node_process(
    redis: RedisServer, prefix: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """A node in its own process (redis_node.py); yields it and its port, killed at the end."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve().parent / "redis_node.py"), redis.url(), prefix,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        yield proc, json.loads(line)["port"]
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_two_processes_share_redis_and_a_killed_nodes_client_resumes_on_the_other(
    redis: RedisServer,
) -> None:
    prefix = f"procs{next(_n)}"
    quick = ClientConfig(
        heartbeat=HeartbeatConfig(interval=0.1, timeout=0.6),
        reconnect=ReconnectPolicy(initial=0.01, maximum=0.1),
        connect_timeout=1.0,
    )
    async with nodes(redis, 1, prefix) as (s1,), node_process(redis, prefix) as (proc, port):
        c1 = await client_of(s1)
        # the public way to name more than one node: the other process first, this one its fallback
        c2 = await kcprpc.connect(
            "127.0.0.1", port, transport=client_transport(s1), config=quick, fallbacks=[s1.address]
        )
        try:
            seen1, seen2 = Seen(c1), Seen(c2)
            for c in (c1, c2):
                await c.stub(Node).join("lobby")
                await c.subscribe("news")
            other = c2.stub(Node)
            for n in range(1, 21):  # from both processes, alternately
                if n % 2:
                    await s1.push.to_room("lobby", Tick(n=n))
                    await s1.push.publish("news", Tick(n=n))
                else:
                    await other.shout(n)
                    await other.announce(n)
            for s in (seen1, seen2):
                await until(lambda s=s: len(s.events) >= 40, "40 events on each client")
                assert s.ns("room:lobby") == list(range(1, 21)) and s.ns("topic:news") == list(range(1, 21))
                assert s.seqs("topic:news") == list(range(1, 21))
            recovered: asyncio.Queue[Recovered] = asyncio.Queue()
            c2.on(Recovered, recovered.put_nowait)
            assert len(s1.sessions) == 1  # c1 only: c2 is on the other process
            proc.kill()  # the other node dies: its client moves here
            await news(s1, range(21, 31))
            await recovered_in_full(recovered)
            await news(s1, range(31, 36))
            await until(lambda: seen2.ns("topic:news")[-1:] == [35], "message 35")
            assert seen2.ns("topic:news") == list(range(1, 36))  # nothing missed, nothing twice
            assert len(s1.sessions) == 2 and c2.reconnects == 1  # c2 moved to its fallback
            await until(lambda: seen1.ns("topic:news")[-1:] == [35], "message 35 on the node that lived")
            assert seen1.ns("topic:news") == list(range(1, 36))
        finally:
            await c1.close()
            await c2.close()


async def test_presence_spans_both_nodes_with_joined_and_left(redis: RedisServer) -> None:
    cfg = kcprpc.ServerConfig(presence=kcprpc.PresenceConfig(events=["room:match:*"]))
    async with nodes(redis, 2, config=cfg) as (s1, s2):
        a, b = await client_of(s1), await client_of(s2)
        try:
            joined: asyncio.Queue[kcprpc.Joined] = asyncio.Queue()
            left: asyncio.Queue[kcprpc.Left] = asyncio.Queue()
            a.on(kcprpc.Joined, joined.put_nowait)
            a.on(kcprpc.Left, left.put_nowait)
            await a.stub(Node).join("match:7")
            assert (await asyncio.wait_for(joined.get(), TIMEOUT)).member.id == a.session_id  # its own
            await b.stub(Node).join("match:7")
            assert (await asyncio.wait_for(joined.get(), TIMEOUT)).member.id == b.session_id  # from node 2
            for c in (a, b):
                m = await c.members(room="match:7")
                assert [e.id for e in m.members] == [a.session_id, b.session_id] and m.total == 2
            b_id = b.session_id
            await b.close()
            assert (await asyncio.wait_for(left.get(), TIMEOUT)).member.id == b_id
            assert (await a.members(room="match:7")).total == 1
        finally:
            await a.close()
            await b.close()
