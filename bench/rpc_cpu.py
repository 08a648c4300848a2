"""CPU time per unary call, per layer: both ends in one process, so the figure is the whole cost
of a call (client + server), with none of the scheduling noise of a two-process benchmark.

    python bench/rpc_cpu.py                      # links memory, mux, kcp; 3 rounds
    python bench/rpc_cpu.py --links kcp --calls 20000

``memory``: the RPC layer alone (in-memory connection); ``mux``: plus the smux implementation
over an in-memory pipe; ``kcp``: plus KCP sessions over loopback UDP in the default (secure,
anonymous) wire mode. 64 calls in flight, 64-byte payloads, uvloop when installed. Reported:
microseconds of process CPU per call (median of the rounds) and the call rate. Runs against older
trees too (``bench/ab.py`` uses it that way): it adapts to ``kcprpc.testing.pair``'s signature.

    python bench/rpc_cpu.py --turns --inflight 1 --links memory,kcp   # loop turns and tasks per call

``--turns``: runs on asyncio's own loop (not uvloop, whose loop cannot be hooked) and also counts
the event-loop turns (iterations) and the tasks created per call; ``--profile N``: prints the N
costliest functions of one round under cProfile (own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import inspect
import pstats
import statistics
import time

from pydantic import BaseModel

import kcprpc
from kcprpc import testing


class Req(BaseModel):
    data: bytes


class Echo(kcprpc.Service, name="bench.Echo"):
    async def echo(self, req: Req) -> Req:
        return req


class Counts:
    """Loop turns and task creations (``--turns``), and the profile (``--profile``)."""

    turns = 0
    tasks = 0
    profile: cProfile.Profile | None = None


def hook(loop: asyncio.AbstractEventLoop) -> None:
    """Count the turns of an asyncio loop and the tasks created on it."""
    run_once = loop._run_once  # type: ignore[attr-defined]

    def counted() -> None:
        Counts.turns += 1
        run_once()

    loop._run_once = counted  # type: ignore[attr-defined]

    def factory(loop: asyncio.AbstractEventLoop, coro: object, **kw: object) -> asyncio.Task[object]:
        Counts.tasks += 1
        return asyncio.Task(coro, loop=loop, **kw)  # type: ignore[arg-type]

    loop.set_task_factory(factory)  # type: ignore[arg-type]


async def one(link: str, calls: int, inflight: int, timeout: float | None = None) -> tuple[float, float]:
    if Counts.profile is not None or TURNS:
        hook(asyncio.get_running_loop())
    new_api = "link" in inspect.signature(testing.pair).parameters
    kw = {"link": link} if new_api else {"transport": link}
    async with testing.pair([Echo()], **kw) as p:  # type: ignore[arg-type]
        stub = p.client.stub(Echo, timeout=timeout) if timeout is not None else p.client.stub(Echo)
        req = Req(data=b"x" * 64)
        for _ in range(300):  # warm up
            await stub.echo(req)
        per_worker = max(1, calls // inflight)

        async def worker() -> None:
            for _ in range(per_worker):
                await stub.echo(req)

        turns0, tasks0 = Counts.turns, Counts.tasks
        if Counts.profile is not None:
            Counts.profile.enable()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if Counts.profile is not None:
            Counts.profile.disable()
        n = per_worker * inflight
        if TURNS:
            turns, tasks = (Counts.turns - turns0) / n, (Counts.tasks - tasks0 - inflight) / n
            print(
                f"{link:6} inflight {inflight}  loop_turns_per_call {turns:.2f}  tasks_per_call {tasks:.2f}"
            )
        return cpu / n * 1e6, n / wall


TURNS = False


def run(coro: object) -> tuple[float, float]:
    # not _common.run_loop: _common puts this tree's root on sys.path, and bench/ab.py runs this
    # script against an older tree's kcprpc, which must be the one imported
    if TURNS or Counts.profile is not None:
        return asyncio.run(coro)  # type: ignore[arg-type]
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--links", default="memory,mux,kcp")
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--turns", action="store_true", help="count loop turns and tasks per call (asyncio loop)")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile one round, print N rows")
    ap.add_argument(
        "--timeout", type=float, default=None, help="every call with this deadline, in seconds (the server arms it)"
    )
    args = ap.parse_args()
    global TURNS
    TURNS = args.turns
    for link in args.links.split(","):
        if args.profile:
            Counts.profile = cProfile.Profile()
            run(one(link, args.calls, args.inflight, args.timeout))
            pstats.Stats(Counts.profile).sort_stats("tottime").print_stats(args.profile)
            Counts.profile = None
            continue
        res = [run(one(link, args.calls, args.inflight, args.timeout)) for _ in range(args.rounds)]
        us = statistics.median(r[0] for r in res)
        rate = statistics.median(r[1] for r in res)
        print(f"{link:6} cpu_us_per_call {us:.2f}  calls/s {rate:.0f}", flush=True)


if __name__ == "__main__":
    main()
