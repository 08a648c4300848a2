"""kcprpc.state groups (``StateSync(groups=n)``): PARTS messages cut to ``part_size``, each group
with its own baseline and ack, parts applied on their own, a lost part costing only its groups
a tick; bounds on parts; forged parts and acks dropped and counted; entities reused by the view."""

from __future__ import annotations

import random
from typing import Any

import pytest
from state_support import Unit, World

from kcprpc import codec
from kcprpc.errors import UsageError
from kcprpc.state import StateSync, StateView
from kcprpc.state.groups import MAX_GROUPS, group_of
from kcprpc.state.sync import PARTS, SNAPSHOT_RESEND


def world(n: int = 200, seed: int = 1) -> World:
    r = random.Random(seed)
    return World(units={i: Unit(x=r.uniform(0, 1000), y=r.uniform(0, 1000)) for i in range(n)})


def move(w: World, r: random.Random, share: float = 0.5) -> None:
    w.tick += 1
    for u in w.units.values():
        if r.random() < share:
            u.x += r.uniform(-3, 3)
            u.y += r.uniform(-3, 3)


def wire(sync: StateSync[Any], msg: list[Any]) -> Any:
    frame = sync.frame(msg)
    body = codec.unpack(frame[codec.HEADER_SIZE :])
    assert body[0] == sync.name and body[2:] == [None, None, None]
    return body[1]


def deliver(sync: StateSync[Any], view: StateView[Any], msgs: list[list[Any]], client: Any = "c") -> None:
    """The client stages every part, commits once, acks what it applied."""
    for m in msgs:
        view.receive(wire(sync, m), commit=False)
    for seq, groups in view.commit().items():
        assert sync.ack(client, seq, groups)


def test_group_of_is_floor_modulo_for_ints_and_crc32_for_strs() -> None:
    assert [group_of(k, 16) for k in (0, 5, 16, 33, -1)] == [0, 5, 0, 1, 15]
    assert group_of("ann", 7) == 3877663347 % 7 == 5  # zlib.crc32(b"ann")


def test_a_big_state_goes_as_parts_that_fit_and_converges() -> None:
    sync = StateSync(World, "w", groups=16, part_size=1000)
    view = StateView(World, "w")
    sync.add_client("c")
    w = world()
    r = random.Random(2)
    for _ in range(5):
        msgs = [m for _, m in sync.tick(w)]
        assert 1 < len(msgs) <= 16  # the snapshot is about 8 KB: parts
        assert all(m[0] == PARTS and m[4] == len(msgs) for m in msgs)
        assert all(len(sync.frame(m)) <= 1000 + 60 for m in msgs)  # part_size plus the envelope
        deliver(sync, view, msgs)
        assert view.state == w and view.min_seq == sync.seq
        move(w, r)
    assert sync.stats["oversized"] == 0
    assert view.stats["applied"] == 5  # one commit per tick, whatever the parts


def test_a_lost_part_leaves_only_its_groups_a_tick_behind() -> None:
    sync = StateSync(World, "w", groups=16, part_size=300, max_parts=64)
    view = StateView(World, "w")
    sync.add_client("c")
    w = world()
    r = random.Random(3)
    deliver(sync, view, [m for _, m in sync.tick(w)])
    move(w, r)
    msgs = [m for _, m in sync.tick(w)]
    assert len(msgs) >= 3
    lost = msgs.pop(1)
    lost_groups = {e[0] for e in lost[5]}
    deliver(sync, view, msgs)
    assert view.state is not None
    seqs = view.seqs
    assert {g for g in range(16) if seqs[g] < sync.seq} == lost_groups
    assert view.min_seq == sync.seq - 1
    for k, u in view.state.units.items():  # the other groups are current
        if group_of(k, 16) not in lost_groups:
            assert u == w.units[k]
    assert any(view.state.units[k] != u for k, u in w.units.items())  # the lost ones are not
    move(w, r)
    msgs = [m for _, m in sync.tick(w)]  # the lost groups come again, against their old baselines
    deliver(sync, view, msgs)
    assert view.state == w and view.min_seq == sync.seq


def test_idle_groups_are_named_so_the_view_knows_them_current() -> None:
    sync = StateSync(World, "w", groups=8)
    view = StateView(World, "w")
    sync.add_client("c")
    w = world(40)
    deliver(sync, view, [m for _, m in sync.tick(w)])
    w.units[3].x += 1  # group 3 changes; group 0 never idles here (tick)
    w.tick += 1
    msgs = [m for _, m in sync.tick(w)]
    assert len(msgs) == 1
    assert sorted(e[0] for e in msgs[0][5]) == [0, 3]
    assert msgs[0][6] == [1, 2, 4, 5, 6, 7]
    deliver(sync, view, msgs)
    assert view.seqs == (2,) * 8 and view.state == w


