"""What a msgpack body decodes into, before decoding it: size estimates and the per-connection
:class:`DecodeBudget` (sans-I/O; docs/rpc.md, "Flow control and memory per connection").

A receiver must not decode a body to learn that it was too big to decode: :func:`decoded_size`
walks the msgpack bytes and estimates the bytes of the Python objects they would become, stopping
at a limit. :class:`kcprpc.codec.FrameDecoder` charges each body to a :class:`DecodeBudget`.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import struct
from typing import Any, Final

_native: Any = None  # kcprpc._msgsize (kcprpc/_msgsize.c), the compiled build's walk in C
with contextlib.suppress(ImportError):
    _native = importlib.import_module("kcprpc._msgsize")


_built: Any = _native


def native() -> bool:
    """True when the walk runs in C (``kcprpc._msgsize``, built with the compiled build): 0.3-3 ns
    a body byte, against 60-310 ns for the Python walk on bodies dense in headers."""
    return _native is not None


def use_native(enabled: bool) -> bool:
    """Walk in C when ``enabled`` and the C walk is built, else in Python (benchmarks compare the
    two in one process); returns :func:`native`."""
    global _native
    _native = _built if enabled else None
    return _native is not None


# ------------------------------------------------------------------------------------------------
# What a msgpack body decodes into, before decoding it (docs/rpc.md, "Flow control and memory")

DECODE_FACTOR: Final = 120
"""No msgpack body of ``L`` bytes decodes into more than ``DECODE_FACTOR * L + DECODE_SLACK`` bytes
(by :func:`decoded_size`'s measure; CPython 3.11, 64-bit): the densest value is a chain of
one-entry maps, ``{0: {0: ...}}``, 2 wire bytes per 232-byte dict plus its key's pointer. An
array of empty maps, the classic bomb, is 72 bytes per wire byte."""
DECODE_SLACK: Final = 64

_FIXED_SIZE = [0] * 256  # wire size of the values whose size the first byte gives (0: not one of them)
_FIXED_COST = [0] * 256  # estimated bytes of the decoded value, plus its pointer in the parent
for _b in range(0x80):  # positive fixint: cached small ints
    _FIXED_SIZE[_b], _FIXED_COST[_b] = 1, 8
for _b in range(0xE0, 0x100):  # negative fixint: -5..-1 cached, the others are int objects
    _FIXED_SIZE[_b], _FIXED_COST[_b] = 1, (40 if _b < 0xFB else 8)
for _b, _size, _cost in (
    (0xC0, 1, 8),  # nil
    (0xC2, 1, 8),  # false
    (0xC3, 1, 8),  # true
    (0xCA, 5, 40),  # float32 -> float
    (0xCB, 9, 40),  # float64
    (0xCC, 2, 8),  # uint8: cached
    (0xCD, 3, 40),  # uint16
    (0xCE, 5, 40),  # uint32
    (0xCF, 9, 56),  # uint64: up to 3 digits of 30 bits
    (0xD0, 2, 40),  # int8
    (0xD1, 3, 40),  # int16
    (0xD2, 5, 40),  # int32
    (0xD3, 9, 56),  # int64
):
    _FIXED_SIZE[_b], _FIXED_COST[_b] = _size, _cost


def _list_cost(n: int) -> int:
    return ((56 + 8 * n + 15) & ~15) + 8


def _dict_cost(n: int) -> int:
    # CPython 3.11 dicts: 64 bytes empty, 224 with one entry, up to 352 with 2..6. A string key
    # then another kind converts the table to the general kind, which is larger: 632 bytes with
    # 7 entries, and just after a resize up to 120 bytes an entry (measured up to 140,000 entries;
    # a property test found the old 56-byte figure short by 1.6x)
    return 72 if n == 0 else 232 if n == 1 else 360 if n <= 6 else 72 + 120 * n


_RUNS: list[re.Pattern[bytes] | None] = [None] * 256  # runs of one-byte values of one cost, matched in C
_RUN_COST = [0] * 256
for _pattern, _cost in (
    (rb"[\x00-\x7f\xc0\xc2\xc3\xfb-\xff]+", 8),  # cached small ints, nil, bools
    (rb"[\xe0-\xfa]+", 40),  # negative fixints below -5
    (rb"[\x80\x90]+", 72),  # empty maps and arrays (the bomb's bricks)
):
    _rx = re.compile(_pattern)
    for _b in range(256):
        if _rx.fullmatch(bytes((_b,))):
            _RUNS[_b], _RUN_COST[_b] = _rx, _cost

_FIXMAP_COST = [_dict_cost(n) for n in range(16)]
_FIXARRAY_COST = [_list_cost(n) for n in range(16)]


def _str_cost(payload: bytes | bytearray | memoryview) -> int:
    n = len(payload)
    if n < 2:
        return 8  # "" and one-character strings are cached
    if bytes(payload).isascii():
        return ((49 + n + 15) & ~15) + 8
    return ((80 + 4 * n + 15) & ~15) + 8  # at most 4 bytes a character (one emoji widens the rest)


def _bin_cost(n: int) -> int:
    return 8 if n < 2 else ((33 + n + 15) & ~15) + 8


class BodyWalk:
    """:func:`decoded_size` over a body that arrives in pieces: :meth:`advance` walks the headers
    buffered so far and keeps its place, so a body that cannot fit is refused after its first bytes,
    before the rest is received and buffered (:class:`FrameDecoder` does this for large frames)."""

    __slots__ = ("need", "pos", "total")

    def __init__(self) -> None:
        self.need = 1  # values still to read
        self.pos = 0  # body bytes walked
        self.total = 0  # estimate so far

    def advance(
        self, data: bytes | bytearray | memoryview, base: int, end: int, size: int, limit: int
    ) -> int:
        """Walk on through ``data[base + self.pos : end]``, where the body (``size`` bytes in all)
        starts at ``data[base]``. Returns the estimate so far (final once :attr:`need` is 0), ``-1``
        once it exceeds ``limit`` and ``-2`` for a body :func:`unpack` refuses (as soon as that is
        certain). A value whose header or string/binary payload is not all there yet waits."""
        if _native is not None:
            r, self.need, self.pos, self.total = _native.advance(
                data, base, end, size, limit, self.need, self.pos, self.total
            )
            return int(r)
        return self.python_advance(data, base, end, size, limit)

    def python_advance(
        self, data: bytes | bytearray | memoryview, base: int, end: int, size: int, limit: int
    ) -> int:
        """:meth:`advance` in Python, whether or not the C walk is built (the fallback, and what
        the C walk is tested against)."""
        fixed_size, fixed_cost = _FIXED_SIZE, _FIXED_COST
        fixmap_cost, fixarray_cost, str_cost = _FIXMAP_COST, _FIXARRAY_COST, _str_cost
        runs, run_cost = _RUNS, _RUN_COST
        view = type(data) is memoryview
        pos = base + self.pos
        stop = base + size
        if end > stop:
            end = stop
        need = self.need
        total = self.total
        while need:
            if pos >= end:
                break
            b = data[pos]
            run = runs[b]
            if run is not None and pos + 1 < end and runs[data[pos + 1]] is run:
                # several one-byte values in a row (long arrays of small ints, empty maps): one C call
                lim = pos + need if pos + need < end else end
                k = run.match(data, pos, lim).end() - pos  # type: ignore[union-attr]
                pos += k
                need -= k
                total += run_cost[b] * k
                if total > limit:
                    return -1
                continue
            s = fixed_size[b]
            if s:
                if pos + s > end:
                    break
                pos += s
                total += fixed_cost[b]
                need -= 1
            elif b < 0x90:  # fixmap
                k = b & 0x0F
                need += 2 * k - 1
                total += fixmap_cost[k]
                pos += 1
            elif b < 0xA0:  # fixarray
                k = b & 0x0F
                need += k - 1
                total += fixarray_cost[k]
                pos += 1
            elif b < 0xC0:  # fixstr
                k = b & 0x1F
                pos += 1
                if pos + k > end:
                    pos -= 1
                    if pos + 1 + k > stop:
                        return -2
                    break
                if k < 2:
                    total += 8
                elif (bytes(data[pos : pos + k]) if view else data[pos : pos + k]).isascii():  # type: ignore[union-attr]
                    total += ((k + 64) & ~15) + 8
                else:
                    total += ((4 * k + 95) & ~15) + 8
                pos += k
                need -= 1
            elif 0xDC <= b <= 0xDF:  # array 16/32, map 16/32
                w = 2 if b == 0xDC or b == 0xDE else 4
                if pos + 1 + w > end:
                    if pos + 1 + w > stop:
                        return -2
                    break
                k = int.from_bytes(data[pos + 1 : pos + 1 + w], "big")
                pos += 1 + w
                if b <= 0xDD:
                    need += k - 1
                    total += _list_cost(k)
                else:
                    need += 2 * k - 1
                    total += _dict_cost(k)
            elif 0xD9 <= b <= 0xDB or 0xC4 <= b <= 0xC6:  # str 8/16/32, bin 8/16/32
                w = 1 << ((b - 0xD9) if b >= 0xD9 else (b - 0xC4))
                if pos + 1 + w > end:
                    if pos + 1 + w > stop:
                        return -2
                    break
                k = int.from_bytes(data[pos + 1 : pos + 1 + w], "big")
                if pos + 1 + w + k > end:
                    if pos + 1 + w + k > stop:
                        return -2
                    break
                pos += 1 + w
                total += str_cost(data[pos : pos + k]) if b >= 0xD9 else _bin_cost(k)
                pos += k
                need -= 1
            else:  # 0xc1 (never used) and the ext types
                return -2
            if need > stop - pos:  # more values announced than bytes left: truncated
                return -2
            if total > limit:
                return -1
        self.pos = pos - base
        self.need = need
        self.total = total
        if not need and pos != stop:
            return -2  # bytes after the value
        return total


def decoded_size(data: bytes | bytearray | memoryview, limit: int) -> int:
    """Estimate, without building anything, the bytes that ``unpack(data)`` would allocate.

    Walks the msgpack headers once (string and binary payloads are skipped in one step) and
    returns the estimate: an upper bound of what CPython allocates for the decoded value (each
    object rounded up to 16 bytes, plus an 8-byte pointer to it). Returns ``-1`` as soon as the
    estimate exceeds ``limit`` (the walk stops there: its cost is bounded by ``limit``), and ``-2``
    for a body :func:`unpack` refuses (truncated, trailing bytes, ext types, the unused 0xc1).
    ``decoded_size(data, limit) <= DECODE_FACTOR * len(data) + DECODE_SLACK``.
    """
    if _native is not None:
        return int(_native.size(data, limit))
    return python_size(data, limit)


def python_size(data: bytes | bytearray | memoryview, limit: int) -> int:
    """:func:`decoded_size` in Python, whether or not the C walk is built."""
    n = len(data)
    if n <= SMALL_BODY and type(data) is not memoryview:
        return _small_walk(data, limit)
    walk = BodyWalk()
    r = walk.python_advance(data, 0, n, n, limit)
    return -2 if r >= 0 and walk.need else r


def held_size(packed: bytes, limit: int = 1 << 30) -> int:
    """What a msgpack value takes when it is kept decoded, for a bound in bytes: its decoded
    estimate (:func:`decoded_size`), at least its own length; ``limit + 1`` past ``limit``."""
    held = decoded_size(packed, limit)
    return limit + 1 if held == -1 else max(held, len(packed))


SMALL_BODY: Final = 4096


_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from


def one_value_size(data: bytes | bytearray | memoryview) -> int:
    """The estimate of a body that is one string or binary value, at once; -1 for other bodies."""
    n = len(data)
    if n < 2:
        return -1
    b = data[0]
    if b == 0xC5:  # bin 16
        k = n - 3
        if k >= 0 and _U16(data, 1)[0] == k:
            return 8 if k < 2 else ((k + 48) & ~15) + 8
    elif b == 0xC4:  # bin 8
        k = n - 2
        if data[1] == k:
            return 8 if k < 2 else ((k + 48) & ~15) + 8
    elif b == 0xC6:  # bin 32
        k = n - 5
        if k >= 0 and _U32(data, 1)[0] == k:
            return ((k + 48) & ~15) + 8
    elif 0xA0 <= b <= 0xBF:
        if 1 + (b & 0x1F) == n:
            return _str_cost(data[1:])
    elif 0xD9 <= b <= 0xDB:
        w = 1 << (b - 0xD9)
        if n > w and int.from_bytes(data[1 : 1 + w], "big") == n - 1 - w:
            return _str_cost(data[1 + w :])
    return -1


def small_size(data: bytes | bytearray, limit: int) -> int:
    """:func:`decoded_size` of a whole body of bytes, without a :class:`BodyWalk` (the same walk,
    inlined: messages of a few fields are walked for each held message past half the budget)."""
    if _native is not None:
        return int(_native.size(data, limit))
    return _small_walk(data, limit)


def _small_walk(data: bytes | bytearray, limit: int) -> int:
    n = len(data)
    est = one_value_size(data)
    if est >= 0:
        return est if est <= limit else -1
    fixed_size, fixed_cost = _FIXED_SIZE, _FIXED_COST
    fixmap_cost, fixarray_cost, runs, run_cost = _FIXMAP_COST, _FIXARRAY_COST, _RUNS, _RUN_COST
    pos = 0
    need = 1
    total = 0
    try:
        while need:
            b = data[pos]
            run = runs[b]
            if run is not None and pos + 1 < n and runs[data[pos + 1]] is run:
                lim = pos + need if pos + need < n else n
                k = run.match(data, pos, lim).end() - pos  # type: ignore[union-attr]
                pos += k
                need -= k
                total += run_cost[b] * k
                if total > limit:
                    return -1
                continue
            s = fixed_size[b]
            if s:
                if pos + s > n:
                    return -2
                pos += s
                total += fixed_cost[b]
                need -= 1
            elif b < 0x90:
                k = b & 0x0F
                need += 2 * k - 1
                total += fixmap_cost[k]
                pos += 1
            elif b < 0xA0:
                k = b & 0x0F
                need += k - 1
                total += fixarray_cost[k]
                pos += 1
            elif b < 0xC0:
                k = b & 0x1F
                pos += 1
                if pos + k > n:
                    return -2
                if k < 2:
                    total += 8
                elif data[pos : pos + k].isascii():
                    total += ((k + 64) & ~15) + 8
                else:
                    total += ((4 * k + 95) & ~15) + 8
                pos += k
                need -= 1
            elif 0xDC <= b <= 0xDF:
                w = 2 if b == 0xDC or b == 0xDE else 4
                if pos + 1 + w > n:
                    return -2
                k = int.from_bytes(data[pos + 1 : pos + 1 + w], "big")
                pos += 1 + w
                if b <= 0xDD:
                    need += k - 1
                    total += _list_cost(k)
                else:
                    need += 2 * k - 1
                    total += _dict_cost(k)
            elif 0xD9 <= b <= 0xDB or 0xC4 <= b <= 0xC6:
                w = 1 << ((b - 0xD9) if b >= 0xD9 else (b - 0xC4))
                if pos + 1 + w > n:
                    return -2
                k = int.from_bytes(data[pos + 1 : pos + 1 + w], "big")
                pos += 1 + w
                if pos + k > n:
                    return -2
                total += _str_cost(data[pos : pos + k]) if b >= 0xD9 else _bin_cost(k)
                pos += k
                need -= 1
            else:
                return -2
            if need > n - pos:
                return -2
            if total > limit:
                return -1
    except IndexError:
        return -2
    return total if pos == n else -2
