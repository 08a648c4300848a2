"""``kcprpc.Rooms``: join, leave and send inputs to the tick rooms of a :class:`RoomRegistry`
(docs/game.md, "The Rooms service").

``Join(room)`` answers the room's rates and the caller's member id (the key of its entry in a
state's ``acks``); ``Input(room, seq, payload)`` is an unreliable notify (a datagram: a lost
input is not resent by the transport; a client that cares sends its unacknowledged inputs again
with their sequence numbers, and the room drops those it already has). The payload is validated
by the room's ``input_model``; what fails is dropped and counted, never an error to the client.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from kcprpc.context import current_context
from kcprpc.errors import RpcError, shown
from kcprpc.service import Service, rpc
from kcprpc.status import Status
from kcprpc.tick_room import RoomRegistry, RoomState

__all__ = ["JoinRoom", "LeaveRoom", "RoomInput", "RoomJoined", "RoomService"]

MAX_SEQ = 2**53 - 1
"""The highest input sequence number (an integer every client language holds exactly)."""


class JoinRoom(BaseModel):
    """Join (or create) the room ``room``."""

    room: str = Field(min_length=1, max_length=64)


class RoomJoined(BaseModel):
    """The room joined: its tick and send rates, and the caller's member id."""

    room: str
    member: str
    tick_hz: int
    send_hz: int
    tick: int


class LeaveRoom(BaseModel):
    """Leave the room ``room``."""

    room: str = Field(min_length=1, max_length=64)


class RoomInput(BaseModel):
    """One input for the room's next tick: the client's sequence number (increasing) and a
    payload the room validates with its ``input_model``."""

    room: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=0, le=MAX_SEQ)
    payload: Any = None


class RoomService(Service, name="kcprpc.Rooms", events=[RoomState]):
    """Join, leave and inputs for the rooms of ``registry``."""

    def __init__(self, registry: RoomRegistry[Any]) -> None:
        self.registry = registry
        self.stats: dict[str, int] = {"inputs_unrouted": 0}
        """``inputs_unrouted``: inputs for a room the sender is not in (dropped)."""

    async def join(self, req: JoinRoom) -> RoomJoined:
        """Join ``req.room`` (created on demand); RESOURCE_EXHAUSTED when it is full."""
        session = current_context().session
        room = await self.registry.join(req.room, session)
        return RoomJoined(
            room=room.name,
            member=session.id,
            tick_hz=room.tick_hz,
            send_hz=room.send_hz or room.tick_hz,
            tick=room.tick,
        )

    async def leave(self, req: LeaveRoom) -> None:
        """Leave ``req.room``; NOT_FOUND when the caller is not in it."""
        session = current_context().session
        room = self.registry.get(req.room)
        if room is None or session.id not in room.members:
            raise RpcError(Status.NOT_FOUND, f"not in room {shown(req.room)}")
        await room.remove_member(session)

    @rpc.notify
    async def input(self, msg: RoomInput) -> None:
        """Queue an input for the caller in ``msg.room`` (dropped, counted, when it is not in)."""
        session = current_context().session
        room = self.registry.get(msg.room)
        if room is None or session.id not in room.members:
            self.stats["inputs_unrouted"] += 1
            return
        room.push_input(session.id, msg.seq, msg.payload)
