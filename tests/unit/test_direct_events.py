"""Numbered direct events (kcprpc.direct_events): a reliable ``session.send`` survives a resume
exactly. The ring's rules on their own (numbers, acks, the bound, a resume's replay and report),
then the wire (HELLO ``numbered``, the EVENT's call id, EVENT_ACK, the claim's ``last``,
WELCOME's ``direct``), the lanes, and the client's side (a new session numbers from 1 again)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_rpc_resume import FAST, TIMEOUT, Blob, Hooks, Raw, reconnect_after, served
from test_rpc_support import Demo, Tick

import kcprpc
from kcprpc import ServerConfig
from kcprpc import codec as c
from kcprpc.direct_events import ENTRY_COST, MASK, DirectRing, after, distance, next_number, numbered
from kcprpc.protocol import frames as fr
from kcprpc.protocol.client import ClientProtocol, NumberedEvent
from kcprpc.protocol.server import EventsAcked, ServerLimits, ServerProtocol
from kcprpc.resume import parse_claim
from kcprpc.send_lanes import LaneConfig
from kcprpc.testing import RpcPair, pair


def event(n: int) -> bytes:
    return c.encode_frame(c.EVENT, 0, ["tick", {"n": n}, None, None, None])


def numbers(ring: DirectRing) -> list[int]:
    return [n for n, _ in ring.entries]


def test_numbers_wrap_after_two_to_the_32_minus_one_and_skip_zero() -> None:
    assert next_number(1) == 2 and next_number(MASK) == 1
    assert after(2, 1) and not after(1, 2) and not after(5, 5)
    assert after(1, MASK) and not after(MASK, 1)  # across the wrap
    assert distance(5, 0) == 5 and distance(5, 2) == 3
    assert distance(2, MASK - 1) == 3  # MASK, 1, 2: 0 is never a number


def test_a_numbered_frame_carries_its_number_in_the_call_id_and_nothing_else_changes() -> None:
    f = event(7)
    out = numbered(f, 0x01020304)
    assert len(out) == len(f) and out[9:] == f[9:]
    [(ftype, cid, body)] = c.FrameDecoder().feed(out)
    assert (ftype, cid, body) == (c.EVENT, 0x01020304, ["tick", {"n": 7}, None, None, None])


def test_acked_frames_are_forgotten_and_the_rest_replayed_on_a_resume() -> None:
    stats = dict.fromkeys(("direct_replayed", "direct_forgotten", "direct_missed"), 0)
    ring = DirectRing(stats)
    frames = [ring.number(event(i)) for i in range(5)]
    assert numbers(ring) == [1, 2, 3, 4, 5]
    assert ring.bytes == sum(len(f) + ENTRY_COST for f in frames)
    ring.ack(2)
    assert numbers(ring) == [3, 4, 5]
    out, replayed, missed = ring.resume(3)  # the client had 3 too (its ack was lost)
    assert out == frames[3:] and (replayed, missed) == (2, 0)
    assert numbers(ring) == [4, 5]  # kept until acknowledged: a second loss replays them again
    assert ring.resume(3)[0] == frames[3:]
    ring.ack(10**6)  # a number never sent acknowledges everything (only the client loses by it)
    assert not ring.entries and ring.bytes == 0


def test_past_the_bound_the_oldest_are_forgotten_and_a_resume_counts_them_exactly() -> None:
    stats = dict.fromkeys(("direct_replayed", "direct_forgotten", "direct_missed"), 0)
    ring = DirectRing(stats)
    size = len(event(0)) + ENTRY_COST
    for i in range(10):
        ring.number(event(i))
        ring.trim(3 * size)
    assert numbers(ring) == [8, 9, 10] and stats["direct_forgotten"] == 7 and ring.forgotten == 7
    out, replayed, missed = ring.resume(4)  # the client handled 1..4: 5, 6, 7 are gone
    assert (len(out), replayed, missed) == (3, 3, 3) and stats["direct_missed"] == 3
    assert ring.resume(9)[1:] == (1, 0)  # it had 8 and 9 after all: nothing missed


def test_held_frames_that_are_not_events_are_sent_once_and_never_forgotten() -> None:
    stats = dict.fromkeys(("direct_replayed", "direct_forgotten", "direct_missed"), 0)
    ring = DirectRing(stats)
    rooms = c.encode_frame(c.ROOMS, 0, [False, "lobby"])
    ring.number(event(1))
    ring.hold(rooms)
    ring.number(event(2))
    size = len(event(1)) + ENTRY_COST
    assert ring.trim(size + len(rooms) + ENTRY_COST) == 0  # the oldest event goes, the ROOMS stays
    assert numbers(ring) == [0, 2] and ring.forgotten == 1
    assert ring.trim(1) > 0  # the ROOMS alone is over: the caller ends the session
    out, replayed, missed = ring.resume(0)
    assert out == [rooms] and (replayed, missed) == (0, 2)
    assert not ring.entries  # sent once: a held frame is not kept


def test_the_wire_parts_decode_and_encode() -> None:
    hello = fr.decode(c.HELLO, 0, {"v": 1, "numbered": True})
    assert isinstance(hello, fr.Hello) and hello.numbered is True
    assert fr.decode(c.HELLO, 0, {"v": 1, "numbered": 1}).numbered is False  # type: ignore[union-attr]
    assert b"numbered" in fr.Hello(1, {}, None, numbered=True).encode()
    assert b"numbered" not in fr.Hello(1, {}, None).encode()
    assert fr.decode(c.EVENT_ACK, 0, 9) == fr.EventAck(9)
    assert fr.EventAck(9).encode() == c.encode_frame(c.EVENT_ACK, 0, 9)
    w = fr.decode(c.WELCOME, 0, {"v": 1, "direct": [2, 3]})
    assert isinstance(w, fr.Welcome) and w.direct == [2, 3]
    for bad in ([1], [1, -1], [1, "2"], "x", [True, 1]):
        assert fr.decode(c.WELCOME, 0, {"v": 1, "direct": bad}).direct is None  # type: ignore[union-attr]
    proof = b"p" * 32
    assert parse_claim({"sid": "s", "proof": proof, "last": 7}) == ("s", proof, 7)
    for last in (None, -1, 2**32, "7", 1.0):
        assert parse_claim({"sid": "s", "proof": proof, "last": last}) == ("s", proof, 0)


def test_a_numbered_event_and_an_ack_are_told_apart_by_the_protocols() -> None:
    counters: dict[str, int] = {}
    client = ClientProtocol(1 << 20, counters)
    out = client.receive(c.EVENT, 5, ["tick", {"n": 1}, None, None, None])
    assert isinstance(out, NumberedEvent) and out.number == 5 and out.event.name == "tick"
    assert client.receive(c.EVENT, 0, ["tick", {"n": 1}, None, None, None]) == fr.Event(
        "tick", {"n": 1}, None, None, None
    )
    server_counters: dict[str, int] = {}
    server = ServerProtocol({}, ServerLimits(), server_counters)
    control, other = server.open_stream(), server.open_stream()
    control.receive(c.HELLO, 0, {"v": 1})
    assert control.receive(c.EVENT_ACK, 0, 5) == EventsAcked(5)
    assert other.receive(c.EVENT_ACK, 0, 5) is None and server_counters["bad_frames"] == 1
    assert control.receive(c.EVENT_ACK, 0, "5") is None and server_counters["bad_frames"] == 2


async def test_on_the_wire_a_resume_names_the_last_one_and_gets_exactly_the_rest() -> None:
    hooks = Hooks()
    server = await served(hooks)
    r1 = Raw(server)
    w1 = await r1.hello(numbered=True)
    (sess,) = server.sessions
    for n in range(4):
        sess.send(Tick(n=n))
    sess.send(Tick(n=99), delivery="unreliable")  # memory datagrams: never numbered
    while len([f for f in r1.frames if f[0] == c.EVENT]) < 4:
        data = await asyncio.wait_for(r1.ctrl.read(65536), TIMEOUT)
        r1.frames += r1.dec.feed(data)
    assert [f[1] for f in r1.frames if f[0] == c.EVENT] == [1, 2, 3, 4]
    r1.ctrl.write(c.encode_frame(c.EVENT_ACK, 0, 2))
    await r1.lose()  # (the ack is read before the end of the stream)
    assert sess.direct is not None and [n for n, _ in sess.direct.entries] == [3, 4]
    sess.send(Tick(n=4))  # held while detached: number 5
    r2 = Raw(server)
    w2 = await r2.hello(numbered=True, resume={**r2.proof(w1), "last": 3})
    assert w2["resumed"] is True and w2["direct"] == [2, 0]
    events = [(f[1], f[2][1]["n"]) for f in r2.frames if f[0] == c.EVENT]
    assert events == [(4, 3), (5, 4)]  # before the WELCOME, in order
    assert r2.frames.index(next(f for f in r2.frames if f[0] == c.WELCOME)) == 2
    await server.shutdown(grace=0)


async def test_a_client_that_does_not_say_numbered_gets_call_id_zero_and_its_ack_is_a_bad_frame() -> None:
    hooks = Hooks()
    server = await served(hooks)
    r = Raw(server)
    await r.hello()
    (sess,) = server.sessions
    sess.send(Tick(n=1))
    f = await r.read_until(c.EVENT)
    assert f[1] == 0 and sess.direct is None
    bad = server.stats["bad_frames"]
    r.ctrl.write(c.encode_frame(c.EVENT_ACK, 0, 1))
    await r.client.close()
    await asyncio.wait_for(r.task, TIMEOUT)
    assert server.stats["bad_frames"] == bad + 1
    await server.shutdown(grace=0)


async def test_numbers_follow_the_wire_order_through_lanes_and_conflation_takes_none() -> None:
    from test_rpc_lanes import Backlog, Chat, Ent, flushed, raw_events, session_of

    async with pair([Demo()], server_config=ServerConfig(lanes=LaneConfig(interval=3600.0))) as p:
        got = raw_events(p)
        s = session_of(p)
        link = s.backlog_probe = Backlog(10**6)  # congested: everything waits in its lane
        s.send(Tick(n=0), lane="bulk")
        s.send(Chat(text="c"))
        for x in range(10):
            s.send(Ent(id=7, x=x))  # latest-wins: one goes
        link.n = 0
        s.pump()
        await flushed(p, s, got)
        assert [e.name for e in got] == ["test.Ent", "test.Chat"]  # (flushed drops the ticks)
        assert s.direct is not None
        sent = [(n, c.FrameDecoder().feed(f)[0][2][0]) for n, f in s.direct.entries]
        assert sent == [(1, "test.Ent"), (2, "test.Chat"), (3, "tick"), (4, "tick")]  # 4: the marker
        assert p.client.lifecycle.link is not None and p.client.lifecycle.link.last_direct == 4


async def test_a_new_session_numbers_from_one_and_the_client_follows() -> None:
    """After a resume that failed (the session was gone), the client's count of handled events
    starts again with the new session's: claiming the old session's count would have made the
    server think the new session's events delivered."""
    hooks = Hooks()
    sessions: list[kcprpc.ServerSession] = []

    async with pair([Demo()], client_config=FAST, **hooks.kwargs(on_connect=sessions.append)) as p:
        got: list[int] = []
        p.client.on(Tick, lambda t: got.append(t.n))
        first = sessions[0]
        for n in range(1, 4):
            first.send(Tick(n=n))
        await p.client.health()
        assert got == [1, 2, 3]

        async def gone() -> None:
            await hooks.wait_for("on_detach", first.id)
            await first.close()  # the session ends: the resume will fail

        await reconnect_after(p, gone)
        await p.client.health()
        second = sessions[1]
        assert p.client.session_id == second.id and got == [1, 2, 3]
        assert p.client.lifecycle.link is not None and p.client.lifecycle.link.last_direct == 0

        async def held() -> None:
            await hooks.wait_for("on_detach", second.id)
            second.send(Tick(n=201))  # number 1 of the second session

        await reconnect_after(p, held)
        await p.client.health()
        assert p.client.session_id == second.id and got == [1, 2, 3, 201]


