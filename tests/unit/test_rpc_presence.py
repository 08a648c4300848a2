"""Presence: members of a room or topic across the broker, Joined / Left events for the keys that
opt in, who may list, and the bounds (docs/rpc.md, "Presence")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

import kcprpc
from kcprpc import (
    Client,
    ClientConfig,
    Joined,
    Left,
    MemoryBroker,
    PresenceConfig,
    RawEvent,
    RpcError,
    ServerConfig,
    Status,
    UsageError,
    current_context,
)
from kcprpc.testing import RpcPair, pair

TIMEOUT = 5.0
T = TypeVar("T")


@kcprpc.event("test.Ping")
class Ping(BaseModel):
    n: int


class Lobby(kcprpc.Service, name="test.Lobby"):
    """Rooms open to anyone; ``info`` sets the session's presence info."""

    async def join(self, room: str) -> None:
        current_context().session.join(room)

    async def leave(self, room: str) -> None:
        current_context().session.leave(room)

    async def info(self, name: str) -> None:
        current_context().session.presence = {"name": name}


def named(session: kcprpc.ServerSession) -> None:
    """``on_connect``: the client's ``name`` metadata is its presence info."""
    session.presence = {"name": session.metadata.get("name", "?")}


def config(**kw: Any) -> ServerConfig:
    return ServerConfig(presence=PresenceConfig(**kw))


async def got(q: asyncio.Queue[T]) -> T:
    return await asyncio.wait_for(q.get(), TIMEOUT)


def queue(client: Client, tp: type[T]) -> asyncio.Queue[T]:
    q: asyncio.Queue[T] = asyncio.Queue()
    client.on(tp, q.put_nowait)
    return q


@contextlib.asynccontextmanager
async def clients(connect: Callable[[], Awaitable[Any]], *names: str) -> AsyncIterator[list[Client]]:
    """More clients of one server, each with its ``name`` metadata."""
    out = []
    try:
        for n in names:
            c = Client(connect, config=ClientConfig(heartbeat=None, metadata={"name": n}))
            await c.connect()
            out.append(c)
        yield out
    finally:
        for c in out:
            await c.close()


@contextlib.asynccontextmanager
async def lobby(cfg: ServerConfig, **kw: Any) -> AsyncIterator[RpcPair]:
    async with pair(
        [Lobby()],
        server_config=cfg,
        client_config=ClientConfig(metadata={"name": "ana"}),
        on_connect=named,
        **kw,
    ) as p:
        yield p


async def test_members_of_a_room_client_and_server_side() -> None:
    async with lobby(config(keys=["room:lobby"])) as p, clients(p.connector, "bo") as (bo,):
        await p.client.stub(Lobby).join("lobby")
        await bo.stub(Lobby).join("lobby")
        m = await p.client.members(room="lobby")
        assert m.key == "room:lobby" and m.total == 2 and not m.truncated
        assert [(e.id, e.info) for e in m.members] == [
            (p.client.session_id, {"name": "ana"}),
            (bo.session_id, {"name": "bo"}),
        ]
        assert await p.server.push.presence.members(room="lobby") == m
        assert (await p.server.push.presence.members(room="lobby", limit=1)).members == m.members[:1]
        assert p.server.stats["presence_entries"] == 2 and p.server.stats["presence_lists"] == 1
        await bo.stub(Lobby).leave("lobby")
        assert [e.id for e in (await p.client.members(room="lobby")).members] == [p.client.session_id]
        assert p.server.stats["presence_entries"] == 1


async def test_members_of_a_topic_and_unsubscribe() -> None:
    async with lobby(config(keys=["topic:chat:*"])) as p, clients(p.connector, "bo") as (bo,):
        await p.client.subscribe("chat:1")
        await bo.subscribe("chat:1")
        m = await bo.members(topic="chat:1")
        assert (m.key, m.total) == ("topic:chat:1", 2)
        assert {e.info["name"] for e in m.members} == {"ana", "bo"}
        await bo.unsubscribe("chat:1")
        assert (await p.client.members(topic="chat:1")).total == 1
        # a topic the pattern does not match keeps no presence
        await p.client.subscribe("news")
        with pytest.raises(RpcError) as e:
            await p.client.members(topic="news")
        assert e.value.status is Status.FAILED_PRECONDITION
        with pytest.raises(UsageError, match="does not keep presence"):
            await p.server.push.presence.members(topic="news")


