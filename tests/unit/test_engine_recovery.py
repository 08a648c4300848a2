"""The engine's sparse-flight loss recovery (issue 15): spaced copies per recovery round, no
backoff for the first rounds then a capped one, the adaptive choice of copies, and what it does
to call latency on a seeded simulated link with burst loss (Gilbert-Elliott, as linkemu)."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest

from kcp.config import SessionConfig
from kcp.engine import KCP, SPARSE_RTO_CAP, lead_copies_for, recovery_copies_for
from kcp.errors import KCPUsageError
from kcp.session_setup import AUTO_LEAD_MAX, SPARSE_FLIGHT, make_engine
from kcp.session_stats import session_stats
from kcp.simlink import SimLink, call_latencies
from kcp.stats import Counters

HDR = struct.Struct("<IBBHIIII")


def sparse(copies: int = 3, gap: int = 10, lead: int = 0) -> KCP:
    eng = KCP(1, None)
    eng.nodelay(1, 10, 2, 1)
    eng.counters = Counters()
    eng.recovery_flight = 8
    eng.recovery_copies = copies
    eng.recovery_gap = gap
    eng.recovery_lead = lead
    return eng


def sends(eng: KCP, until: int) -> list[int]:
    """Run ``eng`` on a link that loses everything until ``until`` ms; the times a PUSH left."""
    times: list[int] = []
    now = 0
    while now <= until:
        eng.update(now)
        for d in eng.take_output():
            if HDR.unpack_from(d)[1] == 81:
                times.append(now)
        now = min(eng.check(now), until + 1) if eng.check(now) > now else now + 1
    return times


def test_a_lost_small_flight_is_resent_as_spaced_copies_without_backoff() -> None:
    eng = sparse(copies=3, gap=10)
    eng.send(b"x" * 64)
    times = sends(eng, 700)
    rto = eng.rx_rto  # no RTT sample: the initial RTO
    assert times[0] == 0
    # rounds 1..3: 3 copies 10 ms apart, each round one RTO after the previous round's last copy
    r1 = rto
    r2 = r1 + 20 + rto
    r3 = r2 + 20 + rto
    assert times[1:10] == [r1, r1 + 10, r1 + 20, r2, r2 + 10, r2 + 20, r3, r3 + 10, r3 + 20]
    c = eng.counters
    assert c is not None and c.lost_segs == 3 and c.copy_segs == 6
    assert eng.recovery_rounds[:3] == [1, 1, 1]


def test_after_three_rounds_the_backoff_is_capped() -> None:
    eng = sparse(copies=1)
    eng.send(b"x")
    times = sends(eng, 20_000)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    rto = eng.rx_rto
    assert gaps[:4] == [rto] * 4  # the first send and three quick rounds, an RTO apart
    assert gaps[4] > rto and max(gaps) == SPARSE_RTO_CAP * rto  # grows, then stays capped


def test_a_bulk_flight_keeps_ikcps_retransmission() -> None:
    eng = sparse(copies=4)
    for _ in range(SPARSE_FLIGHT + 4):  # more than a small flight in the window
        eng.send(b"y" * 100)
    plain = KCP(1, None)
    plain.nodelay(1, 10, 2, 1)
    for _ in range(SPARSE_FLIGHT + 4):
        plain.send(b"y" * 100)
    assert sends(eng, 3000) == sends(plain, 3000)
    assert eng.counters is not None and eng.counters.copy_segs == 0


def test_lead_copies_follow_a_new_small_flight() -> None:
    eng = sparse(copies=1, gap=20, lead=2)  # (a gap is rounded up to the flush interval, 10 ms)
    eng.send(b"z")
    times = sends(eng, 50)
    assert times == [0, 20, 40]
    assert eng.counters is not None and eng.counters.copy_segs == 2 and eng.counters.lost_segs == 0


def test_the_dead_link_still_ends_a_sparse_flight() -> None:
    eng = sparse(copies=2)
    eng.dead_link = 6
    eng.send(b"x")
    sends(eng, 30_000)
    assert eng.state == -1


@pytest.mark.parametrize(
    ("rounds", "failed", "copies", "expect"),
    [
        (200, 15, 1, 2),  # random loss (~7 % of rounds lost): one more copy makes 0.5 %
        (200, 0, 6, 4),  # nothing lost with 6: come down, a step at a time
        (40, 22, 2, 6),  # bursts (a copy lost after a loss 3 times in 4): as many as allowed
        (40, 40, 1, 6),  # every round lost
        (200, 0, 1, 1),  # a clean link: none
    ],
)
def test_recovery_copies_for(rounds: int, failed: int, copies: int, expect: int) -> None:
    assert recovery_copies_for(rounds, failed, copies, 6) == expect


def pair(config: SessionConfig, link: dict[str, Any], seed: int) -> tuple[KCP, KCP, SimLink, SimLink]:
    """Two engines built as sessions build them, wired to a seeded simulated link (40 ms each way)."""
    a = make_engine(1, config, 0, Counters())
    b = make_engine(1, config, 0, Counters())
    ab = SimLink(seed=seed, delay=40, **link)
    ba = SimLink(seed=seed + 1, delay=40, **link)
    a.output = ab.send
    b.output = ba.send
    return a, b, ab, ba


def calls(n: int, link: dict[str, Any], config: SessionConfig, seed: int = 3) -> tuple[list[int], int]:
    """``n`` sequential 64-byte calls over :func:`pair`; the latencies and the datagrams sent."""
    a, b, ab, ba = pair(config, link, seed)
    lat = call_latencies(a, b, ab, ba, n)
    return sorted(lat), ab.sent + ba.sent


def p99(lat: list[int]) -> int:
    return lat[int(0.99 * len(lat))]


def test_burst_loss_p99_and_max_against_ikcp() -> None:
    ge = {"ge_p": 0.01, "ge_r": 0.25}  # linkemu's --ge-p 1 --ge-r 25: bursts of about 4
    fast, pkts = calls(1500, ge, SessionConfig())
    slow, ikcp_pkts = calls(1500, ge, SessionConfig(loss_recovery="ikcp"))
    assert p99(fast) * 3 <= p99(slow) and fast[-1] * 3 <= slow[-1]
    assert p99(fast) <= 300  # under 4 RTTs of 80 ms
    assert pkts <= 1.15 * ikcp_pkts  # the copies are paid only on losses


def test_a_clean_link_costs_nothing_and_random_loss_little() -> None:
    clean, pkts = calls(300, {}, SessionConfig())
    assert clean[-1] == 80 and pkts == 3 * 300  # request, answer with its ack, the last ack
    lossy, lossy_pkts = calls(1500, {"loss": 0.05}, SessionConfig())
    _, ikcp_pkts = calls(1500, {"loss": 0.05}, SessionConfig(loss_recovery="ikcp"))
    assert lossy_pkts <= 1.2 * ikcp_pkts
    assert p99(lossy) <= 200


def test_simlink_gilbert_elliott_loses_in_bursts() -> None:
    link = SimLink(seed=1, ge_p=0.01, ge_r=0.25)
    lost = []
    for i in range(40_000):
        before = link.lost
        link.send(b"p", now=i)
        lost.append(link.lost > before)
    rate = sum(lost) / len(lost)
    assert 0.03 < rate < 0.05  # p / (p + r) = 3.85 %
    runs = [0]
    for x in lost:
        if x:
            runs[-1] += 1
        elif runs[-1]:
            runs.append(0)
    mean_burst = sum(runs) / len([r for r in runs if r])
    assert 3 < mean_burst < 5  # 1 / r = 4


def test_session_config_checks_and_applies_the_recovery() -> None:
    with pytest.raises(KCPUsageError, match="loss_recovery"):
        SessionConfig(loss_recovery="fast")  # type: ignore[arg-type]
    with pytest.raises(KCPUsageError, match="max_copies"):
        SessionConfig(max_copies=0)
    eng = make_engine(1, SessionConfig(max_copies=4, copy_gap=7, lead_copies=1), 0, Counters())
    assert (eng.recovery_flight, eng.recovery_adaptive, eng.recovery_max_copies) == (SPARSE_FLIGHT, True, 4)
    assert (eng.recovery_gap, eng.recovery_lead) == (7, 1)
    assert make_engine(1, SessionConfig(loss_recovery="ikcp"), 0, Counters()).recovery_flight == 0


@pytest.mark.parametrize(
    ("samples", "failed", "current", "expect"),
    [
        (64, 0, 0, 0),  # a clean link: none
        (256, 0, 1, 0),  # ... and a clean run of a few hundred takes them away again
        (64, 0, 1, 1),  # ... but not a lucky few dozen
        (64, 6, 0, 1),  # about 5 % lost each way (9 % round trips): one copy makes 0.25 %
        (200, 1, 0, 0),  # about 0.25 % each way: not worth a copy
        (64, 30, 0, 1),  # about 27 % each way: up one step per pick ...
        (64, 30, 1, 1),  # ... but a second copy needs more samples
        (128, 60, 1, 2),  # ... then up to as many as allowed
        (256, 2, 1, 1),  # between the up and the down threshold: unchanged (hysteresis)
    ],
)
def test_lead_copies_for(samples: int, failed: int, current: int, expect: int) -> None:
    assert lead_copies_for(samples, failed, current, 2) == expect


def auto_pair(link: dict[str, Any], n: int, seed: int = 5) -> tuple[list[int], int, KCP]:
    a, b, ab, ba = pair(SessionConfig(lead_copies="auto"), link, seed)
    lat = sorted(call_latencies(a, b, ab, ba, n))
    return lat, ab.sent + ba.sent, a


def test_auto_lead_copies_follow_the_loss_seen() -> None:
    assert make_engine(1, SessionConfig(lead_copies="auto"), 0, Counters()).recovery_auto_lead == AUTO_LEAD_MAX
    clean, pkts, a = auto_pair({}, 300)
    assert clean[-1] == 80 and pkts == 3 * 300 and a.recovery_lead == 0  # nothing extra on a clean link
    lossy, lossy_pkts, a = auto_pair({"loss": 0.05}, 1500)
    fixed, _ = calls(1500, {"loss": 0.05}, SessionConfig(), seed=5)
    assert a.recovery_lead == 1
    stats = session_stats(Counters(), a, lambda out: None, read_buffered=0, datagrams_queued=0, datagrams_dropped=0)
    assert stats["lead_copies"] == 1 and stats["recovery_copies"] == a.recovery_copies
    assert p99(lossy) <= 100 < p99(fixed)  # a lost call no longer costs a second round trip
    assert lossy_pkts <= 2.1 * 3 * 1500
    # under bursts a copy right behind falls into the same burst: the lead stays off
    _, burst_pkts, a = auto_pair({"ge_p": 0.01, "ge_r": 0.25}, 1500)
    _, plain_pkts = calls(1500, {"ge_p": 0.01, "ge_r": 0.25}, SessionConfig(), seed=5)
    assert a.recovery_lead == 0 and burst_pkts <= 1.25 * plain_pkts


def test_auto_lead_copies_come_down_when_the_loss_stops() -> None:
    a, b, ab, ba = pair(SessionConfig(lead_copies="auto"), {"loss": 0.05}, 7)
    call_latencies(a, b, ab, ba, 600)
    assert a.recovery_lead == 1
    ab.loss = ba.loss = 0.0
    call_latencies(a, b, ab, ba, 100)
    assert a.recovery_lead == 1  # a lucky hundred is not enough
    call_latencies(a, b, ab, ba, 500)
    assert a.recovery_lead == 0 and b.recovery_lead == 0


def test_lead_copies_config() -> None:
    with pytest.raises(KCPUsageError, match="lead_copies"):
        SessionConfig(lead_copies="always")  # type: ignore[arg-type]
    with pytest.raises(KCPUsageError, match="lead_copies"):
        SessionConfig(lead_copies=9)
    assert make_engine(1, SessionConfig(lead_copies=2), 0, Counters()).recovery_auto_lead == 0
