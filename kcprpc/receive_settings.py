"""The receive-side fields a :class:`~kcprpc.ClientConfig` and a :class:`~kcprpc.ServerConfig`
share (:class:`ReceiveSettings`) and their effective values; :mod:`kcprpc.receive` enforces them.

Its own module, not compiled: the configs (frozen dataclasses) subclass :class:`ReceiveSettings`,
and interpreted classes cannot subclass the compiled build's native classes."""

from __future__ import annotations

from kcprpc.codec import HEADER_SIZE
from kcprpc.errors import UsageError

__all__ = ["DEFAULT_MAX_DECODED_BYTES", "PARTIAL_FRAME_SLACK", "ReceiveSettings", "receive_limit_defaults"]


DEFAULT_MAX_DECODED_BYTES = 8 * 1024 * 1024
"""``max_decoded_bytes`` when not set (or ``2 * max_message_size`` if that is larger)."""

PARTIAL_FRAME_SLACK = 256 * 1024
"""Room that ``max_partial_frame_bytes`` leaves by default beside one frame of ``max_message_size``:
the tails of small frames on other streams fit there while a large frame is in progress."""


class ReceiveSettings:
    """What :class:`~kcprpc.ClientConfig` and :class:`~kcprpc.ServerConfig` share: the fields
    that bound a connection's receive side, and their effective values."""

    max_message_size: int
    max_decoded_bytes: int | None
    max_partial_frame_bytes: int | None
    partial_frame_timeout: float | None

    def receive_limits(self) -> tuple[int, int]:
        """The effective ``(max_decoded_bytes, max_partial_frame_bytes)``."""
        return receive_limit_defaults(
            self.max_message_size,
            self.max_decoded_bytes,
            self.max_partial_frame_bytes,
            self.partial_frame_timeout,
        )


def receive_limit_defaults(
    max_message_size: int,
    max_decoded_bytes: int | None,
    max_partial_frame_bytes: int | None,
    partial_frame_timeout: float | None,
) -> tuple[int, int]:
    """The effective ``(max_decoded_bytes, max_partial_frame_bytes)`` of a server or client config
    (None: :data:`DEFAULT_MAX_DECODED_BYTES` or ``2 * max_message_size`` if larger, and
    ``max_message_size + 9 + 256 KiB``); raises :class:`~kcprpc.errors.UsageError` for values that could not admit one
    message of ``max_message_size``."""
    decoded = (
        max(DEFAULT_MAX_DECODED_BYTES, 2 * max_message_size)
        if max_decoded_bytes is None
        else max_decoded_bytes
    )
    partial = (
        max_message_size + HEADER_SIZE + PARTIAL_FRAME_SLACK
        if max_partial_frame_bytes is None
        else max_partial_frame_bytes
    )
    if decoded < max_message_size:
        raise UsageError("max_decoded_bytes must be at least max_message_size")
    if partial < max_message_size + HEADER_SIZE:
        raise UsageError("max_partial_frame_bytes must be at least max_message_size + 9 (one whole frame)")
    if partial_frame_timeout is not None and not partial_frame_timeout > 0:
        raise UsageError("partial_frame_timeout must be positive (or None)")
    return decoded, partial
