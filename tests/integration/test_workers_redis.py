"""``kcprpc serve --workers 2 --broker redis://...`` with a real redis-server on 127.0.0.1: clients
spread over both workers, and room and topic pushes made on either worker reach every member
exactly once and in order; a killed worker is restarted and its clients, back on a fresh session,
resume their topic from Redis's history with nothing missed; each worker serves its own metrics
on ``--metrics`` port + index."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "brokers"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from broker_helpers import until as wait_until
from redis_server import RedisServer
from test_rpc_support import Tick

import kcprpc
from kcprpc import ClientConfig, EventInfo, HeartbeatConfig, ReconnectPolicy, Recovered, RpcError
from tests.integration.node_service import Node
from tests.integration.test_workers import KEY, Workers, cli_workers, whoami

TIMEOUT = 20.0
FAST = ClientConfig(
    heartbeat=HeartbeatConfig(interval=0.1, timeout=2.0),
    reconnect=ReconnectPolicy(initial=0.02, maximum=0.2),
)


def free_port_pair() -> int:
    """A TCP port p on 127.0.0.1 with p + 1 free too (each worker's metrics endpoint)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            p = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", p + 1))
                except OSError:
                    continue
                return int(p)
    raise AssertionError("no two consecutive free ports")


@pytest.fixture
def workers(tmp_path: Path, redis: RedisServer, request: pytest.FixtureRequest) -> Iterator[Workers]:
    metrics = free_port_pair()
    w = cli_workers(
        tmp_path / "serve.log",
        "--broker", redis.url(), "--metrics", f"127.0.0.1:{metrics}",
        app="tests.integration.workers_app:push_app",
    )  # fmt: skip
    w.metrics = metrics
    yield w
    assert w.stop() == 0, w.log()


class Member:
    """A client and the Ticks it received: ``(key, n, position offset, replayed)``."""

    def __init__(self, client: kcprpc.Client) -> None:
        self.client = client
        self.events: list[tuple[str | None, int, int | None, bool]] = []
        self.recovered: list[Recovered] = []
        client.on(Tick, self._tick)
        client.on(Recovered, self.recovered.append)

    def _tick(self, t: Tick, info: EventInfo) -> None:
        pos = info.position.offset if info.position is not None else None
        self.events.append((info.key, t.n, pos, info.replayed))

    def ns(self, key: str) -> list[int]:
        return [n for k, n, _, _ in self.events if k == key]


@pytest.fixture
async def members() -> AsyncIterator[list[Member]]:
    out: list[Member] = []
    yield out
    await asyncio.gather(*(m.client.close() for m in out), return_exceptions=True)


async def until(pred: Callable[[], object], what: str) -> None:
    await wait_until(pred, what, TIMEOUT)


async def spread(
    connect: Callable[[], kcprpc.Client], members: list[Member], per_worker: int
) -> dict[int, list[Member]]:
    """Connect clients (``connect()`` makes one: KCP, WebSocket or WebTransport) until each worker
    serves ``per_worker`` of them (bounded); two different processes must have answered."""
    on: dict[int, list[Member]] = {0: [], 1: []}
    pids: dict[int, set[int]] = {0: set(), 1: set()}
    for _ in range(64):
        c = connect()
        await asyncio.wait_for(c.connect(), 5)
        m = Member(c)
        members.append(m)
        who = await whoami(c)
        on[who["worker"]].append(m)
        pids[who["worker"]].add(who["pid"])
        if all(len(v) >= per_worker for v in on.values()):
            assert len(pids[0] | pids[1]) == 2 and pids[0] != pids[1]  # two processes answered
            return on
    raise AssertionError(f"64 clients did not give {per_worker} per worker: {[len(v) for v in on.values()]}")


def kcp_clients(port: int) -> Callable[[], kcprpc.Client]:
    """Makes the KCP clients :func:`spread` connects."""
    return lambda: kcprpc.connect("127.0.0.1", port, key=KEY, config=FAST)


async def test_room_and_topic_pushes_reach_every_member_on_both_workers_once_in_order(
    workers: Workers, members: list[Member]
) -> None:
    on = await spread(kcp_clients(workers.port), members, 3)
    for m in members:
        await m.client.stub(Node, timeout=5).join("lobby")
        await m.client.subscribe("news")
    a, b = on[0][0].client.stub(Node, timeout=5), on[1][0].client.stub(Node, timeout=5)
    for n in range(1, 41):  # pushes made by handlers on both workers, alternately
        stub = a if n % 2 else b
        await stub.shout(n)  # room "lobby"
        await stub.announce(n)  # topic "news"
    for m in members:
        await until(lambda m=m: len(m.events) >= 80, "80 events on every member")
    for m in members:
        assert m.ns("room:lobby") == list(range(1, 41))  # once each, in order, from both workers
        assert m.ns("topic:news") == list(range(1, 41))
        assert [p for k, _, p, _ in m.events if k == "topic:news"] == list(range(1, 41))  # one sequence
    await a.shout(41)  # a fence on each key: what was sent before it has all arrived
    await a.announce(41)
    for m in members:
        await until(lambda m=m: m.ns("room:lobby")[-1:] == m.ns("topic:news")[-1:] == [41], "the fences")
    for m in members:  # nothing came twice before the fences
        assert m.ns("room:lobby") == m.ns("topic:news") == list(range(1, 42)) and len(m.events) == 82


async def test_a_killed_workers_clients_resume_their_topic_from_redis(
    workers: Workers, members: list[Member]
) -> None:
    dead, landed = await kill_worker_1_under_its_clients(kcp_clients(workers.port), workers.pids, members)
    assert dead not in landed  # the dead process serves nobody


async def kill_worker_1_under_its_clients(
    connect: Callable[[], kcprpc.Client], pids: list[int], members: list[Member]
) -> tuple[int, set[int]]:
    """Clients (``connect()`` makes one: KCP or a web transport) on both workers subscribe to
    ``news``; 1-10 are published; worker 1 is killed (SIGKILL) and 11-30 published while it is down
    or restarting; its clients reconnect on their own to a worker that does not know them; 31-40
    follow. Every client must get 1-40 once and in order, the victims by recovering 11-30 from the
    history. Returns the dead pid and the pids the victims landed on."""
    on = await spread(connect, members, 2)
    for m in members:
        await m.client.subscribe("news")
    survivor = on[0][0].client.stub(Node, timeout=5)
    for n in range(1, 11):
        await survivor.announce(n)
    for m in members:
        await until(lambda m=m: len(m.ns("topic:news")) >= 10, "the first 10 messages")
    victims = on[1]
    old_sessions = {m.client.session_id for m in victims}
    dead = pids[1]
    os.kill(dead, signal.SIGKILL)
    for n in range(11, 31):  # published while worker 1 is dead or restarting
        await survivor.announce(n)
    landed: set[int] = set()
    for m in victims:  # the next call reaches a worker that does not know the connection
        for _ in range(100):
            try:
                who = await whoami(m.client)
                if m.client.session_id not in old_sessions:
                    landed.add(who["pid"])
                    break
            except RpcError:
                await asyncio.wait_for(m.client.wait_connected(), 10)
        assert m.client.reconnects >= 1 and m.client.session_id not in old_sessions
    for n in range(31, 41):
        await survivor.announce(n)
    for m in members:
        await until(lambda m=m: len(m.ns("topic:news")) >= 40, "40 messages on every member")
    for m in members:
        assert m.ns("topic:news") == list(range(1, 41)), m.events  # nothing missed, nothing twice
    for m in victims:
        assert any(r.key == "topic:news" and r.recovered for r in m.recovered), m.recovered
        assert any(replayed for k, _, _, replayed in m.events if k == "topic:news")  # from history
    return dead, landed

def scrape(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def test_each_worker_serves_its_metrics_on_port_plus_index(
    workers: Workers, members: list[Member]
) -> None:
    await spread(kcp_clients(workers.port), members, 1)
    base = workers.metrics
    pages = [await asyncio.to_thread(scrape, base + i, "/metrics") for i in (0, 1)]
    health = [await asyncio.to_thread(scrape, base + i, "/healthz") for i in (0, 1)]
    assert [s for s, _ in pages] == [200, 200] and [s for s, _ in health] == [200, 200], health
    for _, text in pages:
        assert "kcprpc_broker_available" in text and "kcprpc_server_sessions" in text
        sessions = [ln for ln in text.splitlines() if ln.startswith("kcprpc_server_sessions ")]
        assert sessions and float(sessions[0].split()[1]) >= 1  # each worker counts its own
