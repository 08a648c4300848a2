"""Ciphers and whole packets against kcp-go's own bytes (tests/interop/vectors/kcp-go.json).

Every value checked here was produced by the real kcp-go v5.6.72 (see the vectors' README):
key derivation, every kcptun cipher on a 64-byte and a 37-byte plaintext (the 37-byte one ends
in a partial block), the AES-GCM seal, and UDP payloads recorded from a live kcp-go session with
a counter as its nonce source, without FEC and with FEC (3, 2).
"""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from kcpgo_vectors import DATA

from kcp.crypt import (
    CIPHER_NAMES,
    KEY_SIZES,
    AEADCrypt,
    BlockCrypt,
    derive_key,
    new_crypt,
)
from kcp.pipeline import CRYPT_HEADER_SIZE, FEC_HEADER_SIZE_PLUS2, KIND_KCP, KIND_OOB, Pipeline
from kcp.stats import Counters

CIPHERS: list[dict[str, Any]] = DATA["ciphers"]
PACKETS: list[dict[str, Any]] = DATA["full_packets"]


class _Nonces:
    """An rng that replays the nonces kcp-go recorded, in order."""

    def __init__(self, nonces: list[bytes]) -> None:
        self._nonces = list(nonces)

    def __call__(self, n: int) -> bytes:
        nonce = self._nonces.pop(0)
        assert len(nonce) == n
        return nonce


def test_every_kcptun_cipher_is_covered() -> None:
    assert sorted(c["name"] for c in CIPHERS) == sorted(CIPHER_NAMES)
    assert {p["crypt"] for p in PACKETS} == set(CIPHER_NAMES)


def test_key_derivation_matches_kcptun() -> None:
    key = derive_key(DATA["key"])
    for c in CIPHERS:
        assert key.hex() == c["derived_key"]


@pytest.mark.parametrize("vec", CIPHERS, ids=[c["name"] for c in CIPHERS])
def test_key_slice_matches_kcptun(vec: dict[str, Any]) -> None:
    used = bytes.fromhex(vec["key_used"])
    size = KEY_SIZES[vec["name"]]
    if vec["name"] in ("none", "null"):
        assert size is None
    else:
        assert size == len(used)
        assert bytes.fromhex(vec["derived_key"])[:size] == used


@pytest.mark.parametrize("vec", CIPHERS, ids=[c["name"] for c in CIPHERS])
def test_cipher_known_answers(vec: dict[str, Any]) -> None:
    crypt = new_crypt(vec["name"], bytes.fromhex(vec["derived_key"]))
    if vec["vectors"] is None:
        assert crypt is None  # "null": no crypt layer at all
        return
    cases = [(bytes.fromhex(v["plain"]), bytes.fromhex(v["cipher"]), v.get("nonce")) for v in vec["vectors"]]
    # twice, and in both orders: kept cipher contexts must not leak state from one packet to the next
    for plain, expected, nonce in cases + cases[::-1] + cases:
        if nonce is None:
            assert isinstance(crypt, BlockCrypt)
            assert crypt.encrypt(plain) == expected
            assert crypt.decrypt(expected) == plain
        else:
            assert isinstance(crypt, AEADCrypt)
            n = bytes.fromhex(nonce)
            assert crypt.seal(n, plain) == expected
            assert crypt.open(n, expected) == plain


def _pkt_id(p: dict[str, Any]) -> str:
    return f"{p['crypt']}-fec{p['datashards']}.{p['parityshards']}"


@pytest.mark.parametrize("rec", PACKETS, ids=[_pkt_id(p) for p in PACKETS])
def test_recorded_packets_reencrypt_exactly(rec: dict[str, Any]) -> None:
    """Encrypting kcp-go's decrypted packet with its recorded nonce gives the recorded wire bytes."""
    crypt = new_crypt(rec["crypt"], derive_key(DATA["key"]))
    for pkt in rec["packets"]:
        wire, plain = bytes.fromhex(pkt["wire"]), bytes.fromhex(pkt["plain"])
        if crypt is None:
            assert wire == plain
        elif isinstance(crypt, AEADCrypt):
            nonce = bytes.fromhex(pkt["nonce"])
            assert wire[: crypt.nonce_size] == nonce
            assert nonce + crypt.seal(nonce, plain) == wire
        else:
            assert isinstance(crypt, BlockCrypt)
            assert plain[:16] == bytes.fromhex(pkt["nonce"])
            assert zlib.crc32(plain[CRYPT_HEADER_SIZE:]).to_bytes(4, "little") == plain[16:20]
            assert crypt.encrypt(plain) == wire
            assert crypt.decrypt(wire) == plain


def _kcp_and_body(rec: dict[str, Any], pkt: dict[str, Any]) -> bytes:
    """The body under the crypt layer (FEC shard or KCP packet)."""
    plain = bytes.fromhex(pkt["plain"])
    return plain[CRYPT_HEADER_SIZE:] if rec["crypt"] not in ("null", "aes-128-gcm") else plain


