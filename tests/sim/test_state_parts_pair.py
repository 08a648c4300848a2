"""kcprpc.state groups end to end over kcprpc.testing.pair: a state too big for one datagram goes
as PARTS messages of datagram size, the client stages each tick's parts, commits them once
and acks their groups (kcprpc.State/Ack with groups), and converges under datagram loss."""

from __future__ import annotations

import asyncio
import random

import pytest
from state_pair_helpers import Arena, Unit, until

from kcprpc.state import StateService, StateSync, client_state
from kcprpc.testing import pair


@pytest.mark.parametrize("loss", [0.0, 0.2])
async def test_parts_go_as_datagrams_and_the_client_converges(loss: float) -> None:
    sync = StateSync(Arena, "arena.state", groups=16, part_size=900)
    rng = random.Random(3)
    async with pair(
        [StateService([sync])], datagram_loss=loss, seed=5, on_connect=lambda s: sync.add_client(s)
    ) as p:
        await until(lambda: len(sync) == 1)
        view = client_state(p.client, Arena, "arena.state")
        arena = Arena(units={i: Unit(x=rng.uniform(0, 1000), y=i) for i in range(300)})  # ~8 KB
        for t in range(30):
            arena.tick = t
            for u in rng.sample(list(arena.units.values()), 100):
                u.x += 1
            sync.send(arena)
            await asyncio.sleep(0.005)

        def caught_up() -> bool:
            sync.send(arena)
            return view.state == arena

        await until(caught_up)
        assert sync.stats["parts"] > sync.seq  # several parts per tick
        assert sync.stats["oversized"] == 0
        assert sync.stats["acks"] > 0 and sync.stats["acks_ignored"] == 0
        assert view.stats["malformed"] == view.stats["invalid"] == view.stats["no_base"] == 0
        assert view.stats["applied"] < view.stats["parts"]  # a tick's parts commit once
        # the view keeps nothing older than the server may still send against: the last sends
        # may be in flight, and at 20 % loss an ack or two retransmitted (a slow machine)
        assert min(view.seqs) == view.min_seq >= sync.seq - 3
