"""Test helpers: a real :class:`~kcprpc.client.Client` and :class:`~kcprpc.server.Server` in memory.

::

    async with kcprpc.testing.pair([Greeter()]) as p:
        greeter = p.client.stub(Greeter)
        assert (await greeter.hello(HelloRequest(name="a"))).text == "hello a"

``link="memory"`` (default) uses :mod:`kcprpc.memory`; ``link="mux"`` runs the real smux
implementation (``transport.mux``) over an in-memory pipe; ``link="kcp"`` serves ``transport`` on
127.0.0.1 over real KCP, and the client dials with the matching client side of it
(:func:`client_transport`; there ``drop`` closes the client side; ``blackhole`` needs ``memory``
or ``mux``). Every (re)connect of the client makes a new connection, so :meth:`RpcPair.blackhole`
/ :meth:`RpcPair.drop` exercise heartbeats and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any, Literal

from kcprpc.client import Client, ClientConfig
from kcprpc.config import CompatWire, SecureWire, Transport
from kcprpc.interceptors import ClientInterceptor, ServerInterceptor
from kcprpc.memory import MemoryConnection, connection_pair
from kcprpc.server import Server, ServerConfig
from kcprpc.transport import Connection

Link = Literal["memory", "mux", "kcp"]


def client_transport(server: Server) -> Transport:
    """The client side of ``server.transport``: the same session, mux and wire settings (a compat
    wire as it is; a secure wire's key and FEC, pinning the server's public key if it has one)."""
    t = server.transport
    wire: CompatWire | SecureWire = t.wire
    if isinstance(wire, SecureWire):
        wire = SecureWire(key=wire.key, server_public_key=server.public_key, fec=wire.fec, config=wire.config)
    return replace(t, wire=wire, io=replace(t.io, reuse_port=False))


class RpcPair:
    """A client and a server joined in memory."""

    def __init__(
        self,
        server: Server,
        link: Link,
        datagram_loss: float,
        seed: int,
    ) -> None:
        self.server = server
        self.link = link
        self.datagram_loss = datagram_loss
        self.seed = seed
        self.connections: list[tuple[Connection, Connection]] = []
        self.refuse = False  # while True, connecting fails with ConnectionRefusedError
        self.client: Client = None  # type: ignore[assignment]
        self._tasks: set[asyncio.Task[None]] = set()

    async def connector(self) -> Connection:
        """Make a new connection and serve its server side."""
        if self.refuse:
            raise ConnectionRefusedError("refused (test)")
        c: Connection
        s: Connection
        if self.link == "kcp":
            from kcprpc.net import dial

            srv = self.server
            assert srv.address is not None
            c = await dial(*srv.address, client_transport(srv))
            self.connections.append((c, c))
            return c  # the server side is accepted by the server's own listener
        if self.link == "mux":
            from kcprpc.memory import mux_memory_pair

            c, s = mux_memory_pair(self.server.transport.mux)
        else:
            c, s = connection_pair(loss=self.datagram_loss, seed=self.seed + len(self.connections))
        self.connections.append((c, s))
        t = asyncio.ensure_future(self.server.handle_connection(s))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return c

    @property
    def current(self) -> tuple[Connection, Connection]:
        """The latest (client side, server side) connection."""
        return self.connections[-1]

    def blackhole(self) -> None:
        """Both sides of the current connection go silent (no EOF): only heartbeats can notice."""
        for conn in self.current:
            if isinstance(conn, MemoryConnection):
                conn.blackhole()
            else:
                t = getattr(getattr(conn, "mux", None), "transport", None)
                if t is not None and hasattr(t, "blackhole"):
                    t.blackhole()

    async def drop(self) -> None:
        """Close the current connection abruptly (its server side; the client side over KCP)."""
        await self.current[1].close()

    async def wait_server_idle(self) -> None:
        """Wait until the server has no session left."""
        while self.server.sessions:
            await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def pair(
    services: Sequence[object],
    *,
    transport: Transport | None = None,
    link: Link = "memory",
    server_config: ServerConfig | None = None,
    client_config: ClientConfig | None = None,
    server_interceptors: Sequence[ServerInterceptor] = (),
    client_interceptors: Sequence[ClientInterceptor] = (),
    datagram_loss: float = 0.0,
    seed: int = 0,
    **server_kwargs: Any,
) -> AsyncIterator[RpcPair]:
    """Yield a connected :class:`RpcPair` over ``link``; everything is closed on exit.
    ``transport`` is the server's (``link="kcp"``: all of it; ``"mux"``: its ``mux`` config);
    ``server_kwargs`` go to :class:`Server` (``broker``, ``on_connect`` ...)."""
    if link == "kcp":
        server_kwargs.setdefault("host", "127.0.0.1")
        server_kwargs.setdefault("port", 0)
    server = Server(
        services, transport=transport, config=server_config, interceptors=server_interceptors, **server_kwargs
    )
    if link == "kcp":
        await server.start()
    p = RpcPair(server, link, datagram_loss, seed)
    client = Client(p.connector, config=client_config, interceptors=client_interceptors)
    p.client = client
    await client.connect()
    try:
        yield p
    finally:
        await client.close()
        await server.shutdown(grace=0)
        for t in list(p._tasks):
            t.cancel()
        await asyncio.gather(*p._tasks, return_exceptions=True)
