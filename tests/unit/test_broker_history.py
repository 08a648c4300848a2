"""The Broker contract's history (kcprpc.broker): positions, size and TTL per key, missed counts,
``since``/``limit``, and the REPLAYED frame encoded once."""

from __future__ import annotations

import msgpack
import pytest

from kcprpc import BrokerHistory, HistoryPolicy, MemoryBroker, Position, UsageError
from kcprpc.broker import REPLAYED
from kcprpc.codec import HEADER_SIZE


class Clock:
    """An injected clock (seconds)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def fill(b: MemoryBroker, key: str, n: int, clock: Clock | None = None, step: float = 1.0) -> None:
    for i in range(n):
        b.publish_nowait(key, "tick", {"n": i + 1})
        if clock is not None:
            clock.t += step


def seqs(h: BrokerHistory) -> list[int]:
    return [m.seq for m in h.messages]


async def test_since_and_limit_read_forward_and_the_tail_without_since() -> None:
    b = MemoryBroker(rng=lambda n: b"\x00\x00\x00\x05")
    fill(b, "topic:a", 10)
    h = await b.history("topic:a", 4)
    assert seqs(h) == [5, 6, 7, 8, 9, 10] and h.missed == 0 and h.position == Position(5, 10)
    assert seqs(await b.history("topic:a", 4, limit=2)) == [5, 6]
    assert seqs(await b.history("topic:a", None, limit=3)) == [8, 9, 10]  # the tail
    assert seqs(await b.history("topic:a")) == list(range(1, 11))
    only = await b.history("topic:a", None, 0)  # the position only
    assert only.messages == [] and only.last == 10
    assert (await b.history("topic:a", 10)).messages == []
    assert (await b.history("topic:a", 99)).missed == 0  # ahead of the key: nothing, no gap
    nothing = await b.history("topic:none", 3)
    assert nothing.messages == [] and nothing.last == 0 and nothing.missed == 0


async def test_a_history_too_short_keeps_what_it_has_and_counts_the_gap() -> None:
    b = MemoryBroker(history=3)
    fill(b, "topic:a", 10)  # 8, 9, 10 kept
    h = await b.history("topic:a", 2)
    assert seqs(h) == [8, 9, 10]
    assert h.missed == 8 - (2 + 1)  # the first kept offset - (since + 1)
    assert (await b.history("topic:a", 7)).missed == 0
    none_kept = MemoryBroker(history=0)
    fill(none_kept, "topic:a", 4)
    h0 = await none_kept.history("topic:a", 1)
    assert h0.messages == [] and h0.missed == 3 and h0.last == 4


async def test_ttl_expires_messages_on_an_injected_clock() -> None:
    clock = Clock()
    b = MemoryBroker(history=100, history_ttl=10.0, now=clock)
    fill(b, "topic:a", 5, clock, step=4.0)  # published at 1000, 1004, 1008, 1012, 1016; now 1020
    h = await b.history("topic:a", 0)
    assert seqs(h) == [4, 5] and h.missed == 3  # 1000, 1004 and 1008 are 10 s old or more
    clock.t += 100
    gone = await b.history("topic:a", 3)
    assert gone.messages == [] and gone.missed == 2 and gone.last == 5
    # expired messages are released as soon as the key is written again, not only when read
    b.publish_nowait("topic:a", "tick", {})
    assert len(b._keys["topic:a"].kept or ()) == 1


async def test_policies_per_key_pattern_and_callable() -> None:
    clock = Clock()
    b = MemoryBroker(
        history=100,
        policies={"topic:chat:*": HistoryPolicy(size=2), "room:*": HistoryPolicy(size=5, ttl=1.0)},
        now=clock,
    )
    fill(b, "topic:chat:main", 5)
    fill(b, "topic:other", 5)
    fill(b, "room:r", 3)
    assert seqs(await b.history("topic:chat:main", 0)) == [4, 5]
    assert seqs(await b.history("topic:other", 0)) == [1, 2, 3, 4, 5]
    clock.t += 2
    assert (await b.history("room:r", 0)).missed == 3
    assert b.policy("room:x") == HistoryPolicy(5, 1.0) and b.policy("topic:x") == HistoryPolicy(100)
    by_call = MemoryBroker(policies=lambda key: HistoryPolicy(size=1 if key.endswith("!") else 10))
    fill(by_call, "topic:loud!", 3)
    fill(by_call, "topic:calm", 3)
    assert seqs(await by_call.history("topic:loud!", 0)) == [3]
    assert seqs(await by_call.history("topic:calm", 0)) == [1, 2, 3]


def test_policy_values_are_checked() -> None:
    with pytest.raises(UsageError, match="size"):
        HistoryPolicy(size=-1)
    with pytest.raises(UsageError, match="ttl"):
        HistoryPolicy(ttl=0)


def test_the_replayed_frame_is_flagged_and_encoded_once() -> None:
    b = MemoryBroker(rng=lambda n: b"\x00\x00\x00\x09")
    m = b.publish_nowait("topic:a", "tick", {"n": 1})
    live = msgpack.unpackb(m.frame()[HEADER_SIZE:])
    replayed = msgpack.unpackb(m.replay_frame()[HEADER_SIZE:])
    assert live == ["tick", {"n": 1}, "topic:a", 1, 9]  # live frames have no flags element
    assert replayed == [*live, REPLAYED]
    assert m.replay_frame() is m.replay_frame()
    assert m.position == Position(9, 1)