@pytest.mark.parametrize("limit", [200, 64 * 1024])
async def test_a_detached_session_is_charged_for_what_it_keeps(limit: Any) -> None:
    hooks = Hooks()
    server = await served(hooks, ServerConfig(detached_send_buffer=limit))
    r = Raw(server)
    await r.hello(numbered=True)
    (sess,) = server.sessions
    for n in range(3):
        sess.send(Tick(n=n))  # never acknowledged
    await r.read_until(c.EVENT)
    await r.lose()
    assert sess.direct is not None
    charged = server.resumable.detached_bytes
    kept = sess.direct.bytes
    assert kept > 0 and charged >= kept
    sess.send(Tick(n=3))
    assert server.resumable.detached_bytes - charged == sess.direct.bytes - kept
    await server.shutdown(grace=0)


async def resume_after_the_session_ended(p: RpcPair, hooks: Hooks, session: kcprpc.ServerSession) -> None:
    """Drop the connection, end ``session`` while it is detached (so the resume fails), let the
    client back and wait until it is."""

    async def gone() -> None:
        await hooks.wait_for("on_detach", session.id)
        await session.close()

    await reconnect_after(p, gone)
    await p.client.health()


async def test_a_new_sessions_first_events_follow_the_news_that_the_old_one_is_gone() -> None:
    """Events ``on_connect`` sends reach the client before the WELCOME; they are handled once it
    was read, so the client hears of ``SessionExpired`` first, then of the new session's events."""
    hooks = Hooks()
    sessions: list[kcprpc.ServerSession] = []

    def greet(session: kcprpc.ServerSession) -> None:
        sessions.append(session)
        session.send(Tick(n=len(sessions)))

    async with pair([Demo()], client_config=FAST, **hooks.kwargs(on_connect=greet)) as p:
        seen: list[Any] = []
        p.client.on(Tick, lambda t: seen.append(t.n))
        p.client.on(kcprpc.SessionExpired, lambda e: seen.append("expired"))

        await resume_after_the_session_ended(p, hooks, sessions[0])
        assert seen == ["expired", 2]


