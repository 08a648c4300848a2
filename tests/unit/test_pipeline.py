"""kcp.pipeline: packet order, sizes, tamper detection, drops and counters, OOB, FEC integration."""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable

import pytest

from kcp.crypt import CIPHER_NAMES, AEADCrypt, BlockCrypt, derive_key, new_crypt
from kcp.errors import KCPUsageError
from kcp.pipeline import (
    CRYPT_HEADER_SIZE,
    KIND_KCP,
    KIND_KCP_RECOVERED,
    KIND_OOB,
    MIN_PACKET_SIZE,
    OOB_SEQID,
    TYPE_DATA,
    TYPE_OOB,
    TYPE_PARITY,
    Pipeline,
)
from kcp.stats import Counters

KEY = derive_key("pipeline tests")
FAST = ["null", "none", "aes", "aes-128", "aes-128-gcm", "salsa20", "xor", "sm4", "blowfish", "3des", "cast5"]
SLOW = ["twofish", "tea", "xtea"]
FEC_SETTINGS = [(0, 0), (3, 2), (10, 3)]


def _rng(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def kcp_packet(rnd: random.Random, size: int, conv: int = 0x11223344) -> bytes:
    """A packet that looks like KCP: conv, then a cmd in 81..84 (so it never reads as an FEC flag)."""
    assert size >= 24
    return struct.pack("<IBB", conv, rnd.choice([81, 82, 83, 84]), rnd.randrange(256)) + rnd.randbytes(
        size - 6
    )


def pipe(
    name: str, ds: int = 0, ps: int = 0, seed: int = 1, *, peer_fec: bool = True
) -> tuple[Pipeline, Counters]:
    """A pipeline whose peer is known to run FEC (as a secure handshake says) unless ``peer_fec``
    is False: then its first packet from the peer tells."""
    counters = Counters()
    return Pipeline(new_crypt(name, KEY), ds, ps, counters, rng=_rng(seed), peer_fec=peer_fec), counters


# ---------------------------------------------------------------------------------------------
# layout and sizes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ds", "ps", "header", "overhead"),
    [
        ("null", 0, 0, 0, 0),
        ("none", 0, 0, 20, 20),
        ("aes", 0, 0, 20, 20),
        ("aes-128-gcm", 0, 0, 12, 28),
        ("null", 10, 3, 8, 8),
        ("aes", 10, 3, 28, 28),
        ("aes-128-gcm", 10, 3, 20, 36),
    ],
)
def test_header_and_overhead(name: str, ds: int, ps: int, header: int, overhead: int) -> None:
    p, _ = pipe(name, ds, ps)
    assert (p.header_size, p.overhead) == (header, overhead)
    assert p.fec_enabled == (ds > 0)
    pkt = kcp_packet(random.Random(0), 100)
    wire = p.seal(pkt, now=0)[0]
    assert len(wire) == len(pkt) + overhead


def test_block_cipher_layout_is_nonce_crc_body_encrypted_whole() -> None:
    nonce = bytes(range(16))
    p = Pipeline(new_crypt("aes", KEY), 0, 0, Counters(), rng=lambda n: nonce[:n])
    pkt = kcp_packet(random.Random(0), 60)
    wire = p.seal(pkt, now=0)[0]
    c = new_crypt("aes", KEY)
    assert isinstance(c, BlockCrypt)
    plain = c.decrypt(wire)
    assert plain == nonce + zlib.crc32(pkt).to_bytes(4, "little") + pkt


def test_aead_layout_is_nonce_then_sealed_body() -> None:
    nonce = bytes(range(12))
    p = Pipeline(new_crypt("aes-128-gcm", KEY), 0, 0, Counters(), rng=lambda n: nonce[:n])
    pkt = kcp_packet(random.Random(0), 60)
    wire = p.seal(pkt, now=0)[0]
    a = new_crypt("aes-128-gcm", KEY)
    assert isinstance(a, AEADCrypt)
    assert wire == nonce + a.seal(nonce, pkt)


