"""kcprpc.web.pipe: a mux and RPC datagrams over two WebPipes wired back to back (what a
WebSocket or a WebTransport stream does between them), and the pipe's bounds: receive buffer,
datagram queues, send backlog and progress, close and abort."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable

import pytest

from kcprpc.errors import UsageError
from kcprpc.mux import MuxConfig, MuxSession
from kcprpc.net import MuxConnection
from kcprpc.web.pipe import WebPipe

TIMEOUT = 5.0


async def until(cond: Callable[[], object], steps: int = 1000) -> None:
    """Let the loop run until ``cond()`` holds (bounded in loop steps)."""
    for _ in range(steps):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


class Gate:
    """A send callable that a test can hold (the peer stops reading) and release."""

    def __init__(self, deliver: Callable[[bytes], object]) -> None:
        self.deliver = deliver
        self.open = asyncio.Event()
        self.open.set()
        self.sent: list[bytes] = []

    async def __call__(self, data: bytes) -> None:
        await self.open.wait()
        self.sent.append(data)
        self.deliver(data)


def pair(**kw: int) -> tuple[WebPipe, WebPipe, Gate, Gate]:
    """Two pipes back to back: what one sends the other is fed."""
    ab: list[WebPipe] = []
    a_gate = Gate(lambda d: ab[1].feed_stream(d))
    b_gate = Gate(lambda d: ab[0].feed_stream(d))
    a = WebPipe(a_gate, lambda d: ab[1].feed_datagram(d), **kw)  # type: ignore[arg-type]
    b = WebPipe(b_gate, lambda d: ab[0].feed_datagram(d), **kw)  # type: ignore[arg-type]
    ab.extend([a, b])
    return a, b, a_gate, b_gate


async def test_a_mux_connection_runs_over_two_pipes() -> None:
    a, b, _, _ = pair()
    cfg = MuxConfig(version=2)
    client = MuxConnection(MuxSession(a, client=True, config=cfg), a, channel_binding=b"x" * 16)
    server = MuxConnection(MuxSession(b, client=False, config=cfg), b)
    try:
        s = await client.open_stream()
        big = bytes(range(256)) * 1000  # 256 KB: many chunks, several windows
        s.write(big)
        await s.drain()
        peer = await asyncio.wait_for(server.accept_stream(), TIMEOUT)
        got = await asyncio.wait_for(peer.readexactly(len(big)), TIMEOUT)  # type: ignore[attr-defined]
        assert got == big
        client.send_datagram(b"dgram")
        assert await asyncio.wait_for(server.recv_datagram(), TIMEOUT) == b"dgram"
        assert client.channel_binding == b"x" * 16
        assert a.counters["stream_bytes_out"] >= len(big) and b.counters["stream_bytes_in"] >= len(big)
        assert max(len(c) for c in pair_sent(a)) <= a.chunk_size
    finally:
        await client.close()
        await server.close()


def pair_sent(p: WebPipe) -> list[bytes]:
    gate = p._send_stream
    assert isinstance(gate, Gate)
    return gate.sent


async def test_the_backlog_grows_and_progress_stops_while_the_peer_takes_nothing() -> None:
    held = [0]
    gate_open = asyncio.Event()

    async def send(data: bytes) -> None:
        held[0] += len(data)  # the transport below takes it and holds it
        await gate_open.wait()

    p = WebPipe(send, transport_backlog=lambda: held[0], send_high_water=1000, chunk_size=100)
    p.write(b"a" * 250)
    await until(lambda: held[0] == 100)  # the sender took one chunk; the transport holds it
    assert p.send_backlog() == 250 + 100  # queued (with the chunk in flight) + what the transport holds
    before = p.send_acked()
    p.write(b"b" * 100)
    assert p.send_acked() == before  # writing more is no progress
    held[0] = 0  # the peer consumed what the transport held
    assert p.send_acked() != before
    gate_open.set()
    p.abort()
    await asyncio.wait_for(p.wait_closed(), TIMEOUT)


async def test_drain_waits_above_high_water_until_the_sender_moves() -> None:
    release = asyncio.Event()

    async def send(data: bytes) -> None:
        await release.wait()

    p = WebPipe(send, send_high_water=100, chunk_size=50)
    p.write(b"x" * 300)
    assert not p.write_ready()
    d = asyncio.ensure_future(p.drain())
    await until(lambda: p._drain_waiters)  # drain() parked
    release.set()
    await asyncio.wait_for(d, TIMEOUT)
    assert p._out_bytes < 100
    p.abort()


async def test_the_receive_buffer_is_bounded_and_wait_room_holds_the_reader() -> None:
    p = WebPipe(lambda d: None, max_receive_buffer=100)
    assert p.feed_stream(b"a" * 60)
    assert not p.feed_stream(b"b" * 50)  # past the bound: refused, counted
    assert p.counters["receive_overflows"] == 1 and p.buffered == 60
    room = asyncio.ensure_future(p.wait_room(50))
    await until(lambda: p._room_waiter is not None)  # wait_room() parked
    assert await p.read(20) == b"a" * 20  # 40 left: 50 more fit
    await asyncio.wait_for(room, TIMEOUT)
    assert await p.read() == b"a" * 40
    p.feed_eof()
    assert await p.read() == b""
    p.close()
    await asyncio.wait_for(p.wait_closed(), TIMEOUT)


async def test_received_datagrams_are_bounded_in_bytes_and_counted_as_held() -> None:
    """A WebSocket's datagrams may be 16 KiB: 256 of them waited unread, 4 MiB a connection that
    no process-wide bound counted. Now at most max_datagram_queue_bytes, in receive_held()."""
    p = WebPipe(lambda d: None, lambda d: None, max_datagram_size=16 * 1024, max_datagram_queue_bytes=40_000)
    big = b"x" * 16 * 1024
    assert p.feed_datagram(big) and p.feed_datagram(big)
    assert not p.feed_datagram(big)  # 49,152 bytes > 40,000: dropped though the queue has room
    assert p.counters["datagrams_in_dropped"] == 1
    p.feed_stream(b"s" * 100)
    assert p.receive_held() == 2 * len(big) + 100
    assert await p.recv_datagram() == big
    assert p.receive_held() == len(big) + 100 and p.feed_datagram(big)
    p.close()
    await asyncio.wait_for(p.wait_closed(), TIMEOUT)
    assert WebPipe(lambda d: None).max_datagram_queue_bytes == 256 * 1024


async def test_datagram_queues_are_bounded_and_drops_counted() -> None:
    sent: list[bytes] = []
    p = WebPipe(
        lambda d: None, sent.append, max_datagram_queue=2, max_datagram_size=10, max_datagram_backlog=15
    )
    assert p.feed_datagram(b"1") and p.feed_datagram(b"2")
    assert not p.feed_datagram(b"3")  # queue full
    assert not p.feed_datagram(b"x" * 11)  # too big
    assert p.counters["datagrams_in_dropped"] == 2
    assert await p.recv_datagram() == b"1"
    p.send_datagram(b"y" * 10)
    p.send_datagram(b"z" * 10)  # 20 > 15 bytes waiting: dropped
    p.send_datagram(b"w" * 11)  # over max_datagram_size
    assert p.counters["datagrams_out_dropped"] == 2
    p.close()
    await asyncio.wait_for(p.wait_closed(), TIMEOUT)
    assert sent == [b"y" * 10]
    assert await p.recv_datagram() == b"2"  # what was received is still read
    with pytest.raises(ConnectionError):
        await p.recv_datagram()


async def test_close_sends_what_is_queued_then_calls_on_close() -> None:
    out: list[bytes] = []
    closed: list[tuple[int | None, str]] = []
    p = WebPipe(out.append, on_close=lambda c, r: closed.append((c, r)), chunk_size=4)
    p.write(b"hello world")
    p.close()
    with pytest.raises(ConnectionError):
        p.write(b"more")
    await asyncio.wait_for(p.wait_closed(), TIMEOUT)
    assert b"".join(out) == b"hello world" and closed == [(None, "")] and p.closed
    with pytest.raises(ConnectionError):
        await p.drain()


async def test_a_closed_pipe_is_freed_at_once_not_when_its_close_deadline_would_have_come() -> None:
    """close() bounds the sending of what is queued by ``close_timeout``; once the pipe ended
    sooner, that deadline's timer is cancelled: it held the pipe (and its buffers) until it fired."""
    p = WebPipe([].append, close_timeout=60.0)
    p.write(b"bytes")
    p.close()
    await asyncio.wait_for(p.wait_closed(), TIMEOUT)
    gone = weakref.ref(p)
    del p
    gc.collect()
    assert gone() is None


