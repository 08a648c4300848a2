"""Delta state sync, the design choice: latest-wins deltas against acknowledged baselines (a) vs
reliable ordered patches (b) vs reliable full snapshots (c, today's game example), on a seeded
simulated link: bytes per client per second and snapshot age (p50, p99) at 0 % and 5 % loss.

The link, per direction: a one-way delay, independent loss per packet, messages cut into
packets of ``--mtu`` bytes (each plus ``--overhead`` bytes of IP, UDP and KCP headers).

* (a) ``kcprpc.state``'s StateSync and StateView: each tick a snapshot or a delta against the
  client's acknowledged baseline, unreliable (a message is lost when one of its packets is); the
  client acks each applied seq (unreliable, one small packet, counted apart as upstream).
* (b) the same delta encoding against the previous tick, reliable and ordered: a lost packet is
  sent again ``--rto-ms`` later until it arrives; a message reaches the client after every
  earlier one (head-of-line blocking). Retransmissions count in its bytes.
* (c) a full snapshot every tick, reliable and ordered like (b).

Snapshot age: sampled every 5 ms on each client (after the first second), now minus the tick
time of the newest state it has. The world and every loss pattern are seeded. Example::

    python bench/state_delta.py --clients 8 --seconds 30 --loss 0 0.05
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from _state_world import QRoomState, RoomState, World  # noqa: E402

from kcprpc.state import DELTA, SNAPSHOT, StateSync, StateView, diff  # noqa: E402
from kcprpc.state.delta import SAME  # noqa: E402


def _pct(vals: list[float], q: float) -> float:
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(len(vals) * q))] if vals else math.nan


def ages(applied: list[tuple[float, float]], start: float, end: float) -> list[float]:
    """Snapshot ages every 5 ms from ``start`` to ``end``; ``applied``: (time, tick time)."""
    applied = sorted(applied)
    out: list[float] = []
    i, newest = 0, -math.inf
    t = start
    while t < end:
        while i < len(applied) and applied[i][0] <= t:
            newest = max(newest, applied[i][1])
            i += 1
        out.append(t - newest)
        t += 5.0
    return out


class Link:
    """One direction of one client's link (seeded)."""

    def __init__(self, loss: float, seed: int, mtu: int, overhead: int) -> None:
        self.rng = random.Random(seed)
        self.loss, self.mtu, self.overhead = loss, mtu, overhead
        self.bytes = 0

    def packets(self, size: int) -> int:
        return max(1, math.ceil(size / self.mtu))

    def unreliable(self, size: int) -> bool:
        """Send a message once; True when every packet of it arrived."""
        n = self.packets(size)
        self.bytes += size + n * self.overhead
        return all(self.rng.random() >= self.loss for _ in range(n))

    def reliable(self, size: int, rto: float) -> float:
        """Send a message until every packet arrived; returns the extra delay of the slowest packet."""
        n = self.packets(size)
        per = size / n
        worst = 0.0
        for _ in range(n):
            tries = 1
            while self.rng.random() < self.loss:
                tries += 1
            self.bytes += int(tries * (per + self.overhead))
            worst = max(worst, (tries - 1) * rto)
        return worst