@pytest.mark.parametrize("rec", PACKETS, ids=[_pkt_id(p) for p in PACKETS])
def test_pipeline_seal_reproduces_recorded_wire(rec: dict[str, Any]) -> None:
    """Our pipeline, fed kcp-go's KCP packets and nonces, emits kcp-go's datagrams byte for byte,
    once it knows the peer runs FEC (kcp.pipeline: before that, a compat session sends its data
    shards without parity, which kcp-go takes as it takes a group whose parity was skipped)."""
    crypt = new_crypt(rec["crypt"], derive_key(DATA["key"]))
    nonces = [bytes.fromhex(p["nonce"]) for p in rec["packets"] if "nonce" in p]
    ds, ps = rec["datashards"], rec["parityshards"]
    pipe = Pipeline(crypt, ds, ps, Counters(), rng=_Nonces(nonces), peer_fec=True)
    bodies = [_kcp_and_body(rec, p) for p in rec["packets"]]
    if ds:
        kcp_packets = [
            b[FEC_HEADER_SIZE_PLUS2:]
            for b, p in zip(bodies, rec["packets"], strict=True)
            if p["kind"] == "fec-data"
        ]
    else:
        kcp_packets = bodies
    wires: list[bytes] = []
    for i, kcp in enumerate(kcp_packets):
        wires += pipe.seal(kcp, now=1000 + i)  # within the FEC continuity limit, as in the recording
    assert [w.hex() for w in wires] == [p["wire"] for p in rec["packets"]]
    # the application bytes are inside the KCP packets, after the 24-byte segment header
    for kcp, write in zip(kcp_packets, rec["app_writes"], strict=True):
        assert kcp[24:] == bytes.fromhex(write)


@pytest.mark.parametrize("rec", PACKETS, ids=[_pkt_id(p) for p in PACKETS])
def test_pipeline_opens_recorded_wire(rec: dict[str, Any]) -> None:
    crypt = new_crypt(rec["crypt"], derive_key(DATA["key"]))
    counters = Counters()
    pipe = Pipeline(crypt, rec["datashards"], rec["parityshards"], counters)
    got: list[tuple[int, bytes]] = []
    for pkt in rec["packets"]:
        got += pipe.open(bytes.fromhex(pkt["wire"]), now=0)
    bodies = [_kcp_and_body(rec, p) for p in rec["packets"]]
    if rec["datashards"]:
        want = [
            b[FEC_HEADER_SIZE_PLUS2:]
            for b, p in zip(bodies, rec["packets"], strict=True)
            if p["kind"] == "fec-data"
        ]
    else:
        want = bodies
    assert got == [(KIND_KCP, w) for w in want]
    assert counters.in_errs == 0


@pytest.mark.parametrize("rec", [p for p in PACKETS if p["datashards"]], ids=_pkt_id)
@pytest.mark.parametrize("lost", [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)])
def test_pipeline_recovers_lost_kcp_go_data_shards(rec: dict[str, Any], lost: tuple[int, ...]) -> None:
    """Drop up to parityshards of kcp-go's data shards: the KCP packets still all come out."""
    crypt = new_crypt(rec["crypt"], derive_key(DATA["key"]))
    counters = Counters()
    pipe = Pipeline(crypt, rec["datashards"], rec["parityshards"], counters)
    got: list[bytes] = []
    for i, pkt in enumerate(rec["packets"]):
        if i not in lost:
            got += [
                payload for kind, payload in pipe.open(bytes.fromhex(pkt["wire"]), now=0) if kind != KIND_OOB
            ]
    bodies = [_kcp_and_body(rec, p) for p in rec["packets"]]
    want = [
        b[FEC_HEADER_SIZE_PLUS2:]
        for b, p in zip(bodies, rec["packets"], strict=True)
        if p["kind"] == "fec-data"
    ]
    assert sorted(got) == sorted(want)
    assert counters.fec_recovered == len(lost)


@pytest.mark.parametrize("rec", [p for p in PACKETS if p["datashards"]], ids=_pkt_id)
def test_pipeline_without_fec_still_reads_kcp_go_fec_packets(rec: dict[str, Any]) -> None:
    """A receiver with FEC off hands kcp-go's data shards to KCP and keeps parity for its own decoder."""
    crypt = new_crypt(rec["crypt"], derive_key(DATA["key"]))
    pipe = Pipeline(crypt, 0, 0, Counters())
    got: list[tuple[int, bytes]] = []
    for pkt in rec["packets"]:
        got += pipe.open(bytes.fromhex(pkt["wire"]), now=0)
    bodies = [_kcp_and_body(rec, p) for p in rec["packets"]]
    want = [
        b[FEC_HEADER_SIZE_PLUS2:]
        for b, p in zip(bodies, rec["packets"], strict=True)
        if p["kind"] == "fec-data"
    ]
    assert [p for k, p in got if k != KIND_OOB][: len(want)] == want
