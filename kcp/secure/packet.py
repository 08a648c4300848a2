"""Wire format of secure mode: packet types, headers, handshake payload TLVs and frames.

Every datagram starts with a type byte. Handshake packets:

* INITIATION ``0xC1``: version(1) suite(1) pattern(1) sender_cid(8) noise_len(2) noise_msg1,
  zero padding up to the fixed initiation size, mac1(16), mac2(16).
* RESPONSE ``0xC2``: reserved(1) receiver_cid(8) noise_msg2.
* RETRY ``0xC3``: reserved(1) receiver_cid(8) sealed_cookie(44).
* HINT ``0xC4`` (unauthenticated advice, :mod:`kcp.wirehint`): hint version(1) code(1) detail(1)
  echo(16), the first 16 bytes of the datagram it answers.

Transport packets ``0xC8 | key_phase``: dst_cid(8) packet_number(8, big-endian) then the AEAD
ciphertext of one frame, with the 17 header bytes as associated data.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

from kcp.wirehint import T_HINT as T_HINT  # the secure wire's packet types in one place

from .errors import DecodeError

T_INITIATION: Final = 0xC1
T_RESPONSE: Final = 0xC2
T_RETRY: Final = 0xC3
T_TRANSPORT: Final = 0xC8  # | key phase bit
TRANSPORT_TYPES: Final = frozenset((T_TRANSPORT, T_TRANSPORT | 1))

WIRE_VERSION: Final = 1
CID_LEN: Final = 8
PN_LEN: Final = 8
TRANSPORT_HEADER: Final = 1 + CID_LEN + PN_LEN  # 17
TAG_LEN: Final = 16
MIN_TRANSPORT: Final = TRANSPORT_HEADER + TAG_LEN + 1
INIT_HEADER: Final = 1 + 1 + 1 + 1 + CID_LEN  # 12
INIT_FIXED: Final = INIT_HEADER + 2 + 32  # header, noise length, mac1 + mac2
RESP_HEADER: Final = 1 + 1 + CID_LEN  # 10
RETRY_HEADER: Final = 1 + 1 + CID_LEN
PROLOGUE_LABEL: Final = b"kcprpc secure v1"

PATTERN_IKPSK2: Final = 1
PATTERN_NNPSK0: Final = 2
PATTERN_NAMES = {PATTERN_IKPSK2: "IKpsk2", PATTERN_NNPSK0: "NNpsk0"}


class Reason(IntEnum):
    """Reason codes carried by refusals and CLOSE/GOAWAY frames."""

    NONE = 0
    VERSION_MISMATCH = 1
    SUITE_REFUSED = 2
    PARAMS_REFUSED = 3
    BAD_TOKEN = 4
    SERVER_BUSY = 5
    PROTOCOL_ERROR = 6
    APPLICATION = 7
    IDLE_TIMEOUT = 8
    GOING_AWAY = 9
    INTERNAL = 10
    STATELESS_RESET = 11


def reason_name(code: int) -> str:
    """A readable name for a reason code (unknown codes print as numbers)."""
    try:
        return Reason(code).name.lower().replace("_", " ")
    except ValueError:
        return f"reason {code}"


# ------------------------------------------------------------------------------------------ frames

F_DATA: Final = 0x00
F_PING: Final = 0x01
F_PATH_CHALLENGE: Final = 0x02
F_PATH_RESPONSE: Final = 0x03
F_CLOSE: Final = 0x04
F_GOAWAY: Final = 0x05
F_PING_ACK: Final = 0x06  # probe id (8): answers a PING that carries one (an MTU probe or a keepalive)
F_DATA_PART: Final = 0x07  # message id (4) | index (1) | count (1) | piece: a DATA payload in pieces
PROBE_ID_LEN: Final = 8
KEEPALIVE_PROBE: Final = 1 << 63
"""A probe id with this bit set is a keepalive (:meth:`kcp.KCPSession.ping`), without it an MTU probe.
Only the sender reads the bit: the peer answers every PING that carries an id the same way."""
PART_HEADER: Final = 4 + 1 + 1  # message id, index, count
PART_OVERHEAD: Final = (
    TRANSPORT_HEADER + 1 + PART_HEADER + TAG_LEN
)  # 40: a DATA_PART datagram's bytes around its piece
MAX_PARTS: Final = 16  # the most pieces of one payload
MIN_PROBE: Final = TRANSPORT_HEADER + 1 + PROBE_ID_LEN + TAG_LEN  # the smallest PING that carries a probe id
MAX_REASON_TEXT: Final = 512


def encode_reason_frame(frame_type: int, code: int, message: str) -> bytes:
    """CLOSE or GOAWAY: type(1) code(2) utf-8 message (cut to 512 bytes)."""
    text = message.encode("utf-8", "replace")[:MAX_REASON_TEXT]
    return bytes((frame_type,)) + struct.pack(">H", code & 0xFFFF) + text


def decode_reason_frame(body: bytes) -> tuple[int, str]:
    """(code, message) of a CLOSE/GOAWAY body (after the type byte)."""
    if len(body) < 2:
        raise DecodeError("short reason frame")
    return struct.unpack_from(">H", body)[0], body[2:].decode("utf-8", "replace")


# ------------------------------------------------------------------------------------------ TLV

# handshake payload tags
TAG_VERSIONS: Final = 1  # client: list of u8; server: chosen u8 (or supported list on refusal)
TAG_SUITES: Final = 2  # list of u8 suite ids
TAG_MTU: Final = 3  # u16
TAG_WINDOWS: Final = 4  # snd u16, rcv u16
TAG_FEC: Final = 5  # data u8, parity u8, strict u8
TAG_MUX: Final = 6  # list of u8
TAG_TOKEN: Final = 7  # bytes
TAG_STATUS: Final = 8  # u8 reason (0 = accepted)
TAG_MESSAGE: Final = 9  # utf-8
TAG_CID: Final = 10  # server's connection id (8)
TAG_RESET: Final = 11  # stateless reset token for the server's connection id (16)
TAG_FEATURES: Final = 12  # u8 bit set: the client's offer; in the answer, what both ends use
FEATURE_DATA_PARTS: Final = 0x01  # DATA_PART frames (a payload larger than the path MTU in pieces)
FEATURE_HELD_ACKS: Final = 0x02  # a KCP ACK's frg says its sender holds lone acks (docs/wire-format/kcp.md)
FEATURE_ACK_REPEAT: Final = 0x04  # KCP REACK segments repeat out-of-order ACKs (docs/wire-format/kcp.md)
RESET_TOKEN_LEN: Final = 16
MIN_RESET_TRIGGER: Final = MIN_TRANSPORT + 1  # a reset is always smaller than what triggered it
MAX_RESET: Final = 64


def encode_tlv(items: list[tuple[int, bytes]]) -> bytes:
    """tag(1) length(2, big-endian) value, repeated."""
    out = bytearray()
    for tag, value in items:
        if len(value) > 0xFFFF:
            raise ValueError("TLV value too long")
        out += struct.pack(">BH", tag, len(value)) + value
    return bytes(out)


def decode_tlv(data: bytes) -> dict[int, bytes]:
    """Parse TLVs; the first value of a repeated tag wins, unknown tags are kept (and ignored by callers)."""
    out: dict[int, bytes] = {}
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < 3:
            raise DecodeError("truncated TLV header")
        tag, length = struct.unpack_from(">BH", data, pos)
        pos += 3
        if n - pos < length:
            raise DecodeError("truncated TLV value")
        out.setdefault(tag, bytes(data[pos : pos + length]))
        pos += length
    return out


def tlv_u8(items: dict[int, bytes], tag: int) -> int | None:
    v = items.get(tag)
    if v is None:
        return None
    if len(v) != 1:
        raise DecodeError(f"TLV {tag}: expected 1 byte")
    return v[0]


def tlv_u16s(items: dict[int, bytes], tag: int, count: int) -> tuple[int, ...] | None:
    v = items.get(tag)
    if v is None:
        return None
    if len(v) != 2 * count:
        raise DecodeError(f"TLV {tag}: expected {2 * count} bytes")
    return struct.unpack(f">{count}H", v)


def peek_cid(datagram: bytes) -> bytes | None:
    """The destination connection id of a transport packet, or None for anything else."""
    if len(datagram) >= MIN_TRANSPORT and datagram[0] in TRANSPORT_TYPES:
        return bytes(datagram[1 : 1 + CID_LEN])
    return None
