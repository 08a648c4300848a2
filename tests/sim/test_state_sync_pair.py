"""kcprpc.state end to end: a server's StateSync and a client's StateView over kcprpc.testing.pair
(in memory with datagram loss, and over real KCP on 127.0.0.1): snapshots and deltas go as
unreliable EVENTs, acks come back as kcprpc.State/Ack notifies, the client converges."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from state_pair_helpers import Arena, Unit, until

from kcprpc.state import Interest, StateService, StateSync, client_state
from kcprpc.testing import pair


@pytest.mark.parametrize(("link", "loss"), [("memory", 0.0), ("memory", 0.2), ("kcp", 0.0)])
async def test_state_converges_over_the_unreliable_event_path(link: Any, loss: float) -> None:
    sync = StateSync(Arena, "arena.state")
    states = StateService([sync])
    rng = random.Random(7)
    async with pair(
        [states],
        link=link,
        datagram_loss=loss,
        seed=11,
        on_connect=lambda s: sync.add_client(s),
    ) as p:
        await until(lambda: len(sync) == 1)
        view = client_state(p.client, Arena, "arena.state")
        added: list[int] = []
        view.on_add("units", lambda k, u: added.append(k))
        arena = Arena(units={i: Unit(x=i) for i in range(30)})
        for t in range(40):  # 40 ticks of changes, paced (not synchronised) at 5 ms
            arena.tick = t
            for u in rng.sample(list(arena.units.values()), 5):
                u.x += 1
            if t % 10 == 0:
                arena.units[100 + t] = Unit()
            sync.send(arena)
            await asyncio.sleep(0.005)

        def caught_up() -> bool:
            sync.send(arena)  # the final state, until the client holds it
            return view.state == arena

        await until(caught_up)
        assert set(added) == set(arena.units)
        assert sync.stats["acks"] > 0 and sync.stats["deltas"] > 0
        assert view.stats["applied"] >= 2
        assert view.stats["malformed"] == view.stats["invalid"] == 0
        if loss:
            assert p.client.notifications_dropped == 0
            lost = sync.stats["snapshots"] + sync.stats["deltas"] - view.stats["applied"]
            assert lost > 0  # some messages were lost, and the client converged anyway


async def test_interest_over_a_pair_hides_far_units() -> None:
    sync = StateSync(Arena, "arena.state")

    def near(a: Arena) -> Interest:
        return Interest(keys={"units": [k for k, u in a.units.items() if u.x < 10]})

    async with pair([StateService([sync])], on_connect=lambda s: sync.add_client(s, interest=near)) as p:
        await until(lambda: len(sync) == 1)
        view = client_state(p.client, Arena, "arena.state")
        arena = Arena(units={i: Unit(x=i) for i in range(20)})

        def shows(keys: set[int]) -> Any:
            def check() -> bool:
                sync.send(arena)
                return view.state is not None and set(view.state.units) == keys

            return check

        await until(shows(set(range(10))))
        arena.units[3].x = 50
        arena.units[15].x = 1
        await until(shows(set(range(10)) - {3} | {15}))
