"""Unit tests of the KCP engine with hand-computed clocks, bytes and timers."""

from __future__ import annotations

import struct

import pytest

from kcp.engine import (
    IKCP_CMD_ACK,
    IKCP_CMD_PUSH,
    IKCP_CMD_WASK,
    IKCP_CMD_WINS,
    KCP,
    getconv,
)
from kcp.errors import KCPUsageError
from kcp.stats import Counters

CONV = 0x01020304
HDR = struct.Struct("<IBBHIIII")


def seg(
    cmd: int,
    sn: int = 0,
    *,
    ts: int = 0,
    una: int = 0,
    wnd: int = 128,
    frg: int = 0,
    data: bytes = b"",
    conv: int = CONV,
) -> bytes:
    """Encode one segment by hand (independent of the engine's encoder)."""
    return HDR.pack(conv, cmd, frg, wnd, ts, sn, una, len(data)) + data


def split(datagram: bytes) -> list[tuple[int, int, int, int, int, int, int, bytes]]:
    """Decode every segment of a datagram: (conv, cmd, frg, wnd, ts, sn, una, data)."""
    out = []
    off = 0
    while off < len(datagram):
        conv, cmd, frg, wnd, ts, sn, una, ln = HDR.unpack_from(datagram, off)
        off += 24
        out.append((conv, cmd, frg, wnd, ts, sn, una, datagram[off : off + ln]))
        off += ln
    return out


def engine(**kw: object) -> tuple[KCP, list[bytes]]:
    out: list[bytes] = []
    k = KCP(CONV, out.append)
    k.counters = Counters()
    for name, value in kw.items():
        setattr(k, name, value)
    return k, out


# ------------------------------------------------------------------ defaults and header codec


def test_defaults_match_ikcp() -> None:
    k = KCP(1)
    assert (k.mtu, k.mss, k.snd_wnd, k.rcv_wnd, k.rmt_wnd) == (1400, 1376, 32, 128, 128)
    assert (k.rx_rto, k.rx_minrto, k.interval, k.ts_flush, k.dead_link) == (200, 100, 100, 100, 20)
    assert (k.cwnd, k.ssthresh, k.fastresend, k.fastlimit, k.nocwnd, k.stream, k.state) == (
        0,
        2,
        0,
        5,
        0,
        0,
        0,
    )
    assert k.counters is None and k.waitsnd() == 0 and k.peeksize() == -1 and k.recv() is None


def test_first_push_exact_bytes() -> None:
    k, out = engine()
    assert k.send(b"hello") == 5
    k.update(0)  # first flush: ikcp's cwnd starts at 0, so nothing leaves yet
    assert out == []
    assert k.cwnd == 1
    k.update(100)
    assert out == [bytes.fromhex("040302015100800064000000000000000000000005000000") + b"hello"]
    assert k.counters is not None and k.counters.out_segs == 1 and k.counters.out_bytes == 5


def test_ack_exact_bytes_and_una() -> None:
    k, out = engine()
    k.update(1000)
    assert k.input(seg(IKCP_CMD_PUSH, 0, ts=777, data=b"abc")) == 0
    k.update(1100)
    # ACK: cmd 82, wnd = 128 - 1 queued, ts echoes 777, sn 0, una = rcv_nxt = 1, len 0
    assert out == [HDR.pack(CONV, IKCP_CMD_ACK, 0, 127, 777, 0, 1, 0)]
    assert k.recv() == b"abc"


