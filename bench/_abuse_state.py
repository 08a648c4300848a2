"""Abuse-bench attacks on state sync (docs/state.md, "Groups"; hostile-clients item 1).

The target runs with ``--state``: a ``StateSync`` with 16 groups sends a 200-entity state to
every session at 20 Hz, in PARTS messages, and a ``StateService`` takes the acks. A client holds
the key, so it can send ``kcprpc.State/Ack`` notifies of its own making: seqs never sent, groups
out of range, 256 groups per ack, names of no sync. Each must be ignored and counted
(``state.acks_ignored``, ``state.acks_unknown``), move no one else's baseline and keep nothing.
"""

from __future__ import annotations

import asyncio
import random

import kcprpc
from bench._abuse_common import STATE_NAME, Attack, Target
from kcprpc.state import StateAck, StateService


async def _forged_acks(target: Target, seconds: float) -> dict[str, int]:
    """Forged acks as fast as the client sends notifies: random seqs, 256 random groups each
    (most out of range), one in four to a sync name that does not exist."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    rng = random.Random(1)
    out = {"acks_sent": 0, "notifies_dropped_by_client": 0}
    client = kcprpc.connect(target.host, target.port, transport=target.transport())
    try:
        await client.connect()
        while loop.time() < deadline:
            for _ in range(200):
                name = STATE_NAME if rng.random() < 0.75 else f"nope-{rng.randrange(10**6)}"
                groups = [rng.randrange(-5, 2**31) for _ in range(256)]
                client.notify(
                    StateService.ack, StateAck(name=name, seq=rng.randrange(1, 2**40), groups=groups)
                )
                out["acks_sent"] += 1
            await asyncio.sleep(0.001)
        out["notifies_dropped_by_client"] = client.notifications_dropped
    finally:
        await client.close()
    return out


ATTACKS = [
    Attack(
        name="state-acks",
        item=1,
        mode="secure",
        run=_forged_acks,
        description="forged kcprpc.State/Ack notifies: seqs never sent, 256 groups each, unknown sync names",
        server_args=("--state",),
    ),
]