async def test_abort_drops_what_waits_and_gives_its_code() -> None:
    release = asyncio.Event()
    closed: list[tuple[int | None, str]] = []

    async def send(data: bytes) -> None:
        await release.wait()

    p = WebPipe(send, on_close=lambda c, r: closed.append((c, r)))
    p.write(b"x" * 1000)
    reader = asyncio.ensure_future(p.read())
    p.abort(4008, "slow consumer")
    await asyncio.wait_for(p.wait_closed(), TIMEOUT)
    assert closed == [(4008, "slow consumer")] and p.send_backlog() == 0
    assert await asyncio.wait_for(reader, TIMEOUT) == b""


async def test_a_failing_transport_ends_the_pipe_and_is_counted() -> None:
    def send(data: bytes) -> None:
        raise OSError("connection reset")

    closed = asyncio.Event()
    p = WebPipe(send, on_close=lambda c, r: closed.set())
    p.write(b"x")
    await asyncio.wait_for(closed.wait(), TIMEOUT)
    assert p.closed and p.counters["send_errors"] == 1


async def test_close_after_the_peer_went_away_ends_at_once() -> None:
    release = asyncio.Event()

    async def send(data: bytes) -> None:
        await release.wait()  # never: the peer is gone

    p = WebPipe(send, close_timeout=60.0)
    p.write(b"x" * 10)
    p.feed_eof()
    p.close()
    await asyncio.wait_for(p.wait_closed(), TIMEOUT)


async def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="max_receive_buffer"):
        WebPipe(lambda d: None, max_receive_buffer=0)
    with pytest.raises(UsageError, match="close_timeout"):
        WebPipe(lambda d: None, close_timeout=0)
