"""The reuseport CBPF router on a real socket group on 127.0.0.1: a secure transport packet reaches
the socket its connection ID's worker byte names from any source port (an initiation: its client
ID's first byte); without the program (or for a packet with no worker byte) the kernel's address
hash decides, and spreads the same client's packets over the sockets as its port changes: the
failure of migrating across workers."""

from __future__ import annotations

import select
import socket
from collections import Counter
from collections.abc import Iterator

import pytest

from kcp.reuseport import open_reuseport_group
from kcp.secure.packet import MIN_TRANSPORT, T_INITIATION

SOURCES = 32  # client sockets (source ports) per case: the hash puts all on one socket with p = 2**-31


def receiving_socket(group: list[socket.socket], payload: bytes, src: socket.socket) -> int:
    """Send ``payload`` from ``src`` to the group; the index of the socket that received it."""
    port = group[0].getsockname()[1]
    src.sendto(payload, ("127.0.0.1", port))
    readable, _, _ = select.select(group, [], [], 2.0)
    assert len(readable) == 1, "the datagram reached no socket (or two)"
    sock = readable[0]
    assert sock.recv(2048) == payload
    return group.index(sock)


def spread(group: list[socket.socket], payload: bytes) -> Counter[int]:
    """Which socket gets ``payload`` from each of SOURCES source ports."""
    out: Counter[int] = Counter()
    for _ in range(SOURCES):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as src:
            out[receiving_socket(group, payload, src)] += 1
    return out


def _group(route_by_cid: bool) -> Iterator[list[socket.socket]]:
    group = open_reuseport_group("127.0.0.1", 0, 3, route_by_cid=route_by_cid)
    yield group
    for s in group:
        s.close()


@pytest.fixture
def routed() -> Iterator[list[socket.socket]]:
    yield from _group(True)


@pytest.fixture
def hashed() -> Iterator[list[socket.socket]]:
    yield from _group(False)


def transport_packet(worker: int) -> bytes:
    return bytes((0xC8, worker)) + bytes(range(MIN_TRANSPORT - 2))


def initiation(client_cid_first: int) -> bytes:
    return bytes((T_INITIATION, 1, 1, 1, client_cid_first)) + bytes(300)


def test_the_worker_byte_decides_whatever_the_source_port(routed: list[socket.socket]) -> None:
    ports = {s.getsockname()[1] for s in routed}
    assert len(ports) == 1  # one port, three sockets
    for worker in range(3):
        assert spread(routed, transport_packet(worker)) == Counter({worker: SOURCES})
    assert spread(routed, b"\xc9" + transport_packet(2)[1:]) == Counter({2: SOURCES})  # either key phase


def test_an_initiation_goes_to_the_worker_its_client_id_names(routed: list[socket.socket]) -> None:
    for worker in range(3):
        assert spread(routed, initiation(worker)) == Counter({worker: SOURCES})


def test_without_a_worker_byte_the_address_hash_decides(routed: list[socket.socket]) -> None:
    handshake = initiation(0xFF)  # a client ID whose first byte names no worker
    for payload in (handshake, transport_packet(3), transport_packet(1)[:20], b"kcp-go"):
        assert len(spread(routed, payload)) > 1  # spread by source port, as the kernel hashes
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as src:  # ... and stable for one address
        first = receiving_socket(routed, handshake, src)
        assert all(receiving_socket(routed, handshake, src) == first for _ in range(8))


def test_without_the_program_a_migrating_client_reaches_other_workers(hashed: list[socket.socket]) -> None:
    """The same connection ID from new source ports lands on other sockets: a worker that does not
    know it would answer with a stateless reset (the issue's 4 of 8 clients lost)."""
    assert len(spread(hashed, transport_packet(1))) > 1
