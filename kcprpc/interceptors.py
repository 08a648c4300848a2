"""Interceptors (middleware) for servers and clients.

Server interceptor::

    async def auth(ctx: ServerContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        if ctx.metadata.get("token") != "s3cret":
            raise RpcError(Status.UNAUTHENTICATED, "bad token")
        return await call_next()

``call_next()`` runs the rest of the chain and the handler. For unary and client-streaming
methods it returns the response object; for streaming responses it returns ``None`` once the
stream is finished. Interceptors see validated requests only through the handler; they see the
method (``ctx.method``, ``ctx.spec``), the metadata, and can set trailing metadata.

Client interceptor::

    async def add_token(details: ClientCallDetails, call_next) -> Any:
        details.metadata["token"] = "s3cret"
        return await call_next(details)

For unary and client-streaming calls ``call_next`` returns the response; for server-streaming and
bidi calls it returns once the call is started (the call object), so interceptors can rewrite
metadata and timeouts or refuse the call, and time it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kcprpc.context import ServerContext
    from kcprpc.service import MethodSpec

ServerInterceptor = Callable[["ServerContext", Callable[[], Awaitable[Any]]], Awaitable[Any]]


@dataclass
class ClientCallDetails:
    """What a client interceptor may inspect and change before a call goes out."""

    method: MethodSpec
    request: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None

    @property
    def wire_name(self) -> str:
        """``"<service>/<method>"``."""
        return self.method.wire_name


ClientInterceptor = Callable[
    [ClientCallDetails, Callable[[ClientCallDetails], Awaitable[Any]]], Awaitable[Any]
]


def chain_server(
    interceptors: Sequence[ServerInterceptor], ctx: ServerContext, last: Callable[[], Awaitable[Any]]
) -> Awaitable[Any]:
    """Run ``interceptors`` around ``last`` (the first interceptor is the outermost)."""
    call = last
    for ic in reversed(interceptors):
        call = _bind_server(ic, ctx, call)
    return call()


def _bind_server(
    ic: ServerInterceptor, ctx: ServerContext, nxt: Callable[[], Awaitable[Any]]
) -> Callable[[], Awaitable[Any]]:
    def run() -> Awaitable[Any]:
        return ic(ctx, nxt)

    return run


def chain_client(
    interceptors: Sequence[ClientInterceptor],
    details: ClientCallDetails,
    last: Callable[[ClientCallDetails], Awaitable[Any]],
) -> Awaitable[Any]:
    """Run client ``interceptors`` around ``last``."""
    call = last
    for ic in reversed(interceptors):
        call = _bind_client(ic, call)
    return call(details)


def _bind_client(
    ic: ClientInterceptor, nxt: Callable[[ClientCallDetails], Awaitable[Any]]
) -> Callable[[ClientCallDetails], Awaitable[Any]]:
    def run(d: ClientCallDetails) -> Awaitable[Any]:
        return ic(d, nxt)

    return run
