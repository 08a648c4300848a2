"""asyncio MuxSession pairs over the in-memory pipe: concurrency, flow control, keepalive, death.

Every wait is bounded by ``asyncio.wait_for``; synchronisation uses the sessions' own events, and
the only real timers are the deliberately short keepalive intervals of the keepalive tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable

import pytest

from kcprpc.mux import (
    MuxClosedError,
    MuxConfig,
    MuxKeepaliveTimeoutError,
    MuxSession,
    MuxStream,
    MuxStreamClosedError,
    StreamState,
)
from kcprpc.mux.frame import CMD_FIN, CMD_SYN, INITIAL_PEER_WINDOW, decode_frames, encode_frame
from kcprpc.mux.testing import MemoryTransport, memory_pair, memory_pipe

LIMIT = 10.0  # seconds: generous bound on every wait (the tests take milliseconds)


async def until(pred: Callable[[], bool], what: str, limit: int = 100_000) -> None:
    """Let the loop run until ``pred()`` holds (bounded number of loop turns, no timers)."""
    for _ in range(limit):
        if pred():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"condition never held: {what}")


async def until_timers(pred: Callable[[], bool], what: str, timeout: float = LIMIT) -> None:
    """Like :func:`until`, for conditions that need a real (short, configured) timer to fire."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"condition never held: {what}")
        await asyncio.sleep(0.002)


def payload(tag: str, size: int) -> bytes:
    return random.Random(tag).randbytes(size)


async def bounded(aw: Awaitable[object]) -> object:
    return await asyncio.wait_for(aw, LIMIT)


@pytest.mark.parametrize(("version", "seed"), [(1, 1), (2, 2)])
async def test_many_concurrent_streams_both_ways_with_random_chunking(version: int, seed: int) -> None:
    cfg = MuxConfig(version=version, max_frame_size=3000, max_stream_buffer=32768, max_receive_buffer=262144)
    client, server = memory_pair(cfg, seed=seed, max_chunk=5000, limit=65536)
    rng = random.Random(seed)

    async def opener(sess: MuxSession, tag: str) -> None:
        st = await sess.open_stream()
        data = payload(f"{tag}:{st.stream_id}", rng.choice((0, 1, 5000, 70_000, 250_000)))
        reply = asyncio.ensure_future(st.read(64))
        for off in range(0, len(data), 7000):
            st.write(data[off : off + 7000])
            await st.drain()
        st.close()
        await st.wait_closed()
        digest = await reply
        rest = bytearray(digest)
        while chunk := await st.read():
            rest += chunk
        assert bytes(rest) == hashlib.sha256(data).hexdigest().encode()

    async def acceptor(sess: MuxSession, n: int) -> None:
        async def serve(st: MuxStream) -> None:
            h = hashlib.sha256()
            while chunk := await st.read(rng.choice((1, 100, -1))):
                h.update(chunk)
            st.write(h.hexdigest().encode())
            st.close()
            await st.wait_closed()

        tasks = []
        for _ in range(n):
            st = await sess.accept_stream()
            tasks.append(asyncio.ensure_future(serve(st)))
        await asyncio.gather(*tasks)

    n_client, n_server = 24, 10
    await bounded(
        asyncio.gather(
            acceptor(server, n_client),
            acceptor(client, n_server),
            *(opener(client, "c") for _ in range(n_client)),
            *(opener(server, "s") for _ in range(n_server)),
        )
    )
    await until(lambda: client.num_streams == 0 and server.num_streams == 0, "all streams released")
    for s in (client, server):
        c = s.counters
        assert c["protocol_errors"] == 0 and c["dropped_unknown_stream"] == 0
        assert c["streams_released"] == n_client + n_server
    await client.close()
    await bounded(server.wait_closed())
    assert isinstance(server.error, MuxClosedError)


