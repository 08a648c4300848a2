"""Datagram packetization-layer path MTU discovery (DPLPMTUD, RFC 8899), sans-I/O.

:class:`Pmtud` decides which probe sizes to send and when, and what the packetization layer's MTU
(``plpmtu``, a UDP payload size) is. The caller sends each probe that :meth:`Pmtud.poll` returns
(secure mode: a padded, authenticated PING that carries the probe id, answered by the peer with a
PING_ACK, see docs/security.md), reports answers with :meth:`Pmtud.on_ack`, and applies
:attr:`Pmtud.plpmtu` to its engine. Nothing here reads a clock or touches a socket: every method
takes ``now`` (ms).

The machine, after RFC 8899 section 5:

* ``SEARCHING``: one probe at a time. The first candidate is ``maximum`` (it passes on most
  paths, and on loopback); after that, a binary search between the largest confirmed size and the
  smallest failed one, until they are less than ``step`` bytes apart. A probe unanswered after
  :attr:`Pmtud.probe_timeout` is lost; ``max_probes`` (RFC's MAX_PROBES, 3) losses of one size
  mark it too big. An answered probe raises ``plpmtu`` at once.
* The probe timeout follows the path's round-trip time, measured on the probes' own answers
  (and seeded with ``rtt``, the handshake's): ``max(3 x SRTT, SRTT + 4 x RTTVAR, min_timeout_ms)``,
  at most ``probe_timeout_ms``, which also applies while there is no sample. RFC 8899 asks a PL
  without an RTT estimate for at least 1 s; one with an estimate declares a probe lost as it
  declares data lost (QUIC does so), so a search takes a few round trips, not seconds per step.
* ``SEARCH_COMPLETE``: after ``raise_ms`` (RFC's PMTU_RAISE_TIMER, 600 s) the search runs again,
  in case the path grew. Every ``confirm_ms``, and soon when the caller reports a suspicion
  (:meth:`Pmtud.suspect`: data is being retransmitted), a confirmation round sends one probe of
  the current ``plpmtu`` and one of ``base``. Raises and periodic rounds wait for traffic
  (:meth:`Pmtud.note_traffic`): an idle path is not probed.
* Black hole: ``max_probes`` rounds in a row where the ``plpmtu``-sized probe was lost while the
  ``base``-sized one was answered mean the path no longer carries ``plpmtu``: it falls back to
  ``base`` (RFC's BASE_PLPMTU) and searches again below the size that failed. A round where both
  were lost says nothing about the size (the path may be down) and counts for nothing.

Losing probes never lowers ``plpmtu``: only a black hole does.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["Pmtud", "PmtudState", "udp_payload_max"]


def udp_payload_max(link_mtu: int, ipv6: bool) -> int:
    """The largest UDP payload on a path whose IP MTU is ``link_mtu`` (1500 → 1472 over IPv4,
    1452 over IPv6)."""
    return link_mtu - (40 if ipv6 else 20) - 8


class PmtudState(str, enum.Enum):
    """Where the search is (RFC 8899's states; BASE and ERROR are not needed: the session already
    runs at its negotiated MTU when probing starts)."""

    SEARCHING = "searching"
    SEARCH_COMPLETE = "search_complete"


IDLE: Final = 1 << 62
"""What :meth:`Pmtud.timer` returns while nothing is due (an idle session)."""

_KEEP_SENT: Final = 16  # probes whose send time is kept for an RTT sample from a late answer
SEARCHING: Final[PmtudState] = PmtudState.SEARCHING
SEARCH_COMPLETE: Final[PmtudState] = PmtudState.SEARCH_COMPLETE


class Pmtud:
    """One path's DPLPMTUD state machine (see the module docstring)."""

    __slots__ = (
        "_active",
        "_confirm_at",
        "_confirm_big",
        "_confirm_failures",
        "_confirm_small",
        "_confirm_small_acked",
        "_due",
        "_hi",
        "_inflight",
        "_last_round",
        "_lo",
        "_losses",
        "_next_id",
        "_raise_at",
        "_sent_at",
        "_size",
        "_suspected",
        "base",
        "black_holes",
        "confirm_ms",
        "max_probes",
        "maximum",
        "min_timeout_ms",
        "plpmtu",
        "probe_timeout_ms",
        "probes_acked",
        "probes_lost",
        "probes_sent",
        "raise_ms",
        "rttvar",
        "srtt",
        "state",
        "step",
    )

    def __init__(
        self,
        *,
        start: int,
        base: int,
        maximum: int,
        now: int,
        probe_timeout_ms: int = 1000,
        max_probes: int = 3,
        raise_ms: int = 600_000,
        confirm_ms: int = 15_000,
        step: int = 16,
        rtt: int = 0,
        min_timeout_ms: int = 100,
    ) -> None:
        if not 0 < base <= start:
            raise ValueError(f"need 0 < base <= start, got base={base} start={start}")
        if probe_timeout_ms <= 0 or max_probes < 1 or raise_ms <= 0 or confirm_ms <= 0 or step < 1:
            raise ValueError("probe_timeout_ms, raise_ms, confirm_ms must be > 0; max_probes, step >= 1")
        if rtt < 0 or min_timeout_ms <= 0:
            raise ValueError("need rtt >= 0 and min_timeout_ms > 0")
        self.base = base
        self.maximum = max(maximum, start)
        self.plpmtu = start
        self.probe_timeout_ms = probe_timeout_ms
        self.min_timeout_ms = min_timeout_ms
        self.srtt = rtt
        """Smoothed round-trip time of the probes' answers (ms; 0: no sample yet)."""
        self.rttvar = rtt // 2
        # probe id -> (when it was sent, its size if a search probe else 0), for the recent ones
        self._sent_at: dict[int, tuple[int, int]] = {}
        self.max_probes = max_probes
        self.raise_ms = raise_ms
        self.confirm_ms = confirm_ms
        self.step = step
        self.probes_sent = 0
        self.probes_acked = 0
        self.probes_lost = 0
        self.black_holes = 0
        self._next_id = 1
        self._inflight: dict[int, int] = {}  # probe id -> size, of the current probe (all its copies)
        self._size = 0  # the size being probed (0: none)
        self._losses = 0  # copies of _size lost so far
        self._due = now  # when the current probe times out, or the next one is due
        self._confirm_big = 0
        self._confirm_small = 0
        self._confirm_small_acked = False
        self._confirm_failures = 0
        self._confirm_at = 0
        self._raise_at = 0
        self._suspected = False
        self._active = False
        self._last_round = now
        self.state: PmtudState = SEARCHING
        self._lo = start
        self._hi = self.maximum + 1  # smallest size known too big (maximum + 1: none yet)
        if self._next_candidate() == 0:
            self._complete(now)

    # ------------------------------------------------------------------------------ queries

    def timer(self) -> int:
        """When :meth:`poll` has something to do (ms)."""
        if self.state is SEARCHING:
            return self._due
        if self._confirm_big:
            return self._due
        t = IDLE
        if self._active:
            t = self._confirm_at if self._confirm_at < self._raise_at else self._raise_at
        if self._suspected:
            s = self._last_round + self.suspect_gap
            if s < t:
                t = s
        return t

    @property
    def probe_timeout(self) -> int:
        """How long an unanswered probe waits before it counts as lost (ms): three round trips
        (or the RTT plus four deviations, if larger), at least ``min_timeout_ms``, at most
        ``probe_timeout_ms`` (also used before the first RTT sample)."""
        srtt = self.srtt
        if srtt <= 0:
            return self.probe_timeout_ms
        t = max(3 * srtt, srtt + 4 * self.rttvar, self.min_timeout_ms)
        return t if t < self.probe_timeout_ms else self.probe_timeout_ms

    @property
    def suspect_gap(self) -> int:
        """The least time between two confirmation rounds that suspicion starts (ms): five of the
        longest probe timeouts, not of the RTT-based one, since on a randomly lossy path data is
        retransmitted all the time and each round costs two full-size probes."""
        return 5 * self.probe_timeout_ms

    def note_rtt(self, rtt: int) -> None:
        """One round-trip sample (ms), as RFC 6298 smooths them (the probes' answers feed it)."""
        if rtt < 0:
            return
        if self.srtt <= 0:
            self.srtt = max(1, rtt)
            self.rttvar = rtt // 2
            return
        self.rttvar = (3 * self.rttvar + abs(self.srtt - rtt)) // 4
        self.srtt = max(1, (7 * self.srtt + rtt) // 8)

    def snapshot(self) -> dict[str, int]:
        """Counters and the current MTU, for a session's stats."""
        return {
            "pmtu": self.plpmtu,
            "pmtud_probes_sent": self.probes_sent,
            "pmtud_probes_acked": self.probes_acked,
            "pmtud_probes_lost": self.probes_lost,
            "pmtud_black_holes": self.black_holes,
            "pmtud_searching": 1 if self.state is SEARCHING else 0,
            "pmtud_srtt": self.srtt,
        }

    # ------------------------------------------------------------------------------ driving

    def poll(self, now: int) -> list[tuple[int, int]]:
        """Probes to send now, as ``(probe_id, size)``; handles timeouts (lost probes)."""
        if now < self.timer():
            return []
        if self.state is SEARCHING:
            return self._poll_search(now)
        if self._confirm_big:
            again = self._end_confirm_round(now)
            if self.state is SEARCHING:
                return self._poll_search(now)
            if again:
                return self._start_confirm_round(now)  # the next round at once, until it is settled
            return []
        if now >= self._raise_at and self._active:
            self._raise_at = now + self.raise_ms
            if self.plpmtu < self.maximum:
                self._active = False
                self._search(now, self.plpmtu, self.maximum + 1)
                if self.state is SEARCHING:
                    return self._poll_search(now)
        if self.plpmtu <= self.base:
            self._confirm_at = self._raise_at  # nothing smaller to fall back to
            self._suspected = False
            return []
        if (self._active and now >= self._confirm_at) or (
            self._suspected and now >= self._last_round + self.suspect_gap
        ):
            return self._start_confirm_round(now)
        return []

    def on_ack(self, probe_id: int, now: int) -> bool:
        """The peer answered probe ``probe_id``. True if :attr:`plpmtu` changed."""
        sent = self._sent_at.pop(probe_id, None)
        if sent is not None:
            self.note_rtt(now - sent[0])  # a late answer too: the timeout was too short for this path
            late = sent[1]
            if late > self.plpmtu and probe_id not in self._inflight:
                # a search probe given up as lost (queued behind data, say) did cross: that size
                # passes after all; search on above it
                self.probes_acked += 1
                self.plpmtu = late
                self._search(now, late, self._hi if self._hi > late else late + 1)
                return True
        if probe_id == self._confirm_small and self._confirm_small:
            self._confirm_small_acked = True
            self._confirm_small = 0
            self.probes_acked += 1
            return False
        if probe_id == self._confirm_big and self._confirm_big:
            self.probes_acked += 1
            self._confirm_big = 0
            self._confirm_small = 0
            self._confirm_failures = 0
            self._confirm_at = now + self.confirm_ms
            return False
        size = self._inflight.get(probe_id)
        if size is None or self.state is not SEARCHING:
            return False  # stale: a probe of an earlier size or round
        self.probes_acked += 1
        self._inflight.clear()
        self._size = 0
        self._lo = size
        changed = size > self.plpmtu
        if changed:
            self.plpmtu = size
        self._due = now
        if self._next_candidate() == 0:
            self._complete(now)
        return changed

    def note_traffic(self) -> None:
        """Data was sent since the last call. Confirmation rounds and raises run only for a session
        that sends: an idle one costs no probes (a thousand idle sessions would send 180 KB/s)."""
        self._active = True

    def suspect(self) -> None:
        """Data is being lost (retransmissions) or the path moved: confirm the current size soon
        (at most one such round per :attr:`suspect_gap`)."""
        if self.state is SEARCH_COMPLETE and not self._confirm_big and self.plpmtu > self.base:
            self._suspected = True

    # ------------------------------------------------------------------------------ search

    def _next_candidate(self) -> int:
        lo, hi = self._lo, self._hi
        if hi > self.maximum:
            return self.maximum if self.maximum > lo else 0
        if hi - lo <= self.step:
            return 0
        return (lo + hi) // 2

    def _search(self, now: int, lo: int, hi: int) -> None:
        self.state = SEARCHING
        self._lo, self._hi = lo, hi
        self._inflight.clear()
        self._size = 0
        self._due = now
        if self._next_candidate() == 0:
            self._complete(now)

    def _complete(self, now: int) -> None:
        self.state = SEARCH_COMPLETE
        self._inflight.clear()
        self._size = 0
        self._raise_at = now + self.raise_ms
        self._confirm_at = now + self.confirm_ms

    def _poll_search(self, now: int) -> list[tuple[int, int]]:
        if self._size:  # the current probe timed out
            self.probes_lost += 1
            self._losses += 1
            if self._losses >= self.max_probes:
                self._hi = self._size  # too big
                self._inflight.clear()
                self._size = 0
        if not self._size:
            size = self._next_candidate()
            if size == 0:
                self._complete(now)
                return []
            self._size = size
            self._losses = 0
        return [self._send(self._size, now, self._inflight)]

    def _send(self, size: int, now: int, inflight: dict[int, int] | None) -> tuple[int, int]:
        pid = self._next_id
        self._next_id = pid + 1
        if inflight is not None:
            inflight[pid] = size
        sent_at = self._sent_at
        sent_at[pid] = (now, size if inflight is not None else 0)
        if len(sent_at) > _KEEP_SENT:
            del sent_at[next(iter(sent_at))]  # the oldest: its answer is not coming
        self.probes_sent += 1
        self._due = now + self.probe_timeout
        return (pid, size)

    # ------------------------------------------------------------------------------ confirmation

    def _start_confirm_round(self, now: int) -> list[tuple[int, int]]:
        big = self._send(self.plpmtu, now, None)
        small = self._send(self.base, now, None)
        self._confirm_big, self._confirm_small = big[0], small[0]
        self._confirm_small_acked = False
        self._suspected = False
        self._active = False
        self._last_round = now
        return [big, small]

    def _end_confirm_round(self, now: int) -> bool:
        """The round's time is up and its ``plpmtu`` probe was not answered. True: run the next
        round at once (the base passed, the size did not: a black hole is suspected)."""
        self.probes_lost += 1
        self._confirm_big = 0
        if self._confirm_small:
            self.probes_lost += 1
            self._confirm_small = 0
        if not self._confirm_small_acked:
            # the path is down? That says nothing of the size: try again later, with traffic
            self._confirm_at = now + self.suspect_gap
            return False
        self._confirm_failures += 1
        if self._confirm_failures < self.max_probes:
            return True
        # black hole: packets of plpmtu vanish while base-sized ones pass
        failed = self.plpmtu
        self.black_holes += 1
        self._confirm_failures = 0
        self.plpmtu = self.base
        self._search(now, self.base, failed)
        return False
