"""The per-delivery work of a push fan-out (docs/BENCHMARKS.md "Performance (issue 16)", "Fan-out"):
what a session does, and does not do, per datagram it receives and per datagram batch it sends."""

from __future__ import annotations


import kcp
from kcp.engine import IKCP_CMD_ACK, KCP, SEGMENT_HEADER


def _ack_packet(conv: int, sn: int, una: int) -> bytes:
    """One bare ikcp ACK segment (what a subscriber sends back per delivery)."""
    return SEGMENT_HEADER.pack(conv, IKCP_CMD_ACK, 0, 128, 0, sn, una, 0)


async def test_a_pure_ack_asks_for_no_flush_but_data_and_queued_writes_do() -> None:
    lis = await kcp.listen("127.0.0.1", 0)
    try:
        s = await kcp.dial("127.0.0.1", lis.address[1])
        try:
            assert s.ack_nodelay  # the default: acks are flushed after each receive batch
            ep = s._ep  # noqa: SLF001 - the flush queue is the endpoint's
            now = ep.timers.now_ms()
            ep.flushq.clear()
            s.feed(_ack_packet(s.conv, 0, 0), now)
            s.after_input(now)
            assert s not in ep.flushq  # an ACK alone leaves nothing to send: no flush

            out: list[bytes] = []
            peer = KCP(s.conv, out.append)  # a peer's data segment: it needs an ack back, so a flush
            peer.send(b"event")
            peer.update(now)
            peer.flush(now)
            (packet,) = out
            s.feed(bytes(packet), now)
            s.after_input(now)
            assert ep.flushq.count(s) == 1
            s.flush_now(now)
            ep.flushq.clear()

            s.write(b"unacked")  # data waiting for its ack: an ACK input still flushes (window)
            s.flush_now(now)
            ep.flushq.clear()
            s.feed(_ack_packet(s.conv, 99, 0), now)
            s.after_input(now)
            assert ep.flushq.count(s) == 1
        finally:
            s.abort()
    finally:
        lis.close()
        await lis.wait_closed()


def test_engine_acks_pending_counts_what_the_next_flush_acknowledges() -> None:
    out: list[bytes] = []
    a, b = KCP(7, out.append), KCP(7)
    a.nodelay(1, 10, 2, 1)  # no congestion window: both segments go at once
    a.send(b"x")
    a.send(b"y")
    a.update(0)
    a.flush(0)
    assert b.acks_pending() == 0
    for p in out:
        b.input(p, 1)
    assert b.acks_pending() == 2
    b.flush(1)
    assert b.acks_pending() == 0
