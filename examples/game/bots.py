"""Bot players: join a room, stream positions as unreliable notifications, move now and then."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field

import kcprpc
from examples.game.service import GameService, JoinRequest, MoveRequest, PositionUpdate, WorldSnapshot


@dataclass
class BotStats:
    name: str
    snapshots: int = 0
    last_tick: int = 0
    ticks_missed: int = 0
    moves: int = 0
    positions_sent: int = 0
    snapshot_age_ms: list[float] = field(default_factory=list)
    rtt_ms: float | None = None
    players_seen: int = 0


async def run_bot(
    client: kcprpc.Client, name: str, room: str, stop: asyncio.Event, rng: random.Random, hz: int = 20
) -> BotStats:
    """Play until ``stop`` is set."""
    st = BotStats(name)
    game = client.stub(GameService, timeout=5.0)

    def on_snapshot(s: WorldSnapshot) -> None:
        if st.last_tick and s.tick > st.last_tick + 1:
            st.ticks_missed += s.tick - st.last_tick - 1
        st.last_tick = s.tick
        st.snapshots += 1
        st.players_seen = len(s.players)
        st.snapshot_age_ms.append((time.time() - s.server_time) * 1000)

    off = client.on(WorldSnapshot, on_snapshot)
    me = await game.join(JoinRequest(room=room, name=name))
    x, y, angle, seq = me.x, me.y, rng.uniform(0, 2 * math.pi), 0
    period = 1.0 / hz
    try:
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
        off()
        st.rtt_ms = client.rtt_ms
    return st
