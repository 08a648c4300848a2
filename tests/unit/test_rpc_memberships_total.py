"""What the rooms and topics of all sessions together may cost a server
(``ServerConfig.max_membership_bytes``, docs/rpc.md "Rooms and topics of all clients together"):
each membership is charged as it is made; past the bound the sessions in the most are ended with
RESOURCE_EXHAUSTED "memberships", the largest first, and leave their rooms and topics at once.

One client that holds the key may subscribe to ``max_subscriptions`` topics of its own on each of
many connections: this is the bound that holds then."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

import kcprpc
from kcprpc import Client, RpcError, ServerConfig, Status
from kcprpc.push import KEY_COST, MEMBERSHIP_ALLOWANCE, MEMBERSHIP_COST, membership_bytes
from kcprpc.testing import pair

TIMEOUT = 5.0


class News(BaseModel):
    text: str


class Lobby(kcprpc.Service, name="test.Lobby", events=[News]):
    async def join(self, room: str) -> None:
        kcprpc.current_context().session.join(room)


async def test_every_membership_is_charged_past_the_allowance_and_given_back() -> None:
    """Every room or topic with local members is charged; a session's own memberships only past
    its allowance (a few rooms and topics are free, whatever the number of sessions)."""
    async with pair([Lobby()], link="mux") as p:
        hub = p.server.push
        other = Client(p.connector)
        await other.connect()
        await p.client.subscribe("news")
        first = next(s for s in p.server.sessions if s.id == p.client.session_id)
        news = len("topic:news")
        assert first.memberships == MEMBERSHIP_COST + news and membership_bytes(first) == 0
        assert hub.held == KEY_COST + news  # the key; the membership is within the allowance
        await other.subscribe("news")  # a second member: the key is charged once
        await other.stub(Lobby).join("arena")
        second = next(s for s in p.server.sessions if s is not first)
        assert second.memberships == 2 * MEMBERSHIP_COST + news + len("room:arena")
        keys = 2 * KEY_COST + news + len("room:arena")
        assert hub.held == keys
        # past the allowance: each membership is charged whole
        names = [f"t{i:03d}" for i in range(MEMBERSHIP_ALLOWANCE // MEMBERSHIP_COST + 5)]
        for name in names:
            await p.client.subscribe(name)
        own = sum(MEMBERSHIP_COST + len("topic:" + n) for n in names) + MEMBERSHIP_COST + news
        assert first.memberships == own and membership_bytes(first) == own - MEMBERSHIP_ALLOWANCE > 0
        keys += sum(KEY_COST + len("topic:" + n) for n in names)
        assert hub.held == keys + membership_bytes(first)
        for name in names[:3]:  # giving some back, still past the allowance
            await p.client.unsubscribe(name)
            keys -= KEY_COST + len("topic:" + name)
        assert hub.held == keys + membership_bytes(first) and membership_bytes(first) > 0
        for name in names[3:]:
            await p.client.unsubscribe(name)
            keys -= KEY_COST + len("topic:" + name)
        assert membership_bytes(first) == 0 and hub.held == keys
        await other.close()
        for _ in range(100):
            if len(p.server.sessions) == 1:
                break
            await asyncio.sleep(0.01)
        assert hub.held == KEY_COST + news
        await p.client.unsubscribe("news")
        assert hub.held == 0 and first.memberships == 0


async def test_sessions_in_the_most_topics_are_shed_past_the_process_bound() -> None:
    """Three hostile connections subscribe to topics of their own, 300 each: each within its own
    ``max_subscriptions``, together past the process bound. The first that passes it is ended with
    RESOURCE_EXHAUSTED "memberships" and leaves its topics at once; the total stays under the
    bound and one subscription; a client in two shared topics keeps its calls and events."""
    cap = 300 * 1024
    cfg = ServerConfig(max_membership_bytes=cap)
    async with pair([Lobby()], link="mux", server_config=cfg) as p:
        hub = p.server.push
        got: list[News] = []
        p.client.on(News, got.append)
        await p.client.subscribe("news")
        await p.client.stub(Lobby).join("arena")
        hostile = [Client(p.connector) for _ in range(3)]
        for h in hostile:
            await h.connect()
        outcomes: list[str] = []
        peak = 0
        for i, h in enumerate(hostile):
            try:
                for j in range(300):
                    await h.subscribe(f"mine-{i}-{j:04d}-" + "x" * 200)
                    peak = max(peak, hub.held)
                outcomes.append("kept")
            except RpcError as e:
                assert e.status is Status.RESOURCE_EXHAUSTED and "memberships" in e.message
                outcomes.append("shed")
        assert p.server.stats["memberships_shed"] >= 1 and "shed" in outcomes
        assert peak <= cap + KEY_COST + MEMBERSHIP_COST + 300
        assert hub.held <= cap
        # the legitimate client was never among the largest: it is still in both, and served
        await p.server.push.publish("news", News(text="still"))
        await p.server.push.to_room("arena", News(text="here"))
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        assert [n.text for n in got] == ["still", "here"]
        for h in hostile:
            await h.close()


def test_the_bound_must_be_positive() -> None:
    assert ServerConfig().max_membership_bytes == 32 * 1024 * 1024
    with pytest.raises(kcprpc.UsageError):
        ServerConfig(max_membership_bytes=0)


async def test_sessions_within_their_allowance_are_never_shed(caplog: pytest.LogCaptureFixture) -> None:
    """Twelve sessions, each with a topic of its own (a user's feed): the topics alone pass a bound
    of 8 KiB, but no session is in more than its allowance, so nobody is shed: the server says to
    raise the bound, and its calls go on."""
    cfg = ServerConfig(max_membership_bytes=8 * 1024)
    async with pair([Lobby()], link="mux", server_config=cfg) as p:
        clients = [Client(p.connector) for _ in range(12)]
        for i, cl in enumerate(clients):
            await cl.connect()
            await cl.subscribe(f"user:{i}")
        for _ in range(10):  # the shed pass runs in a later loop turn: it must end nobody
            if any("raise the bound" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0)
        assert any("raise the bound" in r.getMessage() for r in caplog.records)
        assert p.server.push.held > 8 * 1024 and p.server.stats["memberships_shed"] == 0
        await asyncio.gather(*(cl.stub(Lobby).join("lobby") for cl in clients))
        assert p.server.stats["memberships_shed"] == 0 and all(cl.connected for cl in clients)
        for cl in clients:
            await cl.close()


async def test_sessions_kept_for_a_resume_are_shed_too() -> None:
    """A client that fills most of the bound and then drops its connection keeps its topics
    while its session waits for a resume. Only live sessions were candidates, so an honest client
    that then passed the bound was shed in its place (an audit). Now the kept session, the one in
    the most, goes: gone for good, out of its topics at once."""
    cfg = ServerConfig(max_membership_bytes=300 * 1024)
    async with pair([Lobby()], link="mux", server_config=cfg) as p:
        hub = p.server.push
        honest = p.client
        hostile = Client(p.connector)  # the pair's current connection
        await hostile.connect()
        for j in range(150):
            await hostile.subscribe(f"mine-{j:04d}-" + "x" * 200)
        hostile_id = hostile.session_id
        p.refuse = True
        await p.drop()  # the hostile session is detached, its topics kept
        async with asyncio.timeout(TIMEOUT):
            while not p.server.detached_sessions:
                await asyncio.sleep(0.01)
        for j in range(100):
            await honest.subscribe(f"feed-{j:04d}-" + "y" * 200)
        assert p.server.stats["memberships_shed"] == 1 and honest.connected
        assert hub.held <= 300 * 1024 and p.server.detached_sessions == 0
        assert all(s.id != hostile_id for s in p.server.sessions)
        await hostile.close()
