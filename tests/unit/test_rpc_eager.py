"""Eager handler start (kcprpc/eager.py, StreamPump._start_call): a handler's first step runs in
the turn that read its request, inside its own task, and everything a task gives a handler still
holds: current_task, context variables, cancellation, deadlines, interceptors, error mapping; on
every link, including those whose input reaches the handler from a transport's callback (the
direct read path: kcprpc/receive.py, ``_Reader``)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel

import kcprpc
from kcprpc import RpcError, ServerContext, Status
from kcprpc.eager import start_eager
from kcprpc.server_session import ServerCall
from kcprpc.testing import Link, pair

TIMEOUT = 5.0
VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="outer")
# memory: no mux; mux: stream readers called back by the mux (MuxStream.set_reader); kcp: the KCP
# session's input handed to the mux in the turn that read it too (KCPSession.set_receiver)
LINKS: tuple[Link, ...] = ("memory", "mux", "kcp")


class Req(BaseModel):
    n: int = 0


class Eager(kcprpc.Service, name="test.Eager"):
    def __init__(self) -> None:
        self.cleaned = asyncio.Event()
        self.entered = asyncio.Event()

    async def echo(self, req: Req) -> Req:
        return req

    async def own_task(self, req: Req) -> Req:
        # what asyncio.timeout() does: cancel current_task() later; it must be the handler's own
        me = asyncio.current_task()
        assert me is not None
        asyncio.get_running_loop().call_later(0.05, me.cancel)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return Req(n=-1)
        return Req(n=req.n)

    async def set_var(self, req: Req) -> Req:
        VAR.set(f"handler-{req.n}")
        await asyncio.sleep(0)
        return Req(n=1 if VAR.get() == f"handler-{req.n}" else 0)

    async def read_var(self, req: Req) -> Req:
        return Req(n=0 if VAR.get() == "outer" else 1)

    async def hang(self, req: Req) -> Req:
        self.entered.set()
        try:
            await asyncio.sleep(10)
        finally:
            self.cleaned.set()
        return req

    async def fail_at_once(self, req: Req) -> Req:
        if req.n:
            raise RpcError(Status.NOT_FOUND, "no such thing")
        raise ValueError("boom")


def _turns(loop: asyncio.AbstractEventLoop) -> list[int]:
    count = [0]
    orig = loop._run_once  # type: ignore[attr-defined]

    def run_once() -> None:
        count[0] += 1
        orig()

    loop._run_once = run_once  # type: ignore[attr-defined]
    return count


@pytest.mark.parametrize(("link", "most"), [("memory", 3.1), ("kcp", 3.5)])
async def test_reply_leaves_in_the_turn_that_read_the_request(link: Link, most: float) -> None:
    # memory link: the request is read in one turn, the reply must be written in that same turn;
    # before: the handler's task, the server's frame-writer tick and the client's each added a turn
    # (6 → 3). Over KCP (both ends in this process): the client's send tick, the server's read (KCP
    # session → mux → stream reader → handler → reply, one turn with the direct read path, which
    # sends the reply too: a quiet socket, kcp.endpoint.QUIET_BATCH), the client's read (→ the
    # call's future) and the caller's task, of which two share a turn: 3; 4 with the server's send
    # tick a turn of its own, 9 with a mux reader task and a stream reader task woken on each side
    async with pair([Eager()], link=link) as p:
        stub = p.client.stub(Eager, timeout=TIMEOUT)
        for _ in range(20):
            await stub.echo(Req(n=1))
        turns = _turns(asyncio.get_running_loop())
        n = 50
        for i in range(n):
            assert (await stub.echo(Req(n=i))).n == i
        assert turns[0] / n <= most


@pytest.mark.parametrize("link", LINKS)
async def test_current_task_is_the_handlers_own(link: Link) -> None:
    svc = Eager()
    async with pair([svc], link=link) as p:
        stub = p.client.stub(Eager)
        assert (await asyncio.wait_for(stub.own_task(Req(n=3)), TIMEOUT)).n == -1
        # the timeout cancelled the handler, not the stream that read its request
        assert (await asyncio.wait_for(stub.echo(Req(n=4)), TIMEOUT)).n == 4


@pytest.mark.parametrize("link", LINKS)
async def test_context_variables_stay_in_the_handlers_task(link: Link) -> None:
    async with pair([Eager()], link=link) as p:
        stub = p.client.stub(Eager)
        assert (await asyncio.wait_for(stub.set_var(Req(n=7)), TIMEOUT)).n == 1
        # a variable the previous handler set (in its first step) did not leak into the reader
        assert (await asyncio.wait_for(stub.read_var(Req()), TIMEOUT)).n == 0


@pytest.mark.parametrize("link", LINKS)
async def test_deadline_cancels_a_suspended_handler_and_runs_its_finally(link: Link) -> None:
    svc = Eager()
    async with pair([svc], link=link) as p:
        stub = p.client.stub(Eager, timeout=0.05)
        try:
            await asyncio.wait_for(stub.hang(Req()), TIMEOUT)
        except RpcError as e:
            assert e.status is Status.DEADLINE_EXCEEDED
        else:
            raise AssertionError("no deadline")
        await asyncio.wait_for(svc.cleaned.wait(), TIMEOUT)


@pytest.mark.parametrize("link", LINKS)
async def test_a_deadline_timer_is_armed_only_for_a_handler_that_suspended(link: Link) -> None:
    """The server's deadline timer (``ServerCall.cancel`` at the deadline) costs a timer per call:
    a handler that answered in its first step needs none; one that suspended gets it, and the
    deadline still ends it."""
    loop = asyncio.get_running_loop()
    armed: list[Any] = []
    call_at = loop.call_at

    def spy(when: float, callback: Any, *args: Any, **kw: Any) -> asyncio.TimerHandle:
        if isinstance(getattr(callback, "__self__", None), ServerCall):
            armed.append(callback.__self__)
        return call_at(when, callback, *args, **kw)

    loop.call_at = spy  # type: ignore[method-assign]
    try:
        svc = Eager()
        async with pair([svc], link=link) as p:
            stub = p.client.stub(Eager, timeout=TIMEOUT)
            for i in range(5):
                assert (await stub.echo(Req(n=i))).n == i
            assert armed == []
            with pytest.raises(RpcError) as ei:
                await asyncio.wait_for(p.client.stub(Eager, timeout=0.05).hang(Req()), TIMEOUT)
            assert ei.value.status is Status.DEADLINE_EXCEEDED
            await asyncio.wait_for(svc.cleaned.wait(), TIMEOUT)
            assert len(armed) == 1
    finally:
        del loop.call_at


@pytest.mark.parametrize("link", LINKS)
async def test_client_cancel_reaches_a_handler_suspended_in_its_first_step(link: Link) -> None:
    svc = Eager()
    async with pair([svc], link=link) as p:
        stub = p.client.stub(Eager)
        t = asyncio.ensure_future(stub.hang(Req()))
        await asyncio.wait_for(svc.entered.wait(), TIMEOUT)
        t.cancel()
        await asyncio.wait_for(svc.cleaned.wait(), TIMEOUT)
        assert p.server.stats["calls_cancelled"] == 1


@pytest.mark.parametrize("link", LINKS)
async def test_errors_raised_in_the_first_step_are_mapped(link: Link) -> None:
    async with pair([Eager()], link=link) as p:
        stub = p.client.stub(Eager)
        for n, status in ((1, Status.NOT_FOUND), (0, Status.INTERNAL)):
            try:
                await asyncio.wait_for(stub.fail_at_once(Req(n=n)), TIMEOUT)
            except RpcError as e:
                assert e.status is status
            else:
                raise AssertionError("no error")


@pytest.mark.parametrize("link", LINKS)
async def test_interceptors_see_the_call(link: Link) -> None:
    seen: list[str] = []

    async def icpt(ctx: ServerContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        seen.append(ctx.method)
        await asyncio.sleep(0)  # an interceptor that suspends before the handler
        return await call_next()

    async with pair([Eager()], link=link, server_interceptors=[icpt]) as p:
        stub = p.client.stub(Eager)
        assert (await asyncio.wait_for(stub.echo(Req(n=5)), TIMEOUT)).n == 5
        assert seen == ["test.Eager/echo"]


# ------------------------------------------------------------- start_eager itself


async def test_start_eager_finished_and_suspended() -> None:
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    seen: list[object] = []

    async def quick() -> None:
        seen.append(asyncio.current_task())
        VAR.set("inside")

    task, done = start_eager(loop, quick())
    assert done and seen == [task] and asyncio.current_task() is me and VAR.get() == "outer"
    await task
    assert task.done() and task.result() is None

    fut: asyncio.Future[int] = loop.create_future()
    got: list[int] = []

    async def slow() -> None:
        got.append(await fut)

    task2, done2 = start_eager(loop, slow())
    assert not done2 and not got
    fut.set_result(9)
    await task2
    assert got == [9]


async def test_start_eager_cancel_before_the_tasks_first_step() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    log: list[str] = []

    async def body() -> None:
        try:
            await fut
        except asyncio.CancelledError:
            log.append("cancelled inside")
            raise

    task, done = start_eager(loop, body())
    assert not done
    task.cancel()  # before the task ever ran a step of its own
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert log == ["cancelled inside"] and fut.cancelled()


async def test_start_eager_exception_in_first_step_goes_to_the_task() -> None:
    async def bad() -> None:
        raise KeyError("x")

    task, done = start_eager(asyncio.get_running_loop(), bad())
    assert not done
    try:
        await task
    except KeyError:
        pass
    else:
        raise AssertionError("no KeyError")