@pytest.mark.parametrize("seed", range(6))
def test_random_losses_of_parts_and_acks_then_a_clean_tick_converge(seed: int) -> None:
    r = random.Random(seed)
    sync = StateSync(World, "w", groups=r.choice([2, 5, 16]), part_size=r.choice([200, 1000]), max_parts=64)
    views: dict[Any, StateView[World]] = {c: StateView(World, "w") for c in range(3)}
    for c in views:
        sync.add_client(c)
    w = world(60, seed)
    for _ in range(40):
        move(w, r, 0.3)
        if r.random() < 0.2:
            w.units.pop(r.choice(list(w.units)))
            w.units[1000 + w.tick] = Unit(kind="new")
        if r.random() < 0.2:
            w.names[f"n{r.randint(0, 9)}"] = w.tick
        for c, m in sync.tick(w):
            if r.random() < 0.3:  # the part is lost
                continue
            commit = r.random() < 0.5
            seq = views[c].receive(wire(sync, m), commit=commit)
            if commit and seq is not None and r.random() < 0.7:
                sync.ack(c, seq, views[c].acked_groups)
        for c, v in views.items():
            for seq, groups in v.commit().items():
                if r.random() < 0.7:  # the ack arrives
                    sync.ack(c, seq, groups)
    for _ in range(SNAPSHOT_RESEND + 2):  # clean ticks (an unacknowledged snapshot waits)
        by: dict[Any, list[list[Any]]] = {}
        for c, m in sync.tick(w):
            by.setdefault(c, []).append(m)
        for c, v in views.items():
            deliver(sync, v, by.get(c, []), c)
    for v in views.values():
        assert v.state == w
        assert v.stats["malformed"] == v.stats["invalid"] == v.stats["no_base"] == 0


def test_one_group_bigger_than_part_size_is_sent_alone_and_counted() -> None:
    sync = StateSync(World, "w", groups=2, part_size=100)
    sync.add_client("c")
    msgs = [m for _, m in sync.tick(world(50))]
    assert len(msgs) == 2 and all(len(m[5]) == 1 for m in msgs)
    assert sync.stats["oversized"] == 2


def test_groups_and_part_size_are_bounded() -> None:
    with pytest.raises(UsageError):
        StateSync(World, groups=0)
    with pytest.raises(UsageError):
        StateSync(World, groups=MAX_GROUPS + 1)
    with pytest.raises(UsageError):
        StateSync(World, part_size=10)


def _parts_view() -> tuple[StateSync[World], StateView[World], World]:
    sync = StateSync(World, "w", groups=4)
    view = StateView(World, "w")
    sync.add_client("c")
    w = world(20)
    w.names = {"ann": 1}
    deliver(sync, view, [m for _, m in sync.tick(w)])
    return sync, view, w


def test_forged_parts_are_dropped_and_counted() -> None:
    sync, view, _ = _parts_view()
    sid = sync.schema.id
    before = view.state
    g_ann = group_of("ann", 4)
    other = (g_ann + 1) % 4
    forged = [
        "nope",
        [PARTS, 9, sid, 4, 1, [[7, 0, {}]], []],  # group out of range
        [PARTS, 9, sid, 4, 1, [[1, 1, {}], [1, 1, {}]], []],  # the same group twice
        [PARTS, 9, sid, 4, 1, [[1, 1, {0: 5}]], []],  # a root field of group 0 changed in group 1
        [PARTS, 9, sid, 4, 1, [[1, 1, {2: [[], {}, {6: ["npc", 0.0, 0.0, 1]}]}]], []],  # key 6 is group 2's
        [PARTS, 9, sid, 4, 1, [[1, 0, {2: {}}]], []],  # group 1's full tree without its names field
        [PARTS, 9, sid, 4, 1, [[other, 0, {2: {}, 3: {"ann": 1}}]], []],  # "ann" in another group
        [PARTS, 9, sid, 4, 1, [[1, 1, {}]], [99]],  # an idle group out of range
        [PARTS, 9, sid, 300, 1, [[1, 1, {}]], []],  # too many groups
        [PARTS, 9, sid, 4, 1, [], []],  # no entries
        [PARTS, 9, sid, 4, 1, [[1, 1, {}]] * 5, []],  # more entries than groups
        [PARTS, 9, sid, 4, 1, [[1, -1, {}]], []],  # a negative base
        [PARTS, 9, sid, 4, 1, [[1, 1, {2: [[], {}, {21: ["npc", 0.0, 0.0, "x"]}]}]], []],  # hp not an int
    ]
    for m in forged:
        view.receive(m)
    assert view.state is before and view.seq == 1
    assert view.stats["malformed"] == len(forged) - 1
    assert view.stats["invalid"] == 1
    assert view.receive([PARTS, 9, sid ^ 1, 4, 1, [[1, 1, {}]], []]) is None
    assert view.stats["schema_mismatch"] == 1
    assert view.receive([PARTS, 9, sid, 4, 1, [[1, 5, {}]], []]) is None
    assert view.stats["no_base"] == 1
    assert view.receive([PARTS, 1, sid, 4, 1, [[1, 1, {}]], []]) is None  # not newer
    assert view.stats["stale"] == 1
    # and a good one still applies
    assert view.receive([PARTS, 9, sid, 4, 1, [[1, 1, {2: [[1], {}, {}]}]], []]) == 9
    assert view.acked_groups == [1] and view.state is not None and 1 not in view.state.units


