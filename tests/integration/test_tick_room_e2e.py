"""Tick rooms end to end: real clients over KCP on 127.0.0.1 join through ``kcprpc.Rooms``, send
inputs as unreliable notifies and read the acknowledged sequence number in the state events; the
server's shutdown stops the rooms; and the same under ``kcprpc serve`` in a subprocess."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

import kcprpc
from kcprpc.room_service import JoinRoom, LeaveRoom, RoomInput, RoomService
from kcprpc.testing import pair
from kcprpc.tick_room import RoomRegistry, RoomState, TickInput, TickRoom
from tests.integration.serve_process import ServeProcess


class Move(BaseModel):
    dx: int = Field(ge=-5, le=5)


class Walk(TickRoom):
    tick_hz = 30
    send_hz = 15
    input_model = Move

    def on_create(self) -> None:
        self.state = {"x": {}}

    def on_join(self, member: Any) -> None:
        self.state["x"][member.id] = 0

    def on_leave(self, member: Any) -> None:
        self.state["x"].pop(member.id, None)

    def update(self, dt: float, inputs: Mapping[str, Sequence[TickInput]]) -> None:
        for mid, items in inputs.items():
            for i in items:
                self.state["x"][mid] += i.payload.dx


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_clients_join_send_inputs_and_see_their_acked_seq_in_the_state() -> None:
    rooms: RoomRegistry[Walk] = RoomRegistry(Walk)
    async with pair([RoomService(rooms)], link="kcp", lifespan=rooms.lifespan) as p:
        client = p.client
        states: list[RoomState] = []
        infos: list[kcprpc.EventInfo] = []
        client.on(RoomState, states.append)
        client.on(RoomState, lambda _state, info: infos.append(info))
        joined = await client.stub(RoomService, timeout=5.0).join(JoinRoom(room="field"))
        assert (joined.tick_hz, joined.send_hz) == (30, 15)
        room = rooms.get("field")
        assert room is not None and joined.member in room.members
        for seq in range(1, 6):  # unreliable: resent until acknowledged, as a client would
            client.notify(RoomService.input, RoomInput(room="field", seq=seq, payload={"dx": 2}))
        client.notify(RoomService.input, RoomInput(room="field", seq=99, payload={"dx": 50}))  # invalid

        def acked(n: int) -> bool:
            if not states or states[-1].acks.get(joined.member, -1) < n:
                for seq in range(1, 6):
                    client.notify(RoomService.input, RoomInput(room="field", seq=seq, payload={"dx": 2}))
                return False
            return True

        await wait_for(lambda: acked(5))
        await wait_for(lambda: bool(states) and states[-1].state["x"].get(joined.member) == 10)
        assert room.stats["inputs_invalid"] >= 1 and room.stats["inputs_processed"] == 5
        ticks = [s.tick for s in states]
        assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)  # one state per send slot
        # states go straight to the members: the broker neither numbers nor keeps them (before,
        # every state stayed in the room's history, 1,024 per room for good)
        broker = p.server.push.broker
        assert (await broker.history("room:field")).messages == [] and broker.stats()["published"] == 0
        # ...and each is a latest-wins datagram numbered by the sender, so that a late one is dropped
        assert infos and all(i.unreliable and i.position is not None for i in infos)
        offsets = [i.position.offset for i in infos if i.position is not None]
        assert offsets == sorted(set(offsets))
        # a second room on the same server
        await client.stub(RoomService, timeout=5.0).join(JoinRoom(room="other"))
        await client.stub(RoomService, timeout=5.0).leave(LeaveRoom(room="other"))
        await wait_for(lambda: rooms.get("other") is None)  # stopping: no longer running
        await wait_for(lambda: rooms.stats["rooms_disposed"] == 1)  # then stopped and forgotten
        assert "other" not in rooms.rooms
    # the pair's exit shut the server down: the client's leave stopped the room, the lifespan the rest
    assert room.stopped.is_set() and room._task is None and rooms.rooms == {}


async def test_a_member_gone_for_good_leaves_and_the_room_stops() -> None:
    rooms: RoomRegistry[Walk] = RoomRegistry(Walk)
    left: list[str] = []
    async with pair(
        [RoomService(rooms)], link="kcp", lifespan=rooms.lifespan, on_disconnect=lambda s: left.append(s.id)
    ) as p:
        joined = await p.client.stub(RoomService, timeout=5.0).join(JoinRoom(room="field"))
        room = rooms.get("field")
        assert room is not None
        await p.client.close()  # no resume window: gone for good
        await asyncio.wait_for(room.stopped.wait(), 10)
        assert left == [joined.member]  # the app's own hook ran too
        assert rooms.rooms == {}


async def test_the_server_shutdown_stops_rooms_that_still_have_members() -> None:
    rooms: RoomRegistry[Watched] = RoomRegistry(lambda name: Watched(name, dispose_after=60.0))
    async with pair([RoomService(rooms)], link="kcp", lifespan=rooms.lifespan) as p:
        await p.client.stub(RoomService, timeout=5.0).join(JoinRoom(room="busy"))
        await p.client.stub(RoomService, timeout=5.0).join(JoinRoom(room="idle"))
        await p.client.stub(RoomService, timeout=5.0).leave(LeaveRoom(room="idle"))
        busy, idle = rooms.get("busy"), rooms.get("idle")
        assert busy is not None and idle is not None and idle.running  # empty, in its 60 s grace
        task = busy._task
        await p.server.shutdown(grace=0.5)
        assert busy.stopped.is_set() and idle.stopped.is_set() and rooms.rooms == {}
        assert task is not None and task.done()
        assert busy.seen[-1] == "leave" and busy.members == {}


class Watched(Walk):
    def on_create(self) -> None:
        super().on_create()
        self.seen: list[str] = []

    def on_detach(self, member: Any) -> None:
        self.seen.append("detach")

    def on_resume(self, member: Any) -> None:
        self.seen.append("resume")

    def on_leave(self, member: Any) -> None:
        super().on_leave(member)
        self.seen.append("leave")


async def test_a_detached_member_stays_in_the_room_and_resumes_into_it() -> None:
    rooms: RoomRegistry[Watched] = RoomRegistry(Watched)
    detached: list[str] = []
    cfg = kcprpc.ClientConfig(
        heartbeat=kcprpc.HeartbeatConfig(interval=0.05, timeout=2.0),
        reconnect=kcprpc.ReconnectPolicy(initial=0.01, maximum=0.05),
    )
    async with pair(
        [RoomService(rooms)],
        link="kcp",
        transport=kcprpc.Transport(kcprpc.SecureWire(key="tick room resume")),
        client_config=cfg,
        server_config=kcprpc.ServerConfig(resume_window=30.0),
        lifespan=rooms.lifespan,
        on_detach=lambda s: detached.append(s.id),  # the app's hook runs before the registry's
    ) as p:
        joined = await p.client.stub(RoomService, timeout=5.0).join(JoinRoom(room="field"))
        room = rooms.get("field")
        assert room is not None
        back = asyncio.Event()
        p.client.on_reconnect = lambda _: back.set()
        await p.drop()
        await asyncio.wait_for(back.wait(), 10)
        await wait_for(lambda: room.seen == ["detach", "resume"])
        assert detached == [joined.member] and joined.member in room.members and room.running
        states: list[RoomState] = []
        p.client.on(RoomState, states.append)
        await wait_for(lambda: bool(states) and joined.member in states[-1].state["x"])  # states flow again
        assert rooms.stats["rooms_disposed"] == 0


APP = """
import kcprpc
from kcprpc.room_service import RoomService
from kcprpc.tick_room import RoomRegistry, TickRoom


