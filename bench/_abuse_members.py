"""Abuse-bench attack on rooms and topics (hostile-clients item 1): memberships that cost the
server memory, on many connections.

``topic-hoard``: 64 connections, each subscribing to ``max_subscriptions`` (1,000) topics of its own
with 256-character names, 16 subscribes in flight per connection: each connection within its own
bound, about 1.5 KB of server memory per subscription, 96 MB together. Bound:
``ServerConfig.max_membership_bytes`` (the sessions in the most are ended). Counter:
``server.memberships_shed``.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import kcprpc
from bench._abuse_common import Attack, Target


async def _hoard_one(target: Target, idx: int, deadline: float, out: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    client = kcprpc.connect(target.host, target.port, transport=target.transport())
    try:
        await client.connect()
        out["connections"] += 1
        names = iter(f"hoard-{idx:03d}-{j:04d}-".ljust(256, "x") for j in range(1000))

        async def worker() -> None:
            for name in names:
                if loop.time() >= deadline:
                    return
                try:
                    await client.subscribe(name)
                    out["subscribed"] += 1
                except kcprpc.RpcError as e:
                    key = "shed" if "memberships" in e.message else f"refused_{e.status.name.lower()}"
                    out[key] += 1
                    return

        await asyncio.gather(*(worker() for _ in range(16)))
    except Exception:
        out["failed"] += 1
    finally:
        await client.close()


async def topic_hoard(target: Target, seconds: float) -> dict[str, int]:
    """64 connections x 1,000 topics of their own, 256-character names."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    out: Counter[str] = Counter(dict.fromkeys(("connections", "subscribed", "shed", "failed"), 0))
    await asyncio.gather(*(_hoard_one(target, i, deadline, out) for i in range(64)))
    return dict(out)


ATTACKS = [
    Attack(
        name="topic-hoard",
        item=1,
        mode="secure",
        run=topic_hoard,
        description=(
            "64 connections, each subscribing to 1,000 topics of its own with 256-character names "
            "(each within max_subscriptions, ~96 MB of server memory together)"
        ),
    ),
]