async def test_over_secure_kcp_events_queued_when_the_connection_dies_arrive_after_the_resume() -> None:
    """The events are queued on the control stream when the connection is dropped in the same
    turn (the transport never sends them): they come with the resume, in order, once each."""
    async with pair([Demo()], link="kcp", client_config=FAST) as p:
        got: list[int] = []
        p.client.on(Tick, lambda t: got.append(t.n))
        back = asyncio.Event()
        p.client.on_reconnect = lambda _: back.set()
        (sess,) = p.server.sessions
        for n in range(20):
            sess.send(Tick(n=n))
        await sess.conn.abort()
        await asyncio.wait_for(back.wait(), TIMEOUT)
        await p.client.health()
        assert got == list(range(20)) and p.client.resumes == 1


async def test_what_a_client_has_not_acknowledged_counts_in_its_send_backlog() -> None:
    """A client that never acknowledges makes the server keep up to ``detached_send_buffer`` of
    its events: that counts against the send bounds (per session and process-wide)."""
    async with pair([Demo()]) as p:
        (s,) = p.server.sessions
        s.backlog_probe = lambda: 0  # (in memory: the transport holds nothing)
        for n in range(10):
            s.send(Tick(n=n))
        await p.client.health()
        assert s.direct is not None and s.direct.bytes > 0
        assert s.held_for_client() == s.direct.bytes
        p.client.lifecycle.link.send_ack()
        await p.client.health()
        assert s.held_for_client() == 0


