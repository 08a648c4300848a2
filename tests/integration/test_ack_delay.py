"""``SessionConfig.ack_delay``: an ack with nothing to ride with waits for data going the same way
(a reply, a PONG), so one datagram carries both; with nothing to ride with it goes alone when the
delay is up (docs/tuning.md, "Delayed acks")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

import kcp
import kcp.session
from kcp.engine import KCP
from kcp.errors import KCPUsageError
from kcp.timers import NO_ENTRY, entry_due


def _data_packets(conv: int, payload: bytes, now: int) -> list[bytes]:
    """The datagrams a peer sends for ``payload`` (no congestion window: all segments at once)."""
    out: list[bytes] = []
    peer = KCP(conv, out.append)
    peer.nodelay(1, 10, 2, 1)
    peer.send(payload)
    peer.update(now)
    peer.flush(now)
    return [bytes(p) for p in out]


@contextlib.asynccontextmanager
async def _session(ack_delay: int) -> AsyncIterator[kcp.KCPSession]:
    lis = await kcp.listen("127.0.0.1", 0)
    s = await kcp.dial("127.0.0.1", lis.address[1], session=kcp.SessionConfig(ack_delay=ack_delay))
    try:
        yield s
    finally:
        s.abort()
        lis.close()
        await lis.wait_closed()


@pytest.mark.parametrize("ack_delay", [0, 5])
async def test_an_ack_rides_with_the_reply_written_within_the_delay(ack_delay: int) -> None:
    async with _session(ack_delay) as s:
        ep = s._ep
        now = ep.timers.now_ms()
        ep.flushq.clear()
        sent = s.counters.out_pkts
        (packet,) = _data_packets(s.conv, b"request", now)
        s.feed(packet, now)
        s.after_input(now)
        if ack_delay:
            assert s not in ep.flushq  # the ack waits for data to ride with
        else:
            assert ep.flushq.count(s) == 1
            s.flush_now(now)  # the ack goes alone
        s.write(b"reply")
        s.flush_now(now)
        assert s._engine.acks_pending() == 0
        # ack and reply: one datagram with the delay, two without
        assert s.counters.out_pkts - sent == (1 if ack_delay else 2)
        s._on_timer(now + 10)  # nothing waits any more: the timer sends no lone ack
        assert s.counters.out_pkts - sent == (1 if ack_delay else 2)


async def test_a_delayed_ack_with_nothing_to_ride_with_goes_alone_when_the_delay_is_up() -> None:
    async with _session(5) as s:
        ep = s._ep
        now = ep.timers.now_ms()
        sent = s.counters.out_pkts
        (packet,) = _data_packets(s.conv, b"event", now)
        s.feed(packet, now)
        s.after_input(now)
        assert s._engine.acks_pending() == 1 and s.counters.out_pkts == sent
        entry = s._near._timer_entry  # a near wake-up (kcp.session_timing.NearWake)
        assert entry != NO_ENTRY and entry_due(entry) <= now + 5  # the session wakes for them
        s._on_timer(now + 5)
        assert s._engine.acks_pending() == 0 and s.counters.out_pkts == sent + 1


async def test_a_second_ack_goes_at_once_so_bulk_flows_keep_their_ack_clock() -> None:
    async with _session(5) as s:
        ep = s._ep
        now = ep.timers.now_ms()
        ep.flushq.clear()
        out = _data_packets(s.conv, b"x" * 3000, now)  # three segments
        assert len(out) >= 2
        s.feed(out[0], now)
        s.after_input(now)
        assert s not in ep.flushq  # one lone ack waits
        for packet in out[1:]:
            s.feed(packet, now)
        s.after_input(now)
        assert ep.flushq.count(s) == 1  # two or more: flushed at the end of the batch


async def test_echo_with_delayed_acks_on_both_ends_uses_fewer_datagrams() -> None:
    async def run(ack_delay: int) -> int:
        cfg = kcp.SessionConfig(ack_delay=ack_delay)

        async def echo(sess: kcp.KCPSession) -> None:
            while data := await sess.read(100):
                sess.write(data)

        lis = await kcp.listen("127.0.0.1", 0, session=cfg, on_accept=echo)
        try:
            s = await kcp.dial("127.0.0.1", lis.address[1], session=cfg)
            try:
                for i in range(50):
                    msg = b"call %d" % i
                    s.write(msg)
                    got = b""
                    while len(got) < len(msg):
                        got += await asyncio.wait_for(s.read(100), 5)
                    assert got == msg
                return s.counters.out_pkts
            finally:
                s.abort()
        finally:
            lis.close()
            await lis.wait_closed()

    plain, delayed = await run(0), await run(5)
    # without a delay every request's and reply's ack goes alone; with one, most ride with the
    # next request (client) or with the reply (server)
    assert plain >= 95
    assert delayed <= 0.7 * plain, (plain, delayed)


async def test_a_receive_only_session_stops_delaying_its_lone_acks_and_probes_again() -> None:
    """A subscriber's acks never find data to ride with: after LONE_ACKS lone ones in a row its
    acks go at the end of the receive batch (one send with the other sessions'), with no timer;
    every LONE_ACK_PROBE-th waits again, and one that rides turns the delay back on."""
    async with _session(5) as s:
        ep = s._ep
        now = ep.timers.now_ms()
        sn = 0

        def event() -> None:
            nonlocal sn
            ep.flushq.clear()
            out: list[bytes] = []
            peer = KCP(s.conv, out.append)
            peer.nodelay(1, 10, 2, 1)
            peer.snd_nxt = peer.snd_una = sn  # the peer's next segment (receive order)
            peer.rcv_nxt = s._engine.snd_nxt  # and its una acknowledges what the session sent
            peer.send(b"event %d" % sn)
            peer.update(now)
            peer.flush(now)
            sn += 1
            s.feed(bytes(out[0]), now)
            s.after_input(now)

        def delayed() -> bool:
            return s not in ep.flushq and s._engine.acks_pending() == 1

        for _ in range(kcp.session.LONE_ACKS):
            event()
            assert delayed()
            now += 5
            s._on_timer(now)  # nothing to ride with: it goes alone
            assert s._engine.acks_pending() == 0
        for _ in range(kcp.session.LONE_ACK_PROBE):
            event()
            assert ep.flushq.count(s) == 1  # at the end of the batch, no wait
            s.flush_now(now)
        event()
        assert delayed()  # the probe: this one waits again
        s.write(b"reply")  # and data goes its way: the ack rides, the delay is back
        s.flush_now(now)
        assert s._engine.acks_pending() == 0
        for _ in range(kcp.session.LONE_ACKS + 2):
            event()
            assert delayed()
            s.write(b"reply")
            s.flush_now(now)


def test_ack_delay_is_bounded() -> None:
    with pytest.raises(KCPUsageError, match="ack_delay"):
        kcp.SessionConfig(ack_delay=-1)
    with pytest.raises(KCPUsageError, match="ack_delay"):
        kcp.SessionConfig(ack_delay=101)