async def test_v2_slow_reader_does_not_stall_other_streams_and_memory_stays_bounded() -> None:
    cfg = MuxConfig(version=2, max_stream_buffer=65536, max_receive_buffer=1 << 20, stream_send_buffer=65536)
    client, server = memory_pair(cfg, limit=65536)
    slow_c = await client.open_stream()
    fast_c = await client.open_stream()
    slow_s = await bounded(server.accept_stream())
    fast_s = await bounded(server.accept_stream())
    assert isinstance(slow_s, MuxStream) and isinstance(fast_s, MuxStream)
    big = payload("big", 2_000_000)
    slow_writer = asyncio.ensure_future(_write_all(slow_c, big))
    fast_writer = asyncio.ensure_future(_write_all(fast_c, big))
    got = bytearray()
    peak_slow = 0
    # the fast stream completes entirely while nobody reads the slow one
    while len(got) < len(big):
        chunk = await bounded(fast_s.read())
        assert isinstance(chunk, bytes)
        got += chunk
        peak_slow = max(peak_slow, slow_s.buffered)
    assert bytes(got) == big
    await bounded(fast_writer)
    assert not slow_writer.done()
    # the slow stream is held by its window: at most smux's initial 256 KiB window is buffered
    assert slow_s.buffered <= INITIAL_PEER_WINDOW
    assert peak_slow <= INITIAL_PEER_WINDOW
    # and the writer side holds only its send buffer plus one write
    assert client._core.get_stream(slow_c.stream_id).send_buffered <= 65536 + 65536  # type: ignore[union-attr]
    # now read the slow stream; its writer gets going again
    rest = bytearray()
    while len(rest) < len(big):
        chunk = await bounded(slow_s.read())
        assert isinstance(chunk, bytes)
        rest += chunk
        assert slow_s.buffered <= INITIAL_PEER_WINDOW
    assert bytes(rest) == big
    await bounded(slow_writer)
    await client.close()
    await server.close()


async def _write_all(st: MuxStream, data: bytes) -> None:
    for off in range(0, len(data), 16384):
        st.write(data[off : off + 16384])
        await st.drain()


async def test_v2_drain_blocks_on_closed_window_and_resumes() -> None:
    cfg = MuxConfig(version=2, stream_send_buffer=1024)
    client, server = memory_pair(cfg)
    cs = await client.open_stream()
    ss = await bounded(server.accept_stream())
    assert isinstance(ss, MuxStream)
    cs.write(b"x" * (INITIAL_PEER_WINDOW + 10_000))
    drain = asyncio.ensure_future(cs.drain())
    await until(lambda: ss.buffered == INITIAL_PEER_WINDOW, "window filled")
    assert not drain.done()  # 10 000 bytes wait behind a closed window
    await bounded(ss.read(5000))  # first read: UPD(consumed=5000, window=65536) still leaves it closed
    got = 5000
    while got < INITIAL_PEER_WINDOW + 10_000:
        chunk = await bounded(ss.read())
        assert isinstance(chunk, bytes)
        got += len(chunk)
    await bounded(drain)
    await client.close()
    await server.close()


async def test_half_close_request_response() -> None:
    client, server = memory_pair()
    cs = await client.open_stream()
    cs.write(b"request body")
    cs.close()
    with pytest.raises(MuxStreamClosedError):
        cs.write(b"after close")
    cs.close()  # idempotent
    ss = await bounded(server.accept_stream())
    assert isinstance(ss, MuxStream)
    assert await bounded(ss.readexactly(7)) == b"request"
    assert await bounded(ss.read()) == b" body"
    assert await bounded(ss.read()) == b""  # FIN after the data
    assert ss.at_eof()
    with pytest.raises(asyncio.IncompleteReadError):
        await bounded(ss.readexactly(1))
    ss.write(b"response")  # our half is still open
    ss.close()
    await bounded(ss.wait_closed())
    assert await bounded(cs.readexactly(8)) == b"response"
    assert await bounded(cs.read()) == b""
    await until(lambda: client.num_streams == 0 and server.num_streams == 0, "released")
    await client.close()
    await server.close()


async def test_session_close_sends_fin_and_peer_sees_eof_then_death() -> None:
    client, server = memory_pair()
    cs = await client.open_stream()
    cs.write(b"last words")
    ss = await bounded(server.accept_stream())
    assert isinstance(ss, MuxStream)
    await client.close()
    assert client.closed
    assert await bounded(ss.read()) == b"last words"
    assert await bounded(ss.read()) == b""  # FIN from client.close()
    await bounded(server.wait_closed())
    assert "EOF" in str(server.error)
    with pytest.raises(MuxClosedError):
        await server.accept_stream()
    with pytest.raises(MuxClosedError):
        await server.open_stream()
    with pytest.raises(MuxClosedError):
        ss.write(b"x")
    with pytest.raises(MuxClosedError, match="locally"):
        await cs.read()