def run(args: argparse.Namespace, loss: float) -> dict[str, dict[str, float]]:
    world = World(args.entities, args.moving, args.seed, args.quantize)
    model: Any = QRoomState if args.quantize else RoomState
    period = 1000.0 / args.hz
    ticks = int(args.seconds * args.hz)
    states: list[Any] = [world.step().model_copy(deep=True) for _ in range(ticks)]
    d = args.delay_ms
    end = ticks * period
    res: dict[str, dict[str, float]] = {}

    # (a) latest-wins deltas against acknowledged baselines
    sync = StateSync(model, "bench", max_baselines=args.baselines, groups=1)  # whole messages
    views = [StateView(model, "bench", max_baselines=args.baselines) for _ in range(args.clients)]
    down = [Link(loss, args.seed * 1000 + c, args.mtu, args.overhead) for c in range(args.clients)]
    up = [Link(loss, args.seed * 2000 + c, args.mtu, args.overhead) for c in range(args.clients)]
    for c in range(args.clients):
        sync.add_client(c)
    events: list[tuple[float, int, int, str, Any]] = []
    applied: list[list[tuple[float, float]]] = [[] for _ in range(args.clients)]
    order = 0
    # a second of idle ticks at the end (the world stopped) lets every client catch up
    tail = [states[-1]] * int(args.hz)
    for k, state in enumerate([*states, *tail, None]):
        now = k * period if state is not None else math.inf  # the last round drains the link
        while events and events[0][0] <= now:
            t, _, c, what, data = heapq.heappop(events)
            if what == "msg":
                seq = views[c].receive(data)
                if seq is not None:
                    applied[c].append((t, (seq - 1) * period))
                    if up[c].unreliable(24):
                        order += 1
                        heapq.heappush(events, (t + d, order, c, "ack", seq))
            else:
                sync.ack(c, data)
        if state is None:
            break
        for c, msg in sync.tick(state):
            assert isinstance(c, int)
            if down[c].unreliable(len(sync.frame(msg))):
                order += 1
                heapq.heappush(events, (now + d, order, c, "msg", msg))
    converged = sum(v.tree == sync.schema.tree(states[-1]) for v in views)
    a_ages = [x for c in range(args.clients) for x in ages(applied[c], 1000.0, end)]
    secs = args.seconds
    res["a latest-wins deltas"] = {
        "B/client/s": sum(x.bytes for x in down) / args.clients / secs,
        "up B/client/s": sum(x.bytes for x in up) / args.clients / secs,
        "age p50 ms": _pct(a_ages, 0.5),
        "age p99 ms": _pct(a_ages, 0.99),
        "snapshots": sync.stats["snapshots"],
        "converged": converged,  # clients holding the last tick's state after the idle second
    }

    # (b) reliable ordered patches, (c) reliable full snapshots: the same message for every client
    schema = sync.schema
    frame = sync.frame
    trees = [schema.tree(s) for s in states]
    patch_sizes, snap_sizes = [], []
    for k, tree in enumerate(trees):
        snap = [SNAPSHOT, k + 1, schema.id, tree]
        snap_sizes.append(len(frame(snap)))
        if k == 0:
            patch_sizes.append(snap_sizes[0])
        else:
            ch = diff(schema.root, trees[k - 1], tree)
            patch_sizes.append(len(frame([DELTA, k + 1, k, {} if ch is SAME else ch])))
    for label, sizes in (("b reliable patches", patch_sizes), ("c reliable snapshots", snap_sizes)):
        links = [Link(loss, args.seed * 1000 + c, args.mtu, args.overhead) for c in range(args.clients)]
        all_ages: list[float] = []
        for c in range(args.clients):
            got: list[tuple[float, float]] = []
            last = 0.0
            for k, size in enumerate(sizes):
                arrive = k * period + d + links[c].reliable(size, args.rto_ms)
                last = max(last, arrive)  # in order: after every earlier message
                got.append((last, k * period))
            all_ages += ages(got, 1000.0, end)
        res[label] = {
            "B/client/s": sum(x.bytes for x in links) / args.clients / secs,
            "age p50 ms": _pct(all_ages, 0.5),
            "age p99 ms": _pct(all_ages, 0.99),
        }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--entities", type=int, default=200)
    ap.add_argument("--moving", type=float, default=0.5, help="share of entities moving each tick")
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--loss", type=float, nargs="+", default=[0.0, 0.05])
    ap.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay")
    ap.add_argument("--rto-ms", type=float, default=60.0, help="(b), (c): resend after this long")
    ap.add_argument("--mtu", type=int, default=1200, help="bytes of a message per packet")
    ap.add_argument("--overhead", type=int, default=52, help="bytes of headers per packet")
    ap.add_argument("--baselines", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--quantize", action="store_true", help="x, y to 0.01 and angle to 0.1 (kcprpc.state.Quantized)"
    )
    args = ap.parse_args()
    print(
        f"{args.entities} entities ({args.moving:.0%} moving), {args.hz:g} Hz, {args.clients} clients, "
        f"{args.seconds:g} s, one-way {args.delay_ms:g} ms, RTO {args.rto_ms:g} ms, seed {args.seed}"
        + (", quantized" if args.quantize else "")
    )
    for loss in args.loss:
        res = run(args, loss)
        print(f"\nloss {loss:.0%}")
        base = res["c reliable snapshots"]
        for label, r in res.items():
            figs = "  ".join(f"{k} {v:,.0f}" for k, v in r.items())
            print(f"  {label:<22} {figs}")
        a = res["a latest-wins deltas"]
        b = res["b reliable patches"]
        print(
            f"  ratios vs (c): bytes a {a['B/client/s'] / base['B/client/s']:.3f}  b {b['B/client/s'] / base['B/client/s']:.3f}"
            f"   age p99 a {a['age p99 ms'] / base['age p99 ms']:.2f}  b {b['age p99 ms'] / base['age p99 ms']:.2f}"
        )


if __name__ == "__main__":
    main()
