"""MemoryBroker's own behaviour (the contract's cases run for every broker in tests/brokers):
expired messages released on write, the bound on the bytes of every key's history together, its
trivial lifecycle, policy checks, and the REPLAYED frame encoded once."""

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


def test_the_history_of_every_key_together_stays_under_max_history_bytes() -> None:
    # one room per match, each with its chat, never read again: before, every room's last 1,024
    # messages stayed for good
    b = MemoryBroker(max_history_bytes=200_000)
    for match in range(400):
        for i in range(10):
            b.publish_nowait(f"room:match-{match}", "chat", {"text": "x" * 100, "i": i})
    s = b.stats()
    assert 190_000 < s["history_bytes"] <= 200_000
    assert s["history_evicted"] > 3000 and s["keys"] == 400
    # the oldest went first, and a reader is told what it lost
    old = b.history_nowait("room:match-0", 0)
    assert old.messages == [] and old.missed == 10 and old.last == 10
    new = b.history_nowait("room:match-399", 0)
    assert seqs(new) == list(range(1, 11)) and new.missed == 0
    # numbering goes on where it was
    assert b.publish_nowait("room:match-0", "chat", {}).seq == 11
    # a message larger than the whole bound is delivered, not kept
    got: list[int] = []
    b.subscribe("topic:big", lambda m: got.append(m.seq))
    b.publish_nowait("topic:big", "blob", {"b": b"x" * 300_000})
    assert got == [1] and b.history_nowait("topic:big", 0).missed == 1
    assert b.stats()["history_bytes"] <= 200_000


def test_expired_messages_are_released_as_other_keys_are_written() -> None:
    clock = Clock()
    b = MemoryBroker(history_ttl=10.0, now=clock)
    fill(b, "topic:a", 5)
    held = b.stats()["history_bytes"]
    clock.t += 11
    b.publish_nowait("topic:b", "tick", {})  # topic:a is neither written nor read again
    assert b.stats()["history_bytes"] < held / 4
    assert b._keys["topic:a"].kept is None  # only its sequence number is left
    assert b.publish_nowait("topic:a", "tick", {}).seq == 6


def test_idle_keys_past_max_idle_keys_are_forgotten_and_numbering_never_goes_back() -> None:
    """A key with nothing kept and no subscriber costs its name and number for good: a client
    that picks names (a room per match, 20,000 channels) left 346 bytes each, and a 100,000
    character name 100 KB (an audit). Past ``max_idle_keys`` the one idle longest is forgotten;
    written again, it numbers on above what it had."""
    b = MemoryBroker(history=0, max_idle_keys=2)
    for name in ("topic:a", "topic:b", "topic:c"):
        assert b.publish_nowait(name, "tick", {}).seq == 1
    s = b.stats()
    assert s["keys"] == 2 and s["keys_forgotten"] == 1 and "topic:a" not in b._keys
    h = b.history_nowait("topic:a", 0)  # forgotten: what it numbered is gone, and said so
    assert h.last >= 1 and h.missed == h.last
    assert b.publish_nowait("topic:a", "tick", {}).seq == h.last + 1
    b.subscribe("topic:s", lambda m: None)  # a subscribed key is never idle
    for i in range(5):
        b.publish_nowait("topic:s", "tick", {})
        b.publish_nowait(f"topic:x{i}", "tick", {})
    assert "topic:s" in b._keys and b.stats()["keys"] <= 3


def test_max_history_bytes_is_checked() -> None:
    with pytest.raises(UsageError, match="max_history_bytes"):
        MemoryBroker(max_history_bytes=-1)
    with pytest.raises(UsageError, match="max_idle_keys"):
        MemoryBroker(max_idle_keys=1.5)  # type: ignore[arg-type]


async def test_memory_broker_lifecycle_is_trivial_and_counts() -> None:
    b = MemoryBroker()
    await b.start()
    assert b.available
    b.subscribe("topic:a", lambda m: None)
    b.publish_nowait("topic:a", "tick", {})
    b.publish_nowait("topic:b", "tick", {})
    s = b.stats()
    assert s["history_bytes"] > 0
    del s["history_bytes"]
    assert s == {
        "published": 2,
        "delivered": 1,
        "publish_errors": 0,
        "reconnects": 0,
        "unavailable": 0,
        "history_evicted": 0,
        "keys": 2,
        "keys_forgotten": 0,
        "callback_errors": 0,
    }
    await b.close()


def test_a_subscriber_that_raises_neither_stops_the_others_nor_fails_the_publish() -> None:
    """Redis and NATS isolated their callbacks; MemoryBroker let one raise out of the publish
    (after the message was numbered and kept): the other subscribers never got it."""
    b = MemoryBroker()
    got: list[int] = []

    def bad(m: object) -> None:
        raise KeyError("an app's bug")

    b.subscribe("room:r", bad)
    b.subscribe("room:r", lambda m: got.append(m.seq))
    assert b.publish_nowait("room:r", "tick", {}).seq == 1
    b.publish_unnumbered("room:r", "kcprpc.Joined", {})
    assert got == [1, 0] and b.stats()["callback_errors"] == 2


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
