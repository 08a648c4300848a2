"""Vectors for the TypeScript state view (clients/typescript/test/state_trace.test.ts).

Drives kcprpc.state's server side (:class:`StateSync`) through a seeded sequence of random state
changes, with random losses, duplicates and reordering of its messages and random losses and
delays of the clients' acks, and hostile messages mixed in; each client is a Python
:class:`StateView`. Prints JSON: per run, the steps in order, each message as the exact ``EVENT``
frame the server sends (hex), what the Python view returned for it, and after each tick the
client's state (a canonical form), seqs, extra, counters and the callbacks that fired. The TS view
replays the frames and must match at every step.

    python tests/clients/state_trace.py [--seed N] [--ticks N]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

sys.path.append(str(Path(__file__).resolve().parents[2]))  # the checkout, after an installed kcprpc

from kcprpc import codec
from kcprpc.codec import encode_frame
from kcprpc.state import Interest, Quantized, StateSync, StateView
from tests.clients.state_canon import canon, keyrepr


class Item(BaseModel):
    kind: str = "a"
    n: int = 0


class Unit(BaseModel):
    name: str = ""
    x: Annotated[float, Quantized(0.01)] = 0.0
    hp: int = 100
    tags: dict[str, int] = Field(default_factory=dict)
    alive: bool = True
    note: str | None = None


class Settings(BaseModel):
    mode: str = "dm"
    limit: int = 10


class World(BaseModel):
    phase: str = "lobby"
    settings: Settings = Field(default_factory=Settings)
    units: dict[int, Unit] = Field(default_factory=dict)
    names: dict[str, Unit] = Field(default_factory=dict)
    log: list[str] = Field(default_factory=list)
    items: list[Item] = Field(default_factory=list)
    grid: dict[str, list[int]] = Field(default_factory=dict)
    scores: dict[str, Annotated[float, Quantized(0.5)]] = Field(default_factory=dict)
    ratio: float = 0.0


FIELD_PATHS = [
    "phase",
    "settings",
    "settings.mode",
    "settings.limit",
    "units",
    "names",
    "log",
    "items",
    "grid",
    "scores",
    "ratio",
]
COLLECTIONS = ["units", "names", "log", "items", "grid", "scores"]


NAMES = ["ann", "bob", "cy", "dee", "eve", "fay", "gus", "hal", "ivy", "jo", "ké", "🙂"]


def mutate(s: World, rng: random.Random) -> None:
    r = rng.random
    if r() < 0.05:
        s.phase = rng.choice(["lobby", "play", "end"])
    if r() < 0.05:
        s.settings.mode = rng.choice(["dm", "ctf", "koth"])
    if r() < 0.05:
        s.settings.limit = rng.randrange(1, 50)
    if r() < 0.1:
        s.ratio = rng.uniform(-1e3, 1e3)
    for _ in range(rng.randrange(0, 4)):
        op = rng.random()
        if op < 0.3 and len(s.units) < 40:
            s.units[rng.randrange(-20, 60)] = Unit(name=rng.choice(NAMES), x=round(rng.uniform(0, 100), 3))
        elif op < 0.45 and s.units:
            del s.units[rng.choice(list(s.units))]
        elif s.units:
            u = s.units[rng.choice(list(s.units))]
            w = rng.random()
            if w < 0.5:
                u.x = round(rng.uniform(0, 100), 4)
            elif w < 0.65:
                u.hp = rng.randrange(0, 100)
            elif w < 0.8:
                if u.tags and rng.random() < 0.4:
                    del u.tags[rng.choice(list(u.tags))]
                else:
                    u.tags[rng.choice(NAMES)] = rng.randrange(-5, 5)
            elif w < 0.9:
                u.alive = not u.alive
            else:
                u.note = rng.choice([None, "hi", ""])
    if r() < 0.15:
        k = rng.choice(NAMES)
        if k in s.names and rng.random() < 0.4:
            del s.names[k]
        else:
            s.names[k] = Unit(name=k, hp=rng.randrange(0, 100))
    if r() < 0.1:
        if s.log and rng.random() < 0.3:
            del s.log[rng.randrange(0, len(s.log)) :]
        else:
            s.log.append(rng.choice(NAMES) + " scored")
            del s.log[:-12]
    if r() < 0.1:
        w = rng.random()
        if w < 0.4 and len(s.items) < 10:
            s.items.append(Item(kind=rng.choice("abc"), n=rng.randrange(10)))
        elif w < 0.7 and s.items:
            s.items.pop()
        elif s.items:
            s.items[rng.randrange(len(s.items))].n += 1
    if r() < 0.1:
        k = rng.choice(NAMES)
        if k in s.grid and rng.random() < 0.3:
            del s.grid[k]
        else:
            s.grid[k] = [rng.randrange(9) for _ in range(rng.randrange(4))]
    if r() < 0.1:
        s.scores[rng.choice(NAMES)] = rng.uniform(-50, 50)


def interest(state: World) -> Interest:
    """Client 1 sees the units with x < 60 and the names of even length, and no unit's hp."""
    return Interest(
        keys={
            "units": [k for k, u in state.units.items() if u.x < 60],
            "names": [k for k in state.names if len(k) % 2 == 0],
        },
        hide={"units.*": ["hp"]},
    )


