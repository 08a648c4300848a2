"""A kcprpc server for the TypeScript client's end-to-end tests, on 127.0.0.1 and an OS-chosen port.

``python tests/clients/ts_app.py [--port N] [transport flags, e.g. --wire compat --crypt aes --key k]``
prints ``PORT <n>`` and serves until stdin closes or it is killed (so it never outlives the test
that started it). It covers every call kind (``ts.App`` and the quickstart's greeter), every
failure status (``ts.App/fail`` raises the code it is given; validation, handler crash, unknown
method, server deadline, refusal at connect with the HELLO token ``"refuse"``), pushes to the
session, a room and a topic, a keyed (latest-wins) event, unreliable events over datagrams, and
an unreliable notify the client can read back (``ts.App/notes``). ``--ws HOST:PORT`` also
listens for WebSocket clients (``kcprpc.web``) and prints ``WS <port>``; ``--ack-hold MS`` asks
the clients to hold their acks (``ServerConfig.ack_hold``); ``--max-streams-total N`` refuses call
streams past N (``ServerConfig.max_streams_total``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

sys.path.append(str(Path(__file__).resolve().parents[2]))  # the checkout, after an installed kcprpc

import kcprpc
from examples.quickstart.service import Greeter
from kcprpc import rpc
from kcprpc.cli.flags import add_transport_args, build_transport
from tests.integration.cli_server import serve_until_stdin_closes


@kcprpc.event("ts.Note")
class Note(BaseModel):
    text: str


@kcprpc.event("ts.Chat")
class Chat(BaseModel):
    text: str


@kcprpc.event("ts.Pos", delivery="unreliable", key="entity")
class Pos(BaseModel):
    entity: int
    x: int


@kcprpc.event("ts.Blip", delivery="unreliable")
class Blip(BaseModel):
    n: int


class FailRequest(BaseModel):
    code: int
    message: str = ""


class App(kcprpc.Service, name="ts.App"):
    """Every call kind and failure, and pushes."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.server: kcprpc.Server | None = None

    async def echo(self, value: Any) -> dict[str, Any]:
        """Unary: the request and the call's metadata back."""
        md = kcprpc.current_context().metadata
        return {"got": value, "md": {str(k): v for k, v in md.items()}}

    async def count(self, to: int) -> AsyncIterator[int]:
        """Server streaming: 1..to."""
        for n in range(1, to + 1):
            yield n

    async def total(self, nums: AsyncIterator[int]) -> int:
        """Client streaming: the sum."""
        return sum([n async for n in nums])

    async def shout(self, lines: AsyncIterator[str]) -> AsyncIterator[str]:
        """Bidi: each line back in upper case."""
        async for line in lines:
            yield line.upper()

    async def fail(self, req: FailRequest) -> None:
        """Fails with the status code it is given."""
        raise kcprpc.RpcError(kcprpc.Status(req.code), req.message, details={"code": req.code})

    async def crash(self) -> None:
        """An exception in a handler: INTERNAL."""
        raise ValueError("boom")

    async def sleep(self, ms: int) -> int:
        """Answers after ``ms`` (the server cancels it at the call's deadline)."""
        await asyncio.sleep(ms / 1000)
        return ms

    async def join(self, room: str) -> None:
        """Join a room (the client gets a ROOMS frame)."""
        kcprpc.current_context().session.join(room)

    async def push(self, room: str, topic: str) -> None:
        """One event to this session, one to the room, one to the topic, keyed and unreliable ones."""
        assert self.server is not None
        session = kcprpc.current_context().session
        session.send(Note(text="to you"))
        await self.server.push.to_room(room, Chat(text="to the room"))
        await self.server.push.publish(topic, Chat(text="to the topic"))
        for x in range(3):
            session.send(Pos(entity=42, x=x))
        session.send(Blip(n=1))
        session.send(Note(text="keyed"), key="k1", delivery="reliable")

    async def notes_to_me(self, count: int, every_ms: int) -> int:
        """``count`` reliable notes to this session, one every ``every_ms``: a push stream the
        client only receives (the heartbeat's subscriber case)."""
        session = kcprpc.current_context().session
        for i in range(count):
            session.send(Note(text=str(i)), delivery="reliable")
            await asyncio.sleep(every_ms / 1000)
        return count

    @rpc.notify
    async def note(self, text: str) -> None:
        """Fire-and-forget (unreliable by default): recorded for ``notes``."""
        self.notes.append(text)

    @rpc.notify
    async def drop(self) -> None:
        """Drop this session's connection at once, as a lost network would (the client
        reconnects and resumes)."""
        await kcprpc.current_context().session.conn.abort()

    @rpc.notify
    async def notes_then_drop(self, count: int) -> None:
        """``count`` reliable notes to this session, then its connection dropped in the same turn:
        the transport never sends them (the resume must)."""
        session = kcprpc.current_context().session
        for i in range(count):
            session.send(Note(text=str(i)), delivery="reliable")
        await session.conn.abort()

    async def notes_seen(self) -> list[str]:
        """The notes received so far."""
        return list(self.notes)


