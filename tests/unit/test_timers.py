"""The shared timer heap: one armed handle, lazy rescheduling, idle targets cost nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from kcp.timers import NO_ENTRY, TimerHeap, entry_due


class FakeHandle:
    def __init__(self, loop: FakeLoop, when: float, cb: Any) -> None:
        self.when, self.cb, self.cancelled = when, cb, False
        self.loop = loop

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Just enough of an event loop: a settable clock and call_at handles."""

    def __init__(self) -> None:
        self.now = 100.0
        self.handles: list[FakeHandle] = []
        self.errors: list[dict[str, Any]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, cb: Any) -> FakeHandle:
        h = FakeHandle(self, when, cb)
        self.handles.append(h)
        return h

    def call_exception_handler(self, ctx: dict[str, Any]) -> None:
        self.errors.append(ctx)

    def live(self) -> list[FakeHandle]:
        return [h for h in self.handles if not h.cancelled]

    def advance_to(self, ms: float, heap: TimerHeap) -> None:
        """Run every armed handle due up to ``ms`` (relative to the heap's base)."""
        target = 100.0 + ms / 1000.0
        while True:
            due = [h for h in self.live() if h.when <= target + 1e-9]
            if not due:
                break
            h = min(due, key=lambda x: x.when)
            h.cancelled = True
            self.now = max(self.now, h.when)
            h.cb()
        self.now = target


class Target:
    def __init__(self, name: str, log: list[tuple[str, int]], heap: TimerHeap | None = None) -> None:
        self.name = name
        self.log = log
        self._timer_entry = -1  # TimerTarget: kcp.timers.NO_ENTRY
        self.heap = heap
        self.again: int | None = None

    def _on_timer(self, now: int) -> None:
        self.log.append((self.name, now))
        if self.again is not None and self.heap is not None:
            self.heap.schedule(self, now + self.again)


def make() -> tuple[FakeLoop, TimerHeap, list[tuple[str, int]]]:
    loop = FakeLoop()
    heap = TimerHeap(loop)  # type: ignore[arg-type]
    return loop, heap, []


def test_only_the_earliest_wakeup_is_armed() -> None:
    loop, heap, log = make()
    targets = [Target(f"t{i}", log) for i in range(100)]
    for i, t in enumerate(targets):
        heap.schedule(t, 1000 - i)
    # one call_at per new minimum, but only one live handle at any time
    assert len(loop.live()) == 1
    assert abs(loop.live()[0].when - (100.0 + 0.901)) < 1e-9
    loop.advance_to(950, heap)
    assert [n for n, _ in log] == [f"t{i}" for i in range(99, 49, -1)]
    assert len(heap) == 50
    loop.advance_to(2000, heap)
    assert len(log) == 100 and len(heap) == 0
    assert loop.live() == []  # nothing pending: no timer at all


def test_rescheduling_earlier_replaces_and_later_keeps_the_earlier() -> None:
    loop, heap, log = make()
    t = Target("a", log)
    heap.schedule(t, 500)
    heap.schedule(t, 200)  # earlier: the 500 entry becomes stale
    heap.schedule(t, 230)  # slightly later (< slack): keep 200, the target re-evaluates then
    loop.advance_to(1000, heap)
    assert log == [("a", 200)]
    assert len(heap) == 0


def test_rescheduling_much_later_replaces() -> None:
    loop, heap, log = make()
    t = Target("a", log)
    heap.schedule(t, 200)
    heap.schedule(t, 60_000)  # an idle deadline: no useless wake-up at 200
    loop.advance_to(1000, heap)
    assert log == []
    assert len(heap) == 1 and len(loop.live()) == 1
    loop.advance_to(60_000, heap)
    assert log == [("a", 60_000)]


def test_a_far_wakeup_stays_when_it_only_moves_later_given_now() -> None:
    loop, heap, log = make()
    t = Target("a", log)
    heap.schedule(t, 30_000, now=0)  # an idle deadline
    entry = t._timer_entry
    for now in range(100, 1000, 100):  # every packet moves it later: no heap insertion
        heap.schedule(t, now + 30_000, now=now)
        assert t._timer_entry == entry
    assert len(heap._heap) == 1
    heap.schedule(t, 20_000, now=1000)  # earlier: replaced
    assert entry_due(t._timer_entry) == 20_000
    # within the horizon it is an ordinary pending wake-up again: a much later one replaces it
    heap.schedule(t, 20_000 + heap.slack, now=20_000 - heap.horizon + 1)
    assert entry_due(t._timer_entry) == 20_000 + heap.slack
    heap.schedule(t, 40_000)  # without now: replaced, as before
    assert entry_due(t._timer_entry) == 40_000
    loop.advance_to(40_000, heap)
    assert log == [("a", 40_000)]


def test_same_due_fires_in_schedule_order_and_keys_stay_unique_when_the_count_wraps() -> None:
    loop, heap, log = make()
    first, second, third = Target("first", log), Target("second", log), Target("third", log)
    heap.schedule(first, 300)
    heap._seq = (1 << 24) - 1  # the schedule count wraps: the next key would be first's again
    heap.schedule(second, 300)
    heap.schedule(third, 300)
    assert len({first._timer_entry, second._timer_entry, third._timer_entry}) == 3
    assert [entry_due(t._timer_entry) for t in (first, second, third)] == [300, 300, 300]
    heap.schedule(first, 0x7FFF_FFFF)  # much later: replaced; a due time of years is still one int
    heap.schedule(Target("past", log), -5)  # never before 0
    loop.advance_to(1000, heap)
    assert log == [("past", 0), ("second", 300), ("third", 300)]
    assert len(heap) == 1 and entry_due(first._timer_entry) == 0x7FFF_FFFF
    heap.cancel(first)
    assert first._timer_entry == NO_ENTRY and len(heap) == 0


