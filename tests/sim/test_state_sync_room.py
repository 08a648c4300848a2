"""kcprpc.state with a room that ticks (kcprpc.tick_room): SyncSender as the room's sender, a
client joins through kcprpc.Rooms, sends inputs, and its StateView converges on the room's state
and reads its input acks (the messages' extra)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from kcprpc.room_service import JoinRoom, RoomInput, RoomService
from kcprpc.state import StateService, SyncSender, client_state
from kcprpc.testing import pair
from kcprpc.tick_room import RoomRegistry, TickInput, TickRoom


class Move(BaseModel):
    dx: int = Field(ge=-1, le=1)


class Pawn(BaseModel):
    x: int = 0


class ArenaState(BaseModel):
    pawns: dict[str, Pawn] = Field(default_factory=dict)


class Arena(TickRoom):
    tick_hz = 100
    send_hz = 50
    input_model = Move

    def on_create(self) -> None:
        self.state = ArenaState()

    def on_join(self, member: Any) -> None:
        self.state.pawns[member.id] = Pawn()

    def on_leave(self, member: Any) -> None:
        del self.state.pawns[member.id]

    def update(self, dt: float, inputs: Mapping[str, Sequence[TickInput]]) -> None:
        for member_id, moves in inputs.items():
            for move in moves:
                self.state.pawns[member_id].x += move.payload.dx


async def test_a_room_syncs_its_state_and_input_acks_through_sync_sender() -> None:
    states = StateService()
    rooms = RoomRegistry(Arena, sender=lambda server: SyncSender(ArenaState, states))
    async with pair([RoomService(rooms), states], datagram_loss=0.1, seed=5) as p:
        rooms.attach(p.server)  # what Server(lifespan=rooms.lifespan) does at start()
        view = client_state(p.client, ArenaState, "state:a1")
        joined = await p.client.stub(RoomService, timeout=5).join(JoinRoom(room="a1"))
        me = joined.member

        async def until(cond: Any) -> None:
            while not cond():
                await asyncio.sleep(0.005)

        await asyncio.wait_for(until(lambda: view.state is not None and me in view.state.pawns), 10)
        for seq in (1, 2, 3):
            p.client.notify(RoomService.input, RoomInput(room="a1", seq=seq, payload={"dx": 1}))

        def acked_all() -> bool:
            if view.extra != 3:  # inputs are unreliable: send again until the state acks them
                for seq in (1, 2, 3):
                    p.client.notify(RoomService.input, RoomInput(room="a1", seq=seq, payload={"dx": 1}))
            return bool(view.extra == 3)

        await asyncio.wait_for(until(acked_all), 10)
        assert view.state is not None and view.state.pawns[me].x == 3  # each input applied once
        room = rooms.rooms["a1"]
        sender = room.sender
        assert isinstance(sender, SyncSender) and sender.sync is not None
        assert sender.sync.stats["acks"] > 0 and sender.sync.stats["deltas"] > 0
        await rooms.close()  # stop the room (the lifespan would, at shutdown)
