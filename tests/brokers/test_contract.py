"""The Broker contract (kcprpc.broker.Broker), one set of cases for every broker: per-key sequences
and positions, callback order, history with since/limit/missed, size and TTL, per-key policies,
unnumbered messages, presence, several nodes on one backend, epochs across a restart that lost
the data, gap filling after a cut link, and outages."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
from broker_helpers import Got
from conftest import Brokers

from kcprpc.broker import (
    GAP_EVENT,
    Broker,
    BrokerHistory,
    BrokerMessage,
    BrokerUnavailable,
    HistoryPolicy,
    Position,
)
from kcprpc.codec import HEADER_SIZE
from kcprpc.service import Delivery

KEY = "topic:news"


def seqs(h: BrokerHistory) -> list[int]:
    return [m.seq for m in h.messages]


async def fill(b: Broker, key: str, n: int, start: int = 1) -> list[BrokerMessage]:
    return [await b.publish(key, "tick", {"n": i}) for i in range(start, start + n)]


async def live(b: Broker, key: str, cb: Got) -> None:
    """Subscribe; the subscription is live once a history call after it returned (the contract)."""
    b.subscribe(key, cb)
    await b.history(key, None, 0)


# ---------------------------------------------------------------- sequences and positions
async def test_each_key_numbers_its_messages_from_one_without_gaps(broker: Brokers) -> None:
    b = await broker()
    a = await fill(b, "topic:a", 5)
    r = await fill(b, "room:r", 3)
    assert [m.seq for m in a] == [1, 2, 3, 4, 5] and [m.seq for m in r] == [1, 2, 3]
    assert all(m.epoch == b.epoch and m.position == Position(b.epoch, m.seq) for m in a + r)
    assert a[0].topic == "a" and r[0].key == "room:r" and a[2].payload == {"n": 3}
    h = await b.history("topic:a", None, 0)
    assert h.messages == [] and h.position == Position(b.epoch, 5) and h.missed == 0
    none = await b.history("topic:none", 3)
    assert none.messages == [] and none.last == 0 and none.missed == 0 and none.epoch == b.epoch
    # a message keeps its delivery, and the frame carries key, seq and epoch
    u = await b.publish("topic:a", "pos", {"x": 1}, Delivery.UNRELIABLE)
    assert u.delivery is Delivery.UNRELIABLE and u.seq == 6
    assert msgpack.unpackb(u.frame()[HEADER_SIZE:]) == ["pos", {"x": 1}, "topic:a", 6, b.epoch]


async def test_callbacks_see_each_key_in_sequence_order_once(broker: Brokers) -> None:
    b = await broker()
    one, two, other = Got(), Got(), Got()
    await live(b, KEY, one)
    b.subscribe(KEY, one)  # twice: still once
    await live(b, KEY, two)
    await live(b, "topic:other", other)
    await asyncio.gather(*(b.publish(KEY, "tick", {"n": i}) for i in range(1, 31)))
    await b.publish("topic:other", "tick", {"n": 0})
    await broker.until(lambda: len(one.msgs) >= 30 and len(two.msgs) >= 30 and other.msgs, "30 messages")
    assert one.seqs == list(range(1, 31)) and two.seqs == list(range(1, 31))
    assert one.msgs[0].epoch == b.epoch and other.seqs == [1]
    b.unsubscribe(KEY, two)
    b.unsubscribe(KEY, two)  # not subscribed any more: nothing
    await b.publish(KEY, "tick", {"n": 31})
    await broker.until(lambda: len(one.msgs) == 31, "message 31")
    await b.publish(KEY, "fence", {})
    await broker.until(lambda: len(one.msgs) == 32, "the fence")
    assert len(two.msgs) == 30 and one.seqs[-2:] == [31, 32]


# ---------------------------------------------------------------- history
async def test_history_since_and_limit_read_forward_and_the_tail_without_since(broker: Brokers) -> None:
    b = await broker()
    await fill(b, "topic:a", 10)
    h = await b.history("topic:a", 4)
    assert seqs(h) == [5, 6, 7, 8, 9, 10] and h.missed == 0 and h.position == Position(b.epoch, 10)
    assert [m.payload["n"] for m in h.messages] == [5, 6, 7, 8, 9, 10]
    assert all(m.event == "tick" and m.key == "topic:a" and m.epoch == b.epoch for m in h.messages)
    assert seqs(await b.history("topic:a", 4, limit=2)) == [5, 6]
    assert seqs(await b.history("topic:a", None, limit=3)) == [8, 9, 10]  # the tail
    assert seqs(await b.history("topic:a")) == list(range(1, 11))
    assert seqs(await b.history("topic:a", 0)) == list(range(1, 11))
    assert seqs(await b.history("topic:a", -5)) == list(range(1, 11))  # before the start: from it
    only = await b.history("topic:a", None, 0)  # the position only
    assert only.messages == [] and only.last == 10
    assert (await b.history("topic:a", 10)).messages == []
    ahead = await b.history("topic:a", 99)  # ahead of the key: nothing, no gap
    assert ahead.messages == [] and ahead.missed == 0 and ahead.last == 10


async def test_a_history_too_short_keeps_what_it_has_and_counts_the_gap(broker: Brokers) -> None:
    b = await broker(history=3)
    await fill(b, "topic:a", 10)  # 8, 9, 10 kept
    h = await b.history("topic:a", 2)
    assert seqs(h) == [8, 9, 10]
    assert h.missed == 8 - (2 + 1)  # the first kept offset - (since + 1)
    assert (await b.history("topic:a", 7)).missed == 0
    assert seqs(await b.history("topic:a", 2, limit=1)) == [8]
    assert (await b.history("topic:a", 2, limit=0)).missed == 5  # the gap without the messages
    assert seqs(await b.history("topic:a", None)) == [8, 9, 10]
    none_kept = await broker(history=0)
    await fill(none_kept, "topic:a", 4)
    h0 = await none_kept.history("topic:a", 1)
    assert h0.messages == [] and h0.missed == 3 and h0.last == 4


async def test_history_expires_messages_by_age(broker: Brokers) -> None:
    b = await broker(history=100, history_ttl=1.0)
    await fill(b, "topic:a", 3)
    assert seqs(await b.history("topic:a", 0)) == [1, 2, 3]  # fresh: all kept

    async def expired() -> bool:
        return (await b.history("topic:a", 0)).missed == 3

    await broker.until(expired, "the first three messages to expire")
    await fill(b, "topic:a", 2, start=4)
    h = await b.history("topic:a", 0)
    assert seqs(h) == [4, 5] and h.missed == 3 and h.last == 5
    assert (await b.history("topic:a", 3)).missed == 0
    assert seqs(await b.history("topic:a", None)) == [4, 5]

    async def all_gone() -> bool:
        return (await b.history("topic:a", 3)).missed == 2

    await broker.until(all_gone, "messages 4 and 5 to expire")
    gone = await b.history("topic:a", 3)
    assert gone.messages == [] and gone.last == 5
    assert (await b.publish("topic:a", "tick", {"n": 6})).seq == 6  # the numbering goes on


async def test_history_policies_per_key_pattern_and_callable(broker: Brokers) -> None:
    b = await broker(
        history=100,
        policies={"topic:chat:*": HistoryPolicy(size=2), "room:*": HistoryPolicy(size=5, ttl=1.0)},
    )
    await fill(b, "topic:chat:main", 5)
    await fill(b, "topic:other", 5)
    await fill(b, "room:r", 3)
    assert seqs(await b.history("topic:chat:main", 0)) == [4, 5]
    assert seqs(await b.history("topic:other", 0)) == [1, 2, 3, 4, 5]
    assert seqs(await b.history("room:r", 0)) == [1, 2, 3]

    async def room_expired() -> bool:
        return (await b.history("room:r", 0)).missed == 3

    await broker.until(room_expired, "the room's TTL")
    assert seqs(await b.history("topic:other", 0)) == [1, 2, 3, 4, 5]  # no TTL there
    by_call = await broker(policies=lambda key: HistoryPolicy(size=1 if key.endswith("!") else 10))
    await fill(by_call, "topic:loud!", 3)
    await fill(by_call, "topic:calm", 3)
    assert seqs(await by_call.history("topic:loud!", 0)) == [3]
    assert seqs(await by_call.history("topic:calm", 0)) == [1, 2, 3]


# ---------------------------------------------------------------- unnumbered messages
async def test_unnumbered_messages_take_no_number_stay_out_of_history_and_keep_their_order(
    broker: Brokers,
) -> None:
    b = await broker()
    got = Got()
    await live(b, KEY, got)
    await b.publish(KEY, "tick", {"n": 1})
    b.publish_unnumbered(KEY, "joined", {"n": "u"})
    await b.publish(KEY, "tick", {"n": 2})
    b.publish_unnumbered(KEY, "left", {"n": "v"}, Delivery.UNRELIABLE)
    await broker.until(lambda: len(got.msgs) == 4, "four messages")
    assert got.ns == [1, "u", 2, "v"] and got.seqs == [1, 0, 2, 0]
    u = got.msgs[1]
    assert u.event == "joined" and u.epoch == 0 and u.key == KEY
    assert msgpack.unpackb(u.frame()[HEADER_SIZE:]) == ["joined", {"n": "u"}, KEY, None, None]
    assert got.msgs[3].delivery is Delivery.UNRELIABLE
    h = await b.history(KEY, 0)
    assert seqs(h) == [1, 2] and h.last == 2 and h.missed == 0


async def test_an_unnumbered_message_right_after_subscribe_reaches_the_new_subscriber(
    broker: Brokers,
) -> None:
    # presence's Joined: a new member gets its own, even from a broker that subscribes in the background
    b = await broker()
    got = Got()
    b.subscribe(KEY, got)
    b.publish_unnumbered(KEY, "joined", {"n": "me"})
    await b.publish(KEY, "tick", {"n": 1})
    await broker.until(lambda: len(got.msgs) == 2, "both messages")
    assert got.ns == ["me", 1]


# ---------------------------------------------------------------- presence
async def test_presence_add_remove_list_and_count(broker: Brokers) -> None:
    b = await broker()
    assert await b.presence("room:r", None) == ([], 0)
    b.presence_add("room:r", "a", {"name": "ann"})
    b.presence_add("room:r", "b", {"name": "bob"})
    b.presence_add("room:r", "c", {})
    b.presence_add("room:other", "a", {"x": 1})
    assert await b.presence("room:r", None) == (
        [("a", {"name": "ann"}), ("b", {"name": "bob"}), ("c", {})],
        3,
    )
    b.presence_add("room:r", "b", {"name": "bobby"})  # replaced, keeps its place
    entries, total = await b.presence("room:r", 2)
    assert entries == [("a", {"name": "ann"}), ("b", {"name": "bobby"})] and total == 3
    assert await b.presence("room:r", 0) == ([], 3)
    b.presence_remove("room:r", "a")
    b.presence_remove("room:r", "nobody")
    b.presence_remove("room:none", "a")
    assert await b.presence("room:r", None) == ([("b", {"name": "bobby"}), ("c", {})], 2)
    b.presence_remove("room:r", "b")
    b.presence_remove("room:r", "c")
    assert await b.presence("room:r", None) == ([], 0)
    assert await b.presence("room:other", None) == ([("a", {"x": 1})], 1)


@pytest.mark.needs("nodes")
async def test_presence_lists_the_members_of_every_node(broker: Brokers) -> None:
    a = await broker()
    b = await broker.node(a)
    a.presence_add("room:r", "m1", {"on": "a"})
    await a.presence("room:r", None)  # applied
    b.presence_add("room:r", "m2", {"on": "b"})

    async def both() -> bool:
        return (await a.presence("room:r", None))[1] == 2

    await broker.until(both, "both members listed")
    for n in (a, b):
        assert await n.presence("room:r", None) == ([("m1", {"on": "a"}), ("m2", {"on": "b"})], 2)
    b.presence_remove("room:r", "m2")

    async def one() -> bool:
        return (await a.presence("room:r", None))[1] == 1

    await broker.until(one, "m2 removed everywhere")


@pytest.mark.needs("nodes", "crash")
async def test_the_presence_of_a_node_that_died_expires(broker: Brokers) -> None:
    a = await broker(presence_ttl=1.0)
    b = await broker.node(a)
    a.presence_add("room:r", "m1", {"on": "a"})
    b.presence_add("room:r", "m2", {"on": "b"})

    async def both() -> bool:
        return (await b.presence("room:r", None))[1] == 2

    await broker.until(both, "both members listed")
    await broker.backend.crash(a)

    async def only_b() -> bool:
        return await b.presence("room:r", None) == ([("m2", {"on": "b"})], 1)

    # only_b also shows b's entry refreshed by its heartbeat: added with a's, it outlived a's TTL
    await broker.until(only_b, "the dead node's member to expire", timeout=10.0)


# ---------------------------------------------------------------- several nodes
@pytest.mark.needs("nodes")
async def test_nodes_on_one_backend_share_one_sequence_per_key(broker: Brokers) -> None:
    a = await broker()
    b = await broker.node(a)
    ga, gb = Got(), Got()
    await live(a, KEY, ga)
    await live(b, KEY, gb)
    pubs = [a.publish(KEY, "tick", {"n": i}) for i in range(0, 40, 2)]
    pubs += [b.publish(KEY, "tick", {"n": i}) for i in range(1, 40, 2)]
    sent = await asyncio.gather(*pubs)
    assert sorted(m.seq for m in sent) == list(range(1, 41))  # one numbering, no duplicate
    assert {m.epoch for m in sent} == {a.epoch} and a.epoch == b.epoch
    await broker.until(lambda: len(ga.msgs) >= 40 and len(gb.msgs) >= 40, "40 messages on each node")
    assert ga.seqs == list(range(1, 41)) and gb.seqs == list(range(1, 41))
    by_seq = {m.seq: m.payload["n"] for m in sent}
    assert ga.ns == [by_seq[s] for s in range(1, 41)] and gb.ns == ga.ns
    h = await b.history(KEY, 38)
    assert seqs(h) == [39, 40] and [m.payload["n"] for m in h.messages] == [by_seq[39], by_seq[40]]


@pytest.mark.needs("nodes")
async def test_unnumbered_messages_reach_the_other_nodes_in_order(broker: Brokers) -> None:
    a = await broker()
    b = await broker.node(a)
    got = Got()
    await live(b, KEY, got)
    await a.publish(KEY, "tick", {"n": 1})
    a.publish_unnumbered(KEY, "joined", {"n": "u"})
    await a.publish(KEY, "tick", {"n": 2})
    await broker.until(lambda: len(got.msgs) == 3, "three messages")
    assert got.ns == [1, "u", 2]


# ---------------------------------------------------------------- a cut link, a restart, an outage
@pytest.mark.needs("nodes", "cut")
async def test_a_cut_subscription_is_resubscribed_and_its_gap_filled_from_history(broker: Brokers) -> None:
    a = await broker()
    b = await broker.node(a)
    got = Got()
    await live(a, KEY, got)
    await fill(b, KEY, 5)
    await broker.until(lambda: len(got.msgs) == 5, "the first five")
    await broker.backend.cut(a)
    await fill(b, KEY, 25, start=6)  # while a is resubscribing
    await broker.until(lambda: len(got.msgs) >= 30, "all thirty")
    await fill(b, KEY, 1, start=31)
    await broker.until(lambda: len(got.msgs) >= 31, "the one after")
    assert got.seqs == list(range(1, 32)) and got.ns == list(range(1, 32))
    assert a.stats()["reconnects"] >= 1


@pytest.mark.needs("nodes", "cut")
async def test_a_gap_the_history_no_longer_holds_is_reported_to_the_subscribers(broker: Brokers) -> None:
    """A subscription cut while more was published than the history holds: the messages it
    missed are gone. Only the broker counted them (``lost`` / ``gap_lost``) and delivery went on
    past the hole; now the subscribers get an unnumbered ``kcprpc.Recovered`` (recovered False,
    missed N) in order before the rest, which the server sends on to every member."""
    a = await broker(history=5)
    b = await broker.node(a, history=5)
    got = Got()
    await live(a, KEY, got)
    await fill(b, KEY, 2)
    await broker.until(lambda: len(got.msgs) == 2, "the first two")
    await broker.backend.cut(a)
    await fill(b, KEY, 20, start=3)  # 3..22 while a is away: the history keeps 18..22
    await broker.until(lambda: any(m.seq == 22 for m in got.msgs), "the last one")
    # a few may still arrive on the old link before the cut is noticed: every hole in the numbers
    # has its report right before the message after it, saying how many, and where it goes on
    reports = [i for i, m in enumerate(got.msgs) if m.event == GAP_EVENT]
    assert reports and all(got.msgs[i].seq == 0 for i in reports)
    seen = 0
    for i, m in enumerate(got.msgs):
        if m.seq:
            hole = m.seq - seen - 1
            if hole:
                rep = got.msgs[i - 1].payload
                assert got.msgs[i - 1].event == GAP_EVENT and rep["key"] == KEY
                assert rep["recovered"] is False and rep["missed"] == hole
                assert rep["position"] == [b.epoch, m.seq - 1]
            seen = m.seq
    assert seen == 22 and sum(got.msgs[i].payload["missed"] for i in reports) == 22 - sum(
        1 for m in got.msgs if m.seq
    )


@pytest.mark.needs("nodes", "restart")
async def test_a_restart_that_lost_the_data_starts_a_new_epoch(broker: Brokers) -> None:
    a = await broker()
    b = await broker.node(a)
    got = Got()
    await live(a, KEY, got)
    await fill(b, KEY, 3)
    await broker.until(lambda: len(got.msgs) == 3, "three messages")
    old = a.epoch
    await broker.backend.restart()
    await broker.until(lambda: a.available and b.available, "both nodes back")
    m = await b.publish(KEY, "tick", {"n": 100})
    assert m.epoch != old and m.seq == 1  # the numbering restarted: another epoch
    await broker.until(lambda: len(got.msgs) == 4, "the new epoch's first message")
    assert got.msgs[3].position == Position(m.epoch, 1)  # not taken for a duplicate of seq 1
    h = await a.history(KEY, 3)  # an offset of the old epoch: the answer says which epoch it is
    assert h.epoch == m.epoch != old and h.last == 1
    assert a.epoch == b.epoch == m.epoch


@pytest.mark.needs("nodes", "outage")
async def test_an_outage_fails_calls_loudly_and_recovers_in_order(broker: Brokers) -> None:
    loop = asyncio.get_running_loop()
    a = await broker(timeout=0.5)
    b = await broker.node(a)
    got = Got()
    await live(a, KEY, got)
    a.presence_add("room:r", "m1", {})
    await fill(b, KEY, 3)
    await broker.until(lambda: len(got.msgs) == 3, "three messages")
    await broker.backend.stop()
    for call in (
        lambda: a.publish(KEY, "tick", {"n": 0}),
        lambda: a.history(KEY, 0),
        lambda: a.presence("room:r", None),
    ):
        t0 = loop.time()
        with pytest.raises(BrokerUnavailable) as e:
            await call()
        assert loop.time() - t0 < 3.0  # quickly: bounded by the broker's timeout
        assert e.value.status.name == "UNAVAILABLE"
    await broker.until(lambda: not a.available, "a to notice")
    s = a.stats()
    assert s["unavailable"] == 1 and s["publish_errors"] >= 1
    a.publish_unnumbered(KEY, "lost", {})  # in the background: dropped and counted, never raised
    a.presence_add("room:r", "m2", {})
    await broker.backend.start()
    await broker.until(lambda: b.available, "b back")
    await fill(b, KEY, 5, start=4)  # may land before a has resubscribed: filled from history
    await broker.until(lambda: len(got.msgs) >= 8, "messages 4 to 8")
    assert got.seqs == list(range(1, 9)) and got.ns == list(range(1, 9))
    await broker.until(lambda: a.available, "a back")
    s = a.stats()
    assert s["unavailable"] == 0 and s["reconnects"] >= 1
    assert (await a.publish(KEY, "tick", {"n": 9})).seq == 9

    async def members() -> bool:  # what this node holds is there again
        return await b.presence("room:r", None) == ([("m1", {}), ("m2", {})], 2)

    await broker.until(members, "a's members back")


# ---------------------------------------------------------------- live
async def test_live_says_when_another_nodes_publishes_reach_a_new_subscription(broker: Brokers) -> None:
    """``live(key)`` after ``subscribe``: None, or an awaitable after which every message another
    node publishes reaches the callback (what a room join's reply waits for)."""
    a = await broker()
    b = await broker.node(a)
    for i in range(5):  # new keys: each subscription starts from nothing
        key = f"room:live{i}"
        got = Got()
        a.subscribe(key, got)
        pending = a.live(key)
        if pending is not None:
            await asyncio.wait_for(pending, 5)
        assert a.live(key) is None  # live now
        await b.publish(key, "tick", {"n": i})  # at once, from the other node
        await broker.until(lambda got=got, i=i: got.ns == [i])
