"""Recovery as a contract (issue 14, item 2): positions on every event, replayed events flagged,
``recovered``/``replayed``/``missed`` after a reconnect and a ``since=`` subscribe, partial replay
with its gap, an epoch change, ``client.history()`` and its bounds, and no live event overtaking
a replay even when the broker's history is a round trip (with a bounded hold-back)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from test_rpc_support import Demo, Req, Tick, any_msgpack, rejoin_open_rooms

import kcprpc
from kcprpc import (
    BrokerHistory,
    Client,
    ClientConfig,
    EventInfo,
    HeartbeatConfig,
    MemoryBroker,
    Position,
    RawEvent,
    ReconnectPolicy,
    Recovered,
    RpcError,
    ServerConfig,
    Status,
)
from kcprpc.broker import BrokerMessage
from kcprpc.testing import RpcPair, pair

TIMEOUT = 5.0
FAST = ClientConfig(
    heartbeat=HeartbeatConfig(interval=0.05, timeout=1.0),
    reconnect=ReconnectPolicy(initial=0.01, maximum=0.05),
)
NEWS = "topic:news"


class Seen:
    """What a client received: ticks with their EventInfo, and the Recovered reports."""

    def __init__(self, client: Client) -> None:
        self.ticks: list[tuple[int, EventInfo]] = []
        self.recovered: list[Recovered] = []
        client.on(Tick, lambda t, info: self.ticks.append((t.n, info)))
        client.on(Recovered, self.recovered.append)

    @property
    def ns(self) -> list[int]:
        return [n for n, _ in self.ticks]

    def replayed(self) -> list[int]:
        return [n for n, info in self.ticks if info.replayed]


async def fence(client: Client) -> None:
    """One round trip on the control stream: every event sent before it has arrived."""
    await client.stub(Demo).hello(Req(name="fence"))


async def drop_and_hold(p: RpcPair) -> asyncio.Event:
    """Drop the connection and keep the client out until ``p.refuse`` is cleared; returns an event
    set when it is back (WELCOME read, recovery reported)."""
    back = asyncio.Event()
    p.client.on_reconnect = lambda c: back.set()
    p.refuse = True
    await p.drop()
    for _ in range(200):
        if not p.client.connected and not p.server.sessions:
            break
        await asyncio.sleep(0.001)
    return back


async def publish(p: RpcPair, ns: range | list[int], topic: str = "news") -> None:
    for n in ns:
        await p.server.push.publish(topic, Tick(n=n))


@pytest.mark.parametrize("link", ["memory", "mux"])
async def test_a_reconnect_replays_flagged_events_and_reports_recovered(link: str) -> None:
    async with pair([Demo()], link=link, client_config=FAST, on_restore=rejoin_open_rooms) as p:  # type: ignore[arg-type]
        seen = Seen(p.client)
        await p.client.subscribe("news")
        await publish(p, [1, 2])
        await fence(p.client)
        back = await drop_and_hold(p)
        await publish(p, [3, 4, 5])  # missed while disconnected
        p.refuse = False
        await asyncio.wait_for(back.wait(), TIMEOUT)
        await publish(p, [6])
        await fence(p.client)
        assert seen.ns == [1, 2, 3, 4, 5, 6]
        assert seen.replayed() == [3, 4, 5]  # the live ones are not flagged
        epoch = p.server.push.broker.epoch
        assert [info.position for _, info in seen.ticks] == [Position(epoch, n) for n in range(1, 7)]
        assert all(info.topic == "news" and info.key == NEWS for _, info in seen.ticks)
        [rep] = seen.recovered
        assert (rep.key, rep.topic, rep.recovered, rep.replayed, rep.missed) == (NEWS, "news", True, 3, 0)
        assert rep.position == Position(epoch, 5)
        assert p.client.position("news") == Position(epoch, 6)
        assert p.server.stats["recoveries"] == 1 and p.server.stats["recovered_replayed"] == 3


async def test_a_subscriber_that_received_nothing_still_gets_its_replay() -> None:
    async with pair([Demo()], client_config=FAST) as p:
        seen = Seen(p.client)
        reply = await p.client.subscribe("news")
        epoch = p.server.push.broker.epoch
        assert reply.position == Position(epoch, 0) and reply.recovered is None
        assert p.client.position("news") == Position(epoch, 0)  # the reply's position is kept
        back = await drop_and_hold(p)
        await publish(p, [1, 2])
        p.refuse = False
        await asyncio.wait_for(back.wait(), TIMEOUT)
        await fence(p.client)
        assert seen.ns == [1, 2] and seen.replayed() == [1, 2]
        assert [(r.recovered, r.replayed, r.missed) for r in seen.recovered] == [(True, 2, 0)]


async def test_a_partial_replay_reports_its_gap_and_a_room_without_position_is_a_clear_failure() -> None:
    broker = MemoryBroker(history=2)
    async with pair([Demo()], client_config=FAST, broker=broker, on_restore=rejoin_open_rooms) as p:
        seen = Seen(p.client)
        await p.client.subscribe("news")
        await p.client.stub(Demo).join(Req(name="quiet"))  # no message before the drop: no position
        await publish(p, [1])
        await fence(p.client)
        back = await drop_and_hold(p)
        await publish(p, [2, 3, 4, 5])  # the history keeps 4 and 5
        await p.server.push.to_room("quiet", Tick(n=100))
        p.refuse = False
        await asyncio.wait_for(back.wait(), TIMEOUT)
        await fence(p.client)
        assert seen.ns == [1, 4, 5]  # what is there is replayed, never nothing
        reports = {r.key: r for r in seen.recovered}
        news = reports[NEWS]
        assert (news.recovered, news.replayed, news.missed) == (False, 2, 2)  # 2 and 3 are lost
        quiet = reports["room:quiet"]
        assert (quiet.recovered, quiet.replayed, quiet.missed) == (False, 0, None)
        assert quiet.room == "quiet" and quiet.position.offset == 1  # known from now on
        assert p.server.stats["recoveries_failed"] == 1  # the room had no since: not a recovery


async def test_since_resumes_a_restarted_client_with_nothing_missed() -> None:
    async with pair([Demo()]) as p:
        first = Seen(p.client)
        await p.client.subscribe("news")
        await publish(p, [1, 2, 3])
        await fence(p.client)
        saved = p.client.position("news")
        assert saved == first.ticks[-1][1].position
        await p.client.close()  # the process ends
        await publish(p, [4, 5, 6])
        again = Client(p.connector, config=ClientConfig(heartbeat=None))  # a new process
        await again.connect()
        try:
            seen = Seen(again)
            raw: list[RawEvent] = []
            again.on_raw_event(raw.append)
            reply = await again.subscribe("news", since=saved)
            await publish(p, [7])
            await fence(again)
            assert seen.ns == [4, 5, 6, 7] and seen.replayed() == [4, 5, 6]
            assert [(r.replayed, r.seq) for r in raw if r.name == "tick"] == [
                (True, 4),
                (True, 5),
                (True, 6),
                (False, 7),
            ]
            assert raw[0].position == Position(saved.epoch, 4)
            assert (reply.recovered, reply.replayed, reply.missed) == (True, 3, 0)
            assert reply.position == Position(saved.epoch, 6)
            assert [(r.recovered, r.replayed) for r in seen.recovered] == [(True, 3)]
        finally:
            await again.close()


async def test_since_of_another_epoch_replays_what_this_one_has_missed_unknown() -> None:
    async with pair([Demo()]) as p:
        await publish(p, [1, 2])
        seen = Seen(p.client)
        old = Position(p.server.push.broker.epoch ^ 1, 40)
        reply = await p.client.subscribe("news", since=old)
        await fence(p.client)
        assert seen.ns == [1, 2] and seen.replayed() == [1, 2]
        assert (reply.recovered, reply.replayed, reply.missed) == (False, 2, None)
        assert p.client.position("news") == Position(p.server.push.broker.epoch, 2)


async def test_events_with_info_and_a_handler_that_takes_one_parameter() -> None:
    async with pair([Demo()]) as p:
        plain: list[int] = []
        p.client.on(Tick, lambda t: plain.append(t.n))
        it = p.client.events(Tick, info=True)
        first = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(0)  # let the iterator register
        await p.client.subscribe("news")
        await publish(p, [1])
        tick, info = await asyncio.wait_for(first, TIMEOUT)
        assert tick == Tick(n=1) and info.position == Position(p.server.push.broker.epoch, 1)
        assert info.name == "tick" and not info.replayed and not info.unreliable
        await p.client.stub(Demo).tick_me(Req(name="x", n=9))  # to this session only
        tick, info = await asyncio.wait_for(it.__anext__(), TIMEOUT)
        assert tick == Tick(n=9) and info.position is None and info.key is None
        assert plain == [1, 9]
        await it.aclose()


# -------------------------------------------------------------------------------- history
async def test_history_with_since_limit_and_its_bounds() -> None:
    config = ServerConfig(max_history_fetch=5)
    async with pair([Demo()], server_config=config) as p:
        await p.client.subscribe("news")
        await publish(p, range(1, 21))
        epoch = p.server.push.broker.epoch
        page = await p.client.history("news", since=Position(epoch, 10), limit=3)
        assert [m.position.offset for m in page.messages] == [11, 12, 13]
        assert page.events(Tick) == [Tick(n=11), Tick(n=12), Tick(n=13)]
        assert page.messages[0].decode(Tick) == Tick(n=11) and page.messages[0].name == "tick"
        assert page.position == Position(epoch, 20) and page.missed == 0 and not page.truncated
        tail = await p.client.history("news", limit=2)
        assert [m.position.offset for m in tail.messages] == [19, 20]
        capped = await p.client.history("news", since=Position(epoch, 0), limit=1000)
        assert [m.position.offset for m in capped.messages] == [1, 2, 3, 4, 5] and capped.truncated
        assert p.server.stats["history_fetches"] == 3 and p.server.stats["history_truncated"] == 1
        with pytest.raises(RpcError) as e:
            await p.client.history("other")
        assert e.value.status is Status.FAILED_PRECONDITION  # only what this session is in
        with pytest.raises(RpcError) as e:
            await p.client.history(room="lobby")
        assert e.value.status is Status.FAILED_PRECONDITION
        with pytest.raises(kcprpc.UsageError):
            await p.client.history()


async def test_history_stays_under_max_message_size_and_counts_the_missed() -> None:
    config = ServerConfig(max_message_size=4096, max_send_backlog=1 << 20, max_send_backlog_total=1 << 20)
    broker = MemoryBroker(history=50)
    async with pair([Demo()], server_config=config, broker=broker) as p:
        await p.client.subscribe("big")
        for i in range(60):
            await p.server.push.publish("big", Req(name="x" * 60, n=i))  # type: ignore[arg-type]
        epoch = broker.epoch
        page = await p.client.history("big", since=Position(epoch, 0))
        assert page.truncated and 0 < len(page.messages) < 50
        assert page.missed == 10 and page.messages[0].position.offset == 11


@contextlib.asynccontextmanager
async def _big_topic(config: ServerConfig, exempt: bool, size: int) -> AsyncIterator[RpcPair]:
    """A pair over KCP on 127.0.0.1 (exempt from the budgets per address or not) whose client is
    subscribed to topic ``big``, which holds 40 messages of about ``size`` bytes."""
    from kcp.secure import SecureConfig

    wire = kcprpc.SecureWire(key="k", config=None if exempt else SecureConfig(exempt=()))
    async with pair([Demo()], server_config=config, link="kcp", transport=kcprpc.Transport(wire)) as p:
        await p.client.subscribe("big")
        for i in range(40):
            await p.server.push.publish("big", Req(name="x" * size, n=i))  # type: ignore[arg-type]
        yield p


@pytest.mark.parametrize("exempt", [False, True], ids=["address", "loopback-exempt"])
async def test_history_reads_are_budgeted_in_bytes_per_address(exempt: bool) -> None:
    """Each History answer costs the server about 30-90 ms of CPU per megabyte (its payloads dumped
    and packed again): one client calling it in a loop on large messages took the server's core
    (an audit: 380-1,240 times an echo call's CPU per call). The sessions of one address get
    ``history_rate`` bytes a second (a bucket of ``history_burst``); past it a call is refused
    until the debt is paid back. Loopback is exempt unless configured otherwise."""
    async with _big_topic(ServerConfig(history_rate=1000, history_burst=20_000), exempt, 1000) as p:
        first = await p.client.history("big")  # allowed, and ~40 KB: the bucket is in debt
        assert len(first.messages) == 40
        if exempt:
            for _ in range(3):
                assert len((await p.client.history("big")).messages) == 40
            assert p.server.stats["history_refused"] == 0
            return
        with pytest.raises(RpcError) as e:
            await p.client.history("big", limit=1)
        assert e.value.status is Status.RESOURCE_EXHAUSTED and "history_rate" in e.value.message
        assert p.server.stats["history_refused"] == 1 and p.server.stats["history_fetches"] == 1
        assert await p.client.stub(Demo).hello(Req(name="still")) is not None  # other calls go on


@pytest.mark.parametrize("exempt", [False, True], ids=["address", "loopback-exempt"])
async def test_replays_are_budgeted_in_bytes_per_address(exempt: bool) -> None:
    """A ``since=`` subscribe (or a reconnect's restore) replays what the history holds after the
    position; a client repeating it made the server replay whole histories again and again (an
    audit: a HELLO naming 50 topics replayed 51,200 messages, 144 ms of CPU, per connection). The
    sessions of one address get ``replay_rate`` bytes a second (a bucket of ``replay_burst``); a
    recovery that starts while it is in debt replays nothing and reports what it skipped as missed,
    which ``client.history`` can still read. Loopback is exempt unless configured otherwise."""
    async with _big_topic(ServerConfig(replay_rate=1000, replay_burst=5000), exempt, 500) as p:
        start = Position(p.server.push.broker.epoch, 0)
        await p.client.unsubscribe("big")
        first = await p.client.subscribe("big", since=start)  # replayed, ~20 KB: the bucket is in debt
        assert (first.recovered, first.replayed, first.missed) == (True, 40, 0)
        await p.client.unsubscribe("big")
        again = await p.client.subscribe("big", since=start)
        if exempt:
            assert (again.recovered, again.replayed) == (True, 40)
            assert p.server.stats["replays_refused"] == 0
            return
        assert (again.recovered, again.replayed, again.missed) == (False, 0, 40)
        assert again.position == first.position and p.server.stats["replays_refused"] == 1
        assert "big" in p.client.topics  # subscribed all the same: live events flow
        # refused before the history is read: a refused recovery cost 5-7 echo calls (an audit)
        reads: list[tuple[Any, Any]] = []
        broker = p.server.push.broker
        read = broker.history

        async def counted(key: str, since: Any = None, limit: Any = None) -> Any:
            reads.append((since, limit))
            return await read(key, since, limit)

        broker.history = counted  # type: ignore[method-assign]
        await p.client.unsubscribe("big")
        third = await p.client.subscribe("big", since=start)
        assert (third.recovered, third.missed) == (False, 40) and p.server.stats["replays_refused"] == 2
        assert all(limit == 0 for _, limit in reads)  # the position only, no message read


async def test_room_history_is_for_members_and_an_interceptor_can_refuse_history() -> None:
    async def no_secret_history(ctx: kcprpc.ServerContext, call_next: Any) -> Any:
        req = ctx.request
        if ctx.method == "kcprpc.Push/History" and req is not None and req.topic == "secret":
            raise RpcError(Status.PERMISSION_DENIED, "no history of secret")
        return await call_next()

    async with pair([Demo()], server_interceptors=[no_secret_history]) as p:
        await p.client.stub(Demo).join(Req(name="lobby"))
        await p.server.push.to_room("lobby", Tick(n=1))
        page = await p.client.history(room="lobby")
        assert page.events(Tick) == [Tick(n=1)]
        await p.client.subscribe("secret")
        with pytest.raises(RpcError) as e:
            await p.client.history("secret")
        assert e.value.status is Status.PERMISSION_DENIED


# ------------------------------------------------------------- an async broker: no reordering
class SlowHistoryBroker(MemoryBroker):
    """Test double: a MemoryBroker whose ``history`` is a round trip (it waits for ``gate``), as
    a Redis or NATS broker's would be, so that live messages are published meanwhile."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.slow = False

    async def history(self, key: str, since: int | None = None, limit: int | None = None) -> BrokerHistory:
        if not self.slow or limit == 0:
            return self.history_nowait(key, since, limit)
        self.entered.set()
        await self.gate.wait()
        return self.history_nowait(key, since, limit)


async def slow_since_subscribe(p: RpcPair, broker: SlowHistoryBroker, since: Position) -> asyncio.Task[Any]:
    broker.slow = True
    task = asyncio.ensure_future(p.client.subscribe("news", since=since))
    await asyncio.wait_for(broker.entered.wait(), TIMEOUT)
    return task


async def test_live_events_never_overtake_a_slow_replay() -> None:
    broker = SlowHistoryBroker()
    async with pair([Demo()], broker=broker) as p:
        seen = Seen(p.client)
        await publish(p, [1, 2, 3])
        task = await slow_since_subscribe(p, broker, Position(broker.epoch, 1))
        await publish(p, [4, 5, 6])  # live while the history is being read: held back
        await fence(p.client)
        assert seen.ns == []
        broker.gate.set()
        reply = await asyncio.wait_for(task, TIMEOUT)
        await publish(p, [7])
        await fence(p.client)
        assert seen.ns == [2, 3, 4, 5, 6, 7]  # in order, nothing dropped as a duplicate
        assert seen.replayed() == [2, 3, 4, 5, 6]  # the history read after 6 holds them
        assert (reply.recovered, reply.missed) == (True, 0)


async def test_live_events_during_a_slow_reconnect_replay_keep_their_order() -> None:
    broker = SlowHistoryBroker()
    async with pair([Demo()], broker=broker, client_config=FAST) as p:
        seen = Seen(p.client)
        await p.client.subscribe("news")
        await publish(p, [1])
        await fence(p.client)
        back = await drop_and_hold(p)
        await publish(p, [2, 3])
        broker.slow = True
        p.refuse = False
        await asyncio.wait_for(broker.entered.wait(), TIMEOUT)
        await publish(p, [4, 5])  # the session is subscribed again, its replay not read yet
        broker.gate.set()
        await asyncio.wait_for(back.wait(), TIMEOUT)
        await fence(p.client)
        assert seen.ns == [1, 2, 3, 4, 5]
        assert [(r.recovered, r.missed) for r in seen.recovered] == [(True, 0)]


async def test_holding_back_is_bounded_and_gives_the_recovery_up() -> None:
    broker = SlowHistoryBroker()
    async with pair([Demo()], broker=broker, server_config=ServerConfig(recovery_buffer=3)) as p:
        seen = Seen(p.client)
        await publish(p, [1, 2])
        task = await slow_since_subscribe(p, broker, Position(broker.epoch, 0))
        await publish(p, range(3, 9))  # 3..6 held, the 4th overflows: given up; 7, 8 go live
        await fence(p.client)
        assert seen.ns == [7, 8]  # already, while the history is still being read
        assert p.server.stats["recoveries_overflowed"] == 1
        broker.gate.set()
        reply = await asyncio.wait_for(task, TIMEOUT)
        await fence(p.client)
        assert seen.ns == [7, 8] and seen.replayed() == []
        assert (reply.recovered, reply.replayed, reply.missed) == (False, 0, 6)  # 1..6 lost
        assert reply.position == Position(broker.epoch, 8)
        assert p.server.stats["recoveries_overflowed"] == 1
        assert [(r.recovered, r.missed) for r in seen.recovered] == [(False, 6)]


async def reconnect_while_a_replays(p: RpcPair, broker: SlowHistoryBroker) -> tuple[Seen, asyncio.Event]:
    """Topics "a" and "b" with a position each; the connection is dropped, "b" gets a message
    meanwhile, and the client comes back: returns while "topic:a"'s history is being read (slowly,
    until ``broker.gate`` is set), so that live messages of both keys are held back."""
    seen = Seen(p.client)
    await p.client.subscribe("a")  # recovered first (keys in order), slowly
    await p.client.subscribe("b")
    await publish(p, [1], "a")
    await publish(p, [10], "b")
    await fence(p.client)
    back = await drop_and_hold(p)
    await publish(p, [11], "b")  # missed, in the history
    broker.slow = True
    p.refuse = False
    await asyncio.wait_for(broker.entered.wait(), TIMEOUT)  # "topic:a" is being read
    return seen, back


async def test_a_hold_given_up_while_another_key_replays_stays_given_up() -> None:
    broker = SlowHistoryBroker()
    config = ServerConfig(recovery_buffer=2)
    async with pair([Demo()], broker=broker, client_config=FAST, server_config=config) as p:
        seen, back = await reconnect_while_a_replays(p, broker)
        await publish(p, [12, 13, 14, 15], "b")  # "b" is held back: overflows at 14, 15 goes live
        broker.gate.set()
        await asyncio.wait_for(back.wait(), TIMEOUT)
        await fence(p.client)
        assert seen.ns == [1, 10, 15]  # 11 is not replayed after 15: that would be out of order
        reports = {r.key: r for r in seen.recovered}
        assert (reports["topic:a"].recovered, reports["topic:a"].replayed) == (True, 0)
        b = reports["topic:b"]
        assert (b.recovered, b.replayed, b.missed, b.position.offset) == (False, 0, 4, 6)


@kcprpc.event("test.Blob")
class Blob(BaseModel):
    data: str


async def test_holding_back_is_bounded_in_bytes_by_default() -> None:
    """``recovery_buffer`` counts messages: 1024 of up to ``max_message_size`` each (4 MiB) were
    held per session and key. ``recovery_buffer_bytes`` (16 MiB) gives the recovery up on the
    third 3 MiB message (about 6 MiB counted each: frame and decoded payload)."""
    broker = SlowHistoryBroker()
    async with pair([Demo()], broker=broker) as p:
        await publish(p, [1])
        task = await slow_since_subscribe(p, broker, Position(broker.epoch, 0))
        hub = p.server.push
        for i in range(2):
            await hub.publish("news", Blob(data=str(i) * (3 << 20)))
        assert p.server.stats["recoveries_overflowed"] == 0
        await hub.publish("news", Blob(data="2" * (3 << 20)))
        assert p.server.stats["recoveries_overflowed"] == 1
        assert hub.hold_bytes == {}  # what was held is let go at once, not when the replay ends
        broker.gate.set()
        reply = await asyncio.wait_for(task, TIMEOUT)
        assert (reply.recovered, reply.replayed, reply.missed) == (False, 0, 4)


async def test_holding_back_is_bounded_in_bytes_per_session_across_keys() -> None:
    from kcprpc.push import held_size

    broker = SlowHistoryBroker()
    size = held_size(BrokerMessage("topic:b", "tick", {"n": 12}, 3, broker.epoch))
    config = ServerConfig(recovery_buffer_bytes=size * 5 // 2)  # two ticks, not three
    async with pair([Demo()], broker=broker, client_config=FAST, server_config=config) as p:
        seen, back = await reconnect_while_a_replays(p, broker)
        await publish(p, [2], "a")  # held for "a": one tick
        await publish(p, [12], "b")  # held for "b": two ticks for the session
        assert p.server.stats["recoveries_overflowed"] == 0
        await publish(p, [13], "b")  # three: over the session's bytes, "b" is given up
        assert p.server.stats["recoveries_overflowed"] == 1
        await publish(p, [14], "b")  # live
        broker.gate.set()
        await asyncio.wait_for(back.wait(), TIMEOUT)
        await fence(p.client)
        assert p.server.push.hold_bytes == {}
        assert sorted(seen.ns) == [1, 2, 10, 14] and seen.replayed() == [2]
        reports = {r.key: r for r in seen.recovered}
        assert (reports["topic:a"].recovered, reports["topic:a"].replayed) == (True, 1)
        b = reports["topic:b"]
        assert (b.recovered, b.replayed, b.missed, b.position.offset) == (False, 0, 3, 5)


def test_recovery_buffer_bytes_is_checked() -> None:
    with pytest.raises(kcprpc.UsageError, match="recovery_buffer_bytes"):
        ServerConfig(recovery_buffer_bytes=-1)
    with pytest.raises(kcprpc.UsageError, match="recovery_buffer_total"):
        ServerConfig(recovery_buffer_total=1 << 20)  # under recovery_buffer_bytes (16 MiB)


def tick_size(key: str, n: int, seq: int, epoch: int) -> int:
    """What holding one tick back counts (:func:`kcprpc.push.held_size`)."""
    from kcprpc.push import held_size

    return held_size(BrokerMessage(key, "tick", {"n": n}, seq, epoch))


@contextlib.asynccontextmanager
async def slow_subscribers(
    p: RpcPair, broker: SlowHistoryBroker, topics: list[str]
) -> AsyncIterator[tuple[list[Client], list[asyncio.Task[Any]]]]:
    """A client per topic (the first is ``p.client``), each subscribing with ``since=`` its
    topic's start; returns once every history read waits for ``broker.gate``."""
    clients = [p.client] + [Client(p.connector, config=ClientConfig(heartbeat=None)) for _ in topics[1:]]
    for c in clients[1:]:
        await c.connect()
    try:
        broker.slow = True
        tasks = []
        for c, topic in zip(clients, topics, strict=True):
            broker.entered.clear()
            tasks.append(asyncio.ensure_future(c.subscribe(topic, since=Position(broker.epoch, 0))))
            await asyncio.wait_for(broker.entered.wait(), TIMEOUT)
        yield clients, tasks
    finally:
        for c in clients[1:]:
            await c.close()


async def test_holding_back_is_bounded_for_all_sessions_the_largest_holds_given_up() -> None:
    """Every session within its ``recovery_buffer_bytes``, many of them held sessions x 16 MiB:
    ``recovery_buffer_total`` bounds them all. The largest hold is given up (``recoveries_shed``),
    not the small one whose message crossed the bound, and its recovery reports what it lost."""
    broker = SlowHistoryBroker()
    size = tick_size("topic:a", 1, 1, broker.epoch)
    cap = size * 7 // 2  # three and a half ticks, for one session and for all of them
    config = ServerConfig(recovery_buffer_bytes=cap, recovery_buffer_total=cap)
    async with pair([Demo()], broker=broker, server_config=config) as p:
        hub, stats = p.server.push, p.server.stats
        async with slow_subscribers(p, broker, ["a", "b"]) as ([a, b], [ta, tb]):
            seen_a, seen_b = Seen(a), Seen(b)
            await publish(p, [1, 2, 3], "a")  # held for a: three ticks, within either bound
            assert hub.hold_total == stats["recovery_held"] == 3 * size
            await publish(p, [10], "b")  # held for b: four ticks in all, over the total
            assert stats["recoveries_shed"] == 1 and stats["recoveries_overflowed"] == 0
            assert hub.hold_total == stats["recovery_held"] == size  # b's only: a's let go at once
            assert list(hub.hold_bytes.values()) == [size]
            await publish(p, [4], "a")  # a's messages go live again
            await fence(a)
            assert seen_a.ns == [4]
            broker.gate.set()
            ra, rb = await asyncio.wait_for(asyncio.gather(ta, tb), TIMEOUT)
            await fence(a)
            await fence(b)
        assert (ra.recovered, ra.replayed, ra.missed, ra.position.offset) == (False, 0, 3, 4)  # 4 went live
        assert [(r.recovered, r.missed) for r in seen_a.recovered] == [(False, 3)]
        assert seen_a.ns == [4]
        assert (rb.recovered, rb.replayed, rb.missed) == (True, 1, 0)
        assert seen_b.ns == [10] and seen_b.replayed() == [10]
        assert hub.hold_total == stats["recovery_held"] == 0 and hub.hold_bytes == {}
        assert stats["recoveries_shed"] == 1


async def test_a_hold_given_up_as_another_session_holds_the_same_message_loses_no_more() -> None:
    """The bound is crossed while one message of a key is fanned out to its holders: the largest
    hold is given up then, before or after that message reached it. Before, the message goes live
    to it; after, it counts in what was lost. Either way, nothing is delivered twice or lost
    unreported."""
    broker = SlowHistoryBroker()
    size = tick_size("topic:news", 1, 1, broker.epoch)
    cap = size * 7 // 2
    config = ServerConfig(recovery_buffer_bytes=cap, recovery_buffer_total=cap)
    async with pair([Demo()], broker=broker, server_config=config) as p:
        stats = p.server.stats
        others = [Client(p.connector, config=ClientConfig(heartbeat=None)) for _ in range(2)]
        for c in others:
            await c.connect()
        try:
            a, b, c = p.client, *others
            seen_a = Seen(a)
            broker.slow = True
            tasks = []
            for client, topic, first in ((a, "news", [1]), (b, "news", []), (c, "x", [1])):
                broker.entered.clear()
                tasks.append(asyncio.ensure_future(client.subscribe(topic, since=Position(broker.epoch, 0))))
                await asyncio.wait_for(broker.entered.wait(), TIMEOUT)
                await publish(p, first, topic)
            await publish(p, [2])  # shared by a and b: three ticks and 16 bytes in all
            assert stats["recoveries_shed"] == 0
            await publish(p, [3])  # four: a (the largest) is given up as 3 is fanned out
            assert stats["recoveries_shed"] == 1 and stats["recoveries_overflowed"] == 0
            broker.gate.set()
            ra, rb, rc = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
            await fence(a)
        finally:
            for client in others:
                await client.close()
        assert (ra.recovered, ra.replayed, ra.position.offset) == (False, 0, 3)
        assert ra.missed in (2, 3), ra.missed
        assert seen_a.ns == list(range(ra.missed + 1, 4))  # 3 went live if a was given up first
        assert [(r.recovered, r.missed) for r in (rb, rc)] == [(True, 0), (True, 0)]
        assert p.server.push.hold_total == 0


@pytest.mark.parametrize("a_first", [True, False])
def test_giving_up_mid_fanout_marks_what_each_hold_lost(a_first: bool) -> None:
    """The same, in both orders of the fan-out (a set's: the test above gets one), on the hub
    itself: a hold given up before the message reached it lost up to the one before (the message
    then goes out live), one given up after it lost that message too."""
    from types import SimpleNamespace

    from kcprpc.push import RECOVERY_COUNTERS, PushHub

    broker = MemoryBroker()
    size = tick_size("topic:news", 1, 1, broker.epoch)
    cap = size * 7 // 2
    host = SimpleNamespace(
        config=ServerConfig(recovery_buffer_bytes=cap, recovery_buffer_total=cap),
        stats=dict.fromkeys(RECOVERY_COUNTERS, 0),
    )
    hub = PushHub(cast(Any, host), broker)
    a, b, c = (cast(Any, object()) for _ in range(3))  # members: only their identity counts

    def tick(key: str, n: int) -> BrokerMessage:
        return BrokerMessage(key, "tick", {"n": n}, n, broker.epoch)

    for s, key in ((a, "topic:news"), (b, "topic:news"), (c, "topic:x")):
        hub.hold(s, key)
    news, x = hub._holds["topic:news"], hub._holds["topic:x"]
    m1, m2, m3 = tick("topic:news", 1), tick("topic:news", 2), tick("topic:news", 3)
    assert hub._held(news[a], m1, a)
    assert hub._held(x[c], tick("topic:x", 1), c)
    for s in (a, b):
        assert hub._held(news[s], m2, s)
    order = (a, b) if a_first else (b, a)
    held = [hub._held(news[s], m3, s) for s in order]
    assert host.stats["recoveries_shed"] == 1 and host.stats["recoveries_overflowed"] == 0
    assert news[a].dropped == (3 if a_first else 2) and news[a].buf == []
    assert held == ([True, True] if a_first else [True, False])  # False: m3 goes live to a
    assert [m.seq for m in news[b].buf] == [2, 3] and not news[b].dropped
    left = tick_size("topic:news", 2, 2, broker.epoch) + tick_size("topic:news", 3, 3, broker.epoch)
    left += tick_size("topic:x", 1, 1, broker.epoch)  # b's two and c's one: a's let go
    assert hub.hold_total == host.stats["recovery_held"] == left <= cap - cap // 10
    for s, key in ((a, "topic:news"), (b, "topic:news"), (c, "topic:x")):
        hub.release(s, key)
    assert hub.hold_total == 0 and hub.hold_bytes == {} and hub._refs == {}


async def test_a_message_held_for_many_sessions_counts_once_for_all_of_them() -> None:
    """Sessions holding the same messages (a mass reconnect into one busy room) share them: the
    process-wide total counts each once, and 16 bytes for each further session, so that it gives
    nothing up where the sum of the sessions' own counts (nine ticks) would have."""
    from kcprpc.push import HOLD_REF

    broker = SlowHistoryBroker()
    sizes = [tick_size("topic:news", n, n, broker.epoch) for n in (1, 2, 3)]
    cap = sizes[0] * 7 // 2
    config = ServerConfig(recovery_buffer_bytes=cap, recovery_buffer_total=cap)
    async with pair([Demo()], broker=broker, server_config=config) as p:
        hub, stats = p.server.push, p.server.stats
        async with slow_subscribers(p, broker, ["news"] * 3) as (clients, tasks):
            seen = [Seen(c) for c in clients]
            await publish(p, [1, 2, 3])
            assert sorted(hub.hold_bytes.values()) == [sum(sizes)] * 3  # each session's own count
            assert hub.hold_total == sum(sizes) + 6 * HOLD_REF
            assert stats["recoveries_shed"] == stats["recoveries_overflowed"] == 0
            broker.gate.set()
            replies = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
            for c in clients:
                await fence(c)
        assert [(r.recovered, r.replayed, r.missed) for r in replies] == [(True, 3, 0)] * 3
        assert [s.ns for s in seen] == [[1, 2, 3]] * 3
        assert hub.hold_total == 0 and hub.hold_bytes == {}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(any_msgpack(text=40, items=5, key=8, entries=5, leaves=30), max_size=6))
def test_a_history_page_is_encoded_from_the_frames_as_the_model_would_be(payloads: list[Any]) -> None:
    """``kcprpc.Push/History`` encodes its page from the messages' EVENT frames (a model per
    message, dumped and packed again, cost 7 times the CPU: bench/history_page.py): the bytes decode into
    exactly what the HistoryPage model's own encoding does."""
    from kcprpc.broker import MemoryBroker
    from kcprpc.codec import pack, unpack
    from kcprpc.packed import Packed
    from kcprpc.protocol.frames import encode_reply
    from kcprpc.push_service import HistoryMessage, HistoryPage, history_entry

    b = MemoryBroker()
    msgs = [b.publish_nowait("topic:t", "test.Any", p) for p in payloads]
    entries = [history_entry(m) for m in msgs]
    model = HistoryPage(
        messages=[HistoryMessage(name=m.event, payload=m.payload, position=m.position) for m in msgs],
        position=Position(b.epoch, len(msgs)),
        missed=None,
        truncated=True,
    )
    expected = unpack(pack(model.model_dump()))
    assert [unpack(e) for e in entries] == expected["messages"]
    head = [b"\x84", pack("messages"), bytes([0x90 + len(entries)])]
    tail = [
        pack("position"),
        pack([b.epoch, len(msgs)]),
        pack("missed"),
        pack(None),
        pack("truncated"),
        pack(True),
    ]
    body = b"".join([*head, *entries, *tail])
    assert unpack(body) == expected
    reply = encode_reply(7, Packed(body), None, {"k": 1})
    assert reply == encode_reply(7, expected, None, {"k": 1})  # spliced as it is
