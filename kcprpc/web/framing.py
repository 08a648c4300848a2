"""The web transports' messages (docs/wire-format/web.md), sans-I/O.

``OPEN`` / ``ACCEPT`` / ``REFUSE`` open a connection; over WebSocket ``STREAM`` carries a chunk of
the smux byte stream and ``DATAGRAM`` one RPC datagram. The ``encode_*`` functions build messages
from local values (a bad argument is the caller's bug: :class:`~kcprpc.errors.UsageError`);
:func:`decode` and :class:`HandshakeReader` read what the network sent and never raise: a message
they cannot accept comes back as a :class:`FramingError` whose ``reason`` names the counter the
caller increments.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from kcprpc.errors import UsageError

__all__ = [
    "ACCEPT",
    "BINDING_SIZE",
    "DATAGRAM",
    "MAX_REFUSE_MESSAGE",
    "MAX_TOKEN",
    "OPEN",
    "REFUSE",
    "STREAM",
    "VERSION",
    "Accept",
    "Datagram",
    "FramingError",
    "HandshakeReader",
    "Message",
    "Open",
    "Refuse",
    "StreamChunk",
    "decode",
    "encode_accept",
    "encode_datagram",
    "encode_open",
    "encode_refuse",
    "encode_stream",
]

VERSION = 1
"""The web wire version this module speaks."""

OPEN = 0x01
ACCEPT = 0x02
STREAM = 0x03
DATAGRAM = 0x04
REFUSE = 0x05

MAX_TOKEN = 1024
"""The largest token an ``OPEN`` carries."""
MAX_REFUSE_MESSAGE = 256
"""The largest ``REFUSE`` message, in UTF-8 bytes."""
BINDING_SIZE = 16
"""Bytes of the channel binding an ``ACCEPT`` carries."""

_OPEN_HEAD = struct.Struct(">BBBH")  # kind, version, mux version, token length
_ACCEPT = struct.Struct(f">BBBH{BINDING_SIZE}s")  # kind, version, mux version, max datagram, binding
_REFUSE_HEAD = struct.Struct(">BBH")  # kind, status, message length


@dataclass(frozen=True)
class Open:
    """The client's first message: its web wire ``version``, the highest smux version it speaks,
    and its credential for the server's ``authorize`` hook."""

    version: int
    mux_version: int
    token: bytes


@dataclass(frozen=True)
class Accept:
    """The server's yes: the mux version both ends speak now, the largest RPC datagram it takes,
    and the connection's channel binding."""

    version: int
    mux_version: int
    max_datagram: int
    binding: bytes


@dataclass(frozen=True)
class Refuse:
    """The server's no: an RPC status code and why."""

    status: int
    message: str


@dataclass(frozen=True)
class StreamChunk:
    """A chunk of the smux byte stream (WebSocket ``STREAM``)."""

    data: bytes


@dataclass(frozen=True)
class Datagram:
    """One RPC datagram (WebSocket ``DATAGRAM``)."""

    data: bytes


FramingReason = Literal["empty", "unknown_kind", "malformed", "token_too_long", "message_too_long"]


@dataclass(frozen=True)
class FramingError:
    """Input that is not a message of this wire. ``reason``: ``"empty"``, ``"unknown_kind"``,
    ``"malformed"`` (a known kind with the wrong length), ``"token_too_long"`` or
    ``"message_too_long"``; ``detail`` says more, for a log line."""

    reason: FramingReason
    detail: str


Message = Open | Accept | Refuse | StreamChunk | Datagram


# -- encoding (local values: misuse raises UsageError) ---------------------------------------------


def _u8(name: str, value: int) -> int:
    if type(value) is not int or not 0 <= value <= 0xFF:
        raise UsageError(f"{name} must be an int in 0..255, not {value!r}")
    return value


