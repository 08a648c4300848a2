"""Bot players: join a match, follow its state (snapshots and deltas), stream positions as
unreliable inputs with a sequence number, step now and then, say hello on the chat lane."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field

import kcprpc
from examples.game.service import (
    ChatLine,
    ChatRequest,
    GameService,
    JoinRequest,
    MatchState,
    MoveRequest,
    PositionUpdate,
    state_name,
)
from kcprpc.state import StateView, attach


@dataclass
class BotStats:
    name: str
    player_id: int = 0
    states: int = 0  # state messages applied (snapshots and deltas)
    last_tick: int = 0
    ticks_missed: int = 0  # ticks between two applied states (sent at 20 Hz: a lost datagram)
    moves: int = 0
    positions_sent: int = 0
    positions_acked: int = 0  # the last input seq the match acknowledged (the state's extra)
    state_age_ms: list[float] = field(default_factory=list)
    rtt_ms: float | None = None
    players_seen: int = 0  # players in its view at the end (the interest filter: those near it)
    others_seen: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> last position
    chat_lines: int = 0


async def run_bot(
    client: kcprpc.Client, name: str, room: str, stop: asyncio.Event, rng: random.Random, hz: int = 20
) -> BotStats:
    """Play until ``stop`` is set, then leave."""
    st = BotStats(name)
    game = client.stub(GameService, timeout=5.0)
    view = StateView(MatchState, state_name(room))
    mine = ""

    def on_state(s: MatchState) -> None:
        if st.last_tick and s.tick > st.last_tick + 1:
            st.ticks_missed += s.tick - st.last_tick - 1
        st.last_tick = s.tick
        st.states += 1
        st.players_seen = len(s.players)
        st.positions_acked = max(st.positions_acked, view.extra if isinstance(view.extra, int) else -1)
        st.state_age_ms.append((time.time() - s.server_time) * 1000)
        for key, p in s.players.items():
            if key != mine:
                st.others_seen[key] = (p.x, p.y)

    def on_chat(_: ChatLine) -> None:
        st.chat_lines += 1

    offs = [view.on_state(on_state), attach(client, view), client.on(ChatLine, on_chat)]
    me = await game.join(JoinRequest(room=room, name=name))
    st.player_id, mine = me.player_id, str(me.player_id)
    st.others_seen.pop(mine, None)  # a state may have come before the reply
    x, y, angle, seq = me.x, me.y, rng.uniform(0, 2 * math.pi), 0
    period = 1.0 / hz
    try:
        await game.say(ChatRequest(text=f"hi from {name}"))
        while not stop.is_set():
            angle += rng.uniform(-0.3, 0.3)
            x = min(100.0, max(0.0, x + math.cos(angle)))
            y = min(100.0, max(0.0, y + math.sin(angle)))
            seq += 1
            await game.position(PositionUpdate(seq=seq, x=x, y=y))  # unreliable, fire-and-forget
            st.positions_sent += 1
            if seq % 10 == 0:
                r = await game.move(MoveRequest(dx=rng.uniform(-1, 1), dy=rng.uniform(-1, 1)))
                x, y = r.x, r.y
                st.moves += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), period)
        await game.leave()
    finally:
        for off in offs:
            off()
        st.rtt_ms = client.rtt_ms
    return st
