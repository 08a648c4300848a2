"""kcp-go FEC shards (kcp.fec): encoder format, parity timing, seqid wrap, decoder window and recovery."""

from __future__ import annotations

import itertools
import random
import struct

import pytest

from kcp.errors import KCPUsageError
from kcp.fec import (
    FEC_HEADER_SIZE,
    FEC_HEADER_SIZE_PLUS2,
    MAX_FEC_ENCODE_LATENCY,
    MAX_SHARD_SETS,
    OOB_SEQID,
    TYPE_DATA,
    TYPE_OOB,
    TYPE_PARITY,
    FECDecoder,
    FECEncoder,
    fec_enabled,
    fec_flag,
    fec_seqid,
    is_fec,
    paws,
)
from kcp.rs import get_codec
from kcp.stats import Counters


def encode_stream(enc: FECEncoder, packets: list[bytes], start: int = 1000, step: int = 1) -> list[bytes]:
    out: list[bytes] = []
    now = start
    for p in packets:
        out += enc.encode(p, now)
        now += step
    return out


def header(shard: bytes) -> tuple[int, int]:
    seqid, flag = struct.unpack_from("<IH", shard)
    return seqid, flag


# ---------------------------------------------------------------- helpers and parameters


def test_constants() -> None:
    assert (FEC_HEADER_SIZE, FEC_HEADER_SIZE_PLUS2) == (6, 8)
    assert (TYPE_DATA, TYPE_PARITY, TYPE_OOB) == (0xF1, 0xF2, 0xF3)
    assert MAX_FEC_ENCODE_LATENCY == 500
    assert MAX_SHARD_SETS == 3


def test_flag_helpers() -> None:
    data = b"\x05\x00\x00\x00\xf1\x00\x0a\x00" + b"x" * 8
    parity = b"\x07\x00\x00\x00\xf2\x00" + b"p" * 10
    kcp_segment = b"\x44\x33\x22\x11\x51\x00" + bytes(18)  # conv, cmd PUSH=81, frg 0
    assert is_fec(data) and is_fec(parity)
    assert not is_fec(kcp_segment)
    assert not is_fec(b"\x00\x00\x00\x00\xf1\x00\x02")  # shorter than 8
    assert not is_fec(b"\x00\x00\x00\x00\xf1\x01\x02\x00")  # 0x01f1 is not a FEC flag
    assert not is_fec(b"\xff\xff\xff\xff\xf3\x00\x02\x00")  # OOB is the pipeline's, not FEC's
    assert fec_flag(data) == TYPE_DATA and fec_flag(parity) == TYPE_PARITY and fec_flag(b"abc") == -1
    assert fec_seqid(data) == 5 and fec_seqid(parity) == 7
    assert paws(3) <= OOB_SEQID


def test_paws_is_largest_multiple_of_group_size() -> None:
    for n in (2, 3, 5, 13, 30, 255, 256):
        p = paws(n)
        assert p % n == 0 and p <= 0xFFFFFFFF < p + n
    assert paws(13) == 4294967287  # 0xFFFFFFFF = 13 * 330382099 + 8
    assert paws(5) == 0xFFFFFFFF


def test_fec_enabled_and_validation() -> None:
    assert fec_enabled(10, 3) and fec_enabled(1, 1)
    assert not fec_enabled(0, 0)
    assert not fec_enabled(10, 0)  # kcp-go: parity 0 means FEC off
    for bad in ((0, 3), (-1, 0), (3, -1), (250, 7)):
        with pytest.raises(KCPUsageError):
            fec_enabled(*bad)


@pytest.mark.parametrize(("ds", "ps"), [(0, 0), (10, 0), (0, 3), (-2, 1), (200, 57)])
def test_constructors_refuse_bad_or_off_parameters(ds: int, ps: int) -> None:
    with pytest.raises(KCPUsageError):
        FECEncoder(ds, ps)
    with pytest.raises(KCPUsageError):
        FECDecoder(ds, ps)


def test_constructor_refuses_negative_offset_and_non_int() -> None:
    with pytest.raises(KCPUsageError):
        FECEncoder(3, 2, offset=-1)
    with pytest.raises(TypeError):  # both builds (KCPTypeError, or mypyc's own check)
        FECEncoder(3.0, 2)  # type: ignore[arg-type]


# ---------------------------------------------------------------- encoder


