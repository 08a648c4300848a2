"""Per-session costs that grow with the session count: the server sweep's slices, the mux
keepalive on the loop's one timer heap."""

from __future__ import annotations

import asyncio

import kcprpc
from kcp.timers import TimerHeap
from kcprpc import HeartbeatConfig, ServerConfig
from kcprpc.mux import MuxConfig
from kcprpc.mux.testing import memory_pair


class FakeSession:
    """What the sweep reads of a session; counts how often it was looked at."""

    checked = 0

    def __init__(self) -> None:
        self.last_receive = float("inf")  # never silent
        self.backlog_probe = None
        self.send_backlog = 0

    @property
    def closed(self) -> bool:
        FakeSession.checked += 1
        return False


async def test_the_sweep_lets_the_loop_run_between_slices() -> None:
    server = kcprpc.Server([], config=ServerConfig(heartbeat=HeartbeatConfig(interval=0.01, timeout=10.0)))
    FakeSession.checked = 0
    n = 1_600
    server.sessions.update(FakeSession() for _ in range(n))  # type: ignore[misc]
    seen: list[int] = []
    loop = asyncio.get_running_loop()

    def watch() -> None:  # another callback of the loop: how far the sweep got when it ran
        seen.append(FakeSession.checked)
        if FakeSession.checked < n:
            loop.call_soon(watch)

    sweeper = asyncio.ensure_future(server._sweep())
    try:
        loop.call_soon(watch)
        for _ in range(1000):
            if FakeSession.checked >= n:
                break
            await asyncio.sleep(0.005)
    finally:
        sweeper.cancel()
    assert FakeSession.checked >= n  # every session was checked
    # the loop ran in the middle of the sweep, more than once: other work is not held up by it
    assert len([c for c in seen if 0 < c < n]) >= 2


async def test_mux_keepalive_runs_on_the_shared_timer_heap() -> None:
    heap = TimerHeap.for_loop()
    before = len(heap)
    client, server = memory_pair(MuxConfig(keepalive_interval=0.02, keepalive_timeout=1.0))
    try:
        assert len(heap) == before + 2  # one wake-up each, on the heap every KCP session uses
        fired = heap.fired
        for _ in range(200):  # the keepalive still works: each side sends NOPs in silence
            if client.counters["nop_out"] >= 2 and server.counters["nop_out"] >= 2:
                break
            await asyncio.sleep(0.01)
        assert client.counters["nop_out"] >= 2 and server.counters["nop_out"] >= 2
        assert heap.fired > fired
    finally:
        await client.close()
        await server.close()
    assert len(heap) == before  # a dead session leaves the heap
