"""NatsBroker beyond the conformance suite: concurrent publishers on one key, restarts that keep
or lose the JetStream store, a stream deleted under the broker, garbage on the live subjects,
outages logged once, trimming to the policy size, and the bounds on what is queued. Each test
starts its own ``nats-server -js`` (tests/brokers/nats_server.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import nats
import pytest
from broker_helpers import Got, until
from nats.js import api
from nats_server import NatsServer

from kcprpc.broker import BrokerUnavailable, HistoryPolicy
from kcprpc.codec import pack
from kcprpc.errors import UsageError
from kcprpc.nats_broker import NatsBroker

KEY = "topic:t"


@pytest.fixture
def server() -> Iterator[NatsServer]:
    with NatsServer() as srv:
        yield srv


@pytest.fixture
async def brokers(server: NatsServer) -> AsyncIterator[Callable[..., Awaitable[NatsBroker]]]:
    made: list[NatsBroker] = []

    async def make(**kw: object) -> NatsBroker:
        kw.setdefault("timeout", 0.5)
        kw.setdefault("reconnect_wait", 0.1)
        b = NatsBroker(server.url, prefix=str(kw.pop("prefix", "t")), **kw)  # type: ignore[arg-type]
        await b.start()
        made.append(b)
        return b

    yield make
    for b in made:
        await b.close()


async def test_concurrent_publishers_on_one_key_number_it_without_gaps_or_duplicates(brokers) -> None:
    nodes = [await brokers() for _ in range(4)]
    got = [Got() for _ in nodes]
    for b, g in zip(nodes, got, strict=True):
        b.subscribe(KEY, g)
        await b.history(KEY, None, 0)
    sent = await asyncio.gather(
        *(b.publish(KEY, "tick", {"node": i, "n": n}) for n in range(50) for i, b in enumerate(nodes))
    )
    assert sorted(m.seq for m in sent) == list(range(1, 201))
    assert sum(b.stats()["conflicts"] for b in nodes) > 0  # they did contend for the next number
    by_seq = {m.seq: m.payload for m in sent}
    await until(lambda: all(len(g.msgs) >= 200 for g in got), "200 messages on every node")
    for g in got:
        assert g.seqs == list(range(1, 201))  # each node: in order, once
        assert [m.payload for m in g.msgs] == [by_seq[s] for s in range(1, 201)]
    h = await nodes[0].history(KEY, 0)
    assert [m.seq for m in h.messages] == list(range(1, 201)) and h.missed == 0
    # per node, its own messages keep the order it published them in
    for i in range(4):
        mine = [m.payload["n"] for m in h.messages if m.payload["node"] == i]
        assert sorted(mine) == list(range(50))


PUBLISHER = """
import asyncio, sys
from kcprpc.nats_broker import NatsBroker

async def main() -> None:
    b = NatsBroker(sys.argv[1], prefix="t", timeout=2.0)
    await b.start()
    seqs = await asyncio.gather(*(b.publish("topic:t", "tick", {"p": sys.argv[2], "n": n}) for n in range(100)))
    print(",".join(str(m.seq) for m in seqs))
    await b.close()