def test_data_shard_layout_and_parity_at_group_end() -> None:
    enc = FECEncoder(3, 2)
    a = enc.encode(b"A" * 30, 0)
    assert a == [b"\x00\x00\x00\x00\xf1\x00" + struct.pack("<H", 32) + b"A" * 30]
    b = enc.encode(b"B" * 10, 1)
    assert len(b) == 1 and header(b[0]) == (1, TYPE_DATA)
    c = enc.encode(b"C" * 20, 2)
    assert [header(s) for s in c] == [(2, TYPE_DATA), (3, TYPE_PARITY), (4, TYPE_PARITY)]
    # parity shards are as long as the longest data shard of the group
    assert len(c[1]) == len(c[2]) == len(a[0]) == 6 + 2 + 30
    # parity body = codec over the data bodies (size field included), zero-padded
    bodies = [a[0][6:], b[0][6:], c[0][6:]]
    assert [s[6:] for s in c[1:]] == get_codec(3, 2).encode(bodies, 32)
    # first parity row of (3,2) is (1,1,1): plain XOR of the padded bodies
    xor = int.from_bytes(bodies[0], "little") ^ int.from_bytes(bodies[1], "little")
    xor ^= int.from_bytes(bodies[2], "little")
    assert c[1][6:] == xor.to_bytes(32, "little")
    assert header(enc.encode(b"D", 3)[0]) == (5, TYPE_DATA)


def test_empty_packet_is_a_two_byte_body() -> None:
    enc = FECEncoder(1, 1)
    enc.encode(b"x", 0)
    out = enc.encode(b"", 1)
    assert out[0] == b"\x02\x00\x00\x00\xf1\x00\x02\x00"
    assert out[1] == b"\x03\x00\x00\x00\xf2\x00\x02\x00"  # (1,1) parity is a copy of the body


def test_offset_reserves_room_in_front() -> None:
    plain = FECEncoder(3, 2)
    roomy = FECEncoder(3, 2, offset=20)
    rng = random.Random(3)
    for i in range(9):
        pkt = rng.randbytes(rng.randrange(0, 200))
        room = bytes([i]) * 20
        got = roomy.encode(room + pkt, i)
        want = plain.encode(pkt, i)
        assert len(got) == len(want)
        assert got[0][:20] == room  # the caller's room is kept for data shards
        for g in got[1:]:
            assert g[:20] == bytes(20)  # zeros for parity
        assert [g[20:] for g in got] == want
    with pytest.raises(KCPUsageError):
        roomy.encode(b"short", 0)


def test_oversized_packet_is_usage_error() -> None:
    enc = FECEncoder(3, 2)
    with pytest.raises(KCPUsageError):
        enc.encode(bytes(65534), 0)
    assert enc.next_seqid == 0


def test_non_continuous_group_skips_parity_but_keeps_seqids_aligned() -> None:
    enc = FECEncoder(3, 2)
    assert len(enc.encode(b"a", 0)) == 1
    assert len(enc.encode(b"b", 100)) == 1
    # the gap that counts is only between the group's last two packets: 500 ms is too long
    out = enc.encode(b"c", 600)
    assert [header(s) for s in out] == [(2, TYPE_DATA)]
    assert header(enc.encode(b"d", 601)[0]) == (5, TYPE_DATA)  # 3 and 4 were consumed
    enc.encode(b"e", 602)
    out = enc.encode(b"f", 1101)  # 499 ms: still continuous
    assert [header(s) for s in out] == [(7, TYPE_DATA), (8, TYPE_PARITY), (9, TYPE_PARITY)]


def test_rto_is_configurable() -> None:
    enc = FECEncoder(2, 1, rto=10)
    enc.encode(b"a", 0)
    assert len(enc.encode(b"b", 10)) == 1
    enc.encode(b"c", 11)
    assert len(enc.encode(b"d", 20)) == 2


def test_first_packet_with_one_data_shard_gets_no_parity() -> None:
    # kcp-go's previous-packet time starts at 0 against the wall clock: the first gap is huge.
    enc = FECEncoder(1, 2)
    assert [header(s) for s in enc.encode(b"a", 0)] == [(0, TYPE_DATA)]
    assert [header(s) for s in enc.encode(b"b", 1)] == [(3, TYPE_DATA), (4, TYPE_PARITY), (5, TYPE_PARITY)]