def test_header_fields_with_every_byte_significant() -> None:
    """Every byte of every header field is read and written at its place (the compiled build reads
    headers byte by byte): distinct, high-bit values in conv, wnd, ts, sn, una and len, at a
    non-zero offset in the datagram."""
    conv = 0xF1E2D3C4
    out: list[bytes] = []
    k = KCP(conv, out.append)
    k.rcv_nxt = k.snd_una = k.snd_nxt = 0xFFFFFF00  # sn near the wrap
    k.wndsize(128, 256)
    k.update(0x7F00)
    payload = bytes(range(256)) * 2 + b"xyz"  # len 515: 0x03 0x02 in the length field
    sn = 0xFFFFFF00
    first = seg(IKCP_CMD_PUSH, sn, ts=0x89ABCDEF, una=0xFFFFFF00, wnd=0xFEDC, data=b"", conv=conv)
    second = seg(IKCP_CMD_PUSH, sn + 1, ts=0x8899AABB, una=0xFFFFFF00, wnd=0xBA98, data=payload, conv=conv)
    assert k.input(first + second) == 0
    assert k.rmt_wnd == 0xBA98  # the last segment's window
    assert k.recv() == b"" and k.recv() == payload
    k.flush()
    assert split(out[0]) == [
        (conv, IKCP_CMD_ACK, 0, 256, 0x89ABCDEF, sn, 0xFFFFFF02, b""),
        (conv, IKCP_CMD_ACK, 0, 256, 0x8899AABB, sn + 1, 0xFFFFFF02, b""),
    ]
    assert k.send(payload) == len(payload)
    k.flush()
    assert split(out[1]) == [(conv, IKCP_CMD_PUSH, 0, 256, 0x7F00, 0xFFFFFF00, 0xFFFFFF02, payload)]


def test_getconv() -> None:
    assert getconv(seg(IKCP_CMD_ACK, conv=0xDEADBEEF)) == 0xDEADBEEF
    assert getconv(b"\x01\x00\x00\x00") == 1
    assert getconv(b"\x01\x00") == -1


# ------------------------------------------------------------------ RTT and RTO


def test_rto_from_rtt_samples() -> None:
    k, _out = engine()
    k.send(b"x")
    k.send(b"y")
    k.update(0)
    k.update(100)  # cwnd 1: sn 0 goes out with ts 100
    assert k.input(seg(IKCP_CMD_ACK, 0, ts=100, una=1), now=150) == 0  # rtt 50
    assert (k.rx_srtt, k.rx_rttval, k.rx_rto) == (50, 25, 150)  # 50 + max(100, 4*25)
    assert k.snd_una == 1 and k.waitsnd() == 1 and k.cwnd == 2  # slow start
    assert k.input(seg(IKCP_CMD_ACK, 1, ts=60, una=1), now=150) == 0  # rtt 90 (sn 1 not sent: ignored)
    # rttval = (3*25 + |90-50|) / 4 = 28; srtt = (7*50 + 90) / 8 = 55; rto = 55 + max(100, 112)
    assert (k.rx_srtt, k.rx_rttval, k.rx_rto) == (55, 28, 167)
    # an ack "from the future" (ts after now) gives no sample
    k.input(seg(IKCP_CMD_ACK, 1, ts=200, una=1), now=150)
    assert k.rx_rto == 167


def test_rto_nodelay_minimum() -> None:
    k, _ = engine()
    k.nodelay(1, 10, 2, 1)
    assert (k.rx_minrto, k.interval, k.fastresend, k.nocwnd) == (30, 10, 2, 1)
    k.update(0)
    k.input(seg(IKCP_CMD_ACK, 5, ts=0), now=4)  # rtt 4 -> rto = 4 + max(10, 8) = 14 -> minrto 30
    assert (k.rx_srtt, k.rx_rttval, k.rx_rto) == (4, 2, 30)
    k.input(seg(IKCP_CMD_ACK, 5, ts=0), now=100_000)  # rtt 100000 -> capped at 60000
    assert k.rx_rto == 60000


def test_retransmission_timer_normal_mode() -> None:
    k, out = engine()
    k.send(b"data")
    k.update(0)
    k.update(100)  # first transmission: resendts = 100 + rto 200 + rtomin (200 >> 3 = 25) = 325
    assert len(out) == 1
    assert k.check(150) == 200  # next tick (ts_flush 200) before the retransmission (325)
    k.update(200)
    k.update(300)
    assert k.check(310) == 325  # tick at 400, retransmission at 325
    k.flush(324)
    assert len(out) == 1
    k.flush(325)
    assert len(out) == 2 and split(out[1])[0][4] == 325  # same segment, new ts
    assert k.xmit == 1 and k.counters is not None and k.counters.lost_segs == 1
    # rto doubles (rto += max(rto, rx_rto)) -> 400: next at 725; cwnd collapses to 1
    assert k.cwnd == 1 and k.ssthresh == 2
    k.flush(724)
    assert len(out) == 2
    k.flush(725)
    assert len(out) == 3


