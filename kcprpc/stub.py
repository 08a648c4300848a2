"""The runtime object behind ``client.stub(Service)``: one callable per method of the service.

A :class:`Stub` is built once per service class (and cached by the client when it has no options).
Its unary methods go straight to the ``unary`` callable the client hands it (the hot path: no call
object); the other kinds go through the client's public ``invoke`` and ``notify``
(:class:`StubHost`).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import Any, Protocol, cast

from kcprpc.calls import StreamCall
from kcprpc.service import MethodKind, MethodSpec, service_spec

__all__ = ["Stub", "StubHost", "UnaryFn"]

UnaryFn = Callable[[MethodSpec, Any, float | None, Mapping[str, Any] | None, None], Awaitable[Any]]
"""``unary(spec, request, timeout, metadata, None)``: one unary call, through the client interceptors."""


class StubHost(Protocol):
    """The client's methods a stub uses for the kinds other than unary."""

    def invoke(
        self,
        method: MethodSpec,
        request: Any = None,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any: ...

    def notify(
        self, method: MethodSpec, message: Any, *, metadata: Mapping[str, Any] | None = None
    ) -> None: ...


class Stub:
    """Runtime object behind ``client.stub(Service)``."""

    def __init__(
        self,
        host: StubHost,
        unary: UnaryFn,
        cls: type,
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        spec = service_spec(cls)
        self.__service__ = spec
        for attr, m in spec.methods.items():
            setattr(self, attr, self._make(host, unary, m, timeout, metadata))

    @staticmethod
    def _make(
        host: StubHost, unary_fn: UnaryFn, m: MethodSpec, timeout: float | None, md: Mapping[str, Any] | None
    ) -> Any:
        pack = m.pack
        if m.kind is MethodKind.UNARY:  # the hot path: no call object
            if m.arg_names is not None:

                async def unary_args(*args: Any, **kwargs: Any) -> Any:
                    return await unary_fn(m, pack(args, kwargs), timeout, md, None)

                return unary_args

            async def unary(request: Any = None) -> Any:
                return await unary_fn(m, request, timeout, md, None)

            return unary
        if m.kind.streams_requests:  # client streaming (awaitable) or bidi (a StreamCall)

            def streaming(requests: AsyncIterable[Any]) -> Any:
                return host.invoke(m, requests, timeout=timeout, metadata=md)

            return streaming
        if m.kind is MethodKind.SERVER_STREAM:

            def server_stream(*args: Any, **kwargs: Any) -> StreamCall[Any]:
                return cast(StreamCall[Any], host.invoke(m, pack(args, kwargs), timeout=timeout, metadata=md))

            return server_stream

        async def notify(*args: Any, **kwargs: Any) -> None:
            host.notify(m, pack(args, kwargs), metadata=md)

        return notify
