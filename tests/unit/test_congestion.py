"""kcp.congestion.BBRLite on a fake clock against a simulated bottleneck (a rate and a FIFO queue
with tail drop): it finds the rate, keeps the queue short, ignores random loss, probes the RTT."""

from __future__ import annotations

import heapq
import random

import pytest

from kcp.config import SessionConfig
from kcp.congestion import MIN_PACED_RTT, BBRLite, CCState
from kcp.errors import KCPUsageError

MSS = 1376


class Bottleneck:
    """Sender → (rate-limited FIFO, tail drop at ``limit`` ms of queue) → ``delay`` ms → receiver,
    acks back after ``delay`` ms. Time in ms; rate in bytes per ms."""

    def __init__(self, rate: float, delay: int, limit: int = 200, loss: float = 0.0, seed: int = 1) -> None:
        self.rate, self.delay, self.limit, self.loss = rate, delay, limit, loss
        self.rng = random.Random(seed)
        self.busy = 0.0
        self.events: list[tuple[float, int, str, float]] = []  # (time, seq, kind, sent_at)
        self.seq = 0
        self.queue_delays: list[float] = []

    def send(self, now: int) -> None:
        self.seq += 1
        start = max(self.busy, float(now))
        if start - now > self.limit or self.rng.random() < self.loss:
            heapq.heappush(self.events, (now + 3 * self.delay, self.seq, "lost", float(now)))
            return
        self.queue_delays.append(start - now)
        self.busy = start + MSS / self.rate
        heapq.heappush(self.events, (self.busy + 2 * self.delay, self.seq, "ack", float(now)))

    def due(self, now: int) -> list[tuple[str, float]]:
        out = []
        while self.events and self.events[0][0] <= now:
            _, _, kind, sent = heapq.heappop(self.events)
            out.append((kind, sent))
        return out