async def test_after_a_failed_resume_the_restores_presence_event_follows_session_expired() -> None:
    """A resume that fails (the session is gone) goes on with a fresh session whose ``on_restore``
    joins the room again: its presence ``Joined`` reached the client before the WELCOME, so before
    the client's ``SessionExpired`` (a newcomer audit). Every event before the WELCOME is now
    handled once it was read."""
    hooks = Hooks()
    sessions: list[kcprpc.ServerSession] = []
    cfg = ServerConfig(presence=kcprpc.PresenceConfig(events=["room:arena"]))

    def on_restore(session: kcprpc.ServerSession, rooms: list[str], topics: list[str]) -> None:
        for room in rooms:
            session.join(room)

    async with pair(
        [Demo()],
        client_config=FAST,
        server_config=cfg,
        on_restore=on_restore,
        **hooks.kwargs(on_connect=sessions.append),
    ) as p:
        from test_rpc_support import Req

        await p.client.stub(Demo, timeout=TIMEOUT).join(Req(name="arena"))
        seen: list[str] = []
        p.client.on(kcprpc.Joined, lambda e: seen.append("joined"))
        p.client.on(kcprpc.SessionExpired, lambda e: seen.append("expired"))

        await resume_after_the_session_ended(p, hooks, sessions[0])
        assert seen == ["expired", "joined"] and p.client.rooms == {"arena"}


