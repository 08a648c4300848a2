"""Unary calls per second against one server process and against ``kcprpc serve --workers 2``
(docs/workers.md), alternated in one run: A B A B ...

    python bench/workers.py                        # ~40 s: 3 rounds of 2 x 4 s
    python bench/workers.py --rounds 5 --seconds 6 --clients 2 --conns 8 --inflight 8

Each round starts the server (``kcprpc serve bench.workers:app``, secure mode with a passphrase;
``--workers 1`` is the single-process path), loads it from ``--clients`` client processes, each
with ``--conns`` connections and ``--inflight`` calls in flight per connection, for ``--seconds``,
then stops it with SIGTERM. Reported: calls/s per contender (median of the rounds, min and max),
the ratio, and which worker processes answered (the load must reach both workers). The clients
run on the same machine: on 2 cores they take CPU from the workers, so the ratio is a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kcprpc

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench workers passphrase"


class Bench(kcprpc.Service, name="bench.Workers"):
    """The call under load: a small request, a small answer naming the process."""

    async def ping(self, n: int) -> int:
        """``n`` back, plus the process id in the high bits (so the client sees which worker)."""
        return (os.getpid() << 32) | (n & 0xFFFFFFFF)


def app() -> kcprpc.Server:
    """The server each contender serves (a factory: every worker builds its own)."""
    return kcprpc.Server([Bench()], key=KEY)


async def _load(port: int, conns: int, inflight: int, seconds: float) -> tuple[int, set[int]]:
    clients = [kcprpc.connect("127.0.0.1", port, key=KEY) for _ in range(conns)]
    await asyncio.gather(*(c.connect() for c in clients))
    stubs = [c.stub(Bench, timeout=10) for c in clients]
    pids: set[int] = set()
    count = 0
    end = time.perf_counter() + seconds

    async def loop(stub: Any) -> None:
        nonlocal count
        i = 0
        while time.perf_counter() < end:
            r = await stub.ping(i)
            pids.add(r >> 32)
            i += 1
            count += 1

    await asyncio.gather(*(loop(s) for s in stubs for _ in range(inflight)))
    await asyncio.gather(*(c.close() for c in clients))
    return count, pids


def _client(port: int, conns: int, inflight: int, seconds: float, out: Any) -> None:
    out.put(kcprpc_run(_load(port, conns, inflight, seconds)))


def kcprpc_run(coro: Any) -> Any:
    import kcp

    return kcp.run(coro)  # uvloop when installed


def run_once(workers: int, args: argparse.Namespace) -> tuple[float, int]:
    """(calls/s, distinct answering processes) of one contender's round."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kcprpc", "serve", "bench.workers:app", "--workers", str(workers), "--port", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        if not banner.startswith("kcprpc serving"):
            sys.exit(f"the server did not start: {banner!r}")
        port = int(banner.rsplit(":", 1)[1])
        ctx = mp.get_context("fork")
        out = ctx.Queue()
        procs = [ctx.Process(target=_client, args=(port, args.conns, args.inflight, args.seconds, out))
                 for _ in range(args.clients)]  # fmt: skip
        for p in procs:
            p.start()
        results = [out.get(timeout=args.seconds + 60) for _ in procs]
        for p in procs:
            p.join(10)
        calls = sum(r[0] for r in results)
        pids = set().union(*(r[1] for r in results))
        return calls / args.seconds, len(pids)  # the calls of the timed part only (after connecting)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--clients", type=int, default=2, help="client processes")
    ap.add_argument("--conns", type=int, default=8, help="connections per client process")
    ap.add_argument("--inflight", type=int, default=8, help="calls in flight per connection")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}; build: {kcprpc.__version__}; {args.clients} client processes x "
          f"{args.conns} connections x {args.inflight} in flight; {args.rounds} rounds of {args.seconds:g} s")  # fmt: skip
    contenders = {"1 process": 1, "2 workers": 2}
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    spread: dict[str, set[int]] = {k: set() for k in contenders}
    for r in range(args.rounds):
        for label, workers in contenders.items():  # A B A B ...
            rate, answering = run_once(workers, args)
            rates[label].append(rate)
            spread[label].add(answering)
            print(f"  round {r + 1}: {label:<9} {rate:9.0f} calls/s  ({answering} processes answered)")
    med = {k: statistics.median(v) for k, v in rates.items()}
    for label, vals in rates.items():
        print(f"{label:<9} median {med[label]:9.0f} calls/s  (min {min(vals):.0f}, max {max(vals):.0f})")
    print(f"ratio 2 workers / 1 process: {med['2 workers'] / med['1 process']:.2f}x")


if __name__ == "__main__":
    main()
