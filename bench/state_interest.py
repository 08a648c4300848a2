"""Interest filters in kcprpc.state: the server's cost per client per tick, filter on vs off
(alternated rounds, same run), and the bytes each client gets.

A room of ``--entities`` entities on a 1000 x 1000 map (bench/_state_world.py), ``--clients``
clients each placed on the map. *off*: every client sees everything; *aoi*: each sees the
entities within ``--radius`` of itself (a per-client filter called once per tick); *aoi+team*:
the same, and the ``hp`` of the other team hidden; *aoi filter alone*: only the filter (the
interest function and the client's view of the tick's tree). One operation = one tick of ``StateSync``
for all clients (views, deltas, EVENT frames encoded; every message acknowledged at once), on
precomputed world states. Prints µs per client per tick and bytes per client per tick. Example::

    python bench/state_interest.py --clients 32 --entities 200
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from _common import alternate_rounds, print_rounds  # noqa: E402
from _state_world import SIZE, RoomState, World  # noqa: E402

from kcprpc.state import Interest, Schema, StateSync  # noqa: E402
from kcprpc.state.interest import Views  # noqa: E402


def aoi(cx: float, cy: float, r: float, team: int | None) -> Any:
    r2 = r * r

    def interest(s: RoomState) -> Interest:
        keys = [k for k, e in s.entities.items() if (e.x - cx) ** 2 + (e.y - cy) ** 2 <= r2]
        if team is None:
            return Interest(keys={"entities": keys})
        return Interest(keys={"entities": keys}, hide={"entities.*": ("hp",)} if team else {})

    return interest


def contender(args: argparse.Namespace, states: list[RoomState], mode: str) -> tuple[Any, dict[str, int]]:
    rng = random.Random(args.seed)
    sync = StateSync(RoomState, "bench", max_baselines=args.baselines, groups=1)  # whole messages
    for c in range(args.clients):
        x, y = rng.uniform(0, SIZE), rng.uniform(0, SIZE)
        f = None if mode == "off" else aoi(x, y, args.radius, c % 2 if mode == "aoi+team" else None)
        sync.add_client(c, interest=f)
    totals = {"bytes": 0, "msgs": 0}
    i = 0

    def one_tick() -> None:
        nonlocal i
        state = states[i % len(states)]
        i += 1
        for c, msg in sync.tick(state):
            totals["bytes"] += len(sync.frame(msg))
            totals["msgs"] += 1
            sync.ack(c, msg[1])

    return one_tick, totals


def filter_only(args: argparse.Namespace, states: list[RoomState]) -> Any:
    """The filter alone: each client's interest function and its view of the tick's tree."""
    rng = random.Random(args.seed)
    schema = Schema(RoomState)
    views = Views(schema)
    fns = [aoi(rng.uniform(0, SIZE), rng.uniform(0, SIZE), args.radius, None) for _ in range(args.clients)]
    trees = [schema.tree(s) for s in states]
    i = 0

    def one_tick() -> None:
        nonlocal i
        k = i % len(states)
        i += 1
        state, tree = states[k], trees[k]
        for f in fns:
            views.view(tree, f(state))

    return one_tick


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--entities", type=int, default=200)
    ap.add_argument("--moving", type=float, default=0.5)
    ap.add_argument("--radius", type=float, default=250.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--round-s", type=float, default=0.5)
    ap.add_argument("--baselines", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    world = World(args.entities, args.moving, args.seed)
    states = [world.step().model_copy(deep=True) for _ in range(200)]
    modes = ["off", "aoi", "aoi+team"]
    made = {m: contender(args, states, m) for m in modes}
    for fn, _ in made.values():  # warm up: snapshots acknowledged, deltas from here
        fn()
    for _, t in made.values():
        t["bytes"] = t["msgs"] = 0
    print(
        f"{args.clients} clients, {args.entities} entities ({args.moving:.0%} moving), "
        f"radius {args.radius:g} on a {SIZE:g} map; {args.rounds} alternated rounds"
    )
    contenders = [(m, args.clients, fn) for m, (fn, _) in made.items()]
    contenders.append(("aoi filter alone", args.clients, filter_only(args, states)))
    res = alternate_rounds(contenders, args.rounds, args.round_s)
    print("µs per client per tick (median of rounds):")
    med = print_rounds(res, unit=" µs")
    print("bytes per client per tick:")
    for m, (_, t) in made.items():
        print(f"  {m:<16}  {t['bytes'] / max(1, t['msgs']):8.0f} B")
    print(
        f"the aoi filter costs {med['aoi filter alone']:.1f} µs per client per tick; the whole tick per client "
        f"with it {med['aoi'] / med['off']:.2f}x (aoi+team {med['aoi+team'] / med['off']:.2f}x) of without"
    )


if __name__ == "__main__":
    main()
