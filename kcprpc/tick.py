"""The fixed-rate schedule of a simulation tick (sans-I/O; docs/game.md, "Scheduling").

:class:`TickSchedule` says which ticks are due at a given time. Tick ``n`` is due at
``start + n / hz``: every due time is computed from the tick's index, never by adding periods up,
so the schedule does not drift however long it runs. A caller woken late gets the ticks it
missed, at most ``max_catch_up`` of them at once: the others are skipped and counted (the
simulation falls behind real time by that much instead of bursting).

:func:`sends_between` decides, by integer arithmetic on tick indices, after which ticks state is
sent when it is sent at ``send_hz`` from a ``tick_hz`` tick: exactly ``send_hz`` sends per
``tick_hz`` ticks, whether ticks were run or skipped.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from kcprpc.errors import UsageError

__all__ = ["Due", "TickSchedule", "sends_between"]


class Due(NamedTuple):
    """The ticks due at one wake-up: run ``first .. first + run - 1``; ``missed`` ticks before
    ``first`` were skipped (they were due but past the catch-up cap)."""

    first: int
    run: int
    missed: int


class TickSchedule:
    """Which ticks of an ``hz`` schedule that began at ``start`` are due ``now`` (loop time in
    seconds). ``max_catch_up``: the most ticks :meth:`due` hands out at once."""

    def __init__(self, hz: int, *, start: float, max_catch_up: int = 4) -> None:
        if not isinstance(hz, int) or isinstance(hz, bool) or not 1 <= hz <= 1000:
            raise UsageError(f"tick_hz must be an integer from 1 to 1000, not {hz!r}")
        if not isinstance(max_catch_up, int) or max_catch_up < 1:
            raise UsageError(f"max_catch_up must be an integer of at least 1, not {max_catch_up!r}")
        self.hz = hz
        self.period = 1.0 / hz
        self.start = start
        self.max_catch_up = max_catch_up
        self.next_tick = 0
        """The index of the next tick not yet handed out (run or skipped)."""
        self.ran = 0
        """Ticks handed out to run, in total."""
        self.missed = 0
        """Ticks skipped, in total (due while the caller was late, past ``max_catch_up``)."""

    def time_of(self, tick: int) -> float:
        """When tick ``tick`` is due."""
        return self.start + tick / self.hz

    @property
    def next_time(self) -> float:
        """When the next tick is due (sleep until then)."""
        return self.time_of(self.next_tick)

    def _last_due(self, now: float) -> int:
        """The highest tick index due at ``now`` (-1: none)."""
        n = math.floor((now - self.start) * self.hz)
        while self.time_of(n + 1) <= now:  # float rounding either way
            n += 1
        while n >= 0 and self.time_of(n) > now:
            n -= 1
        return n

    def due(self, now: float) -> Due:
        """The ticks to run at ``now``, and those skipped; they are handed out once (the schedule
        moves past them)."""
        last = self._last_due(now)
        count = last - self.next_tick + 1
        if count <= 0:
            return Due(self.next_tick, 0, 0)
        run = min(count, self.max_catch_up)
        missed = count - run
        first = self.next_tick + missed  # the newest ticks run: their indices match the clock
        self.next_tick = last + 1
        self.ran += run
        self.missed += missed
        return Due(first, run, missed)


def sends_between(prev_tick: int, tick: int, tick_hz: int, send_hz: int) -> bool:
    """True when state is due to be sent once ticks after ``prev_tick`` up to ``tick`` passed
    (``prev_tick`` -1 before the first), at ``send_hz`` of a ``tick_hz`` tick: tick ``n`` falls in
    send slot ``n * send_hz // tick_hz``, and a send is due when the slot changed."""
    if prev_tick < 0:
        return tick >= 0
    return tick * send_hz // tick_hz != prev_tick * send_hz // tick_hz