def hostile(rng: random.Random, view: StateView[World], sync: StateSync[World], seq: int) -> Any:
    """A message both views must drop the same way (none is about int-vs-str keys or float seqs:
    msgpack decoders of other languages may not tell those apart)."""
    sid = sync.schema.id
    base = view.seq or 1
    if sync.groups.n == 1:
        choices: list[Any] = [
            [1, seq, 999_999, {}],  # no_base
            [0, seq, (sid + 1) & 0xFFFFFFFF, []],  # schema_mismatch
            [0, seq, sid, [1, 2]],  # malformed: not the model's fields
            [1, seq, base, {99: 1}],  # malformed: field index
            [1, seq, base, {2: [[123_456], {}, {}]}],  # malformed: removed key not present
            [1, seq, base, {4: [10**9, {}, []]}],  # malformed: a list length over max_entities
            [1, seq, base, {4: [0, {}, ["x"]]}],  # malformed: appended entries with no growth
            [1, seq, base, {0: 5}],  # invalid: phase is a str
            [1, seq, base, {2: [[], {}, {7: [1]}]}],  # malformed: an entity's full tree
            [7, seq, 0, 0],  # malformed: kind
            [1, seq, base],  # malformed: 3 elements
            "junk",
            [1, -1, base, {}],
        ]
        return rng.choice(choices)
    n = sync.groups.n
    return rng.choice(
        [
            [2, seq, sid, 1, 1, [[0, 0, {}]], []],  # malformed: groups out of range
            [2, seq, sid, n, 1, [[n, 0, {}]], []],  # malformed: group out of range
            [2, seq, sid, n, 1, [[1, 0, {}], [1, 0, {}]], []],  # malformed: a group twice
            [2, seq, (sid + 1) & 0xFFFFFFFF, n, 1, [[0, 0, {}]], []],  # schema_mismatch
            [2, seq, sid, n, 1, [[1, 999_999, {}]], []],  # no_base
            [2, seq, sid, n, 1, [], []],  # malformed: no entries
            [2, seq, sid, n, 1, [[0, 0, {}]], [n + 3]],  # malformed: idle out of range
            [2, seq, sid, n, 0, [[0, 0, {}]], []],  # malformed: parts
        ]
    )