def encode_open(mux_version: int, token: bytes = b"", *, version: int = VERSION) -> bytes:
    """``OPEN``: ``mux_version`` the highest smux version the client speaks, ``token`` at most
    :data:`MAX_TOKEN` bytes."""
    token = bytes(token)
    if len(token) > MAX_TOKEN:
        raise UsageError(f"the token is {len(token)} bytes, at most {MAX_TOKEN} fit in OPEN")
    return _OPEN_HEAD.pack(OPEN, _u8("version", version), _u8("mux_version", mux_version), len(token)) + token


def encode_accept(mux_version: int, max_datagram: int, binding: bytes, *, version: int = VERSION) -> bytes:
    """``ACCEPT`` with ``binding`` (:data:`BINDING_SIZE` bytes) and ``max_datagram`` (0..65535)."""
    if len(binding) != BINDING_SIZE:
        raise UsageError(f"the binding is {BINDING_SIZE} bytes, not {len(binding)}")
    if type(max_datagram) is not int or not 0 <= max_datagram <= 0xFFFF:
        raise UsageError(f"max_datagram must be an int in 0..65535, not {max_datagram!r}")
    return _ACCEPT.pack(
        ACCEPT, _u8("version", version), _u8("mux_version", mux_version), max_datagram, bytes(binding)
    )


def refuse_text(message: str) -> bytes:
    """``message`` in UTF-8, cut to :data:`MAX_REFUSE_MESSAGE` bytes at a character boundary."""
    raw = message.encode("utf-8")
    if len(raw) <= MAX_REFUSE_MESSAGE:
        return raw
    return raw[:MAX_REFUSE_MESSAGE].decode("utf-8", "ignore").encode("utf-8")


def encode_refuse(status: int, message: str) -> bytes:
    """``REFUSE`` with ``status`` (an RPC status code) and ``message`` (cut to
    :data:`MAX_REFUSE_MESSAGE` UTF-8 bytes)."""
    raw = refuse_text(message)
    return _REFUSE_HEAD.pack(REFUSE, _u8("status", int(status)), len(raw)) + raw


def encode_stream(data: bytes | bytearray | memoryview) -> bytes:
    """``STREAM`` carrying ``data`` (at least one byte)."""
    if not len(data):
        raise UsageError("a STREAM message carries at least one byte")
    return b"\x03" + bytes(data)


def encode_datagram(data: bytes | bytearray | memoryview) -> bytes:
    """``DATAGRAM`` carrying one RPC datagram."""
    return b"\x04" + bytes(data)


# -- decoding (network input: never raises) ---------------------------------------------------------


def _decode_open(m: bytes | memoryview) -> Open | FramingError:
    n = len(m)
    if n < _OPEN_HEAD.size:
        return FramingError("malformed", f"OPEN of {n} bytes, shorter than its {_OPEN_HEAD.size}-byte head")
    _, version, mux_version, tlen = _OPEN_HEAD.unpack_from(m)
    if tlen > MAX_TOKEN:
        return FramingError("token_too_long", f"OPEN names a {tlen}-byte token, at most {MAX_TOKEN}")
    if n != _OPEN_HEAD.size + tlen:
        return FramingError("malformed", f"OPEN of {n} bytes for a {tlen}-byte token")
    return Open(version, mux_version, bytes(m[_OPEN_HEAD.size :]))


def _decode_refuse(m: bytes | memoryview) -> Refuse | FramingError:
    n = len(m)
    if n < _REFUSE_HEAD.size:
        return FramingError(
            "malformed", f"REFUSE of {n} bytes, shorter than its {_REFUSE_HEAD.size}-byte head"
        )
    _, status, mlen = _REFUSE_HEAD.unpack_from(m)
    if mlen > MAX_REFUSE_MESSAGE:
        return FramingError(
            "message_too_long", f"REFUSE names a {mlen}-byte message, at most {MAX_REFUSE_MESSAGE}"
        )
    if n != _REFUSE_HEAD.size + mlen:
        return FramingError("malformed", f"REFUSE of {n} bytes for a {mlen}-byte message")
    return Refuse(status, bytes(m[_REFUSE_HEAD.size :]).decode("utf-8", "replace"))


