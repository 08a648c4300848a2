"""Abuse-bench attack on resume (docs/rpc.md, "Resume"; hostile-clients item 1).

A client holds the key, so it can connect, fill its session (metadata at the server's limit, a
room, a topic) and vanish without a goodbye, again and again, so that the server keeps every one
of those sessions for a resume (``ServerConfig.resume_window``, ``max_detached_sessions``).
"""

from __future__ import annotations

import asyncio

import kcprpc
from bench._abuse_common import PUBLIC_ROOM, PUBLIC_TOPIC, AbuseService, Attack, RoomRequest, Target

PAD = "x" * 15_000  # under max_metadata_size (16 KiB): kept with the session


async def _hoard(target: Target, seconds: float) -> dict[str, int]:
    """16 workers: connect with 15 KB of metadata, join a room, subscribe to a topic, then drop the
    connection (no GOAWAY: the server must assume a lost link and keep the session)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    out = {"sessions_abandoned": 0, "connect_errors": 0}

    async def worker() -> None:
        cfg = kcprpc.ClientConfig(metadata={"pad": PAD}, heartbeat=None)
        while loop.time() < deadline:
            client = kcprpc.connect(target.host, target.port, transport=target.transport(), config=cfg)
            try:
                await client.connect()
                await client.stub(AbuseService).join(RoomRequest(room=PUBLIC_ROOM))
                await client.subscribe(PUBLIC_TOPIC)
                link = client.lifecycle.link
                assert link is not None
                await link.conn.close()  # attack code: the link vanishes, the client says nothing
                out["sessions_abandoned"] += 1
            except (kcprpc.RpcError, OSError):
                out["connect_errors"] += 1
            finally:
                await client.close()

    await asyncio.gather(*(worker() for _ in range(16)))
    return out


ATTACKS = [
    Attack(
        name="resume-hoard",
        item=1,
        mode="secure",
        run=_hoard,
        description="sessions with 15 KB of metadata, a room and a topic, abandoned without a goodbye to be kept for a resume",
        settle=40.0,  # the default resume_window (30 s) and a sweep
    ),
]
