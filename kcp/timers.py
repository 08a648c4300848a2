"""One timer heap per event loop, serving every KCP session of that loop.

A session asks to be woken at the time its engine's ``check()`` names (or at its idle deadline
when it has nothing in flight). The heap keeps one entry per pending wake-up and arms a single
``loop.call_at`` for the earliest one, so an idle session costs nothing between packets and
5,000 sessions cost one heap operation each per wake-up instead of one asyncio timer each.

Rescheduling uses lazy deletion: moving a wake-up invalidates the old entry in place (it is
skipped when popped). Asking for a time only slightly later (under ``slack``, 50 ms) than an
entry already pending keeps the earlier one, and the target simply re-evaluates when it fires, so
a busy session does not churn the heap. Targets must therefore tolerate early wake-ups, which KCP
engines do (``update()`` before the flush time is a no-op).

Time is in integer milliseconds from :meth:`TimerHeap.now_ms`, counted from the heap's creation
on the loop's clock.

Input before timers: an event loop iteration runs its due timers before it polls sockets, so
after a long callback (a big fan-out writing to a thousand sessions) the retransmission timers
of segments sent early in that callback fire although their acks are already waiting in the
socket. A target may therefore name an *input source* (its ``_timer_input`` attribute, an
object with ``poll_input()``, such as the UDP endpoint it shares with other sessions): before
the heap runs a batch of due targets it asks each distinct source among them, once, to read
what its socket already holds, so acks that arrived cancel the retransmissions they answer.
"""

from __future__ import annotations

import asyncio
import weakref
from heapq import heapify, heappop, heappush
from typing import Final, Protocol

__all__ = ["NO_ENTRY", "InputSource", "TimerHeap", "TimerTarget", "entry_due"]

NO_ENTRY: Final = -1
"""A target's ``_timer_entry`` when it has no pending wake-up."""
_SEQ_BITS: Final = 24
_SEQ_MASK: Final = (1 << _SEQ_BITS) - 1


def entry_due(entry: int) -> int:
    """The due time (ms) of a live entry's key."""
    return entry >> _SEQ_BITS


class TimerTarget(Protocol):
    """What the heap needs from a scheduled object."""

    _timer_entry: int  # the key of its live entry (see TimerHeap), or NO_ENTRY; owned by the heap

    def _on_timer(self, now: int) -> None:
        """Called once the scheduled time has come (possibly early, never much late)."""


class InputSource(Protocol):
    """Something that can read its pending network input now (non-blocking, bounded)."""

    def poll_input(self) -> None:
        """Process what is already readable; return at once when nothing is."""


_heaps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TimerHeap] = weakref.WeakKeyDictionary()


