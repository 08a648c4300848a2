"""The direct read path: a mux stream that calls its reader back (``MuxStream.set_reader`` and
``read_nowait``) and :func:`kcprpc.receive.read_frames` driven from that callback, with its task
only waiting out pauses and reservations (the KCP session's half, ``set_receiver``, is in
tests/integration/test_direct_receive.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kcprpc import codec as c
from kcprpc.mux import MuxClosedError, MuxStream
from kcprpc.mux.errors import MuxStreamClosedError
from kcprpc.mux.testing import memory_pair
from kcprpc.receive import read_frames

TIMEOUT = 5.0


async def until(cond: Callable[[], bool]) -> None:
    """Let the loop run until ``cond()`` holds (bounded)."""
    async with asyncio.timeout(TIMEOUT):
        while not cond():
            await asyncio.sleep(0)


async def _streams() -> tuple[Any, Any, MuxStream, MuxStream]:
    client, server = memory_pair()
    a = await client.open_stream()
    a.write(b"hello")
    b = await asyncio.wait_for(server.accept_stream(), TIMEOUT)
    return client, server, a, b


class Collector:
    """A stream reader that takes everything in its callback, and notes what it saw."""

    def __init__(self, stream: MuxStream) -> None:
        self.stream = stream
        self.data = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.calls = 0
        stream.set_reader(self)

    def __call__(self) -> None:
        self.calls += 1
        try:
            while (d := self.stream.read_nowait()) is not None:
                if not d:
                    self.eof = True
                    return
                self.data += d
        except Exception as exc:
            self.error = exc


async def test_reader_gets_data_in_order_then_eof_without_a_waiting_task() -> None:
    client, server, a, b = await _streams()
    got = Collector(b)
    got()  # what came before the reader was set
    assert bytes(got.data) == b"hello"
    for i in range(20):
        a.write(b"%d," % i)
    await until(lambda: len(got.data) >= len(b"hello") + sum(len(b"%d," % i) for i in range(20)))
    assert bytes(got.data) == b"hello" + b"".join(b"%d," % i for i in range(20))
    assert b._read_waiter is None  # nobody waited in read()
    a.close()
    await until(lambda: got.eof)
    assert b.read_nowait() == b"" and got.error is None
    await client.close()
    await server.close()


async def test_read_nowait_says_none_when_nothing_is_buffered() -> None:
    client, server, _a, b = await _streams()
    await until(lambda: b.buffered == 5)
    assert b.read_nowait(2) == b"he" and b.read_nowait() == b"llo"
    assert b.read_nowait() is None
    await client.close()
    await server.close()


async def test_reader_is_called_when_the_session_dies() -> None:
    client, server, _a, b = await _streams()
    got = Collector(b)
    got()
    await client.close()  # the peer goes away: the server session dies
    await until(lambda: got.error is not None or got.eof)
    # the peer's mux closed every stream first (FIN) or the session died: either way the reader
    # heard of it in its callback, and a later read says the same
    if got.error is not None:
        assert isinstance(got.error, MuxClosedError)
        with pytest.raises(MuxClosedError):
            b.read_nowait()
    else:
        assert b.read_nowait() == b""
    await server.close()


async def test_abort_calls_the_reader_and_reads_then_raise() -> None:
    client, server, _a, b = await _streams()
    got = Collector(b)
    got()
    calls = got.calls
    b.abort()
    assert got.calls == calls + 1
    assert isinstance(got.error, MuxStreamClosedError)
    await client.close()
    await server.close()


async def test_a_reader_that_writes_and_aborts_in_its_callback() -> None:
    """Re-entry: the callback writes to its own stream (which pumps the session) and aborts it."""
    client, server, a, b = await _streams()
    seen: list[bytes] = []

    def on_readable() -> None:
        while (d := b.read_nowait()) is not None:
            if not d:
                return
            seen.append(d)
            b.write(d.upper())
            if b"stop" in d:
                b.abort()
                return

    b.set_reader(on_readable)
    on_readable()
    assert await asyncio.wait_for(a.readexactly(5), TIMEOUT) == b"HELLO"
    a.write(b"more")
    assert await asyncio.wait_for(a.readexactly(4), TIMEOUT) == b"MORE"
    a.write(b"stop")
    await until(lambda: any(b"stop" in s for s in seen))
    assert seen[0] == b"hello"
    await client.close()
    await server.close()


# -- read_frames on the direct path ----------------------------------------------------------------


def _frames(n: int, start: int = 0) -> bytes:
    return b"".join(c.encode_frame(c.MSG, start + i, b"m%d" % (start + i)) for i in range(n))


async def test_read_frames_runs_in_the_callback_and_pauses_in_its_task() -> None:
    client, server, a, b = await _streams()
    got: list[int] = []
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    paused = [0]

    def on_frames(frames: list[c.Frame], costs: list[int]) -> None:
        got.extend(f[1] for f in frames)

    def pause() -> Awaitable[None] | None:
        if len(got) >= 3 and not gate.done():
            paused[0] += 1
            return gate
        return None

    b.read_nowait()  # the test's "hello" is not a frame: take it out of the way
    reader = asyncio.ensure_future(read_frames(b, on_frames, pause=pause))
    await until(lambda: b._on_readable is not None)
    a.write(_frames(3))
    await until(lambda: len(got) == 3)
    assert paused[0] == 1
    a.write(_frames(4, 3))
    await until(lambda: b.buffered > 0)
    for _ in range(20):
        await asyncio.sleep(0)
    assert got == [0, 1, 2]  # paused: nothing more was read, it waits in the stream
    gate.set_result(None)
    await until(lambda: len(got) == 7)
    assert got == list(range(7))
    a.close()
    await asyncio.wait_for(reader, TIMEOUT)  # EOF ends it
    assert b._on_readable is None
    await client.close()
    await server.close()


async def test_read_frames_raises_what_on_frames_raised_in_the_callback() -> None:
    client, server, a, b = await _streams()
    b.read_nowait()

    def on_frames(frames: list[c.Frame], costs: list[int]) -> None:
        raise ValueError("a bug above")

    reader = asyncio.ensure_future(read_frames(b, on_frames))
    await until(lambda: b._on_readable is not None)
    a.write(_frames(1))
    with pytest.raises(ValueError, match="a bug above"):
        await asyncio.wait_for(reader, TIMEOUT)
    assert b._on_readable is None
    await client.close()
    await server.close()


async def test_read_frames_cancelled_stops_the_callback() -> None:
    client, server, a, b = await _streams()
    b.read_nowait()
    got: list[int] = []
    reader = asyncio.ensure_future(read_frames(b, lambda frames, costs: got.extend(f[1] for f in frames)))
    await until(lambda: b._on_readable is not None)
    a.write(_frames(2))
    await until(lambda: len(got) == 2)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert b._on_readable is None
    a.write(_frames(2, 2))
    await until(lambda: b.buffered > 0)
    assert got == [0, 1]  # nobody reads any more: the data waits in the stream
    await client.close()
    await server.close()


async def test_read_frames_ends_with_the_sessions_error() -> None:
    client, server, _a, b = await _streams()
    b.read_nowait()
    reader = asyncio.ensure_future(read_frames(b, lambda frames, costs: None))
    await until(lambda: b._on_readable is not None)
    server._core.connection_lost(ConnectionResetError("gone"))
    server._pump()
    with pytest.raises(MuxClosedError):
        await asyncio.wait_for(reader, TIMEOUT)
    await client.close()
    await server.close()


# -- read_datagrams on the direct path ---------------------------------------------------------------


class _DatagramConnection:
    """A stand-in connection (unit test) whose datagrams are handed over through
    ``set_datagram_reader``, as a KCP connection's are; ``recv_datagram`` only reports the end."""

    def __init__(self) -> None:
        self.reader: Callable[[bytes], None] | None = None
        self.ended = asyncio.Event()

    def set_datagram_reader(self, reader: Callable[[bytes], None] | None) -> bool:
        self.reader = reader
        return True

    async def recv_datagram(self) -> bytes:
        await self.ended.wait()
        raise ConnectionError("closed")


