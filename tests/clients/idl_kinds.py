"""A service with every method kind and the awkward types, for the TypeScript stub generator's tests
(clients/typescript/test/idl-gen.test.ts exports it with ``kcprpc idl export
tests.clients.idl_kinds:Depot``; tests/clients/test_idl_gen_ts.py runs ``idl gen-ts --from-app`` on it).

``python tests/clients/idl_kinds.py [transport flags, e.g. --key K]`` serves it with the quickstart's
greeter on 127.0.0.1 and an OS-chosen port, prints ``PORT <n>`` and serves until stdin closes or it is
killed (clients/typescript/test/idl_e2e.test.ts: the generated stubs against the real server).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

sys.path.append(str(Path(__file__).resolve().parents[2]))  # the checkout, after an installed kcprpc

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

    def __init__(self) -> None:
        self.dropped: list[str] = []

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
        self.dropped.append(p.label)

    async def dropped_labels(self) -> list[str]:
        """The labels of the parts dropped so far."""
        return list(self.dropped)

    async def restock(self, n: int) -> None:
        """Pushes ``shop.restocked`` with ``n`` parts to the calling session."""
        kcprpc.current_context().session.send(
            Restocked(parts=[Part(label=f"r{i}", at=(i, -i)) for i in range(n)])
        )

    async def count(self) -> dict[str, int]:
        return {"n": 1}

    async def whois(self, c: DepotClient) -> DepotClient:
        return c


async def main() -> None:
    from examples.quickstart.service import Greeter
    from kcprpc.cli.flags import add_transport_args, build_transport

    ap = argparse.ArgumentParser()
    add_transport_args(ap)
    args = ap.parse_args()
    server = kcprpc.Server([Depot(), Greeter()], "127.0.0.1", 0, transport=build_transport(args))
    _, port = await server.start()
    print(f"PORT {port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.shutdown(grace=0.5)


if __name__ == "__main__":
    asyncio.run(main())
