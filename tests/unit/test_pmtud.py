"""The DPLPMTUD state machine (kcp.pmtud) on a fake clock and a fake path."""

from __future__ import annotations

import heapq
from collections.abc import Callable

import pytest

from kcp.pmtud import Pmtud, PmtudState, udp_payload_max

RTT = 20


class FakePath:
    """Answers every probe no larger than ``mtu`` after one RTT (``alive``: False drops all)."""

    def __init__(self, pm: Pmtud, mtu: int) -> None:
        self.pm = pm
        self.mtu = mtu
        self.alive = True
        self.busy = True  # the session sends data (note_traffic before each step)
        self.now = 0
        self.acks: list[tuple[int, int]] = []
        self.sent: list[tuple[int, int, int]] = []  # (time, id, size)

    def run_until(self, end: int, on_step: Callable[[int], None] | None = None) -> None:
        pm = self.pm
        while True:
            if self.busy:
                pm.note_traffic()
            t = pm.timer()
            if self.acks and self.acks[0][0] <= t:
                t = self.acks[0][0]
            if t > end:
                self.now = end
                return
            self.now = max(self.now, t)
            while self.acks and self.acks[0][0] <= self.now:
                _, pid = heapq.heappop(self.acks)
                pm.on_ack(pid, self.now)
            for pid, size in pm.poll(self.now):
                self.sent.append((self.now, pid, size))
                if self.alive and size <= self.mtu:
                    heapq.heappush(self.acks, (self.now + RTT, pid))
            if on_step is not None:
                on_step(self.now)


def new(start: int = 1400, base: int = 1200, maximum: int = 1472, **kw: int) -> Pmtud:
    return Pmtud(start=start, base=base, maximum=maximum, now=0, **kw)


def test_udp_payload_max() -> None:
    assert udp_payload_max(1500, ipv6=False) == 1472
    assert udp_payload_max(1500, ipv6=True) == 1452


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="base"):
        Pmtud(start=1000, base=1200, maximum=1472, now=0)
    with pytest.raises(ValueError, match="max_probes"):
        Pmtud(start=1400, base=1200, maximum=1472, now=0, max_probes=0)


def test_a_clean_path_confirms_the_maximum_with_one_probe() -> None:
    pm = new()
    path = FakePath(pm, 9000)
    path.run_until(1000)
    assert pm.plpmtu == 1472
    assert pm.state is PmtudState.SEARCH_COMPLETE
    assert [s for _, _, s in path.sent] == [1472]
    assert (pm.probes_sent, pm.probes_acked, pm.probes_lost) == (1, 1, 0)


@pytest.mark.parametrize("path_mtu", [1401, 1420, 1437, 1450, 1471])
def test_the_search_converges_below_the_path_mtu(path_mtu: int) -> None:
    pm = new(step=8)
    path = FakePath(pm, path_mtu)
    path.run_until(60_000)
    assert pm.state is PmtudState.SEARCH_COMPLETE
    assert path_mtu - 8 <= pm.plpmtu <= path_mtu
    # every size that failed was lost exactly MAX_PROBES times before it was given up
    too_big = [s for _, _, s in path.sent if s > path_mtu]
    assert too_big and all(too_big.count(s) == 3 for s in set(too_big))
    assert pm.probes_lost == len(too_big)


def test_lost_probes_never_lower_the_mtu() -> None:
    pm = new()
    path = FakePath(pm, 1400)  # nothing above the start passes
    path.run_until(60_000)
    assert pm.plpmtu == 1400
    assert pm.probes_lost >= 3  # 3 copies of each size tried above 1400
    assert pm.black_holes == 0


def test_a_path_that_passes_nothing_larger_leaves_the_start_alone_and_stops_probing() -> None:
    pm = new(start=1472, maximum=1472)
    assert pm.state is PmtudState.SEARCH_COMPLETE  # nothing to search
    assert pm.poll(0) == []


def test_the_maximum_is_never_exceeded() -> None:
    pm = new(maximum=1472)
    path = FakePath(pm, 65536)  # loopback
    path.run_until(700_000)  # includes a raise
    assert max(s for _, _, s in path.sent) == 1472
    assert pm.plpmtu == 1472


def test_raise_timer_searches_again_and_finds_a_larger_path() -> None:
    pm = new(raise_ms=600_000)
    path = FakePath(pm, 1400)
    path.run_until(30_000)
    assert pm.plpmtu == 1400
    path.mtu = 1500  # the path grew
    path.run_until(599_000)
    assert pm.plpmtu == 1400  # no search before the raise timer
    path.run_until(700_000)  # the search ended within 30 s: raised before 630 s
    assert pm.plpmtu == 1472


def test_black_hole_falls_back_to_base_then_searches_below_the_failed_size() -> None:
    pm = new(confirm_ms=15_000)
    path = FakePath(pm, 1500)
    path.run_until(1000)
    assert pm.plpmtu == 1472
    path.mtu = 1300  # the route changed: 1472-byte packets now vanish, small ones pass
    fell: list[int] = []

    def watch(now: int) -> None:
        if pm.plpmtu == 1200 and not fell:
            fell.append(now)

    path.run_until(60_000, watch)
    assert pm.black_holes == 1
    assert fell and fell[0] <= 15_000 + 3 * 1000 + 100  # the first confirmation, 3 rounds
    assert 1300 - 16 <= pm.plpmtu <= 1300  # searched again from base
    assert pm.state is PmtudState.SEARCH_COMPLETE


