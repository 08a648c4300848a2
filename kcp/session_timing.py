"""When a KCP session next needs its timer, and the error it ends with when the link dies.

Functions over a :class:`kcp.engine.KCP`, and :class:`NearWake`, the session's second entry in the
timer heap; used by :class:`kcp.session.KCPSession`.
"""

from __future__ import annotations

from typing import Protocol

from kcp.batch import Address
from kcp.engine import KCP
from kcp.errors import DeadLinkError
from kcp.timers import NO_ENTRY, InputSource

__all__ = ["NearWake", "dead_link_error", "next_wake"]


class _Waking(Protocol):
    def _on_timer(self, now: int) -> None: ...


class NearWake:
    """A session's second entry in the timer heap: its near, short-lived wake-ups (a retransmission,
    the pacer's next send, acks waiting for data to ride with), apart from its far ones (the idle
    deadline, the path's timers) in the session's own entry.

    A fan-out's delivery sets a retransmission wake-up and its ack removes it a millisecond later.
    With one entry, both moved it (the far deadline, then the retransmission, then the far deadline
    again): two heap insertions per delivery. Here the ack only drops this entry, and the far entry,
    which moves later at every ack, stays where it is until it fires (kcp.timers, ``horizon``)."""

    __slots__ = ("_timer_entry", "_timer_input", "owner")

    def __init__(self, owner: _Waking, source: InputSource) -> None:
        self._timer_entry = NO_ENTRY  # TimerTarget
        self._timer_input = source  # as the session's: pending acks are read before it fires
        self.owner = owner

    def _on_timer(self, now: int) -> None:
        self.owner._on_timer(now)


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
