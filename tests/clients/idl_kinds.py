"""A service with every method kind and the awkward types, for the TypeScript stub generator's tests
(clients/typescript/test/idl-gen.test.ts exports it with ``kcprpc idl export
tests.clients.idl_kinds:Depot``; tests/clients/test_idl_gen_ts.py runs ``idl gen-ts --from-app`` on it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from pydantic import BaseModel, Field

import kcprpc
from kcprpc import rpc


class Part(BaseModel):
    """A part."""

    label: str = Field(min_length=1, max_length=12)
    kind: Literal["bolt", "nut"] = "bolt"
    blob: bytes = b""
    size: float | None = None
    tags: dict[str, int] = {}
    at: tuple[int, int] = (0, 0)


class DepotClient(BaseModel):
    """A message whose name is the stub class's: the generator renames the message, not the stub."""

    title: str


@kcprpc.event("shop.restocked")
class Restocked(BaseModel):
    parts: list[Part]


@kcprpc.event("shop.sold")
class Sold(BaseModel):
    label: str
    buyer: DepotClient


class Depot(
    kcprpc.Service,
    name="kinds.v1.Depot",
    events=[Restocked, Sold],
    topics={"shop:{region}:{shop}": [Restocked, Sold]},
):
    """Every kind of method."""

    async def get(self, p: Part) -> Part:
        """Echo a part, upper-cased."""
        return p.model_copy(update={"label": p.label.upper()})

    async def many(self, n: int) -> AsyncIterator[Part]:
        for i in range(n):
            yield Part(label=f"p{i}")

    async def weigh(self, parts: AsyncIterator[Part]) -> float:
        return sum([(p.size or 0.0) async for p in parts])

    async def relabel(self, parts: AsyncIterator[Part]) -> AsyncIterator[str]:
        async for p in parts:
            yield p.label[::-1]

    @rpc.notify(name="drop-it", delivery="reliable")
    async def drop(self, p: Part) -> None:
        self.dropped = p

    async def count(self) -> dict[str, int]:
        return {"n": 1}

    async def whois(self, c: DepotClient) -> DepotClient:
        return c
