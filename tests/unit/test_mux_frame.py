"""smux frame codec: exact bytes per frame type (v1 and v2), round trips, decoder strictness.

Layout (smux frame.go, rawHeader): byte 0 version, byte 1 cmd, bytes 2-3 length (u16 LE),
bytes 4-7 stream id (u32 LE), then the payload. Commands: SYN=0 FIN=1 PSH=2 NOP=3, UPD=4 (v2),
and the UPD payload is consumed u32 LE followed by window u32 LE (updHeader).
"""

from __future__ import annotations

import pytest

from kcprpc.mux import MuxConfig, MuxProtocolError, MuxUsageError
from kcprpc.mux.frame import (
    CMD_FIN,
    CMD_NOP,
    CMD_PSH,
    CMD_SYN,
    CMD_UPD,
    SmuxFrame,
    SmuxFrameDecoder,
    decode_frames,
    encode_frame,
    encode_header,
    encode_upd,
    unpack_upd,
)

# (version, cmd, sid, payload, expected wire bytes, why)
EXACT = [
    # v1 SYN opening client stream 3: ver=01 cmd=00 len=0000 sid=03000000 (LE)
    (1, CMD_SYN, 3, b"", "01 00 0000 03000000"),
    # v1 FIN on server stream 2: cmd=01
    (1, CMD_FIN, 2, b"", "01 01 0000 02000000"),
    # v1 PSH "hello" on stream 3: cmd=02, len=5 as u16 LE = 05 00, payload follows the header
    (1, CMD_PSH, 3, b"hello", "01 02 0500 03000000 68656c6c6f"),
    # v1 NOP keepalive: cmd=03, stream id 0, no payload (smux keepalive() sends exactly this)
    (1, CMD_NOP, 0, b"", "01 03 0000 00000000"),
    # v2 SYN: the version byte is 02, the rest as v1
    (2, CMD_SYN, 0x01020304, b"", "02 00 0000 04030201"),
    (2, CMD_FIN, 0xFFFFFFFF, b"", "02 01 0000 ffffffff"),
    # v2 PSH with a 0x1234-byte payload: length bytes 34 12 (little-endian)
    (2, CMD_PSH, 5, b"\xab" * 0x1234, "02 02 3412 05000000" + "ab" * 0x1234),
    (2, CMD_NOP, 0, b"", "02 03 0000 00000000"),
]


@pytest.mark.parametrize(("version", "cmd", "sid", "payload", "wire"), EXACT)
def test_exact_bytes(version: int, cmd: int, sid: int, payload: bytes, wire: str) -> None:
    expected = bytes.fromhex(wire.replace(" ", ""))
    assert encode_frame(version, cmd, sid, payload) == expected
    frames, rest = decode_frames(expected, version)
    assert rest == b""
    assert frames == [SmuxFrame(version, cmd, sid, payload)]


def test_upd_exact_bytes() -> None:
    # v2 UPD on stream 3: cmd=04, len=8, then consumed=0x10 and window=65536 (00 00 01 00), both u32 LE.
    wire = encode_upd(2, 3, 0x10, 65536)
    assert wire == bytes.fromhex("02 04 0800 03000000 10000000 00000100".replace(" ", ""))
    (frame,), _ = decode_frames(wire, 2)
    assert frame.cmd == CMD_UPD
    assert frame.upd == (0x10, 65536)
    assert unpack_upd(frame.data) == (0x10, 65536)


def test_header_alone_matches_frame_prefix() -> None:
    assert encode_header(1, CMD_PSH, 7, 300) == encode_frame(1, CMD_PSH, 7, b"x" * 300)[:8]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3, CMD_SYN, 1, b""), "version"),
        ((1, CMD_UPD, 1, b"12345678"), "invalid command"),
        ((1, 9, 1, b""), "invalid command"),
        ((1, CMD_PSH, 1 << 32, b""), "u32"),
        ((1, CMD_PSH, 1, b"x" * 65536), "exceeds"),
        ((1, CMD_SYN, 1, b"x"), "no payload"),
        ((2, CMD_UPD, 1, b"1234"), "exactly 8"),
    ],
)
def test_encode_rejects_what_smux_cannot_carry(args: tuple[int, int, int, bytes], message: str) -> None:
    with pytest.raises(MuxUsageError, match=message):
        encode_frame(*args)


def test_encode_upd_rejects_v1_and_out_of_range() -> None:
    with pytest.raises(MuxUsageError):
        encode_upd(1, 1, 0, 0)
    with pytest.raises(MuxUsageError):
        encode_upd(2, 1, 1 << 32, 0)


