"""What the web tests share (tests/integration/test_web_*.py, tests/browser/test_webtransport_chromium.py):
the WebTransport test service, a development certificate, a server with a WebTransport listener,
a server whose SecureWire authorizes tokens (the hook a web client's OPEN token goes to), the
fast client config of the reconnect tests, and a bounded wait on a condition."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import kcprpc
from kcp.secure import SecureConfig
from kcprpc import current_context
from kcprpc.web.certs import DevCertificate, make_dev_certificate
from kcprpc.web.options import WebTransportOptions
from kcprpc.web.webtransport import WebTransportListener, listen_webtransport


@kcprpc.event("wt.tick")
class Tick(BaseModel):
    n: int


@kcprpc.event("wt.pos", delivery="unreliable")
class Pos(BaseModel):
    x: int


class Svc(kcprpc.Service, name="wt.Svc"):
    """The WebTransport tests' service: calls of every kind, pushes, an unreliable event."""

    async def echo(self, text: str) -> str:
        return text.upper()

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async def total(self, nums: AsyncIterator[int]) -> int:
        return sum([n async for n in nums])

    async def shout(self, words: AsyncIterator[str]) -> AsyncIterator[str]:
        async for w in words:
            yield w.upper()

    async def ticks(self, n: int) -> int:
        for i in range(n):
            current_context().session.send(Tick(n=i))
        return n

    async def pos(self, x: int) -> int:
        """Sends ``Pos(x)`` (unreliable) to the caller; returns ``x + 1``."""
        current_context().session.send(Pos(x=x))
        return x + 1

    async def big(self, n: int) -> bytes:
        return b"x" * n

    @kcprpc.rpc.notify
    async def moved(self, x: int) -> None:
        self.moves.put_nowait(x)

    def __init__(self) -> None:
        self.moves: asyncio.Queue[int] = asyncio.Queue()


Cert = tuple[DevCertificate, Path, Path]
"""A development certificate and its PEM files (certificate, key)."""


def dev_cert(out_dir: Path) -> Cert:
    """A new development certificate (3 days, localhost and 127.0.0.1) written into ``out_dir``."""
    dev = make_dev_certificate(days=3)
    cert_path, key_path = dev.write(out_dir)
    return dev, cert_path, key_path


Started = tuple[kcprpc.Server, WebTransportListener, DevCertificate]


@contextlib.asynccontextmanager
async def running(cert: Cert, **opts: Any) -> AsyncIterator[Started]:
    """A started Server serving :class:`Svc` (``key`` and ``config`` from ``opts``) with a
    WebTransport listener on a free port of 127.0.0.1 (the rest of ``opts`` are its
    WebTransportOptions); shut down at the end."""
    dev, cert_path, key_path = cert
    key = opts.pop("key", "wt test passphrase")
    exempt = opts.pop("exempt", None)  # SecureConfig.exempt (the limits per address), else loopback
    wire = kcprpc.SecureWire(key=key, config=SecureConfig(exempt=exempt) if exempt is not None else None)
    server = kcprpc.Server(
        [Svc()], "127.0.0.1", 0, transport=kcprpc.Transport(wire), config=opts.pop("config", None)
    )
    await server.start()
    try:
        options = WebTransportOptions(certificate=cert_path, private_key=key_path, **opts)
        listener = await listen_webtransport(server, "127.0.0.1", 0, options)
        yield server, listener, dev
    finally:
        await server.shutdown(grace=0.5)


def letmein(token: bytes, key: bytes | None, address: Any) -> str | None:
    """The authorize hook of the token tests: the token ``letmein`` passes, any other is refused
    with "unknown token". A web client's token comes without a static key, from 127.0.0.1."""
    assert key is None and address[0] == "127.0.0.1"
    return None if token == b"letmein" else "unknown token"


@contextlib.asynccontextmanager
async def authorizing_server(
    services: Sequence[kcprpc.Service],
) -> AsyncIterator[tuple[kcprpc.Server, list[str]]]:
    """A started Server (KCP on a free port) whose SecureWire authorizes tokens with
    :func:`letmein`, and the ids of the sessions its ``on_connect`` saw; shut down at the end."""
    connected: list[str] = []
    server = kcprpc.Server(
        list(services),
        "127.0.0.1",
        0,
        transport=kcprpc.Transport(kcprpc.SecureWire(key="k", authorize=letmein)),
        on_connect=lambda s: connected.append(s.id),
    )
    await server.start()
    try:
        yield server, connected
    finally:
        await server.shutdown(grace=0.5)


FAST = kcprpc.ClientConfig(
    heartbeat=kcprpc.HeartbeatConfig(interval=0.05, timeout=2.0),
    reconnect=kcprpc.ReconnectPolicy(initial=0.01, maximum=0.05),
)
"""A client that notices a lost connection and reconnects quickly (the reconnect tests)."""


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``cond()`` holds: checked after each event-loop turn, bounded."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)  # a turn of the loop; the condition is what is waited on
