"""``groups="auto"`` (StateSync's default): whole messages while the state's full tree fits
``part_size``, PARTS in :func:`groups_for` groups from the tick it does not, more groups when it
grows again; clients (those that joined before the switch too) keep a correct state across it,
on a lossless link and on a seeded lossy one."""

from __future__ import annotations

import random
from typing import Any

import pytest
from state_support import Unit, World

from kcprpc import codec
from kcprpc.errors import UsageError
from kcprpc.state import StateSync, StateView
from kcprpc.state.groups import MAX_GROUPS
from kcprpc.state.sync import DELTA, PARTS, SNAPSHOT, groups_for


def wire(sync: StateSync[Any], msg: list[Any]) -> Any:
    return codec.unpack(sync.frame(msg)[codec.HEADER_SIZE :])[1]


def deliver(sync: StateSync[Any], view: StateView[Any], msgs: list[list[Any]], client: Any) -> None:
    """What ``attach`` does: whole messages applied and acked one by one, PARTS staged, applied
    once, their groups acked."""
    for m in msgs:
        seq = view.receive(wire(sync, m), commit=False)
        if seq is not None and view.acked_groups is None:
            assert sync.ack(client, seq)
    for seq, groups in view.commit().items():
        assert sync.ack(client, seq, groups)


def grow(w: World, r: random.Random, add: int) -> None:
    w.tick += 1
    for u in w.units.values():
        if r.random() < 0.3:
            u.x += r.uniform(-1, 1)
    for _ in range(add):
        w.units[len(w.units)] = Unit(x=r.uniform(0, 1000), y=r.uniform(0, 1000))


def size(sync: StateSync[Any], w: World) -> int:
    return len(codec.pack(sync.schema.tree(w)))


def test_groups_for_is_a_power_of_two_that_leaves_room_in_a_part() -> None:
    assert groups_for(1101, 1100) == 2
    assert groups_for(1650, 1100) == 2 and groups_for(1651, 1100) == 4
    assert groups_for(7_082, 1100) == 16  # bench/state_sync.py's world: 200 entities (8 quantized)
    assert groups_for(10**9, 1100) == MAX_GROUPS
    for s in range(1101, 200_000, 997):
        n = groups_for(s, 1100)
        assert n & (n - 1) == 0 and (s <= n * 825 or n == MAX_GROUPS)
        assert n == 2 or s > n // 2 * 825  # the smallest such


def test_a_small_state_stays_whole() -> None:
    sync = StateSync(World, "w")
    view = StateView(World, "w")
    sync.add_client("c")
    r = random.Random(1)
    w = World(units={i: Unit() for i in range(5)})
    kinds = []
    for _ in range(30):
        msgs = [m for _, m in sync.tick(w)]
        kinds += [m[0] for m in msgs]
        deliver(sync, view, msgs, "c")
        assert view.state == w
        grow(w, r, 0)
    assert size(sync, w) <= sync.part_size
    assert kinds[0] == SNAPSHOT and set(kinds[1:]) == {DELTA}
    assert sync.groups.n == 1 and sync.stats["regroups"] == 0 and sync.stats["parts"] == 0


def test_a_growing_state_moves_to_parts_then_to_more_groups_and_clients_follow() -> None:
    """An early client follows the state from 2 entities to 400 across every switch; one that
    joins in parts gets group snapshots. After a tick whose entries all went (none ``deferred``
    past ``max_parts``), both hold the server's state; until the early client has every group
    after a switch, it keeps the last state it had."""
    sync = StateSync(World, "w")
    early, late = StateView(World, "w"), StateView(World, "w")
    sync.add_client("early")
    r = random.Random(2)
    w = World(units={i: Unit() for i in range(2)})
    groups_seen = []
    switches = []
    for t in range(80):
        before, deferred, n = early.state, sync.stats["deferred"], sync.groups.n
        out = sync.tick(w)
        groups_seen.append(sync.groups.n)
        if sync.groups.n != n:
            switches.append(t)
            assert size(sync, w) > n * sync.part_size
            assert sync.groups.n == groups_for(size(sync, w), 1100)
            assert all(m[0] == PARTS and m[3] == sync.groups.n for _, m in out)
        deliver(sync, early, [m for c, m in out if c == "early"], "early")
        if "late" in sync:
            deliver(sync, late, [m for c, m in out if c == "late"], "late")
        if sync.stats["deferred"] == deferred:  # every entry of the tick went
            assert early.state == w or early.state is before
            assert late.state in (None, w)
            if not switches or t > switches[-1] + 1:
                assert early.state == w
        if t == 30:
            sync.add_client("late")
        grow(w, r, 5)
    assert switches and groups_seen[switches[0] - 1] == 1
    assert sync.stats["regroups"] == len(switches) >= 2  # whole -> parts, then more groups
    assert groups_seen == sorted(groups_seen)  # never back
    for _ in range(3):  # the entries deferred at the last switch go
        out = sync.tick(w)
        deliver(sync, early, [m for c, m in out if c == "early"], "early")
        deliver(sync, late, [m for c, m in out if c == "late"], "late")
    assert early.state == w and late.state == w
    assert sync.stats["resets"] == 0


