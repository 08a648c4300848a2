"""Read coalescing on a real socket (kcp.endpoint with kcp.coalesce): a busy endpoint stops watching
its socket and reads it on a timer, every datagram still handled once and in order; a quiet one
goes back to readiness; a listener's socket coalesces when its IOOptions ask, a dialled one never."""

from __future__ import annotations

import asyncio

import kcp
from kcp.batch import Address, open_udp_socket
from kcp.coalesce import ReadCoalescer
from kcp.endpoint import Endpoint
from kcp.stats import Counters


class _Watched(ReadCoalescer):
    """Sets ``back`` when the timed reads go back to readiness."""

    def __init__(self, hold_ms: int, window: float) -> None:
        super().__init__(hold_ms, window=window)
        self.back = asyncio.Event()

    def read(self, now: float, got: int) -> bool:
        keep = super().read(now, got)
        if not keep:
            self.back.set()
        return keep


async def test_a_busy_endpoint_reads_on_the_timer_then_goes_back_to_readiness() -> None:
    loop = asyncio.get_running_loop()
    sock = open_udp_socket("127.0.0.1", 0)
    peer = open_udp_socket("127.0.0.1", 0)
    peer.setblocking(True)
    to = sock.getsockname()
    ep = Endpoint(loop, sock, Counters(), coalesce_ms=1)
    c = ep.coalesce = _Watched(1, window=10.0)
    c.enter_wakes = 2  # a low bar: the third wake-up of a window switches
    got: list[bytes] = []
    want = 0
    arrived = asyncio.Event()

    def dispatch(data: bytes, addr: Address, now: int) -> None:
        got.append(data)
        if len(got) >= want:
            arrived.set()

    async def until(n: int) -> None:
        nonlocal want
        want = n
        if len(got) < n:
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), 5.0)

    ep.dispatch = dispatch
    try:
        for i in range(3):  # one at a time: three readiness wake-ups
            peer.sendto(b"%d" % i, to)
            await until(i + 1)
        assert c.polled and c.entered == 1
        assert ep.poll_handle is not None
        assert not loop.remove_reader(sock.fileno())  # nobody watches the socket now
        for i in range(3, 200):  # a burst: read by the timed reads, all of it, in order
            peer.sendto(b"%d" % i, to)
        await until(200)
        assert got == [b"%d" % i for i in range(200)]
        assert c.polled
        c.window = 0.02  # quiet from here: the next window's reads find nothing
        await asyncio.wait_for(c.back.wait(), 5.0)
        assert not c.polled and c.left == 1 and ep.poll_handle is None
        peer.sendto(b"after", to)  # read at its readiness again
        await until(201)
        assert got[-1] == b"after"
        assert loop.remove_reader(sock.fileno())  # the endpoint watches its socket again
        loop.add_reader(sock.fileno(), ep._on_readable)
    finally:
        ep.close()
        peer.close()
    assert ep.poll_handle is None


async def test_closing_while_reading_on_the_timer_cancels_the_timer() -> None:
    loop = asyncio.get_running_loop()
    sock = open_udp_socket("127.0.0.1", 0)
    ep = Endpoint(loop, sock, Counters(), coalesce_ms=5)
    assert ep.coalesce is not None
    ep.coalesce.enter_wakes = 0
    ep._on_readable()  # nothing to read; the wake-up still counts, past a bar of 0
    handle = ep.poll_handle
    assert handle is not None
    ep.close()
    assert handle.cancelled() and ep.poll_handle is None


async def test_a_listener_coalesces_when_asked_and_a_dial_never() -> None:
    wire = kcp.SecureWire(key="coalesce")
    listener = await kcp.listen("127.0.0.1", 0, wire, io=kcp.IOOptions(read_coalesce_ms=1))
    off = await kcp.listen("127.0.0.1", 0, wire)  # off by default
    try:
        assert listener.endpoint.coalesce is not None and listener.endpoint.coalesce.hold == 0.001
        assert off.endpoint.coalesce is None
        host, port = listener.address
        session = await asyncio.wait_for(
            kcp.dial(host, port, wire, io=kcp.IOOptions(read_coalesce_ms=1)), 5.0
        )
        try:
            assert session._host.endpoint.coalesce is None  # type: ignore[attr-defined]
        finally:
            session.close()
            await session.wait_closed()
    finally:
        listener.close()
        off.close()
        await listener.wait_closed()
        await off.wait_closed()
