"""Send lanes end to end (server session -> client): latest-wins per key, priorities, bounds, the
client's per-key stale drop, and the default path left as it was.

The congested link is a test double of the transport's send backlog (``session.backlog_probe``,
what KCP and the mux report for a real connection): the test sets how many bytes it holds, and
drives the session's pump itself (``LaneConfig.interval`` is an hour, so no timer pumps
meanwhile). The pump's own rule is the one under test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from pydantic import BaseModel
from test_rpc_support import Demo, Tick

import kcprpc
from kcprpc import MemoryBroker, ServerConfig
from kcprpc.codec import HEADER_SIZE, unpack
from kcprpc.errors import UsageError
from kcprpc.protocol.frames import Event, Malformed, decode
from kcprpc.send_lanes import Lane, LaneConfig
from kcprpc.server_session import ServerSession
from kcprpc.subscriptions import RawEvent, Subscriptions
from kcprpc.testing import RpcPair, pair

TIMEOUT = 5.0
MANUAL = LaneConfig(interval=3600.0)  # the test pumps


@kcprpc.event("test.Ent", key="id", lane="state")
class Ent(BaseModel):
    id: int
    x: int


@kcprpc.event("test.EntU", delivery="unreliable", key="id")
class EntU(BaseModel):
    id: int
    x: int


@kcprpc.event("test.Chat", lane="chat")
class Chat(BaseModel):
    text: str


class Backlog:
    """Test double of ``Connection.send_bounds.send_backlog``: the bytes the transport holds."""

    def __init__(self, n: int = 0) -> None:
        self.n = n

    def __call__(self) -> int:
        return self.n


async def until(cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


def session_of(p: RpcPair) -> ServerSession:
    (s,) = p.server.sessions
    return s


async def flushed(p: RpcPair, s: ServerSession, got: list[RawEvent]) -> None:
    """Wait until everything the session sent before now reached the client: a marker event on
    the same control stream, after it."""
    n = len(got)
    s.send(Tick(n=-1))
    await until(lambda: any(e.name == "tick" for e in got[n:]))
    got[:] = [e for e in got if e.name != "tick"]


def raw_events(p: RpcPair) -> list[RawEvent]:
    got: list[RawEvent] = []
    p.client.on_raw_event(got.append)
    return got


async def test_fifty_updates_while_congested_reach_the_client_as_exactly_the_newest() -> None:
    async with pair([Demo()], server_config=ServerConfig(lanes=MANUAL)) as p:
        got = raw_events(p)
        s = session_of(p)
        link = s.backlog_probe = Backlog(10**6)  # congested: far over the window
        for i in range(50):
            s.send(Ent(id=42, x=i))
            await asyncio.sleep(0)  # the pump scheduled by the send runs: nothing fits
        s.pump()
        await flushed(p, s, got)
        assert got == []
        stats = p.server.stats
        assert stats["lanes_queued"] == 1 and stats["lanes_conflated"] == 49 and stats["lanes_sent"] == 0
        link.n = 0  # the backlog drained
        s.pump()
        await flushed(p, s, got)
        assert [(e.name, e.payload, e.lw_key) for e in got] == [("test.Ent", {"id": 42, "x": 49}, "42")]
        assert stats["lanes_sent"] == 1 and s.lanes is not None and len(s.lanes) == 0


async def test_room_fanout_of_two_interleaved_entities_sends_each_newest() -> None:
    async with pair([Demo()], server_config=ServerConfig(lanes=MANUAL), broker=MemoryBroker()) as p:
        got = raw_events(p)
        s = session_of(p)
        s.join("arena")
        link = s.backlog_probe = Backlog(10**6)
        for i in range(20):
            for ent in (1, 2):
                await p.server.push.to_room("arena", Ent(id=ent, x=i))
        s.pump()
        assert p.server.stats["lanes_conflated"] == 38
        link.n = 0
        s.pump()
        await flushed(p, s, got)
        assert [(e.payload, e.key, e.lw_key) for e in got] == [
            ({"id": 1, "x": 19}, "room:arena", "1"),
            ({"id": 2, "x": 19}, "room:arena", "2"),
        ]
        # the room's sequence numbers stay the broker's: 39 and 40 of 40 published
        assert [e.seq for e in got] == [39, 40]
        assert p.client.position(room="arena") is not None


async def test_priorities_under_a_congested_link() -> None:
    async with pair([Demo()], server_config=ServerConfig(lanes=MANUAL)) as p:
        got = raw_events(p)
        s = session_of(p)
        link = s.backlog_probe = Backlog(10**6)
        for i in range(3):
            s.send(Tick(n=i), lane="bulk")
        for i in range(3):
            s.send(Chat(text=f"c{i}"))
        s.send(Ent(id=7, x=1))
        link.n = 0
        s.pump()
        n = len(got)
        await until(lambda: len(got) >= n + 7)
        order = [e.name for e in got]
        assert order == ["test.Ent", "test.Chat", "test.Chat", "test.Chat", "tick", "tick", "tick"]
        assert [e.payload for e in got[4:]] == [{"n": 0}, {"n": 1}, {"n": 2}]  # in order in their lane


async def test_the_window_limits_what_one_pump_releases() -> None:
    cfg = ServerConfig(lanes=LaneConfig(interval=3600.0, window=2000))
    async with pair([Demo()], server_config=cfg) as p:
        s = session_of(p)
        link = s.backlog_probe = Backlog(0)
        for i in range(30):
            s.send(Chat(text=f"{i:0>100}"))  # ~130 bytes each
        link.n = 1000  # 1000 bytes of room left in the window
        s.pump()
        assert s.lanes is not None
        sent = p.server.stats["lanes_sent"]
        assert 1000 // 140 <= sent <= 1000 // 120 + 1
        assert len(s.lanes) == 30 - sent


async def test_the_pump_releases_by_itself_once_the_backlog_drains() -> None:
    cfg = ServerConfig(lanes=LaneConfig(interval=0.005))
    async with pair([Demo()], server_config=cfg) as p:
        got = raw_events(p)
        s = session_of(p)
        link = s.backlog_probe = Backlog(10**6)
        for i in range(10):
            s.send(Ent(id=1, x=i))
        link.n = 0  # no direct pump: its timer looks again
        await until(lambda: any(e.name == "test.Ent" for e in got))
        await flushed(p, s, got)
        assert [e.payload["x"] for e in got] == [9]


async def test_default_path_is_unchanged() -> None:
    """Nothing opted in: no lanes, the 5-element EVENT frame of before, sent at once."""
    async with pair([Demo()], server_config=ServerConfig(lanes=MANUAL)) as p:
        got = raw_events(p)
        s = session_of(p)
        s.backlog_probe = Backlog(10**6)  # congested: an unkeyed event does not wait
        s.send(Tick(n=5))
        await until(lambda: len(got) == 1)
        assert got[0].lw_key is None and got[0].seq is None
        assert s.lanes is None and p.server.stats["lanes_queued"] == 0


async def test_unreliable_keyed_events_go_as_datagrams() -> None:
    async with pair([Demo()], server_config=ServerConfig(lanes=MANUAL)) as p:
        got = raw_events(p)
        s = session_of(p)
        for i in range(5):
            s.send(EntU(id=3, x=i))
        s.pump()
        await until(lambda: len(got) == 1)
        await flushed(p, s, got)
        assert [(e.payload["x"], e.unreliable, e.lw_key) for e in got] == [(4, True, "3")]


async def test_a_full_lane_ending_the_session_is_a_slow_consumer() -> None:
    lanes = LaneConfig(
        lanes=(Lane("state", 1, max_bytes=1000, overflow="end"), Lane("chat", 2, max_bytes=1000)),
        interval=3600.0,
    )
    async with pair([Demo()], server_config=ServerConfig(lanes=lanes)) as p:
        s = session_of(p)
        s.backlog_probe = Backlog(10**6)
        for i in range(50):
            s.send(Chat(text=f"{i:0>100}"))
        assert s.closed and p.server.stats["slow_consumers"] == 1
        assert s.lanes is not None and s.lanes.queued_bytes == 0


async def test_a_full_refusing_lane_refuses_unreliable_frames_and_ends_the_session_for_a_reliable_one() -> (
    None
):
    """ "refuse" drops (and counts) what may be dropped. A reliable frame refused was lost without a
    word: the client's offset moved past it with the next one delivered, and its resume reported
    nothing missed. Now it ends the session, whose client is replayed the rest when it resumes."""
    lanes = LaneConfig(
        lanes=(Lane("state", 1), Lane("chat", 2, max_bytes=1000, overflow="refuse")), interval=3600.0
    )
    async with pair([Demo()], server_config=ServerConfig(lanes=lanes)) as p:
        s = session_of(p)
        s.backlog_probe = Backlog(10**6)
        for i in range(50):
            s.send(Chat(text=f"{i:0>100}"), delivery="unreliable")
        assert not s.closed
        assert p.server.stats["lanes_refused"] == 50 - p.server.stats["lanes_queued"] > 0
        s.send(Chat(text="r" * 100))
        assert s.closed and p.server.stats["slow_consumers"] == 1


@kcprpc.event("test.Line", lane="chat")
class Line(BaseModel):
    text: str


@pytest.mark.parametrize("link", ["memory", "kcp"])
async def test_reliable_events_of_one_topic_arrive_in_order_whatever_their_lanes(link: str) -> None:
    """An event in a lane, then one without (sent at once) on the same topic: the second reached
    the client first, and the client dropped the first as already seen (offset 1 after 2),
    counting nothing, on an idle link. Now the second waits behind the first."""
    async with pair([Demo()], link=link) as p:
        got: list[tuple[str, int]] = []
        p.client.on(Line, lambda e, i: got.append((e.text, i.position.offset)))
        p.client.on(Tick, lambda e, i: got.append((str(e.n), i.position.offset)))
        await p.client.subscribe("match")
        await p.server.push.publish("match", Line(text="gg"))  # offset 1, in the "chat" lane
        await p.server.push.publish("match", Tick(n=10))  # offset 2, no lane
        await p.server.push.publish("match", Line(text="again"))  # offset 3
        async with asyncio.timeout(5):
            while len(got) < 3:
                await asyncio.sleep(0.01)
        assert got == [("gg", 1), ("10", 2), ("again", 3)]


async def test_usage_errors() -> None:
    async with pair([Demo()]) as p:
        s = session_of(p)
        with pytest.raises(UsageError, match="no send lane 'fast'"):
            s.send(Tick(n=1), lane="fast")
    with pytest.raises(UsageError, match="key field 'nope'"):

        @kcprpc.event("test.Bad", key="nope")
        class Bad(BaseModel):
            id: int


# ---------------------------------------------------------------------- the client's side
def ev(key: str | None, lw: str, seq: int, epoch: int = 1) -> Event:
    return Event("e", {}, key, seq, epoch, 0, lw)


def test_client_drops_stale_datagrams_per_key_not_per_topic() -> None:
    """The issue's bug: entity B's seq 4 was dropped after entity A's seq 5."""
    subs = Subscriptions(lambda aw: None)
    got: list[RawEvent] = []
    subs.on_raw_event(got.append)
    subs.handle(ev("room:r", "A", 5), unreliable=True)
    subs.handle(ev("room:r", "B", 4), unreliable=True)
    assert [(e.lw_key, e.seq) for e in got] == [("A", 5), ("B", 4)]
    subs.handle(ev("room:r", "A", 3), unreliable=True)  # older than A's 5: dropped
    subs.handle(ev("room:r", "A", 5), unreliable=True)  # a duplicate: dropped
    subs.handle(ev("room:s", "A", 1), unreliable=True)  # another room: its own key
    subs.handle(ev("room:r", "A", 6, epoch=2), unreliable=True)  # another epoch: kept
    assert [(e.key, e.lw_key, e.seq) for e in got[2:]] == [("room:s", "A", 1), ("room:r", "A", 6)]
    assert subs.events_stale_keyed == 2 and subs.events_stale == 2
    # unkeyed datagrams keep the per-topic rule of before
    subs.handle(Event("u", {}, "room:t", 5, 1), unreliable=True)
    subs.handle(Event("u", {}, "room:t", 4, 1), unreliable=True)
    assert subs.events_stale == 3


