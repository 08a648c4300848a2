"""What the docs' code blocks need that the page itself does not give them, by name. A block asks
for them with ``<!-- docs-test: with NAME, NAME -->`` above its fence. Each fixture is an async
context manager ``fixture(ctx)``: it may add names to the page's Python namespace (``ctx.ns``),
write files into the block's working folder (``ctx.cwd``) or run servers on 127.0.0.1 for the
block's duration. Everything runs inside the docs test's own network namespace when the machine
allows one, so the documented ports (9000, 4000 ...) are the docs test's alone."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


@dataclass
class Ctx:
    cwd: Path
    ns: dict[str, Any] = field(default_factory=dict)


Fixture = Callable[[Ctx], AbstractAsyncContextManager[None]]
FIXTURES: dict[str, Fixture] = {}


def fixture(name: str) -> Callable[[Callable[[Ctx], AsyncIterator[None]]], Fixture]:
    def register(fn: Callable[[Ctx], AsyncIterator[None]]) -> Fixture:
        FIXTURES[name] = asynccontextmanager(fn)
        return FIXTURES[name]

    return register


class Line(BaseModel):
    text: str = Field(max_length=100)


@fixture("examples-server")
async def examples_server(ctx: Ctx) -> AsyncIterator[None]:
    """The quickstart, game and live examples and a streaming ``test.Echo`` on 127.0.0.1:9000, no
    key (secure mode, anonymous), publisher token ``secret``; a chat on ``channel:demo`` every 50 ms."""
    import kcprpc
    from examples.game.service import GameService, World
    from examples.live.service import Chat, LiveService, publisher_auth, topic
    from examples.quickstart.service import Greeter

    class Echo(kcprpc.Service, name="test.Echo"):
        async def shout(self, lines: AsyncIterator[Line]) -> AsyncIterator[Line]:
            async for line in lines:
                yield Line(text=line.text.upper())

    world = World()  # the game's matches stop with the server (its rooms' lifespan)
    server = kcprpc.Server(
        [Greeter(), GameService(world), world.states, LiveService(), Echo()],
        "127.0.0.1",
        9000,
        interceptors=[publisher_auth("secret")],
        lifespan=world.rooms.lifespan,
    )
    await server.start()

    async def publish() -> None:
        n = 0
        while True:
            n += 1
            await server.push.publish(topic("demo"), Chat(channel="demo", user="bot", text=f"tick {n}"))
            await asyncio.sleep(0.05)

    task = asyncio.ensure_future(publish())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await server.shutdown(grace=0.5)


@fixture("request-files")
async def request_files(ctx: Ctx) -> AsyncIterator[None]:
    """``chat.json`` (a live.v1.Live.chat request) and ``lines.jsonl`` (two test.Echo lines)."""
    (ctx.cwd / "chat.json").write_text(json.dumps({"channel": "demo", "user": "ann", "text": "hi"}))
    (ctx.cwd / "lines.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    yield


@fixture("mymodule")
async def mymodule(ctx: Ctx) -> AsyncIterator[None]:
    """``mymodule.py`` with ``app = [Greeter()]`` (the reader's own module)."""
    (ctx.cwd / "mymodule.py").write_text(
        "from examples.quickstart.service import Greeter\n\napp = [Greeter()]\n"
    )
    yield


@fixture("kcp-echo-4000")
async def kcp_echo(ctx: Ctx) -> AsyncIterator[None]:
    """A kcp-go style echo listener on 127.0.0.1:4000 (cipher aes, key ``secret``, FEC 10/3)."""
    import kcp

    async def echo(session: kcp.KCPSession) -> None:
        while data := await session.read(65536):
            session.write(data)
            await session.drain()

    lis = await kcp.listen(
        "127.0.0.1", 4000, kcp.CompatWire(crypt="aes", key="secret", fec=(10, 3)), on_accept=echo
    )
    try:
        yield
    finally:
        lis.close()


@fixture("rpc-names")
async def rpc_names(ctx: Ctx) -> AsyncIterator[None]:
    """Names rpc.md's snippets use without defining: ``host``, ``port`` (a second server's,
    127.0.0.1:9001) and ``may_enter`` (the app's own room check)."""
    ctx.ns.setdefault("host", "127.0.0.1")
    ctx.ns.setdefault("port", 9001)
    ctx.ns.setdefault("may_enter", lambda session, room: room.startswith("r"))
    yield


@fixture("engine-names")
async def engine_names(ctx: Ctx) -> AsyncIterator[None]:
    """engine.md's names: ``KCP``, ``conv``, ``transport_send`` (collects datagrams), ``now`` (ms),
    ``data``, and ``datagram`` (a peer's packet carrying ``data``)."""
    from kcp.engine import KCP

    peer_out: list[bytes] = []
    peer = KCP(7, output=peer_out.append)
    peer.send(b"hello from the peer")
    peer.update(0)
    peer.flush(0)
    sent: list[bytes] = []
    ctx.ns.update(KCP=KCP, conv=7, transport_send=sent.append, now=0, data=b"hello", datagram=peer_out[0])
    yield


def _brokers_on_path() -> None:
    """Make tests/brokers' server classes importable (redis_server, nats_server)."""
    import sys

    path = str(Path(__file__).resolve().parents[1] / "brokers")
    if path not in sys.path:
        sys.path.insert(0, path)


@asynccontextmanager
async def _server_in_env(var: str, make: Callable[[], Any], url: Callable[[Any], str]) -> AsyncIterator[None]:
    """Start the server ``make()`` gives (on a free port of 127.0.0.1) and put ``url(server)`` in
    the environment as ``var``; at the end the old value is put back and the server closed."""
    import os

    server = await asyncio.to_thread(lambda: make().start())
    old = os.environ.get(var)
    os.environ[var] = url(server)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = old
        await asyncio.to_thread(server.close)


@fixture("redis")
async def redis(ctx: Ctx) -> AsyncIterator[None]:
    """A redis-server on a free port of 127.0.0.1 (tests/brokers/redis_server.py), its URL in the
    environment as ``REDIS_URL``."""
    _brokers_on_path()
    from redis_server import RedisServer

    async with _server_in_env("REDIS_URL", RedisServer, lambda s: s.url()):
        yield


@fixture("nats")
async def nats_server(ctx: Ctx) -> AsyncIterator[None]:
    """A nats-server with JetStream on a free port of 127.0.0.1 (tests/brokers/nats_server.py),
    its URL in the environment as ``NATS_URL``."""
    _brokers_on_path()
    from nats_server import NatsServer

    async with _server_in_env("NATS_URL", NatsServer, lambda s: s.url):
        yield


@fixture("dev-cert")
async def dev_cert(ctx: Ctx) -> AsyncIterator[None]:
    """``dev-cert/cert.pem`` and ``dev-cert/key.pem`` in the block's folder (what ``kcprpc web-cert
    --out dev-cert`` writes: an earlier block of the page may have made them), and the block runs
    in that folder (a Python block's relative paths are the reader's current folder)."""
    import os

    from kcprpc.web.certs import make_dev_certificate

    if not (ctx.cwd / "dev-cert" / "cert.pem").exists():
        make_dev_certificate().write(ctx.cwd / "dev-cert")
    old = os.getcwd()
    os.chdir(ctx.cwd)
    try:
        yield
    finally:
        os.chdir(old)
