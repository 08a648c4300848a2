"""smux-compatible stream multiplexer (protocol versions 1 and 2).

``frame`` is the codec (:class:`SmuxFrame`, :class:`SmuxFrameDecoder`), ``state`` the named
stream and session states with their transition tables, ``core`` the sans-I/O session state machine
(:class:`MuxCore`), ``session`` the asyncio :class:`MuxSession`/:class:`MuxStream` around it,
``testing`` the in-memory pipe and session pair.
"""

from __future__ import annotations

from .core import MuxConfig, MuxCore
from .errors import (
    MuxClosedError,
    MuxError,
    MuxKeepaliveTimeoutError,
    MuxProtocolError,
    MuxStreamClosedError,
    MuxTypeError,
    MuxUsageError,
)
from .frame import CMD_FIN, CMD_NOP, CMD_PSH, CMD_SYN, CMD_UPD, SmuxFrame, SmuxFrameDecoder
from .session import ByteTransport, MuxSession, MuxStream
from .state import SessionState, StreamState

__all__ = [
    "CMD_FIN",
    "CMD_NOP",
    "CMD_PSH",
    "CMD_SYN",
    "CMD_UPD",
    "ByteTransport",
    "MuxClosedError",
    "MuxConfig",
    "MuxCore",
    "MuxError",
    "MuxKeepaliveTimeoutError",
    "MuxProtocolError",
    "MuxSession",
    "MuxStream",
    "MuxStreamClosedError",
    "MuxTypeError",
    "MuxUsageError",
    "SessionState",
    "SmuxFrame",
    "SmuxFrameDecoder",
    "StreamState",
]