def test_decoder_any_chunking_gives_same_frames() -> None:
    frames = [
        SmuxFrame(2, CMD_SYN, 3),
        SmuxFrame(2, CMD_PSH, 3, bytes(range(256)) * 10),
        SmuxFrame(2, CMD_UPD, 3, encode_upd(2, 3, 1, 2)[8:]),
        SmuxFrame(2, CMD_NOP, 0),
        SmuxFrame(2, CMD_PSH, 3, b"z"),
        SmuxFrame(2, CMD_FIN, 3),
    ]
    wire = b"".join(f.encode() for f in frames)
    for step in (1, 2, 3, 7, 8, 9, 100, len(wire)):
        dec = SmuxFrameDecoder(2)
        got: list[SmuxFrame] = []
        for i in range(0, len(wire), step):
            dec.feed(wire[i : i + step])
            got.extend(dec.decode_all())
        assert got == frames
        assert dec.buffered == 0


def test_decoder_partial_frame_waits() -> None:
    wire = encode_frame(1, CMD_PSH, 3, b"abcdef")
    dec = SmuxFrameDecoder(1)
    dec.feed(wire[:10])
    assert dec.next_frame() is None
    assert dec.buffered == 10
    dec.feed(wire[10:])
    assert dec.next_frame() == SmuxFrame(1, CMD_PSH, 3, b"abcdef")


@pytest.mark.parametrize(
    ("version", "wire", "kind"),
    [
        (1, "02 02 0000 01000000", "bad_version"),  # a v2 frame in a v1 session (smux: ErrInvalidProtocol)
        (2, "01 00 0000 01000000", "bad_version"),
        (1, "01 05 0000 01000000", "bad_cmd"),  # unknown command 5
        (1, "01 04 0800 01000000 0000000000000000", "bad_cmd"),  # UPD does not exist in v1
        (2, "02 04 0400 01000000 00000000", "bad_length"),  # UPD must carry exactly 8 bytes
        (1, "01 00 0100 01000000 00", "bad_length"),  # SYN with a payload would desync smux
        (1, "01 03 0200 00000000 0000", "bad_length"),  # NOP with a payload
    ],
)
def test_decoder_rejects_garbage(version: int, wire: str, kind: str) -> None:
    dec = SmuxFrameDecoder(version)
    dec.feed(bytes.fromhex(wire.replace(" ", "")))
    with pytest.raises(MuxProtocolError) as info:
        dec.next_frame()
    assert info.value.kind == kind
    # the decoder stays failed: a byte stream cannot be resynchronised
    with pytest.raises(MuxProtocolError):
        dec.next_frame()


def test_decoder_rejects_bad_header_before_the_payload_arrives() -> None:
    dec = SmuxFrameDecoder(1)
    dec.feed(bytes.fromhex("0109ffff00000000"))
    with pytest.raises(MuxProtocolError):
        dec.next_frame()


def test_config_defaults_match_smux_default_config() -> None:
    cfg = MuxConfig()
    assert cfg.version == 1
    assert cfg.keepalive_interval == 10.0
    assert cfg.keepalive_timeout == 30.0
    assert cfg.max_frame_size == 32768
    assert cfg.max_receive_buffer == 4 * 1024 * 1024
    assert cfg.max_stream_buffer == 65536


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": 3}, "version"),
        pytest.param(
            {"version": True},
            "version",
            marks=pytest.mark.pure_only(
                reason="compiled build: mypyc reads a bool given for an int as an int"
            ),
        ),
        ({"keepalive_interval": 0}, "keepalive_interval must be positive"),
        ({"keepalive_interval": 10, "keepalive_timeout": 5}, "keepalive_timeout"),
        ({"keepalive_interval": float("nan")}, "finite"),
        ({"max_frame_size": 0}, "max_frame_size"),
        ({"max_frame_size": 65536}, "65535"),
        ({"max_receive_buffer": -1}, "max_receive_buffer"),
        ({"max_receive_buffer": 1 << 31}, "int32"),
        ({"max_stream_buffer": 0}, "max_stream_buffer"),
        ({"max_stream_buffer": 8 << 20}, "larger than max_receive_buffer"),
        ({"max_streams": 0}, "max_streams"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(MuxUsageError, match=message) as info:
        MuxConfig(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_config_of_the_wrong_type_is_a_type_error_in_both_builds() -> None:
    # the pure build raises MuxTypeError (a MuxUsageError and a TypeError); the compiled one, mypyc's
    # own check of the annotated type, a plain TypeError
    with pytest.raises(TypeError, match=r"stream_send_buffer|int"):
        MuxConfig(stream_send_buffer=1.5)  # type: ignore[arg-type]


def test_config_keepalive_disabled_skips_interval_checks() -> None:
    MuxConfig(keepalive_disabled=True, keepalive_interval=0, keepalive_timeout=0)