class Echo(TickRoom):
    tick_hz = 20

    def on_create(self):
        self.state = {"last": None}

    def update(self, dt, inputs):
        for items in inputs.values():
            for i in items:
                self.state["last"] = i.payload

    def on_dispose(self):
        print(f"room {self.name} disposed after {self.stats['ticks']} ticks", flush=True)


rooms = RoomRegistry(Echo)
app = kcprpc.Server([RoomService(rooms)], lifespan=rooms.lifespan)
"""


def test_rooms_under_kcprpc_serve_stop_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "tick_app.py").write_text(APP)
    with ServeProcess("tick_app:app", "--grace", "1", extra_path=tmp_path) as srv:
        port = srv.port()

        async def play() -> RoomState:
            async with kcprpc.connect("127.0.0.1", port) as client:
                got: asyncio.Queue[RoomState] = asyncio.Queue()
                client.on(RoomState, got.put_nowait)
                joined = await client.stub(RoomService, timeout=5.0).join(JoinRoom(room="lobby"))
                end = asyncio.get_running_loop().time() + 10
                while True:
                    assert asyncio.get_running_loop().time() < end
                    client.notify(RoomService.input, RoomInput(room="lobby", seq=1, payload="hello"))
                    st = await asyncio.wait_for(got.get(), 5)
                    if st.acks.get(joined.member) == 1:
                        return st

        st = asyncio.run(play())
        assert st.state == {"last": "hello"} and st.room == "lobby"
        code, rest = srv.stop()
        assert code == 0, srv.lines
        assert any(line.startswith("room lobby disposed after") for line in rest), srv.lines