asyncio.run(main())
"""


async def test_publishers_in_separate_processes_share_one_numbering(server: NatsServer, brokers) -> None:
    b = await brokers()
    got = Got()
    b.subscribe(KEY, got)
    await b.history(KEY, None, 0)
    env = dict(os.environ)  # kcprpc as installed (the compiled build in its run)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", PUBLISHER, server.url, str(i), stdout=subprocess.PIPE, env=env
        )
        for i in range(3)
    ]
    outs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 60)
    assert all(p.returncode == 0 for p in procs)
    seqs = sorted(int(s) for out, _ in outs for s in out.decode().strip().split(","))
    assert seqs == list(range(1, 301))
    await until(lambda: len(got.msgs) >= 300, "300 messages")
    assert got.seqs == list(range(1, 301))


async def test_a_restart_that_keeps_the_store_keeps_the_epoch_and_the_numbering(server, brokers) -> None:
    b = await brokers()
    got = Got()
    b.subscribe(KEY, got)
    await b.history(KEY, None, 0)
    for n in range(3):
        await b.publish(KEY, "tick", {"n": n})
    epoch = b.epoch
    await asyncio.to_thread(server.restart)
    await until(lambda: b.available, "the broker back")
    assert b.epoch == epoch and b.stats()["reconnects"] >= 1 and b.stats()["outages"] >= 1
    h = await b.history(KEY, 0)
    assert [m.seq for m in h.messages] == [1, 2, 3] and h.epoch == epoch
    m = await b.publish(KEY, "tick", {"n": 3})
    assert m.seq == 4 and m.epoch == epoch
    await until(lambda: len(got.msgs) == 4, "message 4")
    assert got.seqs == [1, 2, 3, 4]


async def test_a_restart_with_a_wiped_store_starts_a_new_epoch(server, brokers) -> None:
    b = await brokers()
    for n in range(3):
        await b.publish(KEY, "tick", {"n": n})
    epoch = b.epoch
    await asyncio.to_thread(server.restart, wipe=True)
    await until(lambda: b.available, "the broker back")
    assert b.epoch != epoch
    h = await b.history(KEY, 2)
    assert h.epoch == b.epoch and h.last == 0 and h.messages == []
    assert (await b.publish(KEY, "tick", {})).seq == 1


async def test_a_stream_deleted_under_the_broker_is_recreated_with_a_new_epoch(server, brokers) -> None:
    a = await brokers()
    b = await brokers()
    await a.publish(KEY, "tick", {})
    await a.publish(KEY, "tick", {})
    epoch = a.epoch
    nc = await nats.connect(server.url)
    try:
        await nc.jsm().delete_stream(a.stream)
    finally:
        await nc.close()
    m = await b.publish("topic:other", "tick", {})  # b finds the stream gone: recreates it
    assert m.seq == 1 and m.epoch == b.epoch != epoch
    # a still has the old stream's last sequence of KEY cached: refused, and the key is empty
    # now, so a reads the new epoch before it numbers the key again
    m2 = await a.publish(KEY, "tick", {})
    assert m2.seq == 1 and m2.epoch == a.epoch == b.epoch
    h = await b.history(KEY, 0)
    assert [x.seq for x in h.messages] == [1] and h.epoch == b.epoch


async def test_garbage_on_the_live_subject_is_dropped_and_counted(server, brokers) -> None:
    b = await brokers()
    got = Got()
    b.subscribe(KEY, got)
    await b.history(KEY, None, 0)
    nc = await nats.connect(server.url)
    try:
        subject = b._subject("l", KEY)
        for junk in (
            b"\xc1",
            pack([1, 2]),
            pack(["x", {}, 0, 1.0, 1, b.epoch]),
            pack([0, "e", {}, 0, 1.0, b.epoch]),
        ):
            await nc.publish(subject, junk)
        await nc.publish(subject, b"\xc1", headers={"Kcprpc-Unnumbered": "1"})
        await nc.flush()
    finally:
        await nc.close()
    await until(lambda: b.stats()["bad_messages"] == 5, "five bad messages counted")
    await b.publish(KEY, "tick", {})
    await until(lambda: got.seqs == [1], "the real message")


async def test_an_outage_fails_fast_is_logged_once_and_counted(server, brokers, caplog) -> None:
    b = await brokers(timeout=0.3)
    await b.publish(KEY, "tick", {})
    await asyncio.to_thread(server.stop)
    await until(lambda: not b.available, "the broker to notice")
    caplog.set_level(logging.WARNING, logger="kcprpc.broker")
    loop = asyncio.get_running_loop()
    for _ in range(20):
        t0 = loop.time()
        with pytest.raises(BrokerUnavailable):
            await b.publish(KEY, "tick", {})
        with pytest.raises(BrokerUnavailable):
            await b.history(KEY, 0)
        with pytest.raises(BrokerUnavailable):
            await b.presence("room:r", None)
        assert loop.time() - t0 < 0.1  # known down: no waiting at all
    s = b.stats()
    assert s["unavailable"] == 1 and s["publish_errors"] >= 20 and s["outages"] == 1
    b.publish_unnumbered(KEY, "x", {})
    assert b.stats()["queued_dropped"] >= 1  # dropped and counted, not queued while down
    await asyncio.to_thread(server.start)
    await until(lambda: b.available, "the broker back")
    assert (await b.publish(KEY, "tick", {})).seq == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 + 1  # "unreachable" once for the outage (the other is "reachable again")


async def test_start_fails_clearly_when_nats_is_not_there(server) -> None:
    url = server.url
    server.stop()
    b = NatsBroker(url, timeout=0.3)
    with pytest.raises(BrokerUnavailable):
        await b.start()
    assert not b.available
    with pytest.raises(BrokerUnavailable):
        await b.publish(KEY, "tick", {})


def test_settings_are_checked() -> None:
    with pytest.raises(UsageError, match="prefix"):
        NatsBroker(prefix="a.b")
    with pytest.raises(UsageError, match="positive"):
        NatsBroker(timeout=0)
    with pytest.raises(UsageError, match="max_queued_bytes"):
        NatsBroker(max_queued_bytes=0)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UsageError, match="max_history_bytes"):
            NatsBroker(max_history_bytes=bad)  # type: ignore[arg-type]


async def test_history_is_trimmed_to_the_policy_but_the_numbering_goes_on(server, brokers) -> None:
    b = await brokers(history=100, policies={"topic:small": HistoryPolicy(size=8)})
    for n in range(100):
        await b.publish("topic:small", "tick", {"n": n})
    await b.presence("room:none", None)  # the queued trims are done

    async def stored() -> int:
        nc = await nats.connect(server.url)
        try:
            info = await nc.jsm().stream_info(b.stream, subjects_filter=b._subject("h", "topic:small"))
            return sum((info.state.subjects or {}).values())
        finally:
            await nc.close()

    assert await stored() <= 8 + 1
    assert b.stats()["trims"] >= 1
    h = await b.history("topic:small", 0)
    assert [m.seq for m in h.messages] == list(range(93, 101)) and h.missed == 92
    assert (await b.publish("topic:small", "tick", {})).seq == 101


async def test_what_is_queued_in_the_background_is_bounded_in_bytes(brokers) -> None:
    b = await brokers(max_queued_bytes=4096)
    for _ in range(200):
        b.publish_unnumbered(KEY, "big", {"x": "y" * 500})
    s = b.stats()
    assert s["queued_bytes"] <= 4096 and s["queued_dropped"] > 0
    await b.presence("room:none", None)  # drains
    assert b.stats()["queued_bytes"] == 0


async def test_a_history_larger_than_one_read_round_comes_whole(brokers) -> None:
    b = await brokers(max_fetch_bytes=2000)  # ~10 of these messages per round
    for n in range(60):
        await b.publish(KEY, "tick", {"n": n, "pad": "x" * 100})
    h = await b.history(KEY, 0)
    assert [m.seq for m in h.messages] == list(range(1, 61)) and h.missed == 0
    assert [m.payload["n"] for m in (await b.history(KEY, None, 3)).messages] == [57, 58, 59]


async def test_held_back_live_messages_are_bounded_in_bytes(server, brokers) -> None:
    b = await brokers(max_reorder_bytes=1000)
    got = Got()
    b.subscribe(KEY, got)
    await b.history(KEY, None, 0)
    nc = await nats.connect(server.url)
    try:  # numbers far ahead of the key (forged: the history never has them): held, then dropped
        subject = b._subject("l", KEY)
        for seq in range(1000, 1030):
            await nc.publish(subject, pack([seq, "tick", {"pad": "x" * 80}, 0, 1.0, b.epoch]))
        await nc.flush()
    finally:
        await nc.close()
    await until(lambda: b.stats()["reorder_dropped"] > 0, "the bound to drop held messages")
    assert b.stats()["reorder_bytes"] <= 1000
    for n in range(3):
        await b.publish(KEY, "tick", {"n": n})
    await until(lambda: len(got.msgs) >= 3, "the real messages")
    assert got.seqs == [1, 2, 3] and [m.payload["n"] for m in got.msgs] == [0, 1, 2]


async def test_a_short_gap_in_a_long_history_is_read_from_where_it_starts(brokers) -> None:
    b = await brokers(history=1000)
    other = "topic:other"
    for n in range(600):  # two keys interleaved: the stream's numbers are not the key's
        await b.publish(KEY, "tick", {"n": n})
        if n % 3 == 0:
            await b.publish(other, "tick", {"n": n})
    full = await b.history(KEY, 0)
    assert [m.seq for m in full.messages] == list(range(1, 601))
    for since in range(600 - 64, 600):  # every gap short enough to seek
        h = await b.history(KEY, since)
        assert [m.seq for m in h.messages] == list(range(since + 1, 601)), since
        assert [m.payload["n"] for m in h.messages] == list(range(since, 600)) and h.missed == 0
    assert b.stats()["history_seeks"] == 63  # since = 599 = last - 1: the last message alone
    assert [m.seq for m in (await b.history(KEY, 590, limit=3)).messages] == [591, 592, 593]
    h = await b.history(other, 190)  # a short key: read whole, as before
    assert [m.seq for m in h.messages] == list(range(191, 201))
    assert b.stats()["history_seeks"] == 64


async def test_live_messages_nats_py_drops_past_its_bound_are_filled_from_history(brokers) -> None:
    # nats-py's pending bound for a live key is 4 x max_reorder_bytes: 64 bytes, under one message,
    # so it drops every live message; each drop fills the key from the history, the last one too
    a = await brokers(max_reorder_bytes=16)
    b = await brokers()
    got = Got()
    a.subscribe(KEY, got)
    await a.history(KEY, None, 0)
    for n in range(20):
        await b.publish(KEY, "tick", {"n": n, "pad": "x" * 100})
    await until(lambda: len(got.msgs) >= 20, "all 20, the last one without a later message")
    assert got.seqs == list(range(1, 21)) and [m.payload["n"] for m in got.msgs] == list(range(20))
    s = a.stats()
    assert s["slow_consumer_drops"] >= 1 and s["gap_fills"] >= 1


async def test_an_unexpected_error_checking_the_streams_after_a_reconnect_is_retried(
    server, brokers, monkeypatch, caplog
) -> None:
    """The first check of the streams after NATS is back raises what it does not expect (injected
    into the real broker against the real server): logged, retried after the backoff, and the
    broker is available again. Before, the recovery task ended with the error unseen and the
    broker stayed unavailable until the next disconnect."""
    b = await brokers(timeout=0.3)
    await b.publish(KEY, "tick", {})
    await asyncio.to_thread(server.stop)
    await until(lambda: not b.available, "the broker to notice")
    real = b._ensure_streams
    failures = [RuntimeError("injected: not what the broker expects")]

    async def once() -> None:
        if failures:
            raise failures.pop()
        await real()

    monkeypatch.setattr(b, "_ensure_streams", once)
    caplog.set_level(logging.WARNING, logger="kcprpc.broker")
    await asyncio.to_thread(server.start)
    await until(lambda: b.available, "the broker back after the retry")
    assert not failures and (await b.publish(KEY, "tick", {})).seq == 2
    assert [r for r in caplog.records if r.exc_info and "injected" in str(r.exc_info[1])]


async def test_the_last_numbers_kept_for_publishing_are_bounded_and_counted(
    brokers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each key's last number is remembered for its next publish, for at most LAST_KEYS keys (a
    client that publishes to ever new keys cannot grow it): past that the least recently published
    key is forgotten and counted, and its next publish reads its number again, without a gap."""
    import kcprpc.nats_broker as nb

    monkeypatch.setattr(nb, "LAST_KEYS", 3)
    b = await brokers()
    for k in range(5):
        await b.publish(f"topic:k{k}", "tick", {"n": 0})
    assert b.stats()["last_forgotten"] == 2
    again = await b.publish("topic:k0", "tick", {"n": 1})  # forgotten: read from NATS, numbered on
    assert again.seq == 2 and b.stats()["last_forgotten"] == 3