def test_fec_runs_before_the_crypt_layer() -> None:
    """With FEC, the body under the nonce+crc is the FEC data shard; parity shards follow the group."""
    p, _ = pipe("none", 2, 1)
    rnd = random.Random(3)
    a, b = kcp_packet(rnd, 30), kcp_packet(rnd, 50)
    first = p.seal(a, now=0)
    second = p.seal(b, now=1)
    assert len(first) == 1 and len(second) == 2  # second data shard completes the group: + 1 parity
    bodies = [w[CRYPT_HEADER_SIZE:] for w in first + second]
    assert bodies[0] == struct.pack("<IHH", 0, TYPE_DATA, len(a) + 2) + a
    assert bodies[1] == struct.pack("<IHH", 1, TYPE_DATA, len(b) + 2) + b
    assert struct.unpack_from("<IH", bodies[2]) == (2, TYPE_PARITY)
    for w in first + second:  # every shard has its own nonce and crc
        assert zlib.crc32(w[20:]).to_bytes(4, "little") == w[16:20]


def test_default_rng_gives_fresh_nonces() -> None:
    p = Pipeline(new_crypt("none", KEY), 0, 0, Counters())
    pkt = kcp_packet(random.Random(0), 40)
    nonces = {p.seal(pkt, now=0)[0][:16] for _ in range(600)}  # crosses the 4 KiB refill
    assert len(nonces) == 600


def test_bad_arguments_are_usage_errors() -> None:
    with pytest.raises(KCPUsageError):
        Pipeline(object(), 0, 0, Counters())  # type: ignore[arg-type]
    with pytest.raises(KCPUsageError):
        Pipeline(None, -1, 0, Counters())
    with pytest.raises(KCPUsageError):
        Pipeline(None, 0, 3, Counters())
    p, _ = pipe("aes")
    with pytest.raises(KCPUsageError):
        p.seal_oob(b"x", conv=1 << 32)
    with pytest.raises(KCPUsageError):
        p.seal_oob(bytes(70000), conv=1)


# ---------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------


ROUND_TRIPS = [(n, ds, ps) for n in FAST for ds, ps in FEC_SETTINGS] + [
    (n, ds, ps) for n in SLOW for ds, ps in FEC_SETTINGS[:2]
]


@pytest.mark.parametrize(("name", "ds", "ps"), ROUND_TRIPS)
def test_round_trip(name: str, ds: int, ps: int) -> None:
    tx, _ = pipe(name, ds, ps, seed=1)
    rx, counters = pipe(name, ds, ps, seed=2)
    rnd = random.Random(name)
    sizes = [24, 25, 31, 32, 33, 100, 300] if name in SLOW else [24, 25, 31, 32, 33, 100, 577, 1000, 1400]
    sent: list[bytes] = []
    got: list[bytes] = []
    for i, size in enumerate(sizes * 2):
        pkt = kcp_packet(rnd, size)
        sent.append(pkt)
        for wire in tx.seal(pkt, now=i):
            got += [payload for kind, payload in rx.open(wire, now=i) if kind != KIND_OOB]
    assert got == sent
    assert counters.in_errs == 0


# ---------------------------------------------------------------------------------------------
# tampering
# ---------------------------------------------------------------------------------------------

# Names whose 16-byte nonce is fully protected: in 16-byte-block CFB a change in the first block
# garbles the second (crc32 + data). For 8-byte-block ciphers, salsa20 (bytes 8..15), xor and none,
# part of the nonce is not covered by the crc32 in kcp-go's format: a flip there changes only the
# nonce, which is thrown away, so the delivered KCP packet is still exactly the original.
NONCE_PROTECTED = {"aes", "aes-128", "aes-192", "sm4", "twofish", "aes-128-gcm"}


@pytest.mark.parametrize("name", [n for n in CIPHER_NAMES if n != "null"])
@pytest.mark.parametrize(("ds", "ps"), [(0, 0), (3, 2)])
def test_every_flipped_byte_is_detected(name: str, ds: int, ps: int) -> None:
    tx, _ = pipe(name, ds, ps, seed=5)
    rnd = random.Random(7)
    pkt = kcp_packet(rnd, 45)
    wire = tx.seal(pkt, now=0)[0]
    for mask in (0x01, 0x80, 0xFF):
        for i in range(len(wire)):
            rx, counters = pipe(name, ds, ps, seed=6)
            bad = bytearray(wire)
            bad[i] ^= mask
            out = rx.open(bytes(bad), now=0)
            if out:
                # undetected: only possible in the unprotected part of the nonce, with the packet intact
                assert name not in NONCE_PROTECTED, (i, mask)
                assert i < 16, (i, mask)
                assert out == [(KIND_KCP, pkt)]
                continue
            assert counters.in_errs == 1
            reason = counters.decrypt_errors if name == "aes-128-gcm" else counters.in_csum_errors
            assert reason == 1, (i, mask, counters)


