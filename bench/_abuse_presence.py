"""Abuse-bench attacks on presence (docs/rpc.md, "Presence"; hostile-clients item 1).

A client holds the key, so it can subscribe to as many topics that keep presence as it likes,
churn a subscription whose members get Joined / Left, and ask for member lists it has no
business seeing. The target runs with ``--presence`` (``PRESENCE`` of bench/_abuse_common.py).
"""

from __future__ import annotations

import asyncio

import kcprpc
from bench._abuse_common import PRESENCE_TOPIC, Attack, Target


async def _churn(target: Target, seconds: float) -> dict[str, int]:
    """20 watchers subscribed to a topic with Joined / Left; one client subscribes and
    unsubscribes it as fast as it can. Count what it got through and what the watchers saw."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    out = {"churn_ok": 0, "churn_refused": 0, "events_seen_by_a_watcher": 0}
    watchers = [kcprpc.connect(target.host, target.port, transport=target.transport()) for _ in range(20)]
    churner = kcprpc.connect(target.host, target.port, transport=target.transport())
    try:
        for w in watchers:
            await w.connect()
            await w.subscribe(PRESENCE_TOPIC)

        def seen(_ev: object) -> None:
            out["events_seen_by_a_watcher"] += 1

        watchers[0].on(kcprpc.Joined, seen)
        watchers[0].on(kcprpc.Left, seen)
        await churner.connect()
        while loop.time() < deadline:
            try:
                await churner.subscribe(PRESENCE_TOPIC)
            except kcprpc.RpcError:
                out["churn_refused"] += 1
                continue
            out["churn_ok"] += 1
            await churner.unsubscribe(PRESENCE_TOPIC)
    finally:
        for c in [churner, *watchers]:
            await c.close()
    return out


async def _keys_and_lists(target: Target, seconds: float) -> dict[str, int]:
    """Subscribe to 10,000 topics that keep presence, then ask for the members of topics this
    client is not in, over and over."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    out = {"subscribed": 0, "refused": 0, "lists_denied": 0, "lists_leaked": 0}
    client = kcprpc.connect(target.host, target.port, transport=target.transport())
    try:
        await client.connect()
        for i in range(10_000):
            if loop.time() >= deadline:
                break
            try:
                await client.subscribe(f"presence.t-{i}")
                out["subscribed"] += 1
            except kcprpc.RpcError:
                out["refused"] += 1
        while loop.time() < deadline:
            try:
                await client.members(topic=PRESENCE_TOPIC)
                out["lists_leaked"] += 1
            except kcprpc.RpcError:
                out["lists_denied"] += 1
    finally:
        await client.close()
    return out


ATTACKS = [
    Attack(
        name="presence-churn",
        item=1,
        mode="secure",
        run=_churn,
        description="subscribe/unsubscribe a topic with Joined/Left in a loop, 20 members watching",
        server_args=("--presence",),
    ),
    Attack(
        name="presence-keys",
        item=1,
        mode="secure",
        run=_keys_and_lists,
        description="10,000 topics with presence for one session, then member lists of a topic it is not in",
        server_args=("--presence",),
    ),
]
