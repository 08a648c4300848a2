"""Receive-side memory per connection against clients that hold the key (docs/rpc.md, "Flow control
and memory per connection"): msgpack bombs are refused without being decoded, decoded bodies held by
one connection are capped, partial frames are reserved against one budget per connection (a stalled
frame holds no more than that, and is dropped after partial_frame_timeout), and the mux grants window
only for bytes the RPC layer kept.

Most tests speak raw frames on the real mux (``mux_memory_pair``), the way a hostile client would."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from test_rpc_support import Demo, Probe, Reply, Req

import kcprpc
from kcprpc import ClientConfig, RpcError, Server, ServerConfig, Status
from kcprpc import codec as c
from kcprpc.memory import connection_pair, mux_memory_pair
from kcprpc.receive import read_frames
from kcprpc.testing import pair

TIMEOUT = 5.0
MiB = 1024 * 1024


def empty_maps(n: int) -> bytes:
    """A msgpack array of ``n`` empty maps: n + 5 bytes that decode into ~72 bytes each."""
    return b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n


def call_body(method: str, packed_payload: bytes, timeout_ms: int = 5000) -> bytes:
    """A CALL body (flag END) around an already packed payload."""
    return b"\x95" + msgpack.packb(method) + b"\xc0" + msgpack.packb(timeout_ms) + b"\x01" + packed_payload


class Peer:
    """A hostile client: raw frames on raw streams of a connection to ``server``."""

    def __init__(self, server: Server, *, mux: bool = True) -> None:
        self.server = server
        self.cc, self.sc = mux_memory_pair() if mux else connection_pair()
        self.task = asyncio.ensure_future(server.handle_connection(self.sc))
        self.decoders: dict[Any, c.FrameDecoder] = {}
        self.pending: dict[Any, list[c.Frame]] = {}

    async def hello(self) -> Any:
        self.ctrl = await self.cc.open_stream()
        self.ctrl.write(c.encode_frame(c.HELLO, 0, {"v": 1}))
        ftype, _cid, _body = await self.next(self.ctrl)
        assert ftype == c.WELCOME
        return self.ctrl

    async def next(self, stream: Any, timeout: float = TIMEOUT) -> c.Frame:
        """The next frame the server sends on ``stream``."""
        dec = self.decoders.setdefault(stream, c.FrameDecoder())
        pending = self.pending.setdefault(stream, [])
        while not pending:
            data = await asyncio.wait_for(stream.read(65536), timeout)
            assert data, "the server closed the stream"
            pending += dec.feed(data)
        return pending.pop(0)

    async def call(self, cid: int, method: str, payload: Any) -> c.Frame:
        self.ctrl.write(c.encode_frame(c.CALL, cid, [method, None, 5000, c.FLAG_END, payload]))
        while True:
            frame = await self.next(self.ctrl)
            if frame[1] == cid:
                return frame

    @property
    def session(self) -> Any:
        (sess,) = self.server.sessions
        return sess

    async def close(self) -> None:
        await self.cc.close()
        await asyncio.wait_for(self.task, TIMEOUT)
        await self.server.shutdown(grace=0)


# ------------------------------------------------------------------------------------ msgpack bombs
async def test_msgpack_bomb_is_refused_without_being_decoded() -> None:
    """512 KiB of empty maps would decode into ~37 MB: the server answers RESOURCE_EXHAUSTED for that
    call without decoding it, counts it, and the connection goes on."""
    server = Server([Demo()])
    peer = Peer(server)
    await peer.hello()
    bomb = c.encode_frame_raw(c.CALL, 7, call_body("test.Demo/hello", empty_maps(512 * 1024)))
    tracemalloc.start()
    try:
        peer.ctrl.write(bomb)
        ftype, cid, body = await peer.next(peer.ctrl)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (ftype, cid, body[0]) == (c.TRAILER, 7, Status.RESOURCE_EXHAUSTED)
    assert "max_decoded_bytes" in body[1]
    assert peak < 8 * MiB, peak  # the frame's bytes and their copies, not 37 MB of dicts
    assert server.stats["recv_decode_refused"] == 1 and server.stats["recv_decode_scanned"] >= 1
    assert peer.session.receive.decode.held == 0
    assert await peer.call(8, "test.Demo/hello", {"name": "ok"}) == (
        c.REPLY,
        8,
        [{"text": "hello ok"}, None, None],
    )
    await peer.close()


async def test_bomb_in_a_streamed_message_fails_its_call_only() -> None:
    gate = asyncio.Event()

    class Sink(kcprpc.Service, name="test.Sink"):
        async def keep(self, reqs: AsyncIterator[Any]) -> int:
            await gate.wait()
            return sum([1 async for _ in reqs])

    server = Server([Sink(), Demo()])
    peer = Peer(server)
    await peer.hello()
    stream = await peer.cc.open_stream()
    stream.write(c.encode_frame(c.CALL, 3, ["test.Sink/keep", None, 5000, 0, None]))
    stream.write(c.encode_frame(c.MSG, 3, {"small": 1}))
    stream.write(c.encode_frame_raw(c.MSG, 3, empty_maps(300_000)))
    ftype, cid, body = await peer.next(stream)
    assert (ftype, cid, body[0]) == (c.TRAILER, 3, Status.RESOURCE_EXHAUSTED)
    assert server.stats["recv_decode_refused"] == 1
    assert peer.session.receive.decode.held == 0  # the call ended: its unread message is given back
    assert (await peer.call(9, "test.Demo/hello", {"name": "x"}))[0] == c.REPLY
    gate.set()
    await peer.close()


async def test_decoded_bodies_held_by_one_connection_are_capped() -> None:
    """Messages that each fit but pile up unread (a handler that does not read, on the shared control
    stream, which cannot be paused for one call) stop at max_decoded_bytes: the call fails with
    RESOURCE_EXHAUSTED, the budget is never exceeded, and all of it comes back."""
    gate = asyncio.Event()
    held: list[int] = []

    class Sink(kcprpc.Service, name="test.Sink"):
        async def keep(self, reqs: AsyncIterator[list[dict[str, int]]]) -> int:
            sess = kcprpc.current_context().session
            await gate.wait()
            n = 0
            async for _ in reqs:
                held.append(sess.receive.decode.held)
                n += 1
            return n

    async def messages() -> AsyncIterator[list[dict[str, int]]]:
        for _ in range(200):
            yield [{} for _ in range(2000)]  # ~2 KB on the wire, ~160 KB decoded

    limit = 1 * MiB
    async with pair(
        [Sink()],
        server_config=ServerConfig(max_message_size=limit // 2, max_decoded_bytes=limit),
        client_config=ClientConfig(stream_framing="shared"),
    ) as p:
        call = asyncio.ensure_future(p.client.invoke("test.Sink/keep", messages(), kind="client_stream"))
        while p.server.stats["recv_decode_refused"] == 0 and not call.done():
            await asyncio.sleep(0)
        (sess,) = p.server.sessions
        assert 0 < sess.receive.decode.held <= limit
        gate.set()
        with pytest.raises(RpcError) as ei:
            await asyncio.wait_for(call, TIMEOUT)
        assert ei.value.status is Status.RESOURCE_EXHAUSTED
        assert "max_decoded_bytes" in ei.value.message
        assert held and max(held) <= limit
        assert sess.receive.decode.held == 0
        assert p.server.stats["recv_decode_refused"] >= 1


async def test_client_refuses_a_response_that_would_decode_past_its_budget() -> None:
    """The same decoder runs on the client: a server message that would decode into more than the
    client's max_decoded_bytes fails that call (RESOURCE_EXHAUSTED) and is counted; others go on."""

    class Dense(kcprpc.Service, name="test.Dense"):
        async def maps(self, n: int) -> AsyncIterator[list[dict[str, int]]]:
            yield [{}]
            yield [{} for _ in range(n)]

    async with pair([Dense(), Demo()], link="mux") as p:  # default budget: 8 MiB
        got = []
        with pytest.raises(RpcError) as ei:
            async for item in p.client.invoke("test.Dense/maps", 150_000, kind="server_stream"):
                got.append(item)
        assert ei.value.status is Status.RESOURCE_EXHAUSTED and got == [[{}]]
        assert p.client.counters["recv_decode_refused"] == 1
        assert await p.client.stub(Demo).hello(Req(name="y")) == Reply(text="hello y")
        link = p.client.lifecycle.link
        assert link is not None and link.receive.decode.held == 0


