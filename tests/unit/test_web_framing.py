"""kcprpc.web.framing: every message round-trips, every malformed input is a typed FramingError
(never an exception), and the stream handshake reader takes its message in any chunking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kcprpc.errors import UsageError
from kcprpc.web.framing import (
    BINDING_SIZE,
    MAX_REFUSE_MESSAGE,
    MAX_TOKEN,
    Accept,
    Datagram,
    FramingError,
    HandshakeReader,
    Open,
    Refuse,
    StreamChunk,
    decode,
    encode_accept,
    encode_datagram,
    encode_open,
    encode_refuse,
    encode_stream,
)

u8 = st.integers(0, 255)
tokens = st.binary(max_size=MAX_TOKEN)
bindings = st.binary(min_size=BINDING_SIZE, max_size=BINDING_SIZE)


def test_the_contract_bytes() -> None:
    assert encode_open(2, b"tk") == bytes([1, 1, 2, 0, 2]) + b"tk"
    assert encode_accept(1, 1100, bytes(range(16))) == bytes([2, 1, 1, 0x04, 0x4C]) + bytes(range(16))
    assert encode_refuse(16, "no") == bytes([5, 16, 0, 2]) + b"no"
    assert encode_stream(b"ab") == b"\x03ab"
    assert encode_datagram(b"xy") == b"\x04xy"


@given(u8, u8, tokens)
def test_open_round_trips(version: int, mux: int, token: bytes) -> None:
    assert decode(encode_open(mux, token, version=version)) == Open(version, mux, token)


@given(u8, u8, st.integers(0, 0xFFFF), bindings)
def test_accept_round_trips(version: int, mux: int, maxd: int, binding: bytes) -> None:
    assert decode(encode_accept(mux, maxd, binding, version=version)) == Accept(version, mux, maxd, binding)


@given(u8, st.text(max_size=300))
def test_refuse_round_trips_its_message_cut_at_a_character(status: int, message: str) -> None:
    got = decode(encode_refuse(status, message))
    assert isinstance(got, Refuse) and got.status == status
    assert message.startswith(got.message) and len(got.message.encode()) <= MAX_REFUSE_MESSAGE
    if len(message.encode()) <= MAX_REFUSE_MESSAGE:
        assert got.message == message


@given(st.binary(min_size=1, max_size=4096))
def test_stream_and_datagram_round_trip(data: bytes) -> None:
    assert decode(encode_stream(data)) == StreamChunk(data)
    assert decode(encode_datagram(data)) == Datagram(data)


def test_an_empty_datagram_is_a_datagram_and_an_empty_stream_chunk_is_malformed() -> None:
    assert decode(b"\x04") == Datagram(b"")
    err = decode(b"\x03")
    assert isinstance(err, FramingError) and err.reason == "malformed"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x00abc", "unknown_kind"),
        (b"\x06", "unknown_kind"),
        (b"\xffgarbage", "unknown_kind"),
        (b"\x01\x01\x02", "malformed"),  # OPEN shorter than its head
        (b"\x01\x01\x02\x00\x03ab", "malformed"),  # token shorter than its length
        (b"\x01\x01\x02\x00\x01ab", "malformed"),  # bytes after the token
        (b"\x01\x01\x02\x04\x01" + bytes(1025), "token_too_long"),
        (b"\x02\x01\x02\x04\x4c" + bytes(15), "malformed"),  # short binding
        (b"\x02\x01\x02\x04\x4c" + bytes(17), "malformed"),
        (b"\x05\x10", "malformed"),
        (b"\x05\x10\x00\x05abc", "malformed"),
        (b"\x05\x10\x01\x01" + bytes(257), "message_too_long"),
    ],
)
def test_malformed_messages_are_typed_errors(data: bytes, reason: str) -> None:
    got = decode(data)
    assert isinstance(got, FramingError) and got.reason == reason and got.detail


@given(st.binary(max_size=2048))
def test_decode_never_raises(data: bytes) -> None:
    got = decode(data)
    assert isinstance(got, (Open, Accept, Refuse, StreamChunk, Datagram, FramingError))


def test_refuse_text_is_utf8_replaced_on_decode() -> None:
    got = decode(b"\x05\x10\x00\x02\xff\xfe")
    assert isinstance(got, Refuse) and got.message == "\ufffd\ufffd"


def test_encoding_bad_local_values_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="token"):
        encode_open(2, bytes(MAX_TOKEN + 1))
    with pytest.raises(UsageError, match="mux_version"):
        encode_open(256)
    with pytest.raises(UsageError, match="binding"):
        encode_accept(2, 1100, b"short")
    with pytest.raises(UsageError, match="max_datagram"):
        encode_accept(2, 70000, bytes(16))
    with pytest.raises(UsageError, match="STREAM"):
        encode_stream(b"")
    with pytest.raises(UsageError, match="expect"):
        HandshakeReader("other")  # type: ignore[arg-type]


def _read(r: HandshakeReader, chunks: list[bytes]) -> tuple[list[object], bytes]:
    """Feed ``chunks`` until the reader is done: what it returned, and every byte after the message."""
    got: list[object] = []
    for i, c in enumerate(chunks):
        x = r.feed(c)
        if x is not None:
            got.append(x)
        if r.done:
            return got, r.rest + b"".join(chunks[i + 1 :])
    return got, b""


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, at = [], 0
    for p in [*points, len(data)]:
        out.append(data[at:p])
        at = p
    return out


@given(tokens, st.binary(max_size=64), st.lists(st.integers(0, 2000), max_size=8))
def test_the_stream_reader_takes_open_in_any_chunking(token: bytes, after: bytes, cuts: list[int]) -> None:
    r = HandshakeReader("open")
    wire = encode_open(2, token) + after
    got, rest = _read(r, _chunks(wire, cuts))
    assert got == [Open(1, 2, token)]
    assert rest == after and r.done


@given(
    st.one_of(st.just(b"accept"), st.text(max_size=100)),
    st.binary(max_size=64),
    st.lists(st.integers(0, 400)),
)
def test_the_stream_reader_takes_a_reply_in_any_chunking(
    which: object, after: bytes, cuts: list[int]
) -> None:
    if which == b"accept":
        msg, want = encode_accept(2, 1100, bytes(16)), Accept(1, 2, 1100, bytes(16))
    else:
        assert isinstance(which, str)
        msg = encode_refuse(16, which)
        d = decode(msg)
        assert isinstance(d, Refuse)
        want = d  # type: ignore[assignment]
    r = HandshakeReader("reply")
    got, rest = _read(r, _chunks(msg + after, cuts))
    assert got == [want] and rest == after


@pytest.mark.parametrize(
    ("expect", "data", "reason"),
    [
        ("open", b"\x03smux", "unknown_kind"),
        ("open", b"\x01\x01\x02\x04\x01", "token_too_long"),
        ("reply", b"\x01", "unknown_kind"),
        ("reply", b"\x05\x10\x01\x01", "message_too_long"),
    ],
)
def test_the_stream_reader_refuses_what_is_no_handshake(expect: str, data: bytes, reason: str) -> None:
    r = HandshakeReader(expect)  # type: ignore[arg-type]
    got = r.feed(data)
    assert isinstance(got, FramingError) and got.reason == reason and r.done
    again = r.feed(b"more")
    assert isinstance(again, FramingError)


@given(st.sampled_from(["open", "reply"]), st.lists(st.binary(max_size=300), max_size=10))
def test_the_stream_reader_never_raises_nor_holds_more_than_a_message(
    expect: str, chunks: list[bytes]
) -> None:
    r = HandshakeReader(expect)  # type: ignore[arg-type]
    for c in chunks:
        r.feed(c)
        assert len(r._buf) <= 6 + MAX_TOKEN + 300
