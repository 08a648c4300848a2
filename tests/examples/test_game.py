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


async def test_a_player_keeps_their_seat_across_a_dropped_connection() -> None:
    from examples.game.reconnect import keep_seat

    server, world = make_server("127.0.0.1", 0)
    host, port = await server.start()
    gone = asyncio.Event()
    hook = server.on_disconnect
    assert hook is not None

    def on_disconnect(sess: kcprpc.ServerSession) -> None:
        hook(sess)
        gone.set()

    server.on_disconnect = on_disconnect
    ticker = asyncio.ensure_future(run_ticker(server, world))
    try:
        kept = await asyncio.wait_for(keep_seat(host, port), 20)
        assert kept.session_after == kept.session_before and kept.resumes == 1
        assert kept.position_after == (kept.position_before[0] + 1, kept.position_before[1])  # the same player
        assert kept.in_snapshot
        assert server.stats["sessions_resumed"] == 1 and server.stats["sessions_detached"] == 1
        await asyncio.wait_for(gone.wait(), 10)  # the client closed on purpose: the seat is given up
        assert world.rooms == {} and server.stats["sessions_detached"] == 1  # at once, not kept
    finally:
        ticker.cancel()
        await server.shutdown(grace=0)


async def test_a_dropped_player_is_away_and_leaves_when_the_seat_is_given_up() -> None:
    server, world = make_server("127.0.0.1", 0, seat_seconds=0.2)
    host, port = await server.start()
    gone = asyncio.Event()
    detached = asyncio.Event()
    hook = server.on_disconnect
    on_detach = server.on_detach
    assert hook is not None and on_detach is not None

    def on_disconnect(sess: kcprpc.ServerSession) -> None:
        hook(sess)
        gone.set()

    def on_detached(sess: kcprpc.ServerSession) -> None:
        on_detach(sess)
        detached.set()

    server.on_disconnect = on_disconnect
    server.on_detach = on_detached
    client = kcprpc.connect(host, port, key=KEY)  # no reconnect policy: it does not come back
    try:
        await client.connect()
        await client.stub(GameService, timeout=5).join(JoinRequest(room="lobby", name="bob"))
        link = client.lifecycle.link
        assert link is not None
        await link.conn.abort()
        await asyncio.wait_for(detached.wait(), 10)
        (player,) = world.rooms["lobby"].values()
        assert player.away  # the seat is kept while the session waits
        await asyncio.wait_for(gone.wait(), 10)
        assert world.rooms == {} and server.stats["sessions_expired"] == 1
    finally:
        await client.close()
        await server.shutdown(grace=0)
