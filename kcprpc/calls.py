"""Client-side call objects: the state of one call, awaitable unary calls, iterable stream calls,
and the runtime object behind ``client.stub(Service)``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, Awaitable, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from pydantic import ValidationError

from kcprpc import codec
from kcprpc.codec import CANCEL, HEADERS, MSG, REPLY, TRAILER, Refused, encode_frame
from kcprpc.errors import RpcError
from kcprpc.interceptors import ClientCallDetails, chain_client
from kcprpc.service import MethodKind, MethodSpec, service_spec
from kcprpc.status import Status
from kcprpc.transport import INBOX_LIMIT, FrameWriter, Inbox

if TYPE_CHECKING:
    from kcprpc.client import Client, _Link

T = TypeVar("T")
R = TypeVar("R")

OVERFLOW_MESSAGE = "too many unread messages"


class _Trailer:
    __slots__ = ("error", "md")

    def __init__(self, error: RpcError | None, md: dict[str, Any] | None) -> None:
        self.error = error
        self.md = md


def _trailer_error(body: Any) -> tuple[RpcError | None, dict[str, Any] | None]:
    if not isinstance(body, list) or len(body) < 2:
        return RpcError(Status.INTERNAL, "malformed trailer"), None
    code = Status.from_wire(body[0])
    details = body[2] if len(body) > 2 else None
    md = body[3] if len(body) > 3 and isinstance(body[3], dict) else None
    if code is Status.OK:
        return None, md
    return RpcError(code, str(body[1]), details, trailing_metadata=md), md


def _bad_response(e: ValidationError) -> RpcError:
    """A response that does not validate against the method's type."""
    return RpcError(Status.INTERNAL, "response validation failed", e.errors(include_url=False))


class _ClientCall:
    """Client side state of one call (any kind)."""

    __slots__ = (
        "cid",
        "done",
        "fut",
        "initial_md",
        "link",
        "own",
        "queue",
        "spec",
        "timer",
        "trailing_md",
        "writer",
    )

    def __init__(self, link: _Link, cid: int, spec: MethodSpec, writer: FrameWriter, own: bool) -> None:
        self.link = link
        self.cid = cid
        self.spec = spec
        self.writer = writer
        self.own = own
        self.fut: asyncio.Future[Any] = link.loop.create_future()
        self.queue: Inbox | None = Inbox() if spec.streams_responses else None
        self.initial_md: dict[str, Any] | None = None
        self.trailing_md: dict[str, Any] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.done = False

    def on_frame(self, ftype: int, body: Any, cost: int = 0) -> bool:
        """One frame of this call; True when the call keeps ``cost`` (a queued message's decode
        budget, given back when it is taken)."""
        if body is codec.OVERSIZED:
            self.cancel(RpcError(Status.RESOURCE_EXHAUSTED, "response larger than max_message_size"))
            return False
        if ftype == REPLY:
            if isinstance(body, list) and len(body) == 3:
                self.initial_md = body[1]
                self.trailing_md = body[2]
                self._finish()
                if not self.fut.done():
                    self.fut.set_result(body[0])
            elif isinstance(body, Refused):  # a receive budget refused it (not decoded)
                self.cancel(RpcError(Status.RESOURCE_EXHAUSTED, body.reason))
            else:
                self.fail(RpcError(Status.INTERNAL, "malformed reply"))
        elif isinstance(body, Refused):
            self.cancel(RpcError(Status.RESOURCE_EXHAUSTED, body.reason))
        elif ftype == MSG:
            if self.queue is not None:
                if not self.own and self.queue.qsize() >= INBOX_LIMIT:
                    self.overflow()  # a shared-stream call cannot push back: refuse to buffer without end
                    return False
                if self.done:
                    return False  # failed or cancelled: nobody will read it
                self.queue.put(body, cost)
                return True
            elif not self.fut.done():
                self._finish()
                self.fut.set_result(body)
        elif ftype == TRAILER:
            err, md = _trailer_error(body)
            self.trailing_md = md
            if self.queue is not None:
                self._finish()
                self.queue.put(_Trailer(err, md))
                if not self.fut.done():
                    self.fut.set_result(None)
            elif err is not None:
                self.fail(err)
            else:
                self._finish()
                if not self.fut.done():
                    self.fut.set_exception(RpcError(Status.INTERNAL, "call ended without a response"))
        elif ftype == HEADERS and isinstance(body, dict):
            self.initial_md = {**(self.initial_md or {}), **body}
        return False

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        self.link.calls.pop(self.cid, None)
        if self.own:
            self.writer.close()

    def fail(self, err: RpcError) -> None:
        """End the call locally with ``err``."""
        if self.done:
            return
        self._finish()
        if self.queue is not None:
            self.queue.put(_Trailer(err, err.trailing_metadata or None))
        if not self.fut.done():
            self.fut.set_exception(err)
            self.fut.exception()  # mark retrieved: streaming calls may never await fut

    def cancel(self, err: RpcError) -> None:
        """Tell the server to stop, and fail locally."""
        if self.done:
            return
        self.writer.send(encode_frame(CANCEL, self.cid, None))
        self.fail(err)

    def overflow(self) -> None:
        """Too many unread messages and the stream cannot be paused: fail with RESOURCE_EXHAUSTED."""
        self.cancel(RpcError(Status.RESOURCE_EXHAUSTED, OVERFLOW_MESSAGE))

    def expire(self) -> None:
        self.timer = None
        self.cancel(RpcError(Status.DEADLINE_EXCEEDED, "deadline exceeded"))


