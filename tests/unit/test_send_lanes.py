"""kcprpc.send_lanes: latest-wins per key and priority lanes, shown exactly on a seeded simulated link.

The link here is a deterministic model (no sockets, no clock): what is written waits in the
"transport"; each tick the link carries about ``rate`` bytes (seeded jitter). The pump is the
session's rule (kcprpc.server_session.ServerSession.pump): release while the transport holds less
than the window.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from kcprpc.codec import EVENT, HEADER_SIZE, unpack
from kcprpc.errors import UsageError
from kcprpc.send_lanes import LANE_COUNTERS, Lane, LaneConfig, Put, SendLanes, encode_keyed_event


class SimLink:
    """A seeded simulated link: written frames wait (the transport's backlog) and each tick the
    link carries ``rate`` bytes give or take a quarter, oldest first."""

    def __init__(self, rate: int, seed: int = 1) -> None:
        self.rate = rate
        self.rng = random.Random(seed)
        self.waiting: list[bytes] = []
        self.backlog = 0
        self.carried: list[bytes] = []
        self._credit = 0

    def write(self, frame: bytes) -> None:
        self.waiting.append(frame)
        self.backlog += len(frame)

    def tick(self) -> None:
        self._credit += self.rate + self.rng.randint(-self.rate // 4, self.rate // 4)
        while self.waiting and len(self.waiting[0]) <= self._credit:
            f = self.waiting.pop(0)
            self._credit -= len(f)
            self.backlog -= len(f)
            self.carried.append(f)
        if not self.waiting:
            self._credit = 0


def pump(lanes: SendLanes, link: SimLink, window: int) -> None:
    """The session's pump: hand frames over while the transport holds less than ``window``."""
    budget = window - link.backlog
    if budget > 0:
        for frame, _, _ in lanes.take(budget):
            link.write(frame)


def run(lanes: SendLanes, link: SimLink, window: int, ticks: int) -> None:
    for _ in range(ticks):
        pump(lanes, link, window)
        link.tick()


def frame(tag: str, size: int = 100) -> bytes:
    return tag.encode().ljust(size, b".")


def tag(f: bytes) -> str:
    return f.rstrip(b".").decode()


def lanes_of(*lanes: Lane) -> SendLanes:
    return SendLanes(LaneConfig(lanes=lanes, default_lane=lanes[0].name))


def congest(link: SimLink, nbytes: int) -> None:
    """Fill the transport with ``nbytes`` of other traffic (a large reply, a backlog)."""
    link.write(b"x" * nbytes)


# ---------------------------------------------------------------------- latest-wins
def test_fifty_updates_to_one_entity_while_congested_send_exactly_the_newest() -> None:
    lanes = SendLanes(LaneConfig())
    link = SimLink(rate=1000, seed=7)
    window = 4096
    congest(link, 20_000)  # the link needs ~20 ticks before the window opens
    for i in range(50):
        pump(lanes, link, window)  # the pump runs between updates: nothing fits the window
        assert lanes.put(
            encode_keyed_event("pos", {"x": i}, None, i + 1, 9, "entity:42"), "state", "entity:42"
        ) in (
            Put.QUEUED,
            Put.REPLACED,
        )
        if i % 10 == 9:
            link.tick()
    assert lanes.stats["lanes_queued"] == 1 and lanes.stats["lanes_conflated"] == 49
    assert lanes.stats["lanes_sent"] == 0
    run(lanes, link, window, 200)
    sent = [f for f in link.carried if f[0:1] != b"x"]
    assert len(sent) == 1 and lanes.stats["lanes_sent"] == 1
    body = unpack(sent[0][HEADER_SIZE:])
    assert body == ["pos", {"x": 49}, None, 50, 9, 0, "entity:42"]
    assert len(lanes) == 0 and lanes.queued_bytes == 0


def test_two_entities_interleaved_each_sends_its_newest_in_first_queued_order() -> None:
    lanes = SendLanes(LaneConfig())
    link = SimLink(rate=500, seed=3)
    congest(link, 10_000)
    for i in range(30):
        for ent in ("A", "B"):
            lanes.put(frame(f"{ent}{i}"), "state", ent)
        pump(lanes, link, 2048)
    run(lanes, link, 2048, 100)
    sent = [tag(f) for f in link.carried if f[0:1] != b"x"]
    assert sent == ["A29", "B29"]
    assert lanes.stats["lanes_conflated"] == 58 and lanes.stats["lanes_sent"] == 2


def test_updates_after_the_window_opens_flow_one_per_release() -> None:
    """Not congested: every update goes out (conflation only happens while frames wait)."""
    lanes = SendLanes(LaneConfig())
    link = SimLink(rate=10_000)
    for i in range(5):
        lanes.put(frame(f"A{i}"), "state", "A")
        run(lanes, link, 4096, 1)
    assert [tag(f) for f in link.carried] == ["A0", "A1", "A2", "A3", "A4"]
    assert lanes.stats["lanes_conflated"] == 0


def test_unkeyed_frames_in_a_lane_keep_their_order_and_a_replaced_key_keeps_its_place() -> None:
    lanes = SendLanes(LaneConfig())
    for t, key in [("m1", None), ("A1", "A"), ("m2", None), ("A2", "A"), ("m3", None)]:
        lanes.put(frame(t), "chat", key)
    out = [tag(f) for f, _, _ in lanes.take(10**9)]
    assert out == ["m1", "A2", "m2", "m3"]


def test_unreliable_flag_travels_with_the_newest_frame() -> None:
    lanes = SendLanes(LaneConfig())
    lanes.put(frame("A1"), "state", "A", unreliable=False)
    lanes.put(frame("A2"), "state", "A", unreliable=True)
    assert [(tag(f), u) for f, u, _ in lanes.take(10**9)] == [("A2", True)]


# ---------------------------------------------------------------------- priorities
def test_higher_priority_goes_first_under_a_congested_link() -> None:
    lanes = SendLanes(LaneConfig())  # state (1) > chat (2) > bulk (3)
    link = SimLink(rate=300, seed=11)
    congest(link, 3000)
    for i in range(10):
        lanes.put(frame(f"bulk{i}"), "bulk")
    for i in range(5):
        lanes.put(frame(f"chat{i}"), "chat")
    for i in range(3):
        lanes.put(frame(f"state{i}"), "state")
    run(lanes, link, 400, 200)
    sent = [tag(f) for f in link.carried if f[0:1] != b"x"]
    assert sent == [f"state{i}" for i in range(3)] + [f"chat{i}" for i in range(5)] + [
        f"bulk{i}" for i in range(10)
    ]


def test_a_lower_class_cannot_starve_a_higher_one() -> None:
    """A bulk backlog is released a window at a time; a state frame queued later goes out at the
    very next release, ahead of every bulk frame still waiting."""
    lanes = SendLanes(LaneConfig())
    link = SimLink(rate=200, seed=5)
    for i in range(100):
        lanes.put(frame(f"bulk{i}"), "bulk")
    run(lanes, link, 400, 3)
    before = len(link.carried) + len(link.waiting)
    lanes.put(frame("state!"), "state")
    while not any(tag(f) == "state!" for f in link.waiting + link.carried):
        run(lanes, link, 400, 1)
    written = [tag(f) for f in link.carried + link.waiting]
    assert written.index("state!") == before  # the first frame written after it was queued
    assert lanes.lane_bytes("bulk") > 0  # bulk still waited behind it


def test_weights_share_the_link_among_equal_priorities() -> None:
    lanes = lanes_of(Lane("a", priority=1, weight=3), Lane("b", priority=1, weight=1))
    for i in range(400):
        lanes.put(frame(f"a{i}"), "a")
        lanes.put(frame(f"b{i}"), "b")
    link = SimLink(rate=1000, seed=2)
    run(lanes, link, 1000, 20)
    sent = [tag(f)[0] for f in link.carried]
    assert len(sent) >= 100
    counts = Counter(sent[:100])
    assert counts["a"] == 75 and counts["b"] == 25  # 3:1 exactly (equal sizes)
    # no starvation at any scale: every 8 frames hold both
    for k in range(0, 96, 8):
        assert set(sent[k : k + 8]) == {"a", "b"}


def test_weights_are_in_bytes_not_frames() -> None:
    lanes = lanes_of(Lane("a", priority=1, weight=1), Lane("b", priority=1, weight=1))
    for i in range(200):
        lanes.put(frame(f"a{i}", 400), "a")
        lanes.put(frame(f"b{i}", 100), "b")
    out = [f for f, _, _ in lanes.take(40_000)]
    got: Counter[str] = Counter()
    for f in out:
        got[tag(f)[0]] += len(f)
    assert abs(got["a"] - got["b"]) <= 400


def test_an_idle_lane_banks_no_credit() -> None:
    """A lane that was empty while its peer sent does not then monopolise the link."""
    lanes = lanes_of(Lane("a", priority=1), Lane("b", priority=1))
    for i in range(50):
        lanes.put(frame(f"a{i}"), "a")
    assert len(list(lanes.take(3000))) == 30  # a alone: 30 frames sent
    for i in range(50):
        lanes.put(frame(f"b{i}"), "b")
    nxt = [tag(f)[0] for f, _, _ in lanes.take(1000)]
    assert Counter(nxt) == Counter({"a": 5, "b": 5})


# ---------------------------------------------------------------------- bounds
def test_a_full_lane_drops_its_oldest_unreliable_keyed_frame_first() -> None:
    lanes = lanes_of(Lane("s", priority=1, max_bytes=300, overflow="refuse"))
    assert lanes.put(frame("A1"), "s", "A", unreliable=True) == Put.QUEUED
    assert lanes.put(frame("m1"), "s", unreliable=True) == Put.QUEUED
    assert lanes.put(frame("B1"), "s", "B", unreliable=True) == Put.QUEUED
    assert lanes.put(frame("m2"), "s", unreliable=True) == Put.QUEUED  # A1 (oldest keyed) made room
    assert lanes.stats["lanes_dropped"] == 1
    assert lanes.put(frame("m3"), "s", unreliable=True) == Put.QUEUED  # then B1
    assert lanes.put(frame("m4"), "s", unreliable=True) == Put.REFUSED  # nothing keyed left: refused
    assert lanes.stats["lanes_dropped"] == 2 and lanes.stats["lanes_refused"] == 1
    assert [tag(f) for f, _, _ in lanes.take(10**9)] == ["m1", "m2", "m3"]
    assert lanes.lane_bytes("s") == 0 and lanes.queued_bytes == 0


def test_a_reliable_frame_is_never_dropped_or_refused() -> None:
    """A reliable keyed frame dropped to make room was lost unless its key was sent again, and a
    reliable frame refused was lost without a word: a full lane now says OVERFLOW for it (the
    session ends; its client is replayed the rest when it resumes), whatever its ``overflow``."""
    lanes = lanes_of(Lane("s", priority=1, max_bytes=300, overflow="refuse"))
    assert lanes.put(frame("A1"), "s", "A") == Put.QUEUED
    assert lanes.put(frame("m1"), "s") == Put.QUEUED
    assert lanes.put(frame("B1"), "s", "B") == Put.QUEUED
    assert lanes.put(frame("m2"), "s") == Put.OVERFLOW  # A1 and B1 stay
    assert lanes.put(frame("u1"), "s", unreliable=True) == Put.REFUSED  # an unreliable one may go
    assert lanes.stats["lanes_dropped"] == 0 and lanes.stats["lanes_refused"] == 1
    assert [tag(f) for f, _, _ in lanes.take(10**9)] == ["A1", "m1", "B1"]


def test_reliable_frames_of_one_room_or_topic_keep_their_order_across_lanes() -> None:
    """A reliable frame of a room or topic whose earlier reliable frames wait in a lower lane
    waits behind them there: before, it went first, and the client, which keeps one offset per
    room or topic, dropped the earlier ones as already seen. Other keys still go by priority."""
    lanes = lanes_of(Lane("hi", priority=1), Lane("lo", priority=2))
    assert lanes.put(frame("t1"), "lo", order="topic:t") == Put.QUEUED
    assert lanes.holding("topic:t") == "lo" and lanes.holding("topic:u") is None
    assert lanes.put(frame("t2"), "hi", order="topic:t") == Put.QUEUED  # waits in "lo"
    assert lanes.put(frame("u1"), "hi", order="topic:u") == Put.QUEUED
    assert lanes.put(frame("t3"), "hi", order="topic:t", unreliable=True) == Put.QUEUED  # may pass
    assert [tag(f) for f, _, _ in lanes.take(10**9)] == ["u1", "t3", "t1", "t2"]
    assert lanes.holding("topic:t") is None  # all sent: the next one goes by its own lane
    assert lanes.put(frame("t4"), "hi", order="topic:t") == Put.QUEUED
    assert lanes.holding("topic:t") == "hi"
    lanes.clear()
    assert lanes.holding("topic:t") is None


def test_a_full_lane_that_ends_says_overflow() -> None:
    lanes = lanes_of(Lane("s", priority=1, max_bytes=250, overflow="end"))
    lanes.put(frame("m1"), "s")
    lanes.put(frame("m2"), "s")
    assert lanes.put(frame("m3"), "s") == Put.OVERFLOW
    assert lanes.put(frame("big", 251), "s") == Put.OVERFLOW  # bigger than the lane itself


def test_a_replacement_that_grows_past_the_bound() -> None:
    lanes = lanes_of(Lane("s", priority=1, max_bytes=300, overflow="refuse"))
    lanes.put(frame("A1"), "s", "A", unreliable=True)
    lanes.put(frame("B1"), "s", "B", unreliable=True)
    # A2 grows A's frame by 150 bytes: B1 (the oldest other keyed frame) is dropped to make room
    assert lanes.put(frame("A2", 250), "s", "A", unreliable=True) == Put.REPLACED
    assert lanes.stats["lanes_dropped"] == 1 and lanes.queued_bytes == 250
    assert [tag(f) for f, _, _ in lanes.take(10**9)] == ["A2"]


def test_memory_stays_bounded_with_many_dropped_frames() -> None:
    lanes = lanes_of(Lane("s", priority=1, max_bytes=1000, overflow="refuse"))
    for i in range(10_000):
        lanes.put(frame(f"k{i}"), "s", f"k{i}", unreliable=True)  # each new key drops the oldest
    assert lanes.queued_bytes <= 1000
    q = lanes._queues["s"]
    assert len(q.items) <= 2 * 10 + 17 and len(q.keyed) == 10
    list(lanes.take(10**9))
    assert len(q.items) == 0 and len(q.keyed) == 0


def test_counters_and_clear() -> None:
    lanes = SendLanes(LaneConfig())
    assert set(lanes.stats) == set(LANE_COUNTERS)
    lanes.put(frame("x"), "bulk")
    lanes.clear()
    assert len(lanes) == 0 and list(lanes.take(10**9)) == []


def test_configuration_errors_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        Lane("x", priority=1, weight=0)
    with pytest.raises(UsageError):
        Lane("x", priority=1, overflow="drop")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        LaneConfig(lanes=(Lane("a", 1), Lane("a", 2)), default_lane="a")
    with pytest.raises(UsageError):
        LaneConfig(lanes=(Lane("control", 0),), default_lane="control")
    with pytest.raises(UsageError):
        LaneConfig(default_lane="nope")
    with pytest.raises(UsageError):
        LaneConfig().lane("nope")
    with pytest.raises(UsageError):
        SendLanes(LaneConfig()).put(b"x", "nope")


def test_keyed_event_frame_shape() -> None:
    f = encode_keyed_event("pos", [1], "room:r", 3, 4, "e1")
    assert f[4] == EVENT  # header: >IBI (length, type, call id)
    assert unpack(f[HEADER_SIZE:]) == ["pos", [1], "room:r", 3, 4, 0, "e1"]