def run(
    cc: BBRLite,
    link: Bottleneck,
    ms: int,
    *,
    app_limit: int | None = None,
    new_rate: tuple[int, float] | None = None,
) -> dict[str, float]:
    """Drive ``cc`` for ``ms``; returns the delivered rate (bytes/ms) over the last half and the
    queue-delay percentiles of the packets sent in it."""
    inflight = 0
    srtt = 0
    delivered_late = 0
    half = ms // 2
    q_mark = 0
    for now in range(ms):
        if new_rate is not None and now == new_rate[0]:
            link.rate = new_rate[1]
        acked = 0
        for kind, sent in link.due(now):
            inflight -= 1
            if kind == "ack":
                acked += MSS
                rtt = int(now - sent)
                srtt = rtt if not srtt else (7 * srtt + rtt) // 8
            else:
                cc.on_loss(now, 1)
        if acked:
            cc.on_ack(now, acked, srtt, inflight, app_limited=app_limit is not None)
            if now >= half:
                delivered_late += acked
        if now == half:
            q_mark = len(link.queue_delays)
        limit = cc.cwnd if app_limit is None else min(cc.cwnd, app_limit)
        while inflight < limit and (cc.pacing_rate == 0 or cc.quota(now) > 0):
            link.send(now)
            cc.on_send(now, MSS)
            inflight += 1
    q = sorted(link.queue_delays[q_mark:])
    return {
        "rate": delivered_late / (ms - half),
        "q50": q[len(q) // 2],
        "q99": q[int(len(q) * 0.99)],
    }


@pytest.mark.parametrize("mbit", [2, 10, 40])
def test_converges_to_the_bottleneck_and_keeps_the_queue_short(mbit: int) -> None:
    rate = mbit * 1e6 / 8 / 1000
    cc = BBRLite(MSS)
    r = run(cc, Bottleneck(rate, delay=20), 8000)
    assert cc.state is CCState.PROBE_BW
    assert 0.9 * rate <= cc.bw <= 1.15 * rate
    assert r["rate"] >= 0.9 * rate
    assert r["q99"] < 40  # below one base RTT (40 ms); ikcp's fixed window would sit at the limit
    assert r["q50"] < 10
    assert 40 <= cc.min_rtt <= 41 + MSS / rate  # the base RTT plus one packet's serialisation


def test_random_loss_is_not_a_congestion_signal() -> None:
    rate = 10e6 / 8 / 1000
    cc = BBRLite(MSS)
    r = run(cc, Bottleneck(rate, delay=20, loss=0.05, seed=3), 8000)
    assert cc.lost_segs > 100
    assert r["rate"] >= 0.85 * rate  # 5 % of what is sent is lost: the rest still fills the link
    assert r["q99"] < 40


def test_startup_exits_on_a_growing_queue() -> None:
    rate = 10e6 / 8 / 1000
    cc = BBRLite(MSS)
    link = Bottleneck(rate, delay=20, limit=1000)
    run(cc, link, 600)
    assert cc.state is not CCState.STARTUP
    assert max(link.queue_delays) < 120  # a deep buffer is not filled


def test_app_limited_samples_do_not_lower_the_estimate() -> None:
    rate = 10e6 / 8 / 1000
    cc = BBRLite(MSS)
    link = Bottleneck(rate, delay=20)
    run(cc, link, 3000)
    bw = cc.bw
    # now the application sends only 4 segments per RTT for a while: the estimate holds
    run(cc, link, 3000, app_limit=4)
    assert cc.bw >= 0.9 * bw


def test_probe_rtt_after_the_window_and_back() -> None:
    rate = 10e6 / 8 / 1000
    cc = BBRLite(MSS, min_rtt_window=1000)
    cc.on_ack(0, MSS, 40, 1)
    assert cc.min_rtt == 40
    now = 0
    for now in range(1, 1100, 5):  # the RTT stays above the minimum: no refresh
        cc.on_ack(now, MSS, 60, 10)
    assert cc.state is CCState.PROBE_RTT
    assert cc.cwnd == cc.min_cwnd
    for t in range(now, now + 400, 5):
        cc.on_ack(t, MSS, 45, 2)
    assert _state(cc) is CCState.PROBE_BW
    assert cc.min_rtt == 45  # re-measured: the path's RTT went up
    del rate


def _state(cc: BBRLite) -> CCState:
    return cc.state


def test_pacing_budget() -> None:
    cc = BBRLite(MSS)
    assert cc.pacing_rate == 0 and cc.quota(0) > 0  # unpaced until a bandwidth estimate exists
    cc.on_ack(0, MSS, 40, 1)
    cc.on_ack(30, 30 * 1000, 40, 1)  # 1000 bytes/ms while not app-limited
    assert cc.bw == pytest.approx(1000, rel=0.1)
    cc.bw = 1000.0  # bytes/ms
    cc.min_rtt = 40
    cc.pacing_gain = 1.0
    cc.tokens = 0.0
    cc.quota(0)
    assert cc.quota(10) == pytest.approx(10_000)
    cc.on_send(10, 12_000)
    assert cc.quota(10) < 0
    assert cc.next_send_time(10) == 10 + 2 + 1
    assert cc.quota(1000) == pytest.approx(1000 * cc.burst_ms)  # capped: no long bursts after idle


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        BBRLite(0)
    with pytest.raises(ValueError):
        BBRLite(MSS, min_cwnd=10, initial_cwnd=4)


def test_session_config_congestion() -> None:
    assert SessionConfig().congestion == "bbr"
    assert SessionConfig(congestion="ikcp").congestion == "ikcp"
    with pytest.raises(KCPUsageError, match="congestion"):
        SessionConfig(congestion="cubic")  # type: ignore[arg-type]


def test_an_app_limited_session_keeps_the_initial_window_unpaced() -> None:
    """Request/response traffic (always app-limited) never leaves STARTUP and is not paced, so a
    burst after idle goes out as with ikcp's window (up to ``initial_cwnd`` at once)."""
    rate = 10e6 / 8 / 1000
    cc = BBRLite(MSS)
    run(cc, Bottleneck(rate, delay=20), 3000, app_limit=2)
    assert cc.bw > 0 and cc.min_rtt > 0
    assert cc.state is CCState.STARTUP
    assert cc.pacing_rate == 0
    assert cc.cwnd >= cc.initial_cwnd


def test_follows_a_bandwidth_drop() -> None:
    """The link slows from 10 to 4 Mbit/s (a competing flow, a rate change): the estimate follows
    and the queue drains instead of standing at 0.75 x the old rate."""
    cc = BBRLite(MSS)
    link = Bottleneck(10e6 / 8 / 1000, delay=20)
    r = run(cc, link, 12000, new_rate=(3000, 4e6 / 8 / 1000))  # measured over the last 6 s
    assert cc.bw <= 1.15 * link.rate
    assert r["rate"] >= 0.85 * link.rate
    assert r["q99"] < 40


def test_paces_the_retransmissions_on_top_of_the_delivery_rate() -> None:
    """At 20 % random loss a fifth of what is sent is lost before the bottleneck. The delivery
    rate counts each segment once, so a pacer at that rate (retransmissions charged to the same
    budget) kept the link about a fifth idle; paced at bw / (1 - loss), what arrives fills it."""
    rate = 10e6 / 8 / 1000
    cc = BBRLite(MSS)
    r = run(cc, Bottleneck(rate, delay=20, loss=0.2, seed=3), 8000)
    assert cc.loss_comp == pytest.approx(1 / (1 - 0.2), rel=0.05)
    assert cc.pacing_rate == pytest.approx(cc.pacing_gain * cc.bw * cc.loss_comp * 1000)
    assert r["rate"] >= 0.93 * rate
    assert r["q99"] < 40


def test_loss_compensation_is_bounded() -> None:
    """Whatever the retransmissions, the pacer never goes above twice the delivery rate."""
    cc = BBRLite(MSS)
    for now in range(0, 2000, 5):
        cc.on_send(now, 4 * MSS)
        cc.on_loss(now, 4)  # everything sent is a retransmission
        cc.on_ack(now, MSS, 40, 8)
    assert cc.loss_comp == pytest.approx(2.0)


def test_the_probe_ends_when_a_queue_shows() -> None:
    """The 1.25 probe lasts one round, unless a queue of ``queue_factor`` x min RTT shows first:
    then it ends after one min RTT (BBR's probe ends when the flight reaches 1.25 BDP)."""
    rate = 10e6 / 8 / 1000
    cc = BBRLite(MSS)
    run(cc, Bottleneck(rate, delay=20), 3000)
    assert cc.state is CCState.PROBE_BW
    now = 3000
    while cc.pacing_gain != 1.25:  # quiet acks at the min RTT until the probe phase comes round
        now += 5
        cc.on_ack(now, MSS, cc.min_rtt, 10)
        assert now < 4000
    start = now
    queued = int(cc.min_rtt * 1.5)  # a queue: the round is now 1.5 min RTT long
    while now - start < cc.min_rtt + 5:
        now += 1
        cc.on_ack(now, MSS, queued, 10)
    assert now - start < queued  # still inside the round that began with the probe
    assert cc.pacing_gain == 0.75


def test_a_path_below_the_clock_is_window_limited_only() -> None:
    """Loopback or a LAN: a min RTT under MIN_PACED_RTT ms cannot be resolved by the millisecond
    clock. The sender is not paced; its window, 2 x BDP plus half a burst, bounds the flight."""
    rate = 1e9 / 8 / 1000
    cc = BBRLite(MSS)
    link = Bottleneck(rate, delay=0)
    r = run(cc, link, 3000)
    assert cc.measured and cc.min_rtt < MIN_PACED_RTT
    assert cc.pacing_rate == 0
    assert cc.cwnd <= int((2 * cc.min_rtt + cc.burst_ms // 2) * cc.bw / MSS) + 1
    assert r["rate"] >= 0.9 * rate
