"""The service of the multi-node tests (tests/integration/test_redis_nodes.py), shared by the
nodes run in the test's process and the one run in its own (redis_node.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_rpc_support import Tick

import kcprpc
from kcprpc import CompatWire, Transport, current_context

WIRE = Transport(CompatWire(crypt="aes", key="nodes"))


class Node(kcprpc.Service, name="test.Node"):
    async def join(self, room: str) -> None:
        current_context().session.join(room)

    async def shout(self, n: int) -> None:
        """A room push from a handler."""
        await current_context().server.push.to_room("lobby", Tick(n=n))

    async def announce(self, n: int) -> None:
        """A topic publish from a handler."""
        await current_context().server.push.publish("news", Tick(n=n))

    async def hello(self) -> str:
        return "hi"
