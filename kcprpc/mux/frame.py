"""smux frame codec (protocol versions 1 and 2), sans-I/O.

Every frame starts with an 8-byte header, all integers little-endian::

    offset 0  version   u8    1 or 2; a session only accepts its own configured version
    offset 1  cmd       u8    SYN=0, FIN=1, PSH=2, NOP=3, UPD=4 (UPD exists in version 2 only)
    offset 2  length    u16   payload bytes that follow the header
    offset 4  stream id u32

SYN, FIN and NOP carry no payload. PSH carries stream data. UPD carries exactly 8 bytes:
``consumed`` u32 (total bytes the receiver has read from the stream, modulo 2**32) then ``window``
u32 (the receiver's per-stream buffer size). See docs/wire-format/smux.md.

:class:`SmuxFrameDecoder` is incremental: feed it any chunking of the byte stream and pull complete
frames. Anything that is not valid smux raises :class:`~kcprpc.mux.errors.MuxProtocolError` and
poisons the decoder (a byte stream cannot be resynchronised after a bad header).
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Final

from .errors import MuxProtocolError, MuxUsageError

CMD_SYN: Final = 0
"""Open a stream (the sender picks the id)."""
CMD_FIN: Final = 1
"""The sender will write no more data on this stream (EOF mark)."""
CMD_PSH: Final = 2
"""Stream data."""
CMD_NOP: Final = 3
"""Keepalive; stream id 0, no payload, no answer expected."""
CMD_UPD: Final = 4
"""Version 2 only: per-stream window update (consumed u32, window u32)."""

CMD_NAMES: Final = {CMD_SYN: "SYN", CMD_FIN: "FIN", CMD_PSH: "PSH", CMD_NOP: "NOP", CMD_UPD: "UPD"}

HEADER_SIZE: Final = 8
UPD_PAYLOAD_SIZE: Final = 8
MAX_PAYLOAD: Final = 0xFFFF
"""The u16 length field caps every payload at 65535 bytes."""
INITIAL_PEER_WINDOW: Final = 262144
"""Version 2: the send window a stream assumes before the peer's first UPD (smux's guess, 256 KiB)."""
SUPPORTED_VERSIONS: Final = (1, 2)

_HEADER: Final = struct.Struct("<BBHI")
_UPD: Final = struct.Struct("<II")
_HEADER_PACK: Final = _HEADER.pack
_HEADER_UNPACK_FROM: Final = _HEADER.unpack_from
U32_MASK: Final = 0xFFFFFFFF


class SmuxFrame:
    """One decoded smux frame. ``data`` is the raw payload (for UPD: the 8 payload bytes).

    A value: equal by its fields, hashable, not to be changed (mypy checks the ``Final``
    attributes). A plain class, not a frozen dataclass, so that the compiled build makes one per
    frame received with a native constructor (a frozen dataclass's ``__init__`` is interpreted
    Python setting each field through ``object.__setattr__``: 1.5 µs a frame)."""

    __slots__ = ("cmd", "data", "stream_id", "version")

    def __init__(self, version: int, cmd: int, stream_id: int, data: bytes = b"") -> None:
        self.version: Final = version
        self.cmd: Final = cmd
        self.stream_id: Final = stream_id
        self.data: Final = data

    def _key(self) -> tuple[int, int, int, bytes]:
        return (self.version, self.cmd, self.stream_id, self.data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SmuxFrame) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"SmuxFrame(version={self.version!r}, cmd={self.cmd!r}, stream_id={self.stream_id!r}, data={self.data!r})"

    def encode(self) -> bytes:
        """Return the wire bytes of this frame (header + payload)."""
        return encode_frame(self.version, self.cmd, self.stream_id, self.data)

    @property
    def upd(self) -> tuple[int, int]:
        """For an UPD frame: ``(consumed, window)``."""
        if self.cmd != CMD_UPD or len(self.data) != UPD_PAYLOAD_SIZE:
            raise MuxUsageError("not an UPD frame")
        consumed, window = _UPD.unpack(self.data)
        return consumed, window


def _check_common(version: int, cmd: int, stream_id: int) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise MuxUsageError(f"unsupported smux version {version!r} (1 or 2)")
    if cmd not in CMD_NAMES or (cmd == CMD_UPD and version < 2):
        raise MuxUsageError(f"invalid command {cmd!r} for smux version {version}")
    if not 0 <= stream_id <= U32_MASK:
        raise MuxUsageError(f"stream id {stream_id!r} does not fit in u32")


def encode_header(version: int, cmd: int, stream_id: int, length: int) -> bytes:
    """Return the 8-byte header alone (for callers that send the payload separately)."""
    _check_common(version, cmd, stream_id)
    if not 0 <= length <= MAX_PAYLOAD:
        raise MuxUsageError(f"frame length {length} outside 0..{MAX_PAYLOAD}")
    return _HEADER_PACK(version, cmd, length, stream_id)


def encode_frame(version: int, cmd: int, stream_id: int, data: bytes = b"") -> bytes:
    """Return one complete frame. Raises :class:`MuxUsageError` for values smux cannot carry."""
    _check_common(version, cmd, stream_id)
    n = len(data)
    if n > MAX_PAYLOAD:
        raise MuxUsageError(f"frame payload of {n} bytes exceeds {MAX_PAYLOAD}")
    if cmd in (CMD_SYN, CMD_FIN, CMD_NOP) and n:
        raise MuxUsageError(f"{CMD_NAMES[cmd]} frames carry no payload")
    if cmd == CMD_UPD and n != UPD_PAYLOAD_SIZE:
        raise MuxUsageError("UPD frames carry exactly 8 bytes; use encode_upd()")
    return _HEADER_PACK(version, cmd, n, stream_id) + bytes(data)


def encode_upd(version: int, stream_id: int, consumed: int, window: int) -> bytes:
    """Return a version-2 UPD frame announcing ``consumed`` bytes read and a ``window``."""
    if version < 2:
        raise MuxUsageError("UPD exists only in smux version 2")
    _check_common(version, CMD_UPD, stream_id)
    if not (0 <= consumed <= U32_MASK and 0 <= window <= U32_MASK):
        raise MuxUsageError("UPD consumed and window must fit in u32")
    return _HEADER_PACK(version, CMD_UPD, UPD_PAYLOAD_SIZE, stream_id) + _UPD.pack(consumed, window)


def pack_header_unchecked(version: int, cmd: int, stream_id: int, length: int) -> bytes:
    """Hot-path header packing without argument checks (the core validates its own values)."""
    return _HEADER_PACK(version, cmd, length, stream_id)


def pack_upd_unchecked(version: int, stream_id: int, consumed: int, window: int) -> bytes:
    """Hot-path UPD frame packing without argument checks."""
    return _HEADER_PACK(version, CMD_UPD, UPD_PAYLOAD_SIZE, stream_id) + _UPD.pack(
        consumed & U32_MASK, window & U32_MASK
    )


def unpack_upd(payload: bytes) -> tuple[int, int]:
    """Decode an UPD payload into ``(consumed, window)``."""
    if len(payload) != UPD_PAYLOAD_SIZE:
        raise MuxProtocolError(f"UPD payload must be 8 bytes, got {len(payload)}", "bad_length")
    consumed, window = _UPD.unpack(payload)
    return consumed, window


# the first 8 bytes of a snappy framing-format stream (stream identifier chunk "sNaPpY"), which a
# kcptun peer sends first when its compression is on: named in the error instead of "version 255"
_SNAPPY_STREAM_START: Final = b"\xff\x06\x00\x00sNaP"


class SmuxFrameDecoder:
    """Incremental decoder of a smux byte stream for one protocol ``version``.

    ``feed()`` appends bytes; ``next_frame()`` returns the next complete :class:`SmuxFrame` or ``None``.
    Validation (as strict as a genuine smux sender allows):

    * the version byte must equal the session's version;
    * the command must be SYN/FIN/PSH/NOP (and UPD in version 2);
    * SYN, FIN and NOP must have length 0 and UPD length 8 (smux never sends otherwise, and its own
      reader would lose framing on anything else).

    Any violation raises :class:`MuxProtocolError` with a ``kind`` attribute (``"bad_version"``,
    ``"bad_cmd"``, ``"bad_length"``) and leaves the decoder failed: further calls raise again.
    """

    __slots__ = ("_chunks", "_error", "_pos", "_size", "version")

    def __init__(self, version: int) -> None:
        if version not in SUPPORTED_VERSIONS:
            raise MuxUsageError(f"unsupported smux version {version!r} (1 or 2)")
        self.version = version
        # received pieces kept as they came (no copy into one buffer): a payload inside one piece
        # is copied once, by slicing; one spanning pieces is copied once, by a join of views
        self._chunks: deque[bytes] = deque()
        self._pos = 0  # bytes of _chunks[0] already decoded
        self._size = 0  # bytes fed and not decoded
        self._error: MuxProtocolError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        if data:
            b = bytes(data)  # no copy for bytes; a mutable buffer is snapshotted
            self._chunks.append(b)
            self._size += len(b)

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet returned as frames."""
        return self._size

    def _fail(self, kind: str, message: str) -> MuxProtocolError:
        err = MuxProtocolError(message, kind)
        self._error = err
        return err

    def _take(self, n: int) -> bytes:
        """Remove and return the next ``n`` (<= buffered) undecoded bytes, copying them once."""
        chunks = self._chunks
        first = chunks[0]
        pos = self._pos
        end = pos + n
        if end < len(first):
            self._pos = end
            return first[pos:end]
        if end == len(first):
            chunks.popleft()
            self._pos = 0
            return first[pos:] if pos else first
        parts: list[memoryview] = [memoryview(first)[pos:]]
        chunks.popleft()
        need = n - (len(first) - pos)
        while True:
            nxt = chunks[0]
            if len(nxt) > need:
                parts.append(memoryview(nxt)[:need])
                self._pos = need
                break
            parts.append(memoryview(nxt))
            chunks.popleft()
            need -= len(nxt)
            if not need:
                self._pos = 0
                break
        return b"".join(parts)

    def _peek_header(self) -> tuple[int, int, int, int]:
        first = self._chunks[0]
        pos = self._pos
        if len(first) - pos >= HEADER_SIZE:
            return _HEADER_UNPACK_FROM(first, pos)
        head = first[pos:]
        it = iter(self._chunks)
        next(it)
        for c in it:  # the header spans pieces (at most 8, each non-empty)
            head += c[: HEADER_SIZE - len(head)]
            if len(head) >= HEADER_SIZE:
                break
        return _HEADER_UNPACK_FROM(head)

    def next_frame(self) -> SmuxFrame | None:
        """Return the next complete frame, ``None`` if more bytes are needed; raise on garbage."""
        if self._error is not None:
            raise self._error
        avail = self._size
        if avail < HEADER_SIZE:
            return None
        ver, cmd, length, sid = self._peek_header()
        if ver != self.version:
            hint = ""
            if _HEADER_PACK(ver, cmd, length, sid) == _SNAPPY_STREAM_START:
                hint = " (the peer compresses the stream with snappy, e.g. kcptun without --nocomp; not supported)"
            message = f"frame version {ver}, session speaks version {self.version}{hint}"
            raise self._fail("bad_version", message)
        if cmd == CMD_PSH:
            pass
        elif cmd == CMD_UPD:
            if self.version < 2:
                raise self._fail("bad_cmd", "UPD frame in a version 1 session")
            if length != UPD_PAYLOAD_SIZE:
                raise self._fail("bad_length", f"UPD frame with length {length}, expected 8")
        elif cmd in (CMD_SYN, CMD_FIN, CMD_NOP):
            if length:
                raise self._fail("bad_length", f"{CMD_NAMES[cmd]} frame with payload length {length}")
        else:
            raise self._fail("bad_cmd", f"unknown smux command {cmd}")
        total = HEADER_SIZE + length
        if avail < total:
            return None
        self._size = avail - total
        first = self._chunks[0]
        pos = self._pos
        if pos + total <= len(first):  # the common case: the whole frame inside one piece
            end = pos + total
            data = first[pos + HEADER_SIZE : end] if length else b""
            if end == len(first):
                self._chunks.popleft()
                self._pos = 0
            else:
                self._pos = end
        else:
            self._take(HEADER_SIZE)
            data = self._take(length) if length else b""
        return SmuxFrame(ver, cmd, sid, data)

    def decode_all(self) -> list[SmuxFrame]:
        """Return every complete frame buffered so far (raises on garbage)."""
        out: list[SmuxFrame] = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out


def decode_frames(data: bytes, version: int) -> tuple[list[SmuxFrame], bytes]:
    """Decode a whole buffer: return the complete frames and the unconsumed tail."""
    dec = SmuxFrameDecoder(version)
    dec.feed(data)
    frames = dec.decode_all()
    return frames, dec._take(dec._size) if dec._size else b""
