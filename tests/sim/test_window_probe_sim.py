"""A slow reader over a lossy link (kcp.simlink, seeded, virtual time): the receiving application
reads for 300 ms out of every 900, so its receive window closes and reopens again and again, and
the sender waits on the window update (WINS) the receiver sends when it reads again. At 5 % loss
some of those updates are lost. With ikcp's window probes the sender then stalls for the 7 s
until its first probe; with a session's (``loss_recovery="adaptive"``: 100 ms, backing off to
1 s) the longest gap between two reads stays under a second."""

from __future__ import annotations

import pytest

from kcp.config import SessionConfig
from kcp.session_setup import make_engine
from kcp.simlink import SimLink
from kcp.stats import Counters


def slow_reader(
    config: SessionConfig,
    *,
    seed: int,
    loss: float = 0.05,
    ms: int = 40_000,
    receiver: SessionConfig | None = None,
) -> tuple[int, int]:
    """(bytes read, the longest gap in ms between two reads) over ``ms`` of virtual time; the
    sender runs ``config``, the receiver ``receiver`` (default: the same)."""
    ab = SimLink(seed=seed, loss=loss, delay=20)
    ba = SimLink(seed=seed + 1, loss=loss, delay=20)
    s = make_engine(1, config, 0, Counters())
    r = make_engine(1, receiver or config, 0, Counters())
    for e in (s, r):
        e.wndsize(128, 128)
    s.output, r.output = ab.send, ba.send
    chunk = bytes(1000)
    got = last = gap = 0
    for now in range(ms):
        ab.now = ba.now = now
        for d in ab.deliver(now):
            r.input(d, now)
        if (now // 300) % 3 == 0:  # reading: 300 ms of every 900
            while (m := r.recv()) is not None:
                got += len(m)
                gap = max(gap, now - last)
                last = now
        r.update(now)
        for d in ba.deliver(now):
            s.input(d, now)
        while s.waitsnd() < 256:
            s.send(chunk)
        s.update(now)
    return got, gap


@pytest.mark.parametrize("seed", [1, 3])
def test_a_lost_window_update_costs_under_a_second_not_seven(seed: int) -> None:
    ikcp_got, ikcp_gap = slow_reader(SessionConfig(loss_recovery="ikcp"), seed=seed)
    got, gap = slow_reader(SessionConfig(), seed=seed)
    assert ikcp_gap > 6_000  # ikcp's first probe: 7 s after the window closed
    assert gap < 1_000
    assert got > 1.2 * ikcp_got


def test_without_loss_the_probes_change_nothing() -> None:
    assert slow_reader(SessionConfig(), seed=1, loss=0.0, ms=10_000) == slow_reader(
        SessionConfig(loss_recovery="ikcp"), seed=1, loss=0.0, ms=10_000
    )


@pytest.mark.parametrize("seed", [1, 3, 5])
def test_a_stock_sender_hears_a_lost_window_update_again(seed: int) -> None:
    """The sender is ikcp's (kcp-go's probes: 7 s, then 10.5 s ...), the receiver a session's
    (``loss_recovery="adaptive"``): it repeats the update that reopened its window after an RTO,
    then two and four, so the sender's wait for a lost one is about an RTO, not its first probe."""
    stock = SessionConfig(loss_recovery="ikcp")
    base_got, base_gap = slow_reader(stock, seed=seed)
    got, gap = slow_reader(stock, seed=seed, receiver=SessionConfig())
    assert base_gap > 6_000
    assert gap < 2_000
    assert got > 1.2 * base_got
