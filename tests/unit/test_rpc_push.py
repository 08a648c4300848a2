"""Server push: one session, rooms, topics (seq + epoch), unreliable notify and events."""

from __future__ import annotations

import asyncio

import pytest
from test_rpc_support import Demo, Pos, Probe, Req, Tick

from kcprpc import ClientConfig, Delivery, MemoryBroker
from kcprpc.broker import BrokerMessage
from kcprpc.testing import pair

TIMEOUT = 5.0


async def next_event(q: asyncio.Queue[Tick]) -> Tick:
    return await asyncio.wait_for(q.get(), TIMEOUT)


@pytest.mark.parametrize("transport", ["memory", "mux"])
async def test_push_to_one_session_typed_handler(transport: str) -> None:
    async with pair([Demo()], link=transport) as p:  # type: ignore[arg-type]
        q: asyncio.Queue[Tick] = asyncio.Queue()
        off = p.client.on(Tick, q.put_nowait)
        await p.client.stub(Demo).tick_me(Req(name="x", n=42))
        assert await next_event(q) == Tick(n=42)
        off()


async def test_events_async_iteration() -> None:
    async with pair([Demo()]) as p:
        it = p.client.events(Tick)
        first = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(0)  # let the iterator register
        await p.client.stub(Demo).tick_me(Req(name="x", n=1))
        assert await asyncio.wait_for(first, TIMEOUT) == Tick(n=1)
        await it.aclose()


async def test_rooms_join_leave_and_disconnect() -> None:
    async with pair([Demo()]) as p:
        d = p.client.stub(Demo)
        q: asyncio.Queue[Tick] = asyncio.Queue()
        p.client.on(Tick, q.put_nowait)
        await d.join(Req(name="lobby"))
        await p.server.push.to_room("lobby", Tick(n=1))
        assert await next_event(q) == Tick(n=1)
        assert p.client.rooms == {"lobby"}
        assert len(p.server.push.members("lobby")) == 1
        await d.leave(Req(name="lobby"))
        await p.server.push.to_room("lobby", Tick(n=2))
        await d.tick_me(Req(name="x", n=3))  # ordered after the room push on the control stream
        assert await next_event(q) == Tick(n=3)
        assert p.client.rooms == set()
        await d.join(Req(name="lobby"))
        assert len(p.server.push.members("lobby")) == 1
    # after the pair closed, the session left every room
    assert p.server.push.members("lobby") == set()


async def test_topics_carry_seq_and_epoch() -> None:
    broker = MemoryBroker(rng=lambda n: b"\x00\x00\x00\x07")
    seen: list[BrokerMessage] = []
    broker.subscribe("topic:news", seen.append)
    async with pair([Demo()], broker=broker) as p:
        q: asyncio.Queue[Tick] = asyncio.Queue()
        p.client.on(Tick, q.put_nowait)
        await p.server.push.publish("news", Tick(n=0))  # before subscribing: not delivered
        await p.client.subscribe("news")
        for i in range(1, 4):
            await p.server.push.publish("news", Tick(n=i))
        assert [await next_event(q) for _ in range(3)] == [Tick(n=1), Tick(n=2), Tick(n=3)]
        assert p.client.topic_offsets["topic:news"] == (7, 4)
        assert [(m.seq, m.epoch) for m in seen] == [(1, 7), (2, 7), (3, 7), (4, 7)]
        await p.client.unsubscribe("news")
        await p.server.push.publish("news", Tick(n=9))
        await p.client.stub(Demo).tick_me(Req(name="x", n=10))
        assert await next_event(q) == Tick(n=10)


async def test_fanout_encodes_once_for_many_sessions() -> None:
    async with pair([Demo()]) as p:
        clients = [p.client]
        from kcprpc import Client

        for _ in range(20):
            c = Client(p.connector, config=ClientConfig(heartbeat=None))
            await c.connect()
            clients.append(c)
        queues = []
        for c in clients:
            q: asyncio.Queue[Tick] = asyncio.Queue()
            c.on(Tick, q.put_nowait)
            queues.append(q)
            await c.subscribe("all")
        msg = await p.server.push.publish("all", Tick(n=5))
        assert msg.seq == 1 and msg._frame is not None
        for q in queues:
            assert await next_event(q) == Tick(n=5)
        for c in clients[1:]:
            await c.close()


