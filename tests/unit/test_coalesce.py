"""Read coalescing (kcp.coalesce): when a busy socket is read on a timer, and when it goes back to
readiness. Time is given, as the endpoint gives it."""

from __future__ import annotations

import pytest

from kcp import IOOptions, KCPUsageError
from kcp.coalesce import ReadCoalescer


def test_wake_ups_faster_than_the_timer_would_read_switch_to_timed_reads() -> None:
    c = ReadCoalescer(1, window=0.05)
    assert c.hold == 0.001
    assert c.enter_wakes == 62  # 1.25 wake-ups per ms, over 50 ms
    t = 100.0
    for i in range(62):
        assert not c.woke(t + i * 0.0005)  # 2,000 a second, but not yet past the window's count
    assert c.woke(t + 62 * 0.0005)
    assert c.polled and c.entered == 1


def test_wake_ups_spread_over_windows_stay_on_readiness() -> None:
    c = ReadCoalescer(1, window=0.05)
    t = 0.0
    for _ in range(1000):  # 1,000 a second: one per ms, below 1.25 per ms
        assert not c.woke(t)
        t += 0.001
    assert not c.polled and c.entered == 0


def test_timed_reads_go_on_while_they_find_a_datagram_each() -> None:
    c = ReadCoalescer(2, window=0.05)
    for i in range(c.enter_wakes + 1):
        c.woke(i * 0.0001)
    t = c.enter_wakes * 0.0001
    for i in range(1, 200):  # 8 windows of reads that find one datagram each
        assert c.read(t + i * c.hold, 1)
    assert c.polled and c.left == 0


def test_timed_reads_that_find_less_than_one_datagram_each_go_back_to_readiness() -> None:
    c = ReadCoalescer(1, window=0.05)
    for i in range(c.enter_wakes + 1):
        c.woke(i * 0.0001)
    t = 1.0
    got = [1, 0] * 30  # half a datagram per read
    kept = [c.read(t + i * 0.001, n) for i, n in enumerate(got)]
    assert kept[:50] == [True] * 50  # decided once a window is over, not at the first empty read
    assert False in kept
    assert not c.polled and c.left == 1
    # and back on readiness, wake-ups count afresh
    assert not c.woke(t + 0.1)


def test_reset_forgets_the_window() -> None:
    c = ReadCoalescer(1, window=10.0)
    for i in range(c.enter_wakes):
        c.woke(i * 0.001)
    c.reset()
    assert not c.woke(1.0)  # the count began again
    assert not c.polled


@pytest.mark.parametrize("hold", [0, -1, 1.5, "1"])
def test_a_bad_hold_is_refused(hold: object) -> None:
    with pytest.raises(ValueError, match="hold_ms"):
        ReadCoalescer(hold)  # type: ignore[arg-type]


@pytest.mark.parametrize("ms", [-1, 51, 0.5, True])
def test_io_options_refuse_a_bad_read_coalesce_ms(ms: object) -> None:
    with pytest.raises(KCPUsageError, match="read_coalesce_ms"):
        IOOptions(read_coalesce_ms=ms)  # type: ignore[arg-type]