async def stream_state(server: NatsServer, stream: str, subject: str | None = None) -> api.StreamState:
    nc = await nats.connect(server.url)
    try:
        info = await nc.jsm().stream_info(stream, subjects_filter=subject)
        assert info.state is not None
        return info.state
    finally:
        await nc.close()


async def test_the_history_of_every_key_together_is_bounded_in_bytes(server, brokers) -> None:
    """The stream had no byte bound (no MaxBytes, no MaxAge; the TTL only filtered reads, and
    each key's last message was kept for good as its counter): large messages on many keys (a
    room per match, a topic per player) grew NATS's store without bound. ``max_history_bytes`` is
    the stream's MaxBytes: the oldest messages of any key go first."""
    b = await brokers(history=100, max_history_bytes=100_000)
    assert b.max_history_bytes == 100_000
    assert NatsBroker().max_history_bytes == 256 << 20  # the default
    big = "x" * 10_000
    for i in range(30):
        for _ in range(3):
            await b.publish(f"topic:t{i}", "big", big)
    state = await stream_state(server, b.stream)
    assert 80_000 < state.bytes <= 100_000 and state.messages <= 10
    for i in range(27, 30):  # the newest keys keep theirs (numbered above the floor by now)
        h = await b.history(f"topic:t{i}", 0)
        first = h.messages[0].seq
        assert [m.seq for m in h.messages] == [first, first + 1, first + 2] and h.missed == first - 1
    await b.sample_history()
    s = b.stats()
    assert s["history_bytes"] == state.bytes and s["history_evicted"] >= 80


