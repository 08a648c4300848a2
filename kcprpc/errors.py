"""Error types of the ``kcprpc`` package.

* :class:`RpcError` is an *expected* call failure carrying a :class:`~kcprpc.status.Status`, a
  message and optional details. Handlers raise it to fail a call with a chosen status; clients
  catch it. It is the only error that crosses the wire.
* :class:`UsageError` is misuse by the local caller (bad arguments, a bad service definition).
* :class:`ProtocolError` is a peer that sent something we cannot accept; the connection is closed
  and the error is never raised out of a receive loop.
"""

from __future__ import annotations

from typing import Any

from kcprpc.status import Status


class KcpRpcError(Exception):
    """Base class of every error raised on purpose by ``kcprpc``."""


class RpcError(KcpRpcError):
    """A call failed with ``status``; ``details`` is any msgpack-able value (e.g. pydantic's error list)."""

    def __init__(
        self,
        status: Status,
        message: str = "",
        details: Any = None,
        *,
        trailing_metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status, message, details)
        self.status = Status(status)
        self.message = message
        self.details = details
        self.trailing_metadata: dict[str, Any] = trailing_metadata or {}

    def __str__(self) -> str:
        return f"{self.status.name}: {self.message}" if self.message else self.status.name

    def __repr__(self) -> str:
        return f"RpcError({self.status.name}, {self.message!r}, details={self.details!r})"


class UsageError(KcpRpcError, ValueError):
    """The caller used the API wrongly (bad service definition, bad argument, wrong state)."""


class ProtocolError(KcpRpcError):
    """The peer sent a frame that violates the RPC wire format."""


def no_answer(address: Any, timeout: float) -> str:
    """The message of a connect that got no WELCOME in time (a compat dial has no handshake, so this
    is where it learns that nobody answers): who did not answer, and what to check."""
    where = "the server"
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        where = f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return (
        f"no answer from {where} within {timeout:g} s: is the server running and reachable over UDP "
        "(address, port, firewall), with the same wire mode, key and FEC?"
    )


def shown(name: str, limit: int = 100) -> str:
    """A name a client sent, as an error message shows it: its ``repr``, cut to ``limit``
    characters (an unknown method or topic of megabytes made a reply of megabytes, four times its
    size for control characters: an audit)."""
    if len(name) <= limit:
        return repr(name)
    return f"{name[:limit]!r}... ({len(name)} characters)"
