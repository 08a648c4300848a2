"""The server's per-session costs that grow with the session count: the sweep's slices."""

from __future__ import annotations

import asyncio

import kcprpc
from kcprpc import HeartbeatConfig, ServerConfig


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
