"""A kcprpc node for tests/integration/test_redis_nodes.py, run in its own process:
``python redis_node.py REDIS_URL PREFIX``. It serves :class:`node_service.Node` on 127.0.0.1 (a
free port) with a RedisBroker, prints ``{"port": N}`` once it accepts, and serves until killed."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also under PYTHONSAFEPATH

from node_service import WIRE, Node

import kcprpc
from kcprpc.redis_broker import RedisBroker


async def main(url: str, prefix: str) -> None:
    broker = RedisBroker(url, prefix=prefix, timeout=0.5, presence_ttl=2.0)
    server = kcprpc.Server([Node()], "127.0.0.1", 0, transport=WIRE, broker=broker)
    _, port = await server.start()
    print(json.dumps({"port": port}), flush=True)
    await server.serve()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
