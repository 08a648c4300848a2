"""Reed-Solomon erasure code over GF(2^8), bit-compatible with klauspost/reedsolomon's default codec.

This module is the pure codec: it knows nothing about kcp-go's shard headers (see :mod:`kcp.fec`).

The field is GF(2^8) with the reducing polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11D) and generator 2.
The coding matrix is klauspost's default construction for ``data`` data shards and ``parity`` parity
shards (``total = data + parity``):

1. ``V`` is the ``total x data`` Vandermonde matrix with ``V[r][c] = r ** c`` where the row index ``r``
   is taken as a field element (so row 0 is ``1 0 0 ...`` because ``0 ** 0 = 1``);
2. ``T`` is the top ``data x data`` square of ``V``;
3. the coding matrix is ``V * T^-1``: its top square is the identity (the code is systematic), and
   its bottom ``parity`` rows produce the parity shards.

Parity shard ``p`` is, byte position by byte position, ``sum_j M[data + p][j] * D_j`` (sum is XOR).
Shards of a group are zero-padded to the same length.

Speed: a multiplication by a constant ``c`` is a byte-to-byte map, so a whole shard is multiplied with
one ``bytes.translate`` through a 256-byte table, and shards are summed as little-endian Python ints
(``int.from_bytes`` then ``^``). Little-endian ints pad short shards with zeros for free. No Python
loop ever runs over the bytes of a shard.

Recovery (:meth:`ReedSolomon.reconstruct_data`) follows klauspost: take the first ``data`` present
shards in index order, invert the matching rows of the coding matrix (inversions are cached per
loss pattern in a small LRU), and rebuild each missing data shard as one row of that inverse applied
to the chosen shards.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from typing import ClassVar, Final

from kcp.errors import KCPUsageError

__all__ = [
    "GF_EXP",
    "GF_LOG",
    "MAX_TOTAL_SHARDS",
    "POLYNOMIAL",
    "ReedSolomon",
    "get_codec",
    "gf_div",
    "gf_exp",
    "gf_inv",
    "gf_mul",
    "invert_matrix",
    "mul_table",
]

POLYNOMIAL: Final = 0x11D
"""The field's reducing polynomial x^8 + x^4 + x^3 + x^2 + 1 (klauspost and reedsolo default)."""

MAX_TOTAL_SHARDS: Final = 256
"""GF(2^8) has 256 distinct elements, so at most 256 Vandermonde rows (klauspost's GF(2^8) limit)."""


def _build_tables() -> tuple[tuple[int, ...], tuple[int, ...]]:
    exp = [0] * 510
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= POLYNOMIAL
    for i in range(255, 510):
        exp[i] = exp[i - 255]
    return tuple(exp), tuple(log)


GF_EXP, GF_LOG = _build_tables()
"""``GF_EXP[i] = 2 ** i`` (doubled to 510 entries so sums of two logs need no modulo); ``GF_LOG`` is
its inverse on 1..255 (``GF_LOG[0]`` is meaningless and 0)."""


def gf_mul(a: int, b: int) -> int:
    """Multiply two field elements."""
    if a == 0 or b == 0:
        return 0
    return GF_EXP[GF_LOG[a] + GF_LOG[b]]


def gf_inv(a: int) -> int:
    """Multiplicative inverse of a non-zero field element."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return GF_EXP[255 - GF_LOG[a]]


def gf_div(a: int, b: int) -> int:
    """Divide ``a`` by the non-zero element ``b``."""
    if a == 0:
        return 0
    return gf_mul(a, gf_inv(b))


def gf_exp(a: int, n: int) -> int:
    """``a ** n`` in the field, with ``x ** 0 = 1`` for every x (``0 ** 0 = 1``), as klauspost."""
    if n == 0:
        return 1
    if a == 0:
        return 0
    return GF_EXP[(GF_LOG[a] * n) % 255]


@lru_cache(maxsize=256)
def mul_table(c: int) -> bytes:
    """The 256-byte table of ``x -> c * x``, for ``bytes.translate``."""
    if c == 0:
        return bytes(256)
    lc = GF_LOG[c]
    return bytes([0] + [GF_EXP[lc + GF_LOG[v]] for v in range(1, 256)])


Matrix = list[list[int]]


def _xor_bytes(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")


def _mat_mul(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> Matrix:
    """``a * b``; each output row is a sum of rows of ``b`` scaled with ``bytes.translate``."""
    rows_b = [bytes(row) for row in b]
    width = len(rows_b[0])
    out: Matrix = []
    for row in a:
        acc = 0
        for k, v in enumerate(row):
            if v:
                acc ^= int.from_bytes(rows_b[k].translate(mul_table(v)), "little")
        out.append(list(acc.to_bytes(width, "little")))
    return out


def invert_matrix(m: Sequence[Sequence[int]]) -> Matrix:
    """Invert a square matrix over GF(2^8) by Gauss-Jordan elimination (rows scaled with ``translate``).

    Raises ``ValueError`` if the matrix is singular.
    """
    n = len(m)
    work = [bytes([*row, *(1 if i == j else 0 for j in range(n))]) for i, row in enumerate(m)]
    for col in range(n):
        pivot = next((r for r in range(col, n) if work[r][col]), -1)
        if pivot < 0:
            raise ValueError("matrix is singular")
        if pivot != col:
            work[col], work[pivot] = work[pivot], work[col]
        prow = work[col]
        if prow[col] != 1:
            prow = work[col] = prow.translate(mul_table(gf_inv(prow[col])))
        for r in range(n):
            if r != col:
                f = work[r][col]
                if f:
                    work[r] = _xor_bytes(work[r], prow if f == 1 else prow.translate(mul_table(f)))
    return [list(row[n:]) for row in work]


def build_matrix(data: int, total: int) -> Matrix:
    """klauspost's default coding matrix: Vandermonde(total x data) times the inverse of its top square."""
    vm = [[gf_exp(r, c) for c in range(data)] for r in range(total)]
    top_inv = invert_matrix(vm[:data])
    return _mat_mul(vm, top_inv)


