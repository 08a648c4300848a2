"""kcprpc.state with hypothesis: random state changes give equal states on both ends (through
the EVENT frame's bytes), clients converge after random losses of deltas and acks on a seeded
link, change callbacks mirror the state, and garbage never raises."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from state_support import Item, Player, Pos, Room, Settings

from kcprpc import codec
from kcprpc.state import Interest, StateSync, StateView
from kcprpc.state.sync import SNAPSHOT_RESEND

floats = st.floats(allow_nan=False, width=64)
ints = st.integers(-(2**63), 2**64 - 1)
text = st.text(max_size=4)
pos = st.builds(Pos, x=floats, y=floats)
player = st.builds(
    Player,
    name=text,
    hp=ints,
    pos=pos,
    items=st.lists(st.builds(Item, name=text, qty=ints), max_size=3),
    tags=st.dictionaries(st.sampled_from("abc"), ints, max_size=3),
)
room = st.builds(
    Room,
    phase=st.sampled_from(["lobby", "play", "end"]),
    round=st.integers(0, 3),
    leader=st.none() | pos,
    settings=st.builds(
        Settings, mode=st.sampled_from(["ffa", "teams"]), flags=st.dictionaries(text, text, max_size=3)
    ),
    players=st.dictionaries(st.integers(0, 12), player, max_size=6),
    npcs=st.lists(player, max_size=4),
    scores=st.lists(st.integers(0, 3), max_size=5),
)


def wire(sync: StateSync[Any], msg: list[Any]) -> Any:
    body = codec.unpack(sync.frame(msg)[codec.HEADER_SIZE :])
    return body[1]


@given(st.lists(room, min_size=1, max_size=8))
def test_round_trips_give_equal_states_and_callbacks_mirror_them(states: list[Room]) -> None:
    sync = StateSync(Room, "r")
    view = StateView(Room, "r")
    sync.add_client("c")
    players: set[int] = set()
    npcs: list[int] = []
    view.on_add("players", lambda k, p: players.add(k))
    view.on_remove("players", lambda k, p: players.remove(k))
    view.on_add("npcs", lambda i, p: npcs.append(i))
    view.on_remove("npcs", lambda i, p: npcs.remove(i))
    phases: list[str] = []
    view.listen("phase", lambda new, old: phases.append(new))
    for s in states:
        for c, msg in sync.tick(s):
            seq = view.receive(wire(sync, msg))
            assert seq == sync.seq
            assert sync.ack(c, seq)
        assert view.state == s
        assert players == set(s.players)
        assert sorted(npcs) == list(range(len(s.npcs)))
        assert phases[-1] == s.phase
    assert view.stats["applied"] == sync.stats["snapshots"] + sync.stats["deltas"]


@given(
    st.lists(room, min_size=1, max_size=12),
    st.integers(0, 2**32),
    st.floats(0.0, 0.6),
    st.integers(1, 6),
)
def test_clients_converge_after_losses_and_acks_move_baselines(
    states: list[Room], seed: int, loss: float, baselines: int
) -> None:
    """Messages and acks are dropped (and late messages reordered) on a seeded link; every state a
    client applies is one the server sent it; one lossless tick of the last state makes them equal."""
    rng = random.Random(seed)
    sync = StateSync(Room, "r", max_baselines=baselines)
    views: dict[Any, StateView[Room]] = {c: StateView(Room, "r", max_baselines=baselines) for c in range(3)}
    for c in views:
        sync.add_client(c)
    late: list[tuple[Any, Any]] = []
    for s in states:
        for c, msg in sync.tick(s):
            if rng.random() < loss:
                if rng.random() < 0.5:
                    late.append((c, wire(sync, msg)))  # delivered later, out of order
                continue
            seq = views[c].receive(wire(sync, msg))
            if seq is not None:
                assert views[c].state == states[seq - 1]
                if rng.random() >= loss:
                    sync.ack(c, seq)
        if late and rng.random() < 0.5:
            c, m = late.pop(rng.randrange(len(late)))
            seq = views[c].receive(m)
            if seq is not None:
                assert views[c].state == states[seq - 1]
    final = states[-1]
    for c, msg in sync.tick(final):  # lossless
        seq = views[c].receive(wire(sync, msg))
        assert seq is not None, views[c].stats
        sync.ack(c, seq)
    for c, v in views.items():
        assert v.state == final
        assert sync.acked(c) == v.seq  # the last one it applied moved its baseline
    assert sync.tick(final) == []  # every client holds its view: nothing to send


@given(
    st.lists(room, min_size=1, max_size=10),
    st.integers(2, 9),
    st.sampled_from([64, 200, 1000]),
    st.integers(0, 2**32),
    st.floats(0.0, 0.5),
)
def test_parts_round_trip_and_converge_after_losses(
    states: list[Room], groups: int, part_size: int, seed: int, loss: float
) -> None:
    """With groups: every part a client keeps gives, once committed, a state whose groups each
    equal the server's at their seq; parts and acks are lost at random; one lossless tick of the
    last state makes every client equal to it."""
    rng = random.Random(seed)
    sync = StateSync(Room, "r", groups=groups, part_size=part_size)
    views: dict[Any, StateView[Room]] = {c: StateView(Room, "r") for c in range(2)}
    for c in views:
        sync.add_client(c)
    for s in states:
        for c, msg in sync.tick(s):
            if rng.random() < loss:
                continue
            commit = rng.random() < 0.5
            seq = views[c].receive(wire(sync, msg), commit=commit)
            if commit and seq is not None and rng.random() >= loss:
                sync.ack(c, seq, views[c].acked_groups)
        for c, v in views.items():
            for seq, gs in v.commit().items():
                if rng.random() >= loss:
                    sync.ack(c, seq, gs)
            if v.state is not None and v.min_seq == sync.seq:
                assert v.state == s  # every group current: the whole state is this tick's
    for _ in range(SNAPSHOT_RESEND + 2):  # lossless (a group's unacknowledged snapshot waits)
        for c, msg in sync.tick(states[-1]):
            views[c].receive(wire(sync, msg), commit=False)
        for c, v in views.items():
            for seq, gs in v.commit().items():
                assert sync.ack(c, seq, gs)
    for v in views.values():
        assert v.state == states[-1]
        assert v.stats["malformed"] == v.stats["invalid"] == 0


def any_msgpack() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-5, 12)
        | ints
        | floats
        | st.text(max_size=3)
        | st.binary(max_size=3),
        lambda inner: (
            st.lists(inner, max_size=5)
            | st.dictionaries(st.integers(-2, 12) | st.text(max_size=2), inner, max_size=5)
        ),
        max_leaves=40,
    )


def _held() -> tuple[StateSync[Room], StateView[Room], Room]:
    sync = StateSync(Room, "r")
    view = StateView(Room, "r", max_entities=50, max_nodes=500)
    sync.add_client("c")
    s = Room(players={1: Player(items=[Item()])}, npcs=[Player()], scores=[1])
    [(_, msg)] = sync.tick(s)
    assert view.receive(wire(sync, msg)) == 1
    return sync, view, s


@given(st.integers(0, 1) | st.integers(-3, 3), any_msgpack())
def test_garbage_bodies_never_raise(kind: int, body: Any) -> None:
    sync, view, s = _held()
    seq = view.receive([kind, 2, 1 if kind == 1 else sync.schema.id, body])
    assert view.state is not None
    if seq is None:
        assert view.state == s and view.seq == 1
    else:  # it fitted the schema and the model: the state is a valid Room
        assert isinstance(view.state, Room) and view.seq == 2


@given(any_msgpack())
def test_garbage_messages_never_raise(msg: Any) -> None:
    _, view, _ = _held()
    view.receive(msg)
    assert isinstance(view.state, Room)


@given(room, room, st.data())
def test_corrupted_frames_never_raise(a: Room, b: Room, data: st.DataObject) -> None:
    """A real delta's frame with bytes flipped or cut: dropped by the codec or by the view."""
    sync = StateSync(Room, "r")
    view = StateView(Room, "r")
    sync.add_client("c")
    [(_, m1)] = sync.tick(a)
    assert view.receive(wire(sync, m1)) == 1
    sync.ack("c", 1)
    out = sync.tick(b)
    if not out:
        return
    frame = bytearray(sync.frame(out[0][1]))
    body = frame[codec.HEADER_SIZE :]
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    body = body[: data.draw(st.integers(0, len(body)))]
    try:
        decoded = codec.unpack(bytes(body))
    except (ValueError, TypeError):
        return  # the codec drops it
    payload = decoded[1] if isinstance(decoded, list) and len(decoded) > 1 else decoded
    view.receive(payload)
    assert isinstance(view.state, Room)


