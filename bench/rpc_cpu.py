"""CPU time per unary call, per layer: both ends in one process, so the figure is the whole cost
of a call (client + server), with none of the scheduling noise of a two-process benchmark.

    python bench/rpc_cpu.py                      # links memory, mux, kcp; 3 rounds
    python bench/rpc_cpu.py --links kcp --calls 20000

``memory``: the RPC layer alone (in-memory connection); ``mux``: plus the smux implementation
over an in-memory pipe; ``kcp``: plus KCP sessions over loopback UDP in the default (secure,
anonymous) wire mode. 64 calls in flight, 64-byte payloads, uvloop when installed. Reported:
microseconds of process CPU per call (median of the rounds) and the call rate. Runs against older
trees too (``bench/ab.py`` uses it that way): it adapts to ``kcprpc.testing.pair``'s signature.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
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


async def one(link: str, calls: int, inflight: int) -> tuple[float, float]:
    new_api = "link" in inspect.signature(testing.pair).parameters
    kw = {"link": link} if new_api else {"transport": link}
    async with testing.pair([Echo()], **kw) as p:  # type: ignore[arg-type]
        stub = p.client.stub(Echo)
        req = Req(data=b"x" * 64)
        for _ in range(300):  # warm up
            await stub.echo(req)
        per_worker = max(1, calls // inflight)

        async def worker() -> None:
            for _ in range(per_worker):
                await stub.echo(req)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        n = per_worker * inflight
        return cpu / n * 1e6, n / wall


def run(coro: object) -> tuple[float, float]:
    # not _common.run_loop: _common puts this tree's root on sys.path, and bench/ab.py runs this
    # script against an older tree's kcprpc, which must be the one imported
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
    args = ap.parse_args()
    for link in args.links.split(","):
        res = [run(one(link, args.calls, args.inflight)) for _ in range(args.rounds)]
        us = statistics.median(r[0] for r in res)
        rate = statistics.median(r[1] for r in res)
        print(f"{link:6} cpu_us_per_call {us:.2f}  calls/s {rate:.0f}", flush=True)


if __name__ == "__main__":
    main()