@pytest.mark.parametrize(("nd", "first", "second"), [(1, 300, 450), (2, 300, 400)])
def test_retransmission_timer_nodelay(nd: int, first: int, second: int) -> None:
    # nodelay 1: rto += rto/2 (200 -> 300 -> 450); nodelay 2: rto += rx_rto/2 (200 -> 300 -> 400)
    k, out = engine()
    k.nodelay(nd, 10, 0, 1)
    k.send(b"data")
    k.flush(0)  # nc=1: sent at once; rtomin is 0 in nodelay mode -> resendts 200
    assert len(out) == 1
    k.flush(199)
    assert len(out) == 1
    k.flush(200)
    assert len(out) == 2
    k.flush(200 + first - 1)
    assert len(out) == 2
    k.flush(200 + first)
    assert len(out) == 3
    k.flush(200 + first + second - 1)
    assert len(out) == 3
    k.flush(200 + first + second)
    assert len(out) == 4


def test_dead_link_sets_state() -> None:
    k, out = engine()
    k.nodelay(1, 10, 0, 1)
    k.dead_link = 3
    k.send(b"x")
    now = 0
    k.flush(now)
    while k.state == 0 and now < 100_000:
        now += 10
        k.flush(now)
    assert k.state == -1 and len(out) == 3  # the third transmission hits dead_link


# ------------------------------------------------------------------ fast resend


def _four_in_flight() -> tuple[KCP, list[bytes]]:
    k, out = engine()
    k.nodelay(1, 10, 2, 1)
    for i in range(4):
        k.send(bytes([i]) * 10)
    k.flush(0)
    assert [s[5] for s in split(out[0])] == [0, 1, 2, 3]
    out.clear()
    return k, out


def test_fast_resend_after_two_skips() -> None:
    k, out = _four_in_flight()
    k.input(seg(IKCP_CMD_ACK, 1, ts=0), now=5)
    k.flush(5)
    assert out == []  # sn 0 skipped once: not yet
    k.input(seg(IKCP_CMD_ACK, 2, ts=0), now=6)
    k.flush(6)
    assert [s[5] for s in split(out[0])] == [0]  # skipped twice: fast resend
    assert k.counters is not None and k.counters.fast_retrans_segs == 1 and k.counters.lost_segs == 0
    # fast resend shrinks cwnd: ssthresh = inflight/2 = 4/2, cwnd = ssthresh + resend
    assert (k.ssthresh, k.cwnd) == (2, 4)


def test_fast_resend_conservative_ts() -> None:
    """An ack for a segment sent before ours (older ts) does not count as a skip (CONSERVE)."""
    k, out = _four_in_flight()
    k.flush(300)  # RTO (200) expired: sn 0..3 go out again, now with ts 300
    out.clear()
    k.input(seg(IKCP_CMD_ACK, 1, ts=0), now=301)  # echoes the old ts 0 < seg ts 300
    k.input(seg(IKCP_CMD_ACK, 2, ts=0), now=302)
    k.flush(302)
    assert out == []


def test_fastlimit() -> None:
    k, out = _four_in_flight()
    k.fastlimit = 1  # xmit already 1: one more fast resend is not allowed once xmit > 1
    k.input(seg(IKCP_CMD_ACK, 1, ts=0), now=5)
    k.input(seg(IKCP_CMD_ACK, 2, ts=0), now=5)
    k.flush(5)
    assert [s[5] for s in split(out[0])] == [0]
    out.clear()
    k.input(seg(IKCP_CMD_ACK, 3, ts=0), now=6)
    k.input(seg(IKCP_CMD_ACK, 3, ts=0), now=6)
    k.flush(7)
    assert out == []  # xmit 2 > fastlimit 1