@pytest.mark.parametrize("transport", ["memory", "mux"])
async def test_notify_unreliable_uses_datagrams(transport: str) -> None:
    async with pair([Demo(Probe())], link=transport) as p:  # type: ignore[arg-type]
        d = p.client.stub(Demo)
        pr = p.server.services[0].probe  # type: ignore[attr-defined]
        await d.position(Pos(x=1, y=2))
        assert await asyncio.wait_for(pr.notified.get(), TIMEOUT) == Pos(x=1, y=2)
        await d.position_reliable(Pos(x=3, y=4))
        assert await asyncio.wait_for(pr.notified.get(), TIMEOUT) == Pos(x=3, y=4)
        if transport == "memory":
            c, _s = p.current
            assert c.stats()["datagrams_sent"] == 1  # only the unreliable one


async def test_notify_bad_payload_is_dropped_and_counted() -> None:
    async with pair([Demo(Probe())]) as p:
        p.client.notify(Demo.position, {"x": "nope"})  # type: ignore[arg-type]
        for _ in range(100):
            if p.server.stats["notifications_dropped"]:
                break
            await asyncio.sleep(0)
        assert p.server.stats["notifications_dropped"] == 1


async def test_unreliable_events_to_room_go_as_datagrams_and_survive_loss() -> None:
    async with pair([Demo()], datagram_loss=0.3, seed=3) as p:
        got: list[Pos] = []
        p.client.on(Pos, got.append)
        await p.client.stub(Demo).join(Req(name="r"))
        for i in range(200):
            await p.server.push.to_room("r", Pos(x=i, y=0))
        await p.client.stub(Demo).hello(Req(name="sync"))
        _c, s = p.current
        sent = s.stats()["datagrams_sent"]
        assert sent == 200
        assert 100 < len(got) < 190  # about 30 % lost, seeded
        # explicit delivery override to reliable: nothing lost
        got.clear()
        for i in range(50):
            await p.server.push.to_room("r", Pos(x=i, y=0), delivery=Delivery.RELIABLE)
        await p.client.stub(Demo).hello(Req(name="sync"))
        assert len(got) == 50


async def test_reliable_and_unreliable_on_one_key_do_not_shadow_each_other() -> None:
    from kcprpc.protocol.frames import Event

    async with pair([Demo()]) as p:
        got: list[tuple[str, int]] = []
        raw: list[bool] = []
        p.client.on_raw_event(lambda ev: raw.append(ev.unreliable))
        p.client.on(Tick, lambda t: got.append(("tick", t.n)))
        p.client.on(Pos, lambda q: got.append(("pos", int(q.x))))
        # seq 6 arrives by datagram before the stream delivers seq 5: both must be kept
        p.client.subscriptions.handle(Event("pos", {"x": 6, "y": 0}, "room:r", 6, 1), True)
        p.client.subscriptions.handle(Event("tick", {"n": 5}, "room:r", 5, 1), False)
        # latest wins among datagrams: seq 4 arriving late is dropped
        p.client.subscriptions.handle(Event("pos", {"x": 4, "y": 0}, "room:r", 4, 1), True)
        # a replayed duplicate of a reliable message is dropped
        p.client.subscriptions.handle(Event("tick", {"n": 5}, "room:r", 5, 1), False)
        assert got == [("pos", 6), ("tick", 5)]
        assert p.client.events_stale == 1
        assert raw == [True, False]
        assert p.client.topic_offsets["room:r"] == (1, 5)


