"""Client-side call objects: the state of one call (the handle its frames go to), awaitable unary
calls and iterable stream calls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Generator, Mapping, Sequence
from typing import Any, Generic, TypeVar, cast

from pydantic import ValidationError

from kcprpc.errors import RpcError
from kcprpc.frame_writer import FrameWriter
from kcprpc.inbox import INBOX_LIMIT, Inbox
from kcprpc.interceptors import ClientCallDetails, ClientInterceptor, chain_client
from kcprpc.protocol.client import ClientProtocol
from kcprpc.protocol.frames import Cancel, End, encode_msg
from kcprpc.service import MethodSpec
from kcprpc.status import Status

log = logging.getLogger("kcprpc.client")

T = TypeVar("T")
R = TypeVar("R")

OVERFLOW_MESSAGE = "too many unread messages"


class StreamEnd:
    """What a streaming call's queue holds after its last message: the call's end."""

    __slots__ = ("error", "md")

    def __init__(self, error: RpcError | None, md: dict[str, Any] | None) -> None:
        self.error = error
        self.md = md


def bad_response(e: ValidationError) -> RpcError:
    """A response that does not validate against the method's type."""
    return RpcError(Status.INTERNAL, "response validation failed", e.errors(include_url=False))


class ClientCall:
    """Client side state of one call (any kind): the handle the link's protocol gives each of the
    call's frames to (:meth:`on_reply`, :meth:`on_message`, :meth:`on_trailer`, :meth:`on_headers`,
    :meth:`abort`)."""

    __slots__ = (
        "cid",
        "done",
        "fut",
        "initial_md",
        "own",
        "protocol",
        "queue",
        "spec",
        "timer",
        "trailing_md",
        "writer",
    )

    def __init__(
        self,
        protocol: ClientProtocol,
        loop: asyncio.AbstractEventLoop,
        cid: int,
        spec: MethodSpec,
        writer: FrameWriter,
        own: bool,
    ) -> None:
        self.protocol = protocol
        self.cid = cid
        self.spec = spec
        self.writer = writer
        self.own = own
        self.fut: asyncio.Future[Any] = loop.create_future()
        self.queue: Inbox | None = Inbox() if spec.streams_responses else None
        self.initial_md: dict[str, Any] | None = None
        self.trailing_md: dict[str, Any] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.done = False

    # -- frames in (from the link's protocol)
    def on_reply(
        self, payload: Any, initial_md: dict[str, Any] | None, trailing_md: dict[str, Any] | None
    ) -> None:
        """REPLY: a unary success."""
        self.initial_md = initial_md
        self.trailing_md = trailing_md
        self._finish()
        if not self.fut.done():
            self.fut.set_result(payload)

    def on_message(self, payload: Any, cost: int = 0) -> bool:
        """MSG; True when the call keeps ``cost`` (a queued message's decode budget, given back
        when it is taken)."""
        queue = self.queue
        if queue is not None:
            if not self.own and queue.qsize() >= INBOX_LIMIT:
                self.overflow()  # a shared-stream call cannot push back: refuse to buffer without end
                return False
            if self.done:
                return False  # failed or cancelled: nobody will read it
            queue.put(payload, cost)
            return True
        if not self.fut.done():
            self._finish()
            self.fut.set_result(payload)
        return False

    def on_trailer(self, err: RpcError | None, md: dict[str, Any] | None) -> None:
        """TRAILER: the call ended (``err`` None for OK)."""
        self.trailing_md = md
        if self.queue is not None:
            self._finish()
            self.queue.put(StreamEnd(err, md))
            if not self.fut.done():
                self.fut.set_result(None)
        elif err is not None:
            self.fail(err)
        else:
            self._finish()
            if not self.fut.done():
                self.fut.set_exception(RpcError(Status.INTERNAL, "call ended without a response"))

    def on_headers(self, md: dict[str, Any]) -> None:
        """HEADERS: initial metadata."""
        self.initial_md = {**(self.initial_md or {}), **md}

    def abort(self, err: RpcError, cancel: bool) -> None:
        """End the call with ``err`` now (``cancel``: tell the server too)."""
        if cancel:
            self.cancel(err)
        else:
            self.fail(err)

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        self.protocol.done(self.cid)
        if self.own:
            self.writer.close()

    def fail(self, err: RpcError) -> None:
        """End the call locally with ``err``."""
        if self.done:
            return
        self._finish()
        if self.queue is not None:
            self.queue.put(StreamEnd(err, err.trailing_metadata or None))
        if not self.fut.done():
            self.fut.set_exception(err)
            self.fut.exception()  # mark retrieved: streaming calls may never await fut

    def cancel(self, err: RpcError) -> None:
        """Tell the server to stop, and fail locally."""
        if self.done:
            return
        self.writer.send(Cancel(self.cid).encode())
        self.fail(err)

    def overflow(self) -> None:
        """Too many unread messages and the stream cannot be paused: fail with RESOURCE_EXHAUSTED."""
        self.cancel(RpcError(Status.RESOURCE_EXHAUSTED, OVERFLOW_MESSAGE))

    def expire(self) -> None:
        self.timer = None
        self.cancel(RpcError(Status.DEADLINE_EXCEEDED, "deadline exceeded"))

    async def send_requests(self, requests: AsyncIterable[Any]) -> None:
        """Send the requests of a client-streaming or bidi call, then END."""
        dump = self.spec.dump_request
        w = self.writer
        cid = self.cid
        try:
            async for item in requests:
                if self.done:
                    return
                w.send(encode_msg(cid, dump(item)))
                if w.pending_bytes >= 64 * 1024:
                    await w.drain()
            if not self.done:
                w.send(End(cid).encode())
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the request iterator failed: cancel the call
            log.debug("request iterator of %s failed: %r", self.spec.wire_name, e)
            self.cancel(RpcError(Status.CANCELLED, f"request iterator raised {type(e).__name__}"))


Begin = Callable[[MethodSpec, Any, "float | None", "Mapping[str, Any] | None", bool], Awaitable[ClientCall]]
"""Starts a call on the client's current link: ``begin(spec, request, timeout, metadata, end)``."""


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
        begin: Begin,
        interceptors: Sequence[ClientInterceptor],
        spec: MethodSpec,
        request: Any,
        timeout: float | None,
        metadata: Mapping[str, Any] | None,
        requests: AsyncIterable[Any] | None = None,
    ) -> None:
        self._begin = begin
        self._interceptors = tuple(interceptors)
        self._spec = spec
        self._request = request
        self._requests = requests
        self._timeout = timeout
        self._metadata = metadata
        self._call: ClientCall | None = None
        self._start_task: asyncio.Future[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._finished = False
        self.trailing_metadata: dict[str, Any] | None = None

    async def _start(self) -> None:
        if self._start_task is None:
            self._start_task = asyncio.ensure_future(self._do_start())
        await self._start_task

    async def _do_start(self) -> None:
        async def last(details: ClientCallDetails) -> StreamCall[T]:
            self._call = call = await self._begin(
                details.method, details.request, details.timeout, details.metadata, self._requests is None
            )
            if self._requests is not None:
                self._sender = asyncio.ensure_future(call.send_requests(self._requests))
            return self

        details = ClientCallDetails(self._spec, self._request, dict(self._metadata or {}), self._timeout)
        if self._interceptors:
            await chain_client(self._interceptors, details, last)
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
        if isinstance(item, StreamEnd):
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
            err = bad_response(e)
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