# ------------------------------------------------------------------ windows and probing


def test_remote_zero_window_and_probe() -> None:
    k, out = engine()
    k.nodelay(1, 10, 0, 1)
    k.flush(0)
    assert k.input(seg(IKCP_CMD_WINS, wnd=0)) == 0
    assert k.rmt_wnd == 0
    k.send(b"blocked")
    k.flush(10)
    assert out == [] and (k.probe_wait, k.ts_probe) == (7000, 7010)  # nothing may be sent
    k.flush(7009)
    assert out == []
    k.flush(7010)
    (probe,) = split(out[0])
    assert probe[1] == IKCP_CMD_WASK and (k.probe_wait, k.ts_probe) == (10500, 17510)
    out.clear()
    k.input(seg(IKCP_CMD_WINS, wnd=64))  # the peer's answer opens the window
    k.flush(7020)
    assert [s[1] for s in split(out[0])] == [IKCP_CMD_PUSH] and k.probe_wait == 0


def test_window_probe_answer_carries_last_ack() -> None:
    """ikcp reuses one header for acks and probes: WINS inherits the last ack's sn and ts."""
    k, out = engine()
    k.flush(0)
    k.input(
        seg(IKCP_CMD_PUSH, 0, ts=41, data=b"a") + seg(IKCP_CMD_WASK) + seg(IKCP_CMD_PUSH, 1, ts=42, data=b"b")
    )
    k.flush(1)
    segs = split(out[0])
    assert [(s[1], s[5], s[4]) for s in segs] == [(82, 0, 41), (82, 1, 42), (84, 1, 42)]
    assert all(s[3] == 126 and s[6] == 2 for s in segs)  # wnd 128-2, una 2


def test_full_receive_window_then_tell() -> None:
    k, out = engine()
    k.flush(0)
    pushes = b"".join(seg(IKCP_CMD_PUSH, sn, data=b"m") for sn in range(130))
    assert k.input(pushes) == 0
    assert k.nrcv_que == 128 and k.nrcv_buf == 2  # queue stops at rcv_wnd
    k.flush(10)
    acks = split(out[0])
    assert acks[-1][3] == 0  # advertised window: 0
    out.clear()
    assert k.recv() == b"m" and k.recv() == b"m"  # each read refills the queue from rcv_buf
    assert k.nrcv_que == 128 and k.probe == 0
    assert k.recv() == b"m"  # was full -> now has room -> WINS is due
    assert k.probe & 2
    k.flush(20)
    (wins,) = split(out[0])
    assert wins[1] == IKCP_CMD_WINS and wins[3] == 1


def test_sn_far_outside_window_is_dropped_unacked() -> None:
    k, out = engine()
    k.flush(0)
    assert k.input(seg(IKCP_CMD_PUSH, 128, data=b"far")) == 0  # rcv_nxt 0 + rcv_wnd 128: outside
    assert k.input(seg(IKCP_CMD_PUSH, 0x80000000, data=b"far")) == 0
    k.flush(10)
    assert out == [] and k.nrcv_buf == 0
    assert k.input(seg(IKCP_CMD_PUSH, 127, data=b"edge")) == 0  # last sn inside the window
    k.flush(20)
    assert len(split(out[0])) == 1 and k.nrcv_buf == 1
    assert k.counters is not None and k.counters.repeat_segs == 2 and k.counters.kcp_in_errors == 0


def test_duplicate_push_is_acked_again_and_counted() -> None:
    k, out = engine()
    k.flush(0)
    k.input(seg(IKCP_CMD_PUSH, 0, data=b"a"))
    k.input(seg(IKCP_CMD_PUSH, 0, data=b"a"))
    k.flush(1)
    assert len(split(out[0])) == 2
    assert k.recv() == b"a" and k.recv() is None
    assert k.counters is not None and k.counters.repeat_segs == 1


