"""Game state sync over the real stack (issue 18): a tick room of 200 entities at 20 Hz, 32
clients (``kcprpc.connect``, in client processes) through ``python -m kcp.relay`` at 0 % and 5 %
loss, two contenders alternated in the same run:

* (c) reliable full snapshots: the room's state as one reliable ``RoomState`` event per tick to
  the room (``PushStateSender(server, Delivery.RELIABLE)``, today's game example); the client
  validates it into the model (the typed state (a)'s view gives);
* (a) latest-wins deltas: ``SyncSender(..., groups=16)`` (``kcprpc.state``): per client and
  group a snapshot or a delta against the group's acknowledged baseline, in datagram-sized PARTS
  messages, unreliable; the clients apply a tick's parts at once and ack the groups
  (``client_state``). ``--groups 1``: whole messages (on the stream when over a datagram);
  ``--groups auto``: StateSync's default, parts in as many groups as the state's size needs.

The world is bench/_state_world.py's (the one bench/state_delta.py simulates), plus the server's
``time.monotonic_ns()`` at the tick (``stamp_ns``; every process is on this machine, so the
clock is shared). Per contender: bytes the server process wrote to UDP per client per second,
and read (the clients' acks and KCP acks), snapshot age p50 and p99 (sampled every 5 ms on each
client in the measured window: now minus the stamp of the newest state it holds, as in
state_delta.py; with groups each group's age is a sample, and the oldest group's is reported
too), server CPU (process time) per client per tick, client CPU per message and
(a)'s parts per client per tick and mean part size (``StateSync.stats``). ``STATE_SYNC_PROFILE=prefix``
writes a cProfile of each client process's measured window to ``prefix.<contender>.<pid>``. Then the ratios (a)/(c)
against the goals: bytes <= 1/5, p99 age <= 1/2. Example::

    python bench/state_sync.py --rounds 2            # 32 clients, 10 s measured per contender
    python bench/state_sync.py --quick               # a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from _state_world import QRoomState, RoomState, World  # noqa: E402

import kcprpc  # noqa: E402
from kcp.stats import SNMP  # noqa: E402
from kcprpc.room_service import JoinRoom, RoomService  # noqa: E402
from kcprpc.service import Delivery  # noqa: E402
from kcprpc.state import StateService, SyncSender, client_state  # noqa: E402
from kcprpc.tick_room import PushStateSender, RoomRegistry, TickInput, TickRoom  # noqa: E402
from kcprpc.tick_room import RoomState as RoomStateEvent  # noqa: E402

ROOM = "bench"
CONTENDERS = {"a": "a latest-wins deltas", "c": "c reliable snapshots"}


class TimedState(RoomState):
    stamp_ns: int = 0  # the server's monotonic clock at the tick


class QTimedState(QRoomState):
    stamp_ns: int = 0


def ages(
    applied: list[tuple[int, tuple[int, ...]]], start: int, end: int
) -> tuple[Counter[float], Counter[float]]:
    """Snapshot ages (ms, to 0.1 ms) every 5 ms from ``start`` to ``end`` (ns); ``applied``:
    (receive, the stamp of each part of the state: one for a whole state, one per group with
    groups). Returns two histograms: the age of each part (per group: what an entity's age is)
    and the age of the oldest part of each sample."""
    applied = sorted(applied)
    each: Counter[float] = Counter()
    oldest: Counter[float] = Counter()
    i = 0
    newest: list[int] | None = None
    t = start
    while t < end:
        while i < len(applied) and applied[i][0] <= t:
            stamps = applied[i][1]
            if newest is None or len(newest) != len(stamps):
                newest = list(stamps)
            else:
                newest = [max(a, b) for a, b in zip(newest, stamps, strict=True)]
            i += 1
        if newest is not None:
            for st in newest:
                each[round((t - st) / 1e6, 1)] += 1
            oldest[round((t - min(newest)) / 1e6, 1)] += 1
        else:  # nothing yet: counted as very old
            each[round((t - start) / 1e6 + 1000.0, 1)] += 1
            oldest[round((t - start) / 1e6 + 1000.0, 1)] += 1
        t += 5_000_000
    return each, oldest


def _hpct(hist: Mapping[float, int], q: float) -> float:
    """The ``q`` quantile of a histogram {value: count}: the value at rank ``int(total * q)``."""
    total = sum(hist.values())
    if not total:
        return math.nan
    k = min(total - 1, int(total * q))
    seen = 0
    for v in sorted(hist):
        seen += hist[v]
        if seen > k:
            return v
    return math.nan


# -- server process -----------------------------------------------------------------------------


async def server_main(args: argparse.Namespace) -> None:
    model: Any = QTimedState if args.quantize else TimedState

    class Bench(TickRoom):
        tick_hz = args.hz
        max_clients = None

        def on_create(self) -> None:
            self.world = World(args.entities, args.moving, args.seed, args.quantize)
            self.world.state = model(**self.world.state.model_dump())
            self.state = self.world.state

        def update(self, dt: float, inputs: Mapping[str, Sequence[TickInput]]) -> None:
            self.world.step()
            self.state.stamp_ns = time.monotonic_ns()

    states = StateService()
    if args.contender == "a":
        rooms: RoomRegistry[Any] = RoomRegistry(
            Bench, sender=lambda server: SyncSender(model, states, groups=args.groups)
        )
    else:
        rooms = RoomRegistry(Bench, sender=lambda server: PushStateSender(server, Delivery.RELIABLE))
    server = kcprpc.Server([RoomService(rooms), states], "127.0.0.1", 0, lifespan=rooms.lifespan)
    _host, port = await server.start()
    print(f"port {port}", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)  # "start_ns end_ns" from the driver
    start, end = (int(x) for x in line.split())
    await asyncio.sleep(max(0.0, (start - time.monotonic_ns()) / 1e9))
    room = rooms.rooms[ROOM]
    b0, r0, c0, t0 = SNMP.bytes_sent, SNMP.bytes_received, time.process_time(), room.stats["ticks"]
    await asyncio.sleep(max(0.0, (end - time.monotonic_ns()) / 1e9))
    b1, r1, c1, t1 = SNMP.bytes_sent, SNMP.bytes_received, time.process_time(), room.stats["ticks"]
    sync = getattr(room.sender, "sync", None)  # (a): the room's StateSync
    sync_stats = dict(sync.stats) if sync is not None else {}
    secs = (end - start) / 1e9
    n = args.clients
    print(
        json.dumps(
            {
                "sent": (b1 - b0) / n / secs,
                "received": (r1 - r0) / n / secs,
                "cpu_us": (c1 - c0) / max(1, n * (t1 - t0)) * 1e6,
                "ticks": t1 - t0,
                "resets": sync_stats.get("resets", 0),
                # a message: a PARTS message (one datagram) with groups, else a snapshot or delta
                "msg_bytes": sync_stats.get("bytes", 0)
                / max(
                    1,
                    sync_stats.get("parts", 0)
                    or sync_stats.get("snapshots", 0) + sync_stats.get("deltas", 0),
                ),
                "parts_per_msg": sync_stats.get("parts", 0) / max(1, (sync.seq if sync else 0) * n),
            }
        ),
        flush=True,
    )
    await loop.run_in_executor(None, sys.stdin.readline)  # the driver says when to go
    await server.shutdown(grace=0.5)


# -- client process -----------------------------------------------------------------------------


async def clients_main(args: argparse.Namespace) -> None:
    model: Any = QTimedState if args.quantize else TimedState
    applied: list[list[tuple[int, tuple[int, ...]]]] = []
    clients = []
    views: list[Any] = []

    async def one() -> None:
        got: list[tuple[int, tuple[int, ...]]] = []
        applied.append(got)
        client = await kcprpc.connect("127.0.0.1", args.port)
        clients.append(client)
        if args.contender == "a":
            view = client_state(client, model, f"state:{ROOM}")
            stamps: dict[int, int] = {}  # seq -> its tick's stamp (from group 0, which holds it)

            def stamp_of(seq: int) -> int:
                for back in range(64):  # a seq whose group 0 was lost: an older known stamp
                    stamp = stamps.get(seq - back)
                    if stamp is not None:
                        return stamp
                return 0

            def on_state(s: Any) -> None:
                # with groups each group has its own seq (view.seqs: the seq it is current at;
                # a lost part leaves its groups older than the rest): each group's age
                seqs = view.seqs
                stamps[view.seq if len(seqs) == 1 else seqs[0]] = s.stamp_ns
                got.append((time.monotonic_ns(), tuple(stamp_of(q) for q in seqs)))
                if len(stamps) > 256:
                    for k in sorted(stamps)[:128]:
                        del stamps[k]

            view.on_state(on_state)
            views.append(view)
        else:

            def on_snapshot(m: RoomStateEvent) -> None:
                state = model.model_validate(m.state)  # the app's typed state, as (a)'s view gives it
                got.append((time.monotonic_ns(), (state.stamp_ns,)))

            client.on(RoomStateEvent, on_snapshot)
        await client.stub(RoomService, timeout=20).join(JoinRoom(room=ROOM))

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(args.n))), 60)
    print("joined", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    start, end = (int(x) for x in line.split())
    await asyncio.sleep(max(0.0, (start - time.monotonic_ns()) / 1e9))
    c0 = time.process_time()
    prof_to = os.environ.get("STATE_SYNC_PROFILE")  # a file prefix: cProfile the measured window
    if prof_to:
        import cProfile

        prof = cProfile.Profile(time.process_time)  # CPU time: descheduled time (the load) is not counted
        prof.enable()
    await asyncio.sleep(max(0.0, (end - time.monotonic_ns()) / 1e9))
    cpu = time.process_time() - c0
    if prof_to:
        prof.disable()
        prof.dump_stats(f"{prof_to}.{args.contender}.{os.getpid()}")
    await asyncio.sleep(0.3)  # the states in flight at the end
    each: Counter[float] = Counter()
    oldest: Counter[float] = Counter()
    for got in applied:
        e, o = ages(got, start, end)
        each.update(e)
        oldest.update(o)
    received = sum(1 for got in applied for r, _ in got if start <= r < end)
    print(
        json.dumps(
            {"ages": list(each.items()), "oldest": list(oldest.items()), "messages": received, "cpu": cpu}
        ),
        flush=True,
    )
    if os.environ.get("STATE_SYNC_DEBUG"):
        for v in views:
            print(v.stats, v.seqs, file=sys.stderr)
    for c in clients:
        await c.close()


# -- driver -------------------------------------------------------------------------------------


def _spawn(argv: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )


def _line(p: subprocess.Popen[str], what: str) -> str:
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line:
        raise SystemExit(f"{what} exited (code {p.wait(10)})")
    return line.strip()


def run_one(args: argparse.Namespace, contender: str, loss: float, seed: int) -> dict[str, float]:
    common = [
        "--entities",
        str(args.entities),
        "--moving",
        str(args.moving),
        "--hz",
        str(args.hz),
        "--seed",
        str(args.seed),
        "--clients",
        str(args.clients),
        "--contender",
        contender,
        "--groups",
        str(args.groups),
    ]
    if args.quantize:
        common.append("--quantize")
    me = str(Path(__file__).resolve())
    procs: list[subprocess.Popen[str]] = []
    try:
        server = _spawn([me, "--role", "server", *common])
        procs.append(server)
        port = int(_line(server, "server").split()[1])
        relay = _spawn(
            [
                "-m",
                "kcp.relay",
                "--listen",
                "127.0.0.1:0",
                "--target",
                f"127.0.0.1:{port}",
                "--loss",
                str(loss),
                "--delay",
                str(args.delay),
                "--seed",
                str(seed),
            ]
        )
        procs.append(relay)
        rport = int(_line(relay, "relay").split()[1].rsplit(":", 1)[1])
        per = [args.clients // args.procs + (i < args.clients % args.procs) for i in range(args.procs)]
        cps = [
            _spawn([me, "--role", "clients", "--port", str(rport), "--n", str(k), *common]) for k in per if k
        ]
        procs += cps
        for cp in cps:
            assert _line(cp, "clients") == "joined"
        start = time.monotonic_ns() + int(args.warmup * 1e9)
        end = start + int(args.seconds * 1e9)
        for p in (server, *cps):
            assert p.stdin is not None
            p.stdin.write(f"{start} {end}\n")
            p.stdin.flush()
        srv = json.loads(_line(server, "server"))
        got = [json.loads(_line(cp, "clients")) for cp in cps]
        each: Counter[float] = Counter()
        oldest: Counter[float] = Counter()
        for g in got:
            each.update(dict(map(tuple, g["ages"])))
            oldest.update(dict(map(tuple, g["oldest"])))
        return {
            "B/client/s": srv["sent"],
            "up B/client/s": srv["received"],
            "age p50 ms": _hpct(each, 0.5),
            "age p99 ms": _hpct(each, 0.99),
            "oldest part age p99 ms": _hpct(oldest, 0.99),
            "cpu us/client/tick": srv["cpu_us"],
            "client cpu us/msg": sum(g["cpu"] for g in got) / max(1, sum(g["messages"] for g in got)) * 1e6,
            "msgs/client/s": sum(g["messages"] for g in got) / args.clients / args.seconds,
            "ticks": srv["ticks"],
            "(a) avg msg B": srv["msg_bytes"],
            "(a) resets": srv["resets"],
            "(a) parts/client/tick": srv["parts_per_msg"],
        }
    finally:
        for p in procs:
            if p.stdin is not None:
                try:
                    p.stdin.write("\n")
                    p.stdin.close()
                except (BrokenPipeError, OSError):
                    pass
        for p in procs[::-1]:
            if p is not procs[0]:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--entities", type=int, default=200)
    ap.add_argument("--moving", type=float, default=0.5, help="share of entities moving each tick")
    ap.add_argument("--hz", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured, per contender and loss")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--loss", type=float, nargs="+", default=[0.0, 5.0], help="relay loss %% per direction")
    ap.add_argument("--delay", type=float, default=20.0, help="relay one-way delay, ms")
    ap.add_argument("--rounds", type=int, default=1, help="rounds, contenders alternated")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quantize", action="store_true", help="x, y to 0.01, angle to 0.1 (Quantized)")
    ap.add_argument(
        "--groups",
        type=lambda v: v if v == "auto" else int(v),
        default=16,
        help='(a): StateSync groups (1: whole messages, no parts; "auto": by the state\'s size)',
    )
    ap.add_argument("--quick", action="store_true", help="8 clients, 2 s measured, 1 s warm-up")
    ap.add_argument(
        "--role", choices=["driver", "server", "clients"], default="driver", help=argparse.SUPPRESS
    )
    ap.add_argument("--contender", choices=["a", "c"], default="a", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "server":
        asyncio.run(server_main(args))
        return
    if args.role == "clients":
        asyncio.run(clients_main(args))
        return
    if args.quick:
        args.clients, args.seconds, args.warmup = min(args.clients, 8), min(args.seconds, 2.0), 1.0
    print(
        f"{args.entities} entities ({args.moving:.0%} moving), {args.hz} Hz, {args.clients} clients in "
        f"{args.procs} processes, through kcp.relay (one-way {args.delay:g} ms), {args.seconds:g} s "
        f"measured, {args.rounds} round(s), seed {args.seed}" + (", quantized" if args.quantize else "")
    )
    results: dict[float, dict[str, list[dict[str, float]]]] = {}
    for rnd in range(args.rounds):
        order = ["c", "a"] if rnd % 2 == 0 else ["a", "c"]
        for loss in args.loss:
            for contender in order:
                r = run_one(args, contender, loss, args.seed + rnd)
                results.setdefault(loss, {}).setdefault(contender, []).append(r)
                figs = "  ".join(f"{k} {v:,.1f}" for k, v in r.items())
                print(f"round {rnd + 1} loss {loss:g}%  {CONTENDERS[contender]:<22} {figs}", flush=True)
    print("\nmedian over rounds")
    ok = True
    for loss, by in results.items():
        print(f"loss {loss:g}%")
        med: dict[str, dict[str, float]] = {}
        for contender in ("c", "a"):
            rows = by[contender]
            med[contender] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            figs = "  ".join(f"{k} {v:,.1f}" for k, v in med[contender].items() if k != "ticks")
            print(f"  {CONTENDERS[contender]:<22} {figs}")
        a, c = med["a"], med["c"]
        rb = a["B/client/s"] / c["B/client/s"]
        ra = a["age p99 ms"] / c["age p99 ms"]
        rc = a["cpu us/client/tick"] / c["cpu us/client/tick"]
        print(
            f"  ratios a/c: bytes {rb:.3f} (goal <= 0.2: {'met' if rb <= 0.2 else 'NOT met'})  "
            f"age p99 {ra:.2f} (goal <= 0.5: {'met' if ra <= 0.5 else 'NOT met'})  cpu {rc:.2f}"
        )
        ok = ok and a["msgs/client/s"] > 0 and c["msgs/client/s"] > 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
