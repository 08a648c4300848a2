"""Abuse-bench attacks on a reconnecting client's HELLO (hostile-clients item 1).

A client holds the key, so it can write any HELLO: it claims rooms it was refused, topics an
interceptor refuses, and hundreds of thousands of names, over and over.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kcprpc
from bench._abuse_common import PRIVATE_ROOM, SECRET_TOPIC, Attack, Target


async def _hello_flood(target: Target, seconds: float) -> dict[str, int]:
    """Reconnect again and again with a HELLO naming the refused room and topic (with offsets
    that ask for their whole history) and 300,000 other rooms; count the events that leak."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    out = {"hellos": 0, "names_claimed": 0, "leaked_events": 0, "connect_errors": 0}
    names = [f"room-{i:06d}" for i in range(300_000)]

    def on_raw(ev: Any) -> None:
        if ev.key in (f"room:{PRIVATE_ROOM}", f"topic:{SECRET_TOPIC}"):
            out["leaked_events"] += 1

    client = kcprpc.connect(target.host, target.port, transport=target.transport())
    client.on_raw_event(on_raw)
    try:
        small = True
        while loop.time() < deadline:
            # attack code: what the client believes it is in is its own to write
            subs = client.subscriptions
            subs.rooms = {PRIVATE_ROOM}
            subs.topics = {SECRET_TOPIC}
            if not small:
                subs.rooms.update(names)
            small = not small
            subs.offsets = {
                f"room:{PRIVATE_ROOM}": kcprpc.Position(0, 0),
                f"topic:{SECRET_TOPIC}": kcprpc.Position(0, 0),
            }
            try:
                # attack code: the reconnect path, on demand
                await client.lifecycle.connect_once(restore=True)
            except kcprpc.RpcError:
                out["connect_errors"] += 1
                continue
            out["hellos"] += 1
            out["names_claimed"] += 2 + (0 if not small else len(names))
            await asyncio.sleep(0.2)  # listen for leaked events on this connection
            link = client.lifecycle.link
            if link is not None:
                await link.conn.close()
    finally:
        await client.close()
    return out


ATTACKS = [
    Attack(
        name="restore-claims",
        item=1,
        mode="secure",
        run=_hello_flood,
        description="HELLOs claiming a refused room, a refused topic with their history, and 300,000 rooms",
    ),
]
