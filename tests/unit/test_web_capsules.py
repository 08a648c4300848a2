"""The capsules on a WebTransport session's CONNECT stream (kcprpc.web.capsules.CapsuleReader):
the close capsule ends the session with its code and message, other capsules (Chromium greases the
stream with a reserved type) are skipped, and a capsule over the bound is an error, whatever way
the bytes are cut."""

from __future__ import annotations

import pytest

from kcprpc.web.capsules import CLOSE_WEBTRANSPORT_SESSION, CapsuleReader, close_capsule


def varint(v: int) -> bytes:
    for size, tag in ((1, 0), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if v < 1 << (8 * size - 2):
            return (v | (tag << (8 * size - 8))).to_bytes(size, "big")
    raise ValueError(v)


def capsule(ctype: int, body: bytes) -> bytes:
    return varint(ctype) + varint(len(body)) + body


def test_close_capsule_layout() -> None:
    c = close_capsule(4016, "bad token")
    assert c[:2] == bytes([0x68, 0x43])  # 0x2843 as a 2-byte varint
    assert c[2] == 4 + len("bad token")
    assert c[3:7] == (4016).to_bytes(4, "big") and c[7:] == b"bad token"
    assert CLOSE_WEBTRANSPORT_SESSION == 0x2843


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 1000])
def test_grease_is_skipped_and_close_is_read_in_pieces(cut: int) -> None:
    stream = capsule(0x1F * 0x2F + 0x21, b"\x00" * 40) + capsule(0x17, b"") + close_capsule(7, "bye")
    r = CapsuleReader()
    verdicts = [r.feed(stream[i : i + cut]) for i in range(0, len(stream), cut)]
    assert verdicts[-1] == "close" and all(v is None for v in verdicts[:-1])
    assert r.close_info() == (7, "bye")


def test_a_capsule_over_the_bound_is_an_error() -> None:
    r = CapsuleReader(limit=100)
    assert r.feed(varint(0x99) + varint(101)) == "error"
    assert CapsuleReader(limit=100).feed(capsule(0x99, b"x" * 100)) is None


def test_a_short_close_body_reads_as_code_zero() -> None:
    r = CapsuleReader()
    assert r.feed(capsule(CLOSE_WEBTRANSPORT_SESSION, b"\x01")) == "close"
    assert r.close_info() == (0, "")


def test_what_comes_after_the_close_is_not_kept() -> None:
    """The close capsule is the session's last word: bytes after it (a client that goes on
    sending while the server waits up to CLOSE_TIMEOUT for the stream's end) are dropped, not
    appended to a buffer without a bound, and the close stays what it was."""
    r = CapsuleReader(limit=100)
    assert r.feed(close_capsule(9, "done")) == "close"
    for _ in range(1000):
        assert r.feed(b"\x00" * 10_000) == "close"
    assert len(r._buf) == 0 and r.close_info() == (9, "done")