def test_seqid_wraps_at_paws_on_a_group_boundary() -> None:
    ds, ps = 10, 3
    n = ds + ps
    enc = FECEncoder(ds, ps)
    top = paws(n)
    enc.next_seqid = top - 2 * n
    shards = encode_stream(enc, [bytes([i]) * (i + 1) for i in range(30)])
    seqids = [header(s)[0] for s in shards]
    assert seqids[: 2 * n] == list(range(top - 2 * n, top))
    assert seqids[2 * n :] == list(range(n))
    assert enc.next_seqid == n
    for bad in (top, n + 1, -n):
        with pytest.raises(KCPUsageError):
            enc.next_seqid = bad


def test_cannot_move_seqid_inside_a_group() -> None:
    enc = FECEncoder(3, 2)
    enc.encode(b"a", 0)
    with pytest.raises(KCPUsageError):
        enc.next_seqid = 5


# ---------------------------------------------------------------- decoder


def make_groups(ds: int, ps: int, groups: int, rng: random.Random, max_len: int = 1400) -> list[list[bytes]]:
    enc = FECEncoder(ds, ps)
    packets = [rng.randbytes(rng.randrange(0, max_len + 1)) for _ in range(ds * groups)]
    wire = encode_stream(enc, packets)
    n = ds + ps
    return [wire[i : i + n] for i in range(0, len(wire), n)]


def test_every_loss_pattern_3_2_recovers_random_sizes() -> None:
    rng = random.Random(32)
    for group in make_groups(3, 2, 6, rng, max_len=300):
        for k in range(3):
            for lost in itertools.combinations(range(5), k):
                dec = FECDecoder(3, 2)
                got = [p for i, s in enumerate(group) if i not in lost for p in dec.decode(s, 0)]
                assert got == [group[i][8:] for i in lost if i < 3]


def test_every_loss_pattern_10_3_recovers() -> None:
    rng = random.Random(103)
    (group,) = make_groups(10, 3, 1, rng)
    patterns = 0
    for k in range(4):
        for lost in itertools.combinations(range(13), k):
            dec = FECDecoder(10, 3)
            got = [p for i, s in enumerate(group) if i not in lost for p in dec.decode(s, 0)]
            assert got == [group[i][8:] for i in lost if i < 10]
            assert dec.counters.snapshot()["fec_recovered"] == len([i for i in lost if i < 10])
            patterns += 1
    assert patterns == 1 + 13 + 78 + 286


def test_beyond_parity_nothing_is_emitted_and_group_is_counted_short() -> None:
    rng = random.Random(4)
    groups = make_groups(3, 2, 6, rng)
    counters = Counters()
    dec = FECDecoder(3, 2, counters)
    out: list[bytes] = []
    for group in groups[:2]:
        for s in group[2:4]:  # 2 of 5 shards: one too few
            out += dec.decode(s, 0)
    assert out == []
    for group in groups[2:]:
        for s in group:
            out += dec.decode(s, 0)
    assert out == []  # no loss in the later groups, nothing to rebuild
    assert counters.snapshot()["fec_short_shards"] == 2  # the two short groups fell out of the window
    assert counters.snapshot()["fec_errs"] == 0


def test_shards_in_any_order_and_parity_first() -> None:
    rng = random.Random(5)
    (group,) = make_groups(10, 3, 1, rng)
    for _ in range(50):
        order = list(range(13))
        rng.shuffle(order)
        lost = set(order[10:])
        dec = FECDecoder(10, 3)
        got = [p for i in order[:10] for p in dec.decode(group[i], 0)]
        assert got == [group[i][8:] for i in sorted(lost) if i < 10]


def test_duplicates_are_ignored() -> None:
    rng = random.Random(6)
    (group,) = make_groups(3, 2, 1, rng)
    dec = FECDecoder(3, 2)
    assert dec.decode(group[0], 0) == []
    assert dec.decode(group[0], 0) == []  # duplicate before the group is complete
    assert dec.decode(group[3], 0) == []
    assert dec.decode(group[3], 0) == []
    assert dec.counters.snapshot()["fec_parity_shards"] == 2
    assert dec.decode(group[4], 0) == [group[1][8:], group[2][8:]]
    # late shards of a decoded group are ignored (kcp-go could rebuild them again)
    for s in group:
        assert dec.decode(s, 0) == []
    assert dec.counters.snapshot()["fec_recovered"] == 2