# ---------------------------------------------------------------------------------------------
# malformed input: counted drops
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "shortest"), [("aes", 20), ("none", 20), ("aes-128-gcm", 28), ("null", 0)])
def test_short_datagrams_are_counted(name: str, shortest: int) -> None:
    p, counters = pipe(name)
    for n in range(shortest):
        assert p.open(bytes(n), now=0) == []
    assert counters.short_packets == shortest
    assert counters.in_errs == shortest


def test_short_body_after_decryption_is_dropped() -> None:
    tx, _ = pipe("aes")
    rx, counters = pipe("aes")
    for n in range(MIN_PACKET_SIZE):
        assert rx.open(tx.seal(bytes(n), now=0)[0], now=0) == []
    assert counters.short_packets == MIN_PACKET_SIZE
    assert rx.open(tx.seal(bytes(MIN_PACKET_SIZE), now=0)[0], now=0) == [(KIND_KCP, bytes(MIN_PACKET_SIZE))]


def test_data_shard_with_wrong_size_field_is_dropped() -> None:
    rx, counters = pipe("null", 3, 2)
    body = kcp_packet(random.Random(1), 40)
    good = struct.pack("<IHH", 0, TYPE_DATA, len(body) + 2) + body
    assert rx.open(good, now=0) == [(KIND_KCP, body)]
    bad = struct.pack("<IHH", 1, TYPE_DATA, len(body) + 3) + body
    assert rx.open(bad, now=0) == []
    assert counters.fec_errs == 1
    assert counters.in_errs == 1


def test_fec_packets_reach_a_pipeline_without_fec() -> None:
    """A peer with FEC talking to us without: data shards go to KCP, and recovery still works."""
    tx, _ = pipe("aes", 3, 2)
    rx, counters = pipe("aes", 0, 0)
    rnd = random.Random(2)
    packets = [kcp_packet(rnd, 50 + i) for i in range(60)]
    wires = [w for i, p in enumerate(packets) for w in tx.seal(p, now=i)]
    got = [payload for w in wires for kind, payload in rx.open(w, now=0) if kind != KIND_OOB]
    assert got == packets
    # once its (1, 1) decoder has tuned itself to the peer's (3, 2), lost data shards come back
    later = [kcp_packet(rnd, 70) for _ in range(30)]
    wires = [w for i, p in enumerate(later) for w in tx.seal(p, now=100 + i)]
    kept = [w for i, w in enumerate(wires) if i % 5 != 1]  # lose the 2nd data shard of every group
    got = [payload for w in kept for kind, payload in rx.open(w, now=0) if kind != KIND_OOB]
    assert sorted(got) == sorted(later)
    assert counters.fec_recovered == 10


def test_parity_of_a_bulk_streams_first_group_never_reaches_kcp_without_fec() -> None:
    """A receiver without FEC must never take a parity shard for data.

    A bulk stream's first group is ten full PUSH segments with sn 0..9 and equal headers. The code
    is systematic Reed-Solomon over evaluation points 0..12 and sn = point is a polynomial of
    degree 1, so each parity shard of that group parses as a valid PUSH of the same conversation
    and length with sn 10, 11 and 12: the next segments, with a mix of the ten as payload. A
    receiver that hands such a shard to KCP as data puts the mix in the stream and then drops the
    real segment as a duplicate: kcptun 20210922 (kcp-go v5.6.1) without FEC does this to a
    sender with FEC 10/3 (docs/interop.md). Ours, whose decoder starts as (1, 1) and tunes itself
    to the sender's parameters, delivers exactly the data shards.
    """
    tx, _ = pipe("null", 10, 3)
    rx, counters = pipe("null", 0, 0)
    conv, rnd = 0x11223344, random.Random(7)
    packets = [
        struct.pack("<IBBHIIII", conv, 81, 0, 256, 1000 + sn, sn, 0, 1298) + rnd.randbytes(1298)
        for sn in range(30)
    ]
    wires = [w for i, p in enumerate(packets) for w in tx.seal(p, now=i)]
    parity = [w for w in wires if struct.unpack_from("<H", w, 4)[0] == TYPE_PARITY]
    # the premise: the first group's parity reads as segments 10..12 of the same conversation
    heads = [struct.unpack_from("<IBBHIIII", w, 8) for w in parity[:3]]
    assert [(c, cmd, sn, ln) for c, cmd, _, _, _, sn, _, ln in heads] == [
        (conv, 81, sn, 1298) for sn in (10, 11, 12)
    ]
    got = [(kind, payload) for w in wires for kind, payload in rx.open(w, now=0)]
    assert got == [(KIND_KCP, p) for p in packets]
    # one mismatch of flag and position started its tuning; nothing was rebuilt meanwhile
    assert counters.fec_errs == 1 and counters.fec_recovered == 0


