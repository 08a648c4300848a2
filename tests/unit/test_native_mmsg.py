"""kcp._mmsg, the compiled build's C sendmmsg/recvmmsg (kcp/_mmsg.c), called directly: what
kcp.batch relies on, and what it must refuse. The DatagramIO tests (test_batch.py,
test_fanout_costs.py) run through it too wherever it is built. The compiled CI run requires it
(KCPRPC_EXPECT_COMPILED=1): there these tests cannot be skipped."""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from native_support import native_module

from kcp.batch import DatagramIO, _decode_sockaddr, open_udp_socket

native: Any = native_module("kcp._mmsg")
pytestmark = pytest.mark.skipif(native is None, reason="kcp._mmsg is built by the compiled build only")

SLOT = 2048


@pytest.fixture
def socks() -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    tx = open_udp_socket("127.0.0.1", 0)
    rx = [open_udp_socket("127.0.0.1", 0) for _ in range(3)]
    yield tx, rx
    for s in (tx, *rx):
        s.close()


def _encoder(io: DatagramIO) -> tuple[dict[Any, tuple[bytes, int]], Any]:
    return io._addr_cache, io._sockaddr


def _recv(sock: socket.socket, count: int) -> list[tuple[bytes, Any]]:
    out: list[tuple[bytes, Any]] = []
    cache: dict[bytes, Any] = {}
    while len(out) < count:
        ready, _, _ = select.select([sock], [], [], 2.0)
        assert ready, f"timed out after {len(out)} of {count}"
        got, nbytes, err = native.recv(sock.fileno(), 64, SLOT, cache, _decode_sockaddr, out)
        assert got >= 1 and err == 0 and nbytes == sum(len(d) for d, _ in out[-got:])
    return out


def test_a_batch_goes_out_in_one_call_and_comes_back_with_its_addresses(
    socks: tuple[socket.socket, list[socket.socket]],
) -> None:
    tx, rx = socks
    io = DatagramIO(tx)
    cache, encode = _encoder(io)
    items = [(b"d%d" % i * (i + 1), s.getsockname()) for i, s in enumerate(rx)] + [
        (b"last", rx[0].getsockname())
    ]
    m, sent, nbytes, err = native.send(tx.fileno(), items, 0, len(items), 64, SLOT, False, cache, encode)
    assert (m, sent, err) == (4, 4, 0) and nbytes == sum(len(d) for d, _ in items)
    assert set(cache) == {s.getsockname() for s in rx}  # encode() cached each address once
    got = _recv(rx[0], 2)
    assert [d for d, _ in got] == [b"d0", b"last"] and got[0][1] == tx.getsockname()
    assert _recv(rx[2], 1) == [(b"d2d2d2", tx.getsockname())]


def test_packing_stops_before_a_run_a_long_datagram_and_at_the_batch(
    socks: tuple[socket.socket, list[socket.socket]],
) -> None:
    tx, rx = socks
    cache, encode = _encoder(DatagramIO(tx))
    a, b = rx[0].getsockname(), rx[1].getsockname()
    fd = tx.fileno()
    run = [(b"x", a), (b"y", b), (b"z", b)]
    assert native.send(fd, run, 0, 3, 64, SLOT, True, cache, encode)[:2] == (1, 1)  # y starts a run
    assert native.send(fd, run, 0, 3, 64, SLOT, False, cache, encode)[:2] == (3, 3)
    long = [(b"x", a), (bytes(SLOT + 1), a)]
    assert native.send(fd, long, 0, 2, 64, SLOT, False, cache, encode)[:2] == (1, 1)
    assert native.send(fd, long, 1, 2, 64, SLOT, False, cache, encode)[:2] == (0, 0)  # sendto's
    many = [(b"%d" % i, a) for i in range(10)]
    assert native.send(fd, many, 2, 10, 4, SLOT, False, cache, encode)[:2] == (4, 4)
    assert [d for d, _ in _recv(rx[0], 7)] == [b"x", b"x", b"x", b"2", b"3", b"4", b"5"]
    assert [d for d, _ in _recv(rx[1], 2)] == [b"y", b"z"]


