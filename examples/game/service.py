"""Game service on kcprpc's game pieces (docs/game.md, docs/state.md):

* each match is a :class:`~kcprpc.tick_room.TickRoom` (``Match``) ticking at 20 Hz; positions
  arrive as unreliable inputs with a sequence number (``position``) and are applied at the tick;
* the match's state (``MatchState``: a dict of players, positions :class:`~kcprpc.state.Quantized`
  to 0.01) reaches every member as snapshots and deltas through a
  :class:`~kcprpc.state.SyncSender`, each member seeing the players within ``VIEW_RADIUS`` of
  itself (an interest filter) and, as the message's extra, its last input processed (the ack);
* chat lines are events on the ``"chat"`` send lane (they never delay the state);
* join, leave and move are unary calls; a player whose connection drops keeps the seat for
  ``seat_seconds`` (its session waits for a resume, docs/rpc.md "Resume")."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, Field

import kcprpc
from kcprpc import RpcError, ServerSession, Status, current_context, rpc
from kcprpc.state import Interest, Quantized, StateService, SyncSender
from kcprpc.tick_room import RoomRegistry, TickInput, TickRoom

TICK_HZ = 20
WORLD = 100.0
VIEW_RADIUS = 40.0
"""A player sees the players within this distance of itself (the interest filter)."""


class JoinRequest(BaseModel):
    room: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=32)


class JoinReply(BaseModel):
    player_id: int
    room: str
    tick_hz: int
    x: float
    y: float
    state: str
    """The name of the room's state sync (``client_state(client, MatchState, reply.state)``)."""


class MoveRequest(BaseModel):
    dx: float = Field(ge=-5, le=5)
    dy: float = Field(ge=-5, le=5)


class MoveReply(BaseModel):
    x: float
    y: float


class PositionUpdate(BaseModel):
    """Sent ~20 times a second by each client as an unreliable notification: the room's input
    ``seq`` (newest wins; the state's extra acknowledges the last one applied)."""

    seq: int = Field(ge=0, le=2**53 - 1)
    x: float
    y: float


class ChatRequest(BaseModel):
    text: str = Field(min_length=1, max_length=200)


@kcprpc.event("game.chat", lane="chat")
class ChatLine(BaseModel):
    """A chat line to the room: on the ``chat`` lane, behind the state's."""

    player_id: int
    name: str
    text: str


Coord = Annotated[float, Quantized(0.01)]


class Player(BaseModel):
    """One player in a match's state."""

    name: str
    x: Coord = WORLD / 2
    y: Coord = WORLD / 2
    away: bool = False  # its connection was lost: the seat is kept until it resumes or the seat is given up


class MatchState(BaseModel):
    """What a match syncs to its members; ``players`` keyed by ``str(player_id)``."""

    tick: int = 0
    server_time: float = 0.0
    players: dict[str, Player] = Field(default_factory=dict)


class Target(BaseModel):
    """A position input's payload (what ``Match.update`` applies)."""

    x: float
    y: float


@dataclass
class Seat:
    """A session's player (``session.state["player"]``)."""

    id: int
    name: str
    room: str


def _clamp(v: float) -> float:
    return min(WORLD, max(0.0, v))


def state_name(room: str) -> str:
    """The name of room ``room``'s state sync."""
    return f"state:{room}"


class Match(TickRoom):
    """One match: players in ``state.players``, positions applied at the tick from inputs."""

    tick_hz = TICK_HZ
    input_model = Target
    max_clients = 64
    max_inputs = 8  # positions: only the newest matters, a burst is dropped and counted

    def __init__(self, name: str, world: World) -> None:
        super().__init__(name)
        self.world = world
        self.keys: dict[str, str] = {}  # session id -> players key

    def on_create(self) -> None:
        self.state = MatchState()

    def on_join(self, member: Any) -> None:
        seat = member.state["player"]
        self.keys[member.id] = str(seat.id)
        self.state.players[str(seat.id)] = Player(name=seat.name)

    def on_leave(self, member: Any) -> None:
        key = self.keys.pop(member.id, None)
        if key is not None:
            self.state.players.pop(key, None)

    def on_detach(self, member: Any) -> None:
        self.state.players[self.keys[member.id]].away = True

    def on_resume(self, member: Any) -> None:
        self.state.players[self.keys[member.id]].away = False

    def update(self, dt: float, inputs: Mapping[str, Sequence[TickInput]]) -> None:
        self.state.tick = self.tick
        self.state.server_time = time.time()
        for member_id, targets in inputs.items():
            key = self.keys.get(member_id)
            if key is None or not targets:
                continue
            p = self.state.players[key]
            last = targets[-1].payload  # in sequence order: the newest wins
            p.x, p.y = _clamp(last.x), _clamp(last.y)
            self.world.positions_applied += 1
            self.world.positions_stale += len(targets) - 1

    def player(self, member_id: str) -> Player:
        """The player of session ``member_id``."""
        return self.state.players[self.keys[member_id]]