class TimerHeap:
    """A min-heap of wake-ups driven by one ``loop.call_at`` handle.

    A heap entry is one int, ``due << 24 | seq`` (``seq`` counts schedules, modulo 2**24, skipping
    a key that is live), so entries order by due time and then by when they were scheduled (within
    one ms, except across a wrap of the count), and the heap compares and stores plain ints: no
    tuple per entry, and small ints for 8 years of milliseconds. The live ones map their key to
    their target in a dict: the entries hold no references, so the cyclic garbage collector never
    walks them, however many are pending.
    """

    __slots__ = (
        "__weakref__",
        "_armed_at",
        "_base",
        "_firing",
        "_handle",
        "_heap",
        "_live",
        "_loop",
        "_seq",
        "fired",
        "horizon",
        "polled",
        "slack",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._base = loop.time()
        self._heap: list[int] = []
        self._live: dict[int, TimerTarget] = {}
        self._seq = 0
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = -1
        self._firing = False
        self.fired = 0  # targets woken so far (for tests and benchmarks)
        self.polled = 0  # input sources polled before firing (for tests and benchmarks)
        self.slack = 50  # ms: how much earlier than asked a pending wake-up may stay
        self.horizon = 1000  # ms: a pending wake-up this far ahead may stay however much earlier

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop | None = None) -> TimerHeap:
        """The heap shared by everything on ``loop`` (default: the running loop)."""
        if loop is None:
            loop = asyncio.get_running_loop()
        heap = _heaps.get(loop)
        if heap is None:
            heap = _heaps[loop] = cls(loop)
        return heap

    def now_ms(self) -> int:
        """Milliseconds on the loop's clock since this heap was created."""
        return int((self._loop.time() - self._base) * 1000.0 + 1e-6)

    def __len__(self) -> int:
        """Number of pending wake-ups."""
        return len(self._live)

    def schedule(self, target: TimerTarget, due: int, now: int = -1) -> None:
        """Wake ``target`` at ``due`` ms.

        An already pending wake-up that is earlier, but by less than :attr:`slack` ms, is kept
        (the target re-evaluates when it fires); one further away is replaced, so a session that
        turns idle does not get a useless wake-up at its old retransmission time. Given ``now``,
        a pending wake-up at least :attr:`horizon` ms ahead is kept too, however much later
        ``due`` is: a far deadline that moves later at every packet (an idle timeout) then costs
        one early wake-up when the old time comes (the target re-arms), not a heap insertion per
        packet.
        """
        if due < 0:
            due = 0
        entry = target._timer_entry
        live = self._live
        if entry >= 0:
            pending = entry >> _SEQ_BITS
            if pending <= due and (
                due - pending < self.slack or (now >= 0 and pending - now >= self.horizon)
            ):
                return
            del live[entry]  # the old heap entry goes stale
        seq = (self._seq + 1) & _SEQ_MASK
        entry = (due << _SEQ_BITS) | seq
        while entry in live:  # 2**24 schedules after a wake-up still pending at the same ms
            seq = (seq + 1) & _SEQ_MASK
            entry = (due << _SEQ_BITS) | seq
        self._seq = seq
        target._timer_entry = entry
        live[entry] = target
        heap = self._heap
        heappush(heap, entry)
        if not self._firing and (self._armed_at < 0 or due < self._armed_at):
            self._arm(due)
        if len(heap) > 2048 and len(heap) > 2 * len(self._live):
            self._compact()

    def cancel(self, target: TimerTarget) -> None:
        """Forget ``target``'s pending wake-up, if any."""
        entry = target._timer_entry
        if entry >= 0:
            self._live.pop(entry, None)
            target._timer_entry = NO_ENTRY
            # thousands of sessions that end together (a flood's idle timeouts) would otherwise
            # leave their entries in the heap until each one's due time
            if len(self._heap) > 2048 and len(self._heap) > 4 * len(self._live):
                self._compact()

    def _compact(self) -> None:
        live = self._live
        self._heap = [e for e in self._heap if e in live]
        heapify(self._heap)

    def _arm(self, due: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = due
        self._handle = self._loop.call_at(self._base + due / 1000.0, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = -1
        heap = self._heap
        live = self._live
        now = self.now_ms()
        limit = now + 1  # the loop may run a handle a hair early; accept 1 ms of slack
        due_targets: list[TimerTarget] = []
        pop = heappop
        top = (limit + 1) << _SEQ_BITS  # every entry due at or before limit is below it
        while heap and heap[0] < top:
            target = live.pop(pop(heap), None)
            if target is None:
                continue  # stale
            target._timer_entry = NO_ENTRY
            due_targets.append(target)
        self.fired += len(due_targets)
        self._firing = True
        try:
            if due_targets:
                self._poll_sources(due_targets)
            for target in due_targets:
                try:
                    target._on_timer(now)
                except Exception as exc:
                    self._loop.call_exception_handler(
                        {"message": "KCP timer callback failed", "exception": exc, "target": target}
                    )
        finally:
            self._firing = False
        heap = self._heap  # a compaction may have replaced it
        # drop stale entries at the top so the timer is armed for a live one
        while heap and heap[0] not in live:
            pop(heap)
        if heap:
            self._arm(heap[0] >> _SEQ_BITS)

    def _poll_sources(self, targets: list[TimerTarget]) -> None:
        """Let each distinct input source of ``targets`` read its pending input, once."""
        last: object = None
        seen: set[int] = set()
        for target in targets:
            src: InputSource | None = getattr(target, "_timer_input", None)
            if src is None or src is last:
                continue
            last = src
            if id(src) in seen:
                continue
            seen.add(id(src))
            try:
                src.poll_input()
            except Exception as exc:
                self._loop.call_exception_handler(
                    {"message": "KCP input poll failed", "exception": exc, "source": src}
                )
        self.polled += len(seen)

    def close(self) -> None:
        """Cancel the armed handle and drop every entry."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for target in self._live.values():
            target._timer_entry = NO_ENTRY
        self._live.clear()
        self._heap.clear()
        self._armed_at = -1