def test_an_outage_is_not_a_black_hole() -> None:
    pm = new(confirm_ms=15_000)
    path = FakePath(pm, 1500)
    path.run_until(1000)
    path.alive = False  # everything lost, small probes too
    before = len(path.sent)
    path.run_until(120_000)
    assert pm.plpmtu == 1472 and pm.black_holes == 0
    assert len(path.sent) - before <= 2 * (120_000 // pm.suspect_gap + 1)  # paced: one round per gap
    path.alive = True
    path.run_until(200_000)
    assert pm.plpmtu == 1472 and pm.black_holes == 0


def test_suspicion_starts_a_confirmation_round_early_but_rate_limited() -> None:
    pm = new(confirm_ms=15_000, probe_timeout_ms=1000)
    path = FakePath(pm, 1500)
    path.run_until(1000)
    rounds_before = len(path.sent)
    path.mtu = 1300
    pm.suspect()
    assert pm.timer() <= 5000  # the gap after the last round (at 0), not the 15 s confirmation
    path.run_until(10_000)
    assert pm.black_holes == 1
    assert pm.plpmtu < 1472
    assert len(path.sent) > rounds_before


def test_an_idle_session_is_not_probed_after_its_search() -> None:
    pm = new(confirm_ms=15_000, raise_ms=60_000)
    path = FakePath(pm, 1450)
    path.busy = False  # the search itself runs without traffic: it sizes the first writes
    path.run_until(30_000)
    assert pm.state is PmtudState.SEARCH_COMPLETE
    searched = len(path.sent)
    path.run_until(1_000_000)
    assert len(path.sent) == searched  # no confirmation rounds, no raise while idle
    pm.note_traffic()
    assert pm.timer() <= path.now  # traffic again: the overdue confirmation is due now
    path.busy = True
    path.run_until(1_000_100)
    assert len(path.sent) > searched


def test_stale_and_unknown_acks_are_ignored() -> None:
    pm = new()
    probes = pm.poll(0)
    assert len(probes) == 1
    assert pm.on_ack(999, 5) is False
    assert pm.plpmtu == 1400
    assert pm.on_ack(probes[0][0], 10) is True
    assert pm.on_ack(probes[0][0], 11) is False  # a duplicate answer
    assert pm.plpmtu == 1472


def test_snapshot_names_the_counters() -> None:
    pm = new()
    FakePath(pm, 9000).run_until(100)
    snap = pm.snapshot()
    assert snap["pmtu"] == 1472
    assert snap["pmtud_probes_sent"] == 1 and snap["pmtud_probes_acked"] == 1
    assert snap["pmtud_probes_lost"] == 0 and snap["pmtud_black_holes"] == 0


def test_the_probe_timeout_follows_the_rtt_of_the_answers() -> None:
    pm = new(start=1200, probe_timeout_ms=1000)
    assert pm.probe_timeout == 1000  # no sample yet: the cap
    path = FakePath(pm, mtu=1400)  # 1472 is lost, answers come after RTT = 20 ms
    done: list[int] = []

    def on_step(now: int) -> None:
        if pm.state is PmtudState.SEARCH_COMPLETE and not done:
            done.append(now)

    path.run_until(60_000, on_step)
    assert pm.state is PmtudState.SEARCH_COMPLETE and 1400 - 16 <= pm.plpmtu <= 1400
    assert pm.srtt == RTT and pm.probe_timeout == 100  # 3 x 20 ms, at least min_timeout_ms
    # the first 1472 probes wait the cap (no sample yet); after the first answer a loss costs
    # 100 ms, not 1 s: about 3.9 s against 12 s with a fixed 1 s timeout
    assert done and done[0] < 3 * 1000 + 9 * 100 + 10 * RTT, done


def test_a_seeded_rtt_times_out_the_first_probes_early_and_a_slow_path_raises_it() -> None:
    pm = new(start=1200, probe_timeout_ms=1000, rtt=50)
    assert pm.probe_timeout == 150
    pm.note_rtt(400)  # a slower path: the timeout grows with it, capped
    assert 150 < pm.probe_timeout <= 1000
    for _ in range(30):
        pm.note_rtt(2000)
    assert pm.probe_timeout == 1000
    with pytest.raises(ValueError):
        new(rtt=-1)


def test_a_late_answer_of_a_search_probe_counts_and_gives_an_rtt_sample() -> None:
    pm = new(start=1200, probe_timeout_ms=1000, rtt=20)  # timeout 100 ms
    [(pid, size)] = pm.poll(0)
    assert size == 1472
    assert pm.poll(100) != []  # timed out: the next copy goes out
    assert pm.on_ack(pid, 300)  # the first copy's answer, 300 ms late: 1472 passes after all
    assert pm.plpmtu == 1472 and pm.srtt > 20
