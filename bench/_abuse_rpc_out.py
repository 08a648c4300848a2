"""Attacks of the hostile-clients issue, item 4: clients that stop reading (``bench/abuse.py``).

- ``slow-subscriber``: clients subscribe to ``abuse.news`` and join ``abuse.lobby`` (the target
  publishes 512 bytes on each every 10 ms), then stop reading at the transport level: the mux
  reader of their connection is stopped, so the KCP session's read buffer fills, its receive
  window closes and the server's sends back up. Their heartbeats go on (pings are written, the
  server keeps receiving them), with a client-side timeout long enough never to give up first.
- ``unread-replies``: clients stop reading their control stream (the mux under it goes on, so
  their own sending is not held up by the window updates they would miss), then flood unary
  ``echo`` calls with 32 KiB payloads whose replies are never read.

A client the server ends is replaced by a new one (the attacker's best move), until the deadline.
Each attack returns its own counters: ``connects``, ``subscribed``, ``pings``, ``calls_sent``,
``bytes_sent``, ``ended_by_server`` and ``ended_slow_consumer`` (the server said why: a
RESOURCE_EXHAUSTED "slow consumer" status reached the client).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kcprpc
from bench._abuse_common import PUBLIC_ROOM, PUBLIC_TOPIC, AbuseService, Attack, EchoMsg, RoomRequest, Target
from kcprpc import codec

CLIENTS = 4
"""Attacking connections at once."""

ECHO_PAYLOAD = 32 * 1024
"""Payload of each unread echo call (its reply is as big)."""


def _config(seconds: float) -> kcprpc.ClientConfig:
    # the attacker keeps pinging and never gives up on its side
    return kcprpc.ClientConfig(
        heartbeat=kcprpc.HeartbeatConfig(interval=0.5, timeout=max(60.0, 4 * seconds)),
        connect_timeout=5.0,
    )


def _stop_reading(client: kcprpc.Client, *, transport: bool) -> None:
    """``transport``: stop feeding the mux from the KCP session (nothing is read off the KCP session
    any more: its receive window closes). Otherwise stop reading the control stream only: the mux
    goes on (the client still gets the window updates its own sending needs) while the server's
    replies and events wait behind the control stream's closed window."""
    link: Any = client.lifecycle.link
    if transport:
        link.conn.mux._reader.cancel()
    else:
        link.tasks[0].cancel()  # the control stream's reader (Lifecycle.connect_once starts it first)


class _Run:
    def __init__(self, target: Target, seconds: float) -> None:
        self.target = target
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + seconds
        self.seconds = seconds
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "connects",
                "connect_failures",
                "subscribed",
                "pings",
                "calls_sent",
                "bytes_sent",
                "ended_by_server",
                "ended_slow_consumer",
            ),
            0,
        )

    def left(self) -> float:
        return self.deadline - self.loop.time()

    async def one(self, flood: bool) -> None:
        """One attacking client at a time in this slot, replaced when the server ends it."""
        c = self.counters
        while self.left() > 0.5:
            ended = asyncio.Event()
            reason: list[str] = []

            def on_disconnect(
                _client: kcprpc.Client, why: str, reason: list[str] = reason, ended: asyncio.Event = ended
            ) -> None:
                reason.append(why)
                ended.set()

            try:
                client = await asyncio.wait_for(
                    kcprpc.connect(
                        self.target.host,
                        self.target.port,
                        config=_config(self.seconds),
                        transport=self.target.transport(),
                    ),
                    max(0.1, min(5.0, self.left())),
                )
            except (TimeoutError, kcprpc.RpcError, OSError):
                c["connect_failures"] += 1
                await asyncio.sleep(min(0.2, max(0.0, self.left())))
                continue
            c["connects"] += 1
            client.on_disconnect = on_disconnect
            try:
                await client.subscribe(PUBLIC_TOPIC)
                await client.stub(AbuseService).join(RoomRequest(room=PUBLIC_ROOM))
                c["subscribed"] += 1
                _stop_reading(client, transport=not flood)
                if flood:
                    await self.flood(client, ended)
                else:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(ended.wait(), max(0.0, self.left()))
            except kcprpc.RpcError:
                pass
            finally:
                hb = getattr(client.lifecycle.link, "hb", None)
                c["pings"] += int(getattr(hb, "_nonce", 0))
                if ended.is_set() or reason:
                    c["ended_by_server"] += 1
                    if any("slow consumer" in r for r in reason):
                        c["ended_slow_consumer"] += 1
                client.on_disconnect = None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), 2.0)

    async def flood(self, client: kcprpc.Client, ended: asyncio.Event) -> None:
        """Unary echo calls written straight onto the control stream; no reply is ever read."""
        c = self.counters
        link: Any = client.lifecycle.link
        spec = kcprpc.service_spec(AbuseService).methods["echo"]
        body = [
            spec.wire_name,
            None,
            None,
            codec.FLAG_END,
            spec.dump_request(EchoMsg(data=b"x" * ECHO_PAYLOAD)),
        ]
        cid = 1 << 30
        while not ended.is_set() and self.left() > 0:
            writer = link.writer
            for _ in range(16):
                cid += 1
                frame = codec.encode_frame(codec.CALL, cid, body)
                writer.send(frame)
                c["calls_sent"] += 1
                c["bytes_sent"] += len(frame)
            try:
                await asyncio.wait_for(writer.drain(), max(0.01, self.left()))
            except (TimeoutError, ConnectionError, OSError):
                return
            except Exception:
                return
            await asyncio.sleep(0)


async def _attack(target: Target, seconds: float, flood: bool) -> dict[str, int]:
    run = _Run(target, seconds)
    tasks = [asyncio.ensure_future(run.one(flood)) for _ in range(CLIENTS)]
    try:
        await asyncio.wait(tasks, timeout=seconds + 10.0)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return run.counters


async def slow_subscriber(target: Target, seconds: float) -> dict[str, int]:
    """Subscribe, join, stop reading, keep pinging."""
    return await _attack(target, seconds, flood=False)


async def unread_replies(target: Target, seconds: float) -> dict[str, int]:
    """Stop reading, then flood echo calls whose replies are never read."""
    return await _attack(target, seconds, flood=True)


_SLOW = (
    f"{CLIENTS} clients subscribe to {PUBLIC_TOPIC} and join {PUBLIC_ROOM}, then stop reading "
    "their KCP session (its receive window closes) while their pings go on"
)
_UNREAD = (
    f"{CLIENTS} clients stop reading their control stream, then flood echo calls of "
    f"{ECHO_PAYLOAD // 1024} KiB whose replies are never read"
)

ATTACKS: list[Attack] = [
    Attack(name="slow-subscriber", item=4, mode="secure", run=slow_subscriber, description=_SLOW),
    Attack(name="unread-replies", item=4, mode="secure", run=unread_replies, description=_UNREAD),
    # compat mode has no authenticated CLOSE: the slow consumer learns it from the GOAWAY datagram
    Attack(
        name="slow-subscriber-compat",
        item=4,
        mode="compat",
        run=slow_subscriber,
        description=_SLOW + " (compat mode)",
    ),
    Attack(
        name="unread-replies-compat",
        item=4,
        mode="compat",
        run=unread_replies,
        description=_UNREAD + " (compat mode)",
    ),
]
