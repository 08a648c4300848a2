"""kcprpc.web.udp: the WebTransport listener's datagram transport, on a real loopback socket
(reads and sends in batches, the close, bad protocol code, the address caches)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from kcp.batch import open_udp_socket
from kcprpc.web.udp import BatchedDatagramTransport
from tests.integration.web_support import until


class Recorder(asyncio.DatagramProtocol):
    def __init__(self, fail_on: bytes | None = None) -> None:
        self.got: list[tuple[bytes, Any]] = []
        self.lost: list[Exception | None] = []
        self.transport: asyncio.BaseTransport | None = None
        self.fail_on = fail_on

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data == self.fail_on:
            raise RuntimeError("a bug in the protocol")
        self.got.append((data, addr))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


@pytest.fixture
def peer() -> Any:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5.0)
    yield s
    s.close()


async def test_datagrams_waiting_are_read_in_batches_and_reach_the_protocol(peer: socket.socket) -> None:
    proto = Recorder()
    t = BatchedDatagramTransport(open_udp_socket("127.0.0.1", 0), proto)
    try:
        assert proto.transport is t
        addr = t.get_extra_info("sockname")
        for i in range(300):  # all of them wait in the socket before the loop reads once
            peer.sendto(b"d%d" % i, addr)
        await until(lambda: len(proto.got) == 300)
        assert [d for d, _ in proto.got] == [b"d%d" % i for i in range(300)]
        assert {a for _, a in proto.got} == {peer.getsockname()}
        assert t.counters.in_pkts == 300
        if t._endpoint.io.mmsg:  # recvmmsg: 64 a call, not one per datagram
            assert t.counters.recv_syscalls <= 300 // 64 + 3
    finally:
        t.close()


async def test_what_one_turn_sends_leaves_in_batches(peer: socket.socket) -> None:
    proto = Recorder()
    t = BatchedDatagramTransport(open_udp_socket("127.0.0.1", 0), proto)
    try:
        to = peer.getsockname()
        for i in range(100):
            t.sendto(b"x%03d" % i, to)
        # each full send batch left at once, the rest waits for the end of this turn
        assert t.get_write_buffer_size() == 100 % t._endpoint.io.batch > 0
        await asyncio.sleep(0)
        assert t.get_write_buffer_size() == 0
        got = [peer.recvfrom(2048)[0] for _ in range(100)]
        assert got == [b"x%03d" % i for i in range(100)]
        assert t.counters.out_pkts == 100
        if t._endpoint.io.mmsg:
            assert t.counters.send_syscalls < 10
        assert t.send_dropped == 0
    finally:
        t.close()


async def test_close_sends_what_is_queued_closes_the_socket_and_tells_the_protocol(
    peer: socket.socket,
) -> None:
    proto = Recorder()
    sock = open_udp_socket("127.0.0.1", 0)
    t = BatchedDatagramTransport(sock, proto)
    addr = t.get_extra_info("sockname")
    t.sendto(b"last", peer.getsockname())
    t.close()
    assert t.is_closing() and sock.fileno() == -1
    assert peer.recvfrom(2048)[0] == b"last"
    assert proto.lost == []  # in the next turn, as asyncio's transports do
    await until(lambda: proto.lost == [None])
    t.sendto(b"ignored", peer.getsockname())  # nothing once closed, no error
    t.close()
    assert proto.lost == [None] and t.get_extra_info("sockname") is None
    peer.sendto(b"late", addr)
    await asyncio.sleep(0.02)  # (a turn or two: nothing may arrive any more)
    assert proto.got == []


async def test_a_protocol_that_raises_on_a_datagram_does_not_stop_the_socket(
    peer: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    proto = Recorder(fail_on=b"bad")
    t = BatchedDatagramTransport(open_udp_socket("127.0.0.1", 0), proto)
    try:
        addr = t.get_extra_info("sockname")
        for d in (b"a", b"bad", b"b", b"bad", b"c"):
            peer.sendto(d, addr)
        await until(lambda: len(proto.got) == 3)
        assert [d for d, _ in proto.got] == [b"a", b"b", b"c"]
        assert t.counters.in_errs == 2
    finally:
        t.close()


async def test_a_forgotten_address_leaves_the_caches(peer: socket.socket) -> None:
    proto = Recorder()
    t = BatchedDatagramTransport(open_udp_socket("127.0.0.1", 0), proto)
    try:
        peer.sendto(b"hi", t.get_extra_info("sockname"))
        await until(lambda: len(proto.got) == 1)
        t.sendto(b"back", proto.got[0][1])
        await asyncio.sleep(0)
        assert peer.recvfrom(2048)[0] == b"back"
        io = t._endpoint.io
        assert io.cache_sizes() != (0, 0) or not io.mmsg  # (plain sendto/recvfrom cache nothing)
        t.forget(proto.got[0][1])
        assert io.cache_sizes() == (0, 0)
    finally:
        t.close()