def test_window_keeps_three_older_groups() -> None:
    rng = random.Random(8)
    groups = make_groups(3, 2, 6, rng)
    dec = FECDecoder(3, 2)
    dec.decode(groups[0][0], 0)  # group 0 started
    dec.decode(groups[1][0], 0)
    dec.decode(groups[3][0], 0)  # group 3: group 0 is 3 groups old, still kept
    assert dec.decode(groups[0][3], 0) == []
    assert dec.decode(groups[0][4], 0) == [groups[0][1][8:], groups[0][2][8:]]
    dec.decode(groups[4][0], 0)  # group 4: group 1 is 3 old (kept); nothing older is left
    dec.decode(groups[5][0], 0)  # group 5: group 1 is now 4 old -> dropped
    assert dec.counters.snapshot()["fec_short_shards"] == 1
    # the rest of group 1 arrives too late: it is dropped again as soon as it is seen
    assert [p for s in groups[1][1:] for p in dec.decode(s, 0)] == []
    assert dec.pending_groups <= MAX_SHARD_SETS + 1


def test_decoder_across_seqid_wrap() -> None:
    ds, ps = 10, 3
    n = ds + ps
    enc = FECEncoder(ds, ps)
    enc.next_seqid = paws(n) - 3 * n
    rng = random.Random(9)
    packets = [rng.randbytes(rng.randrange(1, 200)) for _ in range(6 * ds)]
    wire = encode_stream(enc, packets)
    dec = FECDecoder(ds, ps)
    # the receiver has followed the stream (its newest group is near the top)
    got: list[bytes] = []
    lost_data: list[bytes] = []
    for g in range(6):
        group = wire[g * n : (g + 1) * n]
        drop = set(rng.sample(range(n), 3))
        lost_data += [group[i][8:] for i in sorted(drop) if i < ds]
        for i, s in enumerate(group):
            if i not in drop:
                got += dec.decode(s, 0)
    assert got == lost_data
    assert [header(s)[0] for s in wire[3 * n : 3 * n + 2]] == [0, 1]


def test_bad_size_field_in_rebuilt_shard_is_counted_not_raised() -> None:
    ds, ps = 3, 2
    codec = get_codec(ds, ps)
    bodies = [struct.pack("<H", 0xFFFF) + b"x" * 10, struct.pack("<H", 1) + b"y" * 10, b"\x05\x00abc"]
    size = max(len(b) for b in bodies)
    parity = codec.encode(bodies, size)
    shards = [struct.pack("<IH", i, TYPE_DATA) + b for i, b in enumerate(bodies)]
    shards += [struct.pack("<IH", 3 + i, TYPE_PARITY) + p for i, p in enumerate(parity)]
    counters = Counters()
    dec = FECDecoder(ds, ps, counters)
    out = [p for s in (shards[2], shards[3], shards[4]) for p in dec.decode(s, 0)]
    assert out == []
    assert counters.snapshot()["fec_errs"] == 2 and counters.snapshot()["fec_recovered"] == 0
    dec2 = FECDecoder(ds, ps)
    assert [p for s in (shards[0], shards[1], shards[3]) for p in dec2.decode(s, 0)] == [b"abc"]


def test_garbage_is_dropped_and_counted() -> None:
    counters = Counters()
    dec = FECDecoder(10, 3, counters)
    assert dec.decode(b"", 0) == []
    assert dec.decode(b"\x00\x00\x00\x00\xf1\x00\x02", 0) == []
    assert counters.snapshot()["short_packets"] == 2
    assert dec.decode(b"\x00\x00\x00\x00\x51\x00" + bytes(30), 0) == []  # a KCP segment, not FEC
    assert dec.decode(struct.pack("<IH", paws(13), TYPE_PARITY) + bytes(10), 0) == []
    assert dec.decode(struct.pack("<IH", OOB_SEQID, TYPE_OOB) + bytes(10), 0) == []
    assert counters.snapshot()["fec_errs"] == 3


def test_mismatched_flag_without_autotune_drops_one_shard() -> None:
    rng = random.Random(10)
    (group,) = make_groups(3, 2, 1, rng)
    dec = FECDecoder(3, 2, autotune=False)
    bogus = struct.pack("<IH", 1, TYPE_PARITY) + group[1][6:]  # parity flag at a data position
    assert dec.decode(bogus, 0) == []
    assert dec.counters.snapshot()["fec_errs"] == 1
    got = [p for s in (group[0], group[3], group[4]) for p in dec.decode(s, 0)]
    assert got == [group[1][8:], group[2][8:]]


