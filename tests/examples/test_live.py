"""examples/live: publisher auth, topic fan-out to viewers with seq/epoch, over loopback KCP."""

from __future__ import annotations

import kcprpc
from examples.live.load import run_load
from examples.live.service import KEY, Chat, LiveService, make_server, topic


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
