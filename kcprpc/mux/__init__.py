"""smux-compatible stream multiplexer (protocol versions 1 and 2).

``frame`` is the codec, ``core`` the sans-I/O session state machine, ``session`` the asyncio
:class:`MuxSession`/:class:`MuxStream`, ``testing`` the in-memory pipe and session pair.
"""

from __future__ import annotations

from .core import MuxConfig, MuxConnection
from .errors import (
    MuxClosedError,
    MuxError,
    MuxKeepaliveTimeoutError,
    MuxProtocolError,
    MuxStreamClosedError,
    MuxUsageError,
)
from .frame import CMD_FIN, CMD_NOP, CMD_PSH, CMD_SYN, CMD_UPD, Frame, FrameDecoder
from .session import ByteTransport, MuxSession, MuxStream

__all__ = [
    "CMD_FIN",
    "CMD_NOP",
    "CMD_PSH",
    "CMD_SYN",
    "CMD_UPD",
    "ByteTransport",
    "Frame",
    "FrameDecoder",
    "MuxClosedError",
    "MuxConfig",
    "MuxConnection",
    "MuxError",
    "MuxKeepaliveTimeoutError",
    "MuxProtocolError",
    "MuxSession",
    "MuxStream",
    "MuxStreamClosedError",
    "MuxUsageError",
]