async def test_slow_reader_of_large_messages_pauses_instead_of_failing() -> None:
    """An inbox also pauses its stream on the decoded bytes it holds (a quarter of the budget), so a
    slow handler of large streamed messages pushes back on its client through the window long before
    the budget would fail the call."""
    held: list[int] = []

    class Big(kcprpc.Service, name="test.Big"):
        async def take(self, reqs: AsyncIterator[list[int]]) -> int:
            sess = kcprpc.current_context().session
            n = 0
            async for item in reqs:
                assert item[0] == n
                n += 1
                held.append(sess.receive.decode.held)
                for _ in range(20):  # a slow consumer: the client gets far ahead if nothing pushes back
                    await asyncio.sleep(0)
            return n

    async def blobs() -> AsyncIterator[list[int]]:
        for i in range(60):
            yield [i] * 20_000  # 20 KB on the wire, ~160 KB decoded

    async with pair(
        [Big()],
        link="mux",
        server_config=ServerConfig(max_message_size=MiB, max_decoded_bytes=2 * MiB),
    ) as p:
        assert await p.client.invoke("test.Big/take", blobs(), kind="client_stream") == 60
        assert max(held) <= 2 * MiB
        assert p.server.stats["recv_decode_refused"] == 0


# -------------------------------------------------------------------------------- partial frames
def frame_start(ftype: int, cid: int, body_len: int, have: int) -> bytes:
    """The header of a ``body_len`` frame and the first ``have`` bytes of its body (a bin header,
    then zeros: the rest never comes)."""
    return c.HEADER.pack(body_len, ftype, cid) + b"\xc6" + (body_len - 5).to_bytes(4, "big") + bytes(have - 5)


