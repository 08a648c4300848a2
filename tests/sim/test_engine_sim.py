"""Engine pairs moving >= 10 MB each way through a seeded lossy, duplicating, reordering link."""

from __future__ import annotations

import random
import time

import pytest

from kcp.engine import KCP
from kcp.simlink import SimLink, drive
from kcp.stats import Counters

TOTAL = 10 * 1024 * 1024
CONV = 0x5EED


class Side:
    """One application endpoint: sends its own stream of messages and checks what arrives."""

    def __init__(self, kcp: KCP, rng: random.Random, total: int, pattern: bytes, stream: bool) -> None:
        self.kcp = kcp
        self.rng = rng
        self.total = total
        self.pattern = pattern  # the peer checks our bytes against this
        self.sent = 0
        self.sizes: list[int] = []  # message sizes we sent (for boundary checks)

    def pump_send(self) -> None:
        k = self.kcp
        while self.sent < self.total and k.waitsnd() < 2 * k.snd_wnd:
            n = min(self.rng.choice((1, 64, 700, 1376, 1377, 4000, 30000)), self.total - self.sent)
            off = self.sent % len(self.pattern)
            chunk = (self.pattern[off:] + self.pattern)[:n]
            assert k.send(chunk) == n
            self.sizes.append(n)
            self.sent += n


class Receiver:
    def __init__(self, kcp: KCP, peer: Side, stream: bool) -> None:
        self.kcp = kcp
        self.peer = peer
        self.stream = stream
        self.got = 0
        self.msgs = 0

    def pump_recv(self) -> None:
        pat = self.peer.pattern
        plen = len(pat)
        while True:
            m = self.kcp.recv()
            if m is None:
                return
            if not self.stream:
                assert len(m) == self.peer.sizes[self.msgs], "message boundary lost"
            off = self.got % plen
            expect = (pat[off:] + pat * (len(m) // plen + 1))[: len(m)]
            assert m == expect, f"corrupt data at offset {self.got}"
            self.got += len(m)
            self.msgs += 1


def transfer(loss: float, stream: bool, seed: int, total: int = TOTAL) -> tuple[int, float, Counters]:
    rng = random.Random(seed)
    ab = SimLink(seed=seed * 7 + 1, loss=loss, dup=0.03, reorder=0.05, delay=15, jitter=8)
    ba = SimLink(seed=seed * 7 + 2, loss=loss, dup=0.03, reorder=0.05, delay=15, jitter=8)
    a = KCP(CONV, ab.send)
    b = KCP(CONV, ba.send)
    counters = Counters()
    for k in (a, b):
        k.nodelay(1, 10, 2, 1)
        k.wndsize(512, 512)
        k.stream = int(stream)
        k.counters = counters
    pat_a = rng.randbytes(65521)
    pat_b = rng.randbytes(65519)
    sa, sb = (
        Side(a, random.Random(seed + 10), total, pat_a, stream),
        Side(b, random.Random(seed + 11), total, pat_b, stream),
    )
    ra, rb = Receiver(a, sb, stream), Receiver(b, sa, stream)

    def step(now: int) -> bool:
        sa.pump_send()
        sb.pump_send()
        rb.pump_recv()
        ra.pump_recv()
        return ra.got >= total and rb.got >= total

    def ack_now(ep: object, now: int) -> None:
        assert isinstance(ep, KCP)
        ep.flush(now)

    t0 = time.perf_counter()
    vt = drive(a, b, ab, ba, step, after_input=ack_now, max_ms=3_600_000)
    wall = time.perf_counter() - t0
    assert ra.got == total and rb.got == total
    if not stream:
        assert ra.msgs == len(sb.sizes) and rb.msgs == len(sa.sizes)
    if loss:
        assert counters.retrans_segs > 0 and ab.lost > 0 and ab.duplicated > 0
    return vt, wall, counters


@pytest.mark.parametrize("loss", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("stream", [False, True], ids=["message", "stream"])
def test_ten_megabytes_each_way(loss: float, stream: bool) -> None:
    vt, wall, c = transfer(loss, stream, seed=int(loss * 100) + 3 * stream)
    print(f"loss={loss} stream={stream}: virtual {vt} ms, wall {wall:.2f} s, retrans {c.retrans_segs}")


def _calls_across(start: int, loss: float, seed: int, n: int = 600) -> tuple[int, list[int], int]:
    """``n`` messages of 60 to 3,000 bytes, one every 30 ms, through a lossy link from virtual time
    ``start``, on engines built as a session builds them (adaptive loss recovery, held-back
    window probes): how long it took, each message's latency, the retransmissions."""
    from kcp.config import SessionConfig
    from kcp.session_setup import make_engine

    cfg = SessionConfig(stream=False)
    ab = SimLink(seed=seed, loss=loss, delay=20, jitter=5)
    ba = SimLink(seed=seed + 1, loss=loss, delay=20, jitter=5)
    counters = Counters()
    a, b = make_engine(CONV, cfg, 24, counters), make_engine(CONV, cfg, 24, Counters())
    a.output, b.output = ab.send, ba.send
    rng = random.Random(seed)
    sent_at: list[int] = []
    latency: list[int] = []

    def step(now: int) -> bool:
        if len(sent_at) < n and (not sent_at or now >= sent_at[-1] + 30):
            a.send(len(sent_at).to_bytes(4, "big") + rng.randbytes(rng.choice((60, 600, 3000))))
            sent_at.append(now)
        while (m := b.recv()) is not None:
            assert int.from_bytes(m[:4], "big") == len(latency)  # in order, none lost
            latency.append(now - sent_at[len(latency)])
        return len(latency) == n

    def ack_now(ep: object, now: int) -> None:
        assert isinstance(ep, KCP)
        ep.flush(now)

    end = drive(a, b, ab, ba, step, start=start, after_input=ack_now, max_ms=600_000)
    return end - start, latency, counters.retrans_segs


@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_the_32_bit_clock_wrapping_changes_nothing(loss: float) -> None:
    """The engine's clock is 32-bit milliseconds: on a process's loop clock it wraps after 49.7
    days up, in the middle of live sessions. Runs that start just before the wrap (and cross it
    within the first messages, or at once) go exactly as the run from 0: every comparison of
    times is modular, the loss recovery's and the window probes' included."""
    first = _calls_across(0, loss, seed=5)
    assert first[2] > 0 if loss else first[2] >= 0
    for start in ((1 << 32) - 2_000, (1 << 32) - 1):
        assert _calls_across(start, loss, seed=5) == first
