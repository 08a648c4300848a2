"""A server for the CLI tests: the quickstart, game and live examples on 127.0.0.1, an OS-chosen port.

``python tests/integration/cli_server.py [--no-reflection] [transport flags]`` prints
``PORT <n>`` and serves until stdin closes (so it never outlives the test that started it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import kcprpc
from examples.game.service import GameService, World
from examples.live.service import LiveService, publisher_auth
from examples.quickstart.service import Greeter
from kcprpc.cli.flags import add_transport_args, build_transport

TOKEN = "publisher-secret"


class Line(BaseModel):
    text: str = Field(max_length=100)


class Echo(kcprpc.Service, name="test.Echo"):
    """Streaming requests for the CLI tests."""

    async def shout(self, lines: AsyncIterator[Line]) -> AsyncIterator[Line]:
        """Bidirectional: each line back in upper case."""
        async for line in lines:
            yield Line(text=line.text.upper())

    async def total(self, lines: AsyncIterator[Line]) -> int:
        """Client streaming: the total length of the lines."""
        return sum([len(line.text) async for line in lines])

    async def who(self) -> dict[str, str]:
        """The call's metadata."""
        md = kcprpc.current_context().metadata
        return {str(k): str(v) for k, v in md.items()}


def make_server(reflection: bool, transport: kcprpc.Transport) -> kcprpc.Server:
    """The three example services and a streaming echo service."""
    world = World()  # the game's matches stop with the server (its rooms' lifespan)
    server = kcprpc.Server(
        [Greeter(), GameService(world), world.states, LiveService(), Echo()],
        "127.0.0.1",
        0,
        interceptors=[publisher_auth(TOKEN)],
        lifespan=world.rooms.lifespan,
        reflection=reflection,
        transport=transport,
    )
    return server


async def serve_until_stdin_closes(
    server: kcprpc.Server, started: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Start ``server``, run ``started`` (e.g. more listeners), print ``PORT <n>``, serve until
    stdin closes (the test's end), then shut down."""
    _, port = await server.start()
    if started is not None:
        await started()
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.shutdown(grace=0.5)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-reflection", action="store_true")
    add_transport_args(ap)
    args = ap.parse_args()
    await serve_until_stdin_closes(make_server(not args.no_reflection, build_transport(args)))


if __name__ == "__main__":
    asyncio.run(main())
