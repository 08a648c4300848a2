"""kcprpc._msgsize, the compiled build's walk in C (kcprpc/_msgsize.c), against the Python walk of
kcprpc.msgpack_size: the same estimate and the same refusal (-1 over the limit, -2 for a body
msgpack refuses) for every body, whole or in pieces, and the same state after each piece. The
other decode tests (test_rpc_decode_property.py, the codec's) run through it wherever it is
built. The compiled CI run requires it (KCPRPC_EXPECT_COMPILED=1): there these tests cannot be
skipped."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from test_rpc_decode_property import keys, scalars

from kcprpc import msgpack_size
from kcprpc.msgpack_size import BodyWalk, python_size

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from native_support import native_module

native: Any = native_module("kcprpc._msgsize")
pytestmark = pytest.mark.skipif(native is None, reason="kcprpc._msgsize is built by the compiled build only")

long_scalars = (  # str 8/16 and bin 8/16 headers too
    st.text(alphabet="abc", min_size=30, max_size=300) | st.binary(min_size=250, max_size=300)
)
values = st.recursive(
    scalars | long_scalars,
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(keys, inner, max_size=20),
    max_leaves=60,
)
# runs of one-byte values (the walk's fast path) among other headers, as the bombs are built
bricks = st.lists(
    st.sampled_from(
        [b"\x90", b"\x80", b"\x91", b"\x81\x00", b"\x00", b"\xe0", b"\xc0", b"\xa1a", b"\xdc\x00\x03"]
    ),
    max_size=80,
).map(b"".join)


def packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


bodies = (
    values.map(packed)
    | st.binary(max_size=200)
    | st.tuples(st.integers(0, 0xFFFF), bricks).map(lambda t: b"\xdc" + t[0].to_bytes(2, "big") + t[1])
    | st.tuples(values.map(packed), st.binary(max_size=8), st.integers(0, 300)).map(
        lambda t: (t[0] + t[1])[: len(t[0]) - t[2] % (len(t[0]) + 1) + len(t[1])]  # cut or trailing bytes
    )
)
limits = st.integers(-2, 5_000) | st.just(1 << 70)


@given(bodies, limits)
@example(b"\xdc\x00\x05" + b"\x90" * 5, 1 << 70)
@example(b"\x91" * 1100 + b"\x90", 1 << 70)
@example(b"\xa5ab\xc3\xa9", 1 << 70)  # a non-ASCII fixstr
@example(b"\xda\x00\x02ab", 5)
def test_size_agrees_with_the_python_walk(data: bytes, limit: int) -> None:
    expected = python_size(data, limit)
    for form in (data, bytearray(data), memoryview(data)):
        assert native.size(form, limit) == expected, (data, limit)
    # the module's entry points take the C walk when it is built
    assert msgpack_size.decoded_size(data, limit) == expected
    assert msgpack_size.small_size(data, limit) == expected


@given(bodies, st.lists(st.integers(0, 300), max_size=12), limits, st.binary(max_size=5))
def test_advance_in_pieces_agrees_with_the_python_walk(
    data: bytes, cuts: list[int], limit: int, head: bytes
) -> None:
    """A body behind a header of other bytes (``base``), walked as its bytes arrive."""
    buf = head + data
    base, size = len(head), len(data)
    py, c = BodyWalk(), BodyWalk()
    for end in [*sorted(base + x for x in cuts if x <= size), len(buf)]:
        want = py.python_advance(buf, base, end, size, limit)
        got, c.need, c.pos, c.total = native.advance(
            memoryview(buf), base, end, size, limit, c.need, c.pos, c.total
        )
        assert (got, c.need, c.pos, c.total) == (want, py.need, py.pos, py.total), (buf, base, end, limit)
        if want < 0:
            break


def test_bad_arguments_raise_and_never_read_outside_the_buffer() -> None:
    with pytest.raises(TypeError):
        native.size(b"\x90")
    with pytest.raises(TypeError):
        native.size("text", 10)
    with pytest.raises(ValueError, match="outside the buffer"):
        native.advance(b"\x91\x90", 0, 3, 2, 100, 1, 0, 0)
    with pytest.raises(ValueError, match="outside the buffer"):
        native.advance(b"\x91\x90", -1, 2, 2, 100, 1, 0, 0)
    # a body longer than what has arrived: walked up to end, then it waits
    assert native.advance(b"\x92\x90", 0, 2, 3, 1000, 1, 0, 0) == (88 + 72, 1, 2, 88 + 72)
    assert native.size(b"", 100) == python_size(b"", 100) == -2