@given(
    st.lists(
        st.tuples(room, st.sets(st.integers(0, 12)), st.sets(st.sampled_from(["name", "hp", "items"]))),
        min_size=1,
        max_size=8,
    )
)
def test_a_filtered_client_holds_exactly_its_view(ticks: list[tuple[Room, set[int], set[str]]]) -> None:
    """Random interest per tick (visible player keys, hidden player fields): the client's state is
    the state with only those players, those fields at their default; entities entering and
    leaving its interest are added and removed by its callbacks."""
    current: dict[str, Any] = {}
    sync = StateSync(Room, "r")
    view = StateView(Room, "r")
    sync.add_client(
        "c",
        interest=lambda s: Interest(keys={"players": current["keys"]}, hide={"players.*": current["hide"]}),
    )
    seen: set[int] = set()
    view.on_add("players", lambda k, p: seen.add(k))
    view.on_remove("players", lambda k, p: seen.remove(k))
    default = Player()
    for s, keys, hide in ticks:
        current["keys"], current["hide"] = keys, hide
        for c, msg in sync.tick(s):
            seq = view.receive(wire(sync, msg))
            assert seq is not None
            sync.ack(c, seq)
        expected = s.model_copy(
            update={
                "players": {
                    k: p.model_copy(update={f: getattr(default, f) for f in hide})
                    for k, p in s.players.items()
                    if k in keys
                }
            }
        )
        assert view.state == expected
        assert seen == set(expected.players)


