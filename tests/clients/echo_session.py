"""The echo loop the TypeScript tests' KCP servers share (kcp_echo_server.py, secure_echo_server.py).

Not collected by pytest; imported by those scripts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

import kcp

#: What a server's hook did with one read: ``"echo"`` it as usual, ``"next"`` it is handled (read
#: on), ``"stop"`` the session is done.
Outcome = Literal["echo", "next", "stop"]
Hook = Callable[[kcp.KCPSession, bytes], Awaitable[Outcome]]


async def echo_datagrams(session: kcp.KCPSession) -> None:
    """Send every out-of-band datagram of ``session`` back to it until it closes."""
    while True:
        try:
            d = await session.recv_datagram()
        except kcp.ConnectionClosedError:
            return
        session.send_datagram(d)


async def echo(session: kcp.KCPSession, hook: Hook | None = None) -> None:
    """Echo ``session``'s stream bytes and datagrams back to it until it closes; ``hook`` sees each read first."""
    task = asyncio.create_task(echo_datagrams(session))
    try:
        while True:
            data = await session.read(65536)
            if not data:
                return
            outcome: Outcome = "echo" if hook is None else await hook(session, data)
            if outcome == "stop":
                return
            if outcome == "next":
                continue
            session.write(data)
            await session.drain()
    finally:
        task.cancel()
