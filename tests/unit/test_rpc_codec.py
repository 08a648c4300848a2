"""RPC frame codec: round trips, incremental decoding, limits, garbage."""

from __future__ import annotations

import datetime
import gc
import uuid
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kcprpc import codec
from kcprpc.errors import ProtocolError


def test_frame_round_trip_and_header_layout() -> None:
    f = codec.encode_frame(codec.CALL, 7, ["svc/m", None, 100, codec.FLAG_END, b"\x00\x01"])
    assert f[:9] == (len(f) - 9).to_bytes(4, "big") + bytes([codec.CALL]) + (7).to_bytes(4, "big")
    dec = codec.FrameDecoder()
    assert dec.feed(f) == [(codec.CALL, 7, ["svc/m", None, 100, 1, b"\x00\x01"])]


def test_decoder_handles_byte_by_byte_and_batches() -> None:
    frames = [codec.encode_frame(codec.MSG, i, {"i": i, "s": "x" * i}) for i in range(20)]
    blob = b"".join(frames)
    dec = codec.FrameDecoder()
    out = []
    for i in range(len(blob)):
        out += dec.feed(blob[i : i + 1])
    assert [(t, c, b["i"]) for t, c, b in out] == [(codec.MSG, i, i) for i in range(20)]
    assert dec.buffered == 0
    assert len(codec.FrameDecoder().feed(blob)) == 20


def test_oversized_body_is_skipped_and_reported() -> None:
    big = codec.encode_frame(codec.CALL, 3, ["m", None, None, 1, b"x" * 1000])
    small = codec.encode_frame(codec.CANCEL, 4, None)
    dec = codec.FrameDecoder(max_body=100)
    out = dec.feed(big[:50]) + dec.feed(big[50:700]) + dec.feed(big[700:] + small)
    assert out == [(codec.CALL, 3, codec.OVERSIZED), (codec.CANCEL, 4, None)]


def test_undecodable_body_is_reported_not_raised() -> None:
    bad = (2).to_bytes(4, "big") + bytes([codec.CALL]) + (9).to_bytes(4, "big") + b"\xc1\xc1"
    assert codec.FrameDecoder().feed(bad) == [(codec.CALL, 9, codec.UNDECODABLE)]


def test_non_msgpack_types_go_through_pydantic() -> None:
    u = uuid.UUID(int=5)
    d = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    assert codec.unpack(codec.pack([u, d])) == [str(u), "2026-01-02T03:04:05Z"]


def test_datagram_frame() -> None:
    f = codec.encode_frame(codec.NOTIFY, 0, ["a/b", 1, None])
    assert codec.decode_datagram(f) == (codec.NOTIFY, 0, ["a/b", 1, None])
    for bad in (b"", f[:5], f + b"x", f[:-1]):
        try:
            codec.decode_datagram(bad)
        except ProtocolError:
            continue
        raise AssertionError("accepted a bad datagram")


@given(st.binary(max_size=400), st.integers(1, 64))
def test_garbage_never_raises(data: bytes, chunk: int) -> None:
    dec = codec.FrameDecoder(max_body=64)
    for i in range(0, len(data), chunk):
        for ftype, cid, _body in dec.feed(data[i : i + chunk]):
            assert 0 <= ftype < 256 and 0 <= cid < 2**32


def test_large_bodies_are_decoded_in_place_with_and_without_budget() -> None:
    """Bodies above 64 KiB are read through a view of the buffer (no copy first); the buffer is still
    trimmed afterwards, split or not, budget or not."""
    value = {"blob": b"b" * 300_000, "text": "t" * 100_000, "n": list(range(5000))}
    blob = codec.encode_frame(codec.MSG, 1, value) + codec.encode_frame(codec.MSG, 2, [1])
    for budget in (
        None,
        codec.DecodeBudget(8 << 20, (codec.MSG,)),
        codec.DecodeBudget(1 << 40, (codec.MSG,)),
    ):
        for step in (len(blob), 65536, 7777):
            dec = codec.FrameDecoder(budget=budget)
            out = []
            for i in range(0, len(blob), step):
                out += dec.feed(blob[i : i + step])
            assert out == [(codec.MSG, 1, value), (codec.MSG, 2, [1])]
            assert dec.buffered == 0


