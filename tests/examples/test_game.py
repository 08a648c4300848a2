"""examples/game: bots join matches (tick rooms) over loopback KCP, the match state converges on
each client through the state sync, position inputs are acknowledged, chat goes on its lane."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import kcprpc
from examples.game.bots import run_bot
from examples.game.service import (
    KEY,
    VIEW_RADIUS,
    GameService,
    JoinRequest,
    MatchState,
    MoveRequest,
    PositionUpdate,
    make_server,
)
from kcprpc.state import client_state


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async def wait() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout)


async def test_bots_play_see_each_other_and_leave() -> None:
    server, world = make_server("127.0.0.1", 0)
    host, port = await server.start()
    clients = [kcprpc.connect(host, port, key=KEY) for _ in range(4)]
    try:
        await asyncio.gather(*(c.connect() for c in clients))
        stop = asyncio.Event()
        tasks = [
            asyncio.ensure_future(run_bot(c, f"b{i}", f"r{i % 2}", stop, random.Random(i)))
            for i, c in enumerate(clients)
        ]
        await until(
            lambda: len(world.rooms.rooms) == 2 and all(r.tick >= 12 for r in world.rooms.rooms.values())
        )
        stop.set()
        stats = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert all(s.states >= 5 for s in stats)
        assert all(s.positions_acked > 0 for s in stats)  # inputs acknowledged through the state's extra
        assert all(s.chat_lines == 2 for s in stats)  # its own hello and its room mate's
        by_id = {s.player_id: s for s in stats}
        for s in stats:  # each bot saw its room mate (and only it), where it had moved from the centre
            (other,) = s.others_seen
            mate = by_id[int(other)].name
            assert mate != s.name and int(mate[1:]) % 2 == int(s.name[1:]) % 2  # b0 with b2, b1 with b3
            assert s.others_seen[other] != (50.0, 50.0)
        assert world.positions_applied > 0
        await until(lambda: world.rooms.rooms == {})  # every bot left: the matches stopped
        # calls that need a match fail cleanly; the connection stays usable
        g = clients[0].stub(GameService, timeout=5)
        try:
            await g.move(MoveRequest(dx=1, dy=0))
        except kcprpc.RpcError as e:
            assert e.status is kcprpc.Status.FAILED_PRECONDITION
        else:
            raise AssertionError("move without a room succeeded")
        await g.join(JoinRequest(room="x", name="late"))
        assert set(world.players()) == {"x"}
        await clients[0].close()
        await until(lambda: world.rooms.rooms == {})  # the disconnect took the player out
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        await server.shutdown(grace=0)


async def test_state_converges_inputs_are_acked_and_interest_hides_far_players() -> None:
    server, world = make_server("127.0.0.1", 0)
    host, port = await server.start()
    ann, bob = kcprpc.connect(host, port, key=KEY), kcprpc.connect(host, port, key=KEY)
    try:
        await asyncio.gather(ann.connect(), bob.connect())
        views = [client_state(c, MatchState, "state:arena") for c in (ann, bob)]
        a = await ann.stub(GameService, timeout=5).join(JoinRequest(room="arena", name="ann"))
        b = await bob.stub(GameService, timeout=5).join(JoinRequest(room="arena", name="bob"))
        assert a.state == "state:arena"
        ka, kb = str(a.player_id), str(b.player_id)
        await until(lambda: all(v.state is not None and {ka, kb} <= set(v.state.players) for v in views))
        room = world.rooms.rooms["arena"]

        def sent(x: float, y: float, seq: int) -> Callable[[], bool]:
            def acked() -> bool:  # unreliable: send again until the state acknowledges it
                if views[0].extra != seq:
                    ann.notify(GameService.position, PositionUpdate(seq=seq, x=x, y=y))
                return bool(views[0].extra == seq)

            return acked

        await until(sent(60.123, 41.0, 1))
        me = views[0].state
        assert me is not None and (round(me.players[ka].x, 9), me.players[ka].y) == (
            60.12,
            41.0,
        )  # quantized: 0.01
        await until(
            lambda: views[1].state is not None and abs(views[1].state.players[ka].x - 60.12) < 1e-9
        )  # bob sees it
        assert world.positions_applied >= 1
        # an old seq is not applied again (a late datagram): the state stays where seq 1 put it
        ann.notify(GameService.position, PositionUpdate(seq=1, x=1.0, y=1.0))
        await until(sent(60.0, 41.0, 2))
        assert room.state.players[ka].x == 60.0
        # ann walks out of bob's view (the interest filter): removed from bob's state, not from hers
        await until(sent(50.0 + VIEW_RADIUS + 5, 50.0, 3))
        await until(lambda: views[1].state is not None and ka not in views[1].state.players)
        await until(lambda: views[0].state is not None and kb not in views[0].state.players)  # nor bob to her
        assert views[0].state is not None and ka in views[0].state.players  # she always sees herself
        assert kb in room.state.players  # both still play: only the views differ
    finally:
        await asyncio.gather(ann.close(), bob.close())
        await server.shutdown(grace=0)


async def test_a_player_keeps_their_seat_across_a_dropped_connection() -> None:
    from examples.game.reconnect import keep_seat

    server, world = make_server("127.0.0.1", 0)
    host, port = await server.start()
    try:
        kept = await asyncio.wait_for(keep_seat(host, port), 20)
        assert kept.session_after == kept.session_before and kept.resumes == 1
        assert kept.position_after == (
            kept.position_before[0] + 1,
            kept.position_before[1],
        )  # the same player
        assert kept.in_snapshot
        assert server.stats["sessions_resumed"] == 1 and server.stats["sessions_detached"] == 1
        await until(lambda: world.rooms.rooms == {})  # the client closed on purpose: the seat is given up
        assert server.stats["sessions_detached"] == 1  # at once, not kept
    finally:
        await server.shutdown(grace=0)


async def test_a_dropped_player_is_away_and_leaves_when_the_seat_is_given_up() -> None:
    server, world = make_server("127.0.0.1", 0, seat_seconds=0.2)
    host, port = await server.start()
    client = kcprpc.connect(host, port, key=KEY)  # no reconnect policy: it does not come back
    try:
        await client.connect()
        await client.stub(GameService, timeout=5).join(JoinRequest(room="lobby", name="bob"))
        link = client.lifecycle.link
        assert link is not None
        await link.conn.abort()
        seen_away = False

        def away_or_gone() -> bool:
            nonlocal seen_away
            players = world.players().get("lobby", {})
            seen_away = seen_away or any(p.away for p in players.values())
            return seen_away or not players

        await until(away_or_gone)
        assert seen_away  # the seat is kept while the session waits
        await until(lambda: world.rooms.rooms == {} and server.stats["sessions_expired"] == 1)
    finally:
        await client.close()
        await server.shutdown(grace=0)
