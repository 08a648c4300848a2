"""Property tests for kcp.fec: garbage never raises, and any loss up to parity_shards is repaired."""

from __future__ import annotations

import random
import struct

from hypothesis import given
from hypothesis import strategies as st

from kcp.fec import TYPE_DATA, TYPE_PARITY, FECDecoder, FECEncoder
from kcp.stats import Counters

params = st.tuples(st.integers(1, 6), st.integers(1, 4))


def _check_output(out: list[bytes], counters: Counters) -> None:
    assert isinstance(out, list)
    assert all(isinstance(p, bytes) for p in out)
    assert all(v >= 0 for v in counters.snapshot().values())


@given(params, st.lists(st.binary(max_size=64), max_size=60))
def test_arbitrary_bytes_never_raise(p: tuple[int, int], packets: list[bytes]) -> None:
    counters = Counters()
    dec = FECDecoder(*p, counters)
    for pkt in packets:
        _check_output(dec.decode(pkt, 0), counters)


shard = st.builds(
    lambda seq, flag, body: struct.pack("<IH", seq, flag) + body,
    st.one_of(st.integers(0, 40), st.integers(0, 0xFFFFFFFF), st.integers(0xFFFFFF00, 0xFFFFFFFF)),
    st.sampled_from([TYPE_DATA, TYPE_PARITY, TYPE_DATA, TYPE_PARITY, 0xF3, 0x51]),
    st.binary(min_size=0, max_size=40),
)


@given(params, st.lists(shard, max_size=120), st.booleans())
def test_well_formed_headers_with_garbage_bodies_never_raise(
    p: tuple[int, int], shards: list[bytes], autotune: bool
) -> None:
    counters = Counters()
    dec = FECDecoder(*p, counters, autotune=autotune)
    for s in shards:
        out = dec.decode(s, 0)
        _check_output(out, counters)
    assert dec.pending_groups <= 4 + len(shards)


@given(
    params,
    st.lists(st.binary(max_size=300), min_size=1, max_size=40),
    st.randoms(use_true_random=False),
)
def test_any_loss_up_to_parity_is_repaired(
    p: tuple[int, int], packets: list[bytes], rnd: random.Random
) -> None:
    ds, ps = p
    n = ds + ps
    enc = FECEncoder(ds, ps)
    wire: list[bytes] = []
    for i, pkt in enumerate(packets):
        wire += enc.encode(pkt, i)
    assert [s[8:] for s in wire if s[4] == TYPE_DATA] == packets
    groups: dict[int, list[bytes]] = {}
    for s in wire:  # group by seqid: a skipped parity block leaves a short group
        groups.setdefault(struct.unpack_from("<I", s)[0] // n, []).append(s)
    dec = FECDecoder(ds, ps)
    for shards in groups.values():
        lost: set[int] = set()
        if len(shards) == n:  # parity was sent: lose up to ps of any kind
            lost = set(rnd.sample(range(n), rnd.randint(0, ps)))
        got = [r for i, s in enumerate(shards) if i not in lost for r in dec.decode(s, 0)]
        assert got == [shards[i][8:] for i in sorted(lost) if i < ds]
    assert dec.counters.snapshot()["fec_errs"] == 0


@given(
    params,
    st.lists(st.binary(max_size=100), min_size=1, max_size=30),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=20),
)
def test_corrupted_real_streams_never_raise(
    p: tuple[int, int], packets: list[bytes], flips: list[tuple[int, int]]
) -> None:
    ds, ps = p
    enc = FECEncoder(ds, ps)
    wire = [bytearray(s) for i, pkt in enumerate(packets) for s in enc.encode(pkt, i)]
    for pos, val in flips:
        buf = wire[pos % len(wire)]
        if buf:
            buf[(pos // len(wire)) % len(buf)] = val
    counters = Counters()
    dec = FECDecoder(ds, ps, counters)
    for s in wire:
        _check_output(dec.decode(bytes(s), 0), counters)
