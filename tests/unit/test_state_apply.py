"""The view's fast paths for entities whose fields are all plain values (``Node.flat``): applying
a delta to a dict of such entities and rebuilding the typed state give what the general paths
give, and reject the same malformed input (counted, the state untouched)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import BaseModel, Field
from state_support import Unit

from kcprpc.state import StateSync, StateView
from kcprpc.state.delta import SAME, Budget, apply, diff
from kcprpc.state.schema import Schema, from_tree


class Deep(BaseModel):  # not flat: a nested model
    u: Unit = Field(default_factory=Unit)


class World(BaseModel):
    tick: int = 0
    units: dict[int, Unit] = Field(default_factory=dict)
    crew: list[Unit] = Field(default_factory=list)
    deep: dict[str, Deep] = Field(default_factory=dict)


def test_flat_is_set_for_models_of_plain_leaves_only() -> None:
    root = Schema(World).root
    units, crew, deep = root.fields[1], root.fields[2], root.fields[3]
    assert units.item is not None and units.item.flat
    assert crew.item is not None and crew.item.flat
    assert deep.item is not None and not deep.item.flat
    assert not root.flat  # it holds collections


def _rand_tree(r: random.Random, keys: range) -> dict[int, tuple[Any, ...]]:
    return {
        k: (r.choice(["npc", "pc"]), float(r.randint(0, 3)), r.random(), r.randint(0, 100))
        for k in keys
        if r.random() < 0.7
    }


@pytest.mark.parametrize("seed", range(20))
def test_the_flat_apply_gives_what_the_general_one_gives(seed: int) -> None:
    r = random.Random(seed)
    node = Schema(World).root.fields[1]
    assert node.item is not None
    for _ in range(10):
        old, new = _rand_tree(r, range(12)), _rand_tree(r, range(12))
        change = diff(node, old, new)
        if change is SAME:
            continue
        fast = apply(node, old, change, Budget(10_000, 100))
        node.item.flat = False
        try:
            slow = apply(node, old, change, Budget(10_000, 100))
        finally:
            node.item.flat = True
        assert fast == slow == new
        assert from_tree(node, fast) == {
            k: dict(zip(("kind", "x", "y", "hp"), v, strict=True)) for k, v in new.items()
        }


def held() -> tuple[StateView[World], int]:
    sync = StateSync(World, "w")
    view = StateView(World, "w", max_entities=8, max_nodes=30)
    sync.add_client("c")
    w = World(units={1: Unit(), 2: Unit(x=1.0)}, crew=[Unit()])
    for c, msg in sync.tick(w):
        assert sync.ack(c, view.receive(msg) or 0)
    return view, sync.schema.id


@pytest.mark.parametrize(
    ("change", "counter"),
    [
        ({1: [[], {1: [0.0]}, {}]}, "malformed"),  # an entity change that is not a map
        ({1: [[], {1: {4: 1.0}}, {}]}, "malformed"),  # a field index past the entity's fields
        ({1: [[], {1: {-1: 1.0}}, {}]}, "malformed"),  # a negative field index
        ({1: [[], {1: {True: 1.0}}, {}]}, "malformed"),  # a bool is not a field index
        ({1: [[], {1: {"x": 1.0}}, {}]}, "malformed"),  # a name is not a field index
        ({1: [[], {9: {1: 1.0}}, {}]}, "malformed"),  # changes an absent entity
        ({1: [[], {"1": {1: 1.0}}, {}]}, "malformed"),  # a str key in a dict[int, ...]
        ({1: [[], {}, {3: ["npc", 0.0, 0.0]}]}, "malformed"),  # a new entity of the wrong arity
        ({1: [[], {}, {3: {"kind": "npc"}}]}, "malformed"),  # a new entity that is not an array
        ({1: [[], {}, {2: ["npc", 0.0, 0.0, 1]}]}, "malformed"),  # adds a present key
        ({1: [[], {}, {True: ["npc", 0.0, 0.0, 1]}]}, "malformed"),  # a bool key
        ({1: [[], {}, {i: ["npc", 0.0, 0.0, 1] for i in range(3, 10)}]}, "malformed"),  # > max_entities
        (
            {
                1: [[], {}, {i: ["npc", 0.0, 0.0, 1] for i in range(3, 8)}],
                2: [2, {0: {1: 1.0}}, [["a", 1.0, 1.0, 1]]],
            },
            "malformed",
        ),  # > max_nodes
        ({1: [[], {1: {3: "lots"}}, {}]}, "invalid"),  # fits the schema, not the model
        ({1: [[], {}, {3: ["npc", "far", 0.0, 1]}]}, "invalid"),
    ],
)
def test_bad_flat_changes_are_dropped_and_counted(change: Any, counter: str) -> None:
    view, _ = held()
    before = (view.state, view.seq, view.tree)
    assert view.receive([1, 2, 1, change]) is None
    assert view.stats[counter] == 1
    assert (view.state, view.seq, view.tree) == before
    # and a good one still applies
    assert view.receive([1, 2, 1, {1: [[1], {2: {1: 5.0}}, {3: ["pc", 1.0, 2.0, 3]}]}]) == 2
    assert view.state is not None and view.state.units == {
        2: Unit(x=5.0),
        3: Unit(kind="pc", x=1.0, y=2.0, hp=3),
    }


def test_the_typed_state_keeps_unchanged_and_reverted_entities_right() -> None:
    """An entity a delta repeats (against an older baseline) is reused; one that changed after
    the baseline and went back to it is rebuilt from the baseline's tree."""
    sync = StateSync(World, "w")
    view = StateView(World, "w")
    sync.add_client("c")
    w = World(units={i: Unit(x=float(i)) for i in range(4)})
    seqs = []
    for step in range(4):
        if step == 1:
            w.units[1].x = 50.0
        if step == 2:
            w.units[1].x = 1.0  # back to what the acknowledged baseline holds
            w.units[2].hp = 7
        for _, msg in sync.tick(w):
            seqs.append(view.receive(msg))
        if step == 0:
            assert sync.ack("c", seqs[0] or 0)  # only the first is acknowledged: deltas against it
        assert view.state == w
    assert view.stats["applied"] == 4