@pytest.mark.parametrize(("start", "sender"), [((1, 1), (10, 3)), ((10, 3), (3, 2)), ((3, 2), (4, 4))])
def test_autotune_follows_the_senders_parameters(start: tuple[int, int], sender: tuple[int, int]) -> None:
    # kcp-go's receiver with FEC off creates a (1, 1) decoder and tunes to what the peer sends.
    rng = random.Random(11)
    ds, ps = sender
    groups = make_groups(ds, ps, 12, rng, max_len=100)
    dec = FECDecoder(*start)
    tuned_at = None
    recovered: list[bytes] = []
    expected: list[bytes] = []
    for g, group in enumerate(groups):
        if (dec.data_shards, dec.parity_shards) == sender and tuned_at is None:
            tuned_at = g
        if tuned_at is not None:  # lose one data shard per group once tuned
            lost = rng.randrange(ds)
            expected.append(group[lost][8:])
            group = [s for i, s in enumerate(group) if i != lost]
        for s in group:
            recovered += dec.decode(s, 0)
    assert tuned_at is not None and tuned_at <= 4
    assert recovered == expected


def test_counters_default_to_a_private_object() -> None:
    dec = FECDecoder(3, 2)
    assert isinstance(dec.counters, Counters)
    shared = Counters()
    assert FECDecoder(3, 2, shared).counters is shared


def test_random_stream_with_loss_delivers_everything_fec_can() -> None:
    """A long (10,3) stream, random sizes, random losses: data shards + recovered == all sent packets
    of every group that lost at most 3 shards; groups that lost more give nothing extra."""
    rng = random.Random(12)
    ds, ps = 10, 3
    n = ds + ps
    enc = FECEncoder(ds, ps)
    enc.next_seqid = paws(n) - 20 * n  # cross the wrap on the way
    packets = [rng.randbytes(rng.randrange(0, 1400)) for _ in range(60 * ds)]
    wire = encode_stream(enc, packets)
    dec = FECDecoder(ds, ps)
    delivered: list[bytes] = []
    expected: list[bytes] = []
    for g in range(60):
        group = wire[g * n : (g + 1) * n]
        k = rng.choice([0, 0, 1, 2, 3, 4, 5])
        drop = set(rng.sample(range(n), k))
        for i, s in enumerate(group):
            if i in drop:
                continue
            if i < ds:
                delivered.append(s[8:])  # the pipeline hands data shards to KCP directly
            delivered += dec.decode(s, 0)
        for i in range(ds):
            if i not in drop or k <= ps:
                expected.append(group[i][8:])
    assert sorted(delivered) == sorted(expected)
    assert dec.counters.snapshot()["fec_errs"] == 0


def test_autotune_period_detection() -> None:
    from kcp.fec import _AutoTune

    tune = _AutoTune()
    assert tune.periods() == (-1, -1)
    for s in range(60):
        tune.samples.append(((s % 7) < 4, s))
    assert tune.periods() == (4, 3)
    # across the 2^32 wrap the samples are ordered relative to the newest one
    tune = _AutoTune()
    for s in range(60):
        tune.samples.append(((s % 13) < 10, (s - 30) & 0xFFFFFFFF))
    assert tune.periods() == (10, 3)
    # a gap before both edges are seen gives nothing (kcp-go needs contiguous seqids)
    tune = _AutoTune()
    for s in [*range(0, 5), *range(6, 40)]:
        tune.samples.append(((s % 13) < 10, s))
    assert tune.periods() == (-1, -1)
    # only the last 258 samples count
    tune = _AutoTune()
    for s in range(1000):
        tune.samples.append(((s % 5) < 3, s))
    assert len(tune.samples) == 258 and tune.periods() == (3, 2)


def test_buffers_other_than_bytes_are_copied() -> None:
    rng = random.Random(13)
    enc = FECEncoder(3, 2)
    buf = bytearray(rng.randbytes(50))
    first = enc.encode(buf, 0)
    buf[:] = bytes(50)  # the caller reuses its buffer
    second = enc.encode(memoryview(rng.randbytes(20)), 1)
    rest = enc.encode(rng.randbytes(30), 2)
    group = first + second + rest
    assert len(group) == 5 and group[0][8:] != bytes(50)
    dec = FECDecoder(3, 2)
    scratch = bytearray(group[3])
    assert dec.decode(memoryview(scratch), 0) == []
    scratch[:] = bytes(len(scratch))  # receive buffer reused
    got = [p for s in (group[2], group[4]) for p in dec.decode(bytearray(s), 0)]
    assert got == [group[0][8:], group[1][8:]]
