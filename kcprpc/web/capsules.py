"""The capsules on a WebTransport session's CONNECT stream (RFC 9297), sans-I/O: QUIC variable-length
integers, the ``CLOSE_WEBTRANSPORT_SESSION`` capsule both ends send, and :class:`CapsuleReader`, which
finds the close among the capsules a browser sends (Chromium greases the stream with reserved types).
"""

from __future__ import annotations

CLOSE_WEBTRANSPORT_SESSION = 0x2843
"""The capsule that closes a WebTransport session (draft-02)."""

MAX_CAPSULE_BUFFER = 4096
"""Bytes of CONNECT-stream data held while a capsule is incomplete."""


def pull_varint(buf: bytes | bytearray, at: int) -> tuple[int, int] | None:
    """A QUIC variable-length integer at ``buf[at:]``: (value, next offset), None if cut short."""
    if at >= len(buf):
        return None
    first = buf[at]
    size = 1 << (first >> 6)
    if at + size > len(buf):
        return None
    value = first & 0x3F
    for i in range(1, size):
        value = (value << 8) | buf[at + i]
    return value, at + size


def push_varint(value: int) -> bytes:
    """``value`` as a QUIC variable-length integer."""
    if value < 0x40:
        return value.to_bytes(1, "big")
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x40000000:
        return (value | 0x80000000).to_bytes(4, "big")
    return (value | 0xC000000000000000).to_bytes(8, "big")


def close_capsule(code: int = 0, message: str = "") -> bytes:
    """A ``CLOSE_WEBTRANSPORT_SESSION`` capsule: error code u32 and a UTF-8 message (cut to 1024 bytes)."""
    body = (code & 0xFFFFFFFF).to_bytes(4, "big") + message.encode("utf-8")[:1024]
    return push_varint(CLOSE_WEBTRANSPORT_SESSION) + push_varint(len(body)) + body


class CapsuleReader:
    """Reads the capsules on a session's CONNECT stream (RFC 9297): only the close matters; others
    (Chromium greases the stream with a reserved type) are skipped. Bounded: a capsule whose
    head says more than ``limit`` bytes is an error."""

    def __init__(self, limit: int = MAX_CAPSULE_BUFFER) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._close: tuple[int, str] = (0, "")
        self._closed = False

    def feed(self, data: bytes) -> str | None:
        """``"close"`` once a close capsule is whole (and for anything after it, which is not
        kept), ``"error"`` past the bound, else None."""
        if self._closed:
            return "close"
        self._buf += data
        while True:
            t = pull_varint(self._buf, 0)
            if t is None:
                return None
            n = pull_varint(self._buf, t[1])
            if n is None:
                return None
            ctype, (length, at) = t[0], n
            if length > self._limit:
                return "error"
            if len(self._buf) < at + length:
                return None
            if ctype == CLOSE_WEBTRANSPORT_SESSION:
                body = bytes(self._buf[at : at + length])
                self._close = (int.from_bytes(body[:4], "big") if len(body) >= 4 else 0,
                               body[4:].decode("utf-8", "replace"))
                self._closed = True
                self._buf.clear()
                return "close"
            del self._buf[: at + length]

    def close_info(self) -> tuple[int, str]:
        """The close capsule's error code and message."""
        return self._close



__all__ = ["CLOSE_WEBTRANSPORT_SESSION", "MAX_CAPSULE_BUFFER", "CapsuleReader", "close_capsule", "pull_varint", "push_varint"]