def _held_parts() -> tuple[StateSync[Room], StateView[Room], Room]:
    sync = StateSync(Room, "r", groups=3)
    view = StateView(Room, "r", max_entities=50, max_nodes=500)
    sync.add_client("c")
    s = Room(players={1: Player(items=[Item()]), 2: Player(), 3: Player()}, npcs=[Player()], scores=[1])
    for _, msg in sync.tick(s):
        view.receive(wire(sync, msg), commit=False)
    for seq, gs in view.commit().items():
        assert sync.ack("c", seq, gs)
    assert view.state == s
    return sync, view, s


@given(
    st.lists(st.tuples(st.integers(-1, 4), st.integers(-1, 2), any_msgpack()), min_size=1, max_size=3),
    st.integers(-1, 4),
    any_msgpack(),
    st.booleans(),
)
def test_garbage_parts_never_raise(entries: list[Any], groups: int, idle: Any, commit: bool) -> None:
    """PARTS messages with garbage entries, group counts and idle lists: dropped and counted, or
    (when they happen to fit the schema and the model) a valid Room."""
    sync, view, s = _held_parts()
    before = dict(view.stats)
    view.receive([2, 2, sync.schema.id, groups, 1, [list(e) for e in entries], idle], commit=commit)
    view.commit()
    assert isinstance(view.state, Room)
    if view.seq == 1:
        assert view.state == s
        dropped = sum(view.stats[k] - before[k] for k in ("malformed", "invalid", "stale", "no_base"))
        assert dropped >= 1 or view.stats["parts"] > before["parts"]
