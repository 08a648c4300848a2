"""mypy checks calls made through ``client.stub(Service)``, ``client.call(Service.method, ...)`` and
``client.stream(Service.method, ...)`` (the ``async with`` form of docs/rpc.md), also for methods under
the ``rpc.*`` decorators (bare or with options), which must be ``async def``."""

from __future__ import annotations

import textwrap
from pathlib import Path

from mypy import api

SNIPPET = """
from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import BaseModel

import kcprpc


class Req(BaseModel):
    name: str


class Reply(BaseModel):
    text: str


class Svc(kcprpc.Service):
    async def hello(self, req: Req) -> Reply:
        return Reply(text=req.name)

    async def count(self, req: Req) -> AsyncIterator[Reply]:
        yield Reply(text=req.name)

    async def add(self, a: int, b: int = 1) -> int:
        return a + b

    @kcprpc.rpc.unary(name="Hi")
    async def hi(self, req: Req) -> Reply:
        return Reply(text=req.name)

    @kcprpc.rpc.server_stream
    async def feed(self, req: Req, times: int = 1) -> AsyncIterator[Reply]:
        yield Reply(text=req.name * times)

    @kcprpc.rpc.notify(delivery="reliable")
    async def note(self, req: Req) -> None:
        return None

    @kcprpc.rpc.client_stream
    async def total(self, reqs: AsyncIterator[Req]) -> int:
        return 0

    async def upper(self, reqs: AsyncIterator[Req]) -> AsyncIterator[Reply]:
        async for r in reqs:
            yield Reply(text=r.name.upper())

    @kcprpc.rpc.unary
    def not_async(self, req: Req) -> Reply:
        return Reply(text=req.name)


async def use(client: kcprpc.Client) -> None:
    s = client.stub(Svc, timeout=1.0)
    reveal_type(await s.hello(Req(name="a")))
    await s.hello(Reply(text="wrong"))
    async for x in s.count(Req(name="b")):
        reveal_type(x)
    reveal_type(await client.call(Svc.hello, Req(name="c"), timeout=1))
    await s.hi(3)
    reveal_type(await s.add(1, b=2))
    await s.add(1, "x")
    async for y in s.feed(Req(name="d"), times=2):
        reveal_type(y)
    s.feed(Req(name="e"), times="2")
    await s.note(Reply(text="wrong"))
    reveal_type(await client.call(Svc.hi, Req(name="f")))
    await client.call(Svc.hi, Reply(text="wrong"))

    async def reqs() -> AsyncIterator[Req]:
        yield Req(name="g")

    reveal_type(await s.total(reqs()))

    async with client.stream(Svc.count, Req(name="h"), timeout=1, metadata={"k": "v"}) as st:
        async for z in st:
            reveal_type(z)
    reveal_type(st.trailing_metadata)
    async with client.stream(Svc.feed, Req(name="i")) as st2:
        reveal_type(st2)
    async with client.stream(Svc.upper, reqs()) as st3:
        async for u in st3:
            reveal_type(u)
    client.stream(Svc.count, Reply(text="wrong"))
    client.stream(Svc.hello, Req(name="j"))
    async for v in s.upper(reqs()):
        reveal_type(v)
    async with s.count(Req(name="k")):
        pass
"""


def test_stub_calls_are_type_checked(tmp_path: Path) -> None:
    f = tmp_path / "snippet.py"
    f.write_text(textwrap.dedent(SNIPPET))
    out, _err, rc = api.run(
        ["--strict", "--follow-imports=silent", "--cache-dir", str(tmp_path / ".mypy_cache"), str(f)]
    )
    lines = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith(str(f))]
    assert rc == 1
    assert lines == [
        'error: Value of type variable "F" of "__call__" of "MethodDecorator" cannot be '
        '"Callable[[Svc, Req], Reply]"  [type-var]',
        'note: Revealed type is "snippet.Reply"',
        'error: Argument 1 to "hello" of "Svc" has incompatible type "Reply"; expected "Req"  [arg-type]',
        'note: Revealed type is "snippet.Reply"',
        'note: Revealed type is "snippet.Reply"',
        'error: Argument 1 to "hi" of "Svc" has incompatible type "int"; expected "Req"  [arg-type]',
        'note: Revealed type is "int"',
        'error: Argument 2 to "add" of "Svc" has incompatible type "str"; expected "int"  [arg-type]',
        'note: Revealed type is "snippet.Reply"',
        'error: Argument "times" to "feed" of "Svc" has incompatible type "str"; expected "int"  [arg-type]',
        'error: Argument 1 to "note" of "Svc" has incompatible type "Reply"; expected "Req"  [arg-type]',
        'note: Revealed type is "snippet.Reply"',
        'error: Argument 1 to "call" of "Client" has incompatible type "Callable[[Svc, Req], Coroutine[Any, Any, '
        'Reply]]"; expected "Callable[[Any, Reply], Awaitable[Reply]]"  [arg-type]',
        'note: Revealed type is "int"',
        # client.stream(...) is a StreamCall: async with + async for, typed responses (server stream, bidi)
        'note: Revealed type is "snippet.Reply"',
        'note: Revealed type is "dict[str, Any] | None"',
        'note: Revealed type is "kcprpc.calls.StreamCall[snippet.Reply]"',
        'note: Revealed type is "snippet.Reply"',
        'error: Argument 1 to "stream" of "Client" has incompatible type "Callable[[Svc, Req], '
        'AsyncIterator[Reply]]"; expected "Callable[[Any, Reply], AsyncIterator[Reply]]"  [arg-type]',
        'error: Argument 1 to "stream" of "Client" has incompatible type "Callable[[Svc, Req], '
        'Coroutine[Any, Any, Reply]]"; expected "Callable[[Any, Req], AsyncIterator[Never]]"  [arg-type]',
        # the stub's streaming methods are the service's AsyncIterator: async for, not async with
        'note: Revealed type is "snippet.Reply"',
        'error: "AsyncIterator[Reply]" has no attribute "__aenter__"; maybe "__aiter__"?  [attr-defined]',
        'error: "AsyncIterator[Reply]" has no attribute "__aexit__"; maybe "__anext__" or "__aiter__"?  '
        "[attr-defined]",
    ]