def sending(snd_wnd: int, payloads: list[bytes]) -> tuple[KCP, list[bytes]]:
    """An engine (nodelay, no cwnd) with send window ``snd_wnd`` that sent ``payloads`` at 0."""
    k, out = engine()
    k.nodelay(1, 10, 0, 1)
    k.wndsize(snd_wnd, 0)
    for p in payloads:
        k.send(p)
    k.flush(0)
    return k, out


def test_send_window_limits_in_flight() -> None:
    k, out = sending(4, [b"z"] * 10)
    assert len(split(out[0])) == 4 and k.nsnd_buf == 4 and k.nsnd_que == 6
    k.input(seg(IKCP_CMD_ACK, 0, ts=0, una=2))  # una 2 frees two slots
    k.flush(1)
    assert [s[5] for s in split(out[1])] == [4, 5]


def test_congestion_window_slow_start() -> None:
    k, out = engine()
    k.wndsize(64, 0)
    for _ in range(20):
        k.send(b"c")
    k.update(0)
    k.update(100)
    assert len(split(out[-1])) == 1  # cwnd 1
    k.input(seg(IKCP_CMD_ACK, 0, ts=100, una=1), now=110)
    assert k.cwnd == 2
    k.update(200)
    assert [s[5] for s in split(out[-1])] == [1, 2]


# ------------------------------------------------------------------ fragmentation and modes


def test_fragment_counts() -> None:
    k, _ = engine()
    assert k.send(b"a" * 1376) == 1376 and k.nsnd_que == 1
    assert k.send(b"a" * 1377) == 1377 and k.nsnd_que == 3
    assert [f for f, _ in k.snd_queue] == [0, 1, 0]
    assert k.send(b"a" * (1376 * 127)) == 1376 * 127 and k.nsnd_que == 130
    assert k.snd_queue[3][0] == 126 and k.snd_queue[-1][0] == 0
    assert k.send(b"a" * (1376 * 127 + 1)) == -2  # 128 fragments: refused as in ikcp
    assert k.send(b"") == 0 and k.nsnd_que == 131  # an empty message is one empty segment
    k.setmtu(100)
    assert (
        k.mss == 76
        and k.send(b"b" * 200) == 200
        and [len(d) for _, d in list(k.snd_queue)[-3:]] == [76, 76, 48]
    )


def test_reassembly_and_peeksize() -> None:
    k, _ = engine()
    k.flush(0)
    k.input(seg(IKCP_CMD_PUSH, 0, frg=2, data=b"ab"))
    k.input(seg(IKCP_CMD_PUSH, 2, frg=0, data=b"ef"))  # out of order
    assert k.peeksize() == -1 and k.recv() is None and k.nrcv_buf == 1
    k.input(seg(IKCP_CMD_PUSH, 1, frg=1, data=b"cd"))
    assert k.peeksize() == 6
    assert k.recv() == b"abcdef" and k.recv() is None and k.peeksize() == -1


def test_stream_mode_send_merges() -> None:
    k, _out = engine(stream=1)
    assert k.send(b"a" * 100) == 100
    assert k.send(b"b" * 100) == 100
    assert k.nsnd_que == 1 and len(k.snd_queue[0][1]) == 200
    assert k.send(b"c" * 2000) == 2000
    assert [len(d) for _, d in k.snd_queue] == [1376, 824]
    assert all(f == 0 for f, _ in k.snd_queue)
    assert k.send(b"") == 0 and k.nsnd_que == 2


def test_stream_mode_recv_returns_all_ready() -> None:
    k, _ = engine(stream=1)
    k.flush(0)
    k.input(
        seg(IKCP_CMD_PUSH, 0, data=b"ab")
        + seg(IKCP_CMD_PUSH, 1, data=b"cd")
        + seg(IKCP_CMD_PUSH, 3, data=b"gh")
    )
    assert k.peeksize() == 4
    assert k.recv() == b"abcd"
    k.input(seg(IKCP_CMD_PUSH, 2, data=b"ef"))
    assert k.recv() == b"efgh" and k.recv() is None


