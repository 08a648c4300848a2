"""Held acks (``SessionConfig.ack_hold``, docs/tuning.md "Delayed acks"): a secure session that
only receives holds each lone ack until a second segment comes or ``ack_hold`` ms pass, once its
peer agreed to it in the handshake; a loss (a segment out of order) sends acks at once again. The
state machine is driven by hand on a real secure session (the datagrams its engine writes are
read before they are sealed); then a real pair over loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import kcp
import kcp.session
from kcp.engine import ACK_HOLD_MAX, ACK_HOLD_UNIT, IKCP_CMD_ACK, KCP, SEGMENT_HEADER
from kcp.relay import LossyRelay
from kcp.secure import SecureConfig
from kcp.timers import NO_ENTRY, entry_due

PSK = bytes(range(32))
HOLD = kcp.SessionConfig(ack_hold=200)  # (the default, 0, never holds)
TIMEOUT = 20.0


def _ack_frgs(datagrams: list[bytes]) -> list[list[int]]:
    """Per datagram, the ``frg`` of each ACK segment in it."""
    out = []
    for d in datagrams:
        frgs, off = [], 0
        while off + SEGMENT_HEADER.size <= len(d):
            _c, cmd, frg, _w, _ts, _sn, _una, ln = SEGMENT_HEADER.unpack_from(d, off)
            if cmd == IKCP_CMD_ACK:
                frgs.append(frg)
            off += SEGMENT_HEADER.size + ln
        out.append(frgs)
    return out


@contextlib.asynccontextmanager
async def _secure_session(
    server_agrees: bool = True, session: kcp.SessionConfig = HOLD
) -> AsyncIterator[kcp.KCPSession]:
    """A secure session dialled with ``session`` to a listener that agrees to held acks or not."""
    async with contextlib.AsyncExitStack() as stack:
        lis = await kcp.listen(
            "127.0.0.1", 0, kcp.SecureWire(key=PSK, config=SecureConfig(held_acks=server_agrees))
        )
        stack.push_async_callback(lis.wait_closed)
        stack.callback(lis.close)
        s = await kcp.dial("127.0.0.1", lis.address[1], kcp.SecureWire(key=PSK), session=session)
        stack.callback(s.abort)
        yield s


async def _greeted(c: kcp.KCPSession, accepted: asyncio.Queue[kcp.KCPSession]) -> kcp.KCPSession:
    """The server's side of ``c``, once a first message crossed (the session is accepted)."""
    c.write(b"hi")
    srv = await asyncio.wait_for(accepted.get(), TIMEOUT)
    assert await asyncio.wait_for(srv.readexactly(2), TIMEOUT) == b"hi"
    return srv


class _Driver:
    """Feeds a session one peer segment at a time at a chosen time, and keeps what it sends."""

    def __init__(self, s: kcp.KCPSession) -> None:
        self.s = s
        self.ep = s._ep
        self.now = self.ep.timers.now_ms()
        self.sn = 0
        self.sent: list[bytes] = []
        eng = s._engine
        out = eng.output
        assert out is not None

        def tap(packet: bytes) -> None:
            self.sent.append(bytes(packet))
            out(packet)

        eng.output = tap

    def event(self, skip: int = 0) -> None:
        self.ep.flushq.clear()
        out: list[bytes] = []
        peer = KCP(self.s.conv, out.append)
        peer.nodelay(1, 10, 2, 1)
        peer.snd_nxt = peer.snd_una = self.sn + skip
        peer.send(b"event %d" % (self.sn + skip))
        peer.flush(self.now)
        if not skip:
            self.sn += 1
        self.s.feed(bytes(out[0]), self.now)
        self.s.after_input(self.now)

    def waiting(self) -> bool:
        return self.s not in self.ep.flushq and self.s._engine.acks_pending() == 1

    def held_until(self) -> int:
        """When the held ack goes alone; the session wakes by then (its near timer, or an earlier
        wake-up of its own: the path's timers)."""
        due = self.s._ack_due
        entries = [e for e in (self.s._near._timer_entry, self.s._timer_entry) if e != NO_ENTRY]
        assert entries and min(entry_due(e) for e in entries) <= due
        return due

    def flush(self) -> list[list[int]]:
        """Flush as the endpoint's tick does; the ACK frgs it sent."""
        before = len(self.sent)
        self.s.flush_now(self.now)
        return _ack_frgs(self.sent[before:])

    def timer(self, advance: int) -> list[list[int]]:
        before = len(self.sent)
        self.now += advance
        self.s._on_timer(self.now)
        return _ack_frgs(self.sent[before:])


