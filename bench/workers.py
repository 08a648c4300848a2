"""Unary calls per second against one server process and against ``kcprpc serve --workers 2``
(docs/workers.md), alternated in one run: A B A B ...

    python bench/workers.py                        # ~40 s: 3 rounds of 2 x 4 s
    python bench/workers.py --rounds 5 --seconds 6 --clients 2 --conns 8 --inflight 8
    python bench/workers.py --work-us 1000 --clients 1   # handlers that compute: the server is the bottleneck

Each round starts the server (``kcprpc serve bench.workers:app``, secure mode with a passphrase;
``--workers 1`` is the single-process path), loads it from ``--clients`` client processes, each
with ``--conns`` connections and ``--inflight`` calls in flight per connection, for ``--seconds``,
then stops it with SIGTERM. Reported: calls/s per contender (median of the rounds, min and max),
the server's CPU per call (user + system time of its processes over the load: what a worker
costs besides its share of the calls), the ratios, and how many processes answered (the load must
reach both workers). The clients
run on the same machine: on 2 cores, with cheap handlers, they take the CPU the second worker
would use, so the ratio is a floor; ``--work-us`` gives each call's handler CPU work so that the
server, not the clients, is the bottleneck.
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

    async def ping(self, n: int, work_us: int = 0) -> int:
        """``n`` back, plus the process id in the high bits (so the client sees which worker), after
        ``work_us`` microseconds of CPU work (a handler that computes something)."""
        if work_us:
            end = time.perf_counter() + work_us / 1e6
            while time.perf_counter() < end:
                pass
        return (os.getpid() << 32) | (n & 0xFFFFFFFF)


def app() -> kcprpc.Server:
    """The server each contender serves (a factory: every worker builds its own)."""
    return kcprpc.Server([Bench()], key=KEY)


async def _load(port: int, conns: int, inflight: int, seconds: float, work_us: int) -> tuple[int, set[int]]:
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
            r = await stub.ping(i, work_us)
            pids.add(r >> 32)
            i += 1
            count += 1

    await asyncio.gather(*(loop(s) for s in stubs for _ in range(inflight)))
    await asyncio.gather(*(c.close() for c in clients))
    return count, pids


def _client(port: int, conns: int, inflight: int, seconds: float, work_us: int, out: Any) -> None:
    out.put(kcprpc_run(_load(port, conns, inflight, seconds, work_us)))


def kcprpc_run(coro: Any) -> Any:
    import kcp

    return kcp.run(coro)  # uvloop when installed


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (Linux /proc)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def run_once(workers: int, args: argparse.Namespace) -> tuple[float, int, float]:
    """(calls/s, distinct answering processes, server CPU µs per call) of one contender's round."""
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
        pids = [proc.pid]
        if workers > 1:
            while "workers:" not in (line := proc.stdout.readline()):
                if not line:
                    sys.exit("the server did not say its workers")
            pids = [int(p) for p in line.split("(pids ", 1)[1].split(")", 1)[0].split(", ")]
        cpu0 = _cpu_seconds(pids)
        ctx = mp.get_context("fork")
        out = ctx.Queue()
        procs = [ctx.Process(target=_client, args=(port, args.conns, args.inflight, args.seconds, args.work_us, out))
                 for _ in range(args.clients)]  # fmt: skip
        for p in procs:
            p.start()
        results = [out.get(timeout=args.seconds + 60) for _ in procs]
        for p in procs:
            p.join(10)
        cpu = _cpu_seconds(pids) - cpu0
        calls = sum(r[0] for r in results)
        answering = set().union(*(r[1] for r in results))
        # calls/s of the timed part only (after connecting); server CPU over the whole load
        return calls / args.seconds, len(answering), cpu / calls * 1e6
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
    ap.add_argument("--work-us", type=int, default=0, help="CPU microseconds each call's handler spends")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}; build: {kcprpc.__version__}; {args.clients} client processes x "
          f"{args.conns} connections x {args.inflight} in flight; handler work {args.work_us} us; "
          f"{args.rounds} rounds of {args.seconds:g} s")  # fmt: skip
    contenders = {"1 process": 1, "2 workers": 2}
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    costs: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(args.rounds):
        for label, workers in contenders.items():  # A B A B ...
            rate, answering, cost = run_once(workers, args)
            rates[label].append(rate)
            costs[label].append(cost)
            print(f"  round {r + 1}: {label:<9} {rate:9.0f} calls/s  server CPU {cost:6.1f} us/call  "
                  f"({answering} processes answered)")  # fmt: skip
    med = {k: statistics.median(v) for k, v in rates.items()}
    cpu = {k: statistics.median(v) for k, v in costs.items()}
    for label, vals in rates.items():
        print(f"{label:<9} median {med[label]:9.0f} calls/s  (min {min(vals):.0f}, max {max(vals):.0f}); "
              f"server CPU {cpu[label]:.1f} us/call")  # fmt: skip
    print(f"ratio 2 workers / 1 process: calls/s {med['2 workers'] / med['1 process']:.2f}x, "
          f"server CPU per call {cpu['2 workers'] / cpu['1 process']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
