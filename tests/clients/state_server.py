"""A kcprpc server with state syncs, for the TypeScript state client's end-to-end test
(clients/typescript/test/state_e2e.test.ts), on 127.0.0.1 and an OS-chosen port.

``python tests/clients/state_server.py [transport flags, e.g. --key k]`` prints ``PORT <n>`` and
serves until stdin closes or it is killed. Two syncs of one world that changes every tick (50 Hz):
``"whole"`` (snapshots and deltas) and ``"parts"`` (groups of 8 in PARTS messages, small parts so
a tick takes several). ``st.World/join(name)`` makes the caller a client of that sync;
``st.World/state_at(seq)`` returns the world as it was at tick ``seq`` (a canonical form, for the
test to compare with what it holds); ``st.World/stats`` the syncs' counters.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field

sys.path.append(str(Path(__file__).resolve().parents[2]))  # the checkout, after an installed kcprpc

import kcprpc
from kcprpc import RpcError, Status, current_context
from kcprpc.cli.flags import add_transport_args, build_transport
from kcprpc.state import Quantized, StateService, StateSync
from tests.clients.state_canon import canon
from tests.integration.cli_server import serve_until_stdin_closes

TICK_HZ = 50
HISTORY = 400


class Unit(BaseModel):
    name: str = ""
    x: Annotated[float, Quantized(0.01)] = 0.0
    y: Annotated[float, Quantized(0.01)] = 0.0
    hp: int = 100


class World(BaseModel):
    tick: int = 0
    phase: str = "play"
    units: dict[int, Unit] = Field(default_factory=dict)
    log: list[str] = Field(default_factory=list)


class JoinRequest(BaseModel):
    sync: str


class AtRequest(BaseModel):
    sync: str
    seq: int


class WorldService(kcprpc.Service, name="st.World"):
    def __init__(self) -> None:
        self.world = World(units={i: Unit(name=f"u{i}", x=i, y=2 * i) for i in range(60)})
        self.syncs = {
            "whole": StateSync(World, "whole", groups=1),
            "parts": StateSync(World, "parts", groups=8, part_size=200, max_parts=4),
        }
        self.states = StateService(self.syncs.values())
        self.history: dict[str, dict[int, Any]] = {n: {} for n in self.syncs}
        self.members: dict[str, set[Any]] = {n: set() for n in self.syncs}
        self.rng = random.Random(5)

    async def join(self, req: JoinRequest) -> int:
        sync = self.syncs.get(req.sync)
        if sync is None:
            raise RpcError(Status.NOT_FOUND, req.sync)
        sess = current_context().session
        sync.add_client(sess)
        self.members[req.sync].add(sess)
        return sync.seq

    async def state_at(self, req: AtRequest) -> Any:
        h = self.history.get(req.sync, {})
        if req.seq not in h:
            raise RpcError(Status.NOT_FOUND, f"seq {req.seq} is not kept")
        return h[req.seq]

    async def stats(self) -> dict[str, dict[str, int]]:
        return {n: dict(s.stats) for n, s in self.syncs.items()}

    def step(self) -> None:
        w, rng = self.world, self.rng
        w.tick += 1
        for _ in range(rng.randrange(1, 8)):
            k = rng.randrange(0, 80)
            if k in w.units and rng.random() < 0.1:
                del w.units[k]
            elif k in w.units:
                u = w.units[k]
                u.x, u.y = round(u.x + rng.uniform(-1, 1), 2), round(u.y + rng.uniform(-1, 1), 2)
            else:
                w.units[k] = Unit(name=f"u{k}", x=rng.uniform(0, 100))
        if rng.random() < 0.05:
            w.log.append(f"tick {w.tick}")
            del w.log[:-5]
        if rng.random() < 0.02:
            w.phase = rng.choice(["play", "pause"])
        for name, sync in self.syncs.items():
            sync.send(w, dict.fromkeys(self.members[name], w.tick))
            h = self.history[name]
            h[sync.seq] = canon(
                sync.schema.root, sync.schema.value(sync.schema.tree(w))
            )  # as a client sees it
            h.pop(sync.seq - HISTORY, None)

    async def run(self) -> None:
        while True:
            self.step()
            await asyncio.sleep(1 / TICK_HZ)


async def main() -> None:
    ap = argparse.ArgumentParser()
    add_transport_args(ap)
    args = ap.parse_args()
    svc = WorldService()

    def gone(sess: Any) -> None:
        for name, s in svc.syncs.items():
            s.remove_client(sess)
            svc.members[name].discard(sess)

    server = kcprpc.Server(
        [svc, svc.states], "127.0.0.1", 0, transport=build_transport(args), on_disconnect=gone
    )
    ticker = asyncio.ensure_future(svc.run())  # syncs to nobody until a client joins
    try:
        await serve_until_stdin_closes(server)
    finally:
        ticker.cancel()


if __name__ == "__main__":
    asyncio.run(main())