async def test_read_datagrams_takes_them_in_the_callback_and_survives_a_failing_handler() -> None:
    from kcprpc.receive import read_datagrams

    conn = _DatagramConnection()
    got: list[tuple[int, int, Any]] = []
    bad = [0]
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))

    def on_frame(ftype: int, cid: int, body: Any) -> None:
        if body == b"boom":
            raise ValueError("a handler's bug")
        got.append((ftype, cid, body))

    task = asyncio.ensure_future(read_datagrams(conn, on_frame, lambda: bad.__setitem__(0, bad[0] + 1)))  # type: ignore[arg-type]
    try:
        await until(lambda: conn.reader is not None)
        reader = conn.reader
        assert reader is not None
        reader(c.encode_frame(c.EVENT, 0, b"boom"))  # reported, not raised into the transport
        reader(c.encode_frame(c.EVENT, 0, b"after"))  # the reading goes on
        reader(b"\x00garbage")
        assert got == [(c.EVENT, 0, b"after")] and bad[0] == 1
        assert len(reported) == 1 and isinstance(reported[0]["exception"], ValueError)
        conn.ended.set()
        await asyncio.wait_for(task, TIMEOUT)  # the end still comes through recv_datagram
        assert conn.reader is None
    finally:
        loop.set_exception_handler(None)
        task.cancel()


# -- the mux fed by its transport's callback (KCPSession.set_receiver's shape) ----------------------


class _CallbackTransport:
    """A stand-in byte transport (unit test) that hands its input over through ``set_receiver``,
    as a KCP session does; its ``read`` never returns anything."""

    def __init__(self) -> None:
        self.sink: Callable[[bytes], bool] | None = None
        self.never = asyncio.Event()

    def set_receiver(self, sink: Callable[[bytes], bool] | None) -> None:
        self.sink = sink

    async def read(self, n: int = -1) -> bytes:
        await self.never.wait()
        return b""

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        self.never.set()

    async def wait_closed(self) -> None:
        pass


async def test_mux_takes_its_transports_input_in_the_callback_within_its_bounds() -> None:
    from kcprpc.mux import MuxConfig, MuxSession
    from kcprpc.mux.frame import CMD_PSH, CMD_SYN, encode_frame

    t = _CallbackTransport()
    mux = MuxSession(t, client=False, config=MuxConfig(max_receive_buffer=4096, max_stream_buffer=4096), read_size=1024)
    sink = t.sink
    assert sink is not None
    # a new stream and its data, taken in the call: no reader task ran in between
    assert sink(encode_frame(1, CMD_SYN, 3) + encode_frame(1, CMD_PSH, 3, b"x" * 100))
    stream = mux._accept_queue[0]
    assert stream.read_nowait() == b"x" * 100
    # more than the reader task would read at once (max(read_size, receive tokens left)): refused,
    # so that the transport keeps it for the task (the mux's hold past its bucket stays bounded)
    assert not sink(encode_frame(1, CMD_PSH, 3, b"y" * 5000))
    await mux.close()
    assert t.sink is None  # the transport is let go when the mux ends
