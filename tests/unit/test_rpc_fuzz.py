"""Garbage from a client never crashes the server: frames with random types, ids and bodies are
answered or dropped, and a well-formed call afterwards still works on the same connection."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_rpc_support import Demo, Probe, any_msgpack

from kcprpc import Server, ServerConfig
from kcprpc import codec as c
from kcprpc.memory import connection_pair

msgpack_values = any_msgpack(text=20, items=6, key=8, entries=4, leaves=12)
frames = st.lists(
    st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1), msgpack_values)
    | st.tuples(st.just(c.CALL), st.integers(1, 5), st.tuples(
        st.sampled_from(["test.Demo/hello", "test.Demo/count", "test.Demo/total", "test.Demo/upper", "x/y", ""]),
        msgpack_values, msgpack_values, st.integers(0, 3), msgpack_values).map(list)),
    max_size=12,
)  # fmt: skip


async def _exercise(items: list[tuple[int, int, Any]], raw_tail: bytes) -> None:
    server = Server([Demo(Probe())], config=ServerConfig(max_message_size=4096))
    cc, sc = connection_pair()
    task = asyncio.ensure_future(server.handle_connection(sc))
    ctrl = await cc.open_stream()
    ctrl.write(c.encode_frame(c.HELLO, 0, {"v": 1}))
    dec = c.FrameDecoder()
    assert dec.feed(await asyncio.wait_for(ctrl.read(65536), 5))[0][0] == c.WELCOME
    for ftype, cid, body in items:
        if ftype == c.HELLO:
            continue
        ctrl.write(c.encode_frame(ftype, cid, body))
    # the same garbage on a call stream, plus raw bytes that may not even be a frame
    side = await cc.open_stream()
    for ftype, cid, body in items:
        side.write(c.encode_frame(ftype, cid, body))
    side.write(raw_tail)
    side.close()
    ctrl.write(c.encode_frame(c.CALL, 999_999, ["test.Demo/hello", None, 5000, c.FLAG_END, {"name": "ok"}]))
    answer = None
    while answer is None:
        data = await asyncio.wait_for(ctrl.read(65536), 5)
        assert data, "server closed the control stream"
        for ftype, cid, body in dec.feed(data):
            if cid == 999_999:
                answer = (ftype, body)
    assert answer == (c.REPLY, [{"text": "hello ok"}, None, None])
    await cc.close()
    await asyncio.wait_for(task, 5)
    await server.shutdown(grace=0)


@settings(max_examples=60)
@given(frames, st.binary(max_size=64))
def test_server_survives_garbage(items: list[tuple[int, int, Any]], raw_tail: bytes) -> None:
    asyncio.run(_exercise(items, raw_tail))
