"""Services and strategies shared by the RPC unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from hypothesis import strategies as st
from pydantic import BaseModel, Field

import kcprpc
from kcprpc import RpcError, Status, current_context, rpc


class Req(BaseModel):
    name: str = Field(min_length=1)
    n: int = 0


class Reply(BaseModel):
    text: str


@kcprpc.event("tick")
class Tick(BaseModel):
    n: int


@kcprpc.event("pos", delivery="unreliable")
class Pos(BaseModel):
    x: float
    y: float


def rejoin_open_rooms(session: kcprpc.ServerSession, rooms: list[str], topics: list[str]) -> None:
    """``on_restore`` of the Demo service: its rooms are open to anyone, so a reconnecting client
    gets back every room it names except ``private*`` ones (the same rule as ``Demo.join``)."""
    for room in rooms:
        if not room.startswith("private"):
            session.join(room)


class Probe:
    """Events a test can wait on."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.notified: asyncio.Queue[Pos] = asyncio.Queue()
        self.seen_metadata: dict[str, object] = {}


class Demo(kcprpc.Service, name="test.Demo"):
    def __init__(self, probe: Probe | None = None) -> None:
        self.probe = probe or Probe()

    async def hello(self, req: Req) -> Reply:
        return Reply(text=f"hello {req.name}")

    @rpc.unary(name="Echo")
    async def echo(self, data: bytes) -> bytes:
        return data

    async def big(self, n: int) -> bytes:
        return b"x" * n

    async def add(self, a: int, b: int = 10) -> int:
        return a + b

    async def repeat(self, text: str, times: int) -> AsyncIterator[str]:
        for _ in range(times):
            yield text

    async def nothing(self) -> None:
        return None

    async def fail(self, req: Req) -> Reply:
        raise RpcError(Status.NOT_FOUND, f"no {req.name}", {"name": req.name})

    async def crash(self, req: Req) -> Reply:
        raise RuntimeError("secret internal detail")

    async def bad_response(self, req: Req) -> Reply:
        return "not a reply"  # type: ignore[return-value]

    async def slow(self, req: Req) -> Reply:
        self.probe.started.set()
        try:
            await self.probe.release.wait()
        except asyncio.CancelledError:
            self.probe.cancelled.set()
            raise
        return Reply(text="done")

    async def meta(self, req: Req) -> Reply:
        ctx = current_context()
        self.probe.seen_metadata = dict(ctx.metadata)
        ctx.set_initial_metadata({"server": "demo"})
        ctx.set_trailing_metadata({"cost": 7})
        return Reply(text=str(ctx.metadata.get("user", "")))

    async def count(self, req: Req) -> AsyncIterator[Reply]:
        for i in range(req.n):
            yield Reply(text=f"{req.name}{i}")

    async def count_fail(self, req: Req) -> AsyncIterator[Reply]:
        yield Reply(text="first")
        raise RpcError(Status.ABORTED, "stopped")

    async def forever(self, req: Req) -> AsyncIterator[Reply]:
        self.probe.started.set()
        i = 0
        try:
            while True:
                yield Reply(text=str(i))
                i += 1
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.probe.cancelled.set()
            raise

    async def total(self, reqs: AsyncIterator[Req]) -> int:
        t = 0
        async for r in reqs:
            t += r.n
        return t

    async def upper(self, reqs: AsyncIterator[Req]) -> AsyncIterator[Reply]:
        async for r in reqs:
            yield Reply(text=r.name.upper())

    @rpc.notify
    async def position(self, p: Pos) -> None:
        self.probe.notified.put_nowait(p)

    @rpc.notify(delivery="reliable")
    async def position_reliable(self, p: Pos) -> None:
        self.probe.notified.put_nowait(p)

    async def join(self, req: Req) -> None:
        if req.name.startswith("private"):
            raise RpcError(Status.PERMISSION_DENIED, "not your room")
        current_context().session.join(req.name)

    async def leave(self, req: Req) -> None:
        current_context().session.leave(req.name)

    async def tick_me(self, req: Req) -> None:
        current_context().session.send(Tick(n=req.n))

    async def whoami(self) -> str:
        return current_context().session.id


def any_msgpack(*, text: int, items: int, key: int, entries: int, leaves: int) -> st.SearchStrategy[Any]:
    """Any msgpack value: scalars (strings and binaries up to ``text``), lists up to ``items``, maps
    up to ``entries`` with string keys up to ``key``; at most ``leaves`` scalars in all."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.text(max_size=text)
        | st.binary(max_size=text),
        lambda inner: (
            st.lists(inner, max_size=items) | st.dictionaries(st.text(max_size=key), inner, max_size=entries)
        ),
        max_leaves=leaves,
    )
