"""The client's CPU per applied state, in one process: a StateView applying the PARTS of a
``StateSync(..., groups=16)`` (latest-wins deltas in parts, bench/state_sync.py's (a)) against a
client validating a full snapshot into the model (its (c)), for the world of bench/_state_world.py.

The server side runs first, untimed: each tick's messages are encoded as they go on the wire and
the client's acks reach the server ``--ack-lag`` ticks later (a round trip). The timed part
replays them on a fresh view: per tick, decode each message (msgpack), ``receive(commit=False)``
and one ``commit()``; (c): decode the snapshot and ``model_validate`` it. Contenders alternate in
each round; µs per applied state, median of the rounds (min, max). Example::

    python bench/state_apply.py --rounds 5 --moving 0.5 0.1
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CODE  # noqa: F401  (puts the code under test first on sys.path)
from _state_world import QRoomState, RoomState, World

from kcprpc import codec
from kcprpc.state import StateSync, StateView


def record(world: World, model: type[Any], ticks: int, groups: int, ack_lag: int) -> list[list[bytes]]:
    """Each tick's messages (msgpack) for one client, its acks reaching the server ``ack_lag``
    ticks after it applied them."""
    sync: StateSync[Any] = StateSync(model, groups=groups)
    sync.add_client("c")
    view: StateView[Any] = StateView(model)
    out: list[list[bytes]] = []
    pending: list[tuple[int, list[tuple[int, list[int] | None]]]] = []
    for t in range(ticks):
        while pending and pending[0][0] <= t:
            for acked, gs in pending.pop(0)[1]:
                sync.ack("c", acked, gs)
        msgs = [codec.pack(m) for _, m in sync.tick(world.step())]
        out.append(msgs)
        acks: list[tuple[int, list[int] | None]] = []
        for b in msgs:
            seq = view.receive(codec.unpack(b), commit=groups == 1)
            if seq is not None and groups == 1:
                acks.append((seq, None))
        if groups > 1:
            acks.extend((s, gs) for s, gs in view.commit().items())
        pending.append((t + ack_lag, acks))
    return out


def replay_parts(
    model: type[Any], ticks: list[list[bytes]], warm: int, callbacks: bool = False
) -> tuple[float, int]:
    """Seconds of CPU applying ticks ``warm:`` on a fresh view (the first ones untimed), and how
    many states it applied. ``callbacks``: with on_add / on_change / on_remove of the entities
    and a listen on the tick registered (what a game's client does)."""
    view: StateView[Any] = StateView(model)
    if callbacks:
        seen: list[Any] = []
        for on in (view.on_add, view.on_change, view.on_remove):
            on("entities", lambda k, e: seen.append(k))
        view.listen("tick", lambda new, old: seen.clear())
    for msgs in ticks[:warm]:
        for b in msgs:
            view.receive(codec.unpack(b), commit=False)
        view.commit()
    before = view.stats["applied"]
    t0 = time.process_time()
    for msgs in ticks[warm:]:
        for b in msgs:
            view.receive(codec.unpack(b), commit=False)
        view.commit()
    return time.process_time() - t0, view.stats["applied"] - before


def replay_snapshots(model: type[Any], snaps: list[bytes]) -> tuple[float, int]:
    t0 = time.process_time()
    for b in snaps:
        model.model_validate(codec.unpack(b))
    return time.process_time() - t0, len(snaps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entities", type=int, default=200)
    p.add_argument("--moving", type=float, nargs="+", default=[0.5, 0.1])
    p.add_argument("--ticks", type=int, default=200)
    p.add_argument("--groups", type=int, default=16)
    p.add_argument("--ack-lag", type=int, default=2, help="ticks from a client's ack to the server")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quantize", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--callbacks", action="store_true", help="(a) also with entity and field callbacks")
    args = p.parse_args()
    warm = 10
    model: type[Any] = QRoomState if args.quantize else RoomState
    cases: list[tuple[str, Any]] = []
    for moving in args.moving:
        world = World(args.entities, moving, args.seed, args.quantize)
        ticks = record(world, model, args.ticks, args.groups, args.ack_lag)
        parts = sum(len(m) for m in ticks[warm:]) / len(ticks[warm:])
        size = sum(len(b) for m in ticks[warm:] for b in m) / max(1, sum(len(m) for m in ticks[warm:]))
        label = f"(a) parts, {moving:.0%} moving"
        print(f"{label}: {parts:.1f} messages per tick, {size:.0f} B each", flush=True)
        cases.append((label, lambda ticks=ticks: replay_parts(model, ticks, warm)))
        if args.callbacks:
            cases.append((label + " + callbacks", lambda ticks=ticks: replay_parts(model, ticks, warm, True)))
    world = World(args.entities, args.moving[0], args.seed, args.quantize)
    snaps = [codec.pack(world.step().model_dump()) for _ in range(args.ticks)]
    cases.append(("(c) snapshot", lambda: replay_snapshots(model, snaps)))
    res: dict[str, list[float]] = {label: [] for label, _ in cases}
    for _ in range(args.rounds):
        for label, fn in cases:
            gc.collect()  # each contender starts without the garbage of the one before
            cpu, n = fn()
            res[label].append(cpu / max(1, n) * 1e6)
    c = statistics.median(res["(c) snapshot"])
    for label, vals in res.items():
        m = statistics.median(vals)
        print(
            f"  {label:<24} {m:8.1f} us/state  (min {min(vals):.1f}, max {max(vals):.1f})  {m / c:.2f} of (c)"
        )


if __name__ == "__main__":
    main()