async def test_a_key_whose_messages_were_all_discarded_numbers_on_above_them(server, brokers) -> None:
    """Each key's number was its last message's: once the bound discarded it, the key would have
    numbered from 1 again in the same epoch, and every client holding a position on it would
    have dropped the new messages as already seen. It numbers on above the floor instead, and a
    reader from before is told what it missed."""
    b = await brokers(history=100, max_history_bytes=60_000)
    other = await brokers(history=100, max_history_bytes=60_000)  # another process on the prefix
    got = Got()
    other.subscribe(KEY, got)
    await other.history(KEY, None, 0)
    for n in range(3):
        await b.publish(KEY, "tick", {"n": n})
    await until(lambda: got.seqs == [1, 2, 3], "3 messages")
    for i in range(20):  # every message of KEY is discarded
        await b.publish(f"topic:filler{i}", "big", "x" * 10_000)
    assert not (await stream_state(server, b.stream, b._subject("h", KEY))).subjects
    h = await b.history(KEY, 1)  # none kept: where it numbers on from, what was missed
    floor = h.last
    assert h.messages == [] and floor >= 3 and h.missed == floor - 1
    assert await b.history(KEY, floor) == type(h)([], h.epoch, floor, 0)
    floors = b.stats()["history_floors"]  # each filler published once the first mark went
    m = await b.publish(KEY, "tick", {"n": 3})  # b has KEY's old last message cached: refused, re-read
    assert m.seq == floor + 1 and m.epoch == h.epoch
    assert (await other.publish(KEY, "tick", {"n": 4})).seq == floor + 2
    await until(lambda: len(got.msgs) >= 5, "the messages after the discard, and a gap report")
    gap, *after = got.msgs[3:]
    assert gap.event == "kcprpc.Recovered" and gap.payload["missed"] == floor - 3  # not silently dropped
    assert [x.seq for x in after] == [floor + 1, floor + 2]
    h = await other.history(KEY, 2)
    assert [x.seq for x in h.messages] == [floor + 1, floor + 2] and h.missed == floor - 2
    assert b.stats()["history_floors"] == floors + 1


