"""A reconnecting client's HELLO names rooms and topics: a claim, never membership.

Hostile-clients issue, item 1: restored membership passes exactly the checks of a first join (the
application's own join logic through ``on_restore``; Subscribe's interceptors and limits for
topics), and one HELLO cannot make the server hold more than a session may.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from test_rpc_support import Demo, Reply, Req, Tick, rejoin_open_rooms

import kcprpc
from kcprpc import ClientConfig, HeartbeatConfig, ReconnectPolicy, RpcError, ServerConfig, Status
from kcprpc.testing import RpcPair, pair

TIMEOUT = 5.0
FAST = ClientConfig(
    heartbeat=HeartbeatConfig(interval=0.05, timeout=1.0),
    reconnect=ReconnectPolicy(initial=0.01, maximum=0.05),
)


async def reconnect(p: RpcPair) -> None:
    """Drop the connection and wait until the client is back (its restore done: WELCOME came)."""
    back = asyncio.Event()
    p.client.on_reconnect = lambda c: back.set()
    await p.drop()
    await asyncio.wait_for(back.wait(), TIMEOUT)


def collect(client: kcprpc.Client) -> tuple[asyncio.Queue[Tick], list[kcprpc.ResumeFailed]]:
    ticks: asyncio.Queue[Tick] = asyncio.Queue()
    failed: list[kcprpc.ResumeFailed] = []
    client.on(Tick, ticks.put_nowait)
    client.on(kcprpc.ResumeFailed, failed.append)
    return ticks, failed


NO_RESUME = ServerConfig(resume_window=None)
"""These tests exercise the restore path of a fresh session (resume: test_rpc_resume.py)."""


async def fence(p: RpcPair) -> None:
    """One round trip on the control stream: every event sent before it has arrived."""
    await p.client.stub(Demo).hello(Req(name="fence"))


@pytest.mark.parametrize("hook", [False, True])
async def test_a_room_the_service_refused_is_not_restored_from_a_hello(hook: bool) -> None:
    kwargs: dict[str, Any] = {"on_restore": rejoin_open_rooms} if hook else {}
    async with pair([Demo()], client_config=FAST, server_config=NO_RESUME, **kwargs) as p:
        d = p.client.stub(Demo)
        with pytest.raises(RpcError) as ei:
            await d.join(Req(name="private-vip"))
        assert ei.value.status is Status.PERMISSION_DENIED
        await d.join(Req(name="lobby"))
        for n in range(3):  # history the intruder wants
            await p.server.push.to_room("private-vip", Tick(n=n))
        # the hostile client claims the room it was refused, and its whole history
        p.client.rooms.add("private-vip")
        p.client.topic_offsets["room:private-vip"] = (p.server.push.broker.epoch, 0)
        ticks, failed = collect(p.client)
        await reconnect(p)
        await p.server.push.to_room("private-vip", Tick(n=100))
        await fence(p)
        assert ticks.empty()  # neither the history nor the live event
        sess = next(iter(p.server.sessions))
        assert "private-vip" not in sess.rooms and not p.server.push.members("private-vip")
        assert "private-vip" not in p.client.rooms
        assert ("room:private-vip", "not restored") in {(f.key, f.reason) for f in failed}
        assert p.server.stats["restores_denied"] >= 1
        # the open room comes back only through the application's own hook
        assert ("lobby" in sess.rooms) is hook
        assert ("lobby" in p.client.rooms) is hook


async def test_on_restore_joins_with_the_services_own_check_and_replays_only_those() -> None:
    async with pair([Demo()], client_config=FAST, server_config=NO_RESUME, on_restore=rejoin_open_rooms) as p:
        d = p.client.stub(Demo)
        await d.join(Req(name="arena"))
        await p.server.push.to_room("arena", Tick(n=1))
        await fence(p)
        await p.server.push.to_room("arena", Tick(n=2))  # missed while away: replayed
        await p.server.push.to_room("private-x", Tick(n=3))
        p.client.topic_offsets["room:arena"] = (p.server.push.broker.epoch, 1)
        p.client.rooms.add("private-x")
        p.client.topic_offsets["room:private-x"] = (p.server.push.broker.epoch, 0)
        ticks, failed = collect(p.client)
        await reconnect(p)
        await fence(p)
        got = []
        while not ticks.empty():
            got.append(ticks.get_nowait().n)
        assert got == [2]
        assert p.client.rooms == {"arena"}
        assert [f.key for f in failed] == ["room:private-x"]
        assert p.server.stats["restored_rooms"] == 1


def refuse_topic(prefix: str) -> Callable[[Any, Callable[[], Awaitable[Any]]], Awaitable[Any]]:
    async def interceptor(ctx: Any, call_next: Callable[[], Awaitable[Any]]) -> Any:
        if ctx.method == "kcprpc.Push/Subscribe" and ctx.request.topic.startswith(prefix):
            raise RpcError(Status.PERMISSION_DENIED, "not for you")
        return await call_next()

    return interceptor


async def test_a_subscribe_interceptor_also_guards_restored_topics() -> None:
    async with pair(
        [Demo()], client_config=FAST, server_config=NO_RESUME, server_interceptors=[refuse_topic("secret")]
    ) as p:
        with pytest.raises(RpcError) as ei:
            await p.client.subscribe("secret.news")
        assert ei.value.status is Status.PERMISSION_DENIED
        await p.client.subscribe("news")
        await p.server.push.publish("secret.news", Tick(n=1))
        p.client.topics.add("secret.news")
        p.client.topic_offsets["topic:secret.news"] = (p.server.push.broker.epoch, 0)
        ticks, failed = collect(p.client)
        await reconnect(p)
        await p.server.push.publish("secret.news", Tick(n=2))
        await p.server.push.publish("news", Tick(n=3))
        await fence(p)
        assert ticks.qsize() == 1 and ticks.get_nowait().n == 3  # the allowed topic came back
        assert p.client.topics == {"news"}
        assert [f.key for f in failed] == ["topic:secret.news"]
        sess = next(iter(p.server.sessions))
        assert sess.topics == {"news"}
        assert p.server.stats["restored_topics"] == 1 and p.server.stats["restores_denied"] == 1


async def test_interceptors_see_the_metadata_of_the_hello_when_restoring() -> None:
    seen: list[Any] = []

    async def record(ctx: Any, call_next: Callable[[], Awaitable[Any]]) -> Any:
        if ctx.method == "kcprpc.Push/Subscribe":
            seen.append((ctx.metadata.get("token"), ctx.request.topic))
        return await call_next()

    cfg = ClientConfig(heartbeat=FAST.heartbeat, reconnect=FAST.reconnect, metadata={"token": "t1"})
    async with pair([Demo()], client_config=cfg, server_config=NO_RESUME, server_interceptors=[record]) as p:
        await p.client.subscribe("news")
        await reconnect(p)
        assert seen == [(None, "news"), ("t1", "news")]


async def test_a_hello_naming_more_than_a_session_may_hold_restores_nothing() -> None:
    config = ServerConfig(max_rooms=8, max_subscriptions=8, resume_window=None)
    async with pair([Demo()], client_config=FAST, server_config=config, on_restore=rejoin_open_rooms) as p:
        await p.client.stub(Demo).join(Req(name="lobby"))
        p.client.rooms.update(f"r{i}" for i in range(5000))  # cheap for the client, not for the server
        p.client.topics.update(f"t{i}" for i in range(5000))
        _, failed = collect(p.client)
        await reconnect(p)
        sess = next(iter(p.server.sessions))
        assert sess.rooms == set() and sess.topics == set()
        assert p.server.stats["restores_refused"] == 1
        assert p.client.rooms == set() and p.client.topics == set()
        assert len(failed) == 10001  # the client is told of each, locally: nothing crossed the wire per name
        assert (await p.client.stub(Demo).hello(Req(name="ok"))).text == "hello ok"


async def test_the_room_and_name_limits_hold_for_a_first_join_too() -> None:
    config = ServerConfig(max_rooms=2, max_name_length=16)
    async with pair([Demo()], server_config=config) as p:
        d = p.client.stub(Demo)
        await d.join(Req(name="a"))
        await d.join(Req(name="b"))
        with pytest.raises(RpcError) as ei:
            await d.join(Req(name="c"))
        assert ei.value.status is Status.RESOURCE_EXHAUSTED
        with pytest.raises(RpcError) as ei:
            await p.client.subscribe("x" * 17)
        assert ei.value.status is Status.INVALID_ARGUMENT
        with pytest.raises(RpcError) as ei:
            await p.client.subscribe("")
        assert ei.value.status is Status.INVALID_ARGUMENT
        await p.client.subscribe("x" * 16)


class Gate(kcprpc.Service, name="test.Gate"):
    """A notify handler that waits: a flood of notifies must not pile up running handlers."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running = 0
        self.peak = 0

    @kcprpc.rpc.notify(delivery="reliable")
    async def poke(self, req: Req) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1

    async def ping(self, req: Req) -> Reply:
        return Reply(text="pong")