def refuse(session: Any) -> None:
    """Refuse a HELLO whose metadata carries token "refuse"."""
    if session.metadata.get("token") == "refuse":
        raise kcprpc.RpcError(kcprpc.Status.UNAUTHENTICATED, "bad token")


def restore(session: Any, rooms: list[str], topics: list[str]) -> None:
    """Rooms come back after a reconnect."""
    for room in rooms:
        session.join(room)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0, help="UDP port (default: one the OS picks)")
    ap.add_argument(
        "--ws",
        default=None,
        metavar="HOST:PORT",
        help="also listen for WebSocket clients (prints WS <port>); OPEN token 'refuse' is refused",
    )
    ap.add_argument(
        "--ack-hold", type=int, default=0, help="ServerConfig.ack_hold: ask clients to hold acks (ms)"
    )
    ap.add_argument(
        "--per-address",
        type=int,
        default=None,
        help="ServerConfig.max_connections_per_address, with no address exempt (not even loopback)",
    )
    ap.add_argument(
        "--max-streams-total",
        type=int,
        default=None,
        help="ServerConfig.max_streams_total: call streams past it are refused (closed at once)",
    )
    add_transport_args(ap)
    args = ap.parse_args()
    app = App()
    transport = build_transport(args)
    limits: dict[str, Any] = {"ack_hold": args.ack_hold}
    if args.per_address is not None:
        limits["max_connections_per_address"] = args.per_address
        if isinstance(transport.wire, kcprpc.SecureWire):
            transport = dataclasses.replace(transport, wire=transport.wire.with_config(exempt=()))
    if args.max_streams_total is not None:
        limits["max_streams_total"] = args.max_streams_total
    server = kcprpc.Server(
        [app, Greeter()],
        "127.0.0.1",
        args.port,
        transport=transport,
        on_connect=refuse,
        on_restore=restore,
        config=kcprpc.ServerConfig(**limits),
    )
    app.server = server
    if args.ws is not None:
        host, _, port = args.ws.rpartition(":")
        await serve_until_stdin_closes(server, lambda: _listen_websocket(server, host, int(port)))
    else:
        await serve_until_stdin_closes(server)


def authorize_web(token: bytes, static_key: bytes | None, address: Any) -> str | None:
    """The web listener's hook: the OPEN token ``refuse`` is refused (UNAUTHENTICATED)."""
    return "bad web token" if token == b"refuse" else None


async def _listen_websocket(server: kcprpc.Server, host: str, port: int) -> None:
    from kcprpc.web import WebSocketOptions, listen_websocket

    listener = await listen_websocket(server, host, port, WebSocketOptions(authorize=authorize_web))
    print(f"WS {listener.address[1]}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