async def test_a_reader_past_what_was_discarded_is_told_exactly_what_it_missed(server, brokers) -> None:
    b = await brokers(history=100, max_history_bytes=60_000)
    for n in range(10):
        await b.publish(KEY, "big", {"n": n, "x": "x" * 10_000})
    h = await b.history(KEY, 0)
    kept = [m.seq for m in h.messages]
    assert 3 <= len(kept) <= 6 and kept == list(range(11 - len(kept), 11))
    assert h.last == 10 and h.missed == 10 - len(kept)  # exact: the key still has messages
    h = await b.history(KEY, 2, 1)
    assert [m.seq for m in h.messages] == kept[:1] and h.missed == kept[0] - 3


async def test_keys_number_from_1_until_the_bound_discards_and_a_position_on_an_empty_key_holds(
    server, brokers
) -> None:
    """The floor moves only when its mark is discarded, not with every message: a position read
    on a key with no message is where its first message goes (no gap reported for nothing)."""
    b = await brokers(history=100, max_history_bytes=60_000)
    for i in range(5):
        assert (await b.publish(f"topic:new{i}", "tick", {})).seq == 1
    assert b.stats()["history_floors"] == 0
    for i in range(12):  # past the bound: the first mark goes
        await b.publish(f"topic:filler{i}", "big", "x" * 10_000)
    got = Got()
    b.subscribe("topic:late", got)
    h = await b.history("topic:late", None, 0)
    assert h.last > 0 and h.messages == []
    for i in range(3):  # more is discarded, short of the new mark
        await b.publish(f"topic:more{i}", "big", "x" * 10_000)
    floors = b.stats()["history_floors"]  # the fillers published since the mark went too
    m = await b.publish("topic:late", "tick", {})
    assert m.seq == h.last + 1 and b.stats()["history_floors"] == floors + 1
    await until(lambda: got.msgs, "the message")
    assert got.seqs == [h.last + 1]


async def test_a_stream_made_without_a_byte_bound_is_bounded_on_start(server, brokers) -> None:
    """A stream an older kcprpc made has no MaxBytes: the broker sets it; its keys number on."""
    old = await brokers()
    for n in range(3):
        await old.publish(KEY, "tick", {"n": n})
    nc = await nats.connect(server.url)
    try:
        jsm = nc.jsm()
        info = await jsm.stream_info(old.stream)
        await jsm.update_stream(info.config.evolve(max_bytes=-1))
        await jsm.purge_stream(old.stream, subject=old._floor_subject)  # as made before marks
    finally:
        await nc.close()
    b = await brokers(max_history_bytes=50_000)
    nc = await nats.connect(server.url)
    try:
        assert (await nc.jsm().stream_info(b.stream)).config.max_bytes == 50_000
    finally:
        await nc.close()
    assert (await b.publish(KEY, "tick", {})).seq == 4
    assert (await b.publish("topic:new", "tick", {})).seq > 4  # above every number made before
    for i in range(10):
        await b.publish(f"topic:filler{i}", "big", "x" * 10_000)
    assert (await stream_state(server, b.stream)).bytes <= 50_000
    assert (await b.publish(KEY, "tick", {})).seq > 5
