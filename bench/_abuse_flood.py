"""Floods of authenticated datagrams (hostile-clients issue: "CPU under attack stays bounded;
legitimate clients keep being served").

- ``ping-flood``: connections that hold the key, from one address, send authenticated keepalive
  PINGs (each of which the server must decrypt and answer) as fast as their process can seal
  them. Under load the server processes at most ``SecureConfig.datagram_rate`` of one address's
  datagrams a second and drops the rest before decrypting them
  (``secure_datagrams_rate_limited``); before that bound one such client took the server's core
  and the legitimate client's p99 went from 2 ms to 0.4 s.
- ``call-flood``: RPC connections that hold the key, from one address, make trivial unary calls,
  hundreds in flight each. Their datagrams stay under that budget (many calls ride in one), so
  only ``ServerConfig.max_concurrent_calls`` bounds them: the measure is what the legitimate
  client's latency becomes.
- ``call-spray``: the same connections write CALL frames straight onto their control streams, as
  fast as Python encodes them, and never read a reply: the most calls one key holder's
  connection makes the server start or refuse.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import kcprpc
from bench._abuse_common import ATTACKER_HOST, AbuseService, Attack, EchoMsg, Target
from bench._abuse_secure import connected, now_ms
from kcp.secure.packet import KEEPALIVE_PROBE
from kcprpc import codec

_CONNECTIONS = 2
_BATCH = 64


async def ping_flood(target: Target, seconds: float) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    out = {"connections": 0, "handshake_failed": 0, "sent": 0, "send_full": 0, "closed_by_server": 0}

    async def one() -> None:
        async with connected(target, deadline, out, source=ATTACKER_HOST) as (sock, conn):
            if conn is None:
                return
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the answers: never read
            n = 0
            while loop.time() < deadline and not conn.closed:
                now = now_ms()
                for _ in range(_BATCH):
                    n += 1
                    try:
                        sock.send(conn.ping(now, probe_id=KEEPALIVE_PROBE | n))
                        out["sent"] += 1
                    except OSError:  # the socket's buffer is full: this one is not sent
                        out["send_full"] += 1
                await asyncio.sleep(0)
            out["closed_by_server"] += conn.closed

    await asyncio.gather(*(one() for _ in range(_CONNECTIONS)))
    return out


_IN_FLIGHT = 256
_SPRAY_BACKLOG = 1 << 20  # call-spray: bytes the attacker lets wait in its connection before it yields


async def _each_client(
    target: Target,
    seconds: float,
    out: dict[str, int],
    attack: Callable[[kcprpc.Client, float], Awaitable[None]],
) -> None:
    """``attack(client, deadline)`` on ``_CONNECTIONS`` RPC clients from :data:`ATTACKER_HOST` at
    once, each connected first (``out``: ``connections``, and ``errors`` for a connect or an
    attack that ended with an RPC or connection error); every client is closed at the end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    transport = target.attacker_transport()

    async def one() -> None:
        client = kcprpc.connect(target.host, target.port, transport=transport)
        try:
            await asyncio.wait_for(client.connect(), max(0.1, deadline - loop.time()))
            out["connections"] += 1
            await attack(client, deadline)
        except (TimeoutError, kcprpc.RpcError, ConnectionError):
            out["errors"] += 1
        finally:
            await client.close()

    await asyncio.gather(*(one() for _ in range(_CONNECTIONS)))


async def call_flood(target: Target, seconds: float) -> dict[str, int]:
    """Unary calls as fast as the client library makes them, ``_IN_FLIGHT`` at a time per
    connection: the handler is trivial, so the server's cost is the call path itself."""
    loop = asyncio.get_running_loop()
    out = {"connections": 0, "calls": 0, "refused": 0, "errors": 0}
    msg = EchoMsg(data=b"x" * 16)

    async def flood(client: kcprpc.Client, deadline: float) -> None:
        stub = client.stub(AbuseService)

        async def caller() -> None:
            while loop.time() < deadline:
                try:
                    await stub.echo(msg)
                    out["calls"] += 1
                except kcprpc.RpcError as exc:
                    out["refused" if exc.status is kcprpc.Status.RESOURCE_EXHAUSTED else "errors"] += 1

        await asyncio.gather(*(caller() for _ in range(_IN_FLIGHT)))

    await _each_client(target, seconds, out, flood)
    return out


async def call_spray(target: Target, seconds: float) -> dict[str, int]:
    """CALL frames written straight onto the control stream as fast as Python encodes them, never
    waiting for a reply (the client library's own bookkeeping left out): the most calls a key
    holder's connection can make the server start or refuse."""
    loop = asyncio.get_running_loop()
    out = {"connections": 0, "frames": 0, "errors": 0}
    body = ["abuse.Target/echo", None, None, codec.FLAG_END, {"data": b"x"}]

    async def spray(client: kcprpc.Client, deadline: float) -> None:
        link = client.lifecycle.link
        assert link is not None
        writer = link.writer
        cid = 1_000_001  # far above the client's own ids; the replies are ignored as stale
        while loop.time() < deadline and not link.closed:
            for _ in range(256):
                writer.send(codec.encode_frame(codec.CALL, cid, body))
                cid += 2
                out["frames"] += 1
            writer.flush()
            await asyncio.sleep(0)
            while writer.stream_backlog() > _SPRAY_BACKLOG and loop.time() < deadline:
                await asyncio.sleep(0.001)  # the connection's window is full: let it drain

    await _each_client(target, seconds, out, spray)
    return out


ATTACKS: list[Attack] = [
    Attack(
        name="ping-flood",
        item=5,
        mode="secure",
        run=ping_flood,
        description=(
            f"{_CONNECTIONS} connections from one address send authenticated keepalive PINGs "
            "as fast as they can seal them"
        ),
    ),
    Attack(
        name="call-flood",
        item=5,
        mode="secure",
        run=call_flood,
        description=f"{_CONNECTIONS} connections from one address make trivial unary calls, {_IN_FLIGHT} in flight each",
    ),
    Attack(
        name="call-spray",
        item=5,
        mode="secure",
        run=call_spray,
        description=f"{_CONNECTIONS} connections from one address write CALL frames as fast as Python encodes them, never reading a reply",
    ),
]