async def test_a_receive_only_session_holds_its_lone_acks_and_pairs_them() -> None:
    async with _secure_session() as s:
        assert s._engine.hold_aware and s.config.ack_hold == 200
        d = _Driver(s)
        for i in range(kcp.session.LONE_ACKS):  # the usual delayed acks, going alone
            d.event()
            assert d.waiting()
            # the last of them tells the peer (frg 1) before any ack is held
            assert d.timer(5) == [[1 if i == kcp.session.LONE_ACKS - 1 else 0]]
        d.event()
        assert d.waiting()  # held: no flush at the end of the batch, a wake-up when the hold ends
        assert d.held_until() == d.now + s.config.ack_hold
        d.now += 30
        d.event()  # a second segment: both acks go at once, the first says it waited 30 ms
        assert s in d.ep.flushq
        assert d.flush() == [[1 + 30 // ACK_HOLD_UNIT, 1]]
        d.event()
        assert d.waiting()
        assert d.timer(s.config.ack_hold) == [[1 + s.config.ack_hold // ACK_HOLD_UNIT]]  # time up: alone
        assert s.counters.acks_held == 2


async def test_a_loss_sends_acks_at_once_and_holding_waits_for_a_quiet_link() -> None:
    async with _secure_session() as s:
        d = _Driver(s)
        for _ in range(kcp.session.LONE_ACKS):
            d.event()
            d.timer(5)
        d.event()
        assert d.waiting()
        d.now += 12
        d.event(skip=1)  # sn + 1 came, sn did not: a loss
        assert s in d.ep.flushq
        # the held ack says how long it waited, the other (frg 0) that acks no longer wait
        assert d.flush() == [[1 + 12 // ACK_HOLD_UNIT, 0]]
        d.event()  # the lost one, resent: the usual short delay again, not a hold
        assert d.waiting()
        assert d.timer(5) == [[0]]
        for _ in range(kcp.session.HOLD_QUIET - 2):  # quiet again only after HOLD_QUIET alone
            d.event()
            d.timer(5)
        d.event()
        assert d.timer(5) == [[1]]  # announcing
        d.event()
        assert d.waiting() and d.held_until() == d.now + s.config.ack_hold  # held


async def test_without_the_peers_agreement_acks_are_never_held() -> None:
    async with _secure_session(server_agrees=False) as s:
        assert not s._engine.hold_aware
        d = _Driver(s)
        for _ in range(kcp.session.LONE_ACKS):
            d.event()
            assert d.timer(5) == [[0]]
        for _ in range(4):
            d.event()
            assert s in d.ep.flushq  # a subscriber's lone acks go at the end of the batch
            assert d.flush() == [[0]]


async def test_a_subscriber_pair_over_loopback_sends_fewer_acks_and_no_ack_looks_lost() -> None:
    """The server writes 30 events 40 ms apart (beyond its RTO floor, so a held ack the server
    did not allow for would look lost) to a client that only reads."""

    async def run(agree: bool) -> tuple[int, int, int]:
        accepted: asyncio.Queue[kcp.KCPSession] = asyncio.Queue()
        wire = kcp.SecureWire(key=PSK, config=SecureConfig(held_acks=agree))
        lis = await kcp.listen("127.0.0.1", 0, wire, on_accept=accepted.put)
        try:
            c = await kcp.dial("127.0.0.1", lis.address[1], kcp.SecureWire(key=PSK), session=HOLD)
            try:
                srv = await _greeted(c, accepted)
                sent_before = c.counters.out_pkts
                extra_seen = 0
                for i in range(30):
                    srv.write(b"event %02d" % i)
                    assert await asyncio.wait_for(c.readexactly(8), TIMEOUT) == b"event %02d" % i
                    extra_seen = max(extra_seen, srv._engine.rto_extra)
                    await asyncio.sleep(0.04)  # the publisher's pace, not a synchronisation
                await asyncio.wait_for(srv.drain(), TIMEOUT)
                retrans = srv.counters.retrans_segs
                return c.counters.out_pkts - sent_before, retrans, extra_seen
            finally:
                c.abort()
        finally:
            lis.close()
            await lis.wait_closed()

    held, held_retrans, extra = await run(True)
    plain, plain_retrans, no_extra = await run(False)
    assert extra == ACK_HOLD_MAX and no_extra == 0
    assert held_retrans == 0 and plain_retrans == 0
    # every event's ack went alone without holding; with it, after LONE_ACKS, one per two events
    assert plain >= 30
    assert held <= kcp.session.LONE_ACKS + 30 // 2 + 4, (held, plain)


async def test_by_default_a_session_never_holds_but_still_reads_its_peers_holds() -> None:
    async with _secure_session(session=kcp.SessionConfig()) as s:
        assert s.config.ack_hold == 0 and s._engine.hold_aware
        d = _Driver(s)
        for _ in range(kcp.session.LONE_ACKS + 4):
            d.event()
            if d.waiting():  # the short delay, then alone (never frg >= 1)
                assert d.timer(5) == [[0]]
            else:
                assert d.flush() == [[0]]
        assert s.counters.acks_held == 0


async def test_a_push_lost_while_holding_stops_the_holding_and_nothing_is_lost() -> None:
    """Events 15 ms apart through a relay; once the subscriber holds, one event is lost on the way
    down (the relay drops everything for that one datagram): the next shows the gap, the acks go at
    once, the server resends, every event arrives in order, and the subscriber holds no more."""
    accepted: asyncio.Queue[kcp.KCPSession] = asyncio.Queue()
    lis = await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key=PSK), on_accept=accepted.put)
    relay = LossyRelay(("127.0.0.1", 0), ("127.0.0.1", lis.address[1]), delay=2.0, seed=3)
    await relay.start()
    loop = asyncio.get_running_loop()
    try:
        c = await kcp.dial("127.0.0.1", relay.address[1], kcp.SecureWire(key=PSK), session=HOLD)
        try:
            srv = await _greeted(c, accepted)
            sent = 0

            def event() -> None:
                nonlocal sent
                srv.write(b"event %03d" % sent)
                sent += 1

            while c.counters.acks_held < 3 and sent < 200:  # bounded: holding starts after 8
                event()
                await asyncio.sleep(0.015)  # the publisher's pace
            assert c.counters.acks_held >= 3
            relay.loss = (0.0, 1.0)  # the next datagram down is lost
            event()
            deadline = loop.time() + TIMEOUT
            while not relay.stats["down_dropped"] and loop.time() < deadline:
                await asyncio.sleep(0.001)
            relay.loss = (0.0, 0.0)
            assert relay.stats["down_dropped"] == 1
            for _ in range(10):
                event()
                await asyncio.sleep(0.015)
            got = await asyncio.wait_for(c.readexactly(9 * sent), TIMEOUT)
            assert got == b"".join(b"event %03d" % i for i in range(sent))
            assert c._engine.disorder >= 1 and srv.counters.retrans_segs >= 1
            assert c._lone_acks < kcp.session.LONE_ACKS  # holding stopped at the loss
        finally:
            c.abort()
    finally:
        await relay.close()
        lis.close()
        await lis.wait_closed()


async def test_hold_acks_is_refused_without_the_peers_agreement_or_over_an_own_setting() -> None:
    async with _secure_session() as s:  # its own ack_hold (200) wins
        assert s.hold_acks(100) is False and s.config.ack_hold == 200
    async with _secure_session(server_agrees=False, session=kcp.SessionConfig()) as s:
        assert s.hold_acks(100) is False
    async with _secure_session(session=kcp.SessionConfig()) as s:
        assert s.hold_acks(0) is False and s.hold_acks(251) is False
        assert s.hold_acks(100) is True  # what a kcprpc server's WELCOME asks
        d = _Driver(s)
        for _ in range(kcp.session.LONE_ACKS + 1):
            d.event()
            d.timer(5)
        d.event()
        assert d.waiting() and d.held_until() == d.now + 100


async def test_a_hold_asked_once_the_session_acks_at_once_is_announced_before_any_ack_waits() -> None:
    async with _secure_session(session=kcp.SessionConfig()) as s:
        d = _Driver(s)
        for _ in range(kcp.session.LONE_ACKS):  # a subscriber already: its lone acks go at once
            d.event()
            d.timer(5)
        d.event()
        assert s in d.ep.flushq and d.flush() == [[0]]
        assert s.hold_acks(100) is True
        d.event()  # the next lone ack waits the short delay and tells the peer
        assert d.waiting() and d.timer(5) == [[1]]
        d.event()
        assert d.waiting() and d.held_until() == d.now + 100
    async with _secure_session(session=kcp.SessionConfig(ack_delay=0, ack_hold=100)) as s:
        d = _Driver(s)  # without delayed acks nothing tells the peer: acks go at once, never held
        for _ in range(kcp.session.LONE_ACKS + 4):
            d.event()
            assert s in d.ep.flushq and d.flush() == [[0]]
        assert s.counters.acks_held == 0
