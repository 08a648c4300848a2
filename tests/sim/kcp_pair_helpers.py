"""What the seeded KCP pair simulations share (test_congestion_sim.py, test_medium_messages_sim.py):
one millisecond of a one-way flow between a sender and a receiver engine across two
:class:`kcp.simlink.SimLink` directions, driven as :class:`kcp.session.KCPSession` drives them."""

from __future__ import annotations

from kcp.engine import KCP
from kcp.simlink import SimLink


def exchange(ab: SimLink, ba: SimLink, sender: KCP, receiver: KCP, now: int) -> tuple[int, bool]:
    """At ``now``: the receiver takes what arrived and the application reads all of it, the
    receiver flushes its acks (``ack_nodelay``), and the sender takes the acks that arrived.
    Returns the bytes read and whether any ack came back."""
    ab.now = ba.now = now
    for d in ab.deliver(now):
        receiver.input(d, now)
    got = 0
    while (m := receiver.recv()) is not None:
        got += len(m)
    receiver.flush(now)
    acked = False
    for d in ba.deliver(now):
        sender.input(d, now)
        acked = True
    return got, acked