async def test_joined_and_left_reach_every_member_when_opted_in() -> None:
    async with lobby(config(events=["room:match:*"])) as p, clients(p.connector, "bo") as (bo,):
        raw: list[RawEvent] = []
        p.client.on_raw_event(raw.append)
        joined, left = queue(p.client, Joined), queue(p.client, Left)
        bo_joined = queue(bo, Joined)
        await p.client.stub(Lobby).join("match:1")
        mine = await got(joined)  # the new member gets its own Joined
        assert (mine.room, mine.member.id, mine.member.info) == (
            "match:1",
            p.client.session_id,
            {"name": "ana"},
        )
        await bo.stub(Lobby).join("match:1")
        ev = await got(joined)
        assert (ev.key, ev.topic, ev.member.id, ev.member.info) == (
            "room:match:1",
            None,
            bo.session_id,
            {"name": "bo"},
        )
        assert (await got(bo_joined)).member.id == bo.session_id
        await bo.stub(Lobby).leave("match:1")
        gone = await got(left)
        assert (gone.key, gone.member.id, gone.member.info) == ("room:match:1", bo.session_id, {"name": "bo"})
        # unnumbered: a key, no sequence number or epoch, no offset kept
        assert [(r.name, r.key, r.seq, r.epoch) for r in raw] == [
            ("kcprpc.Joined", "room:match:1", None, None),
            ("kcprpc.Joined", "room:match:1", None, None),
            ("kcprpc.Left", "room:match:1", None, None),
        ]
        assert "room:match:1" not in p.client.topic_offsets
        assert p.server.stats["presence_events"] == 3


async def test_no_events_for_a_room_that_did_not_opt_in() -> None:
    cfg = config(keys=["room:lobby"], events=["room:match:*"])
    async with lobby(cfg) as p, clients(p.connector, "bo") as (bo,):
        joined, pings = queue(p.client, Joined), queue(p.client, Ping)
        for room in ("lobby", "other"):
            await p.client.stub(Lobby).join(room)
            await bo.stub(Lobby).join(room)
            await bo.stub(Lobby).leave(room)
            # a Joined or Left would be on the control stream before this
            await p.server.push.to_room(room, Ping(n=1))
            assert await got(pings) == Ping(n=1)
        assert joined.empty()
        assert p.server.stats["presence_events"] == 0
        with pytest.raises(RpcError) as e:
            await p.client.members(room="other")
        assert e.value.status is Status.FAILED_PRECONDITION
        assert p.server.stats["presence_lists_denied"] == 1


async def test_leave_on_disconnect() -> None:
    async with lobby(config(events=["room:lobby"])) as p:
        left = queue(p.client, Left)
        await p.client.stub(Lobby).join("lobby")
        async with clients(p.connector, "bo") as (bo,):
            await bo.stub(Lobby).join("lobby")
            bo_id = bo.session_id
            assert (await p.client.members(room="lobby")).total == 2
        ev = await got(left)  # bo's session was dropped when its connection closed
        assert ev.member.id == bo_id and ev.member.info == {"name": "bo"}
        assert [e.id for e in (await p.client.members(room="lobby")).members] == [p.client.session_id]
        assert p.server.stats["presence_entries"] == 1
    assert p.server.stats["presence_entries"] == 0
    assert await p.server.push.broker.presence("room:lobby", None) == ([], 0)


