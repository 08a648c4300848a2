"""examples/game: bots join rooms over loopback KCP, get 20 Hz snapshots, positions go unreliable."""

from __future__ import annotations

import asyncio
import random

import kcprpc
from examples.game.bots import run_bot
from examples.game.service import KEY, GameService, JoinRequest, MoveRequest, make_server, run_ticker


async def test_bots_play_and_leave() -> None:
    server, world = make_server("127.0.0.1", 0)
    host, port = await server.start()
    ticker = asyncio.ensure_future(run_ticker(server, world))
    clients = [kcprpc.connect(host, port, key=KEY) for _ in range(4)]
    try:
        await asyncio.gather(*(c.connect() for c in clients))
        stop = asyncio.Event()
        tasks = [
            asyncio.ensure_future(run_bot(c, f"b{i}", f"r{i % 2}", stop, random.Random(i)))
            for i, c in enumerate(clients)
        ]

        async def enough() -> None:
            while world.tick < 12:  # 0.6 s of snapshots at 20 Hz
                await asyncio.sleep(0.05)

        await asyncio.wait_for(enough(), 10)
        stop.set()
        stats = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert all(s.snapshots >= 5 for s in stats)
        assert all(s.players_seen == 2 for s in stats)  # two bots per room
        assert world.positions_applied > 0
        assert world.rooms == {}  # every bot left
        # calls that need a room fail cleanly; the connection stays usable
        g = clients[0].stub(GameService, timeout=5)
        try:
            await g.move(MoveRequest(dx=1, dy=0))
        except kcprpc.RpcError as e:
            assert e.status is kcprpc.Status.FAILED_PRECONDITION
        else:
            raise AssertionError("move without a room succeeded")
        await g.join(JoinRequest(room="x", name="late"))
        assert set(world.rooms) == {"x"}
        await clients[0].close()
        for _ in range(200):  # disconnect removes the player
            if not world.rooms:
                break
            await asyncio.sleep(0.01)
        assert world.rooms == {}
    finally:
        ticker.cancel()
        await asyncio.gather(*(c.close() for c in clients))
        await server.shutdown(grace=0)
