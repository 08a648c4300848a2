"""MemoryBroker's own behaviour (the contract's cases run for every broker in tests/brokers):
expired messages released on write, its trivial lifecycle, policy checks, and the REPLAYED frame
encoded once."""

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


async def test_expired_messages_are_released_when_the_key_is_written_not_only_when_read() -> None:
    # (the contract's cases, history, size, TTL, policies, run for every broker in tests/brokers)
    clock = Clock()
    b = MemoryBroker(history=100, history_ttl=10.0, now=clock)
    fill(b, "topic:a", 5, clock, step=4.0)  # published at 1000, 1004, 1008, 1012, 1016; now 1020
    assert len(b._keys["topic:a"].kept or ()) == 3  # 1000 and 1004 went when 1016 was written
    clock.t += 100
    b.publish_nowait("topic:a", "tick", {})
    assert len(b._keys["topic:a"].kept or ()) == 1
    h = b.history_nowait("topic:a", 0)
    assert seqs(h) == [6] and h.missed == 5


async def test_memory_broker_lifecycle_is_trivial_and_counts() -> None:
    b = MemoryBroker()
    await b.start()
    assert b.available
    b.subscribe("topic:a", lambda m: None)
    b.publish_nowait("topic:a", "tick", {})
    b.publish_nowait("topic:b", "tick", {})
    s = b.stats()
    assert s == {"published": 2, "delivered": 1, "publish_errors": 0, "reconnects": 0, "unavailable": 0}
    await b.close()


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