def test_parity_waits_until_the_peer_shows_it_runs_fec() -> None:
    """A compat peer's FEC is not known until its first packet: data shards go out alone (their
    seqids still consumed), then parity once a shard of the peer's arrives."""
    tx, _ = pipe("aes", 3, 2, peer_fec=False)
    peer, _ = pipe("aes", 3, 2, seed=2)
    rnd = random.Random(4)
    packets = [kcp_packet(rnd, 60 + i) for i in range(6)]
    before = [w for i, p in enumerate(packets[:3]) for w in tx.seal(p, now=i)]
    assert len(before) == 3  # a whole group: no parity
    got = [payload for w in before for kind, payload in peer.open(w, now=0) if kind == KIND_KCP]
    assert got == packets[:3]
    assert [k for w in peer.seal(kcp_packet(rnd, 40), now=0) for k, _ in tx.open(w, now=0)] == [KIND_KCP]
    after = [w for i, p in enumerate(packets[3:]) for w in tx.seal(p, now=10 + i)]
    assert len(after) == 5  # the next group, whose seqids start at 5: 3 data shards and 2 parity
    lost_one = [w for i, w in enumerate(after) if i != 1]
    got = [payload for w in lost_one for _, payload in peer.open(w, now=0)]
    assert sorted(got) == sorted(packets[3:])  # the lost shard comes back from the parity


def test_a_peer_without_fec_gets_plain_packets() -> None:
    """FEC here, none at the peer (a kcp-go session without FEC, which would take parity shards
    for data): once its first packet comes plain, every packet goes out plain, and it is counted."""
    tx, counters = pipe("null", 10, 3, peer_fec=False)
    peer, _ = pipe("null", 0, 0, seed=2)
    rnd = random.Random(5)
    first = kcp_packet(rnd, 100)
    (wire,) = tx.seal(first, now=0)
    assert wire == struct.pack("<IHH", 0, TYPE_DATA, len(first) + 2) + first  # a data shard alone
    assert [p for k, p in peer.open(wire, now=0) if k == KIND_KCP] == [first]
    for w in peer.seal(kcp_packet(rnd, 40), now=0):
        tx.open(w, now=0)
    packets = [kcp_packet(rnd, 200) for _ in range(20)]
    assert [w for i, p in enumerate(packets) for w in tx.seal(p, now=i)] == packets  # plain, no parity
    assert counters.fec_plain_out == 20


def test_a_plain_packet_before_the_peers_first_shard_gives_way_to_it() -> None:
    """A kcprpc listener with FEC answers a new peer first with a plain admission challenge, then
    its session sends shards: the first shard puts parity back on, in the group in progress."""
    tx, counters = pipe("null", 3, 2, peer_fec=False)
    peer, _ = pipe("null", 3, 2, seed=2)
    rnd = random.Random(6)
    tx.seal(kcp_packet(rnd, 50), now=0)  # a data shard alone, seqid 0
    challenge = struct.pack("<IBBHIIII", 0x11223344, 81, 0, 128, 7, 0xFFFFFFFF, 0, 0)
    assert tx.open(challenge, now=0) == [(KIND_KCP, challenge)]
    assert tx.seal(kcp_packet(rnd, 50), now=1)[0][4:6] != struct.pack("<H", TYPE_DATA)  # plain
    for w in peer.seal(kcp_packet(rnd, 40), now=0):
        tx.open(w, now=0)
    assert len(tx.seal(kcp_packet(rnd, 50), now=2)) == 1  # seqid 1
    assert len(tx.seal(kcp_packet(rnd, 50), now=3)) == 3  # seqid 2 ends the group: + 2 parity
    assert counters.fec_plain_out == 1


