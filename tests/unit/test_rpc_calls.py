"""Every call kind and status path, in memory and over the real mux in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_rpc_support import Demo, Probe, Reply, Req

from kcprpc import (
    ClientCallDetails,
    ClientConfig,
    RpcError,
    ServerConfig,
    ServerContext,
    Status,
    Transport,
    UsageError,
)
from kcprpc import rpc as methods
from kcprpc.testing import RpcPair, pair

TIMEOUT = 5.0

SETUPS = [
    ("memory", "shared", "stream"),
    ("memory", "stream", "shared"),
    ("mux", "shared", "stream"),
    ("mux", "stream", "stream"),
    ("kcp", "shared", "stream"),
]


@pytest.fixture(params=SETUPS, ids=["-".join(s) for s in SETUPS])
async def rpc(request: pytest.FixtureRequest) -> AsyncIterator[RpcPair]:
    transport, unary, stream = request.param
    cfg = ClientConfig(unary_framing=unary, stream_framing=stream, heartbeat=None)
    async with pair([Demo(Probe())], link=transport, client_config=cfg) as p:
        yield p


def demo(p: RpcPair) -> Demo:
    return p.client.stub(Demo)


def probe(p: RpcPair) -> Probe:
    svc = p.server.services[0]
    assert isinstance(svc, Demo)
    return svc.probe


async def test_unary(rpc: RpcPair) -> None:
    d = demo(rpc)
    assert await d.hello(Req(name="a")) == Reply(text="hello a")
    assert await d.echo(b"\x00" * 64) == b"\x00" * 64
    assert await d.nothing() is None
    many = await asyncio.gather(*[d.hello(Req(name=str(i))) for i in range(200)])
    assert [r.text for r in many] == [f"hello {i}" for i in range(200)]


async def test_several_parameters(rpc: RpcPair) -> None:
    d = demo(rpc)
    assert await d.add(1, 2) == 3
    assert await d.add(5) == 15
    assert await d.add(a=1, b=1) == 2
    assert [t async for t in d.repeat("ab", times=3)] == ["ab", "ab", "ab"]
    with pytest.raises(RpcError) as ei:
        await d.add("x")  # type: ignore[arg-type]
    assert ei.value.status is Status.INVALID_ARGUMENT
    assert [tuple(e["loc"]) for e in ei.value.details] == [("a",)]


async def test_server_stream(rpc: RpcPair) -> None:
    d = demo(rpc)
    got = [r.text async for r in d.count(Req(name="x", n=5))]
    assert got == ["x0", "x1", "x2", "x3", "x4"]
    assert [r async for r in d.count(Req(name="x", n=0))] == []


async def test_server_stream_error_after_messages(rpc: RpcPair) -> None:
    got = []
    with pytest.raises(RpcError) as ei:
        async for r in demo(rpc).count_fail(Req(name="x")):
            got.append(r.text)
    assert got == ["first"] and ei.value.status is Status.ABORTED


async def test_client_stream(rpc: RpcPair) -> None:
    async def reqs() -> AsyncIterator[Req]:
        for i in range(10):
            yield Req(name="a", n=i)

    assert await demo(rpc).total(reqs()) == 45


async def test_bidi(rpc: RpcPair) -> None:
    async def reqs() -> AsyncIterator[Req]:
        for s in ("a", "b", "c"):
            yield Req(name=s)

    assert [r.text async for r in demo(rpc).upper(reqs())] == ["A", "B", "C"]


async def test_status_from_handler(rpc: RpcPair) -> None:
    with pytest.raises(RpcError) as ei:
        await demo(rpc).fail(Req(name="bob"))
    assert ei.value.status is Status.NOT_FOUND
    assert ei.value.message == "no bob" and ei.value.details == {"name": "bob"}


async def test_handler_exception_is_internal_without_traceback(rpc: RpcPair) -> None:
    with pytest.raises(RpcError) as ei:
        await demo(rpc).crash(Req(name="x"))
    assert ei.value.status is Status.INTERNAL
    assert "secret" not in repr(ei.value) and "Traceback" not in repr(ei.value)
    assert await demo(rpc).hello(Req(name="still up")) == Reply(text="hello still up")


async def test_validation_failure_is_invalid_argument_and_connection_stays(rpc: RpcPair) -> None:
    d = demo(rpc)
    with pytest.raises(RpcError) as ei:
        await d.hello({"name": "", "n": "zz"})  # type: ignore[arg-type]
    e = ei.value
    assert e.status is Status.INVALID_ARGUMENT
    assert {tuple(x["loc"]) for x in e.details} == {("name",), ("n",)}
    assert all("type" in x and "msg" in x for x in e.details)
    with pytest.raises(RpcError) as ei:
        await d.echo(12345)  # type: ignore[arg-type]
    assert ei.value.status is Status.INVALID_ARGUMENT
    assert await d.hello(Req(name="ok")) == Reply(text="hello ok")


async def test_bad_response_is_reported(rpc: RpcPair) -> None:
    with pytest.raises(RpcError) as ei:
        await demo(rpc).bad_response(Req(name="x"))
    assert ei.value.status is Status.INTERNAL


async def test_unknown_method_is_unimplemented(rpc: RpcPair) -> None:
    from kcprpc.service import _NONE_ADAPTER, MethodKind, MethodSpec

    ghost = MethodSpec(
        "x",
        "ghost",
        "x/ghost",
        MethodKind.UNARY,
        Demo.__dict__["hello"].__kcprpc_method_spec__.delivery,
        None,
        None,
        _NONE_ADAPTER,
        _NONE_ADAPTER,
        has_request=False,
    )
    with pytest.raises(RpcError) as ei:
        await rpc.client._unary(ghost, None, None, None, None)
    assert ei.value.status is Status.UNIMPLEMENTED


async def test_deadline_exceeded_cancels_server_handler(rpc: RpcPair) -> None:
    d = rpc.client.stub(Demo, timeout=0.05)
    with pytest.raises(RpcError) as ei:
        await d.slow(Req(name="x"))
    assert ei.value.status is Status.DEADLINE_EXCEEDED
    await asyncio.wait_for(probe(rpc).cancelled.wait(), TIMEOUT)


async def test_server_enforces_deadline_even_if_client_does_not() -> None:
    # the client sends the deadline; a client that stops waiting must not be needed for the server to stop
    async with pair([Demo(Probe())], client_config=ClientConfig(heartbeat=None)) as p:
        call = await p.client._begin(
            Demo.__dict__["slow"].__kcprpc_method_spec__, Req(name="x"), 0.03, None, True
        )
        call.timer.cancel()  # type: ignore[union-attr]
        with pytest.raises(RpcError) as ei:
            await asyncio.wait_for(call.fut, TIMEOUT)
        assert ei.value.status is Status.DEADLINE_EXCEEDED
        assert p.server.services[0].probe.cancelled.is_set()  # type: ignore[attr-defined]


async def test_client_cancellation_cancels_server_handler(rpc: RpcPair) -> None:
    pr = probe(rpc)
    task = asyncio.ensure_future(demo(rpc).slow(Req(name="x")))
    await asyncio.wait_for(pr.started.wait(), TIMEOUT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(pr.cancelled.wait(), TIMEOUT)
    assert await demo(rpc).hello(Req(name="after")) == Reply(text="hello after")


async def test_stream_cancel_cancels_server_generator(rpc: RpcPair) -> None:
    pr = probe(rpc)
    got = 0
    async with demo(rpc).forever(Req(name="x")) as stream:  # type: ignore[attr-defined]
        async for _ in stream:
            got += 1
            if got == 10:
                break
    await asyncio.wait_for(pr.cancelled.wait(), TIMEOUT)
    assert got == 10


async def test_client_stream_method_is_a_typed_stream_call(rpc: RpcPair) -> None:
    # docs/rpc.md's `async with client.stream(...)`: ends early (the handler is cancelled), bidi too
    pr = probe(rpc)
    got = 0
    async with rpc.client.stream(Demo.forever, Req(name="x"), timeout=TIMEOUT) as stream:
        async for r in stream:
            assert r.text == str(got)
            got += 1
            if got == 5:
                break
    await asyncio.wait_for(pr.cancelled.wait(), TIMEOUT)
    assert got == 5

    async def reqs() -> AsyncIterator[Req]:
        for name in ("a", "b"):
            yield Req(name=name)

    async with rpc.client.stream(Demo.upper, reqs(), metadata={"k": "v"}) as up:
        assert [r.text async for r in up] == ["A", "B"]
    with pytest.raises(UsageError, match="stream\\(\\) takes server_stream or bidi"):
        rpc.client.stream(Demo.hello, Req(name="x"))  # type: ignore[arg-type]


async def test_metadata_in_and_out(rpc: RpcPair) -> None:
    call = rpc.client.call(Demo.meta, Req(name="x"), metadata={"user": "ann", "bin": b"\x01"})
    r = await call
    assert r.text == "ann"
    assert call.initial_metadata == {"server": "demo"}
    assert call.trailing_metadata == {"cost": 7}
    assert probe(rpc).seen_metadata == {"user": "ann", "bin": b"\x01"}
    d = rpc.client.stub(Demo, metadata={"user": "stub"})
    assert (await d.meta(Req(name="x"))).text == "stub"


async def test_error_trailing_metadata() -> None:
    class S(Demo):
        async def fail(self, req: Req) -> Reply:
            from kcprpc import current_context

            current_context().set_trailing_metadata({"retry-after": 3})
            raise RpcError(Status.UNAVAILABLE, "busy")

    async with pair([S()]) as p:
        with pytest.raises(RpcError) as ei:
            await p.client.stub(S).fail(Req(name="x"))
        assert ei.value.trailing_metadata == {"retry-after": 3}


async def test_server_and_client_interceptors() -> None:
    log: list[str] = []

    async def auth(ctx: ServerContext, call_next: Any) -> Any:
        log.append(f"server {ctx.method}")
        if ctx.method.startswith("test.") and ctx.metadata.get("token") != "s3cret":
            raise RpcError(Status.UNAUTHENTICATED, "bad token")
        return await call_next()

    async def add_token(details: ClientCallDetails, call_next: Any) -> Any:
        log.append(f"client {details.wire_name}")
        details.metadata["token"] = "s3cret"
        return await call_next(details)

    async with pair([Demo()], server_interceptors=[auth]) as p:
        with pytest.raises(RpcError) as ei:
            await p.client.stub(Demo).hello(Req(name="x"))
        assert ei.value.status is Status.UNAUTHENTICATED
        with pytest.raises(RpcError) as ei:
            [r async for r in p.client.stub(Demo).count(Req(name="x", n=2))]
        assert ei.value.status is Status.UNAUTHENTICATED
        assert await p.client.health() == "SERVING"

    log.clear()
    async with pair([Demo()], server_interceptors=[auth], client_interceptors=[add_token]) as p:
        d = p.client.stub(Demo)
        assert (await d.hello(Req(name="x"))).text == "hello x"
        assert [r.text async for r in d.count(Req(name="y", n=2))] == ["y0", "y1"]
    assert log == [
        "client test.Demo/hello",
        "server test.Demo/hello",
        "client test.Demo/count",
        "server test.Demo/count",
    ]


async def test_limits_give_resource_exhausted() -> None:
    cfg = ServerConfig(max_message_size=1000, max_concurrent_calls=2, max_subscriptions=1)
    async with pair([Demo(Probe())], server_config=cfg) as p:
        d = p.client.stub(Demo)
        with pytest.raises(RpcError) as ei:
            await d.echo(b"x" * 5000)
        assert ei.value.status is Status.RESOURCE_EXHAUSTED
        assert await d.echo(b"x" * 100) == b"x" * 100
        # concurrency: two slow calls fill the connection, the third is refused
        slow = [asyncio.ensure_future(d.slow(Req(name="s"))) for _ in range(2)]
        await asyncio.wait_for(p.server.services[0].probe.started.wait(), TIMEOUT)  # type: ignore[attr-defined]
        sess = next(iter(p.server.sessions))
        for _ in range(1000):
            if sess.active_calls == 2:
                break
            await asyncio.sleep(0)
        assert sess.active_calls == 2
        with pytest.raises(RpcError) as ei:
            await d.hello(Req(name="x"))
        assert ei.value.status is Status.RESOURCE_EXHAUSTED
        assert p.server.stats["calls_refused"] == 1  # counted in the server's stats
        p.server.services[0].probe.release.set()  # type: ignore[attr-defined]
        assert [r.text for r in await asyncio.gather(*slow)] == ["done", "done"]
        # subscriptions: one topic allowed
        await p.client.subscribe("a")
        with pytest.raises(RpcError) as ei:
            await p.client.subscribe("b")
        assert ei.value.status is Status.RESOURCE_EXHAUSTED
        assert await d.hello(Req(name="alive")) == Reply(text="hello alive")


async def test_client_refuses_oversized_request_locally() -> None:
    async with pair([Demo()], client_config=ClientConfig(max_message_size=200, heartbeat=None)) as p:
        with pytest.raises(RpcError) as ei:
            await p.client.stub(Demo).echo(b"x" * 500)
        assert ei.value.status is Status.RESOURCE_EXHAUSTED


async def test_health_and_stats(rpc: RpcPair) -> None:
    assert await rpc.client.health() == "SERVING"
    assert await rpc.client.health("test.Demo") == "SERVING"
    assert await rpc.client.health("nope") == "SERVICE_UNKNOWN"
    await demo(rpc).hello(Req(name="a"))
    st = await rpc.client.stats()
    assert st.server["calls_ok"] >= 1 and st.server["sessions"] == 1
    assert isinstance(st.transport, dict)
    if rpc.link in ("mux", "kcp"):
        assert st.transport["mux_frames_in"] > 0


async def test_graceful_shutdown_finishes_in_flight_calls() -> None:
    async with pair([Demo(Probe())]) as p:
        pr = p.server.services[0].probe  # type: ignore[attr-defined]
        d = p.client.stub(Demo)
        call = asyncio.ensure_future(d.slow(Req(name="x")))
        await asyncio.wait_for(pr.started.wait(), TIMEOUT)
        shut = asyncio.ensure_future(p.server.shutdown(grace=TIMEOUT))
        await asyncio.sleep(0)
        with pytest.raises(RpcError) as ei:
            await d.hello(Req(name="late"))
        assert ei.value.status is Status.UNAVAILABLE
        pr.release.set()
        assert (await call).text == "done"
        await asyncio.wait_for(shut, TIMEOUT)


async def test_shutdown_grace_expiry_fails_calls_unavailable() -> None:
    async with pair([Demo(Probe())]) as p:
        pr = p.server.services[0].probe  # type: ignore[attr-defined]
        call = asyncio.ensure_future(p.client.stub(Demo).slow(Req(name="x")))
        await asyncio.wait_for(pr.started.wait(), TIMEOUT)
        await p.server.shutdown(grace=0.01)
        with pytest.raises(RpcError) as ei:
            await call
        assert ei.value.status is Status.UNAVAILABLE


async def test_shutdown_waits_for_notify_handlers_and_counts_what_it_cancels() -> None:
    """Accepted notifies (a reliable one is acknowledged to its client) were cancelled at once by a
    shutdown with a grace, uncounted (an audit: 5 handlers, shutdown(grace=5) returned in 0.01 s).
    Now they finish within the grace like calls; one still running after it is counted."""
    done: list[int] = []
    gate = asyncio.Event()

    class Slow(Demo):
        @methods.notify(delivery="reliable")
        async def record(self, n: int) -> None:
            await asyncio.sleep(0.05)
            if n < 0:
                await gate.wait()  # outlasts the grace
            done.append(n)

    async with pair([Slow(Probe())]) as p:
        for n in range(5):
            p.client.notify(Slow.record, n)
        await p.client.health()  # after the notifies on the same stream: they were accepted
        await p.server.shutdown(grace=TIMEOUT)
        assert sorted(done) == [0, 1, 2, 3, 4] and p.server.stats["notifications_cancelled"] == 0
    async with pair([Slow(Probe())]) as p:
        p.client.notify(Slow.record, -1)
        await p.client.health()
        await p.server.shutdown(grace=0.2)
        await asyncio.sleep(0)
        assert p.server.stats["notifications_cancelled"] == 1


async def test_slow_stream_consumer_pushes_back_on_the_server() -> None:
    produced = 0
    total = 20_000  # ~110 bytes each: 2.2 MB, much more than the 512 KiB stream window

    class Firehose(Demo):
        async def count(self, req: Req) -> AsyncIterator[Reply]:
            nonlocal produced
            for i in range(total):
                produced += 1
                yield Reply(text=f"{i:0100d}")

    async with (
        pair([Firehose()], link="mux") as p,
        p.client.stub(Firehose).count(Req(name="x", n=1)) as stream,  # type: ignore[attr-defined]
    ):
        first = await stream.__anext__()
        assert int(first.text) == 0
        for _ in range(3000):  # let both sides run as far as the windows allow
            await asyncio.sleep(0)
        stalled_at = produced
        assert stalled_at < total // 2
        for _ in range(1000):
            await asyncio.sleep(0)
        assert produced == stalled_at  # the producer is parked on the mux window
        n = 1
        async for _r in stream:
            n += 1
        assert n == total == produced


async def test_oversized_responses_are_resource_exhausted() -> None:
    async with pair([Demo()], server_config=ServerConfig(max_message_size=2000)) as p:
        d = p.client.stub(Demo)
        assert len(await d.big(1900)) == 1900
        with pytest.raises(RpcError) as ei:
            await d.big(5000)  # the request is tiny, the reply is over the server's limit
        assert ei.value.status is Status.RESOURCE_EXHAUSTED
        assert ei.value.message == "response larger than max_message_size"
    cfg = ClientConfig(max_message_size=200, heartbeat=None)
    async with pair([Demo()], client_config=cfg) as p:
        d = p.client.stub(Demo)
        with pytest.raises(RpcError) as ei:
            await d.big(500)  # over the client's limit: skipped unread, the call fails
        assert ei.value.status is Status.RESOURCE_EXHAUSTED
        assert await d.big(10) == b"x" * 10


async def test_abandoned_stream_is_cancelled_on_the_server() -> None:
    import gc

    async with pair([Demo(Probe())], link="mux") as p:
        pr = p.server.services[0].probe  # type: ignore[attr-defined]
        stream = p.client.stub(Demo).forever(Req(name="x"))
        assert (await stream.__anext__()).text == "0"
        await asyncio.wait_for(pr.started.wait(), TIMEOUT)
        del stream
        gc.collect()
        await asyncio.wait_for(pr.cancelled.wait(), TIMEOUT)
        assert p.client.stub(Demo) is p.client.stub(Demo)


async def test_slow_request_consumer_pushes_back_on_the_client() -> None:
    sent = 0
    total = 20_000  # ~110 bytes each: 2.2 MB, much more than the 512 KiB stream window
    gate = asyncio.Event()

    class Sink(Demo):
        async def total(self, reqs: AsyncIterator[Req]) -> int:
            t = 0
            async for _r in reqs:
                if t == 0:
                    await gate.wait()  # the handler stalls after the first request
                t += 1
            return t

    async def reqs() -> AsyncIterator[Req]:
        nonlocal sent
        for i in range(total):
            sent += 1
            yield Req(name="r" * 100, n=i)

    async with pair([Sink()], link="mux") as p:
        call = asyncio.ensure_future(p.client.stub(Sink).total(reqs()))
        for _ in range(3000):
            await asyncio.sleep(0)
        stalled_at = sent
        assert stalled_at < total // 2
        for _ in range(1000):
            await asyncio.sleep(0)
        assert sent == stalled_at  # the client's sender is parked on the mux window
        gate.set()
        assert await asyncio.wait_for(call, TIMEOUT) == total


async def test_shared_stream_calls_cannot_buffer_without_end() -> None:
    cfg = ClientConfig(stream_framing="shared", heartbeat=None)
    gate = asyncio.Event()

    class S(Demo):
        async def count(self, req: Req) -> AsyncIterator[Reply]:
            for i in range(req.n):
                yield Reply(text=str(i))

        async def total(self, reqs: AsyncIterator[Req]) -> int:
            await gate.wait()  # never reads
            return 0

    async with pair([S()], client_config=cfg) as p:
        s = p.client.stub(S)
        # a consumer that does not read while 10,000 messages arrive on the shared stream
        async with s.count(Req(name="x", n=10_000)) as stream:  # type: ignore[attr-defined]
            await stream.__anext__()
            for _ in range(2000):
                await asyncio.sleep(0)
            with pytest.raises(RpcError) as ei:
                async for _ in stream:
                    pass
            assert ei.value.status is Status.RESOURCE_EXHAUSTED

        async def many() -> AsyncIterator[Req]:
            for i in range(10_000):
                yield Req(name="r", n=i)

        with pytest.raises(RpcError) as ei:
            await s.total(many())
        assert ei.value.status is Status.RESOURCE_EXHAUSTED
        assert (await s.hello(Req(name="fine"))).text == "hello fine"


async def test_invoke_by_wire_name(rpc: RpcPair) -> None:
    """Dynamic calls without a stub class: plain values in and out, every kind."""
    from kcprpc import UsageError, raw_method, service_spec

    c = rpc.client
    assert await c.invoke("test.Demo/hello", {"name": "a"}) == {"text": "hello a"}
    assert await c.invoke("test.Demo/add", {"a": 1, "b": 2}) == 3  # several parameters: one map
    call = c.invoke("test.Demo/meta", {"name": "x"}, metadata={"user": "u"}, timeout=TIMEOUT)
    assert await call == {"text": "u"} and call.trailing_metadata == {"cost": 7}
    got = [r async for r in c.invoke("test.Demo/count", {"name": "n", "n": 3}, kind="server_stream")]
    assert got == [{"text": "n0"}, {"text": "n1"}, {"text": "n2"}]

    async def reqs() -> AsyncIterator[Any]:
        for i in range(4):
            yield {"name": "ab"[i % 2], "n": i}

    assert await c.invoke("test.Demo/total", reqs(), kind="client_stream") == 6
    async with c.invoke("test.Demo/upper", reqs(), kind="bidi") as s:
        assert [r["text"] async for r in s] == ["A", "B", "A", "B"]
    assert c.invoke(raw_method("test.Demo/position_reliable", "notify", "reliable"), {"x": 1, "y": 2}) is None
    assert (await asyncio.wait_for(probe(rpc).notified.get(), TIMEOUT)).x == 1
    # the server still validates; a typed spec validates the response too
    with pytest.raises(RpcError) as ei:
        await c.invoke("test.Demo/hello", {"name": ""})
    assert ei.value.status is Status.INVALID_ARGUMENT
    hello = service_spec(Demo).methods["hello"]
    assert await c.invoke(hello, Req(name="t")) == Reply(text="hello t")
    with pytest.raises(UsageError):
        c.invoke(hello, Req(name="t"), kind="bidi")
    with pytest.raises(UsageError):
        c.invoke("no-slash", {})


async def test_slow_streams_cannot_stall_the_connection() -> None:
    """A paused stream holds a window of the connection's receive buffer; only as many as leave one
    window free may pause. Here (64 KiB windows, 192 KiB buffer) two may: a third slow stream is read
    on up to 4,096 unread messages and then fails RESOURCE_EXHAUSTED, while the control stream
    (unary calls, heartbeats) keeps working and the paused streams finish when read."""
    from kcprpc.mux import MuxConfig

    total = 6000

    class Firehose(Demo):
        async def count(self, req: Req) -> AsyncIterator[Reply]:
            for i in range(total):
                yield Reply(text=f"{i:0100d}")

    cfg = MuxConfig(version=2, max_stream_buffer=64 * 1024, max_receive_buffer=192 * 1024)
    async with pair([Firehose()], link="mux", transport=Transport(mux=cfg)) as p:
        assert p.current[0].max_paused_streams == 2  # type: ignore[attr-defined]
        s = p.client.stub(Firehose)
        streams = [s.count(Req(name="x", n=1)) for _ in range(3)]
        for st in streams:
            await st.__anext__()
        for _ in range(3000):  # let every stream run as far as it can
            await asyncio.sleep(0)
        link = p.client.lifecycle.link
        assert link is not None and link.parking.parked == 2
        assert await asyncio.wait_for(s.hello(Req(name="alive")), TIMEOUT) == Reply(text="hello alive")
        outcomes = []
        for st in streams:
            n = 1
            try:
                async for _r in st:
                    n += 1
                outcomes.append(n)
            except RpcError as e:
                assert e.status is Status.RESOURCE_EXHAUSTED and n > 4096
                outcomes.append(e.status)
        assert sorted(outcomes, key=str) == [total, total, Status.RESOURCE_EXHAUSTED]


async def test_slow_request_streams_cannot_stall_the_connection() -> None:
    """The same budget on the server: two client streams may pause, a third fails RESOURCE_EXHAUSTED."""
    from kcprpc.mux import MuxConfig

    total = 6000
    gate = asyncio.Event()

    class Sink(Demo):
        async def total(self, reqs: AsyncIterator[Req]) -> int:
            await gate.wait()  # reads nothing until the gate opens
            return sum([1 async for _r in reqs])

    async def reqs() -> AsyncIterator[Req]:
        for i in range(total):
            yield Req(name="r" * 100, n=i)

    cfg = MuxConfig(version=2, max_stream_buffer=64 * 1024, max_receive_buffer=192 * 1024)
    async with pair([Sink()], link="mux", transport=Transport(mux=cfg)) as p:
        s = p.client.stub(Sink)
        calls = [asyncio.ensure_future(s.total(reqs())) for _ in range(3)]
        for _ in range(3000):
            await asyncio.sleep(0)
        assert await asyncio.wait_for(s.hello(Req(name="alive")), TIMEOUT) == Reply(text="hello alive")
        (sess,) = p.server.sessions
        assert sess.parking.parked == 2
        gate.set()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), TIMEOUT)
        assert [r.status for r in results if isinstance(r, RpcError)] == [Status.RESOURCE_EXHAUSTED]
        assert [r for r in results if not isinstance(r, BaseException)] == [total, total]
