"""Game service: join/leave/move as unary calls, positions as unreliable notifications, and a
world snapshot pushed to every room at 20 Hz."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

import kcprpc
from kcprpc import RpcError, ServerSession, Status, current_context, rpc

TICK_HZ = 20
WORLD = 100.0


class JoinRequest(BaseModel):
    room: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=32)


class JoinReply(BaseModel):
    player_id: int
    room: str
    tick_hz: int
    x: float
    y: float


class MoveRequest(BaseModel):
    dx: float = Field(ge=-5, le=5)
    dy: float = Field(ge=-5, le=5)


class MoveReply(BaseModel):
    x: float
    y: float


class PositionUpdate(BaseModel):
    """Sent ~20 times a second by each client as an unreliable notification; newest wins."""

    seq: int
    x: float
    y: float


class PlayerState(BaseModel):
    id: int
    name: str
    x: float
    y: float


@kcprpc.event("game.snapshot")
class WorldSnapshot(BaseModel):
    tick: int
    server_time: float
    players: list[PlayerState]


@dataclass
class Player:
    id: int
    name: str
    room: str
    x: float = WORLD / 2
    y: float = WORLD / 2
    last_seq: int = -1
    away: bool = False  # its connection was lost: the seat is kept until it resumes or SEAT_SECONDS pass


@dataclass
class World:
    """All rooms and players of one server process."""

    rooms: dict[str, dict[int, Player]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    tick: int = 0
    positions_applied: int = 0
    positions_stale: int = 0

    def remove(self, player: Player) -> None:
        room = self.rooms.get(player.room)
        if room is not None:
            room.pop(player.id, None)
            if not room:
                del self.rooms[player.room]


def _clamp(v: float) -> float:
    return min(WORLD, max(0.0, v))


class GameService(kcprpc.Service, name="game.v1.Game", events=[WorldSnapshot]):
    """The game's RPC surface."""

    def __init__(self, world: World | None = None) -> None:
        self.world = world or World()

    @staticmethod
    def _player(session: ServerSession | None = None) -> Player:
        sess = session or current_context().session
        p = sess.state.get("player")
        if not isinstance(p, Player):
            raise RpcError(Status.FAILED_PRECONDITION, "join a room first")
        return p

    async def join(self, req: JoinRequest) -> JoinReply:
        sess = current_context().session
        if isinstance(sess.state.get("player"), Player):
            raise RpcError(Status.ALREADY_EXISTS, "already in a room")
        p = Player(id=next(self.world.ids), name=req.name, room=req.room)
        self.world.rooms.setdefault(req.room, {})[p.id] = p
        sess.state["player"] = p
        sess.join(req.room)
        return JoinReply(player_id=p.id, room=req.room, tick_hz=TICK_HZ, x=p.x, y=p.y)

    async def leave(self) -> None:
        sess = current_context().session
        p = self._player(sess)
        sess.leave(p.room)
        self.world.remove(p)
        del sess.state["player"]

    async def move(self, req: MoveRequest) -> MoveReply:
        p = self._player()
        p.x, p.y = _clamp(p.x + req.dx), _clamp(p.y + req.dy)
        return MoveReply(x=p.x, y=p.y)

    @rpc.notify
    async def position(self, upd: PositionUpdate) -> None:
        sess = current_context().session
        p = sess.state.get("player")
        if not isinstance(p, Player):
            return
        if upd.seq <= p.last_seq:  # late or duplicated datagram: newest wins
            self.world.positions_stale += 1
            return
        p.last_seq = upd.seq
        p.x, p.y = _clamp(upd.x), _clamp(upd.y)
        self.world.positions_applied += 1


async def run_ticker(server: kcprpc.Server, world: World, hz: int = TICK_HZ) -> None:
    """Push a snapshot of every room to its members ``hz`` times a second (on a fixed schedule)."""
    loop = asyncio.get_running_loop()
    period = 1.0 / hz
    next_at = loop.time()
    while True:
        world.tick += 1
        now = time.time()
        for room, players in list(world.rooms.items()):
            snap = WorldSnapshot(
                tick=world.tick,
                server_time=now,
                players=[PlayerState(id=p.id, name=p.name, x=p.x, y=p.y) for p in players.values()],
            )
            await server.push.to_room(room, snap)
        next_at += period
        await asyncio.sleep(max(0.0, next_at - loop.time()))


SEAT_SECONDS = 30.0
"""How long a player whose connection dropped keeps their seat (their session waits for a resume)."""

KEY = "game example passphrase"
"""The shared passphrase of the example (secure wire mode: the handshake's PSK)."""


def make_server(
    host: str = "127.0.0.1", port: int = 9100, *, key: str = KEY, seat_seconds: float = SEAT_SECONDS
) -> tuple[kcprpc.Server, World]:
    """A game server (secure mode, ``key`` as the passphrase). A player whose connection drops
    keeps their seat for ``seat_seconds``: their session (``session.state["player"]``, their room)
    waits for the client to resume it (docs/rpc.md, "Resume"); they leave the world when they
    close, or when the seat is given up."""
    world = World()

    def on_detach(sess: ServerSession) -> None:  # disconnected, may come back
        p = sess.state.get("player")
        if isinstance(p, Player):
            p.away = True
            sess.resume_window = seat_seconds
        else:
            sess.resume_window = 0  # no seat to keep

    def on_resume(sess: ServerSession) -> None:  # back: same session, same player, same room
        p = sess.state.get("player")
        if isinstance(p, Player):
            p.away = False

    def on_disconnect(sess: ServerSession) -> None:  # gone for good
        p = sess.state.get("player")
        if isinstance(p, Player):
            world.remove(p)

    server = kcprpc.Server(
        [GameService(world)],
        host,
        port,
        key=key,
        on_detach=on_detach,
        on_resume=on_resume,
        on_disconnect=on_disconnect,
    )
    return server, world
