"""The server's lifespan: the app's startup and shutdown around serving (a tick loop's home)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import BaseModel

import kcprpc
from tests.integration.serve_process import ServeProcess


class Tick(BaseModel):
    n: int


class Game(kcprpc.Service, name="lifespan.Game"):
    async def ping(self, n: int) -> int:
        return n


async def test_a_tick_loop_runs_between_startup_and_shutdown() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(server: kcprpc.Server) -> AsyncIterator[None]:
        events.append("startup")
        assert server.address is not None and not server.sessions  # bound, nobody accepted yet

        async def tick() -> None:
            n = 0
            while True:
                n += 1
                await server.push.publish("ticks", Tick(n=n))
                await asyncio.sleep(0.01)

        task = asyncio.create_task(tick())
        try:
            yield
        finally:
            events.append(f"shutdown with {len(server.sessions)} sessions")
            task.cancel()

    server = kcprpc.Server([Game()], "127.0.0.1", 0, lifespan=lifespan)
    host, port = await server.start()
    assert events == ["startup"]
    async with kcprpc.connect(host, port) as client:
        got: asyncio.Queue[Tick] = asyncio.Queue()
        client.on(Tick, got.put_nowait)
        await client.subscribe("ticks")
        first = await asyncio.wait_for(got.get(), 5)
        second = await asyncio.wait_for(got.get(), 5)
        assert second.n > first.n  # the loop keeps ticking
        await server.shutdown(grace=0.5)
    assert events == ["startup", "shutdown with 0 sessions"]  # after every connection closed


async def test_a_startup_that_fails_leaves_the_port_free() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(server: kcprpc.Server) -> AsyncIterator[None]:
        raise RuntimeError("database unreachable")
        yield  # pragma: no cover

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = kcprpc.Server([Game()], "127.0.0.1", port, lifespan=lifespan)
    with pytest.raises(RuntimeError, match="database unreachable"):
        await server.start()
    assert server.address is None
    again = kcprpc.Server([Game()], "127.0.0.1", port)  # the failed start released the socket
    await again.start()
    await again.shutdown(grace=0)


APP = '''
import asyncio, contextlib
import kcprpc


class Game(kcprpc.Service, name="lifespan.Game"):
    async def ping(self, n: int) -> int:
        return n


@contextlib.asynccontextmanager
async def lifespan(server):
    async def tick():
        n = 0
        while True:
            n += 1
            print(f"tick {n}", flush=True)
            await asyncio.sleep(0.02)

    task = asyncio.create_task(tick())
    yield
    task.cancel()
    print("lifespan shutdown", flush=True)


app = kcprpc.Server([Game()], lifespan=lifespan)
'''


def test_kcprpc_serve_runs_the_lifespan_and_drains_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "lifespan_app.py").write_text(APP)
    with ServeProcess("lifespan_app:app", "--grace", "1", extra_path=tmp_path) as srv:
        assert "lifespan.Game" in srv.expect("kcprpc serving"), srv.lines
        for _ in range(3):
            srv.expect("tick")
        code, rest = srv.stop()
        assert code == 0, srv.lines
        tail = [line for line in rest if not line.startswith("tick")]
        assert tail == ["shutting down", "lifespan shutdown"], srv.lines