def test_message_boundaries_between_engines() -> None:
    a, a_out = engine()
    b, b_out = engine()
    msgs = [b"", b"x", b"y" * 1376, b"z" * 1377, b"w" * 5000]
    for m in msgs:
        a.send(m)
    now = 0
    got: list[bytes] = []
    a.nodelay(1, 10, 2, 1)
    while len(got) < len(msgs) and now < 2000:
        a.update(now)
        b.update(now)
        for d in a_out:
            b.input(d)
        for d in b_out:
            a.input(d)
        a_out.clear()
        b_out.clear()
        while (r := b.recv()) is not None:
            got.append(r)
        now += 10
    assert got == msgs


# ------------------------------------------------------------------ bad input


def test_error_codes() -> None:
    k, out = engine()
    c = k.counters
    assert c is not None
    k.flush(0)
    assert k.input(b"") == -1
    assert k.input(seg(IKCP_CMD_PUSH)[:23]) == -1  # short
    assert k.input(seg(IKCP_CMD_PUSH, conv=CONV + 1)) == -1  # wrong conv (ikcp returns -1)
    lying = bytearray(seg(IKCP_CMD_PUSH, data=b"abc"))
    lying[20:24] = struct.pack("<I", 4)
    assert k.input(bytes(lying)) == -2  # length longer than the data
    lying[20:24] = struct.pack("<I", 0xFFFFFFFF)
    assert k.input(bytes(lying)) == -2
    assert k.input(seg(80)) == -3 and k.input(seg(85)) == -3 and k.input(seg(0)) == -3  # unknown cmd
    assert c.kcp_in_errors == 8
    k.flush(10)
    assert out == [] and k.nrcv_que == 0 and k.rmt_wnd == 128


def test_error_stops_mid_packet_like_ikcp() -> None:
    """Segments before the bad one take effect, the rest are ignored."""
    k, _out = engine()
    k.flush(0)
    rc = k.input(
        seg(IKCP_CMD_PUSH, 0, wnd=77, data=b"ok") + seg(99, 1, wnd=5) + seg(IKCP_CMD_PUSH, 1, data=b"no")
    )
    assert rc == -3 and k.rmt_wnd == 77 and k.recv() == b"ok" and k.recv() is None
    # trailing bytes shorter than a header are ignored (not an error), as in ikcp
    assert k.input(seg(IKCP_CMD_PUSH, 1, data=b"ok") + b"\x00" * 23) == 0
    assert k.recv() == b"ok"


