"""Repeated acks in the engine (docs/wire-format/kcp.md, "Repeated acks"): with ``ack_repeat`` on
both ends, the ACK of a segment that came above a hole goes again as a REACK with the next two
flushes that send ACKs, until ``rcv_nxt`` passes it; a sender takes a REACK as the ACK it repeats,
without an RTT sample or a fast-ack count. Without ``ack_repeat`` nothing changes: no REACK is sent,
and one received is refused as ikcp refuses an unknown command. All in virtual time."""

from __future__ import annotations

from kcp.engine import (
    ACK_REPEATS,
    IKCP_CMD_ACK,
    IKCP_CMD_PUSH,
    IKCP_CMD_REACK,
    KCP,
    SEGMENT_HEADER,
)
from kcp.stats import Counters

CONV = 9


def _engine(out: list[bytes], repeat: bool = True) -> KCP:
    e = KCP(CONV, out.append)
    e.nodelay(1, 10, 2, 1)
    e.ack_repeat = repeat
    e.counters = Counters()
    return e


def _segments(datagrams: list[bytes]) -> list[tuple[int, int, int]]:
    """(cmd, sn, una) of every segment of ``datagrams``."""
    segs = []
    for d in datagrams:
        off = 0
        while off + SEGMENT_HEADER.size <= len(d):
            _conv, cmd, _frg, _wnd, _ts, sn, una, ln = SEGMENT_HEADER.unpack_from(d, off)
            segs.append((cmd, sn, una))
            off += SEGMENT_HEADER.size + ln
    return segs


def _pushes(n: int) -> list[bytes]:
    """``n`` one-segment datagrams, sn 0..n-1, from a sender with a wide window."""
    sent: list[bytes] = []
    tx = KCP(CONV, sent.append)
    tx.nodelay(1, 10, 2, 1)
    tx.wndsize(64, 64)
    for i in range(n):
        tx.send(b"m%d" % i)
        tx.flush(i)
    assert len(sent) == n
    return sent


def _above_a_hole(n: int) -> tuple[KCP, list[bytes], list[bytes]]:
    """A receiver that got sn 0 and 2 of ``n`` pushes (1 lost) and flushed their ACKs: the
    receiver, its output (cleared) and the pushes."""
    pushes = _pushes(n)
    out: list[bytes] = []
    rx = _engine(out)
    rx.input(pushes[0], 10)
    rx.input(pushes[2], 10)
    rx.flush(10)
    out.clear()
    return rx, out, pushes


def _reacks(out: list[bytes]) -> list[int]:
    return [sn for cmd, sn, _una in _segments(out) if cmd == IKCP_CMD_REACK]


def test_an_ack_above_a_hole_goes_again_with_the_next_two_ack_flushes() -> None:
    pushes = _pushes(6)
    out: list[bytes] = []
    rx = _engine(out)
    rx.input(pushes[0], 10)  # in order: no repeat ever
    rx.input(pushes[2], 10)  # sn 1 lost: 2 and 3 come above the hole
    rx.input(pushes[3], 10)
    rx.flush(10)
    assert [(c, sn) for c, sn, _u in _segments(out)] == [
        (IKCP_CMD_ACK, 0),
        (IKCP_CMD_ACK, 2),
        (IKCP_CMD_ACK, 3),
    ]
    out.clear()
    rx.flush(20)  # nothing to ack: a REACK never goes alone
    assert out == []
    rx.input(pushes[4], 30)
    rx.flush(30)
    segs = _segments(out)
    assert [(c, sn) for c, sn, _u in segs] == [(IKCP_CMD_ACK, 4), (IKCP_CMD_REACK, 2), (IKCP_CMD_REACK, 3)]
    assert all(una == 1 for _c, _sn, una in segs)  # the hole still holds rcv_nxt
    out.clear()
    rx.input(pushes[5], 40)
    rx.flush(40)
    assert _reacks(out) == [2, 3, 4]  # 2 and 3 the second time, 4 the first
    out.clear()
    rx.input(pushes[5], 50)  # (a duplicate: its ACK goes again, as in ikcp, but it is no new repeat)
    rx.flush(50)
    assert _reacks(out) == [4, 5]  # 2 and 3 had their ACK_REPEATS repeats
    assert ACK_REPEATS == 2
    assert rx.counters is not None and rx.counters.reacks_sent == 2 + 3 + 2


