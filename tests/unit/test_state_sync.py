"""kcprpc.state: schema, snapshots then deltas against acknowledged baselines, callbacks, interest
filters, malformed and forged messages, bounds."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from state_support import Item, Player, Pos, Room, step, wire

from kcprpc.errors import UsageError
from kcprpc.state import DELTA, SNAPSHOT, Interest, Schema, StateSync, StateView


def new(max_baselines: int = 32) -> tuple[StateSync[Room], StateView[Room]]:
    return StateSync(Room, "room", max_baselines=max_baselines), StateView(Room, "room")


def test_schema_numbers_fields_in_order_and_has_a_stable_id() -> None:
    s = Schema(Room)
    assert s.root.names == ("phase", "round", "leader", "settings", "players", "npcs", "scores")
    assert s.id == Schema(Room).id
    # the id is the CRC-32 of the documented description (docs/wire-format/state.md)
    assert s.root.describe() == (
        "{phase:v,round:v,leader:v,settings:{mode:v,flags:map<str,v>},"
        "players:map<int,{name:v,team:v,hp:v,pos:{x:v,y:v},items:list<{name:v,qty:v}>,tags:map<str,v>}>,"
        "npcs:list<{name:v,team:v,hp:v,pos:{x:v,y:v},items:list<{name:v,qty:v}>,tags:map<str,v>}>,scores:list<v>}"
    )
    with pytest.raises(UsageError):
        Schema(int)  # type: ignore[arg-type]


def test_recursive_model_is_refused() -> None:
    class Node(BaseModel):
        children: dict[str, Node] = {}

    Node.model_rebuild()
    with pytest.raises(UsageError, match="recursive"):
        Schema(Node)


def test_snapshot_first_then_deltas_of_only_what_changed() -> None:
    sync, view = new()
    sync.add_client("c")
    room = Room(players={1: Player(name="a"), 2: Player(name="b")})
    [(_, msg)] = sync.tick(room)
    assert msg[0] == SNAPSHOT and msg[2] == sync.schema.id
    assert view.receive(wire(sync, msg)) == 1
    assert view.state == room
    assert sync.ack("c", 1)
    room.players[2].pos.x = 5.0
    [(_, msg)] = sync.tick(room)
    # a delta against seq 1: field 4 (players), entry 2 changed, its field 3 (pos), field 0 (x)
    assert msg == [DELTA, 2, 1, {4: [[], {2: {3: {0: 5.0}}}, {}]}]
    assert view.receive(wire(sync, msg)) == 2
    assert view.state == room


def test_unacknowledged_deltas_stay_against_the_acknowledged_baseline() -> None:
    sync, view = new()
    sync.add_client("c")
    room = Room()
    step(sync, {"c": view}, room)  # seq 1 acknowledged
    room.round = 1
    [(_, m2)] = sync.tick(room)  # lost
    room.phase = "play"
    [(_, m3)] = sync.tick(room)
    assert m2[2] == 1 and m3[2] == 1  # both against seq 1
    assert m3[3] == {0: "play", 1: 1}  # so m3 carries m2's change too
    assert view.receive(wire(sync, m3)) == 3
    assert view.state == room
    assert view.receive(wire(sync, m2)) is None  # late: older than what the view holds
    assert view.stats["stale"] == 1
    assert sync.ack("c", 3)
    assert not sync.ack("c", 2)  # older than the baseline
    assert sync.acked("c") == 3
    room.round = 2
    [(_, m4)] = sync.tick(room)
    assert m4[2] == 3 and m4[3] == {1: 2}


def test_snapshots_repeat_until_one_is_acknowledged() -> None:
    sync, _ = new()
    sync.add_client("c")
    room = Room()
    assert [m[0] for _, m in sync.tick(room)] == [SNAPSHOT]
    assert [m[0] for _, m in sync.tick(room)] == [SNAPSHOT]
    assert sync.ack("c", 2)
    assert [m[0] for _, m in sync.tick(room)] == []  # nothing changed: idle
    assert sync.stats["idle"] == 1
    room.round = 3
    assert [m[0] for _, m in sync.tick(room)] == [DELTA]


def test_a_change_reverted_before_its_ack_is_still_sent() -> None:
    """The client may hold an unacknowledged newer state: an unchanged view must still be sent."""
    sync, view = new()
    sync.add_client("c")
    room = Room()
    step(sync, {"c": view}, room)
    room.round = 1
    [(_, m)] = sync.tick(room)
    assert view.receive(wire(sync, m)) == 2  # applied, ack lost
    room.round = 0
    [(_, m)] = sync.tick(room)
    assert m == [DELTA, 3, 1, {}]
    assert view.receive(wire(sync, m)) == 3
    assert view.state == room


def test_baselines_are_bounded_and_forgotten_acks_are_ignored() -> None:
    sync, _ = new(max_baselines=3)
    sync.add_client("c")
    room = Room()
    for i in range(6):
        room.round = i
        sync.tick(room)
    assert sync.stats["baselines_evicted"] == 3
    assert not sync.ack("c", 2)  # forgotten
    assert not sync.ack("c", 99)  # never sent
    assert not sync.ack("other", 6)  # not a client
    assert sync.stats["acks_ignored"] == 3
    assert sync.ack("c", 6)


def test_remove_client_and_usage_errors() -> None:
    sync, _ = new()
    sync.add_client("c")
    assert "c" in sync and len(sync) == 1
    sync.remove_client("c")
    assert sync.tick(Room()) == []
    with pytest.raises(UsageError):
        sync.acked("c")
    with pytest.raises(UsageError):
        StateSync(Room, "")
    with pytest.raises(UsageError):
        sync.tick(Pos())  # type: ignore[arg-type]
    _, view = new()
    with pytest.raises(UsageError):
        view.listen("nope", lambda a, b: None)
    with pytest.raises(UsageError):
        view.on_add("phase", lambda k, e: None)  # not a collection


def test_callbacks_per_field_and_per_entity() -> None:
    sync, view = new()
    sync.add_client("c")
    got: list[tuple[Any, ...]] = []
    view.listen("phase", lambda new, old: got.append(("phase", new, old)))
    view.listen("settings.mode", lambda new, old: got.append(("mode", new, old)))
    view.on_add("players", lambda k, p: got.append(("add", k, p.name)))
    view.on_change("players", lambda k, p: got.append(("change", k, p.hp)))
    off = view.on_remove("players", lambda k, p: got.append(("remove", k, p.name)))
    view.on_add("npcs", lambda i, p: got.append(("npc+", i, p.name)))
    view.on_remove("npcs", lambda i, p: got.append(("npc-", i, p.name)))
    states: list[Room] = []
    view.on_state(states.append)
    room = Room(players={1: Player(name="a")})
    step(sync, {"c": view}, room)
    assert got == [("phase", "lobby", None), ("mode", "ffa", None), ("add", 1, "a")]
    got.clear()
    room.phase = "play"
    room.players[1].hp = 50
    room.players[2] = Player(name="b")
    room.npcs = [Player(name="n0"), Player(name="n1")]
    step(sync, {"c": view}, room)
    assert got == [
        ("phase", "play", "lobby"),
        ("change", 1, 50),
        ("add", 2, "b"),
        ("npc+", 0, "n0"),
        ("npc+", 1, "n1"),
    ]
    got.clear()
    del room.players[1]
    room.npcs.pop()
    step(sync, {"c": view}, room)
    assert got == [("remove", 1, "a"), ("npc-", 1, "n1")]
    got.clear()
    off()
    del room.players[2]
    step(sync, {"c": view}, room)
    assert got == []
    assert len(states) == 4 and states[-1] == room


def test_a_callback_that_raises_does_not_stop_the_others() -> None:
    sync, view = new()
    sync.add_client("c")
    got: list[str] = []

    def bad(new: Any, old: Any) -> None:
        raise RuntimeError("boom")

    view.listen("phase", bad)
    view.listen("phase", lambda new, old: got.append(new))
    step(sync, {"c": view}, Room(phase="x"))
    assert got == ["x"]


# ----------------------------------------------------------------------------------- interest
def near(me: Pos, radius: float) -> Any:
    def interest(room: Room) -> Interest:
        return Interest(
            keys={
                "players": [
                    k
                    for k, p in room.players.items()
                    if abs(p.pos.x - me.x) <= radius and abs(p.pos.y - me.y) <= radius
                ]
            }
        )

    return interest


def test_interest_by_area_entities_enter_and_leave() -> None:
    sync = StateSync(Room, "room")
    views = {"near": StateView(Room, "room"), "all": StateView(Room, "room")}
    sync.add_client("near", interest=near(Pos(), 10))
    sync.add_client("all")
    events: list[tuple[str, int]] = []
    views["near"].on_add("players", lambda k, p: events.append(("add", k)))
    views["near"].on_remove("players", lambda k, p: events.append(("remove", k)))
    room = Room(players={1: Player(pos=Pos(x=1)), 2: Player(pos=Pos(x=50))})
    step(sync, views, room)
    assert set(views["near"].state.players) == {1}  # type: ignore[union-attr]
    assert views["all"].state == room
    room.players[1].pos.x = 20  # leaves
    room.players[2].pos.x = 5  # enters
    step(sync, views, room)
    assert set(views["near"].state.players) == {2}  # type: ignore[union-attr]
    assert events == [("add", 1), ("remove", 1), ("add", 2)]
    assert views["all"].state == room


def test_interest_hides_fields_at_their_default_and_is_called_once_per_tick() -> None:
    calls = 0

    def team0(room: Room) -> Interest:
        nonlocal calls
        calls += 1
        return Interest(hide={"players.*": ["hp", "items"], "settings": ["flags"]})

    sync = StateSync(Room, "room")
    view = StateView(Room, "room")
    sync.add_client("c", interest=team0)
    room = Room(players={1: Player(hp=7, items=[Item(name="sword")])})
    room.settings.flags["secret"] = "1"
    step(sync, {"c": view}, room)
    assert view.state is not None
    assert view.state.players[1].hp == 100 and view.state.players[1].items == []
    assert view.state.settings.flags == {}
    room.players[1].hp = 3  # hidden: nothing to send
    assert sync.tick(room) == []
    assert calls == 2
    sync.set_interest("c", None)
    step(sync, {"c": view}, room)
    assert view.state == room


def test_interest_misuse_is_a_usage_error() -> None:
    class NoDefault(BaseModel):
        must: int
        rows: list[int] = []

    sync = StateSync(NoDefault, "x")
    sync.add_client("a", interest=lambda s: Interest(hide={"": ["must"]}))
    with pytest.raises(UsageError, match="no default"):
        sync.tick(NoDefault(must=1))
    sync.set_interest("a", lambda s: Interest(keys={"rows": [0]}))
    with pytest.raises(UsageError, match="only dict"):
        sync.tick(NoDefault(must=1))
    sync.set_interest("a", lambda s: Interest(keys={"nope": [0]}))
    with pytest.raises(UsageError, match="no field"):
        sync.tick(NoDefault(must=1))


# ----------------------------------------------------------------------------- hostile input
def held(view: StateView[Room]) -> StateView[Room]:
    sync = StateSync(Room, "room")
    sync.add_client("c")
    step(sync, {"c": view}, Room(players={1: Player()}, npcs=[Player()]))
    return view


@pytest.mark.parametrize(
    ("msg", "counter"),
    [
        (None, "malformed"),
        ([1, 2, 3], "malformed"),
        (["0", 2, 1, {}], "malformed"),
        ([7, 2, 1, {}], "malformed"),
        ([1, 2, 99, {}], "no_base"),
        ([0, 2, 12345, []], "schema_mismatch"),
        ([0, 2, None, []], "malformed"),
        ([1, 2, 1, []], "malformed"),  # a model change must be a map
        ([1, 2, 1, {99: 1}], "malformed"),  # no such field
        ([1, 2, 1, {"4": 1}], "malformed"),
        ([1, 2, 1, {4: [[7], {}, {}]}], "malformed"),  # removes an absent key
        ([1, 2, 1, {4: [[], {7: {}}, {}]}], "malformed"),  # changes an absent key
        ([1, 2, 1, {4: [[], {}, {1: []}]}], "malformed"),  # adds a present key
        ([1, 2, 1, {4: [[], {}, {"k": []}]}], "malformed"),  # a str key in a dict[int, ...]
        ([1, 2, 1, {4: [[], {}, {2: [1]}]}], "malformed"),  # an entity of the wrong arity
        ([1, 2, 1, {5: [10**9, {}, []]}], "malformed"),  # a huge list length, nothing appended
        ([1, 2, 1, {5: [3, {}, [[]]]}], "malformed"),  # length and appended entries disagree
        ([1, 2, 1, {5: [1, {5: {}}, []]}], "malformed"),  # changes an index past the end
        ([1, 2, 1, {1: "not an int"}], "invalid"),  # fits the schema, not the model
        ([1, 2, 1, {4: [[], {1: {2: [1, 2]}}, {}]}], "invalid"),
        ([1, 1, 1, {}], "stale"),
    ],
)
def test_bad_messages_are_dropped_and_counted(msg: Any, counter: str) -> None:
    view = held(StateView(Room, "room"))
    before = (view.state, view.seq, view.tree)
    assert view.receive(msg) is None
    assert view.stats[counter] == 1
    assert (view.state, view.seq, view.tree) == before


def test_entity_and_size_bounds() -> None:
    view = held(StateView(Room, "room", max_entities=5, max_nodes=100))
    sid = Schema(Room).id
    six = {i: ["", 0, 100, [0.0, 0.0], [], {}] for i in range(6)}
    assert view.receive([0, 5, sid, ["p", 0, None, ["ffa", {}], six, [], []]]) is None
    assert (
        view.receive([1, 5, 1, {4: [[], {}, {i: ["", 0, 100, [0.0, 0.0], [], {}] for i in range(2, 7)}]}])
        is None
    )
    assert view.receive([1, 5, 1, {6: [6, {}, [1] * 6]}]) is None  # a list past max_entities
    # many nodes in all: past max_nodes
    assert (
        view.receive([1, 5, 1, {4: [[], {}, {i: ["", 0, 100, [0.0, 0.0], [], {}] for i in range(2, 6)}]}])
        is not None
    )
    view2 = held(StateView(Room, "room", max_nodes=30))
    big = {i: ["", 0, 100, [0.0, 0.0], [], {}] for i in range(2, 6)}
    assert view2.receive([1, 5, 1, {4: [[], {}, big]}]) is None
    assert view.stats["malformed"] == 3 and view2.stats["malformed"] == 1


def test_client_keeps_the_baseline_of_the_last_delta_past_max_baselines() -> None:
    sync = StateSync(Room, "room")
    view = StateView(Room, "room", max_baselines=2)
    sync.add_client("c")
    room = Room()
    step(sync, {"c": view}, room)  # acked 1
    for i in range(5):  # applied, acks all lost: every delta is against 1
        room.round = i + 1
        [(_, m)] = sync.tick(room)
        assert m[2] == 1
        assert view.receive(wire(sync, m)) == m[1]
    assert view.state == room


def test_a_client_silent_for_max_baselines_ticks_gets_snapshots_again() -> None:
    sync, view = new(max_baselines=4)
    sync.add_client("c")
    room = Room()
    step(sync, {"c": view}, room)
    for _ in range(10):  # idle: nothing sent, no ack expected, no reset
        assert sync.tick(room) == []
    kinds = []
    for i in range(6):  # changes, every ack lost
        room.round = i + 1
        [(_, m)] = sync.tick(room)
        kinds.append(m[0])
    assert kinds == [DELTA] * 4 + [SNAPSHOT] * 2
    assert sync.stats["resets"] == 1
    assert view.receive(wire(sync, m)) == m[1]
    assert sync.ack("c", m[1])
    room.round = 99
    [(_, m)] = sync.tick(room)
    assert m[0] == DELTA and m[2] == sync.seq - 1


def test_a_model_with_unresolved_annotations_is_a_usage_error() -> None:
    class Later(BaseModel):
        things: dict[int, Missing] = {}  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(UsageError, match="not fully defined"):
        Schema(Later)


def test_the_view_keeps_a_bounded_number_of_states() -> None:
    sync = StateSync(Room, "room", max_baselines=64)
    view = StateView(Room, "room", max_baselines=4)
    sync.add_client("c")
    room = Room()
    for i in range(100):
        room.round = i
        for c, m in sync.tick(room):
            seq = view.receive(wire(sync, m))
            assert seq is not None
            if i % 7 == 0:  # most acks lost: deltas stay against old baselines
                sync.ack(c, seq)
        assert view.held <= 4
    assert view.state == room


def test_extras_ride_on_each_clients_message_without_touching_shared_ones() -> None:
    sync = StateSync(Room, "room")
    views = {c: StateView(Room, "room") for c in "abc"}
    for c in views:
        sync.add_client(c)
    out = sync.tick(Room(), {"a": 7, "b": 9})
    msgs = dict(out)
    assert msgs["a"][4] == 7 and msgs["b"][4] == 9 and len(msgs["c"]) == 4
    assert msgs["a"][3] is msgs["c"][3]  # one body for all
    for h, m in out:
        assert views[str(h)].receive(wire(sync, m)) == 1
    assert (views["a"].extra, views["b"].extra, views["c"].extra) == (7, 9, None)


class FakeSession:
    """A session as ``kcprpc.push.route`` sees it: datagrams up to 1200 bytes, else the stream."""

    def __init__(self, id: str) -> None:
        self.id = id
        self.datagrams: list[bytes] = []
        self.stream: list[bytes] = []

    def send_datagram(self, frame: bytes) -> bool:
        if len(frame) > 1200:
            return False
        self.datagrams.append(frame)
        return True

    def send_frame(self, frame: bytes, unreliable: bool = False) -> None:
        assert unreliable
        self.stream.append(frame)


class Snap:
    def __init__(self, state: Room, members: tuple[FakeSession, ...], acks: dict[str, int]) -> None:
        self.room, self.tick, self.state, self.members, self.acks = "r", 0, state, members, acks


class FakeRoom:
    name = "r1"


def test_sync_sender_follows_room_members_and_sends_their_input_acks() -> None:
    from kcprpc import codec
    from kcprpc.state import StateService, SyncSender

    states = StateService()
    sender = SyncSender(  # groups=1: whole messages, a big one on the stream
        Room, states, interest=lambda room, m: lambda s: Interest(keys={"players": [int(m.id)]}), groups=1
    )
    a, b = FakeSession("1"), FakeSession("2")
    sender.on_member_added(FakeRoom(), a)
    sender.on_member_added(FakeRoom(), b)
    sync = sender.sync
    assert sync is not None and sync.name == "state:r1"
    room = Room(players={1: Player(name="a"), 2: Player(name="b", items=[Item(name="x" * 2000)])})
    sender.send(Snap(room, (a, b), {"1": 4}))
    views = {a: StateView(Room, "state:r1"), b: StateView(Room, "state:r1")}
    for s in (a, b):
        [frame] = s.datagrams + s.stream
        msg = codec.unpack(frame[codec.HEADER_SIZE :])[1]
        assert views[s].receive(msg) == 1
    assert len(a.datagrams) == 1 and len(b.stream) == 1  # b's view is too big for a datagram
    assert set(views[a].state.players) == {1} and views[a].extra == 4  # type: ignore[union-attr]
    assert set(views[b].state.players) == {2} and views[b].extra == -1  # type: ignore[union-attr]
    assert sync.stats["bytes"] == len(a.datagrams[0]) + len(b.stream[0])
    sender.on_member_removed(FakeRoom(), a)
    assert a not in sync and b in sync
    other = StateSync(Room, "state:r1")
    with pytest.raises(UsageError):  # the room's sync holds the name while it has members
        states.add(other)
    sender.on_member_removed(FakeRoom(), b)
    states.add(other)  # the last member out freed it


def test_quantized_numbers_go_as_integers_and_small_changes_are_not_sent() -> None:
    from typing import Annotated

    from kcprpc.state import Quantized

    class Mob(BaseModel):
        x: Annotated[float, Quantized(0.01)] = 0.0
        heat: dict[str, Annotated[float, Quantized(0.5)]] = {}
        trail: list[Annotated[float, Quantized(0.25)]] = []

    class World(BaseModel):
        mobs: dict[int, Mob] = {}

    schema = Schema(World)
    assert schema.root.describe() == "{mobs:map<int,{x:q10000,heat:map<str,q500000>,trail:list<q250000>}>}"
    sync, view = StateSync(World, "w"), StateView(World, "w")
    sync.add_client("c")
    w = World(mobs={1: Mob(x=12.345, heat={"a": 1.3}, trail=[0.6, float("inf")])})
    [(_, msg)] = sync.tick(w)
    assert msg[3] == ({1: (1234, {"a": 3}, (2, float("inf")))},)  # round half to even: 1234.5 -> 1234
    sync.ack("c", view.receive(wire(sync, msg)) or 0)
    assert view.state is not None
    mob = view.state.mobs[1]
    assert mob.x == pytest.approx(12.34) and mob.heat == {"a": 1.5} and mob.trail == [0.5, float("inf")]
    w.mobs[1].x = 12.342  # less than half a step: nothing to send
    assert sync.tick(w) == []
    w.mobs[1].x = 12.36
    [(_, msg)] = sync.tick(w)
    assert msg[3] == {0: [[], {1: {0: 1236}}, {}]}
    with pytest.raises(UsageError):
        Quantized(0)
    with pytest.raises(UsageError, match="number field"):

        class Bad(BaseModel):
            m: Annotated[Mob, Quantized(1.0)]

        Schema(Bad)


def test_a_detached_session_is_skipped_until_it_is_back() -> None:
    """A session kept for a resume (``detached``) is left out of the ticks: no message, no
    interest filter call, no delta to compute (before, each detached member cost its filter and a
    delta that grew every tick, for the whole resume window). Back, it goes on from its
    acknowledged baseline, or from a snapshot once that is too old."""

    class Peer:
        def __init__(self, name: str) -> None:
            self.name = name
            self.detached = False

    sync: StateSync[Room] = StateSync(Room, "room", max_baselines=4)
    a, b = Peer("a"), Peer("b")
    calls: list[str] = []

    def watch(name: str) -> Any:
        def interest(state: Room) -> Interest:
            calls.append(name)
            return Interest()

        return interest

    sync.add_client(a, watch("a"))
    sync.add_client(b, watch("b"))
    room = Room()
    views = {a: StateView(Room, "room"), b: StateView(Room, "room")}
    step(sync, views, room)
    b.detached = True
    calls.clear()
    room.round = 1
    assert [p for p, _ in sync.tick(room)] == [a] and calls == ["a"]
    b.detached = False
    room.round = 2
    out = dict(sync.tick(room))
    assert out[b][0] == DELTA and out[b][2] == 1  # against its acknowledged seq 1
    assert views[b].receive(wire(sync, out[b])) == 3 and views[b].state == room
    b.detached = True
    for r in range(3, 10):  # longer than max_baselines
        room.round = r
        sync.tick(room)
    b.detached = False
    [msg] = [m for p, m in sync.tick(room) if p is b]
    assert msg[0] == SNAPSHOT


def test_a_filter_that_raises_skips_its_client_only_and_an_interest_may_be_given_as_is() -> None:
    """One member's filter raising stopped the state of every client of the sync (a newcomer's
    report: the others' views were made in one expression); now that client is skipped for the
    tick, counted (``interest_errors``) and logged within a limit. An :class:`Interest` is taken
    as it is (the same every tick); anything else is refused at once."""

    def fails(room: Room) -> Interest:
        raise KeyError("no such team")

    sync = StateSync(Room, "room")
    views = {"ok": StateView(Room, "room"), "fixed": StateView(Room, "room")}
    sync.add_client("bad", interest=fails)
    sync.add_client("ok")
    sync.add_client("fixed", interest=Interest(keys={"players": [1]}))
    room = Room(players={1: Player(pos=Pos(x=1)), 2: Player(pos=Pos(x=2))})
    for _ in range(3):
        room.players[2].pos.x += 1
        msgs = dict(sync.tick(room))
        assert "bad" not in msgs and "ok" in msgs  # ("fixed" only while what it sees changes)
        for name, msg in msgs.items():
            assert sync.ack(name, views[name].receive(wire(sync, msg)))
    assert views["ok"].state == room and set(views["fixed"].state.players) == {1}  # type: ignore[union-attr]
    assert sync.stats["interest_errors"] == 3
    with pytest.raises(UsageError, match="a function state -> Interest"):
        sync.add_client("typo", interest="team-a")  # type: ignore[arg-type]
