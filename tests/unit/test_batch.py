"""Batched UDP I/O: recvmmsg/sendmmsg and the recvfrom/sendto fallback behave the same."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from kcp.batch import DatagramIO, gso_supported, mmsg_supported, open_udp_socket
from kcp.stats import Counters

FAMILIES = [("127.0.0.1", socket.AF_INET)]
if socket.has_ipv6:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
        FAMILIES.append(("::1", socket.AF_INET6))
    except OSError:  # pragma: no cover - no IPv6 in this sandbox
        pass


def _recv_all(io: DatagramIO, count: int) -> list[tuple[bytes, object]]:
    """Read until ``count`` datagrams arrived, waiting on readiness (never sleeping)."""
    out: list[tuple[bytes, object]] = []
    while len(out) < count:
        ready, _, _ = select.select([io.sock], [], [], 2.0)
        assert ready, f"timed out after {len(out)} of {count} datagrams"
        out.extend(io.recv())
    return out


@pytest.fixture(params=FAMILIES, ids=lambda f: f[0])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    host = request.param[0]
    a = open_udp_socket(host, 0)
    b = open_udp_socket(host, 0)
    yield a, b
    a.close()
    b.close()


def _payloads(n: int) -> list[bytes]:
    return [bytes([i % 251]) * (1 + (i * 37) % 1400) for i in range(n)]


@pytest.mark.parametrize("send_mmsg", [True, False])
@pytest.mark.parametrize("recv_mmsg", [True, False])
def test_batch_and_fallback_are_equivalent(
    pair: tuple[socket.socket, socket.socket], send_mmsg: bool, recv_mmsg: bool
) -> None:
    a, b = pair
    ca, cb = Counters(), Counters()
    tx = DatagramIO(a, ca, mmsg=send_mmsg, gso=False)
    rx = DatagramIO(b, cb, mmsg=recv_mmsg, gso=False)
    data = _payloads(300)
    dest = b.getsockname()
    assert tx.send([(d, dest) for d in data]) == len(data)
    got = _recv_all(rx, len(data))
    assert [g[0] for g in got] == data
    # the source address is the same tuple socket.recvfrom would give
    assert {g[1] for g in got} == {a.getsockname()}
    assert ca.out_pkts == cb.in_pkts == len(data)
    assert ca.bytes_sent == cb.bytes_received == sum(map(len, data))
    if send_mmsg and mmsg_supported():
        assert ca.send_syscalls == -(-len(data) // 64)
    else:
        assert ca.send_syscalls == len(data)
    if recv_mmsg and mmsg_supported():
        assert cb.recv_syscalls < len(data) / 10
    else:
        assert cb.recv_syscalls >= len(data)


def test_env_switch_forces_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    sock = open_udp_socket("127.0.0.1", 0)
    try:
        monkeypatch.setenv("KCP_NO_GSO", "1")
        assert DatagramIO(sock).gso is False
        monkeypatch.delenv("KCP_NO_GSO")
        assert DatagramIO(sock).gso is gso_supported()
        monkeypatch.setenv("KCP_NO_MMSG", "1")
        assert DatagramIO(sock).mmsg is False
        monkeypatch.setenv("KCP_NO_MMSG", "0")
        assert DatagramIO(sock).mmsg is mmsg_supported()
        monkeypatch.delenv("KCP_NO_MMSG")
        assert DatagramIO(sock, mmsg=False).mmsg is False
    finally:
        sock.close()


def test_recv_on_empty_socket_returns_nothing() -> None:
    for mm in (True, False):
        sock = open_udp_socket("127.0.0.1", 0)
        c = Counters()
        try:
            assert DatagramIO(sock, c, mmsg=mm).recv() == []
            assert c.recv_syscalls == 1
        finally:
            sock.close()


def test_oversized_datagram_goes_alone_and_in_order(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    tx = DatagramIO(a, max_datagram=512, gso=False)
    rx = DatagramIO(b, max_datagram=4096)
    data = [b"a" * 100, b"b" * 3000, b"c" * 200, b"d" * 511]
    assert tx.send([(d, b.getsockname()) for d in data]) == 4
    assert [g[0] for g in _recv_all(rx, 4)] == data


def test_send_error_drops_one_datagram_and_goes_on() -> None:
    a = open_udp_socket("127.0.0.1", 0)
    b = open_udp_socket("127.0.0.1", 0)
    try:
        for mm in (True, False):
            tx = DatagramIO(a, mmsg=mm, gso=False)
            rx = DatagramIO(b)
            items = [(b"one", b.getsockname()), (b"x" * 70000, b.getsockname()), (b"two", b.getsockname())]
            assert tx.send(items) == 3
            assert tx.last_error is not None
            assert [g[0] for g in _recv_all(rx, 2)] == [b"one", b"two"]
    finally:
        a.close()
        b.close()


@pytest.mark.skipif(not gso_supported(), reason="kernel without UDP_SEGMENT")
@pytest.mark.parametrize("mmsg", [True, False], ids=["sendmmsg+gso", "sendmsg+gso"])
def test_gso_sends_runs_as_one_message(mmsg: bool) -> None:
    a = open_udp_socket("127.0.0.1", 0)
    b = open_udp_socket("127.0.0.1", 0)
    other = open_udp_socket("127.0.0.1", 0)
    try:
        c = Counters()
        tx = DatagramIO(a, c, gso=True, mmsg=mmsg)
        rx = DatagramIO(b)
        rx2 = DatagramIO(other)
        dest = b.getsockname()
        data = [bytes([i]) * 1200 for i in range(100)] + [b"tail"] + [b"z" * 50, b"y" * 60]
        items = [(d, dest) for d in data]
        items.insert(10, (b"elsewhere", other.getsockname()))  # breaks a run
        assert tx.send(items) == len(items)
        assert [g[0] for g in _recv_all(rx, len(data))] == data
        assert [g[0] for g in _recv_all(rx2, 1)] == [b"elsewhere"]
        assert c.out_pkts == len(items)
        if mmsg and mmsg_supported():
            assert c.send_syscalls == 2  # 64 datagram slots per sendmmsg
        else:
            # runs: 10 | elsewhere | 54 (64-segment cap) | 36 + tail | z | y
            assert c.send_syscalls == 6
    finally:
        a.close()
        b.close()
        other.close()


def test_reuse_port_lets_two_sockets_share_a_port() -> None:
    a = open_udp_socket("127.0.0.1", 0, reuse_port=True)
    try:
        port = a.getsockname()[1]
        b = open_udp_socket("127.0.0.1", port, reuse_port=True)
        assert b.getsockname()[1] == port
        b.close()
        with pytest.raises(OSError):
            open_udp_socket("127.0.0.1", port)
    finally:
        a.close()


def test_bad_arguments_are_refused() -> None:
    sock = open_udp_socket("127.0.0.1", 0)
    try:
        with pytest.raises(ValueError):
            DatagramIO(sock, batch=0)
        with pytest.raises(ValueError):
            DatagramIO(sock, max_datagram=10)
    finally:
        sock.close()


@pytest.mark.parametrize("mmsg", [True, False])
def test_recv_on_a_closed_socket_returns_at_once(mmsg: bool) -> None:
    sock = open_udp_socket("127.0.0.1", 0)
    io = DatagramIO(sock, mmsg=mmsg)
    sock.close()
    assert io.recv() == []  # the fallback used to retry a persistent error forever
    assert io.last_error is not None


@pytest.mark.skipif(not mmsg_supported(), reason="recvmmsg/sendmmsg only")
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_forget_drops_the_cached_addresses_of_a_peer(family: int) -> None:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    try:
        a = open_udp_socket(host, 0, family=family)
    except OSError:  # pragma: no cover - no IPv6 here
        pytest.skip("no IPv6")
    peers = [open_udp_socket(host, 0, family=family) for _ in range(3)]
    try:
        io = DatagramIO(a, mmsg=True, gso=False)
        for p in peers:
            p.sendto(b"hi", a.getsockname())
        got = _recv_all(io, 3)
        io.send([(b"back", addr) for _, addr in got])
        assert io.cache_sizes() == (3, 3)
        for _, addr in got[:2]:
            io.forget(addr)
        assert io.cache_sizes() == (1, 1)
        io.forget(got[0][1])  # twice: nothing left to drop, no error
        # the remaining peer still resolves to the same address object from the cache
        peers[2].sendto(b"again", a.getsockname())
        ((_, addr),) = _recv_all(io, 1)
        assert addr == got[2][1] and io.cache_sizes() == (1, 1)
    finally:
        a.close()
        for p in peers:
            p.close()