async def test_only_a_member_may_list() -> None:
    seen: list[Any] = []

    async def audit(ctx: kcprpc.ServerContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        if ctx.method == "kcprpc.Push/Members":
            seen.append(ctx.request)
            if ctx.request.room == "vault":
                raise RpcError(Status.PERMISSION_DENIED, "no listing the vault")
        return await call_next()

    cfg = config(keys=["room:*", "topic:*"])
    async with lobby(cfg, server_interceptors=[audit]) as p, clients(p.connector, "bo") as (bo,):
        await bo.stub(Lobby).join("lobby")
        await bo.subscribe("chat")
        for kw in ({"room": "lobby"}, {"topic": "chat"}):
            with pytest.raises(RpcError) as e:
                await p.client.members(**kw)
            assert e.value.status is Status.PERMISSION_DENIED and "not " in e.value.message
        assert p.server.stats["presence_lists_denied"] == 2
        assert p.server.stats["presence_lists"] == 0
        await p.client.stub(Lobby).join("vault")
        with pytest.raises(RpcError, match="no listing the vault"):
            await p.client.members(room="vault")
        assert [(r.room, r.topic) for r in seen] == [("lobby", None), (None, "chat"), ("vault", None)]
        # the wire request must name one of them
        for bad in ({}, {"room": "lobby", "topic": "chat"}):
            with pytest.raises(RpcError) as e:
                await p.client.invoke("kcprpc.Push/Members", bad)
            assert e.value.status is Status.INVALID_ARGUMENT
        with pytest.raises(UsageError):
            await p.client.members()
        with pytest.raises(UsageError):
            await p.client.members(room="a", topic="b")


async def test_listing_is_cut_at_max_members() -> None:
    cfg = config(keys=["room:lobby"], max_members=3)
    async with lobby(cfg) as p, clients(p.connector, "b", "c", "d", "e") as more:
        for c in [p.client, *more]:
            await c.stub(Lobby).join("lobby")
        m = await more[0].members(room="lobby")
        assert (len(m.members), m.total, m.truncated) == (3, 5, True)
        assert [e.id for e in m.members] == [p.client.session_id, more[0].session_id, more[1].session_id]
        assert p.server.stats["presence_lists_truncated"] == 1
        # the server's own listing is not cut unless asked
        assert len((await p.server.push.presence.members(room="lobby")).members) == 5


async def test_listing_fits_the_message_size() -> None:
    broker = MemoryBroker()
    for i in range(100):  # members on other servers, each with a 200-byte info
        broker.presence_add("room:lobby", f"other-{i}", {"name": "x" * 200})
    cfg = ServerConfig(
        max_message_size=8192, max_send_backlog=65536, presence=PresenceConfig(keys=["room:lobby"])
    )
    async with lobby(cfg, broker=broker) as p:
        await p.client.stub(Lobby).join("lobby")
        m = await p.client.members(room="lobby")
        assert m.total == 101 and m.truncated
        assert 20 <= len(m.members) < 40  # ~210 bytes each, under 8 KiB less the reply's own room
        assert len(kcprpc.codec.pack(m.model_dump())) < 8192
        assert p.server.stats["presence_lists_truncated"] == 1


async def test_info_is_kept_once_per_session_and_bounded_decoded() -> None:
    """A session's info was decoded again for each of its keys (up to 64 copies), and 256 bytes of
    empty lists are 16 KB of objects: now its keys share one copy, and an info whose decoded
    estimate passes 16 times ``max_info_size`` is refused like a larger one."""
    async with lobby(config(keys=["room:*"])) as p:
        stub = p.client.stub(Lobby)
        for room in ("a", "b", "c"):
            await stub.join(room)
        broker = p.server.push.broker
        infos = [(await broker.presence("room:" + r, None))[0][0][1] for r in ("a", "b", "c")]
        assert infos[0] == {"name": "ana"} and infos[0] is infos[1] is infos[2]
        session = next(iter(p.server.sessions))
        session.presence = {"m": [[] for _ in range(200)]}  # 205 bytes packed
        with pytest.raises(RpcError) as e:
            await stub.join("d")
        assert e.value.status is Status.RESOURCE_EXHAUSTED and "decoded" in e.value.message


async def test_info_over_the_bound_refuses_the_join() -> None:
    async with lobby(config(keys=["room:*", "topic:*"], max_info_size=64)) as p:
        stub = p.client.stub(Lobby)
        await stub.info("y" * 100)
        with pytest.raises(RpcError) as e:
            await stub.join("lobby")
        assert e.value.status is Status.RESOURCE_EXHAUSTED and "max_info_size" in e.value.message
        with pytest.raises(RpcError) as e:
            await p.client.subscribe("chat")
        assert e.value.status is Status.RESOURCE_EXHAUSTED
        assert p.server.stats["presence_refused"] == 2
        assert p.client.rooms == set() and p.server.push.members("lobby") == set()
        session = next(iter(p.server.sessions))
        assert session.rooms == set() and session.topics == set()
        assert p.server.stats["presence_entries"] == 0
        await stub.info("y")
        await stub.join("lobby")
        assert (await p.client.members(room="lobby")).members[0].info == {"name": "y"}


async def test_max_keys_per_session() -> None:
    async with lobby(config(keys=["room:p*"], max_keys=2)) as p:
        stub = p.client.stub(Lobby)
        await stub.join("p1")
        await stub.join("p2")
        with pytest.raises(RpcError) as e:
            await stub.join("p3")
        assert e.value.status is Status.RESOURCE_EXHAUSTED and "max_keys 2" in e.value.message
        await stub.join("q1")  # no presence there: not counted
        await stub.leave("p1")
        await stub.join("p3")
        assert p.server.stats["presence_refused"] == 1
        assert p.server.stats["presence_entries"] == 2


async def test_join_rate_bounds_subscription_churn() -> None:
    cfg = config(events=["topic:chat"], join_rate=0.001, join_burst=3)
    async with lobby(cfg) as p, clients(p.connector, "bo") as (bo,):
        joined, left = queue(p.client, Joined), queue(p.client, Left)
        await p.client.subscribe("chat")
        await got(joined)
        for _ in range(3):  # bo churns: its burst holds 3 joins
            await bo.subscribe("chat")
            await bo.unsubscribe("chat")
        with pytest.raises(RpcError) as e:
            await bo.subscribe("chat")
        assert e.value.status is Status.RESOURCE_EXHAUSTED and "join_rate" in e.value.message
        assert p.server.stats["presence_refused"] == 1 and "chat" not in bo.topics
        assert [(await got(joined)).member.id for _ in range(3)] == [bo.session_id] * 3
        assert [(await got(left)).member.id for _ in range(3)] == [bo.session_id] * 3
        assert p.server.stats["presence_events"] == 7  # p's own Joined, and 3 rounds of bo's
        await p.client.subscribe("news")  # no presence there: no bucket
        await p.client.unsubscribe("news")


async def test_new_sessions_of_one_address_share_its_join_budget() -> None:
    """Each session starts with a full ``join_burst``, so a client that churns connections used to
    churn a room's Joined and Left at will (the audit: 1.2 s of server CPU per connection against
    200 members). The sessions of one address also share ``address_join_rate`` /
    ``address_join_burst``; another address keeps its own. Over KCP on 127.0.0.1, not exempt here."""
    from kcp.secure import SecureConfig

    wire = kcprpc.SecureWire(key="k", config=SecureConfig(exempt=()))
    cfg = config(
        events=["topic:chat"], join_rate=0.001, join_burst=3, address_join_rate=0.001, address_join_burst=4
    )
    async with lobby(cfg, link="kcp", transport=kcprpc.Transport(wire)) as p:
        first = p.client
        for _ in range(3):  # the first session's own burst
            await first.subscribe("chat")
            await first.unsubscribe("chat")
        second = await kcprpc.connect(*p.server.address, transport=kcprpc.Transport(wire))  # type: ignore[misc]
        try:
            await second.subscribe("chat")  # the address's fourth
            await second.unsubscribe("chat")
            with pytest.raises(RpcError) as e:  # its own burst has 2 left; the address's none
                await second.subscribe("chat")
            assert e.value.status is Status.RESOURCE_EXHAUSTED and "address_join_rate" in e.value.message
            assert p.server.stats["presence_refused"] == 1
        finally:
            await second.close()


async def test_member_lists_of_one_address_are_budgeted_in_bytes() -> None:
    """A listing of a large room costs the server about 70 echo calls' CPU, and a client could
    ask for it in a loop. The bytes of listings answered to one address go through a bucket
    (``list_rate`` / ``list_burst``); past it a listing fails, and it refills. Over KCP on
    127.0.0.1, not exempt here."""
    from kcp.secure import SecureConfig

    wire = kcprpc.SecureWire(key="k", config=SecureConfig(exempt=()))
    cfg = config(keys=["topic:chat"], list_rate=1, list_burst=2000)
    async with lobby(cfg, link="kcp", transport=kcprpc.Transport(wire)) as p:
        await p.client.subscribe("chat")
        for i in range(40):  # 40 members, about 40 bytes each
            p.server.push.presence.broker.presence_add("topic:chat", f"member-{i:04d}", {"n": i})
        listed = 0
        with pytest.raises(RpcError) as e:
            for _ in range(10):
                m = await p.client.members(topic="chat")
                assert m.total == 41 and len(m.members) == 41
                listed += 1
        assert e.value.status is Status.RESOURCE_EXHAUSTED and "list_rate" in e.value.message
        assert listed == 2  # the burst held two listings of 41 members
        assert p.server.stats["presence_lists_refused"] == 1 and p.server.stats["presence_lists"] == 2


async def test_topic_events_open_no_gap_and_stay_out_of_history() -> None:
    broker = MemoryBroker()
    async with lobby(config(events=["topic:chat"]), broker=broker) as p, clients(p.connector, "bo") as (bo,):
        pings, joined = queue(p.client, Ping), queue(p.client, Joined)
        await p.client.subscribe("chat")
        await got(joined)
        await p.server.push.publish("chat", Ping(n=1))
        await bo.subscribe("chat")
        assert (await got(joined)).member.id == bo.session_id
        await p.server.push.publish("chat", Ping(n=2))
        assert [await got(pings), await got(pings)] == [Ping(n=1), Ping(n=2)]
        assert p.client.topic_offsets["topic:chat"] == (broker.epoch, 2)
        assert broker.last_seq("topic:chat") == 2
        assert [m.event for m in broker.history_nowait("topic:chat", 0).messages] == [
            "test.Ping",
            "test.Ping",
        ]


async def test_two_servers_share_presence_through_one_broker() -> None:
    broker = MemoryBroker()
    cfg = config(events=["room:match:*"])
    async with lobby(cfg, broker=broker) as p1, lobby(cfg, broker=broker) as p2:
        a, b = p1.client, p2.client
        joined, left = queue(a, Joined), queue(a, Left)
        await a.stub(Lobby).join("match:7")
        assert (await got(joined)).member.id == a.session_id
        await b.stub(Lobby).join("match:7")
        ev = await got(joined)  # from the other server, through the broker
        assert ev.member.id == b.session_id and ev.member.id != a.session_id
        for c in (a, b):
            m = await c.members(room="match:7")
            assert [e.id for e in m.members] == [a.session_id, b.session_id]
        assert p1.server.stats["presence_entries"] == 1 and p2.server.stats["presence_entries"] == 1
        b_id = b.session_id
        await b.close()
        assert (await got(left)).member.id == b_id
        assert (await a.members(room="match:7")).total == 1


def test_presence_config_is_checked() -> None:
    with pytest.raises(UsageError, match="must start with 'room:' or 'topic:'"):
        PresenceConfig(keys=["match:*"])
    with pytest.raises(UsageError, match="list of patterns"):
        PresenceConfig(events="room:x")
    with pytest.raises(UsageError, match="positive"):
        PresenceConfig(max_info_size=0)
    cfg = PresenceConfig(keys=["room:a*"], events=["topic:t"])
    assert cfg.keys == ("room:a*",)
    hub = kcprpc.Server([], config=ServerConfig(presence=cfg)).push.presence
    assert hub.keeps("room:abc") and hub.keeps("topic:t") and not hub.keeps("topic:tt")
    assert hub.has_events("topic:t") and not hub.has_events("room:abc")
    assert not kcprpc.Server([]).push.presence.keeps("room:a")
