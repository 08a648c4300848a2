"""The per-call context handlers and interceptors see: :func:`current_context`."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kcprpc.errors import UsageError
from kcprpc.service import MethodSpec

if TYPE_CHECKING:
    from kcprpc.server_session import ServerCall, ServerHost, ServerSession

_current: contextvars.ContextVar[ServerContext] = contextvars.ContextVar("kcprpc_server_context")


def set_current(ctx: ServerContext) -> contextvars.Token[ServerContext]:
    """Make ``ctx`` the context of the task running (the server does this for each handler)."""
    return _current.set(ctx)


def reset_current(token: contextvars.Token[ServerContext]) -> None:
    """Undo a :func:`set_current`."""
    _current.reset(token)


def current_context() -> ServerContext:
    """The :class:`ServerContext` of the call being handled (inside a handler or interceptor)."""
    try:
        return _current.get()
    except LookupError:
        raise UsageError("current_context() called outside an RPC handler") from None


class ServerContext:
    """Per-call information for handlers and interceptors (see :func:`current_context`)."""

    __slots__ = (
        "_call",
        "_initial_md",
        "_trailing_md",
        "deadline",
        "metadata",
        "method",
        "request",
        "session",
        "spec",
    )

    def __init__(
        self,
        spec: MethodSpec,
        metadata: dict[str, Any],
        session: ServerSession,
        deadline: float | None,
        call: ServerCall | None,
    ) -> None:
        self.spec = spec
        self.method = spec.wire_name
        self.metadata = metadata
        self.session = session
        self.deadline = deadline
        self._call = call
        self.request: Any = None
        """The validated request of a unary or server-streaming call (None for a client-streaming
        one, whose requests arrive later): interceptors may authorize on it."""
        self._initial_md: dict[str, Any] | None = None
        self._trailing_md: dict[str, Any] | None = None

    def time_remaining(self) -> float | None:
        """Seconds until the deadline, or None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def set_trailing_metadata(self, md: Mapping[str, Any]) -> None:
        """Metadata sent with the final status."""
        self._trailing_md = {**(self._trailing_md or {}), **md}

    def set_initial_metadata(self, md: Mapping[str, Any]) -> None:
        """Metadata sent before the first response message."""
        self._initial_md = {**(self._initial_md or {}), **md}

    @property
    def peer(self) -> Any:
        """Remote address of the connection."""
        return self.session.remote_address

    @property
    def server(self) -> ServerHost:
        """The server handling the call."""
        return self.session.server
