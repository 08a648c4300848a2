"""A client-streaming call's requests as the async iterator its handler reads, and the error a
request that does not validate ends the call with.

An async generator, kept out of :mod:`kcprpc.dispatch` because mypyc (which compiles dispatch in
the compiled build) cannot compile async generators."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from kcprpc.codec import OVERSIZED
from kcprpc.errors import RpcError
from kcprpc.server_session import END_OF_REQUESTS, ServerCall
from kcprpc.service import MethodSpec
from kcprpc.status import Status

__all__ = ["bad_request", "request_iter"]


def bad_request(e: ValidationError) -> RpcError:
    """A request that does not validate: INVALID_ARGUMENT with pydantic's error list."""
    return RpcError(
        Status.INVALID_ARGUMENT,
        "request validation failed",
        e.errors(include_url=False, include_context=False),
    )


async def request_iter(call: ServerCall, spec: MethodSpec) -> AsyncIterator[Any]:
    """The requests of ``call`` as ``spec`` loads them, up to the client's end of requests."""
    q = call.inbound
    assert q is not None
    load = spec.load_request
    while True:
        item = await q.get()
        if item is END_OF_REQUESTS:
            return
        if item is OVERSIZED:
            raise RpcError(Status.RESOURCE_EXHAUSTED, "message larger than max_message_size")
        try:
            yield load(item)
        except ValidationError as e:
            raise bad_request(e) from None