@given(st.lists(st.integers(1, 70_000), min_size=1, max_size=30))
def test_a_large_bomb_is_refused_before_it_is_buffered(cuts: list[int]) -> None:
    """A large body is walked as it arrives: once what came already cannot fit the budget, the frame
    is refused and the rest of it skipped unbuffered; the next frame decodes as usual. A legitimate
    large body walked the same way, however split, decodes as if it came at once."""
    budget = codec.DecodeBudget(2 << 20, (codec.CALL, codec.MSG))
    bomb = codec.encode_frame_raw(codec.MSG, 1, b"\xdd" + (400_000).to_bytes(4, "big") + b"\x80" * 400_000)
    good_value = [b"g" * 100_000, list(range(20_000)), {"k": "v" * 5000}]
    good = codec.encode_frame(codec.MSG, 2, good_value)
    blob = bomb + good
    dec = codec.FrameDecoder(budget=budget)
    out: list[codec.Frame] = []
    most = 0
    pos = 0
    for cut in [*cuts, len(blob)] * (len(blob) // sum(cuts) + 2):
        if pos >= len(blob):
            break
        out += dec.feed(blob[pos : pos + cut])
        pos += cut
        if not out:
            most = max(most, dec.buffered)
    assert out == [(codec.MSG, 1, codec.DECODE_REFUSED), (codec.MSG, 2, good_value)]
    # refused once ~29k maps (2 MiB / 72) had come: never the whole 400 KB buffered
    assert most <= 30_000 + 70_000 + codec.HEADER_SIZE + 5
    assert budget.counters["recv_decode_refused"] == 1


def test_a_malformed_large_body_is_reported_early() -> None:
    dec = codec.FrameDecoder(budget=codec.DecodeBudget(8 << 20))
    head = codec.HEADER.pack(200_000, codec.MSG, 5)
    assert dec.feed(head + b"\xdd" + (10**9).to_bytes(4, "big") + b"\x80" * 70_000) == [
        (codec.MSG, 5, codec.UNDECODABLE)
    ]
    rest = 200_000 - 5 - 70_000
    assert dec.feed(bytes(rest) + codec.encode_frame(codec.PING, 0, [1])) == [(codec.PING, 0, [1])]


def test_pack_matches_packb_and_survives_failures_and_large_messages() -> None:
    """codec.pack reuses one msgpack Packer per thread: a failed pack leaves no partial bytes for
    the next one, and a large message does not leave the thread holding a buffer of its size."""
    import threading

    import msgpack

    value = [b"x" * 64, {"a": 1, "b": [None, True, 1.5]}, "s"]
    assert codec.pack(value) == msgpack.packb(value, use_bin_type=True)
    with pytest.raises(OverflowError):
        codec.pack([b"partial", 2**70])
    assert codec.pack(value) == msgpack.packb(value, use_bin_type=True)
    before = codec._local.packer
    big = b"y" * (codec.PACKER_KEEP + 1)
    assert codec.unpack(codec.pack([big])) == [big]
    assert getattr(codec._local, "packer", None) is None  # let go: its buffer grew to the message
    assert codec.pack(value) == msgpack.packb(value, use_bin_type=True)
    assert codec._local.packer is not before
    out: list[bytes] = []
    t = threading.Thread(target=lambda: out.append(codec.pack(value)))
    t.start()
    t.join(10)
    assert out == [msgpack.packb(value, use_bin_type=True)]  # another thread has its own Packer


def _collections_during(fn: Any) -> int:
    """How many collections the garbage collector started while ``fn()`` ran (at most one more:
    the one that the allocations after it may start once a paused collector is back)."""
    gc.collect()
    before = sum(s["collections"] for s in gc.get_stats())
    fn()
    return sum(s["collections"] for s in gc.get_stats()) - before


def dense(n: int) -> bytes:
    return b"\xdc" + n.to_bytes(2, "big") + b"\x91\x01" * n  # n one-element arrays, 2n bytes


@pytest.mark.parametrize("n", [20_000, 40_000])  # 40 KB: the hot path; 80 KB: read through a view
@pytest.mark.parametrize("path", ["unpack", "decoder", "budget"])
def test_a_large_body_is_decoded_with_the_collector_paused(path: str, n: int) -> None:
    """``n`` containers would start a collection every 700 (msgpack's advice: pause it for large
    messages); the pause covers the decode only, and a collector that was off stays off."""
    body = dense(n)
    frame = codec.encode_frame_raw(codec.CALL, 1, body)
    decoders = {
        "unpack": lambda: codec.unpack(body),
        "decoder": lambda: codec.FrameDecoder().feed(frame),
        "budget": lambda: codec.FrameDecoder(budget=codec.DecodeBudget(1 << 26, [codec.CALL])).feed(frame),
    }
    assert gc.isenabled()
    threshold = gc.get_threshold()
    gc.set_threshold(700, *threshold[1:])  # CPython's own (a server's GcPolicy raises it process-wide)
    try:
        _check_paused(decoders[path], body, n, whole=path == "unpack")
    finally:
        gc.set_threshold(*threshold)


def _check_paused(decode: Any, body: bytes, n: int, *, whole: bool) -> None:
    out: list[Any] = []
    assert _collections_during(lambda: out.append(decode())) <= 1
    assert gc.isenabled()
    got = out[0] if whole else out[0][0][2]
    assert len(got) == n and got[-1] == [1]
    # the same arrays without the pause: the collector runs during the decode
    assert _collections_during(lambda: msgpack.unpackb(body)) >= 20
    gc.disable()
    try:
        codec.unpack(body)
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(ValueError):
        codec.unpack(body[:-1])  # truncated: the collector is back on after the error too
    assert gc.isenabled()