@pytest.mark.parametrize("seed", range(6))
def test_clients_converge_across_the_switch_on_a_lossy_link(seed: int) -> None:
    """10 % of messages and acks lost (seeded) while the state grows past a datagram; after two
    clean ticks every client holds the server's state."""
    r = random.Random(seed)
    sync = StateSync(World, "w")
    views: dict[Any, StateView[World]] = {c: StateView(World, "w") for c in "abc"}
    for c in "ab":
        sync.add_client(c)
    w = World(units={i: Unit() for i in range(3)})

    def tick(loss: float) -> None:
        for c, m in sync.tick(w):
            if r.random() < loss:
                continue
            seq = views[c].receive(wire(sync, m), commit=False)
            if seq is not None and views[c].acked_groups is None and r.random() >= loss:
                sync.ack(c, seq)
        for c, v in views.items():
            for seq, groups in v.commit().items():
                if r.random() >= loss:
                    sync.ack(c, seq, groups)

    for t in range(60):
        if t == 20:
            sync.add_client("c")  # joins while the state crosses the threshold
        tick(0.1)
        grow(w, r, 4)
    assert sync.groups.n > 1
    for _ in range(12):  # clean ticks: the snapshots of groups still unacknowledged come every 4
        tick(0.0)
    for v in views.values():
        assert v.state == w


def test_the_switch_is_deterministic() -> None:
    def run() -> list[Any]:
        sync = StateSync(World, "w")
        sync.add_client("c")
        r = random.Random(5)
        w = World()
        out = []
        for _ in range(40):
            out += [codec.pack(m) for _, m in sync.tick(w)]
            grow(w, r, 3)
        return out

    assert run() == run()


def test_groups_must_be_auto_or_an_int_in_range() -> None:
    with pytest.raises(UsageError, match="auto"):
        StateSync(World, "w", groups="many")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        StateSync(World, "w", groups=0)
    assert StateSync(World, "w").auto and not StateSync(World, "w", groups=1).auto


def test_with_interest_filters_the_views_decide() -> None:
    """A state over a datagram whose clients each see a few entities stays whole; once one
    client's view outgrows a datagram, everyone goes to parts."""
    from kcprpc.state import Interest

    sync = StateSync(World, "w")
    views = {c: StateView(World, "w") for c in ("near", "far")}
    sync.add_client("near", interest=lambda s: Interest(keys={"units": [0, 1, 2]}))
    sync.add_client("far", interest=lambda s: Interest(keys={"units": [3]}))
    r = random.Random(3)
    w = World(units={i: Unit() for i in range(100)})
    assert size(sync, w) > sync.part_size
    for _ in range(5):
        out = sync.tick(w)
        assert {m[0] for _, m in out} <= {SNAPSHOT, DELTA}
        for c, v in views.items():
            deliver(sync, v, [m for h, m in out if h == c], c)
        grow(w, r, 0)
    assert views["near"].state is not None and set(views["near"].state.units) == {0, 1, 2}
    sync.set_interest("near", None)  # sees all 100 entities from now
    out = sync.tick(w)
    assert sync.groups.n == groups_for(size(sync, w), 1100) and {m[0] for _, m in out} == {PARTS}
    for i in range(4):
        for c, v in views.items():
            deliver(sync, v, [m for h, m in out if h == c], c)
        if i < 3:
            grow(w, r, 0)
            out = sync.tick(w)
    assert views["near"].state is not None and views["near"].state.units == w.units
    assert views["far"].state is not None and set(views["far"].state.units) == {3}
