"""The session's colder parts, without a socket: kcp.session_datagrams, _setup, _timing."""

from __future__ import annotations

import asyncio

import pytest

from kcp.config import SessionConfig
from kcp.errors import ConnectionClosedError, KCPUsageError
from kcp.session_datagrams import DatagramQueue
from kcp.session_setup import KCPGO_INITIAL_RMT_WND, check_close_code, make_engine, water_marks
from kcp.session_timing import dead_link_error, next_wake
from kcp.stats import Counters


def test_datagram_queue_drops_the_oldest_when_full_and_counts_it() -> None:
    async def main() -> None:
        q = DatagramQueue(2, asyncio.get_running_loop())
        for d in (b"a", b"b", b"c"):
            q.push(d)
        assert len(q) == 2 and q.dropped == 1
        assert await q.get(lambda: None) == b"b"
        assert await q.get(lambda: None) == b"c"

    asyncio.run(main())


def test_datagram_queue_wakes_its_waiter_and_refuses_a_second_one() -> None:
    async def main() -> None:
        q = DatagramQueue(4, asyncio.get_running_loop())
        first = asyncio.ensure_future(q.get(lambda: None))
        await asyncio.sleep(0)  # let it start waiting
        with pytest.raises(KCPUsageError, match="already waiting in dgram_waiter"):
            await q.get(lambda: None)
        q.push(b"x")
        assert await first == b"x"

    asyncio.run(main())


def test_datagram_queue_raises_what_check_open_raises_once_woken() -> None:
    async def main() -> None:
        q = DatagramQueue(4, asyncio.get_running_loop())
        ended = False

        def check_open() -> None:
            if ended:
                raise ConnectionClosedError("ended")

        waiter = asyncio.ensure_future(q.get(check_open))
        await asyncio.sleep(0)
        ended = True
        q.wake()
        with pytest.raises(ConnectionClosedError, match="ended"):
            await waiter

    asyncio.run(main())


def test_make_engine_applies_the_config_and_the_overhead() -> None:
    cfg = SessionConfig(mtu=1400, snd_wnd=64, rcv_wnd=256, stream=True)
    eng = make_engine(7, cfg, 40, Counters())
    assert (eng.conv, eng.mtu, eng.snd_wnd, eng.rcv_wnd, eng.stream) == (7, 1360, 64, 256, 1)
    assert eng.rmt_wnd == KCPGO_INITIAL_RMT_WND
    with pytest.raises(KCPUsageError, match="mtu too small"):
        make_engine(7, SessionConfig(mtu=100), 90, Counters())


def test_water_marks_follow_the_window_that_sends() -> None:
    eng = make_engine(1, SessionConfig(snd_wnd=64), 0, Counters())
    # "ikcp" sends its whole send window: twice that
    assert water_marks(SessionConfig(snd_wnd=64, congestion="ikcp"), eng) == (128, 64)
    # "bbr": 256 segments, or twice the controller's window once a bulk flow has a larger one
    assert water_marks(SessionConfig(snd_wnd=64), eng) == (256, 128)
    assert water_marks(SessionConfig(snd_wnd=64), eng, cwnd=100) == (256, 128)
    assert water_marks(SessionConfig(snd_wnd=64), eng, cwnd=400) == (800, 400)
    # a configured write buffer wins
    assert water_marks(SessionConfig(snd_wnd=64, write_buffer=10), eng, cwnd=400) == (10, 5)


def test_check_close_code_bounds() -> None:
    check_close_code(0)
    check_close_code(0xFFFF)
    with pytest.raises(KCPUsageError, match=r"0\.\.65535"):
        check_close_code(0x10000)


def test_next_wake_is_the_earliest_retransmission_with_ack_nodelay() -> None:
    eng = make_engine(1, SessionConfig(nodelay=0, interval=100), 0, Counters())
    eng.output = lambda data: None
    eng.rmt_wnd = 32
    eng.send(b"x")
    eng.flush(1000)
    resend = min(seg.resendts for seg in eng.snd_buf)
    assert next_wake(eng, True, 1000) == resend
    assert resend - 1000 > 100  # later than ikcp's interval cadence...
    assert next_wake(eng, False, 1000) == eng.check(1000)  # ...which it keeps without ack_nodelay
    assert next_wake(eng, True, resend + 1) == resend + 1  # overdue: now


def test_dead_link_error_names_the_session() -> None:
    eng = make_engine(9, SessionConfig(), 0, Counters())
    msg = str(dead_link_error(eng, ("127.0.0.1", 5)))
    assert "KCP session 9" in msg and "127.0.0.1" in msg and "dead link" in msg
