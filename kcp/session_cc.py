"""Driving a :class:`kcp.congestion.BBRLite` from a KCP engine, without changing the engine.

A session configured with ``congestion="bbr"`` keeps one :class:`SessionCC` beside its engine
(sans-I/O: it reads the engine's fields and counters, and takes ``now``):

* :meth:`SessionCC.after_input` (after each receive batch) counts the segments newly
  acknowledged (cumulatively or selectively) and hands them, the engine's smoothed RTT and the
  segments still in flight to the controller;
* :meth:`SessionCC.before_flush` sets the engine's congestion window (``cwnd`` with
  ``nocwnd=0``) so that the flush sends no more new segments than the controller's window and
  its pacing budget allow. ikcp counts its window from ``snd_una``, including segments the peer
  already acknowledged out of order, so those are added back: the controller's window bounds
  what is really in flight. Retransmissions are not held back (ikcp sends them regardless);
* :meth:`SessionCC.after_flush` charges what the flush sent (new data and retransmissions) to the
  pacing budget and reports retransmissions;
* :meth:`SessionCC.next_send` names when a session whose data waits only for the pacer should be
  woken.

Calls and events stay out of the controller's way, and off its cost: while the controller has
never measured a bandwidth with data waiting (it is then unpaced, in STARTUP, with a window of at
least ``initial_cwnd`` segments) and at most :data:`BULK_FLIGHT` segments are queued or in flight,
the session is *quiet*: its flushes are the engine's own, with the configured ``nc``, and its
receive batches only keep the counts above in step (the controller is not called). That is
exactly what the controller would have let out.

ikcp's own window logic still runs inside the engine but its result is overwritten before each
flush the session makes.
"""

from __future__ import annotations

from kcp.congestion import BBRLite
from kcp.engine import KCP

__all__ = ["SessionCC"]

_MASK = 0xFFFFFFFF
BULK_FLIGHT = 8  # segments in flight above which the RTO floor applies (kcp.session_setup's SPARSE_FLIGHT)


