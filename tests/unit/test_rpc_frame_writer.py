"""FrameWriter: frames of one tick coalesce per stream; all writers of a loop share one flush."""

from __future__ import annotations

import asyncio

from kcprpc.frame_writer import FrameWriter


class Sink:
    def __init__(self, log: list[tuple[int, bytes]], ident: int) -> None:
        self.log, self.ident = log, ident

    def write(self, data: bytes) -> None:
        self.log.append((self.ident, data))

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        return None


async def test_writers_of_one_tick_flush_together_in_one_callback() -> None:
    log: list[tuple[int, bytes]] = []
    writers = [FrameWriter(Sink(log, i)) for i in range(50)]  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    calls = 0
    real = loop.call_soon

    def counting(cb, *args, **kw):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return real(cb, *args, **kw)

    loop.call_soon = counting  # type: ignore[method-assign]
    try:
        for w in writers:
            w.send(b"a")
            w.send(b"b")
    finally:
        del loop.call_soon
    assert calls == 1 and log == []
    await asyncio.sleep(0)
    assert log == [(i, b"ab") for i in range(50)]


async def test_an_early_flush_and_later_sends_keep_order() -> None:
    log: list[tuple[int, bytes]] = []
    w = FrameWriter(Sink(log, 0))  # type: ignore[arg-type]
    w.send(b"1")
    w.flush()
    w.send(b"2")
    w.send(b"3")
    assert log == [(0, b"1")]
    await asyncio.sleep(0)
    assert log == [(0, b"1"), (0, b"23")]
    w.close()
    w.send(b"x")
    await asyncio.sleep(0)
    assert log == [(0, b"1"), (0, b"23")]


async def test_more_than_high_water_in_one_tick_is_written_at_once() -> None:
    log: list[tuple[int, bytes]] = []
    w = FrameWriter(Sink(log, 0), high_water=100)  # type: ignore[arg-type]
    w.send(b"x" * 60)
    w.send(b"y" * 30)
    assert log == []  # 90 bytes: they wait for the end of the tick
    w.send(b"z" * 20)
    assert log == [(0, b"x" * 60 + b"y" * 30 + b"z" * 20)]  # past 100: written at once, in order
    w.send(b"after")
    await asyncio.sleep(0)
    assert log[-1] == (0, b"after")


async def test_writers_of_one_connection_share_the_send_guard() -> None:
    from kcprpc.frame_writer import SendGuard

    log: list[tuple[int, bytes]] = []
    checks: list[int] = []
    guard = SendGuard(lambda: checks.append(len(log)), every=100)
    a = FrameWriter(Sink(log, 0), guard=guard)  # type: ignore[arg-type]
    b = FrameWriter(Sink(log, 1), guard=guard)  # type: ignore[arg-type]
    a.send(b"a" * 60)
    b.send(b"b" * 30)
    await asyncio.sleep(0)
    assert checks == [] and guard.unchecked == 90  # 90 bytes written between them: no check yet
    b.send(b"c" * 20)
    await asyncio.sleep(0)
    assert checks == [3] and guard.unchecked == 0  # 110: checked after the write that crossed 100
    a.send(b"d" * 250)
    await asyncio.sleep(0)
    assert checks == [3, 4]
