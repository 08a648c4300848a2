"""Read coalescing for a busy listening socket, as Linux's NAPI does for a network card.

A socket read at each readiness costs the event loop a wake-up per datagram once datagrams arrive
one at a time, as independent devices send them: the poll, the callback, a ``recvmmsg`` for one
datagram, and a ``sendmmsg`` for the one reply or ack it made. Thousands of quiet connections
(a call or a heartbeat each now and then) spend most of a server's time there, not in their
datagrams (docs/BENCHMARKS.md, "RPC connections against a C load generator").

:class:`ReadCoalescer` decides, from the wake-ups it is told of, when such a socket is better read
on a timer: every ``hold`` seconds, all that arrived meanwhile in one batch, answered in one batch.
A datagram then waits at most ``hold`` in the kernel's buffer. It switches

* to timed reads when readiness wake-ups come faster than ``1.25 / hold`` a second, over a window
  of ``window`` seconds (timed reads would wake the loop less often);
* back to readiness when the timed reads of a window found less than one datagram each on average
  (readiness would wake the loop less often).

It is sans-I/O: time comes in as arguments. :class:`kcp.endpoint.Endpoint` does the reading.
"""

from __future__ import annotations

__all__ = ["ReadCoalescer"]


class ReadCoalescer:
    """When to read a socket on a timer instead of at each readiness (see the module's text).

    ``hold_ms``: the timer's period, in ms (>= 1); ``window``: the span, in seconds, over which
    wake-ups and timed reads are counted before a switch.
    """

    __slots__ = (
        "_got",
        "_polls",
        "_start",
        "_wakes",
        "enter_wakes",
        "entered",
        "hold",
        "left",
        "polled",
        "window",
    )

    def __init__(self, hold_ms: int, *, window: float = 0.05) -> None:
        if type(hold_ms) is not int or hold_ms < 1:
            raise ValueError(f"hold_ms must be an int >= 1, got {hold_ms!r}")
        if not window > 0:
            raise ValueError(f"window must be > 0, got {window!r}")
        self.hold = hold_ms / 1000.0
        """Seconds between timed reads."""
        self.window = window
        self.enter_wakes = max(2, int(1.25 * window / self.hold))
        """Readiness wake-ups in one window past which reading goes on the timer."""
        self.polled = False
        """True while the socket is read on the timer."""
        self.entered = 0  # switches to timed reads
        self.left = 0  # switches back to readiness
        self._start = float("-inf")
        self._wakes = 0
        self._polls = 0
        self._got = 0

    def woke(self, now: float) -> bool:
        """A readiness wake-up at ``now``; True: read on the timer from now on (the caller stops
        watching the socket and arms the first timed read)."""
        if now - self._start >= self.window:
            self._start = now
            self._wakes = 0
        self._wakes += 1
        if self._wakes <= self.enter_wakes:
            return False
        self.polled = True
        self.entered += 1
        self._start = now
        self._polls = self._got = 0
        return True

    def read(self, now: float, got: int) -> bool:
        """A timed read at ``now`` found ``got`` datagrams; True: arm the next one, False: watch
        the socket for readiness again."""
        self._polls += 1
        self._got += got
        if now - self._start < self.window:
            return True
        keep = self._got >= self._polls
        self._start = now
        self._polls = self._got = 0
        if not keep:
            self.polled = False
            self.left += 1
            self._wakes = 0
        return keep

    def reset(self) -> None:
        """Back to readiness, the counts of the current window forgotten (a new socket)."""
        self.polled = False
        self._start = float("-inf")
        self._wakes = self._polls = self._got = 0