def _decode_accept(m: bytes | memoryview) -> Accept | FramingError:
    if len(m) != _ACCEPT.size:
        return FramingError("malformed", f"ACCEPT of {len(m)} bytes, not {_ACCEPT.size}")
    _, version, mux_version, max_datagram, binding = _ACCEPT.unpack_from(m)
    return Accept(version, mux_version, max_datagram, bytes(binding))


def decode(message: bytes | bytearray | memoryview) -> Message | FramingError:
    """One whole message (a WebSocket binary message, or a handshake message read whole): the
    message, or a :class:`FramingError` saying why it is none."""
    m = memoryview(message)
    if not len(m):
        return FramingError("empty", "an empty message")
    kind = m[0]
    if kind == STREAM:
        if len(m) < 2:
            return FramingError("malformed", "a STREAM message with no bytes")
        return StreamChunk(bytes(m[1:]))
    if kind == DATAGRAM:
        return Datagram(bytes(m[1:]))
    if kind == OPEN:
        return _decode_open(m)
    if kind == ACCEPT:
        return _decode_accept(m)
    if kind == REFUSE:
        return _decode_refuse(m)
    return FramingError("unknown_kind", f"unknown message kind 0x{kind:02x}")


class HandshakeReader:
    """Reads the one handshake message at the start of a byte stream (WebTransport's
    bidirectional stream, where it has no message boundaries): ``expect="open"`` on a server
    (an ``OPEN``), ``expect="reply"`` on a client (``ACCEPT`` or ``REFUSE``).

    :meth:`feed` takes bytes as they come and returns None until the message is whole, then the
    message (or a :class:`FramingError`, after which the stream is not this wire); the bytes
    after it (the smux stream already sent behind it) are in :attr:`rest`. It never holds more
    than the largest handshake message (5 + :data:`MAX_TOKEN` bytes) before deciding.
    """

    def __init__(self, expect: Literal["open", "reply"]) -> None:
        if expect not in ("open", "reply"):
            raise UsageError(f'expect is "open" or "reply", not {expect!r}')
        self.expect = expect
        self._buf = bytearray()
        self.rest = b""
        """Bytes after the handshake message (set once :meth:`feed` returned it)."""
        self.done = False
        """True once :meth:`feed` returned a message or an error."""

    def _need(self) -> int | FramingError | None:
        """Bytes the message takes in all, once its head is known (None: not yet)."""
        b = self._buf
        kind = b[0]
        if self.expect == "open":
            if kind != OPEN:
                return FramingError("unknown_kind", f"0x{kind:02x} where OPEN was expected")
            if len(b) < _OPEN_HEAD.size:
                return None
            tlen = int.from_bytes(b[3:5], "big")
            if tlen > MAX_TOKEN:
                return FramingError("token_too_long", f"OPEN names a {tlen}-byte token, at most {MAX_TOKEN}")
            return _OPEN_HEAD.size + tlen
        if kind == ACCEPT:
            return _ACCEPT.size
        if kind == REFUSE:
            if len(b) < _REFUSE_HEAD.size:
                return None
            mlen = int.from_bytes(b[2:4], "big")
            if mlen > MAX_REFUSE_MESSAGE:
                return FramingError(
                    "message_too_long", f"REFUSE names a {mlen}-byte message, at most {MAX_REFUSE_MESSAGE}"
                )
            return _REFUSE_HEAD.size + mlen
        return FramingError("unknown_kind", f"0x{kind:02x} where ACCEPT or REFUSE was expected")

    def feed(self, data: bytes | bytearray | memoryview) -> Message | FramingError | None:
        """Take ``data``; the handshake message once whole (see the class)."""
        if self.done:
            return FramingError("malformed", "the handshake message was already read")
        self._buf += data
        if not self._buf:
            return None
        need = self._need()
        if need is None:
            return None
        if isinstance(need, FramingError):
            self.done = True
            self._buf.clear()
            return need
        if len(self._buf) < need:
            return None
        self.done = True
        whole = bytes(self._buf[:need])
        self.rest = bytes(self._buf[need:])
        self._buf.clear()
        return decode(whole)
