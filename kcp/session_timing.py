"""When a KCP session next needs its timer, and the error it ends with when the link dies.

Pure functions over a :class:`kcp.engine.KCP`, used by :class:`kcp.session.KCPSession`.
"""

from __future__ import annotations

from kcp.batch import Address
from kcp.engine import KCP
from kcp.errors import DeadLinkError

__all__ = ["dead_link_error", "next_wake"]


def next_wake(eng: KCP, ack_nodelay: bool, now: int) -> int:
    """When the engine next has something to do on its own.

    ikcp's ``check()`` never looks further than one ``interval`` ahead, because its flush also
    carries delayed acks and window probes. With ``ack_nodelay`` the session flushes acks
    (and any data the acks let out) right after each receive batch, so while a few segments
    are merely waiting for their ack the only timed event is the earliest retransmission.
    Waking at that time instead of every interval keeps thousands of sessions with a message
    in flight cheap. Bulk transfers (many segments in flight), window probes and delayed acks
    keep ikcp's cadence.
    """
    buf = eng.snd_buf
    if not ack_nodelay or eng.probe or not eng.rmt_wnd or len(buf) > 32 or not buf:
        return eng.check(now)
    current = now & 0xFFFFFFFF
    best = 0x7FFFFFFF
    for seg in buf:
        if not seg.acked:
            d = (seg.resendts - current) & 0xFFFFFFFF
            if d >= 0x80000000:
                return now  # overdue
            if d < best:
                best = d
    if best == 0x7FFFFFFF:
        return eng.check(now)
    return now + best


def dead_link_error(eng: KCP, remote: Address) -> DeadLinkError:
    return DeadLinkError(
        f"KCP session {eng.conv} to {remote}: dead link "
        f"(a segment was sent {eng.dead_link} times without an ack)"
    )