async def test_stalled_partial_frames_are_capped_per_connection() -> None:
    """Twelve streams each send the first 600 KiB of a 2 MiB CALL and stall. The connection's frame
    budget (4.25 MiB) takes two; seven more streams stop being read (their bytes stay in the mux,
    which grants them no more window); the rest are refused with RESOURCE_EXHAUSTED. The control
    stream is never held up: heartbeats and a 300 KiB call go through meanwhile."""
    server = Server([Demo()])
    peer = Peer(server)
    await peer.hello()
    streams = [await peer.cc.open_stream() for _ in range(12)]
    for i, s in enumerate(streams):
        s.write(frame_start(c.CALL, 100 + i, 2 * MiB, 600 * 1024))

    async def outcome(s: Any) -> int | None:
        try:
            ftype, _cid, body = await peer.next(s, timeout=1.0)
        except TimeoutError:
            return None
        assert ftype == c.TRAILER
        return int(body[0])

    results = await asyncio.gather(*(outcome(s) for s in streams))
    assert sorted(results, key=str) == [Status.RESOURCE_EXHAUSTED] * 3 + [None] * 9
    sess = peer.session
    budget = sess.receive.frames
    assert budget.used == 2 * (2 * MiB + c.HEADER_SIZE) <= budget.limit
    assert sess.parking.parked == 7 and budget.waiting == 7
    assert server.stats["recv_frame_refused"] == 3 and server.stats["recv_frame_waits"] == 7
    # what the server holds: two partial frames in decoders, at most a window each in the mux
    core = peer.sc.mux._core  # type: ignore[attr-defined]
    assert core.bucket > 0  # the mux still reads: one window stays free
    held_in_mux = sum(st.recv_bytes for st in core._streams.values())
    assert held_in_mux <= 7 * 512 * 1024
    # the control stream is not held up
    peer.ctrl.write(c.encode_frame(c.PING, 0, [77, None]))
    assert await peer.next(peer.ctrl) == (c.PONG, 0, [77])
    blob = b"z" * (300 * 1024)
    assert await peer.call(5, "test.Demo/Echo", blob) == (c.REPLY, 5, [blob, None, None])
    await peer.close()
    assert budget.used == 0 and budget.waiting == 0 and sess.parking.parked == 0