# -- found by a review of the feature (each failed before its fix)
async def test_missed_events_are_reported_once_not_again_at_the_next_resume() -> None:
    """The client is told it missed 1 event; the next resume (nothing new sent) tells it again."""
    hooks = Hooks()
    cfg = ServerConfig(detached_send_buffer=150)
    async with pair([Demo()], server_config=cfg, client_config=FAST, **hooks.kwargs()) as p:
        reports: list[kcprpc.Recovered] = []
        p.client.on(kcprpc.Recovered, reports.append)
        (sess,) = p.server.sessions

        async def big_while_detached() -> None:
            await hooks.wait_for("on_detach", sess.id)
            sess.send(Blob(data=b"x" * 300))  # over the buffer alone: forgotten at once

        await reconnect_after(p, big_while_detached)
        await p.client.health()
        assert [(r.key, r.replayed, r.missed) for r in reports] == [("session", 0, 1)]
        await reconnect_after(
            p, lambda: hooks.wait_for("on_detach", sess.id)
        )  # lost again, nothing sent meanwhile
        await p.client.health()
        assert p.client.resumes == 2
        # the client missed ONE event in total; it is told about it once
        assert [(r.key, r.replayed, r.missed) for r in reports] == [("session", 0, 1)], reports
        assert p.server.stats["direct_missed"] == 1


def test_a_number_forgotten_long_ago_is_not_reported_missed_after_the_numbers_move_on() -> None:
    """``DirectRing.forgotten`` is never cleared: once the numbers moved on by 2**31 (serial
    arithmetic), an old forgotten number reads as 'after' the client's last again."""
    stats = dict.fromkeys(("direct_replayed", "direct_forgotten", "direct_missed"), 0)
    ring = DirectRing(stats)
    ev = c.encode_frame(c.EVENT, 0, ["tick", {"n": 0}, None, None, None])
    ring.number(ev)
    ring.trim(0)  # number 1 forgotten (say, a burst past the buffer long ago; the client got it)
    assert ring.forgotten == 1
    ring.number(ev)
    ring.ack(2)  # the client handled 2 (and acks on and on, as it does)
    ring.next = 1 + (1 << 31) + 5  # ... and the session went on for 2**31 more events, all handled
    n = ring.next
    ring.number(ev)
    ring.ack(n)
    _, replayed, missed = ring.resume(n)  # the client handled everything
    assert (replayed, missed) == (0, 0), missed


async def test_a_gone_session_keeps_no_ring_and_numbers_nothing_more() -> None:
    """A session gone for good (the client closed) still holds its unacknowledged events, and
    session.send() to it keeps numbering and keeping frames (up to detached_send_buffer)."""
    hooks = Hooks()
    async with pair([Demo()], client_config=FAST, **hooks.kwargs()) as p:
        (sess,) = p.server.sessions
        for n in range(5):
            sess.send(Tick(n=n))
        await p.client.health()
        await p.client.close()
        await hooks.wait_for("on_disconnect", sess.id)
        before = sess.direct.bytes if sess.direct is not None else 0
        for _ in range(1000):
            sess.send(Blob(data=b"x" * 100))  # an app sending to a player that just left
        after = sess.direct.bytes if sess.direct is not None else 0
        assert (before, after) == (0, 0), (before, after)


async def test_takeover_with_direct_events_in_lanes_replays_everything_once_in_order() -> None:
    from test_rpc_lanes import MANUAL, Backlog, Ent

    hooks = Hooks()
    server = await served(hooks, ServerConfig(lanes=MANUAL))
    r1 = Raw(server)
    w1 = await r1.hello(numbered=True)
    (sess,) = server.sessions
    sess.send(Tick(n=1))
    sess.send(Tick(n=2))
    sess.backlog_probe = Backlog(10**6)  # congested: the keyed ones wait in their lane
    sess.send(Ent(id=7, x=1))
    sess.send(Ent(id=7, x=2))  # replaces x=1
    sess.send(Ent(id=8, x=3))
    await r1.read_until(c.EVENT)
    # the client thinks r1 lost (it is not: takeover); it had handled 1
    r2 = Raw(server)
    w2 = await r2.hello(numbered=True, resume={**r2.proof(w1), "last": 1})
    assert w2["resumed"] is True
    got = [(f[1], f[2][0], f[2][1]) for f in r2.frames if f[0] == c.EVENT]
    assert got == [
        (2, "tick", {"n": 2}),
        (3, "test.Ent", {"id": 7, "x": 2}),
        (4, "test.Ent", {"id": 8, "x": 3}),
    ], got
    assert w2["direct"] == [3, 0]
    sess.send(Tick(n=5))
    f = [x for x in (await _more(r2)) if x[0] == c.EVENT]
    assert f[0][1] == 5
    await server.shutdown(grace=0)


