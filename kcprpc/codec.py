"""RPC frames: a 9-byte header and a msgpack body (sans-I/O).

Frame layout (all integers big-endian)::

    u32 body_length | u8 type | u32 call_id | body (msgpack, body_length bytes)

The header sits outside msgpack so a receiver can route a frame (and refuse an oversized one
with ``RESOURCE_EXHAUSTED`` for the right call) without decoding the body. The same frames are
used on the shared control stream, on a per-call stream and, one frame per datagram, over OOB
datagrams. See ``docs/wire-format/rpc.md``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

import msgpack
from pydantic_core import to_jsonable_python

from kcprpc.errors import ProtocolError

HEADER: Final = struct.Struct(">IBI")
HEADER_SIZE: Final = HEADER.size

# frame types (wire values, never renumber)
HELLO: Final = 1  # client -> server, first frame on the control stream: {"v", "md", "restore"}
WELCOME: Final = 2  # server -> client: {"v", "sid", "hb", "epoch"}
CALL: Final = 3  # client -> server: [method, md|nil, timeout_ms|nil, flags, payload]
MSG: Final = 4  # either way: payload
END: Final = 5  # client -> server: request stream half-closed
HEADERS: Final = 6  # server -> client: initial metadata
TRAILER: Final = 7  # server -> client: [code, message, details, md|nil]; ends the call
REPLY: Final = 8  # server -> client: [payload, initial md|nil, trailing md|nil]; unary OK in one frame
CANCEL: Final = 9  # client -> server: cancel the call's handler
EVENT: Final = 10  # server -> client push: [event, payload, topic|nil, seq|nil, epoch|nil]
NOTIFY: Final = 11  # client -> server fire-and-forget: [method, payload, md|nil]
PING: Final = 12  # either way: [nonce, rtt_us|nil]
PONG: Final = 13  # either way: [nonce]
GOAWAY: Final = 14  # server -> client: [code, message]; no new calls on this connection
ROOMS: Final = 15  # server -> client: [joined: bool, room]; lets a client restore rooms after reconnect

FRAME_NAMES: Final = {
    HELLO: "HELLO",
    WELCOME: "WELCOME",
    CALL: "CALL",
    MSG: "MSG",
    END: "END",
    HEADERS: "HEADERS",
    TRAILER: "TRAILER",
    REPLY: "REPLY",
    CANCEL: "CANCEL",
    EVENT: "EVENT",
    NOTIFY: "NOTIFY",
    PING: "PING",
    PONG: "PONG",
    GOAWAY: "GOAWAY",
    ROOMS: "ROOMS",
}

# CALL flags
FLAG_END: Final = 1  # the request is complete: payload holds the single request message (unary/server-stream)

PROTOCOL_VERSION: Final = 1
DEFAULT_MAX_MESSAGE_SIZE: Final = 4 * 1024 * 1024


class _Oversized:
    """Marker body for a frame whose body exceeded the receiver's limit (the body was skipped)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "OVERSIZED"


class _Undecodable:
    """Marker body for a frame whose body is not valid msgpack."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDECODABLE"


OVERSIZED: Final = _Oversized()
UNDECODABLE: Final = _Undecodable()


def _default(obj: Any) -> Any:
    """msgpack fallback for values pydantic dumps in python mode (datetime, UUID, Decimal, sets...)."""
    return to_jsonable_python(obj)


_packer_default: Callable[[Any], Any] = _default


def pack(obj: Any) -> bytes:
    """Encode one msgpack value (bytes stay bin, str stays str, other types via pydantic's jsonable)."""
    return msgpack.packb(obj, default=_packer_default, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes | bytearray | memoryview) -> Any:
    """Decode one msgpack value; raises ``ValueError`` subclasses on garbage."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from


def encode_frame(ftype: int, call_id: int, body: Any) -> bytes:
    """Encode one frame."""
    data: bytes = msgpack.packb(body, default=_packer_default, use_bin_type=True)
    return _pack_header(len(data), ftype, call_id) + data


def encode_frame_raw(ftype: int, call_id: int, packed_body: bytes) -> bytes:
    """Encode one frame around a body that is already msgpack (used to encode a push once for many)."""
    return _pack_header(len(packed_body), ftype, call_id) + packed_body


Frame = tuple[int, int, Any]
"""(type, call_id, body). ``body`` is the decoded msgpack value, :data:`OVERSIZED` or :data:`UNDECODABLE`."""


def decode_datagram(data: bytes) -> Frame:
    """Decode a frame that fills one datagram exactly; raises :class:`ProtocolError` otherwise."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError("datagram shorter than a frame header")
    n, ftype, call_id = _unpack_header(data)
    if n != len(data) - HEADER_SIZE:
        raise ProtocolError("datagram length does not match its frame header")
    try:
        body = unpack(memoryview(data)[HEADER_SIZE:])
    except Exception:
        body = UNDECODABLE
    return ftype, call_id, body


class FrameDecoder:
    """Incremental frame decoder for a byte stream.

    ``feed(data)`` returns the frames completed by ``data``. Bodies longer than ``max_body`` are
    skipped without being buffered and reported with the :data:`OVERSIZED` body, so the caller can
    fail just that call. It never raises on input.
    """

    __slots__ = ("_buf", "_skip", "max_body")

    def __init__(self, max_body: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_body = max_body
        self._buf = bytearray()
        self._skip = 0

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return every frame now complete."""
        out: list[Frame] = []
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return out
            data = data[self._skip :]
            self._skip = 0
        buf = self._buf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data
        pos = 0
        end = len(view)
        max_body = self.max_body
        while end - pos >= HEADER_SIZE:
            n, ftype, call_id = _unpack_header(view, pos)
            if n > max_body:
                out.append((ftype, call_id, OVERSIZED))
                avail = end - pos - HEADER_SIZE
                if avail >= n:
                    pos += HEADER_SIZE + n
                    continue
                self._skip = n - avail
                pos = end
                break
            stop = pos + HEADER_SIZE + n
            if stop > end:
                break
            try:
                body = msgpack.unpackb(view[pos + HEADER_SIZE : stop], raw=False, strict_map_key=False)
            except Exception:
                body = UNDECODABLE
            out.append((ftype, call_id, body))
            pos = stop
        if buf:
            del buf[:pos]
        elif pos < end:
            self._buf = bytearray(view[pos:])
        return out
