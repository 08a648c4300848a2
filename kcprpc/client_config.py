"""A client's behaviour: :class:`ClientConfig` (framing, timeouts, heartbeats, reconnects, receive limits)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kcp.fieldcheck import check_fields
from kcprpc import codec
from kcprpc.errors import UsageError
from kcprpc.heartbeat import HeartbeatConfig, ReconnectPolicy
from kcprpc.receive_settings import ReceiveSettings

__all__ = ["ClientConfig"]


@dataclass(frozen=True)
class ClientConfig(ReceiveSettings):
    """Client behaviour. ``unary_framing``: ``"shared"`` sends unary calls on the control stream with
    call ids (cheap), ``"stream"`` opens a mux stream per call. ``stream_framing`` is the same choice
    for streaming calls (own streams give per-call flow control)."""

    max_message_size: int = codec.DEFAULT_MAX_MESSAGE_SIZE
    heartbeat: HeartbeatConfig | None = field(
        default_factory=lambda: HeartbeatConfig(interval=1.0, timeout=5.0)
    )
    reconnect: ReconnectPolicy | None = None
    unary_framing: Literal["shared", "stream"] = "shared"
    stream_framing: Literal["shared", "stream"] = "stream"
    default_timeout: float | None = None
    connect_timeout: float = 5.0
    metadata: Mapping[str, Any] = field(default_factory=dict)
    wait_for_ready: bool = False  # calls made while (re)connecting wait for the link (up to their timeout)
    # -- receive-side memory per connection, as the server's (docs/rpc.md, "Flow control and memory"):
    # decoded messages held unread (None: 8 MiB, at least 2 * max_message_size); frames received in
    # part (None: max_message_size + 9 + 256 KiB); a partial frame with no new byte for this long is
    # dropped (None: never)
    max_decoded_bytes: int | None = None
    max_partial_frame_bytes: int | None = None
    partial_frame_timeout: float | None = 10.0

    def __post_init__(self) -> None:
        check_fields(self, UsageError)
        if self.max_message_size <= 0:
            raise UsageError(f"ClientConfig.max_message_size must be positive, not {self.max_message_size}")
        if self.connect_timeout <= 0:
            raise UsageError(f"ClientConfig.connect_timeout must be positive, not {self.connect_timeout}")
        if self.default_timeout is not None and self.default_timeout <= 0:
            raise UsageError(f"ClientConfig.default_timeout must be positive, not {self.default_timeout}")
        self.receive_limits()
