"""DATA_PART frames: a payload larger than the path MTU crosses in pieces and is reassembled,
when both ends agreed to it in the handshake. Hostile pieces (from a peer that holds the keys)
are dropped and counted, and what is kept for reassembly is bounded in count, bytes and time."""

from __future__ import annotations

import random

import pytest

from kcp.secure import HandshakeConfig, SecureConnection, SecureUsageError, generate_keypair
from kcp.secure.config import PMTUD_LIMIT
from kcp.secure.connection import MAX_PENDING_PARTS, PART_TIMEOUT_MS
from kcp.secure.packet import (
    F_DATA_PART,
    FEATURE_ACK_REPEAT,
    FEATURE_DATA_PARTS,
    FEATURE_HELD_ACKS,
    MAX_PARTS,
    PART_OVERHEAD,
)
from kcp.secure.testing import CLIENT_ADDR, HostileClient, run_handshake, seal_raw, seeded_rng

PRIV, PUB = generate_keypair(seeded_rng(4))


def _pair(
    client_parts: bool = True, server_parts: bool = True
) -> tuple[SecureConnection, SecureConnection, int]:
    run = run_handshake(
        HandshakeConfig(server_public_key=PUB, data_parts=client_parts),
        HandshakeConfig(static_key=PRIV, data_parts=server_parts),
    )
    assert run.client_conn is not None and run.server_conn is not None
    return run.client_conn, run.server_conn, run.now


def _piece(mid: int, index: int, count: int, body: bytes) -> bytes:
    return bytes((F_DATA_PART,)) + mid.to_bytes(4, "big") + bytes((index, count)) + body


@pytest.mark.parametrize(
    ("client", "server", "agreed"), [(True, True, True), (True, False, False), (False, True, False)]
)
def test_both_ends_must_offer_it(client: bool, server: bool, agreed: bool) -> None:
    cc, sc, _now = _pair(client, server)
    assert cc.params.data_parts is agreed and sc.params.data_parts is agreed


def test_unknown_feature_bits_of_a_client_are_not_granted() -> None:
    run = run_handshake(
        HandshakeConfig(server_public_key=PUB),
        HandshakeConfig(static_key=PRIV),
        client=HostileClient(HandshakeConfig(server_public_key=PUB), seeded_rng(9), features=0xFF),
    )
    assert (
        run.server_conn is not None
        and run.server_conn.params.features == FEATURE_DATA_PARTS | FEATURE_HELD_ACKS | FEATURE_ACK_REPEAT
    )


def test_a_large_payload_crosses_in_even_pieces_in_any_order() -> None:
    cc, sc, now = _pair()
    payload = random.Random(1).randbytes(1450)
    pieces = cc.seal_parts(payload, 1200, now)
    assert len(pieces) == 2 and all(len(p) <= 1200 for p in pieces)
    assert abs(len(pieces[0]) - len(pieces[1])) <= 1
    assert sc.open(pieces[1], CLIENT_ADDR, now) is None  # the second first: kept
    assert sc.open(pieces[0], CLIENT_ADDR, now) == payload
    c = sc.counters
    assert (c.parts_received, c.parts_reassembled, c.part_errors) == (2, 1, 0)
    assert sc.parts_pending == (0, 0)
    assert cc.counters.payloads_split == 1 and cc.counters.parts_sent == 2


def test_the_sender_refuses_what_it_cannot_split() -> None:
    cc, _sc, now = _pair()
    with pytest.raises(SecureUsageError, match=r"2\.\.16"):
        cc.seal_parts(bytes(100), 1200, now)  # fits whole: one piece
    with pytest.raises(SecureUsageError, match=r"2\.\.16"):
        cc.seal_parts(bytes(MAX_PARTS * 10 + 1), PART_OVERHEAD + 10, now)
    off, _sc2, now2 = _pair(server_parts=False)
    with pytest.raises(SecureUsageError, match="did not agree"):
        off.seal_parts(bytes(2000), 1200, now2)


def test_pieces_the_handshake_did_not_agree_to_are_dropped() -> None:
    cc, sc, now = _pair(client_parts=False)
    assert sc.open(seal_raw(cc, _piece(1, 0, 2, b"ab"), now), CLIENT_ADDR, now) is None
    assert sc.open(seal_raw(cc, _piece(1, 1, 2, b"cd"), now), CLIENT_ADDR, now) is None
    assert sc.counters.part_errors == 2 and sc.parts_pending == (0, 0)


@pytest.mark.parametrize(
    "frame",
    [
        bytes((F_DATA_PART,)),  # truncated header
        _piece(1, 0, 2, b"")[:-1],  # no message id in full
        _piece(1, 0, 2, b""),  # an empty piece
        _piece(1, 0, 1, b"x"),  # one piece is no split
        _piece(1, 0, 0, b"x"),
        _piece(1, 0, MAX_PARTS + 1, b"x"),
        _piece(1, 2, 2, b"x"),  # index beyond the count
    ],
)
def test_malformed_pieces_are_dropped_and_counted(frame: bytes) -> None:
    cc, sc, now = _pair()
    assert sc.open(seal_raw(cc, frame, now), CLIENT_ADDR, now) is None
    assert sc.counters.part_errors == 1 and sc.parts_pending == (0, 0)
    assert sc.counters.packets_opened >= 1 and sc.is_open  # the connection goes on


def test_contradicting_and_repeated_pieces_are_dropped() -> None:
    cc, sc, now = _pair()
    for frame in (_piece(7, 0, 3, b"a"), _piece(7, 1, 4, b"b"), _piece(7, 0, 3, b"z")):
        assert sc.open(seal_raw(cc, frame, now), CLIENT_ADDR, now) is None
    assert sc.counters.part_errors == 2
    for frame in (_piece(7, 1, 3, b"b"), _piece(7, 2, 3, b"c")):
        got = sc.open(seal_raw(cc, frame, now), CLIENT_ADDR, now)
    assert got == b"abc"  # the first copy of piece 0 won


def test_a_payload_larger_than_any_datagram_is_given_up() -> None:
    cc, sc, now = _pair()
    limit = max(sc.params.mtu, PMTUD_LIMIT)
    body = bytes(1100)
    pieces = [_piece(3, i, MAX_PARTS, body) for i in range(MAX_PARTS)]
    for p in pieces:
        assert sc.open(seal_raw(cc, p, now), CLIENT_ADDR, now) is None
    assert sc.counters.part_errors >= 1 and sc.counters.parts_reassembled == 0
    assert sc.parts_pending[1] <= limit  # never more than one datagram's worth held for it


def test_pending_payloads_are_bounded_in_count_and_time() -> None:
    cc, sc, now = _pair()
    for mid in range(100):  # first pieces only, never completed
        sc.open(seal_raw(cc, _piece(mid, 0, 2, bytes(1000)), now), CLIENT_ADDR, now)
    count, nbytes = sc.parts_pending
    assert count == MAX_PENDING_PARTS and nbytes == MAX_PENDING_PARTS * 1000
    assert sc.counters.parts_dropped == 100 - MAX_PENDING_PARTS
    # the last ones still complete
    assert sc.open(seal_raw(cc, _piece(99, 1, 2, b"!"), now), CLIENT_ADDR, now) == bytes(1000) + b"!"
    later = now + PART_TIMEOUT_MS + 1
    sc.open(seal_raw(cc, _piece(500, 0, 2, b"x"), later), CLIENT_ADDR, later)
    assert sc.parts_pending == (1, 1)  # the stale ones went when the next payload started
    assert sc.counters.parts_dropped == 100 - 1
