"""Garbage from a server never crashes the client: random frames (also aimed at the open call's
id) end that call with an RpcError at worst, and the connection stays usable."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_rpc_support import Demo, Req, Tick, any_msgpack

from kcprpc import Client, ClientConfig, RpcError
from kcprpc import codec as c
from kcprpc.memory import connection_pair
from kcprpc.transport import Connection

values = any_msgpack(text=12, items=5, key=6, entries=3, leaves=10)
garbage = st.lists(
    st.tuples(st.integers(0, 20), st.sampled_from([0, 1, 2, 7, 2**32 - 1]), values),
    max_size=10,
)


async def _exercise(items: list[tuple[int, int, Any]]) -> None:
    cc, sc = connection_pair()

    async def connector() -> Connection:
        return cc

    async def fake_server() -> None:
        ctrl = await sc.accept_stream()
        dec = c.FrameDecoder()
        pending: list[c.Frame] = []
        while not pending:
            pending += dec.feed(await ctrl.read(65536))
        assert pending.pop(0)[0] == c.HELLO
        ctrl.write(c.encode_frame(c.WELCOME, 0, {"v": 1, "sid": "s"}))
        while True:
            while not pending:
                data = await ctrl.read(65536)
                if not data:
                    return
                pending += dec.feed(data)
            ftype, cid, body = pending.pop(0)
            if ftype != c.CALL:
                continue
            for t, i, b in items:  # garbage first, aimed at this call too
                ctrl.write(c.encode_frame(t, cid if i == 1 else i, b))
            ctrl.write(c.encode_frame(c.REPLY, cid, [{"text": body[4]["name"]}, None, None]))

    server = asyncio.ensure_future(fake_server())
    client = Client(connector, config=ClientConfig(heartbeat=None))
    await client.connect()
    client.on(Tick, lambda t: None)
    d = client.stub(Demo, timeout=5)
    for i in range(2):
        try:
            r = await d.hello(Req(name=f"n{i}"))
            assert r.text == f"n{i}"
        except RpcError:
            pass  # the garbage ended this call: fine, as long as it is an RpcError
    await client.close()
    server.cancel()
    await asyncio.gather(server, return_exceptions=True)


@settings(max_examples=60)
@given(garbage)
def test_client_survives_garbage(items: list[tuple[int, int, Any]]) -> None:
    asyncio.run(_exercise(items))