async def test_a_notify_flood_is_shed_past_the_handler_limit() -> None:
    gate = Gate()
    async with pair([gate], server_config=ServerConfig(max_concurrent_notifications=8)) as p:
        g = p.client.stub(Gate)
        for i in range(500):
            await g.poke(Req(name=str(i)))
        await g.ping(Req(name="fence"))  # reliable notifies go in order on the control stream
        assert gate.peak == 8
        assert p.server.stats["notifications"] == 8
        assert p.server.stats["notifications_dropped"] == 492
        gate.release.set()
        for _ in range(100):
            await asyncio.sleep(0)
            if not gate.running:
                break
        await g.poke(Req(name="again"))  # room again once the handlers finished
        await g.ping(Req(name="fence"))
        assert p.server.stats["notifications"] == 9


async def test_a_refused_notify_is_counted_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def deny(ctx: Any, call_next: Callable[[], Awaitable[Any]]) -> Any:
        if ctx.method == "test.Gate/poke":
            raise RpcError(Status.UNAUTHENTICATED, "log in first")
        return await call_next()

    gate = Gate()
    async with pair([gate], server_interceptors=[deny]) as p:
        g = p.client.stub(Gate)
        for i in range(50):
            await g.poke(Req(name=str(i)))
        await g.ping(Req(name="fence"))
        for _ in range(100):
            if p.server.stats["notifications_refused"] == 50:
                break
            await asyncio.sleep(0)
        assert p.server.stats["notifications_refused"] == 50
        assert gate.peak == 0
        assert not [r for r in caplog.records if r.exc_info]


