"""Window probes (WASK) while the peer's receive window is 0. ikcp waits 7 s before the first and
then half as long again each time, up to 120 s; when the peer's one window update (WINS) is lost,
that is how long a sender stalls. A session with ``loss_recovery="adaptive"`` (the default) probes
after 100 ms, then backs off by half each time up to 1 s. Virtual time."""

from __future__ import annotations

import itertools

from kcp.config import SessionConfig
from kcp.engine import (
    IKCP_CMD_ACK,
    IKCP_CMD_PUSH,
    IKCP_CMD_WASK,
    IKCP_CMD_WINS,
    IKCP_PROBE_INIT,
    IKCP_PROBE_LIMIT,
    KCP,
    SEGMENT_HEADER,
)
from kcp.session_setup import WINDOW_PROBE_INIT, WINDOW_PROBE_LIMIT, WINDOW_UPDATE_REPEATS, make_engine
from kcp.stats import Counters

CONV = 5


def _probe_times(eng: KCP, out: list[bytes], until: int) -> list[int]:
    """The times (ms after the window closed) of the WASKs ``eng`` sends, its peer's window 0."""
    eng.nodelay(1, 10, 2, 1)
    eng.send(b"x")
    eng.update(0)
    # the peer acknowledges the segment and reports a full receive window: 0
    eng.input(SEGMENT_HEADER.pack(CONV, IKCP_CMD_ACK, 0, 0, 0, 0, 1, 0), 5)
    assert eng.rmt_wnd == 0
    eng.send(b"waiting for the window")
    out.clear()
    times = []
    for now in range(10, until, 10):
        eng.update(now)
        for d in out:
            if d[4] == IKCP_CMD_WASK:
                times.append(now)
        out.clear()
    return times


def test_the_engine_keeps_ikcps_probe_timing_by_default() -> None:
    out: list[bytes] = []
    eng = KCP(CONV, out.append)
    assert (eng.probe_init, eng.probe_limit) == (IKCP_PROBE_INIT, IKCP_PROBE_LIMIT)
    times = _probe_times(eng, out, 30_000)
    assert times == [7010, 17510], times  # 7 s, then 10.5 s: ikcp's


def test_a_session_probes_after_100_ms_then_backs_off_to_one_second() -> None:
    out: list[bytes] = []
    eng = make_engine(CONV, SessionConfig(), 0, Counters())
    eng.output = out.append
    assert (eng.probe_init, eng.probe_limit) == (WINDOW_PROBE_INIT, WINDOW_PROBE_LIMIT) == (100, 1000)
    times = _probe_times(eng, out, 6_000)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert times[0] <= 120
    assert gaps[:5] == [150, 230, 340, 510, 760], gaps  # half again each time (at the 10 ms flushes)
    assert set(gaps[6:]) == {1000}


def test_ikcp_loss_recovery_keeps_ikcps_probes() -> None:
    eng = make_engine(CONV, SessionConfig(loss_recovery="ikcp"), 0, Counters())
    assert (eng.probe_init, eng.probe_limit) == (IKCP_PROBE_INIT, IKCP_PROBE_LIMIT)


# -- the receiver's side: repeating the window update (WINS) that reopened a full window ---------


def _full_receiver(config: SessionConfig | None, out: list[bytes]) -> KCP:
    """A receiver whose window (ikcp's smallest: 128 segments) the peer filled, nothing read yet."""
    eng = make_engine(CONV, config, 0, Counters()) if config is not None else KCP(CONV)
    eng.output = out.append
    eng.nodelay(1, 10, 2, 1)
    eng.wndsize(32, 128)
    for sn in range(128):
        eng.input(SEGMENT_HEADER.pack(CONV, IKCP_CMD_PUSH, 0, 32, 0, sn, 0, 1) + b"m", 0)
    eng.update(0)
    assert len(eng.rcv_queue) == eng.rcv_wnd == 128  # the window is full
    out.clear()
    return eng


def _wins_times(eng: KCP, out: list[bytes], until: int, data_at: int = -1) -> list[int]:
    """Read everything at 10 ms (the window reopens); the times of the WINS sent after, with a
    data segment from the sender at ``data_at`` (-1: none)."""
    times = []
    for now in range(10, until, 10):
        if now == 10:
            while eng.recv() is not None:
                pass
        if now == data_at:
            eng.input(SEGMENT_HEADER.pack(CONV, IKCP_CMD_PUSH, 0, 32, now, 128, 0, 1) + b"n", now)
        eng.update(now)
        times += [now for d in out if d[4] == IKCP_CMD_WINS]
        out.clear()
    return times


def test_the_engine_sends_the_window_update_once_by_default() -> None:
    out: list[bytes] = []
    eng = _full_receiver(None, out)
    assert eng.wins_repeat == 0
    assert _wins_times(eng, out, 5_000) == [10]  # ikcp's: once


def test_a_session_repeats_the_window_update_after_an_rto_then_twice_as_long() -> None:
    out: list[bytes] = []
    eng = _full_receiver(SessionConfig(), out)
    assert eng.wins_repeat == WINDOW_UPDATE_REPEATS == 3
    rto = eng.rx_rto
    times = _wins_times(eng, out, 10_000)
    assert len(times) == 1 + 3  # the update and three repeats, then nothing
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert [round(g / rto) for g in gaps] == [1, 2, 4], (gaps, rto)
    assert not eng.wins_pending()


def test_the_repeats_stop_when_data_comes() -> None:
    out: list[bytes] = []
    eng = _full_receiver(SessionConfig(), out)
    times = _wins_times(eng, out, 10_000, data_at=50)  # the sender heard the first update
    assert times == [10]
    assert not eng.wins_pending()
