"""A player keeps their seat across a dropped connection: the client reconnects, resumes its
server session (the same player, match and position: the match marked the player away
meanwhile), and plays on; the match's state sync picks it up again.

python -m examples.game --reconnect
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import kcprpc
from examples.game.service import KEY, GameService, JoinRequest, MatchState, MoveRequest
from kcprpc.state import client_state

FAST_RECONNECT = kcprpc.ClientConfig(reconnect=kcprpc.ReconnectPolicy(initial=0.05, maximum=0.5))


@dataclass
class SeatKept:
    player_id: int  # the id the player joined with
    session_before: str
    session_after: str
    resumes: int
    position_before: tuple[float, float]
    position_after: tuple[float, float]  # where a move after the reconnect put the same player
    in_snapshot: bool  # the player is in the match's state again, at the new position, not away


async def keep_seat(host: str, port: int, timeout: float = 10.0) -> SeatKept:
    """Join, move, lose the connection (as a phone losing signal does), reconnect, move again."""
    client = kcprpc.connect(host, port, key=KEY, config=FAST_RECONNECT)
    async with client:
        game = client.stub(GameService, timeout=timeout)
        view = client_state(client, MatchState, "state:lobby")
        me = await game.join(JoinRequest(room="lobby", name="ann"))
        before = await game.move(MoveRequest(dx=2, dy=0))
        sid = client.session_id
        assert sid is not None
        back = asyncio.Event()
        client.on_reconnect = lambda _: back.set()
        link = client.lifecycle.link
        assert link is not None
        await link.conn.abort()  # the connection drops (no goodbye): the server keeps the seat
        await asyncio.wait_for(back.wait(), timeout)
        after = await game.move(MoveRequest(dx=1, dy=0))  # no join: the seat is still ours
        seen = asyncio.Event()
        key = str(me.player_id)

        def check(state: MatchState) -> None:
            p = state.players.get(key)
            if p is not None and not p.away and abs(p.x - after.x) + abs(p.y - after.y) < 0.02:  # quantized
                seen.set()

        off = view.on_state(check)
        try:
            await asyncio.wait_for(seen.wait(), timeout)
        finally:
            off()
        return SeatKept(
            me.player_id,
            sid,
            client.session_id or "",
            client.resumes,
            (before.x, before.y),
            (after.x, after.y),
            seen.is_set(),
        )
