"""Property tests: garbage into ``KCP.input`` never raises, matches ikcp, and never corrupts delivery."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kcp.engine import KCP
from kcp.stats import Counters

CONV = 0x9E3779B9
HDR = struct.Struct("<IBBHIIII")
MASK = 0xFFFFFFFF


def _segment(draw: Any) -> bytes:
    cmd = draw(st.one_of(st.sampled_from([81, 82, 83, 84]), st.integers(0, 255)))
    payload = draw(st.binary(max_size=64))
    length = draw(st.one_of(st.just(len(payload)), st.integers(0, MASK)))
    u32 = st.one_of(st.integers(0, 40), st.integers(0, MASK))  # small values hit the windows
    return bytes(
        HDR.pack(
            CONV,
            cmd,
            draw(st.integers(0, 255)),
            draw(st.integers(0, 0xFFFF)),
            draw(u32),
            draw(u32),
            draw(u32),
            length,
        )
        + payload
    )


@st.composite
def packets(draw: Any) -> bytes:
    """Arbitrary bytes, or datagrams of plausible segments with our conv and random fields."""
    if draw(st.booleans()):
        raw = draw(st.binary(max_size=200))
        if draw(st.booleans()) and len(raw) >= 4:
            raw = struct.pack("<I", CONV) + raw[4:]
        return bytes(raw)
    return b"".join(_segment(draw) for _ in range(draw(st.integers(1, 4))))


def _busy_engine(out: list[bytes] | None = None) -> KCP:
    """An engine with data in flight and a partly filled receive side."""
    k = KCP(CONV, out.append if out is not None else None)
    k.counters = Counters()
    k.nodelay(1, 10, 2, 1)
    for i in range(1, 7):
        k.send(bytes([i]) * (i * 500))
    k.update(1000)
    k.input(HDR.pack(CONV, 81, 0, 128, 990, 0, 0, 3) + b"abc", 1000)
    k.input(HDR.pack(CONV, 81, 0, 128, 991, 2, 0, 3) + b"ghi", 1000)
    return k


@given(st.lists(packets(), min_size=1, max_size=8), st.integers(0, MASK))
def test_garbage_never_raises(pkts: list[bytes], t0: int) -> None:
    k = _busy_engine()
    c = k.counters
    assert c is not None
    now = t0
    for p in pkts:
        errors = c.kcp_in_errors
        rc = k.input(p, now)
        assert rc in (0, -1, -2, -3)
        assert c.kcp_in_errors == errors + (rc < 0)
        now += 7
        k.update(now)
        k.check(now)
        while k.recv() is not None:
            pass
        k.take_output()
    assert k.waitsnd() >= 0 and k.nrcv_que <= k.rcv_wnd
    assert (k.snd_nxt - k.snd_una) & MASK == len(k.snd_buf)


siokcp = pytest.importorskip("siokcp")


@given(st.lists(packets(), min_size=1, max_size=8), st.lists(st.integers(0, 3000), min_size=8, max_size=8))
def test_garbage_handled_exactly_like_ikcp(pkts: list[bytes], gaps: list[int]) -> None:
    """Same garbage, same clock: same return codes, same datagrams out, same state."""
    ours_out: list[bytes] = []
    theirs_out: list[bytes] = []
    ours = _busy_engine(ours_out)

    def to_theirs(d: bytes) -> int:
        theirs_out.append(d)
        return 0

    c = siokcp.KCPConnection(CONV, to_theirs, lambda s: None)
    c.nodelay(1, 10, 2, 1)
    for i in range(1, 7):
        c.send(bytes([i]) * (i * 500))
    c.update(1000)
    c.receive_data(HDR.pack(CONV, 81, 0, 128, 990, 0, 0, 3) + b"abc")
    c.receive_data(HDR.pack(CONV, 81, 0, 128, 991, 2, 0, 3) + b"ghi")
    assert ours_out == theirs_out
    now = 1000
    for p, gap in zip(pkts, gaps, strict=False):
        if not p:
            continue  # siokcp cannot pass an empty buffer
        assert ours.input(p) == c.receive_data(p)
        now += gap
        ours.update(now)
        c.update(now)
        assert ours_out == theirs_out
        assert ours.check(now) & MASK == c.check(now)
        for f in (
            "snd_una",
            "snd_nxt",
            "rcv_nxt",
            "cwnd",
            "ssthresh",
            "rx_rto",
            "rmt_wnd",
            "probe_wait",
            "incr",
        ):
            assert getattr(ours, f) & MASK == getattr(c, f), f
        assert (ours.rx_srtt & MASK, ours.rx_rttval & MASK) == (c.rx_srtt, c.rx_rttval)
        assert ours.waitsnd() == c.waitsnd() and ours.state == c.state
        assert ours.peeksize() == c.peeksize()
        assert ours.recv() == c.next_event()


def _reject_mutation(dg: bytes, how: int) -> bytes:
    """Mutate a real datagram so that ikcp refuses its first segment (nothing takes effect)."""
    b = bytearray(dg)
    if how == 0:
        return bytes(b[: len(b) % 24])  # shorter than one header
    if how == 1:
        b[4] = 0x99  # unknown command
        return bytes(b)
    if how == 2:
        b[20:24] = struct.pack("<I", len(b))  # length beyond the datagram
        return bytes(b)
    b[0] ^= 0x01  # another conversation
    return bytes(b)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 200),
            st.sampled_from(["ab", "ba"]),
            st.one_of(st.binary(max_size=100), st.integers(0, 3)),
        ),
        max_size=30,
    )
)
def test_rejected_garbage_never_corrupts_delivery(injections: list[tuple[int, str, bytes | int]]) -> None:
    """A transfer with rejected garbage injected at random steps delivers every message intact."""
    ab: list[bytes] = []
    ba: list[bytes] = []
    a, b = KCP(CONV, ab.append), KCP(CONV, ba.append)
    for k in (a, b):
        k.nodelay(1, 10, 2, 1)
    msgs = [bytes([i % 251]) * (i * 37 % 3000) for i in range(60)]
    for m in msgs:
        assert a.send(m) == len(m)
        b.send(m[::-1])
    by_step: dict[int, list[tuple[str, bytes | int]]] = {}
    for step, direction, garbage in injections:
        by_step.setdefault(step, []).append((direction, garbage))
    got_a: list[bytes] = []
    got_b: list[bytes] = []
    now = 0
    last_ab = last_ba = HDR.pack(CONV, 82, 0, 0, 0, 0, 0, 0)
    for step in range(2000):
        for direction, garbage in by_step.get(step, []):
            dst = b if direction == "ab" else a
            if isinstance(garbage, int):
                pkt = _reject_mutation(last_ab if direction == "ab" else last_ba, garbage)
                assert dst.input(pkt, now) < 0
            else:
                rc = dst.input(garbage, now)
                if garbage[:4] != struct.pack("<I", CONV):
                    assert rc == -1
        a.update(now)
        b.update(now)
        for d in ab:
            b.input(d, now)
            last_ab = d
        for d in ba:
            a.input(d, now)
            last_ba = d
        ab.clear()
        ba.clear()
        while (mb := b.recv()) is not None:
            got_b.append(mb)
        while (ma := a.recv()) is not None:
            got_a.append(ma)
        if len(got_a) == len(got_b) == len(msgs):
            break
        now += 10
    assert got_b == msgs
    assert got_a == [m[::-1] for m in msgs]