def test_accepts_bytes_like_and_rejects_misuse() -> None:
    k, _ = engine()
    k.flush(0)
    assert k.input(bytearray(seg(IKCP_CMD_PUSH, 0, data=b"1"))) == 0
    assert k.input(memoryview(seg(IKCP_CMD_PUSH, 1, data=b"2"))) == 0
    assert k.recv() == b"1" and k.recv() == b"2"
    assert k.send(bytearray(b"q")) == 1 and k.send(memoryview(b"r")) == 1
    # a wrong type is a TypeError in both builds (KCPTypeError in the pure one, mypyc's own
    # argument check in the compiled one)
    with pytest.raises(TypeError):
        k.input("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        k.send("text")  # type: ignore[arg-type]
    with pytest.raises(KCPUsageError):
        KCP(-1)


def test_input_copies_caller_buffer() -> None:
    k, _ = engine()
    k.flush(0)
    buf = bytearray(seg(IKCP_CMD_PUSH, 0, data=b"keep"))
    k.input(buf)
    buf[24:] = b"XXXX"
    assert k.recv() == b"keep"


# ------------------------------------------------------------------ timers and configuration


def test_update_and_check() -> None:
    k, _ = engine()
    assert k.check(5) == 5  # before the first update: call update now
    k.update(0)
    assert k.ts_flush == 100 and k.check(0) == 100 and k.check(60) == 100 and k.check(100) == 100
    k.update(50)  # not due: no flush, ts_flush unchanged
    assert k.ts_flush == 100
    k.update(250)  # late: ts_flush = 250 + interval
    assert k.ts_flush == 350
    k.update(30_000)  # a jump of more than 10 s resets the schedule
    assert k.ts_flush == 30_100
    k.send(b"x")
    k.update(30_100)  # sent at 30100 with resendts 30100 + 200 + 25
    assert k.check(30_150) == 30_200  # next flush tick comes first
    k.set_interval(1000)
    k.update(30_200)
    assert k.check(30_200) == 30_325  # now the retransmission is earlier than the tick
    # caller clocks beyond 32 bits: the answer stays in the caller's frame
    big = (1 << 40) + 30_200
    assert k.check(big) == big + 125


def test_flush_is_cheap_and_silent_when_idle() -> None:
    k, out = engine()
    k.update(0)
    for t in range(1, 50):
        k.flush(t)
    assert out == []


def test_configuration_clamps() -> None:
    k = KCP(1)
    k.nodelay(0, 1, -1, -1)
    assert k.interval == 10 and k.rx_minrto == 100
    k.nodelay(-1, 99999, -1, -1)
    assert k.interval == 5000
    k.set_interval(3)
    assert k.interval == 10
    k.wndsize(0, 16)
    assert (k.snd_wnd, k.rcv_wnd) == (32, 128)  # rcv_wnd is at least 128
    k.wndsize(1000, 1000)
    assert (k.snd_wnd, k.rcv_wnd) == (1000, 1000)
    assert k.setmtu(49) == -1 and k.mtu == 1400
    assert k.setmtu(50) == 0 and (k.mtu, k.mss) == (50, 26)


def test_take_output_without_callback() -> None:
    k = KCP(CONV)
    k.nodelay(1, 10, 0, 1)
    k.send(b"hi")
    k.flush(0)
    (dg,) = k.take_output()
    assert split(dg)[0][7] == b"hi" and k.take_output() == []


def test_garbage_fragment_numbers_take_whole_queue_like_ikcp() -> None:
    """frg values that never reach 0: ikcp's peeksize/recv run to the end of the queue."""
    k, _ = engine()
    k.flush(0)
    for sn, frg in ((0, 2), (1, 5), (2, 7)):
        assert k.input(seg(IKCP_CMD_PUSH, sn, frg=frg, data=b"x")) == 0
    assert k.peeksize() == 3
    assert k.recv() == b"xxx" and k.recv() is None


def test_huge_receive_window_is_truncated_to_16_bits_like_ikcp() -> None:
    k, out = engine()
    k.wndsize(0, 70000)
    k.flush(0)
    k.input(seg(IKCP_CMD_PUSH, 0, data=b"a"))
    k.flush(1)
    assert split(out[0])[0][3] == (70000 - 1) & 0xFFFF


def test_fec_recovered_packets_do_not_update_window_or_rtt() -> None:
    """kcp-go's rule for packets rebuilt by FEC (regular=False): stale wnd and ts are ignored."""
    k, _ = engine()
    k.send(b"x")
    k.update(0)
    k.update(100)
    assert k.input(seg(IKCP_CMD_ACK, 0, ts=100, una=1, wnd=0), now=150, regular=False) == 0
    assert k.rmt_wnd == 128 and k.rx_srtt == 0 and k.rx_rto == 200  # unchanged
    assert k.waitsnd() == 0  # the ack itself still counts
    k.input(seg(IKCP_CMD_PUSH, 0, data=b"d"), regular=False)
    k.input(seg(IKCP_CMD_PUSH, 0, data=b"d"), regular=False)
    assert k.recv() == b"d"
    assert k.counters is not None and k.counters.repeat_segs == 0


# ------------------------------------------------------------------ internal stores (session 12)


def test_receive_queue_reads_in_order_across_compaction() -> None:
    """recv one message at a time from a long queue (its consumed front is deleted in batches):
    every message comes once, in order, and the queue reads as the pairs still queued."""
    k, _ = engine(rcv_wnd=256)
    k.flush(0)
    for sn in range(100):
        assert k.input(seg(IKCP_CMD_PUSH, sn, data=b"m%d" % sn)) == 0
    q = k.rcv_queue
    assert len(q) == 100 and bool(q) and q[0] == (0, b"m0") and q[-1] == (0, b"m99")
    for i in range(60):
        assert k.recv() == b"m%d" % i
        assert len(q) == k.nrcv_que == 99 - i and q[0] == (0, b"m%d" % (i + 1))
    assert list(q) == [(0, b"m%d" % i) for i in range(60, 100)]
    with pytest.raises(IndexError):
        q[40]
    with pytest.raises(IndexError):
        q[-41]
    for sn in range(100, 120):  # more arrives while part of the queue is consumed
        assert k.input(seg(IKCP_CMD_PUSH, sn, data=b"m%d" % sn)) == 0
    assert [k.recv() for _ in range(60)] == [b"m%d" % i for i in range(60, 120)]
    assert k.recv() is None and not q and len(q) == 0 and list(q) == []


def test_fragments_split_by_a_partly_consumed_queue_reassemble() -> None:
    """A message whose fragments arrive while earlier messages are half read."""
    k, _ = engine()
    k.flush(0)
    for sn in range(20):
        assert k.input(seg(IKCP_CMD_PUSH, sn, data=b"a%d" % sn)) == 0
    assert [k.recv() for _ in range(18)] == [b"a%d" % i for i in range(18)]
    assert k.input(seg(IKCP_CMD_PUSH, 20, frg=1, data=b"x")) == 0
    assert k.recv() == b"a18" and k.recv() == b"a19"
    assert k.peeksize() == -1 and k.recv() is None  # the last fragment has not come
    assert k.input(seg(IKCP_CMD_PUSH, 21, frg=0, data=b"y")) == 0
    assert k.peeksize() == 2 and k.recv() == b"xy" and k.recv() is None


def test_acknowledged_segments_are_reused_and_release_their_payload() -> None:
    a, a_out = sending(8, [b"p%d" % i for i in range(8)])
    first = list(a.snd_buf)
    assert [s.data for s in first] == [b"p%d" % i for i in range(8)]
    assert a.input(seg(IKCP_CMD_ACK, 7, una=8)) == 0  # una 8: all eight acknowledged
    assert not a.snd_buf and all(s.data == b"" for s in first)  # pooled, payloads released
    for i in range(12):
        a.send(b"q%d" % i)
    a.flush(10)
    assert len(a.snd_buf) == 8 and a.nsnd_que == 4
    assert {id(s) for s in a.snd_buf} == {id(s) for s in first}  # the same objects, renewed
    assert [(s.sn, s.data, s.xmit, s.acked, s.ts0) for s in a.snd_buf] == [
        (8 + i, b"q%d" % i, 1, False, 10) for i in range(8)
    ]
    sent = [s for dg in a_out for s in split(dg)]
    assert [(s[5], s[7]) for s in sent[8:]] == [(8 + i, b"q%d" % i) for i in range(8)]


def test_segment_pool_holds_at_most_one_send_window() -> None:
    a, _ = sending(4, [b"x"] * 4)
    a.wndsize(2, 128)  # a smaller window: the pool keeps 2 of the 4 freed objects
    assert a.input(seg(IKCP_CMD_ACK, 3, una=4)) == 0
    assert len(a._pool) == 2


def test_acks_carry_the_acknowledged_segments_ts_and_sn() -> None:
    k, out = engine()
    k.flush(0)
    for sn, ts in ((0, 0xDEADBEEF), (1, 7), (5, 0x12345678)):
        assert k.input(seg(IKCP_CMD_PUSH, sn, ts=ts, data=b"d")) == 0
    assert k.acks_pending() == 3
    k.flush(0)
    (dg,) = out
    acks = split(dg)
    assert [(c, cmd, frg, ts, sn, una, d) for c, cmd, frg, _w, ts, sn, una, d in acks] == [
        (CONV, IKCP_CMD_ACK, 0, 0xDEADBEEF, 0, 2, b""),
        (CONV, IKCP_CMD_ACK, 0, 7, 1, 2, b""),
        (CONV, IKCP_CMD_ACK, 0, 0x12345678, 5, 2, b""),
    ]
    assert k.acks_pending() == 0