def test_no_repeat_once_rcv_nxt_passes_the_segment() -> None:
    rx, out, pushes = _above_a_hole(4)
    rx.input(pushes[1], 20)  # the hole is filled: every segment's una now acknowledges sn 2
    rx.flush(20)
    assert _segments(out) == [(IKCP_CMD_ACK, 1, 3)]
    out.clear()
    rx.input(pushes[3], 30)
    rx.flush(30)
    assert _reacks(out) == []


def test_an_engine_without_ack_repeat_sends_none_and_refuses_one() -> None:
    pushes = _pushes(4)
    out: list[bytes] = []
    rx = _engine(out, repeat=False)
    for i in (0, 2, 3):
        rx.input(pushes[i], 10)
        rx.flush(10 + i)
    assert _reacks(out) == []
    # ikcp refuses command 85 and the rest of its datagram: so does an engine that did not agree
    tx_out: list[bytes] = []
    tx = _engine(tx_out, repeat=False)
    tx.send(b"x")
    tx.flush(0)
    reack = SEGMENT_HEADER.pack(CONV, IKCP_CMD_REACK, 0, 128, 0, 0, 0, 0)
    assert tx.input(reack, 5) == -3
    assert tx.nsnd_buf == 1
    assert tx.counters is not None and tx.counters.kcp_in_errors == 1


def test_a_reack_saves_the_fast_resend_of_a_segment_whose_ack_was_lost() -> None:
    for repeat in (False, True):
        out: list[bytes] = []
        tx = _engine(out, repeat)
        tx.wndsize(64, 64)
        for i in range(6):
            tx.send(b"s%d" % i)
        tx.flush(0)
        out.clear()
        rx_out: list[bytes] = []
        rx = _engine(rx_out, repeat)
        # sn 0 is lost; sn 1 arrives and is acked, but that ACK is lost; sn 2..5 arrive one by one
        # and each ACK comes back (with a REACK of sn 1 in the first two when agreed)
        acks: list[bytes] = []
        for sn in (1, 2, 3, 4, 5):
            seg = SEGMENT_HEADER.pack(CONV, IKCP_CMD_PUSH, 0, 128, 0, sn, 0, 1) + b"x"
            rx.input(seg, 10 + sn)
            rx.flush(10 + sn)
            acks.extend(rx_out)
            rx_out.clear()
        for i, d in enumerate(acks[1:]):  # the first, the ACK of sn 1, is lost
            tx.input(d, 40 + i)
        tx.flush(50)
        resent = [sn for cmd, sn, _una in _segments(out) if cmd == IKCP_CMD_PUSH]
        if repeat:
            assert resent == [0]  # only the segment that was lost
            assert tx.counters is not None and tx.counters.reacks_useful == 1
        else:
            assert resent == [0, 1]  # ikcp: sn 1 is resent though it arrived
        assert tx.nsnd_buf == 2 - repeat


def test_a_reack_gives_no_rtt_sample() -> None:
    out: list[bytes] = []
    tx = _engine(out)
    tx.wndsize(64, 64)
    for i in range(2):
        tx.send(b"s%d" % i)
    tx.flush(0)
    tx.input(SEGMENT_HEADER.pack(CONV, IKCP_CMD_ACK, 0, 128, 0, 0, 0, 0), 20)
    assert tx.rx_srtt == 20
    # a REACK of sn 1 whose ACK was lost, 500 ms later: the segment is acknowledged, the RTT kept
    tx.input(SEGMENT_HEADER.pack(CONV, IKCP_CMD_REACK, 0, 128, 0, 1, 0, 0), 500)
    assert tx.rx_srtt == 20 and tx.nsnd_buf == 0


def test_drop_unsent_forgets_the_repeats() -> None:
    rx, out, pushes = _above_a_hole(3)
    rx.drop_unsent()
    rx.input(pushes[2], 20)  # a duplicate: acked again, but sn 2's repeats were forgotten
    rx.flush(20)
    assert _reacks(out) == []