# ---------------------------------------------------------------------------------------------
# FEC through the pipeline
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["null", "aes", "aes-128-gcm"])
@pytest.mark.parametrize(("ds", "ps"), [(3, 2), (10, 3)])
def test_lost_data_shards_are_recovered(name: str, ds: int, ps: int) -> None:
    tx, _ = pipe(name, ds, ps, seed=1)
    rx, counters = pipe(name, ds, ps, seed=2)
    rnd = random.Random(ds)
    packets = [kcp_packet(rnd, rnd.randrange(24, 1400)) for _ in range(ds * 4)]
    wires = [w for i, p in enumerate(packets) for w in tx.seal(p, now=i)]
    n = ds + ps
    got: list[bytes] = []
    for g in range(4):
        group = wires[g * n : (g + 1) * n]
        lost = set(rnd.sample(range(ds), ps))  # the worst case: every loss hits a data shard
        for i, w in enumerate(group):
            if i not in lost:
                got += [payload for kind, payload in rx.open(w, now=0) if kind != KIND_OOB]
    assert sorted(got) == sorted(packets)
    assert counters.fec_recovered == 4 * ps
    assert counters.in_errs == 0


# ---------------------------------------------------------------------------------------------
# OOB
# ---------------------------------------------------------------------------------------------


def test_oob_layout() -> None:
    p, counters = pipe("null")
    wire = p.seal_oob(b"state", conv=0x11223344)
    assert wire == struct.pack("<IHHI", OOB_SEQID, TYPE_OOB, 2 + 4 + 5, 0x11223344) + b"state"
    assert counters.oob_out == 1


@pytest.mark.parametrize("name", ["null", "none", "aes", "aes-128-gcm", "salsa20", "tea"])
@pytest.mark.parametrize(("ds", "ps"), [(0, 0), (3, 2)])
def test_oob_round_trip(name: str, ds: int, ps: int) -> None:
    tx, _ = pipe(name, ds, ps, seed=1)
    rx, counters = pipe(name, ds, ps, seed=2)
    for payload in (b"", b"x", bytes(range(256)) * 5):
        assert rx.open(tx.seal_oob(payload, conv=7), now=0) == [(KIND_OOB, payload)]
    assert counters.oob_in == 3


def test_oob_bypasses_fec_seqids() -> None:
    tx, _ = pipe("null", 2, 1)
    rnd = random.Random(1)
    w1 = tx.seal(kcp_packet(rnd, 30), now=0)
    tx.seal_oob(b"between", conv=1)
    w2 = tx.seal(kcp_packet(rnd, 30), now=1)
    seqids = [struct.unpack_from("<I", w)[0] for w in w1 + w2]
    assert seqids == [0, 1, 2]


def test_oob_with_wrong_size_is_dropped() -> None:
    rx, counters = pipe("null")
    bad = struct.pack("<IHHI", OOB_SEQID, TYPE_OOB, 99, 1) + b"abc"
    assert rx.open(bad, now=0) == []
    assert counters.fec_errs == 1 and counters.in_errs == 1 and counters.oob_in == 0


def test_oob_max_size() -> None:
    p, _ = pipe("aes", 10, 3)
    assert p.oob_max_size(1400 - p.overhead) == 1400 - p.overhead - 4


def test_recovered_packets_are_marked_so_the_engine_ignores_their_timing() -> None:
    """kcp-go feeds FEC-rebuilt packets to KCP as not "regular": a rebuilt ack can be late, and its
    RTT sample and window must not count. ``open`` tags them apart from packets as received."""
    tx, _ = pipe("aes", 3, 2)
    rx, _ = pipe("aes", 3, 2)
    rnd = random.Random(5)
    packets = [kcp_packet(rnd, 60 + i) for i in range(3)]
    wires = [w for i, p in enumerate(packets) for w in tx.seal(p, now=i)]
    assert len(wires) == 5  # 3 data shards + 2 parity shards
    out = [item for i, w in enumerate(wires) if i != 1 for item in rx.open(w, now=0)]
    assert out == [
        (KIND_KCP, packets[0]),
        (KIND_KCP, packets[2]),
        (KIND_KCP_RECOVERED, packets[1]),
    ]