async def test_peer_death_fails_every_stream_with_clear_error() -> None:
    a, b = memory_pipe()
    client = MuxSession(a, client=True)
    server = MuxSession(b, client=False)
    streams = [await client.open_stream() for _ in range(3)]
    streams[0].write(b"buffered")
    accepted = [await bounded(server.accept_stream()) for _ in range(3)]
    s0, s1, _ = accepted
    assert isinstance(s0, MuxStream) and isinstance(s1, MuxStream)
    await until(lambda: s0.buffered == 8, "data arrived")
    blocked_read = asyncio.ensure_future(s1.read())
    accept = asyncio.ensure_future(server.accept_stream())
    a.close()  # the client's transport vanishes underneath (no FIN on any stream)
    with pytest.raises(MuxClosedError, match="EOF"):
        await bounded(blocked_read)
    with pytest.raises(MuxClosedError, match="EOF"):
        await bounded(accept)
    assert await s0.read() == b"buffered"  # what had arrived is still readable
    with pytest.raises(MuxClosedError, match="EOF"):
        await s0.read()
    await bounded(server.wait_closed())
    assert server.closed
    await client.close()


async def test_keepalive_timeout_closes_session_when_peer_goes_silent() -> None:
    cfg = MuxConfig(keepalive_interval=0.01, keepalive_timeout=0.05)
    a, b = memory_pipe()
    client = MuxSession(a, client=True, config=cfg)
    server = MuxSession(b, client=False, config=cfg)
    cs = await client.open_stream()
    ss = await bounded(server.accept_stream())
    assert isinstance(ss, MuxStream)
    pending = asyncio.ensure_future(ss.read())
    a.blackhole()  # the client host dies: nothing more reaches the server, and no EOF either
    with pytest.raises(MuxKeepaliveTimeoutError, match="keepalive timeout"):
        await bounded(pending)
    assert server.counters["keepalive_timeouts"] == 1
    assert server.counters["nop_out"] >= 1
    # the server then closed its transport: the client sees EOF and fails its streams too
    with pytest.raises(MuxClosedError):
        await bounded(cs.read())
    await bounded(client.wait_closed())
    await bounded(server.wait_closed())


async def test_keepalive_keeps_an_idle_session_alive() -> None:
    # NOPs for twice the timeout; a timeout of a few intervals (0.03 s) lost the session whenever
    # a loaded machine stalled the loop that long
    cfg = MuxConfig(keepalive_interval=0.02, keepalive_timeout=0.25)
    client, server = memory_pair(cfg)
    await until_timers(lambda: server.counters["nop_in"] >= 25 and client.counters["nop_in"] >= 25, "NOPs")
    assert not client.closed and not server.closed
    await client.close()
    await server.close()


async def test_hostile_garbage_closes_session_counted_without_crash() -> None:
    errors: list[object] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
    raw, b = memory_pipe()
    server = MuxSession(b, client=False)
    raw.write(encode_frame(1, CMD_SYN, 3) + encode_frame(1, 2, 3, b"fine"))
    st = await bounded(server.accept_stream())
    assert isinstance(st, MuxStream)
    raw.write(bytes.fromhex("0109000003000000"))  # unknown command 9
    await bounded(server.wait_closed())
    assert server.counters["bad_cmd"] == 1
    assert server.counters["protocol_errors"] == 1
    assert await st.read() == b"fine"
    with pytest.raises(MuxClosedError, match="protocol error"):
        await st.read()
    assert await raw.read() == b""  # the server closed the transport
    assert errors == []


async def test_syn_flood_beyond_max_streams_is_refused_with_fin() -> None:
    raw, b = memory_pipe()
    server = MuxSession(b, client=False, config=MuxConfig(max_streams=4))
    raw.write(b"".join(encode_frame(1, CMD_SYN, sid) for sid in range(3, 3 + 2 * 10, 2)))
    await until(lambda: server.counters["streams_refused"] == 6, "refusals")
    wire = await bounded(raw.read())
    assert isinstance(wire, bytes)
    frames, _ = decode_frames(wire, 1)
    assert [(f.cmd, f.stream_id) for f in frames] == [(CMD_FIN, sid) for sid in range(11, 23, 2)]
    assert server.counters["streams_accepted"] == 4
    assert not server.closed
    await server.close()


