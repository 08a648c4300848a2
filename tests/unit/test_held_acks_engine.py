"""Held acks in the engine (docs/wire-format/kcp.md, "Held acks"): the receiver writes its hold into
its ACKs' ``frg``, and a sender that agreed to them (``hold_aware``) leaves the wait out of its RTT
sample, adds ``ACK_HOLD_MAX`` to its RTOs while the peer holds and takes it back, with the times
of the segments in flight, when an ACK comes at once again. All in virtual time."""

from __future__ import annotations

from kcp.engine import ACK_HOLD_MAX, ACK_HOLD_UNIT, IKCP_CMD_ACK, IKCP_CMD_PUSH, KCP, SEGMENT_HEADER

CONV = 7


def _engine(out: list[bytes]) -> KCP:
    e = KCP(CONV, out.append)
    e.nodelay(1, 10, 2, 1)
    return e


def _segments(datagrams: list[bytes]) -> list[tuple[int, int, int, int]]:
    """(cmd, frg, ts, sn) of every segment of ``datagrams``."""
    segs = []
    for d in datagrams:
        off = 0
        while off + SEGMENT_HEADER.size <= len(d):
            _conv, cmd, frg, _wnd, ts, sn, _una, ln = SEGMENT_HEADER.unpack_from(d, off)
            segs.append((cmd, frg, ts, sn))
            off += SEGMENT_HEADER.size + ln
    return segs


def _ack(sn: int, ts: int, frg: int, una: int = 0) -> bytes:
    return SEGMENT_HEADER.pack(CONV, IKCP_CMD_ACK, frg, 128, ts, sn, una, 0)


def test_the_receiver_writes_the_wait_of_its_first_ack_and_its_hold_into_the_rest() -> None:
    sent: list[bytes] = []
    peer = _engine(sent)
    for i in range(2):
        peer.send(b"event %d" % i)
    peer.flush(0)
    out: list[bytes] = []
    rx = _engine(out)
    for d in sent:
        assert rx.input(d, 10) == 0
    rx.ack_frg = 1
    rx.hold_first_ack(41)
    rx.flush(51)
    acks = [s for s in _segments(out) if s[0] == IKCP_CMD_ACK]
    assert [(frg, sn) for _cmd, frg, _ts, sn in acks] == [(1 + 41 // ACK_HOLD_UNIT, 0), (1, 1)]
    out.clear()
    rx.ack_frg = 0  # back to ikcp's acks: frg 0 (the first-ack frg was for one flush only)
    peer.send(b"event 2")
    peer.flush(60)
    rx.input(sent[-1], 70)
    rx.flush(70)
    assert [frg for cmd, frg, _ts, _sn in _segments(out) if cmd == IKCP_CMD_ACK] == [0]


def test_an_aware_sender_leaves_the_wait_out_of_its_rtt_and_adds_the_hold_to_its_rto() -> None:
    for aware in (False, True):
        out: list[bytes] = []
        tx = _engine(out)
        tx.hold_aware = aware
        tx.send(b"x")
        tx.flush(0)
        # the ack came back 60 ms after the send, 40 of which it was held (frg 11)
        assert tx.input(_ack(0, 0, 1 + 40 // ACK_HOLD_UNIT, una=1), 60) == 0
        if aware:
            assert tx.rx_srtt == 20 and tx.rto_extra == ACK_HOLD_MAX
        else:  # ikcp's reading: frg of an ACK means nothing, the whole wait is RTT
            assert tx.rx_srtt == 60 and tx.rto_extra == 0


def test_a_held_ack_never_looks_lost_and_an_ack_at_once_resends_the_gap_at_once() -> None:
    out: list[bytes] = []
    tx = _engine(out)
    tx.hold_aware = True
    tx.send(b"first")
    tx.flush(0)
    tx.input(_ack(0, 0, 1, una=1), 5)  # the peer holds from now on (frg 1: this one waited 0 ms)
    rto = tx.rx_rto
    assert tx.rto_extra == ACK_HOLD_MAX
    out.clear()
    tx.send(b"lost")
    tx.flush(100)  # sn 1: lost on the way
    tx.send(b"next")
    tx.flush(200)  # sn 2: arrives. sn 1's RTO (100 + rto) has passed, but not the hold on top
    assert 100 + rto < 200 < 100 + rto + ACK_HOLD_MAX
    assert [s[3] for s in _segments(out) if s[0] == IKCP_CMD_PUSH] == [1, 2]
    # the peer saw the gap and acked sn 2 at once (frg 0: no longer holding): sn 1's extra time
    # is taken back, and its RTO (100 + rto) has passed, so the next flush resends it
    out.clear()
    tx.input(_ack(2, 200, 0, una=1), 205)
    assert tx.rto_extra == 0
    tx.flush(210)
    assert [s[3] for s in _segments(out) if s[0] == IKCP_CMD_PUSH] == [1]


def test_the_receiver_counts_segments_that_come_out_of_order_or_again() -> None:
    sent: list[bytes] = []
    peer = _engine(sent)
    for i in range(3):
        peer.send(b"e%d" % i)
        peer.flush(i)
    rx = _engine([])
    order = [0, 2, 2, 1, 0]  # in order, a gap, the same again, the hole filled, an old one again
    counts = []
    for i in order:
        rx.input(sent[i], 10)
        counts.append(rx.disorder)
    assert counts == [0, 1, 2, 2, 3]
    assert [rx.recv() for _ in range(3)] == [b"e0", b"e1", b"e2"]


def test_data_from_the_peer_means_it_holds_no_acks() -> None:
    sent: list[bytes] = []
    peer = _engine(sent)
    peer.send(b"a request")
    peer.flush(0)
    tx = _engine([])
    tx.hold_aware = True
    tx.send(b"x")
    tx.flush(0)
    tx.input(_ack(0, 0, 1, una=0), 5)
    assert tx.rto_extra == ACK_HOLD_MAX
    tx.input(sent[0], 10)  # a PUSH: an end that sends data acks at once
    assert tx.rto_extra == 0