class SessionCC:
    """One session's congestion controller and the engine bookkeeping it needs."""

    __slots__ = (
        "_counters",
        "_delivered",
        "_in_quiet",
        "_measuring",
        "_minrto",
        "_nocwnd",
        "_nxt",
        "_out_bytes",
        "_retrans",
        "_sacked",
        "_sent",
        "cc",
    )

    def __init__(self, eng: KCP, cc: BBRLite | None = None) -> None:
        self.cc = cc if cc is not None else BBRLite(eng.mss)
        c = eng.counters
        self._counters = c
        self._nxt = eng.snd_nxt
        self._minrto = eng.rx_minrto  # the configured floor (nodelay's 30 ms)
        self._nocwnd = eng.nocwnd  # the configured nc, for quiet flushes
        self._measuring = self.cc.measured  # once True, never quiet again
        self._in_quiet = True  # the engine has its configured window and RTO
        self._sent = 0  # new segments sent, cumulative
        self._delivered = 0  # of those, acknowledged
        self._sacked = 0  # acknowledged out of order, still inside ikcp's window
        self._out_bytes = c.out_bytes if c is not None else 0
        self._retrans = c.retrans_segs if c is not None else 0

    @property
    def measuring(self) -> bool:
        """Whether the controller has measured a bulk flow (from then on it is never quiet)."""
        return self._measuring

    def quiet(self, eng: KCP) -> bool:
        """Calls and events: the controller is not measuring (never had data waiting) and at
        most :data:`BULK_FLIGHT` segments are queued or in flight (its window, at least
        ``initial_cwnd``, and its pacer, off, would not hold any back)."""
        return not self._measuring and len(eng.snd_buf) + len(eng.snd_queue) <= BULK_FLIGHT

    def after_input(self, eng: KCP, now: int) -> None:
        nxt = eng.snd_nxt
        self._sent += (nxt - self._nxt) & _MASK
        self._nxt = nxt
        nbuf = len(eng.snd_buf)
        unacked = eng.nsnd_buf  # the engine counts those acknowledged out of order
        delivered = self._sent - unacked
        acked = delivered - self._delivered
        self._delivered = delivered
        self._sacked = nbuf - unacked
        if self.quiet(eng):
            return
        cc = self.cc
        cc.on_ack(now, acked * eng.mss, eng.rx_srtt, unacked, app_limited=not eng.snd_queue)
        self._measuring = cc.measured

    def _quiet_flush(self, eng: KCP) -> bool:
        """Whether the coming flush is :meth:`quiet`; if so, the engine has its own window (the
        configured ``nc``) and RTO again for it."""
        if not self.quiet(eng):
            return False
        if not self._in_quiet:
            self._in_quiet = True
            eng.nocwnd = self._nocwnd
            if eng.rx_minrto != self._minrto:
                eng.rx_minrto = self._minrto
        return True

    def before_flush(self, eng: KCP, now: int) -> None:
        cc = self.cc
        if self._in_quiet:  # what quiet flushes sent is not charged
            self._in_quiet = False
            c = self._counters
            if c is not None:
                self._out_bytes = c.out_bytes
                self._retrans = c.retrans_segs
        eng.nocwnd = 0
        if cc.mss != eng.mss:  # set_mtu() or a path MTU probe changed the segment size
            cc.mss = eng.mss
        srtt = eng.rx_srtt
        used = (eng.snd_nxt - eng.snd_una) & _MASK
        if srtt and used > BULK_FLIGHT and self._measuring:
            # The pacer keeps the RTT steady, so ikcp's RTO (srtt + max(interval, 4 x rttval))
            # comes within a few ms of it and a probe, a burst or a queue building up fires
            # retransmissions of segments that were only queued. Fast resend repairs random
            # loss in a bulk flight; its RTO is for tail losses and may wait 2 x srtt. A flight
            # the controller never paced (a response or a state snapshot of a few dozen segments,
            # sent at once and app-limited) keeps ikcp's RTO: its tail is often what is lost, and
            # no later segment can fast-resend it.
            floor = 2 * srtt
            if floor < self._minrto:
                floor = self._minrto
            eng.rx_minrto = floor
            if eng.rx_rto < floor:
                eng.rx_rto = floor
        elif eng.rx_minrto != self._minrto:
            eng.rx_minrto = self._minrto  # small flights: the configured RTO and loss recovery
        allow = cc.cwnd + self._sacked
        if cc.pacing_rate > 0:
            q = cc.quota(now)
            paced = used + (int(q / eng.mss) + 1 if q > 0 else 0)
            if paced < allow:
                allow = paced
        eng.cwnd = allow if allow > 1 else 1

    def after_flush(self, eng: KCP, now: int) -> None:
        c = self._counters
        if c is None:
            return
        ob = c.out_bytes
        if ob != self._out_bytes:
            self.cc.on_send(now, ob - self._out_bytes)
            self._out_bytes = ob
        r = c.retrans_segs
        if r != self._retrans:
            self.cc.on_loss(now, r - self._retrans)
            self._retrans = r

    def update(self, eng: KCP, now: int) -> None:
        """``eng.update(now)`` under the controller (the window set before, what went out charged
        after); with data waiting, a flush too: the pacer's wake-up falls between two intervals."""
        if self._quiet_flush(eng):
            eng.update(now)
            return
        self.before_flush(eng, now)
        eng.update(now)
        if eng.snd_queue:
            eng.flush(now)
        self.after_flush(eng, now)

    def flush(self, eng: KCP, now: int) -> None:
        """``eng.flush(now)`` under the controller (the engine's own when quiet)."""
        if self._quiet_flush(eng):
            eng.flush(now)
            return
        self.before_flush(eng, now)
        eng.flush(now)
        self.after_flush(eng, now)

    def next_send(self, eng: KCP, now: int) -> int:
        """When to wake for the pacer (-1: no need: nothing waits, or the window is full)."""
        cc = self.cc
        if not eng.snd_queue or cc.pacing_rate <= 0:
            return -1
        if ((eng.snd_nxt - eng.snd_una) & _MASK) >= cc.cwnd + self._sacked:
            return -1  # window-limited: the next acks wake the session
        return cc.next_send_time(now)