async def test_a_stalled_partial_frame_times_out_and_frees_its_budget() -> None:
    server = Server([Demo()], config=ServerConfig(partial_frame_timeout=0.2))
    peer = Peer(server)
    await peer.hello()
    s = await peer.cc.open_stream()
    start = frame_start(c.CALL, 4, 100_000, 1000)
    s.write(start)
    ftype, cid, body = await peer.next(s)
    assert (ftype, cid, body[0]) == (c.TRAILER, 4, Status.RESOURCE_EXHAUSTED)
    assert "partial_frame_timeout" in body[1]
    assert server.stats["recv_frame_timeouts"] == 1
    assert peer.session.receive.frames.used == 0
    # the rest of that frame, if it ever comes, is skipped; the next frame is read
    s.write(bytes(100_000 + c.HEADER_SIZE - len(start)))
    s.write(c.encode_frame(c.CALL, 6, ["test.Demo/hello", None, 5000, c.FLAG_END, {"name": "late"}]))
    assert await peer.next(s) == (c.REPLY, 6, [{"text": "hello late"}, None, None])
    await peer.close()


async def test_a_large_frame_completes_while_others_wait_fifo() -> None:
    """Legitimate large messages on many streams at once: each waits its turn (FIFO) and all complete."""
    # 4.25 MiB of partial frames: one 3 MiB frame at a time; the 15 MiB of replies are more than the
    # default max_send_backlog (8 MiB) lets one client have in flight, so this test allows them
    server = Server([Demo()], config=ServerConfig(max_send_backlog=32 * MiB))
    peer = Peer(server)
    await peer.hello()
    streams = [await peer.cc.open_stream() for _ in range(5)]
    blob = bytes(3 * MiB)
    for i, s in enumerate(streams):
        s.write(c.encode_frame(c.CALL, 20 + i, ["test.Demo/Echo", None, 10_000, c.FLAG_END, blob]))
    frames = await asyncio.gather(*(peer.next(s, timeout=20) for s in streams))
    assert [(f[0], f[1], len(f[2][0])) for f in frames] == [(c.REPLY, 20 + i, len(blob)) for i in range(5)]
    assert server.stats["recv_frame_waits"] >= 1 and server.stats["recv_frame_refused"] == 0
    await peer.close()


@pytest.mark.parametrize("link", ["memory", "mux"])
async def test_read_frames_gives_back_what_it_may_not_hold(link: str) -> None:
    """Unit: a reader whose next frame does not fit hands the bytes it read of it back to the stream
    (the mux then grants no window for them), waits in a parking slot, and reads them again once the
    budget has room; a reader with no slot refuses the frame; the control stream never waits. On
    mux streams the reading is done in the stream's callback (the direct path), the waiting in the
    reader's task."""
    from kcprpc.inbox import ParkingLot
    from kcprpc.receive import ReceiveLimits

    counters: dict[str, int] = {}
    limits = ReceiveLimits(
        max_decoded_bytes=8 * MiB,
        max_partial_frame_bytes=1000,
        partial_frame_timeout=None,
        held_types=(c.CALL, c.MSG),
        parking=ParkingLot(1),
        counters=counters,
    )
    cc, sc = connection_pair() if link == "memory" else mux_memory_pair()
    a, b, d, ctl = [await cc.open_stream() for _ in range(4)]
    sa, sb, sd, sctl = [await sc.accept_stream() for _ in range(4)]
    got: dict[str, list[c.Frame]] = {"a": [], "b": [], "d": [], "ctl": []}

    def sink(name: str) -> Any:
        return lambda frames, costs: got[name].extend(frames)

    readers = [
        asyncio.ensure_future(read_frames(sa, sink("a"), limits=limits)),
        asyncio.ensure_future(read_frames(sb, sink("b"), limits=limits)),
        asyncio.ensure_future(read_frames(sd, sink("d"), limits=limits)),
        asyncio.ensure_future(read_frames(sctl, sink("ctl"), limits=limits, control=lambda: True)),
    ]
    big = c.encode_frame(c.MSG, 1, b"a" * 700)  # 713 bytes
    a.write(big[:300])
    while limits.frames.used == 0:
        await asyncio.sleep(0)
    assert limits.frames.used == len(big)
    b.write(c.encode_frame(c.MSG, 2, b"ok") + big[:300])  # a whole frame, then one that does not fit
    while not got["b"] or limits.frames.waiting == 0:
        await asyncio.sleep(0)
    assert got["b"] == [(c.MSG, 2, b"ok")]
    # given back, unread
    assert (len(sb._rx.buf) if link == "memory" else sb.buffered) == 300  # type: ignore[attr-defined]
    d.write(big[:300])  # no parking slot left: refused, and the rest of it skipped
    while not got["d"]:
        await asyncio.sleep(0)
    assert got["d"] == [(c.MSG, 1, c.BUFFER_REFUSED)] and counters["recv_frame_refused"] == 1
    ctl.write(big[:300])  # the control stream is charged past the limit, never waits
    while limits.frames.used < 2 * len(big):
        await asyncio.sleep(0)
    ctl.write(big[300:])
    a.write(big[300:])
    d.write(big[300:] + c.encode_frame(c.MSG, 3, b"after"))
    b.write(big[300:])
    while len(got["b"]) < 2 or not got["ctl"] or len(got["d"]) < 2:
        await asyncio.sleep(0)
    assert got["a"] == got["ctl"] == [(c.MSG, 1, b"a" * 700)]
    assert got["b"][1] == (c.MSG, 1, b"a" * 700)
    assert got["d"][1] == (c.MSG, 3, b"after")
    assert limits.frames.used == 0 and limits.parking.parked == 0
    assert counters["recv_frame_waits"] == 1
    for r in readers:
        r.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