def test_cancel_and_rearm_after_fire() -> None:
    loop, heap, log = make()
    a, b = Target("a", log), Target("b", log, heap)
    heap.schedule(a, 10)
    heap.schedule(b, 20)
    heap.cancel(a)
    b.again = 30
    loop.advance_to(85, heap)
    assert log == [("b", 20), ("b", 50), ("b", 80)]
    b.again = None
    loop.advance_to(200, heap)
    assert log[-1] == ("b", 110)
    assert loop.live() == []


def test_target_scheduled_during_fire_does_not_hide_an_earlier_entry() -> None:
    loop, heap, log = make()
    a, b = Target("a", log, heap), Target("b", log)
    heap.schedule(a, 10)
    heap.schedule(b, 15)
    a.again = 100  # a re-arms far away while b is still pending at 15
    loop.advance_to(12, heap)
    assert len(loop.live()) == 1 and abs(loop.live()[0].when - 100.015) < 1e-9
    loop.advance_to(20, heap)
    assert log == [("a", 10), ("b", 15)]


def test_exceptions_go_to_the_loop_handler_and_others_still_fire() -> None:
    loop, heap, log = make()

    class Bad(Target):
        def _on_timer(self, now: int) -> None:
            raise RuntimeError("boom")

    heap.schedule(Bad("bad", log), 5)
    heap.schedule(Target("good", log), 5)
    loop.advance_to(10, heap)
    assert log == [("good", 5)]
    assert len(loop.errors) == 1 and isinstance(loop.errors[0]["exception"], RuntimeError)


def test_stale_entries_are_compacted() -> None:
    loop, heap, log = make()
    targets = [Target(str(i), log) for i in range(100)]
    for rnd in range(40):
        for t in targets:
            heap.schedule(t, 100000 - rnd)  # always earlier: one stale entry per call
    assert len(heap) == 100
    assert len(heap._heap) < 100 * 40  # compaction ran
    loop.advance_to(200000, heap)
    assert len(log) == 100


def test_cancelling_most_targets_compacts_the_heap() -> None:
    # thousands of sessions that end together (a flood's sessions timing out) must not leave
    # their entries in the heap until each one's due time
    loop, heap, log = make()
    targets = [Target(str(i), log) for i in range(5000)]
    for i, t in enumerate(targets):
        heap.schedule(t, 60000 + i)
    for t in targets[:4990]:
        heap.cancel(t)
    assert len(heap) == 10
    assert len(heap._heap) <= 2048
    loop.advance_to(70000, heap)
    assert [name for name, _ in log] == [str(i) for i in range(4990, 5000)]


async def test_real_loop_fires_in_order_with_one_handle() -> None:
    loop = asyncio.get_running_loop()
    heap = TimerHeap.for_loop()
    assert TimerHeap.for_loop(loop) is heap
    done = loop.create_future()
    log: list[tuple[str, int]] = []

    class T(Target):
        def _on_timer(self, now: int) -> None:
            super()._on_timer(now)
            if len(log) == 3:
                done.set_result(None)

    base = heap.now_ms()
    for name, delay in (("c", 30), ("a", 10), ("b", 20)):
        heap.schedule(T(name, log), base + delay)
    await asyncio.wait_for(done, 5)
    assert [n for n, _ in log] == ["a", "b", "c"]
    assert all(now >= base + d - 1 for (_, now), d in zip(log, (10, 20, 30), strict=True))


class Source:
    """An input source shared by several targets; its poll runs before they fire."""

    def __init__(self, log: list[tuple[str, int]], name: str) -> None:
        self.log = log
        self.name = name

    def poll_input(self) -> None:
        self.log.append((self.name, -1))


def test_input_sources_are_polled_once_before_their_targets_fire() -> None:
    loop, heap, log = make()
    a, b = Source(log, "poll-a"), Source(log, "poll-b")
    targets = []
    for i, src in enumerate((a, a, b, a, None)):
        t = Target(f"t{i}", log)
        t._timer_input = src  # type: ignore[attr-defined]
        targets.append(t)
        heap.schedule(t, 10)
    loop.advance_to(10, heap)
    names = [n for n, _ in log]
    assert sorted(names[:2]) == ["poll-a", "poll-b"]  # each source once, before any target
    assert sorted(names[2:]) == [f"t{i}" for i in range(5)]
    assert heap.polled == 2
    loop.advance_to(100, heap)  # nothing due: no polling
    assert heap.polled == 2


def test_input_polled_first_can_cancel_a_due_wakeup() -> None:
    """An ack read by the poll reaches its target before the target's timer runs."""
    loop, heap, log = make()
    acked: set[str] = set()

    class Retransmitter(Target):
        def _on_timer(self, now: int) -> None:
            if self.name not in acked:
                super()._on_timer(now)

    class Acks(Source):
        def poll_input(self) -> None:
            super().poll_input()
            acked.add("r0")

    src = Acks(log, "poll")
    for i in range(2):
        t = Retransmitter(f"r{i}", log)
        t._timer_input = src  # type: ignore[attr-defined]
        heap.schedule(t, 30)
    loop.advance_to(30, heap)
    assert log == [("poll", -1), ("r1", 30)]


def test_a_failing_input_poll_is_reported_and_targets_still_fire() -> None:
    loop, heap, log = make()

    class Bad(Source):
        def poll_input(self) -> None:
            raise OSError("gone")

    t = Target("t", log)
    t._timer_input = Bad(log, "bad")  # type: ignore[attr-defined]
    heap.schedule(t, 5)
    loop.advance_to(5, heap)
    assert log == [("t", 5)]
    assert len(loop.errors) == 1 and isinstance(loop.errors[0]["exception"], OSError)
