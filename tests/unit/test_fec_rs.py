"""The pure GF(2^8) Reed-Solomon codec (kcp.rs): field, matrix construction, encode, reconstruct."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import reedsolo  # type: ignore[import-untyped]

from kcp.errors import KCPUsageError
from kcp.rs import (
    GF_EXP,
    GF_LOG,
    ReedSolomon,
    build_matrix,
    get_codec,
    gf_div,
    gf_exp,
    gf_inv,
    gf_mul,
    invert_matrix,
    mul_table,
)


def test_field_tables_match_reedsolo_0x11d_generator_2() -> None:
    # reedsolo builds the same field when asked for prim 0x11D, generator 2; its tables are a cross-check.
    rs_log, rs_exp, charac = reedsolo.init_tables(prim=0x11D, generator=2, c_exp=8)
    assert charac == 255
    assert list(GF_EXP[:510]) == list(rs_exp[:510])
    assert list(GF_LOG[1:]) == list(rs_log[1:256])


def test_field_arithmetic_by_hand() -> None:
    # 2 * 0x80 = x^8 = x^4 + x^3 + x^2 + 1 = 0x1D (reduction by 0x11D)
    assert gf_mul(2, 0x80) == 0x1D
    # 3 * 0x80 = 2*0x80 ^ 0x80 = 0x9D
    assert gf_mul(3, 0x80) == 0x9D
    assert gf_mul(0, 77) == 0 and gf_mul(77, 0) == 0
    for a in range(1, 256):
        assert gf_mul(a, gf_inv(a)) == 1
        assert gf_div(gf_mul(a, 29), 29) == a
    with pytest.raises(ZeroDivisionError):
        gf_inv(0)
    assert gf_exp(0, 0) == 1 and gf_exp(0, 3) == 0 and gf_exp(2, 8) == 0x1D


def test_field_is_distributive_and_tables_agree() -> None:
    rng = random.Random(7)
    for _ in range(500):
        a, b, c = rng.randrange(256), rng.randrange(256), rng.randrange(256)
        assert gf_mul(a, b ^ c) == gf_mul(a, b) ^ gf_mul(a, c)
        assert gf_mul(a, b) == gf_mul(b, a)
    for c in (0, 1, 2, 29, 142, 255):
        table = mul_table(c)
        assert len(table) == 256
        assert all(table[x] == gf_mul(c, x) for x in range(256))


def test_matrix_2_1_by_hand() -> None:
    # Vandermonde rows r^c for r = 0, 1, 2: [1,0], [1,1], [1,2]. Top square [[1,0],[1,1]] is its own
    # inverse in characteristic 2, so the parity row is [1,2] x [[1,0],[1,1]] = [1^2, 2] = [3, 2].
    assert build_matrix(2, 3) == [[1, 0], [0, 1], [3, 2]]
    codec = ReedSolomon(2, 1)
    # P = 3*D0 ^ 2*D1, byte by byte: (3*0x01 ^ 2*0x01, 3*0x80 ^ 2*0x00, 0 ^ 2*0x80) with D0 shorter (padded)
    assert codec.encode([b"\x01\x80", b"\x01\x00\x80"], 3) == [bytes([3 ^ 2, 0x9D, 0x1D])]


def test_matrix_1_1_is_a_copy_and_3_2_first_parity_is_xor() -> None:
    assert build_matrix(1, 2) == [[1], [1]]
    assert ReedSolomon(1, 1).encode([b"abc"], 5) == [b"abc\0\0"]
    m = build_matrix(3, 5)
    assert m[3] == [1, 1, 1]
    assert m[4] == [15, 8, 6]


@pytest.mark.parametrize(("ds", "ps"), [(1, 1), (2, 1), (3, 2), (4, 4), (10, 3), (20, 10)])
def test_systematic_and_every_square_invertible(ds: int, ps: int) -> None:
    m = build_matrix(ds, ds + ps)
    assert m[:ds] == [[int(i == j) for j in range(ds)] for i in range(ds)]
    rng = random.Random(ds * 1000 + ps)
    combos: list[tuple[int, ...]]
    if math.comb(ds + ps, ds) <= 300:
        combos = list(itertools.combinations(range(ds + ps), ds))
    else:  # a seeded sample of the row choices
        combos = [tuple(sorted(rng.sample(range(ds + ps), ds))) for _ in range(60)]
    for rows in combos:
        sub = [m[r] for r in rows]
        inv = invert_matrix(sub)
        ident = [[0] * ds for _ in range(ds)]
        for i in range(ds):
            for j in range(ds):
                acc = 0
                for k in range(ds):
                    acc ^= gf_mul(sub[i][k], inv[k][j])
                ident[i][j] = acc
        assert ident == [[int(i == j) for j in range(ds)] for i in range(ds)]


def test_singular_matrix_raises_value_error() -> None:
    with pytest.raises(ValueError, match="singular"):
        invert_matrix([[1, 2], [1, 2]])


@pytest.mark.parametrize(("ds", "ps"), [(3, 2), (10, 3), (5, 5)])
def test_reconstruct_every_pattern(ds: int, ps: int) -> None:
    rng = random.Random(ds * 100 + ps)
    codec = get_codec(ds, ps)
    data = [rng.randbytes(rng.randrange(1, 64)) for _ in range(ds)]
    size = max(len(d) for d in data)
    full = [d.ljust(size, b"\0") for d in data] + codec.encode(data, size)
    for k in range(ps + 1):
        for lost in itertools.combinations(range(ds + ps), k):
            shards: list[bytes | None] = [None if i in lost else full[i] for i in range(ds + ps)]
            rebuilt = codec.reconstruct_data(shards, size)
            assert rebuilt == {i: full[i] for i in lost if i < ds}


def test_reconstruct_too_few_shards_raises_value_error() -> None:
    codec = get_codec(3, 2)
    with pytest.raises(ValueError, match="too few"):
        codec.reconstruct_data([b"a", None, None, None, b"b"], 1)


def test_inversion_cache_is_bounded_lru() -> None:
    codec = ReedSolomon(10, 3)
    full = [bytes([i]) for i in range(10)]
    full += codec.encode(full, 1)
    for lost in itertools.combinations(range(13), 3):
        shards: list[bytes | None] = [None if i in lost else full[i] for i in range(13)]
        assert codec.reconstruct_data(shards, 1) == {i: full[i] for i in lost if i < 10}
    assert len(codec._inv_cache) <= ReedSolomon.INVERSION_CACHE_SIZE


@pytest.mark.parametrize(("ds", "ps"), [(0, 1), (1, 0), (-1, 3), (200, 57)])
def test_bad_parameters_raise_usage_error(ds: int, ps: int) -> None:
    with pytest.raises(KCPUsageError):
        ReedSolomon(ds, ps)


def test_wrong_shard_counts_raise_usage_error() -> None:
    codec = get_codec(3, 2)
    with pytest.raises(KCPUsageError):
        codec.encode([b"a", b"b"], 1)
    with pytest.raises(KCPUsageError):
        codec.reconstruct_data([b"a", None], 1)


def test_256_shards_is_the_gf256_limit() -> None:
    codec = ReedSolomon(250, 6)
    data = [bytes([i]) for i in range(250)]
    parity = codec.encode(data, 1)
    shards: list[bytes | None] = [*data, *parity]
    for i in (0, 17, 100, 249, 250, 255):
        shards[i] = None
    assert codec.reconstruct_data(shards, 1) == {0: b"\x00", 17: b"\x11", 100: b"\x64", 249: b"\xf9"}