async def test_hello_metadata_over_the_limit_refuses_the_connection() -> None:
    cfg = ClientConfig(metadata={"blob": "x" * 2000})
    with pytest.raises(RpcError) as ei:
        async with pair([Demo()], client_config=cfg, server_config=ServerConfig(max_metadata_size=1024)):
            pass
    assert ei.value.status is Status.RESOURCE_EXHAUSTED
    assert "metadata" in ei.value.message
    async with pair([Demo()], client_config=ClientConfig(metadata={"token": "ok"})) as p:
        assert next(iter(p.server.sessions)).metadata == {"token": "ok"}


async def test_the_restores_of_one_address_are_budgeted() -> None:
    """Each restored topic is a whole Subscribe: a HELLO naming 1,000 topics cost 50 ms of CPU, and
    a client reconnecting again and again could take the server's core (an audit). The rooms and
    topics restored for one address go through a bucket (``restore_rate``, ``restore_burst``; one
    restore may take it into debt); past it a HELLO restores nothing and its client is told. Over
    KCP on 127.0.0.1, not exempt here."""
    from kcp.secure import SecureConfig

    wire = kcprpc.SecureWire(key="k", config=SecureConfig(exempt=()))
    config = ServerConfig(resume_window=None, restore_rate=1, restore_burst=6)
    async with pair(
        [Demo()], link="kcp", transport=kcprpc.Transport(wire), client_config=FAST, server_config=config
    ) as p:
        topics = {"a", "b", "c", "d"}
        for t in sorted(topics):
            await p.client.subscribe(t)
        await reconnect(p)  # 4 of the 6: restored
        assert p.client.topics == topics and p.server.stats["restores_refused"] == 0
        await reconnect(p)  # into debt: restored
        assert p.client.topics == topics
        _, failed = collect(p.client)
        await reconnect(p)  # the bucket is empty: nothing
        assert p.server.stats["restores_refused"] == 1 and p.client.topics == set()
        assert sorted(f.key for f in failed) == [f"topic:{t}" for t in sorted(topics)]
        assert (await p.client.stub(Demo).hello(Req(name="ok"))).text == "hello ok"
