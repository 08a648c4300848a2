"""Property tests for the RPC decoder's receive limits (docs/rpc.md, "Flow control and memory per
connection"): the estimate of what a msgpack body decodes into is an upper bound computed without
decoding, garbage never makes it raise, and a FrameDecoder with a DecodeBudget never holds more than
its limit, whatever the bodies and however the bytes are split."""

from __future__ import annotations

import sys
import tracemalloc
from typing import Any

import msgpack
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kcprpc import codec, msgpack_size

HUGE = 1 << 60

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
keys = st.text(max_size=12) | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(keys, inner, max_size=20),
    max_leaves=60,
)
no_maps = st.recursive(scalars, lambda inner: st.lists(inner, max_size=20), max_leaves=60)


def _free(obj: Any) -> bool:
    """Objects CPython does not allocate when msgpack decodes them (singletons and caches)."""
    if obj is None or obj is True or obj is False:
        return True
    if type(obj) is int:
        return -5 <= obj <= 256
    if type(obj) is str:
        return len(obj) == 0 or (len(obj) == 1 and ord(obj) < 256)
    if type(obj) is bytes:
        return len(obj) <= 1
    return False


def deep_size(obj: Any) -> int:
    """What the decoded value takes: each allocated object rounded up to 16 bytes (pymalloc), plus
    the 8-byte pointer that holds it."""
    total = 8
    if not _free(obj):
        total += (sys.getsizeof(obj) + 15) & ~15
    if isinstance(obj, list):
        total += sum(deep_size(x) for x in obj)
    elif isinstance(obj, dict):
        total += sum(deep_size(k) + deep_size(v) for k, v in obj.items())
    return total


@given(values)
@example({"": None, "0": None, "1": None, "2": None, "00": None, "000": None, 0: None})  # found in CI
def test_estimate_bounds_the_decoded_value(value: Any) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    est = msgpack_size.decoded_size(data, HUGE)
    assert est >= 0
    assert est <= msgpack_size.DECODE_FACTOR * len(data) + msgpack_size.DECODE_SLACK
    # deep_size counts a map's keys and values; with duplicate keys folded it can only be smaller
    assert est >= deep_size(codec.unpack(data)), (value, est)


@settings(max_examples=60)
@given(no_maps)
def test_estimate_bounds_what_unpack_allocates(value: Any) -> None:
    """The allocator's own view (maps left out: msgpack interns their string keys in a global table)."""
    data = msgpack.packb(value, use_bin_type=True)
    est = msgpack_size.decoded_size(data, HUGE)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        decoded = codec.unpack(data)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert decoded == value
    assert used <= est, (value, used, est)


@given(values, st.integers(0, 4096))
def test_estimate_stops_at_the_limit(value: Any, limit: int) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    full = msgpack_size.decoded_size(data, HUGE)
    assert msgpack_size.decoded_size(data, limit) == (full if full <= limit else -1)


@given(
    st.binary(max_size=300) | values.map(lambda v: msgpack.packb(v, use_bin_type=True)), st.binary(max_size=4)
)
def test_garbage_never_raises_and_agrees_with_unpack(data: bytes, tail: bytes) -> None:
    for blob in (data, data + tail, data[: len(data) // 2]):
        est = msgpack_size.decoded_size(blob, HUGE)
        assert est == -2 or 0 <= est <= msgpack_size.DECODE_FACTOR * len(blob) + msgpack_size.DECODE_SLACK
        try:
            decoded = codec.unpack(blob)
        except Exception:
            continue  # the walk may accept what unpack refuses (depth, unhashable keys): not the reverse
        assert est >= 0, blob
        assert est >= deep_size(decoded)


bodies = st.lists(
    st.tuples(st.sampled_from([codec.CALL, codec.MSG, codec.PING, codec.EVENT]), values), max_size=12
)


@given(bodies, st.lists(st.integers(1, 400), max_size=20), st.integers(1, 20_000))
def test_budgeted_decoder_never_holds_more_than_its_limit(
    frames: list[tuple[int, Any]], cuts: list[int], limit: int
) -> None:
    """Held frame types are charged until released; any split of the stream gives the same frames as
    a decoder without budget, except the bodies refused, and those are exactly the ones that would
    have taken the held bytes past the limit."""
    blob = b"".join(codec.encode_frame(t, i + 1, v) for i, (t, v) in enumerate(frames))
    budget = codec.DecodeBudget(limit, held_types=(codec.CALL, codec.MSG))
    dec = codec.FrameDecoder(budget=budget)
    got: list[codec.Frame] = []
    charged: list[int] = []
    pos = 0
    for cut in [*cuts, len(blob)]:
        piece, pos = blob[pos : pos + cut], pos + cut
        if not piece:
            continue
        out = dec.feed(piece)
        assert len(dec.costs) == len(out)
        got += out
        charged += dec.costs
        assert budget.held == sum(charged) <= limit
    assert dec.buffered == 0 and len(got) == len(frames)
    held = 0
    for i, ((ftype, cid, body), (t, v), cost) in enumerate(zip(got, frames, charged, strict=True)):
        assert (ftype, cid) == (t, i + 1)
        is_held = t in (codec.CALL, codec.MSG)
        est = msgpack_size.decoded_size(msgpack.packb(v, use_bin_type=True), HUGE)
        room = limit - held if is_held else limit
        if body is codec.DECODE_REFUSED:
            assert cost == 0 and est > room
        else:
            assert body == v
            assert est <= room
            assert cost >= est if is_held else cost == 0
            held += cost


@given(
    st.binary(max_size=200) | values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    st.lists(st.integers(0, 60), max_size=12),
    st.integers(0, 5000) | st.just(HUGE),
)
def test_walk_in_pieces_agrees_with_walk_at_once(data: bytes, cuts: list[int], limit: int) -> None:
    """BodyWalk fed the body as it arrives (any split) ends where decoded_size does."""
    whole = msgpack_size.decoded_size(data, limit)
    walk = msgpack_size.BodyWalk()
    end = 0
    r = 0
    for cut in cuts:
        end = min(len(data), end + cut)
        r = walk.advance(data, 0, end, len(data), limit)
        if r < 0:
            break
    if r >= 0:
        r = walk.advance(data, 0, len(data), len(data), limit)
        if r >= 0 and walk.need:
            r = -2
    assert r == whole


def test_estimate_bounds_maps_whose_keys_change_kind() -> None:
    """A map of string keys and then another kind: CPython converts the table to its general,
    larger kind. Every size up to 400, with the odd key first, last or absent."""
    for n in range(400):
        for odd in (None, 0, n - 1):
            keys: list[Any] = [str(i) for i in range(n)]
            if odd is not None and n:
                keys[odd] = 10**7 + odd
            data = msgpack.packb(dict.fromkeys(keys), use_bin_type=True)
            assert msgpack_size.decoded_size(data, HUGE) >= deep_size(codec.unpack(data)), n