def near(room: Any, member: Any) -> Callable[[MatchState], Interest]:
    """The interest filter of ``member``: the players within ``VIEW_RADIUS`` (and itself)."""
    mine = str(member.state["player"].id)

    def interest(state: MatchState) -> Interest:
        me = state.players.get(mine)
        if me is None:
            return Interest(keys={"players": ()})
        seen = [k for k, p in state.players.items() if math.hypot(p.x - me.x, p.y - me.y) <= VIEW_RADIUS]
        return Interest(keys={"players": seen})

    return interest


@dataclass
class World:
    """All matches of one server process: the room registry and the state syncs' service."""

    states: StateService = field(default_factory=StateService)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    positions_applied: int = 0
    positions_stale: int = 0  # older positions of a tick, superseded by the newest
    rooms: RoomRegistry[Match] = field(init=False)

    def __post_init__(self) -> None:
        self.rooms = RoomRegistry(
            lambda name: Match(name, self),
            sender=lambda server: SyncSender(MatchState, self.states, interest=near),
        )

    def players(self) -> dict[str, dict[str, Player]]:
        """Each running match's players (room name -> key -> player)."""
        return {name: dict(room.state.players) for name, room in self.rooms.rooms.items() if room.state}


class GameService(kcprpc.Service, name="game.v1.Game", events=[ChatLine]):
    """The game's RPC surface."""

    def __init__(self, world: World | None = None) -> None:
        self.world = world or World()

    @staticmethod
    def _seat(session: ServerSession) -> Seat:
        seat = session.state.get("player")
        if not isinstance(seat, Seat):
            raise RpcError(Status.FAILED_PRECONDITION, "join a room first")
        return seat

    def _match(self, session: ServerSession) -> tuple[Seat, Match]:
        seat = self._seat(session)
        room = self.world.rooms.get(seat.room)
        if room is None or session.id not in room.members:
            raise RpcError(Status.FAILED_PRECONDITION, "join a room first")
        return seat, room

    async def join(self, req: JoinRequest) -> JoinReply:
        """Join (or create) the match ``req.room``; its state comes as the sync ``reply.state``."""
        sess = current_context().session
        if isinstance(sess.state.get("player"), Seat):
            raise RpcError(Status.ALREADY_EXISTS, "already in a room")
        seat = Seat(id=next(self.world.ids), name=req.name, room=req.room)
        sess.state["player"] = seat
        try:
            room = await self.world.rooms.join(req.room, sess)
        except BaseException:
            del sess.state["player"]
            raise
        sess.join(req.room)  # the push room: chat lines
        p = room.player(sess.id)
        return JoinReply(
            player_id=seat.id, room=req.room, tick_hz=room.tick_hz, x=p.x, y=p.y, state=state_name(req.room)
        )

    async def leave(self) -> None:
        """Leave the match."""
        sess = current_context().session
        seat = self._seat(sess)
        sess.leave(seat.room)
        await self.world.rooms.leave(seat.room, sess)
        del sess.state["player"]

    async def move(self, req: MoveRequest) -> MoveReply:
        """A step now (reliable, answered with the new position)."""
        sess = current_context().session
        _, room = self._match(sess)
        p = room.player(sess.id)
        p.x, p.y = _clamp(p.x + req.dx), _clamp(p.y + req.dy)
        return MoveReply(x=p.x, y=p.y)

    @rpc.notify
    async def position(self, upd: PositionUpdate) -> None:
        """The player's position as the match's input ``upd.seq`` (a lost one is not resent)."""
        sess = current_context().session
        seat = sess.state.get("player")
        room = self.world.rooms.get(seat.room) if isinstance(seat, Seat) else None
        if room is None or sess.id not in room.members:
            return
        room.push_input(sess.id, upd.seq, {"x": upd.x, "y": upd.y})

    async def say(self, req: ChatRequest) -> None:
        """A chat line to everyone in the caller's match (the ``chat`` lane)."""
        ctx = current_context()
        seat, _ = self._match(ctx.session)
        await ctx.server.push.to_room(seat.room, ChatLine(player_id=seat.id, name=seat.name, text=req.text))


SEAT_SECONDS = 30.0
"""How long a player whose connection dropped keeps their seat (their session waits for a resume)."""

KEY = "game example passphrase"
"""The shared passphrase of the example (secure wire mode: the handshake's PSK)."""


def make_server(
    host: str = "127.0.0.1", port: int = 9100, *, key: str = KEY, seat_seconds: float = SEAT_SECONDS
) -> tuple[kcprpc.Server, World]:
    """A game server (secure mode, ``key`` as the passphrase). A player whose connection drops
    keeps their seat for ``seat_seconds``: their session (``session.state["player"]``, their
    match) waits for the client to resume it (docs/rpc.md, "Resume"); the match marks them
    ``away`` meanwhile. They leave the match when they close, or when the seat is given up."""
    world = World()

    def on_detach(sess: ServerSession) -> None:  # disconnected, may come back
        sess.resume_window = seat_seconds if isinstance(sess.state.get("player"), Seat) else 0

    server = kcprpc.Server(
        [GameService(world), world.states],
        host,
        port,
        key=key,
        on_detach=on_detach,
        lifespan=world.rooms.lifespan,  # the matches follow the sessions; shutdown stops them
    )
    return server, world
