"""``KCPSession.set_receiver``: a session hands its input to the layer above in the loop turn that
read it, in order with what :meth:`read` returns, over real loopback UDP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

import kcp
from kcp.session import KCPSession

TIMEOUT = 10.0


async def until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not cond():
            await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def connected(session: kcp.SessionConfig | None = None) -> AsyncIterator[tuple[KCPSession, KCPSession]]:
    """A dialed session and the listener's side of it (``session``: the listener's config)."""
    accepted: asyncio.Queue[KCPSession] = asyncio.Queue()

    async def on_accept(s: KCPSession) -> None:
        await accepted.put(s)

    lis = await kcp.listen("127.0.0.1", 0, on_accept=on_accept, session=session)
    host, port = lis.address[:2]
    client = await kcp.dial(host, port)
    try:
        client.write(b"hi")
        server = await asyncio.wait_for(accepted.get(), TIMEOUT)
        assert await asyncio.wait_for(server.readexactly(2), TIMEOUT) == b"hi"
        try:
            yield client, server
        finally:
            server.close()
    finally:
        client.close()
        lis.close()
        await lis.wait_closed()


@pytest.fixture
async def sessions() -> AsyncIterator[tuple[KCPSession, KCPSession]]:
    async with connected() as pair:
        yield pair


async def test_input_goes_to_the_receiver_then_to_read_once_it_refuses(
    sessions: tuple[KCPSession, KCPSession],
) -> None:
    client, server = sessions
    taken = bytearray()
    open_ = [True]

    def receiver(data: bytes) -> bool:
        if not open_[0]:
            return False
        taken.extend(data)
        return True

    server.set_receiver(receiver)
    first = b"".join(b"m%03d" % i for i in range(8))
    client.write(first)
    await until(lambda: len(taken) == len(first))
    assert bytes(taken) == first  # in order, in the turns that read it
    open_[0] = False  # refused: it and what follows wait for read(), in order
    second = b"".join(b"n%03d" % i for i in range(8))
    client.write(second[:16])
    client.write(second[16:])
    assert await asyncio.wait_for(server.readexactly(len(second)), TIMEOUT) == second
    assert bytes(taken) == first
    # the read buffer is empty again: the receiver gets new input directly
    open_[0] = True
    client.write(b"late")
    await until(lambda: len(taken) == len(first) + 4)
    assert bytes(taken).endswith(b"late")


async def test_a_receiver_that_closes_the_session(sessions: tuple[KCPSession, KCPSession]) -> None:
    client, server = sessions
    taken: list[bytes] = []

    def receiver(data: bytes) -> bool:
        taken.append(data)
        server.close()
        return True

    server.set_receiver(receiver)
    for i in range(5):
        client.write(b"x%d" % i)
        await client.drain()
    await until(lambda: bool(taken))
    await asyncio.wait_for(server.wait_closed(), TIMEOUT)
    assert taken[0].startswith(b"x0")
    assert await asyncio.wait_for(server.read(), TIMEOUT) == b""  # closed: nothing left for read()


async def test_no_receiver_after_set_receiver_none(sessions: tuple[KCPSession, KCPSession]) -> None:
    client, server = sessions
    taken: list[bytes] = []
    server.set_receiver(lambda d: taken.append(d) is None)
    server.set_receiver(None)
    client.write(b"plain")
    assert await asyncio.wait_for(server.readexactly(5), TIMEOUT) == b"plain"
    assert taken == []


async def test_what_read_refills_stays_behind_what_read_returned() -> None:
    """read() takes the read buffer and refills it from the engine before it returns: the refill must
    not go to the receiver, or the receiver's data would overtake what the caller of read() holds."""
    async with connected(kcp.SessionConfig(read_buffer=4096)) as (client, server):
        out = bytearray()
        taking = [False]

        def receiver(data: bytes) -> bool:
            if taking[0]:
                out.extend(data)
            return taking[0]

        server.set_receiver(receiver)
        payload = bytes(i % 251 for i in range(20_000))
        client.write(payload[:10_000])  # refused: to the read buffer, past its 4 KiB bound
        await until(lambda: client.send_backlog() == 0)
        client.write(payload[10_000:])  # the buffer is full: this waits in the engine
        await until(lambda: client.send_backlog() == 0)
        taking[0] = True

        async def reader() -> None:
            while True:
                out.extend(await server.read())  # all it buffers: the refill finds it empty

        task = asyncio.ensure_future(reader())
        try:
            await until(lambda: len(out) >= len(payload))
        finally:
            task.cancel()
        assert bytes(out) == payload


async def test_datagrams_go_to_the_receiver_after_what_was_queued(
    sessions: tuple[KCPSession, KCPSession],
) -> None:
    client, server = sessions
    client.send_datagram(b"queued")
    assert await asyncio.wait_for(server.recv_datagram(), TIMEOUT) == b"queued"
    client.send_datagram(b"first")
    client.send_datagram(b"second")
    await until(lambda: server.stats["datagrams_queued"] == 2)
    got: list[bytes] = []
    # what waited in the queue goes to the receiver at once, then each one in the turn that read it
    server.set_datagram_receiver(got.append)
    assert got == [b"first", b"second"] and server.stats["datagrams_queued"] == 0
    for i in range(5):
        client.send_datagram(b"d%d" % i)
    await until(lambda: len(got) == 7)
    assert got[2:] == [b"d%d" % i for i in range(5)] and server.stats["datagrams_queued"] == 0
    server.set_datagram_receiver(None)
    client.send_datagram(b"back to the queue")
    assert await asyncio.wait_for(server.recv_datagram(), TIMEOUT) == b"back to the queue"


async def test_a_datagram_receiver_that_closes_the_session(sessions: tuple[KCPSession, KCPSession]) -> None:
    client, server = sessions
    got: list[bytes] = []

    def receiver(data: bytes) -> None:
        got.append(data)
        server.close()

    server.set_datagram_receiver(receiver)
    waiting = asyncio.ensure_future(server.recv_datagram())
    client.send_datagram(b"one")
    client.send_datagram(b"two")
    await until(lambda: bool(got))
    with pytest.raises(kcp.ConnectionClosedError):
        await asyncio.wait_for(waiting, TIMEOUT)  # recv_datagram reports the end
    assert got[0] == b"one"
