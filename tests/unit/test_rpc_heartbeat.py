"""Heartbeats (sans-I/O policy and end to end), dead peers, reconnect with restore."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import pytest
from test_rpc_support import Demo, Probe, Req, Tick, rejoin_open_rooms

from kcprpc import ClientConfig, HeartbeatConfig, ReconnectPolicy, RpcError, ServerConfig, Status, UsageError
from kcprpc.heartbeat import Heartbeat, HeartbeatAction
from kcprpc.testing import RpcPair, pair

TIMEOUT = 5.0


async def drop_and_refuse(p: RpcPair) -> None:
    """Drop the connection while new ones are refused; return once the client has noticed."""
    p.refuse = True
    await p.drop()
    for _ in range(100):
        if not p.client.connected:
            break
        await asyncio.sleep(0)


def test_policy_pings_measures_rtt_and_declares_death() -> None:
    hb = Heartbeat(HeartbeatConfig(interval=1.0, timeout=3.0, max_interval=1.0), now=0)  # fixed rate
    assert hb.poll(500) == (HeartbeatAction.NONE, 0)
    action, n1 = hb.poll(1000)
    assert action is HeartbeatAction.PING
    assert hb.on_pong(n1, 1040) == 40.0
    assert hb.srtt_ms == 40.0 and hb.min_rtt_ms == 40.0
    _, n2 = hb.poll(2000)
    assert hb.on_pong(n2, 2120) == 120.0
    assert hb.srtt_ms == 50.0 and hb.last_rtt_ms == 120.0
    assert hb.on_pong(999, 2121) is None
    assert hb.next_wakeup(2121) == 879
    hb.poll(3000)
    hb.poll(4000)
    assert hb.poll(5121)[0] is HeartbeatAction.DEAD


def test_a_quiet_connection_stretches_its_interval_up_to_max_interval() -> None:
    hb = Heartbeat(HeartbeatConfig(interval=1.0, timeout=5.0), now=0)  # max_interval: 2.5 s
    assert HeartbeatConfig(interval=1.0, timeout=5.0).longest_interval == 2.5
    now, pings = 0, []
    while now < 20_000:
        now += hb.next_wakeup(now)
        action, nonce = hb.poll(now)
        assert action is not HeartbeatAction.DEAD
        if action is HeartbeatAction.PING:
            pings.append(now)
            hb.on_pong(nonce, now + 10)  # answered at once
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert gaps[:3] == [1000, 2000, 2500]  # doubles while answered, up to max_interval
    assert set(gaps[2:]) == {2500}
    assert pings[-1] == 21_500 and len(pings) == 10  # instead of 21 at a fixed 1 s


def test_an_unanswered_ping_brings_the_interval_back() -> None:
    hb = Heartbeat(HeartbeatConfig(interval=1.0, timeout=5.0), now=0)
    for t in (1000, 2000):
        _, n = hb.poll(t)
        hb.on_pong(n, t + 5)
    assert hb.current_ms == 2000
    assert hb.poll(4000)[0] is HeartbeatAction.PING  # this one is never answered
    assert hb.current_ms == 2500
    hb.on_receive(4500)  # other traffic, but not the pong
    assert hb.poll(6500)[0] is HeartbeatAction.PING
    assert hb.current_ms == 1000  # back to the configured interval


def test_one_or_two_lost_pings_on_a_quiet_connection_are_not_a_dead_peer() -> None:
    """Stretched to 2.5 s, a quiet connection sent its next PING 2.5 s after an unanswered one:
    as the 5 s timeout ran out, so one lost PING (or PONG) was enough to declare the peer dead (a
    measurement: idle clients over 5 % loss each way reconnected about once a minute). An
    unanswered PING is now followed by the next one an interval after it."""

    def run(lost: int) -> tuple[list[int], bool]:
        hb = Heartbeat(HeartbeatConfig(interval=1.0, timeout=5.0), now=0)
        now, pings, dropped = 0, [], 0
        while now < 20_000:
            now += hb.next_wakeup(now)
            action, nonce = hb.poll(now)
            if action is HeartbeatAction.DEAD:
                return pings, True
            if action is HeartbeatAction.PING:
                pings.append(now)
                if now >= 8000 and dropped < lost:  # stretched by now: these go unanswered
                    dropped += 1
                else:
                    hb.on_pong(nonce, now + 40)  # a 40 ms round trip
        return pings, False

    pings, dead = run(1)
    assert not dead
    lost_at = next(t for t in pings if t >= 8000)
    assert pings[pings.index(lost_at) + 1] - lost_at == 1000  # not 2,500: the timeout is far
    assert not run(2)[1]
    assert run(3)[1]  # three in a row, within the timeout: the peer is dead


def test_dead_peer_is_declared_within_the_timeout_even_when_stretched() -> None:
    hb = Heartbeat(HeartbeatConfig(interval=1.0, timeout=5.0), now=0)
    now, last_pong = 0, 0
    while now < 8000:  # a quiet, answered connection: the interval reaches 2.5 s
        now += hb.next_wakeup(now)
        action, nonce = hb.poll(now)
        if action is HeartbeatAction.PING:
            last_pong = now + 1
            hb.on_pong(nonce, last_pong)
    assert hb.current_ms == 2500
    # the peer dies now: nothing arrives any more; step the driver as it would run
    while True:
        now += hb.next_wakeup(now)
        action, _ = hb.poll(now)
        if action is HeartbeatAction.DEAD:
            break
        assert now < last_pong + 5000
    assert now == last_pong + 5000


def test_a_ping_is_skipped_when_traffic_flowed_both_ways() -> None:
    hb = Heartbeat(HeartbeatConfig(interval=1.0, timeout=5.0), now=0)
    sent = 0
    for t in range(1000, 9001, 1000):  # a call and its reply every second
        sent += 40
        hb.on_receive(t - 500)
        assert hb.poll(t, activity=sent) == (HeartbeatAction.NONE, 0)
    assert hb.skipped == 9
    # past 4 * max_interval (10 s) without a ping, one goes out for a fresh RTT sample
    sent += 40
    hb.on_receive(9500)
    assert hb.poll(10_000, activity=sent)[0] is HeartbeatAction.PING


def test_receiving_alone_does_not_skip_pings() -> None:
    """A subscriber that only receives pushes must still tell the server it lives."""
    hb = Heartbeat(HeartbeatConfig(interval=1.0, timeout=5.0), now=0)
    hb.on_receive(900)
    assert hb.poll(1000, activity=0)[0] is HeartbeatAction.PING
    # sending alone (the server silent) does not skip either
    assert hb.poll(3000, activity=100)[0] is HeartbeatAction.PING
    assert hb.skipped == 0


async def test_a_subscriber_over_secure_kcp_needs_no_ping_while_it_acks_pushes() -> None:
    """Receiving alone does not skip a PING (the test above), but over secure KCP the subscriber's
    transport acks every push, and the server's silence check counts those authenticated datagrams
    (``Connection.packets_sent``): they are traffic sent, and the PINGs are skipped but for the
    one every ``4 * max_interval`` that samples the RTT."""
    client_cfg = ClientConfig(heartbeat=HeartbeatConfig(interval=0.05, timeout=2.0, max_interval=0.05))
    async with pair([Demo()], link="kcp", client_config=client_cfg) as p:
        link = p.client.lifecycle.link
        assert link is not None and link.hb is not None and link.transport_ping
        hb = link.hb
        ticks: asyncio.Queue[Tick] = asyncio.Queue()
        p.client.on(Tick, lambda t, info: ticks.put_nowait(t))
        await p.client.subscribe("news")
        pings, skipped = hb._nonce, hb.skipped
        for n in range(30):  # a push every 20 ms or so, for about 12 heartbeat intervals
            await p.server.push.publish("news", Tick(n=n))
            assert (await asyncio.wait_for(ticks.get(), TIMEOUT)).n == n
            await asyncio.sleep(0.02)  # the publishing pace
        assert hb.skipped - skipped >= 4, (hb.skipped - skipped, hb._nonce - pings)
        assert hb._nonce - pings <= 5  # one per 4 intervals (RTT), not one per interval
        assert len(p.server.sessions) == 1  # and the server never found it silent


def test_the_servers_announced_interval_caps_the_stretch() -> None:
    hb = Heartbeat(HeartbeatConfig(interval=0.5, timeout=5.0), now=0)  # would stretch to 2 s
    assert hb.max_interval_ms == 2000
    hb.limit_interval(1250)  # the server sweeps every 0.5 s: 2.5 times that
    assert hb.max_interval_ms == 1250
    hb.limit_interval(100)  # never below the client's own interval
    assert hb.max_interval_ms == 500


async def test_a_client_takes_the_cap_from_welcome() -> None:
    server_cfg = ServerConfig(heartbeat=HeartbeatConfig(interval=0.2, timeout=2.0))
    client_cfg = ClientConfig(heartbeat=HeartbeatConfig(interval=0.1, timeout=5.0, max_interval=2.0))
    async with pair([Demo()], server_config=server_cfg, client_config=client_cfg) as p:
        link = p.client.lifecycle.link
        assert link is not None and link.hb is not None
        assert link.hb.max_interval_ms == 500


def test_max_interval_is_checked() -> None:
    with pytest.raises(UsageError):
        HeartbeatConfig(interval=1.0, timeout=5.0, max_interval=0.5)
    with pytest.raises(UsageError):
        HeartbeatConfig(interval=1.0, timeout=5.0, max_interval=5.0)
    assert HeartbeatConfig(interval=1.0, timeout=30.0).longest_interval == 4.0


def test_backoff_is_bounded_and_jittered() -> None:
    pol = ReconnectPolicy(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.5)
    assert pol.delay(0, lambda n: b"\x7f\xff\xff\xff") == pytest.approx(0.1, rel=1e-6)
    assert pol.delay(10, lambda n: b"\xff\xff\xff\xff") == pytest.approx(1.5)
    assert pol.delay(10, lambda n: b"\x00\x00\x00\x00") == pytest.approx(0.5)
    with pytest.raises(UsageError):
        HeartbeatConfig(interval=1.0, timeout=0.5)


FAST = ClientConfig(
    heartbeat=HeartbeatConfig(interval=0.02, timeout=0.2),
    reconnect=ReconnectPolicy(initial=0.01, maximum=0.05),
)


async def test_rtt_is_measured_and_reported_to_server() -> None:
    async with pair([Demo()], client_config=FAST) as p:
        for _ in range(500):
            if p.client.rtt_ms is not None and next(iter(p.server.sessions)).rtt_ms is not None:
                break
            await asyncio.sleep(0.01)
        assert p.client.rtt_ms is not None and p.client.rtt_ms >= 0
        assert next(iter(p.server.sessions)).rtt_ms is not None


@pytest.mark.parametrize("transport", ["memory", "mux"])
async def test_dead_peer_fails_in_flight_calls_then_reconnects_and_restores(transport: str) -> None:
    async with pair(
        [Demo(Probe())],
        client_config=FAST,
        link=transport,
        on_restore=rejoin_open_rooms,  # type: ignore[arg-type]
        server_config=ServerConfig(resume_window=None),  # the restore path (resume: test_rpc_resume.py)
    ) as p:
        d = p.client.stub(Demo)
        await d.join(Req(name="room1"))
        await p.client.subscribe("news")
        first_sid = p.client.session_id
        reconnected = asyncio.Event()
        p.client.on_reconnect = lambda c: reconnected.set()
        pr = p.server.services[0].probe  # type: ignore[attr-defined]
        call = asyncio.ensure_future(d.slow(Req(name="x")))
        await asyncio.wait_for(pr.started.wait(), TIMEOUT)
        p.blackhole()
        with pytest.raises(RpcError) as ei:
            await asyncio.wait_for(call, TIMEOUT)
        assert ei.value.status is Status.UNAVAILABLE
        await asyncio.wait_for(reconnected.wait(), TIMEOUT)
        assert p.client.session_id != first_sid and p.client.reconnects == 1
        # rooms and topics were restored on the new session
        q: asyncio.Queue[Tick] = asyncio.Queue()
        p.client.on(Tick, q.put_nowait)
        await d.hello(Req(name="sync"))
        await p.server.push.to_room("room1", Tick(n=1))
        await p.server.push.publish("news", Tick(n=2))
        assert [await asyncio.wait_for(q.get(), TIMEOUT) for _ in range(2)] == [Tick(n=1), Tick(n=2)]


async def test_server_drops_silent_clients() -> None:
    # the client does not ping at all; the server's heartbeat timeout closes the session
    cfg = ServerConfig(heartbeat=HeartbeatConfig(interval=0.02, timeout=0.1))
    async with pair([Demo()], server_config=cfg, client_config=ClientConfig(heartbeat=None)) as p:
        await p.client.stub(Demo).hello(Req(name="x"))
        await asyncio.wait_for(p.wait_server_idle(), TIMEOUT)
        with pytest.raises(RpcError) as ei:
            await p.client.stub(Demo).hello(Req(name="x"))
        assert ei.value.status is Status.UNAVAILABLE


async def test_calls_while_disconnected_fail_fast_with_unavailable() -> None:
    cfg = ClientConfig(heartbeat=None, reconnect=ReconnectPolicy(initial=0.01, maximum=0.02))
    async with pair([Demo()], client_config=cfg) as p:
        await drop_and_refuse(p)
        with pytest.raises(RpcError) as ei:
            await p.client.stub(Demo).hello(Req(name="x"))
        assert ei.value.status is Status.UNAVAILABLE
        p.refuse = False
        await p.client.wait_connected(TIMEOUT)
        assert (await p.client.stub(Demo).hello(Req(name="x"))).text == "hello x"


async def test_on_connect_sees_hello_metadata_and_may_refuse() -> None:
    from kcprpc import Client, RpcError, ServerSession

    seen: list[dict[str, object]] = []

    async def on_connect(sess: ServerSession) -> None:
        seen.append(dict(sess.metadata))
        if sess.metadata.get("token") != "good":
            raise RpcError(Status.UNAUTHENTICATED, "bad token")
        sess.join("vip")

    good = ClientConfig(heartbeat=None, metadata={"token": "good"})
    async with pair([Demo()], client_config=good, on_connect=on_connect) as p:
        assert p.client.rooms == {"vip"}  # joined before WELCOME
        assert (await p.client.stub(Demo).hello(Req(name="x"))).text == "hello x"
        bad = Client(p.connector, config=ClientConfig(heartbeat=None, metadata={"token": "bad"}))
        with pytest.raises(RpcError) as ei:
            await bad.connect()
        assert ei.value.status is Status.UNAUTHENTICATED and ei.value.message == "bad token"
        assert not bad.connected
    assert seen == [{"token": "good"}, {"token": "bad"}]


@pytest.mark.parametrize("history", [1024, 2])
async def test_reconnect_replays_missed_topic_and_room_messages(history: int) -> None:
    from kcprpc import MemoryBroker, Recovered, ResumeFailed

    async with pair(
        [Demo()], client_config=FAST, broker=MemoryBroker(history=history), on_restore=rejoin_open_rooms
    ) as p:
        got: list[int] = []
        failed: list[ResumeFailed] = []
        recovered: list[Recovered] = []
        p.client.on(Tick, lambda t: got.append(t.n))
        p.client.on(ResumeFailed, failed.append)
        p.client.on(Recovered, recovered.append)
        await p.client.subscribe("news")
        await p.client.stub(Demo).join(Req(name="r"))
        for i in (1, 2):
            await p.server.push.publish("news", Tick(n=i))
        await p.server.push.to_room("r", Tick(n=100))
        await p.client.health()  # the events arrived before this reply
        assert got == [1, 2, 100]
        reconnected = asyncio.Event()
        p.client.on_reconnect = lambda c: reconnected.set()
        p.blackhole()
        for i in (3, 4, 5):  # lost with the dead connection
            await p.server.push.publish("news", Tick(n=i))
        await p.server.push.to_room("r", Tick(n=101))
        await asyncio.wait_for(reconnected.wait(), TIMEOUT)
        await p.client.health()
        assert failed == []  # ResumeFailed: only for what the session lost
        report = {r.key: r for r in recovered}
        if history >= 3:
            assert got == [1, 2, 100, 3, 4, 5, 101] or got == [1, 2, 100, 101, 3, 4, 5]
            assert report["topic:news"].recovered and report["topic:news"].replayed == 3
        else:
            # a history too short: what it still holds is replayed, the gap is counted
            assert got == [1, 2, 100, 4, 5, 101] or got == [1, 2, 100, 101, 4, 5]
            assert not report["topic:news"].recovered
            assert (report["topic:news"].replayed, report["topic:news"].missed) == (2, 1)
        assert report["room:r"].recovered and report["room:r"].replayed == 1
        await p.server.push.publish("news", Tick(n=6))
        await p.client.health()
        assert got[-1] == 6 and p.client.topic_offsets["topic:news"][1] == 6


async def test_wait_for_ready_calls_ride_out_a_reconnect() -> None:
    cfg = ClientConfig(
        heartbeat=None, reconnect=ReconnectPolicy(initial=0.01, maximum=0.02), wait_for_ready=True
    )
    async with pair([Demo()], client_config=cfg) as p:
        await drop_and_refuse(p)
        call = asyncio.ensure_future(p.client.stub(Demo, timeout=TIMEOUT).hello(Req(name="patient")))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not call.done()
        p.refuse = False
        assert (await asyncio.wait_for(call, TIMEOUT)).text == "hello patient"
        # without a connection in time: DEADLINE_EXCEEDED
        await drop_and_refuse(p)
        with pytest.raises(RpcError) as ei:
            await p.client.stub(Demo, timeout=0.05).hello(Req(name="late"))
        assert ei.value.status is Status.DEADLINE_EXCEEDED


async def test_a_call_waiting_for_a_connection_ends_when_nothing_will_connect_again() -> None:
    """A ``wait_for_ready`` call without a deadline waited for good after ``client.close()``, and
    after a lost connection when there is no reconnect policy: now it fails (CANCELLED, and
    UNAVAILABLE with why), and ``client.connect()`` may still try again."""
    cfg = ClientConfig(
        heartbeat=None, reconnect=ReconnectPolicy(initial=0.01, maximum=0.02), wait_for_ready=True
    )
    async with pair([Demo()], client_config=cfg) as p:
        await drop_and_refuse(p)
        waiting = asyncio.ensure_future(p.client.stub(Demo).hello(Req(name="x")))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not waiting.done()
        await p.client.close()
        with pytest.raises(RpcError) as ei:
            await asyncio.wait_for(waiting, TIMEOUT)
        assert ei.value.status is Status.CANCELLED
    async with pair([Demo()], client_config=replace(cfg, reconnect=None)) as p:
        await drop_and_refuse(p)
        with pytest.raises(RpcError) as ei:
            await asyncio.wait_for(p.client.stub(Demo).hello(Req(name="y")), TIMEOUT)
        assert ei.value.status is Status.UNAVAILABLE and "no reconnect policy" in ei.value.message
        p.refuse = False
        await p.client.connect()
        assert (await p.client.stub(Demo, timeout=TIMEOUT).hello(Req(name="z"))).text == "hello z"


async def test_giving_up_on_reconnecting_is_said_once_and_fails_what_waits() -> None:
    """After ``max_attempts`` the client stops, tells the app (``on_give_up``), and calls waiting
    for a connection (``wait_for_ready``) or made later fail at once with why, not at their
    deadline and not with a bare "not connected"."""
    cfg = ClientConfig(
        heartbeat=None,
        reconnect=ReconnectPolicy(initial=0.01, maximum=0.02, max_attempts=3),
        wait_for_ready=True,
    )
    async with pair([Demo()], client_config=cfg) as p:
        told: list[RpcError] = []
        p.client.on_give_up = lambda client, err: told.append(err)
        await drop_and_refuse(p)
        waiting = asyncio.ensure_future(p.client.stub(Demo, timeout=60).hello(Req(name="x")))
        with pytest.raises(RpcError) as ei:
            await asyncio.wait_for(waiting, TIMEOUT)  # well before its 60 s deadline
        assert ei.value.status is Status.UNAVAILABLE
        assert ei.value.message == "gave up reconnecting after 3 attempts: refused (test)"
        assert [e.message for e in told] == [ei.value.message]
        with pytest.raises(RpcError) as later:
            await p.client.stub(Demo).hello(Req(name="y"))
        assert later.value.message == ei.value.message
        with pytest.raises(RpcError):
            await p.client.wait_connected(TIMEOUT)
        p.refuse = False
        await p.client.connect()  # the app may try again itself: that clears it
        assert (await p.client.stub(Demo).hello(Req(name="z"))).text == "hello z"