def run(
    seed: int, ticks: int, groups: int | Literal["auto"], part_size: int, max_parts: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    sync: StateSync[World] = StateSync(
        World, "trace", max_baselines=8, groups=groups, part_size=part_size, max_parts=max_parts
    )
    views = [StateView(World, "trace", max_baselines=8), StateView(World, "trace", max_baselines=8)]
    events: list[list[str]] = [[], []]

    def record(i: int, what: str) -> Callable[..., None]:
        return lambda *args: events[i].append(
            what if not args or what.startswith(("field", "state")) else f"{what} {keyrepr(args[0])}"
        )

    for i, v in enumerate(views):
        for p in FIELD_PATHS:
            v.listen(p, record(i, f"field {p}"))
        for p in COLLECTIONS:
            v.on_add(p, record(i, f"add {p}"))
            v.on_change(p, record(i, f"change {p}"))
            v.on_remove(p, record(i, f"remove {p}"))
        v.on_state(record(i, "state"))
    sync.add_client(0)
    sync.add_client(1, interest=interest)
    state = World()
    late: list[list[tuple[int, Any]]] = [[], []]  # messages held back (reordered)
    acks: list[tuple[int, int, int, list[int] | None]] = []  # (due tick, client, seq, groups)
    steps: list[dict[str, Any]] = []
    for tick in range(1, ticks + 1):
        mutate(state, rng)
        extras = {0: tick * 3, 1: -1 if tick < 5 else tick}
        out = sync.tick(state, extras)
        seq = sync.seq
        per: list[list[Any]] = [[], []]
        for client, msg in out:
            per[int(client)].append(msg)  # type: ignore[call-overload]
        for c in (0, 1):
            deliver: list[Any] = []
            if rng.random() < 0.08:
                deliver.append(hostile(rng, views[c], sync, seq))
            for t, m in list(late[c]):
                if t <= tick:
                    late[c].remove((t, m))
                    deliver.append(m)
            for m in per[c]:
                x = rng.random()
                if x < 0.12:
                    continue  # lost
                if x < 0.2:
                    late[c].append((tick + rng.randrange(1, 4), m))  # late: stale or superseding
                    continue
                deliver.append(m)
                if rng.random() < 0.03:
                    deliver.append(m)  # duplicated
            each = groups == 1 or rng.random() < 0.3  # PARTS: applied one by one, or staged and committed
            for m in deliver:
                frame = (
                    sync.frame(m)
                    if isinstance(m, list) and m and m[0] in (0, 1, 2) and len(m) >= 4
                    else (encode_frame(codec.EVENT, 0, ["trace", m, None, None, None]))
                )
                ret = views[c].receive(m, commit=each)
                gs = views[c].acked_groups
                steps.append(
                    {"op": "recv", "c": c, "frame": frame.hex(), "commit": each, "ret": ret, "groups": gs}
                )
                if ret is not None and (each or gs is None):  # gs None: a whole message, applied
                    acks.append((tick + rng.choice((0, 0, 0, 1, 2)), c, ret, gs))
            if not each:
                done = views[c].commit()
                steps.append({"op": "commit", "c": c, "acks": [[s, g] for s, g in sorted(done.items())]})
                for s, g in done.items():
                    acks.append((tick + rng.choice((0, 0, 0, 1, 2)), c, s, g))
            v = views[c]
            steps.append(
                {
                    "op": "check",
                    "c": c,
                    "state": None if v.state is None else canon(v.schema.root, v.state),
                    "seq": v.seq,
                    "seqs": list(v.seqs),
                    "min_seq": v.min_seq,
                    "extra": v.extra,
                    "held": v.held,
                    "stats": dict(v.stats),
                    "events": sorted(events[c]),
                }
            )
            events[c].clear()
        for a in [a for a in acks if a[0] <= tick]:
            acks.remove(a)
            if rng.random() < 0.15 or (a[1] == 1 and 100 <= tick < 112):
                continue  # the ack is lost (client 1's, all of them for a while: the server resets it)
            sync.ack(a[1], a[2], a[3])
    return {
        "groups": groups,
        "schema_id": sync.schema.id,
        "describe": sync.schema.root.describe(),
        "steps": steps,
        "sync_stats": sync.stats,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--ticks", type=int, default=250)
    a = ap.parse_args()
    runs = [
        run(a.seed, a.ticks, 1, 1100, 8),
        run(a.seed + 1, a.ticks, 4, 64, 2),  # small parts: several per tick, some deferred
        run(a.seed + 2, a.ticks, 16, 1100, 8),
        run(a.seed + 3, a.ticks, "auto", 200, 8),  # whole while small, then parts, then more groups
    ]
    print(json.dumps({"runs": runs}))


if __name__ == "__main__":
    main()
