"""Direct writes: with its writer task parked, a session writes a stream's data straight to a
transport that reports ``write_ready()``, and falls back to the writer task when it does not."""

from __future__ import annotations

import asyncio

from kcprpc.mux import MuxSession
from kcprpc.mux.testing import MemoryTransport

LIMIT = 10.0


class ReadyTransport(MemoryTransport):
    """A memory transport that says whether a write would have to wait (like a KCP session)."""

    def __init__(self) -> None:
        super().__init__(limit=None)
        self.ready = True

    def write_ready(self) -> bool:
        return self.ready and not self._closed


def pipe() -> tuple[ReadyTransport, ReadyTransport]:
    a, b = ReadyTransport(), ReadyTransport()
    a.peer, b.peer = b, a
    return a, b


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_write_goes_out_synchronously_while_the_writer_is_parked() -> None:
    a, b = pipe()
    client, server = MuxSession(a, client=True), MuxSession(b, client=False)
    try:
        stream = await client.open_stream()
        peer = await asyncio.wait_for(server.accept_stream(), LIMIT)
        await settle()  # the writer task is parked again
        before = a.bytes_written
        stream.write(b"hello")
        assert a.bytes_written > before  # no loop turn needed
        assert await asyncio.wait_for(peer.readexactly(5), LIMIT) == b"hello"
    finally:
        await client.close()
        await server.close()


async def test_a_full_transport_falls_back_to_the_writer_task() -> None:
    a, b = pipe()
    client, server = MuxSession(a, client=True), MuxSession(b, client=False)
    try:
        stream = await client.open_stream()
        peer = await asyncio.wait_for(server.accept_stream(), LIMIT)
        await settle()
        a.ready = False
        before = a.bytes_written
        stream.write(b"later")
        assert a.bytes_written == before  # left to the writer task
        data = await asyncio.wait_for(peer.readexactly(5), LIMIT)
        assert data == b"later"
        a.ready = True
        big = bytes(range(256)) * 1024  # several frames: order is kept across both paths
        stream.write(big[:1000])
        a.ready = False
        stream.write(big[1000:])
        a.ready = True
        got = await asyncio.wait_for(peer.readexactly(len(big)), LIMIT)
        assert got == big
    finally:
        await client.close()
        await server.close()