async def test_v1_bucket_stops_reading_the_transport_until_the_app_reads() -> None:
    cfg = MuxConfig(max_receive_buffer=100_000, max_stream_buffer=65536, max_frame_size=10_000)
    a, b = memory_pipe()
    client = MuxSession(a, client=True, config=cfg)
    server = MuxSession(b, client=False, config=cfg)
    cs = await client.open_stream()
    cs.write(b"z" * 500_000)
    ss = await bounded(server.accept_stream())
    assert isinstance(ss, MuxStream)
    await until(lambda: not server._core.wants_read, "bucket exhausted")
    await until(lambda: a.bytes_written == 500_000 + 8 * 51, "all written")
    # bounded: the bucket (plus one frame) in the session, the rest still in the transport
    assert ss.buffered <= 110_000
    assert b.bytes_read <= 110_000 + 65536 + 8 * 12
    got = 0
    while got < 500_000:
        chunk = await bounded(ss.read())
        assert isinstance(chunk, bytes)
        got += len(chunk)
    await client.close()
    await server.close()


class _RecordingReads:
    """Wraps a transport and records the ``n`` of every ``read(n)``."""

    def __init__(self, inner: MemoryTransport) -> None:
        self.inner = inner
        self.asked: list[int] = []

    async def read(self, n: int = -1) -> bytes:
        self.asked.append(n)
        return await self.inner.read(n)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.inner.write(data)

    async def drain(self) -> None:
        await self.inner.drain()

    def close(self) -> None:
        self.inner.close()

    async def wait_closed(self) -> None:
        await self.inner.wait_closed()


async def test_transport_reads_ask_for_the_tokens_left_but_at_least_read_size() -> None:
    # asking a KCP session for less than it buffers makes it move the rest on every read, so the
    # session asks for everything its bucket still admits (never less than read_size)
    cfg = MuxConfig(max_receive_buffer=200_000, max_stream_buffer=65536, max_frame_size=10_000)
    a, b = memory_pipe()
    rec = _RecordingReads(b)
    client = MuxSession(a, client=True, config=cfg)
    server = MuxSession(rec, client=False, config=cfg, read_size=4096)
    cs = await client.open_stream()
    cs.write(b"q" * 500_000)
    ss = await bounded(server.accept_stream())
    assert isinstance(ss, MuxStream)
    await until(lambda: not server._core.wants_read, "bucket exhausted")
    assert rec.asked[0] == 200_000  # the whole bucket at first
    got = 0
    while got < 500_000:
        chunk = await bounded(ss.read())
        assert isinstance(chunk, bytes)
        got += len(chunk)
    assert min(rec.asked) >= 4096 and max(rec.asked) <= 200_000  # never beyond the bucket
    await client.close()
    await server.close()


async def test_context_managers_and_repr() -> None:
    client, server = memory_pair()
    async with client, server:
        st = await client.open_stream()
        async with st:
            st.write(b"x")
        assert st.is_closing()
        assert "MuxStream id=3" in repr(st)
    assert client.closed and server.closed


async def test_abort_for_cancellation() -> None:
    client, server = memory_pair(MuxConfig(version=2))
    cs = await client.open_stream()
    cs.write(b"x" * 300_000)  # more than the initial window: part of it waits
    ss = await bounded(server.accept_stream())
    assert isinstance(ss, MuxStream)
    blocked = asyncio.ensure_future(cs.drain())
    await until(lambda: ss.buffered == INITIAL_PEER_WINDOW, "window filled")
    cs.abort()  # the caller gave up: drop what is queued, FIN, forget the stream
    await bounded(blocked)  # a blocked drain() returns: nothing is queued any more
    with pytest.raises(MuxStreamClosedError):
        await cs.read()
    await until(lambda: ss._st.state is StreamState.HALF_CLOSED_REMOTE, "FIN arrived")
    assert client.num_streams == 0
    got = 0
    while chunk := await bounded(ss.read()):
        assert isinstance(chunk, bytes)
        got += len(chunk)
    assert got == INITIAL_PEER_WINDOW  # what had been sent arrives, then EOF
    ss.close()
    await until(lambda: server.num_streams == 0, "released")
    assert not client.closed and not server.closed
    await client.close()
    await server.close()


async def test_concurrent_accepts_and_a_cancelled_accept_loses_no_stream() -> None:
    client, server = memory_pair()
    waiters = [asyncio.ensure_future(server.accept_stream()) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[1].cancel()
    opened = [await client.open_stream() for _ in range(3)]
    got = [await bounded(w) for w in (waiters[0], waiters[2])]
    got.append(await bounded(server.accept_stream()))
    assert sorted(s.stream_id for s in got if isinstance(s, MuxStream)) == [s.stream_id for s in opened]
    await client.close()
    await server.close()