def test_forged_acks_are_ignored_and_counted() -> None:
    sync, _, w = _parts_view()
    before = sync.stats["acks_ignored"]
    assert not sync.ack("c", 1)  # no groups named
    assert not sync.ack("c", 1, [9, -1])  # out of range
    assert not sync.ack("c", 77, [0])  # never sent
    assert not sync.ack("stranger", 1, [0])
    assert sync.stats["acks_ignored"] - before == 5
    single = StateSync(World, "one")
    single.add_client("c")
    single.tick(w)
    assert not single.ack("c", 1, [0])  # groups on a sync without groups
    assert single.ack("c", 1)


@pytest.mark.parametrize("groups", [1, 4])
def test_a_snapshot_keeps_the_states_before_it_for_an_ack_in_flight(groups: int) -> None:
    """The server sends snapshots until one is acknowledged; the client applied two, the ack of
    the first arrives: the next delta is against it, which the client must still hold."""
    sync = StateSync(World, "w", groups=groups)
    view = StateView(World, "w")
    sync.add_client("c")
    w = world(20)
    first = [m for _, m in sync.tick(w)]
    w.tick += 1
    second = [m for _, m in sync.tick(w)]
    acks1: dict[int, Any] = {}
    for m in first:
        seq = view.receive(wire(sync, m), commit=groups == 1)
        if groups == 1:
            acks1[seq] = None  # type: ignore[index]
    acks1.update(view.commit())
    for m in second:
        view.receive(wire(sync, m))
    for seq, g in acks1.items():  # the first ack arrives, the second is lost
        assert sync.ack("c", seq, g)
    w.tick += 1
    deliver_all = [m for _, m in sync.tick(w)]
    assert all(m[0] != 0 for m in deliver_all)  # deltas, not snapshots
    for m in deliver_all:
        assert view.receive(wire(sync, m)) is not None
    assert view.state == w and view.stats["no_base"] == 0


def test_the_view_reuses_unchanged_entities_and_validates_changed_ones() -> None:
    sync, view, w = _parts_view()
    assert view.state is not None
    old = dict(view.state.units)
    w.units[2].x = 5.0
    w.tick += 1
    deliver(sync, view, [m for _, m in sync.tick(w)])
    assert view.state == w
    assert view.state.units[3] is old[3]  # not rebuilt
    assert view.state.units[2] is not old[2] and view.state.units[2].x == 5.0


def test_max_parts_bounds_a_tick_and_the_rest_goes_first_next_tick() -> None:
    sync = StateSync(World, "w", groups=16, part_size=400, max_parts=2)
    view = StateView(World, "w")
    sync.add_client("c")
    w = world(100)
    sent: list[set[int]] = []
    for _ in range(6):
        msgs = [m for _, m in sync.tick(w)]
        assert len(msgs) <= 2 and all(len(sync.frame(m)) <= 400 + 60 for m in msgs)
        sent.append({e[0] for m in msgs for e in m[5]})
        deliver(sync, view, msgs)
        w.tick += 1
    assert sync.stats["deferred"] > 0
    assert not sent[0] & sent[1]  # the groups not sent at first went next
    assert view.state is not None and view.state.units == w.units  # every group got through


def test_an_unacknowledged_group_snapshot_is_not_sent_again_every_tick() -> None:
    sync = StateSync(World, "w", groups=4)
    sync.add_client("c")
    w = world(20)
    counts = []
    for _ in range(SNAPSHOT_RESEND + 1):  # nothing acknowledged
        counts.append(sum(len(m[5]) for _, m in sync.tick(w)))
    assert counts == [4] + [0] * (SNAPSHOT_RESEND - 1) + [4]


def test_an_ack_names_at_most_max_groups_groups() -> None:
    from pydantic import ValidationError

    from kcprpc.state import StateAck

    assert StateAck(name="w", seq=1, groups=list(range(MAX_GROUPS))).groups == list(range(MAX_GROUPS))
    with pytest.raises(ValidationError):
        StateAck(name="w", seq=1, groups=[0] * (MAX_GROUPS + 1))  # dropped by the RPC layer
