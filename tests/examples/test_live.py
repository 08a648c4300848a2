"""examples/live: publisher auth, topic fan-out to viewers with seq/epoch, over loopback KCP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import kcprpc
from examples.live.load import run_load
from examples.live.service import (
    KEY,
    Chat,
    LiveService,
    Viewers,
    count_viewers,
    make_server,
    report_viewers,
    topic,
)


async def test_publisher_auth_and_fanout() -> None:
    server = make_server("127.0.0.1", 0, token="t0ken")
    host, port = await server.start()
    try:
        async with kcprpc.connect(host, port, key=KEY) as viewer:
            try:
                await viewer.stub(LiveService).chat(Chat(channel="main", user="x", text="hi"))
            except kcprpc.RpcError as e:
                assert e.status is kcprpc.Status.PERMISSION_DENIED
            else:
                raise AssertionError("a viewer could publish")
            await viewer.subscribe(topic("main"))
            got: list[Chat] = []
            viewer.on(Chat, got.append)
            async with kcprpc.connect(host, port, key=KEY) as pub:
                live = pub.stub(LiveService, metadata={"token": "t0ken"}, timeout=5)
                acks = [await live.chat(Chat(channel="main", user="host", text=str(i))) for i in range(3)]
                assert [a.seq for a in acks] == [1, 2, 3]
                await viewer.health()  # a round trip: the events were sent before this reply
                assert [c.text for c in got] == ["0", "1", "2"]
                assert viewer.topic_offsets["topic:channel:main"] == (acks[0].epoch, 3)
        res = await run_load(host, port, viewers=20, seconds=0.5, rate=20, token="t0ken")
        assert res["delivered"] == res["expected"] > 0
    finally:
        await server.shutdown(grace=0)


async def test_viewers_are_told_their_number_unreliably_and_only_viewers() -> None:
    server = make_server("127.0.0.1", 0)
    host, port = await server.start()
    reporter = asyncio.ensure_future(report_viewers(server, "main", every=0.02))
    try:
        async with (
            kcprpc.connect(host, port, key=KEY) as a,
            kcprpc.connect(host, port, key=KEY) as b,
            kcprpc.connect(host, port, key=KEY) as other,
        ):
            seen: dict[str, list[tuple[int, bool]]] = {"a": [], "b": [], "other": []}
            arrived = asyncio.Event()

            def recorder(name: str) -> Callable[[Viewers, kcprpc.EventInfo], None]:
                def record(ev: Viewers, info: kcprpc.EventInfo) -> None:
                    seen[name].append((ev.viewers, info.unreliable))
                    arrived.set()

                return record

            async def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
                """Bounded wait for ``check()``, looked at again after each event received."""
                loop = asyncio.get_running_loop()
                end = loop.time() + timeout
                while not check():
                    arrived.clear()
                    await asyncio.wait_for(arrived.wait(), max(0.0, end - loop.time()))

            for name, c in (("a", a), ("b", b), ("other", other)):
                c.on(Viewers, recorder(name))
            await a.subscribe(topic("main"))
            await wait_until(lambda: seen["a"] == [(1, True)])
            await b.subscribe(topic("main"))
            await wait_until(lambda: seen["a"][-1:] == [(2, True)] and seen["b"] == [(2, True)])
            await other.subscribe(topic("elsewhere"))  # another channel: not counted, not told
            await a.unsubscribe(topic("main"))
            await wait_until(lambda: seen["b"][-1:] == [(1, True)])
            assert seen["a"] == [(1, True), (2, True)]  # no longer a viewer: not told
            assert seen["other"] == []
            assert [s.id for s in count_viewers(server, "main")] == [b.session_id]
    finally:
        reporter.cancel()
        await server.shutdown(grace=0)
