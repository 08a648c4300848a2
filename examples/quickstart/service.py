"""The greeter service: pydantic models in, pydantic models out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic import BaseModel, Field

import kcprpc


class HelloRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class HelloReply(BaseModel):
    message: str


class CountRequest(BaseModel):
    to: int = Field(ge=1, le=1000)
    interval_ms: int = 0


class Count(BaseModel):
    n: int


class Greeter(kcprpc.Service, name="quickstart.Greeter"):
    """Say hello (unary) and count (server streaming)."""

    async def hello(self, req: HelloRequest) -> HelloReply:
        return HelloReply(message=f"Hello, {req.name}!")

    async def count(self, req: CountRequest) -> AsyncIterator[Count]:
        for n in range(1, req.to + 1):
            yield Count(n=n)
            if req.interval_ms:
                await asyncio.sleep(req.interval_ms / 1000)


# `kcprpc serve examples.quickstart.service:app` serves this
app = kcprpc.Server(
    [Greeter()],
    "127.0.0.1",
    9000,
    transport=kcprpc.Transport(kcprpc.SecureWire(key="quickstart secret", fec=(10, 3))),
)