async def test_frame_budget_is_fifo_and_survives_cancellation() -> None:
    from kcprpc.receive import FrameBudget

    budget = FrameBudget(100)
    assert budget.try_reserve(60)
    order: list[str] = []

    async def want(name: str, n: int) -> None:
        await budget.reserve(n)
        order.append(name)

    big = asyncio.ensure_future(want("big", 90))
    small = asyncio.ensure_future(want("small", 20))
    gone = asyncio.ensure_future(want("gone", 5))
    await asyncio.sleep(0)
    assert not budget.try_reserve(10)  # fits, but others wait first
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    budget.release(60)
    await asyncio.gather(big)
    assert order == ["big"] and budget.used == 90
    budget.release(90)
    await asyncio.gather(small)
    assert order == ["big", "small"] and budget.used == 20 and budget.waiting == 0


# ----------------------------------------------------------------------------------- admission
async def test_call_cancelled_in_the_same_batch_still_ends_cleanly() -> None:
    """CALL and CANCEL in one write: the handler's task is cancelled before it ever ran. Its cleanup
    (concurrency slot, decode budget) must still run and the client gets its CANCELLED trailer."""
    probe = Probe()
    server = Server([Demo(probe)])
    peer = Peer(server, mux=False)
    await peer.hello()
    for cid in range(1, 4):
        peer.ctrl.write(
            c.encode_frame(c.CALL, cid, ["test.Demo/slow", None, None, c.FLAG_END, {"name": "x"}])
            + c.encode_frame(c.CANCEL, cid, None)
        )
        ftype, got_cid, body = await peer.next(peer.ctrl)
        assert (ftype, got_cid, body[0]) == (c.TRAILER, cid, Status.CANCELLED)
    sess = peer.session
    assert sess.active_calls == 0 and not sess.calls and sess.receive.decode.held == 0
    await peer.close()


def test_receive_limits_are_validated() -> None:
    assert ServerConfig().receive_limits() == (8 * MiB, 4 * MiB + c.HEADER_SIZE + 256 * 1024)
    big = ServerConfig(max_message_size=16 * MiB, max_send_backlog=32 * MiB, max_send_backlog_total=64 * MiB)
    assert big.receive_limits()[0] == 32 * MiB
    with pytest.raises(kcprpc.UsageError):
        ServerConfig(max_decoded_bytes=MiB)  # below max_message_size: a legitimate message never fits
    with pytest.raises(kcprpc.UsageError):
        ServerConfig(max_partial_frame_bytes=4 * MiB)  # one whole frame must fit
    with pytest.raises(kcprpc.UsageError):
        ClientConfig(partial_frame_timeout=0)