class UnaryCall(Generic[R]):
    """A unary (or client-streaming) call: ``await`` it for the response; metadata after."""

    def __init__(self, run: Callable[[UnaryCall[R]], Awaitable[R]]) -> None:
        self._run = run
        self.initial_metadata: dict[str, Any] | None = None
        self.trailing_metadata: dict[str, Any] | None = None

    def __await__(self) -> Generator[Any, None, R]:
        return self._run(self).__await__()


class StreamCall(Generic[T]):
    """A server-streaming or bidi call: iterate it for the responses.

    Use ``async with`` (or :meth:`cancel`) to end it early; leaving the block cancels the server
    handler if the stream is not finished. Awaiting it starts it and returns it.
    """

    def __init__(
        self,
        client: Client,
        spec: MethodSpec,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
        requests: AsyncIterable[Any] | None = None,
    ) -> None:
        self._client = client
        self._spec = spec
        self._request = request
        self._requests = requests
        self._timeout = timeout
        self._metadata = metadata
        self._call: _ClientCall | None = None
        self._start_task: asyncio.Future[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._finished = False
        self.trailing_metadata: dict[str, Any] | None = None

    async def _start(self) -> None:
        if self._start_task is None:
            self._start_task = asyncio.ensure_future(self._do_start())
        await self._start_task

    async def _do_start(self) -> None:
        client = self._client

        async def last(details: ClientCallDetails) -> StreamCall[T]:
            self._call = await client._begin(
                details.method, details.request, details.timeout, details.metadata, self._requests is None
            )
            if self._requests is not None:
                self._sender = asyncio.ensure_future(client._send_requests(self._call, self._requests))
            return self

        details = ClientCallDetails(
            self._spec, self._request, dict(self._metadata or {}), client._timeout(self._timeout)
        )
        if client.interceptors:
            await chain_client(client.interceptors, details, last)
        else:
            await last(details)

    def __await__(self) -> Generator[Any, None, StreamCall[T]]:
        async def run() -> StreamCall[T]:
            await self._start()
            return self

        return run().__await__()

    def __aiter__(self) -> StreamCall[T]:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        if self._call is None:
            await self._start()
        call = self._call
        assert call is not None and call.queue is not None
        item = await call.queue.get()
        if isinstance(item, _Trailer):
            self._finished = True
            self.trailing_metadata = item.md
            if self._sender is not None:
                self._sender.cancel()
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        try:
            return cast(T, self._spec.load_response(item))
        except ValidationError as e:
            err = _bad_response(e)
            call.cancel(err)
            self._finished = True
            raise err from None

    @property
    def initial_metadata(self) -> dict[str, Any] | None:
        """Metadata the server sent before its messages."""
        return self._call.initial_md if self._call is not None else None

    def cancel(self) -> None:
        """Cancel the call (the server handler's task is cancelled)."""
        if self._call is not None:
            self._call.cancel(RpcError(Status.CANCELLED, "cancelled by the client"))
        if self._sender is not None:
            self._sender.cancel()
        self._finished = True

    async def __aenter__(self) -> StreamCall[T]:
        await self._start()
        return self

    def __del__(self) -> None:
        # an abandoned stream must not keep the server handler parked on a full window forever
        call = self._call
        if call is not None and not call.done:
            with contextlib.suppress(Exception):
                call.cancel(RpcError(Status.CANCELLED, "stream abandoned"))

    async def __aexit__(self, *exc: object) -> None:
        if self._call is not None and not self._call.done:
            self.cancel()


class _Stub:
    """Runtime object behind ``client.stub(Service)``."""

    def __init__(
        self, client: Client, cls: type, timeout: float | None, metadata: Mapping[str, Any] | None
    ) -> None:
        spec = service_spec(cls)
        self.__service__ = spec
        for attr, m in spec.methods.items():
            setattr(self, attr, self._make(client, m, timeout, metadata))

    @staticmethod
    def _make(client: Client, m: MethodSpec, timeout: float | None, md: Mapping[str, Any] | None) -> Any:
        pack = m.pack
        if m.kind is MethodKind.UNARY:  # the hot path: no call object
            if m.arg_names is not None:

                async def unary_args(*args: Any, **kwargs: Any) -> Any:
                    return await client._unary(m, pack(args, kwargs), timeout, md, None)

                return unary_args

            async def unary(request: Any = None) -> Any:
                return await client._unary(m, request, timeout, md, None)

            return unary
        if m.kind.streams_requests:  # client streaming (awaitable) or bidi (a StreamCall)

            def streaming(requests: AsyncIterable[Any]) -> Any:
                return client.invoke(m, requests, timeout=timeout, metadata=md)

            return streaming
        if m.kind is MethodKind.SERVER_STREAM:

            def server_stream(*args: Any, **kwargs: Any) -> StreamCall[Any]:
                return cast(
                    StreamCall[Any], client.invoke(m, pack(args, kwargs), timeout=timeout, metadata=md)
                )

            return server_stream

        async def notify(*args: Any, **kwargs: Any) -> None:
            client.notify(m, pack(args, kwargs), metadata=md)

        return notify