async def test_raw_events_for_tools_that_know_only_wire_names() -> None:
    from kcprpc import RawEvent

    async with pair([Demo()]) as p:
        seen: list[RawEvent] = []
        off = p.client.on_raw_event(seen.append)
        d = p.client.stub(Demo)
        await d.join(Req(name="r"))
        await p.client.subscribe("news")
        await p.server.push.to_room("r", Tick(n=1))
        await p.server.push.publish("news", Tick(n=2))
        await d.tick_me(Req(name="x", n=3))  # to this session only
        await d.hello(Req(name="sync"))
        assert [(e.name, e.payload, e.room, e.topic, e.unreliable) for e in seen] == [
            ("tick", {"n": 1}, "r", None, False),
            ("tick", {"n": 2}, None, "news", False),
            ("tick", {"n": 3}, None, None, False),
        ]
        assert seen[1].key == "topic:news" and seen[1].seq == 1 and isinstance(seen[1].epoch, int)
        assert seen[2].seq is None and seen[2].epoch is None
        off()
        await p.server.push.publish("news", Tick(n=4))
        await d.hello(Req(name="sync"))
        assert len(seen) == 3


class LateBroker(MemoryBroker):
    """A unit-test stand-in (not a real broker): a MemoryBroker whose subscriptions go live only
    when the test says so, as a broker across processes does after a round trip."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[str, asyncio.Future[None]] = {}

    def live(self, key: str) -> asyncio.Future[None] | None:  # type: ignore[override]
        f = self.pending.get(key)
        if f is None:
            f = self.pending[key] = asyncio.get_running_loop().create_future()
        return None if f.done() else f


async def test_a_room_joins_reply_waits_until_the_rooms_subscription_is_live() -> None:
    broker = LateBroker()
    async with pair([Demo()], broker=broker) as p:
        join = asyncio.ensure_future(p.client.stub(Demo).join(Req(name="lobby")))
        for _ in range(100):  # the handler ran and joined: the reply is held
            if "room:lobby" in broker.pending:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert not join.done()
        broker.pending["room:lobby"].set_result(None)
        await asyncio.wait_for(join, TIMEOUT)
        assert p.server.stats["replies_hold_timeouts"] == 0


async def test_a_held_reply_goes_after_reply_hold_s_and_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    import kcprpc.reply_hold

    monkeypatch.setattr(kcprpc.reply_hold, "REPLY_HOLD_S", 0.05)
    async with pair([Demo()], broker=LateBroker()) as p:  # never live
        await asyncio.wait_for(p.client.stub(Demo).join(Req(name="lobby")), TIMEOUT)
        assert p.server.stats["replies_hold_timeouts"] == 1
        assert p.client.rooms == {"lobby"}


async def test_a_publish_checks_its_name_as_a_join_does() -> None:
    """The broker keeps every name it is given: an app that publishes to a name its client
    picked (a channel field) kept a 100,000 character name per publish (an audit)."""
    from kcprpc import RpcError, Status

    async with pair([Demo()]) as p:
        for bad in ("", "x" * 257):
            with pytest.raises(RpcError) as e:
                await p.server.push.publish(bad, Tick(n=1))
            assert e.value.status is Status.INVALID_ARGUMENT and "topic name" in e.value.message
            with pytest.raises(RpcError) as e:
                await p.server.push.to_room(bad, Tick(n=1))
            assert e.value.status is Status.INVALID_ARGUMENT and "room name" in e.value.message
        assert p.server.push.broker.stats()["published"] == 0
        assert (await p.server.push.publish("x" * 256, Tick(n=1))).seq == 1


async def test_the_client_forgets_the_offsets_of_what_it_left() -> None:
    """A client that went through many rooms and topics kept every one's offset for good."""
    async with pair([Demo()]) as p:
        await p.client.stub(Demo).join(Req(name="r"))
        await p.client.subscribe("t")
        await p.server.push.to_room("r", Tick(n=1))
        await p.server.push.publish("t", Tick(n=2))
        await p.client.health()
        assert set(p.client.topic_offsets) == {"room:r", "topic:t"}
        await p.client.stub(Demo).leave(Req(name="r"))
        await p.client.unsubscribe("t")
        await p.client.health()
        assert p.client.topic_offsets == {} and p.client.rooms == set()