def test_client_keyed_direct_events_and_stream_events() -> None:
    subs = Subscriptions(lambda aw: None)
    got: list[RawEvent] = []
    subs.on_raw_event(got.append)
    subs.handle(ev(None, "A", 2, epoch=77), unreliable=False)  # sent to this session only
    subs.handle(ev(None, "A", 1, epoch=77), unreliable=True)  # an older datagram: dropped
    subs.handle(ev(None, "A", 1, epoch=78), unreliable=True)  # a new session's epoch: kept
    assert [(e.seq, e.unreliable) for e in got] == [(2, False), (1, True)]


def test_client_bounds_its_key_table() -> None:
    subs = Subscriptions(lambda aw: None)
    subs.max_keys = 100
    for i in range(1000):
        subs.handle(ev("room:r", f"k{i}", i + 1), unreliable=True)
    assert len(subs._keyed) == 100 and subs.keys_evicted == 900


def test_wire_keyed_event_decoding() -> None:
    body = ["e", 1, "room:r", 3, 4, 0, "A"]
    assert decode(10, 0, body) == Event("e", 1, "room:r", 3, 4, 0, "A")
    assert decode(10, 0, ["e", 1, None, None, None, 0, 5]) == Event("e", 1, None, None, None, 0, None)
    assert isinstance(decode(10, 0, [*body, "extra"]), Malformed)
    assert decode(10, 0, ["e", 1, None, None, None]) == Event("e", 1, None, None, None)
    f = Event("e", 1, "room:r", 3, 4, 0, "A").encode()
    assert unpack(f[HEADER_SIZE:]) == body
    assert unpack(Event("e", 1, None, None, None).encode()[HEADER_SIZE:]) == ["e", 1, None, None, None]