class ReedSolomon:
    """A systematic (data, parity) erasure code with klauspost/reedsolomon's default matrix.

    Shards are ``bytes``; a group's shards may have different lengths and are treated as zero-padded
    to the length the caller passes as ``size``.
    """

    __slots__ = ("_inv_cache", "_parity_rows", "data_shards", "matrix", "parity_shards", "total_shards")

    INVERSION_CACHE_SIZE: ClassVar[int] = 64
    """How many inverted sub-matrices (one per loss pattern) are kept."""

    def __init__(self, data_shards: int, parity_shards: int) -> None:
        if data_shards <= 0 or parity_shards <= 0:
            raise KCPUsageError(
                f"Reed-Solomon needs at least 1 data and 1 parity shard, got ({data_shards}, {parity_shards})"
            )
        if data_shards + parity_shards > MAX_TOTAL_SHARDS:
            raise KCPUsageError(
                f"data_shards + parity_shards must be at most {MAX_TOTAL_SHARDS} in GF(2^8), "
                f"got {data_shards} + {parity_shards}"
            )
        self.data_shards = data_shards
        self.parity_shards = parity_shards
        self.total_shards = data_shards + parity_shards
        self.matrix: tuple[tuple[int, ...], ...] = tuple(
            tuple(row) for row in build_matrix(data_shards, self.total_shards)
        )
        # per parity row: (translate table or None for coefficient 1, ...) per data column; 0 -> skipped
        self._parity_rows: tuple[tuple[tuple[int, bytes | None], ...], ...] = tuple(
            self._row_plan(self.matrix[data_shards + p]) for p in range(parity_shards)
        )
        self._inv_cache: OrderedDict[tuple[int, ...], tuple[tuple[tuple[int, bytes | None], ...], ...]] = (
            OrderedDict()
        )

    @staticmethod
    def _row_plan(row: Sequence[int]) -> tuple[tuple[int, bytes | None], ...]:
        return tuple((k, None if c == 1 else mul_table(c)) for k, c in enumerate(row) if c)

    def encode(self, data: Sequence[bytes], size: int, skip: int = 0) -> list[bytes]:
        """Return the parity shards (each ``size`` bytes) of ``data_shards`` data shards.

        Each data shard is ``data[k][skip:]``, treated as zero-padded to ``size`` bytes (none may be
        longer). ``skip`` lets a caller pass whole packets with a header in front without slicing them:
        the header bytes are multiplied along and shifted out once per parity shard.
        """
        if len(data) != self.data_shards:
            raise KCPUsageError(f"expected {self.data_shards} data shards, got {len(data)}")
        from_bytes = int.from_bytes
        shift = 8 * skip
        out = []
        for plan in self._parity_rows:
            acc = 0
            for k, table in plan:
                shard = data[k]
                acc ^= from_bytes(shard if table is None else shard.translate(table), "little")
            out.append((acc >> shift).to_bytes(size, "little"))
        return out

    def _decode_plan(self, valid: tuple[int, ...]) -> tuple[tuple[tuple[int, bytes | None], ...], ...]:
        cache = self._inv_cache
        plan = cache.get(valid)
        if plan is not None:
            cache.move_to_end(valid)
            return plan
        inv = invert_matrix([self.matrix[i] for i in valid])
        plan = tuple(self._row_plan(row) for row in inv)
        cache[valid] = plan
        if len(cache) > self.INVERSION_CACHE_SIZE:
            cache.popitem(last=False)
        return plan

    def reconstruct_data(self, shards: Sequence[bytes | None], size: int, skip: int = 0) -> dict[int, bytes]:
        """Rebuild the missing data shards of one group.

        ``shards`` has ``total_shards`` entries in index order; ``None`` marks a missing shard. A present
        shard is ``shards[i][skip:]`` (``skip`` as in :meth:`encode`), treated as zero-padded to ``size``
        bytes. Returns ``{index: shard}`` for every missing data shard (each ``size`` bytes). Raises
        ``ValueError`` if fewer than ``data_shards`` shards are present.
        """
        if len(shards) != self.total_shards:
            raise KCPUsageError(f"expected {self.total_shards} shard slots, got {len(shards)}")
        ds = self.data_shards
        missing = [i for i in range(ds) if shards[i] is None]
        if not missing:
            return {}
        valid = tuple([i for i, s in enumerate(shards) if s is not None][:ds])
        if len(valid) < ds:
            raise ValueError(f"too few shards to reconstruct: {len(valid)} < {ds}")
        plan = self._decode_plan(valid)
        sub = [shards[i] for i in valid]
        from_bytes = int.from_bytes
        shift = 8 * skip
        out: dict[int, bytes] = {}
        for m in missing:
            acc = 0
            for k, table in plan[m]:
                shard = sub[k]
                assert shard is not None
                acc ^= from_bytes(shard if table is None else shard.translate(table), "little")
            out[m] = (acc >> shift).to_bytes(size, "little")
        return out


@lru_cache(maxsize=32)
def get_codec(data_shards: int, parity_shards: int) -> ReedSolomon:
    """A shared :class:`ReedSolomon` for these parameters (codecs are immutable apart from their cache)."""
    return ReedSolomon(data_shards, parity_shards)
