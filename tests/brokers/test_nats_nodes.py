"""Two kcprpc server processes on different ports sharing one nats-server (NatsBroker): a room
push and a topic publish reach the members on both exactly once, in order, whichever node
publishes; a client whose node dies moves to the other and resumes its topic from the history
with nothing missed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from broker_helpers import until as wait_until
from nats_node import KEY, Node, Tick
from nats_server import NatsServer

import kcprpc

HERE = Path(__file__).resolve().parent
TIMEOUT = 20.0


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    with NatsServer() as srv:
        yield srv


class NodeProc:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


@pytest.fixture
async def nodes(nats_server: NatsServer) -> AsyncIterator[list[NodeProc]]:
    # the node imports kcprpc as installed (the compiled build in its run) and nats_node's dir
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    started: list[NodeProc] = []
    try:
        for _ in range(2):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(HERE / "nats_node.py"), nats_server.url, "e2e",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
            started.append(NodeProc(proc, json.loads(line)["port"]))
        yield started
    finally:
        for n in started:
            if n.proc.returncode is None and n.proc.stdin is not None:
                n.proc.stdin.close()  # a clean shutdown
        for n in started:
            try:
                await asyncio.wait_for(n.proc.wait(), 10)
            except TimeoutError:
                n.kill()
                await n.proc.wait()


class Seen:
    """What one client received: (key, seq, n) per event."""

    def __init__(self, client: kcprpc.Client) -> None:
        self.events: list[tuple[str, int, int, bool]] = []
        client.on(Tick, self.on)

    def on(self, ev: Tick, info: kcprpc.EventInfo) -> None:
        assert info.key is not None and info.position is not None
        self.events.append((info.key, info.position.offset, ev.n, info.replayed))

    def of(self, key: str) -> list[tuple[int, int]]:
        return [(seq, n) for k, seq, n, _ in self.events if k == key]


async def until(pred: Callable[[], object], what: str) -> None:
    await wait_until(pred, what, TIMEOUT)


async def test_rooms_and_topics_reach_both_nodes_once_in_order(nodes: list[NodeProc]) -> None:
    a, b = nodes
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(kcprpc.connect("127.0.0.1", n.port, key=KEY))
            for n in (a, a, b, b)
        ]
        seen = [Seen(c) for c in clients]
        for c in clients:
            await c.stub(Node).join("r")
            await c.subscribe("news")
        stubs = [clients[0].stub(Node), clients[2].stub(Node)]  # one on each node
        sent = await asyncio.gather(
            *(stubs[i % 2].to_room("r", i) for i in range(40)),
            *(stubs[i % 2].publish("news", i) for i in range(40)),
        )
        assert sorted(s.seq for s in sent[:40]) == list(range(1, 41))
        assert sorted(s.seq for s in sent[40:]) == list(range(1, 41))
        room_n = {s.seq: i for i, s in enumerate(sent[:40])}
        news_n = {s.seq: i for i, s in enumerate(sent[40:])}
        await until(lambda: all(len(s.events) >= 80 for s in seen), "80 events on every client")
        for s in seen:
            assert s.of("room:r") == [(q, room_n[q]) for q in range(1, 41)]  # once each, in order
            assert s.of("topic:news") == [(q, news_n[q]) for q in range(1, 41)]
            assert len(s.events) == 80


async def test_a_client_moving_to_the_other_node_resumes_its_topic_with_nothing_missed(
    nodes: list[NodeProc],
) -> None:
    a, b = nodes
    async with kcprpc.connect("127.0.0.1", b.port, key=KEY) as publisher:
        pub = publisher.stub(Node)
        async with kcprpc.connect("127.0.0.1", a.port, key=KEY) as viewer:
            seen = Seen(viewer)
            await viewer.subscribe("news")
            for i in range(10):
                await pub.publish("news", i)
            await until(lambda: len(seen.events) == 10, "the first ten on node A")
            last = viewer.position("news")
            assert last is not None and last.offset == 10
            a.kill()  # node A dies under the viewer
            await a.proc.wait()
        for i in range(10, 25):  # published while the viewer has no node
            await pub.publish("news", i)
        async with kcprpc.connect("127.0.0.1", b.port, key=KEY) as moved:
            seen2 = Seen(moved)
            reply = await moved.subscribe("news", since=last)
            assert reply.recovered is True and reply.replayed == 15 and reply.missed == 0
            for i in range(25, 30):
                await pub.publish("news", i)
            await until(lambda: len(seen2.events) == 20, "15 replayed and 5 live on node B")
        assert [(q, n) for _, q, n, _ in seen.events] == [(q, q - 1) for q in range(1, 11)]
        assert [(q, n) for _, q, n, _ in seen2.events] == [(q, q - 1) for q in range(11, 31)]
        assert [r for *_, r in seen2.events] == [True] * 15 + [False] * 5


async def test_nats_down_fails_pushes_loudly_calls_go_on_and_it_heals(
    nats_server: NatsServer, nodes: list[NodeProc]
) -> None:
    a, b = nodes
    async with (
        kcprpc.connect("127.0.0.1", a.port, key=KEY) as ca,
        kcprpc.connect("127.0.0.1", b.port, key=KEY) as cb,
    ):
        seen = Seen(cb)
        await cb.subscribe("news")
        stub = ca.stub(Node)
        await stub.publish("news", 0)
        await until(lambda: len(seen.events) == 1, "the first message")
        await asyncio.to_thread(nats_server.stop)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(kcprpc.RpcError) as e:
            await stub.publish("news", 1)
        assert e.value.status is kcprpc.Status.UNAVAILABLE and loop.time() - t0 < 5.0
        assert await stub.ping(41) == 42  # calls that need no broker go on
        assert await cb.stub(Node).ping(1) == 2
        await asyncio.to_thread(nats_server.start)

        async def healed() -> bool:
            try:
                await stub.publish("news", 2)
            except kcprpc.RpcError as err:
                assert err.status is kcprpc.Status.UNAVAILABLE
                return False
            return True

        await until(healed, "both nodes to reconnect to NATS by themselves")
        await until(lambda: len(seen.events) == 2, "the message after the outage")
        assert [(q, n) for _, q, n, _ in seen.events] == [(1, 0), (2, 2)]  # 1 was refused: not numbered
