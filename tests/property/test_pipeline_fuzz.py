"""Property tests: whatever arrives from the network, Pipeline.open returns a list and never raises;
and whatever a KCP engine hands to seal comes back out of open on the other side."""

from __future__ import annotations

import random
import struct

from hypothesis import given
from hypothesis import strategies as st

from kcp.crypt import derive_key, new_crypt
from kcp.pipeline import KIND_KCP, KIND_KCP_RECOVERED, KIND_OOB, Pipeline
from kcp.stats import Counters

KEY = derive_key("fuzz")
CONFIGS = [
    (name, ds, ps)
    for name in ("null", "none", "aes", "aes-128-gcm", "salsa20", "xor", "3des")
    for ds, ps in ((0, 0), (3, 2), (10, 3))
]


def _pipeline(i: int, seed: int = 0) -> Pipeline:
    name, ds, ps = CONFIGS[i]
    return Pipeline(new_crypt(name, KEY), ds, ps, Counters(), rng=random.Random(seed).randbytes)


def _check(out: object) -> None:
    assert isinstance(out, list)
    for item in out:
        assert isinstance(item, tuple) and len(item) == 2
        kind, payload = item
        assert kind in (KIND_KCP, KIND_KCP_RECOVERED, KIND_OOB)
        assert isinstance(payload, bytes)


@given(st.integers(0, len(CONFIGS) - 1), st.lists(st.binary(max_size=1600), max_size=12))
def test_open_never_raises_on_arbitrary_bytes(cfg: int, datagrams: list[bytes]) -> None:
    p = _pipeline(cfg)
    for d in datagrams:
        _check(p.open(d, now=0))


# FEC-looking garbage: valid flags and plausible seqids, random everything else (null crypt, so the
# bytes reach the FEC decoder unfiltered).
fec_shard = st.builds(
    lambda seq, flag, size, body: struct.pack("<IHH", seq, flag, size) + body,
    st.one_of(st.integers(0, 40), st.integers(0, 0xFFFFFFFF)),
    st.sampled_from([0xF1, 0xF2, 0xF3, 0x51]),
    st.integers(0, 0xFFFF),
    st.binary(max_size=300),
)


@given(st.sampled_from([(0, 0), (1, 1), (3, 2), (10, 3)]), st.lists(fec_shard, max_size=40))
def test_open_never_raises_on_fec_garbage(shards: tuple[int, int], datagrams: list[bytes]) -> None:
    p = Pipeline(None, shards[0], shards[1], Counters())
    for d in datagrams:
        _check(p.open(d, now=0))


@given(
    st.integers(0, len(CONFIGS) - 1),
    st.lists(st.tuples(st.integers(0, 1599), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(-8, 8),
)
def test_open_never_raises_on_mutated_packets(cfg: int, flips: list[tuple[int, int]], resize: int) -> None:
    tx, rx = _pipeline(cfg, 1), _pipeline(cfg, 2)
    rnd = random.Random(cfg)
    for wire in [*tx.seal(struct.pack("<IB", 9, 81) + rnd.randbytes(200), now=0), tx.seal_oob(b"oob", 9)]:
        bad = bytearray(wire)
        for pos, mask in flips:
            bad[pos % len(bad)] ^= mask
        if resize > 0:
            bad += bytes(resize)
        elif resize < 0:
            del bad[resize:]
        _check(rx.open(bytes(bad), now=0))


kcp_like = st.builds(
    lambda conv, cmd, rest: struct.pack("<IB", conv, cmd) + rest,
    st.integers(0, 0xFFFFFFFF),
    st.integers(81, 84),
    st.binary(min_size=19, max_size=1400),
)


@given(st.integers(0, len(CONFIGS) - 1), st.lists(kcp_like, min_size=1, max_size=25))
def test_seal_then_open_gives_the_packets_back(cfg: int, packets: list[bytes]) -> None:
    tx, rx = _pipeline(cfg, 1), _pipeline(cfg, 2)
    got: list[bytes] = []
    for i, pkt in enumerate(packets):
        for wire in tx.seal(pkt, now=i):
            got += [payload for kind, payload in rx.open(wire, now=i) if kind != KIND_OOB]
    assert got == packets


@given(st.integers(0, len(CONFIGS) - 1), st.binary(max_size=1300), st.integers(0, 0xFFFFFFFF))
def test_oob_round_trip(cfg: int, payload: bytes, conv: int) -> None:
    tx, rx = _pipeline(cfg, 1), _pipeline(cfg, 2)
    assert rx.open(tx.seal_oob(payload, conv), now=0) == [(KIND_OOB, payload)]
