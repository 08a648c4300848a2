"""One kcprpc server process on a NatsBroker, for the two-node test (tests/brokers/test_nats_nodes.py).

    python tests/brokers/nats_node.py NATS_URL PREFIX

Prints ``{"port": N}`` once it serves (127.0.0.1, a free port, secure mode with :data:`KEY`), then
serves until its stdin closes or it is killed. Its service: ``join(room)`` (live once it returns),
``to_room(room, n)`` and ``publish(topic, n)`` (push a :class:`Tick`)."""

from __future__ import annotations

import asyncio
import json
import sys

from pydantic import BaseModel

import kcprpc
from kcprpc import current_context
from kcprpc.broker import room_key
from kcprpc.nats_broker import NatsBroker

KEY = "nats two-node test"


@kcprpc.event("e2e.tick")
class Tick(BaseModel):
    n: int
    node: str = ""


class Sent(BaseModel):
    seq: int
    epoch: int


class Node(kcprpc.Service, name="e2e.v1.Node", topics={"news": [Tick]}):
    """Rooms and a topic pushed through the shared broker."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def join(self, room: str) -> None:
        ctx = current_context()
        ctx.session.join(room)
        await ctx.server.push.broker.history(room_key(room), None, 0)  # the room's subscription is live

    async def to_room(self, room: str, n: int) -> Sent:
        m = await current_context().server.push.to_room(room, Tick(n=n, node=self.name))
        return Sent(seq=m.seq, epoch=m.epoch)

    async def ping(self, n: int) -> int:
        """A call that needs no broker."""
        return n + 1

    async def publish(self, topic: str, n: int) -> Sent:
        m = await current_context().server.push.publish(topic, Tick(n=n, node=self.name))
        return Sent(seq=m.seq, epoch=m.epoch)


async def main(url: str, prefix: str) -> None:
    broker = NatsBroker(url, prefix=prefix)
    server = kcprpc.Server([Node(prefix)], "127.0.0.1", 0, key=KEY, broker=broker)
    _, port = await server.start()  # starts the broker first
    print(json.dumps({"port": port}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    await server.shutdown(grace=0)  # closes the broker last


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