async def _more(r: Raw) -> list[Any]:
    data = await asyncio.wait_for(r.ctrl.read(65536), TIMEOUT)
    return r.dec.feed(data)


async def test_events_of_an_on_resume_whose_connection_was_lost_come_with_the_next_resume() -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def on_resume(session: kcprpc.ServerSession) -> None:
        session.send(Tick(n=100))
        entered.set()
        await gate.wait()
        session.send(Tick(n=101))

    server = kcprpc.Server([Demo()], on_resume=on_resume)
    r1 = Raw(server)
    w1 = await r1.hello(numbered=True)
    (sess,) = server.sessions
    sess.send(Tick(n=1))
    await r1.read_until(c.EVENT)
    await r1.lose()
    sess.send(Tick(n=2))
    r2 = Raw(server)
    await r2.send_hello(numbered=True, resume={**r2.proof(w1), "last": 1})
    await asyncio.wait_for(entered.wait(), TIMEOUT)
    await r2.client.close()
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.sleep(0.05)
    entered.clear()
    gate.clear()
    r3 = Raw(server)
    await r3.send_hello(numbered=True, resume={**r3.proof(w1), "last": 1})
    await asyncio.wait_for(entered.wait(), TIMEOUT)
    gate.set()
    w3 = (await r3.read_until(c.WELCOME))[2]
    assert w3["resumed"] is True, w3
    got = [(f[1], f[2][1]["n"]) for f in r3.frames if f[0] == c.EVENT]
    assert got == [(2, 2), (3, 100), (4, 101), (5, 100), (6, 101)], got
    assert w3["direct"] == [5, 0]
    await server.shutdown(grace=0)


async def test_a_healthy_client_is_not_a_slow_consumer_for_events_it_has_not_acked_yet() -> None:
    """max_send_backlog below detached_send_buffer (a valid config): the unacknowledged ring
    (acked at most every 1 s / 32 events) counts in the backlog, and a client that reads
    everything at once is ended as a slow consumer."""
    cfg = ServerConfig(max_message_size=4096, max_send_backlog=16 * 1024)
    async with pair([Demo()], link="mux", server_config=cfg, client_config=FAST) as p:
        got: list[int] = []
        p.client.on(Blob, lambda b: got.append(len(b.data)))
        (sess,) = p.server.sessions
        for _ in range(10):
            for _ in range(3):
                sess.send(Blob(data=b"x" * 1000))
            await asyncio.sleep(0.02)  # the client reads each burst
            sess.check_send()
        await asyncio.sleep(0.1)
        assert p.server.stats["slow_consumers"] == 0, (p.server.stats["slow_consumers"], len(got))


async def test_unreliable_events_too_big_for_a_datagram_stay_unnumbered() -> None:
    hooks = Hooks()
    server = await served(hooks, ServerConfig(lanes=LaneConfig(interval=3600.0)))
    r1 = Raw(server)
    await r1.hello(numbered=True)
    (sess,) = server.sessions
    sess.send(Blob(data=b"x" * 5000), delivery="unreliable")
    sess.send(Tick(n=1))
    while len([f for f in r1.frames if f[0] == c.EVENT]) < 2:
        r1.frames += await _more(r1)
    ev = [(f[1], f[2][0]) for f in r1.frames if f[0] == c.EVENT]
    assert ev == [(0, "test.resume.blob"), (1, "tick")], ev
    assert sess.direct is not None and [n for n, _ in sess.direct.entries] == [1]
    await server.shutdown(grace=0)


async def test_a_numbered_event_on_a_calls_own_stream_is_a_bad_frame() -> None:
    """Numbered events come on the control stream only (the wire spec; the TypeScript client
    already counted one elsewhere as a bad frame, the Python client handled it)."""
    async with pair([Demo()]) as p:
        got: list[int] = []
        p.client.on(Tick, lambda t: got.append(t.n))
        link = p.client.lifecycle.link
        assert link is not None
        bad = p.client.counters["bad_frames"]
        link.on_call_frames([(c.EVENT, 7, ["tick", {"n": 1}, None, None, None])], [])
        assert got == [] and p.client.counters["bad_frames"] == bad + 1 and link.last_direct == 0
        link.on_frames([(c.EVENT, 7, ["tick", {"n": 2}, None, None, None])], [])
        assert got == [2] and link.last_direct == 7