def test_a_cache_cleared_while_a_batch_is_packed_keeps_its_sockaddrs_alive(
    socks: tuple[socket.socket, list[socket.socket]],
) -> None:
    # DatagramIO clears its cache when it is full: the sockaddrs of messages already packed must
    # stay valid until sendmmsg returned
    tx, rx = socks
    io = DatagramIO(tx)
    cache: dict[Any, tuple[bytes, int]] = {}

    def encode(addr: Any) -> tuple[bytes, int]:
        cache.clear()
        return io._sockaddr(addr)

    items = [(b"n%d" % i, rx[i % 3].getsockname()) for i in range(30)]
    m, sent, _, err = native.send(tx.fileno(), items, 0, 30, 64, SLOT, False, cache, encode)
    assert (m, sent, err) == (30, 30, 0)
    for k, s in enumerate(rx):
        assert [d for d, _ in _recv(s, 10)] == [b"n%d" % i for i in range(k, 30, 3)]


def test_a_list_emptied_by_encode_sends_what_was_packed(
    socks: tuple[socket.socket, list[socket.socket]],
) -> None:
    # encode() is Python code: the items it was handed may change under it; what was packed
    # (and is held) still goes, nothing is read past the list's end
    tx, rx = socks
    io = DatagramIO(tx)
    items = [
        (b"first", rx[0].getsockname()),
        (b"second", rx[1].getsockname()),
        (b"third", rx[2].getsockname()),
    ]

    def encode(addr: Any) -> tuple[bytes, int]:
        items.clear()
        return io._sockaddr(addr)

    assert native.send(tx.fileno(), items, 0, 3, 64, SLOT, False, {}, encode)[:3] == (1, 1, 5)
    assert _recv(rx[0], 1) == [(b"first", tx.getsockname())]


def test_errors_come_back_as_errno_and_bad_arguments_raise() -> None:
    s = open_udp_socket("127.0.0.1", 0)
    cache, encode = _encoder(DatagramIO(s))
    fd = s.fileno()
    item = [(b"x", s.getsockname())]
    assert native.recv(fd, 8, SLOT, {}, _decode_sockaddr, [])[0::2] == (-1, errno.EAGAIN)
    with pytest.raises(TypeError):
        native.send(fd, tuple(item), 0, 1, 8, SLOT, False, cache, encode)  # a list only
    with pytest.raises(TypeError):
        native.send(fd, [b"x"], 0, 1, 8, SLOT, False, cache, encode)
    with pytest.raises(TypeError):
        native.send(fd, item, 0, 1, 8, SLOT, False, {}, lambda addr: b"not a tuple")
    with pytest.raises(IndexError):
        native.send(fd, item, 0, 2, 8, SLOT, False, cache, encode)
    for batch, slot in ((0, SLOT), (native.MAX_BATCH + 1, SLOT), (8, 0)):
        with pytest.raises(ValueError):
            native.send(fd, item, 0, 1, batch, slot, False, cache, encode)
        with pytest.raises(ValueError):
            native.recv(fd, batch, slot, {}, _decode_sockaddr, [])
    with pytest.raises(ValueError):
        native.recv(-1, 8, SLOT, {}, _decode_sockaddr, [])
    with pytest.raises(ZeroDivisionError):  # what encode() raises comes out, nothing is sent
        native.send(fd, item, 0, 1, 8, SLOT, False, {}, lambda addr: 1 // 0)
    s.close()
    assert native.send(fd, item, 0, 1, 8, SLOT, False, cache, encode) == (1, -1, 0, errno.EBADF)


def test_a_recv_inside_a_recv_is_refused_and_the_next_one_works(
    socks: tuple[socket.socket, list[socket.socket]],
) -> None:
    tx, rx = socks
    tx.sendto(b"one", rx[0].getsockname())
    select.select([rx[0]], [], [], 2.0)

    def decode(key: bytes) -> Any:
        native.recv(rx[0].fileno(), 8, SLOT, {}, _decode_sockaddr, [])  # would reuse the buffers
        return key

    with pytest.raises(RuntimeError, match="inside recv"):
        native.recv(rx[0].fileno(), 8, SLOT, {}, decode, [])
    tx.sendto(b"two", rx[0].getsockname())
    assert [d for d, _ in _recv(rx[0], 1)] == [b"two"]
