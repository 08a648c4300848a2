"""Unary calls from the Node client (clients/typescript) against the Python client, same server.

One Python kcprpc server process per wire mode (bench/rpc.py's ``bench.Echo`` service, 64-byte
payloads) serves, alternately (A B, B A, ...), two client processes that do the same work:

* ``node``: clients/typescript/bench/load.ts, compiled by the package's ``tsc``, on the public
  ``connect()`` / ``Client.unary`` API;
* ``python``: this script in ``--py-client`` mode, ``kcprpc.connect`` and a stub (uvloop unless
  ``--loop asyncio``).

Each client process makes 200 warm-up calls, then (b) 64 calls in flight for ``--seconds``
(calls/s), then (a) ``--calls`` sequential calls (p50/p99 latency), and reports its own process
CPU (user + system) per call in both phases, and the server's CPU per call in both phases (asked
from the server: ``bench.Echo/Cpu``, its process time, before and after each phase). Wire modes (``--wires``): ``secure`` (the default: keyless, the public
anonymous PSK), ``key`` (a passphrase, as in the README), ``compat`` (kcp-go's wire, no cipher).

    python bench/ts_client.py                 # 3 rounds, secure and key
    python bench/ts_client.py --quick         # 1 short round, secure
    python bench/ts_client.py --wires secure,key,compat --rounds 2
    python bench/ts_client.py --node-prof prof --wires secure --rounds 1   # node --cpu-prof
    python bench/ts_client.py --base OLD_CHECKOUT/clients/typescript   # + node-base: an older src/, A/B

The package is built (``npm ci`` when node_modules is missing, ``tsc``) when its compiled load
generator is older than a source file. Every client run is bounded (``--limit`` seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import BENCH_KEY, ROOT, medians, percentile, run_loop, stop_process

PACKAGE = ROOT / "clients" / "typescript"
LOAD_JS = PACKAGE / "dist" / "bench" / "load.js"
PAYLOAD = b"x" * 64
WIRES = {"secure": "secure, keyless", "key": "secure, passphrase", "compat": "compat, no cipher"}
CLIENTS = ("node", "python")
BASE = "node-base"


# ------------------------------------------------------------------------------ the Python client
async def py_client(
    port: int, wire: str, seconds: float, calls: int, inflight: int, warmup: int
) -> dict[str, float]:
    from _common import transport_for
    from rpc import Bench

    import kcprpc

    async with kcprpc.connect("127.0.0.1", port, transport=transport_for(wire)) as client:
        stub = client.stub(Bench)

        async def call() -> None:
            r = await stub.Echo(PAYLOAD)
            assert len(r) == 64

        for _ in range(warmup):
            await call()
        done = 0
        sv0 = await stub.Cpu()
        st0 = client.transport_stats()
        c0, t0 = time.process_time(), time.perf_counter()
        stop = t0 + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await call()
                done += 1

        if seconds > 0:  # (bench/ts_loss.py: --seconds 0, sequential calls only, as load.ts)
            await asyncio.gather(*[worker() for _ in range(inflight)])
        rate = done / (time.perf_counter() - t0)
        per = 1 / done if done else 0.0
        cpu_rate = (time.process_time() - c0) * per * 1e6
        st1 = client.transport_stats()
        sv1 = await stub.Cpu()
        lat = []
        sv2 = await stub.Cpu()
        st2 = client.transport_stats()
        c1 = time.process_time()
        for _ in range(calls):
            t = time.perf_counter()
            await call()
            lat.append((time.perf_counter() - t) * 1000)
        cpu_lat = (time.process_time() - c1) / calls * 1e6
        st3 = client.transport_stats()
        sv3 = await stub.Cpu()
        lat.sort()
        moved = sum(st3.get(k, 0) - st2.get(k, 0) for k in ("bytes_sent", "bytes_received"))
        return {
            "rate": rate,
            "p50_ms": percentile(lat, 0.5),
            "p99_ms": percentile(lat, 0.99),
            "max_ms": lat[-1],
            "bytes_lat": moved / calls,
            "cpu_us_rate": cpu_rate,
            "cpu_us_lat": cpu_lat,
            "server_us_rate": (sv1 - sv0) * per * 1e6,
            "server_us_lat": (sv3 - sv2) / calls * 1e6,
            "out_pkts": (st1.get("out_pkts", 0) - st0.get("out_pkts", 0)) * per,
            "in_pkts": (st1.get("in_pkts", 0) - st0.get("in_pkts", 0)) * per,
            "out_pkts_lat": (st3.get("out_pkts", 0) - st2.get("out_pkts", 0)) / calls,
            "in_pkts_lat": (st3.get("in_pkts", 0) - st2.get("in_pkts", 0)) / calls,
        }


# ------------------------------------------------------------------------------ build, run
def build(force: bool = False) -> None:
    """Compile the package (``npm ci`` first when its node_modules is missing) if load.js is stale."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: .ci/run installs Debian's nodejs and npm")
    sources = [*PACKAGE.glob("src/**/*.ts"), *PACKAGE.glob("bench/*.ts"), PACKAGE / "tsconfig.json"]
    if not force and LOAD_JS.exists() and LOAD_JS.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return
    if not (PACKAGE / "node_modules" / ".package-lock.json").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PACKAGE, check=True, timeout=300)
    subprocess.run(["npx", "tsc", "-p", "tsconfig.json"], cwd=PACKAGE, check=True, timeout=300)


def base_load_js(base: str) -> Path:
    """``--base DIR``: DIR is another version's clients/typescript, compiled (dist/bench/load.js)."""
    return Path(base).resolve() / "dist" / "bench" / "load.js"


def client_cmd(kind: str, port: int, wire: str, args: argparse.Namespace) -> list[str]:
    common = ["--port", str(port), "--wire", wire, "--seconds", str(args.seconds), "--calls", str(args.calls),
              "--inflight", str(args.inflight), "--warmup", str(args.warmup)]  # fmt: skip
    if kind in ("node", BASE):
        prof = []
        if args.node_prof:
            Path(args.node_prof).mkdir(parents=True, exist_ok=True)
            prof = ["--cpu-prof", "--cpu-prof-dir", str(Path(args.node_prof).resolve())]
        load = LOAD_JS if kind == "node" else base_load_js(args.base)
        return ["node", *prof, str(load), *common, "--key", BENCH_KEY, "--limit", str(args.limit)]
    return [sys.executable, __file__, "--py-client", *common, "--loop", args.loop]


def run_client(
    kind: str, server: subprocess.Popen[str], port: int, wire: str, args: argparse.Namespace
) -> dict[str, float]:
    done = subprocess.run(
        client_cmd(kind, port, wire, args), capture_output=True, text=True, timeout=args.limit + 10,
        cwd=ROOT, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(
            f"the {kind} client failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    res: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    for k in ("out_pkts", "in_pkts", "out_pkts_lat", "in_pkts_lat"):
        res.setdefault(k, 0.0)
    return res


def report(args: argparse.Namespace) -> None:
    wires = args.wires.split(",")
    clients = (*CLIENTS, BASE) if args.base else CLIENTS
    if args.base and not base_load_js(args.base).exists():
        sys.exit(f"--base: {base_load_js(args.base)} does not exist (compile that tree with tsc)")
    unknown = [w for w in wires if w not in WIRES]
    if unknown:
        sys.exit(f"unknown wire mode(s) {', '.join(unknown)}: choose from {', '.join(WIRES)}")
    build()
    node_version = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(
        f"# unary, 64 B payloads; node {node_version}, python client loop={args.loop}; cpus={os.cpu_count()}; "
        f"rate: {args.inflight} in flight for {args.seconds} s; latency: {args.calls} sequential calls"
    )
    from rpc import start_server

    for wire in wires:
        print(f"## wire {wire}: {WIRES[wire]}")
        results: dict[str, list[dict[str, float]]] = {c: [] for c in clients}
        server, port = start_server("kcprpc", args.loop, wire)
        try:
            for r in range(args.rounds):
                for c in clients if r % 2 == 0 else reversed(clients):
                    res = run_client(c, server, port, wire, args)
                    results[c].append(res)
                    print(
                        f"round {r + 1} {c:9} {res['rate']:8.0f} calls/s  client {res['cpu_us_rate']:6.1f} us/call"
                        f" ({args.inflight} in flight)   p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms"
                        f"  client {res['cpu_us_lat']:6.1f} us/call (1 in flight)   server {res['server_us_rate']:.1f}"
                        f" / {res['server_us_lat']:.1f} us/call"
                        f"   datagrams/call out {res['out_pkts']:.2f} in {res['in_pkts']:.2f}"
                        f" (1 in flight: {res['out_pkts_lat']:.2f} {res['in_pkts_lat']:.2f})",
                        flush=True,
                    )
        finally:
            stop_process(server)
        med = medians(results)
        for c, m in med.items():
            print(
                f"{wire} median {c:9} {m['rate']:8.0f} calls/s  client {m['cpu_us_rate']:.1f} us/call   "
                f"p50 {m['p50_ms']:.3f} ms  p99 {m['p99_ms']:.3f} ms  client {m['cpu_us_lat']:.1f} us/call"
                f"   server {m['server_us_rate']:.1f} / {m['server_us_lat']:.1f} us/call   datagrams/call out {m['out_pkts']:.2f} in {m['in_pkts']:.2f}"
                f" (1 in flight: {m['out_pkts_lat']:.2f} {m['in_pkts_lat']:.2f})"
            )
        n, p = med["node"], med["python"]
        print(
            f"{wire} node / python: rate x{n['rate'] / p['rate']:.2f}, p50 x{n['p50_ms'] / p['p50_ms']:.2f}"
            f" (lower is better), p99 x{n['p99_ms'] / p['p99_ms']:.2f}, client CPU per call"
            f" x{n['cpu_us_rate'] / p['cpu_us_rate']:.2f} (64 in flight) x{n['cpu_us_lat'] / p['cpu_us_lat']:.2f}"
            f" (1 in flight), server CPU per call x{n['server_us_rate'] / p['server_us_rate']:.2f} (64 in flight)"
            f" x{n['server_us_lat'] / p['server_us_lat']:.2f} (1 in flight)",
            flush=True,
        )
        if args.base:
            b = med[BASE]
            print(
                f"{wire} node / node-base: rate x{n['rate'] / b['rate']:.2f}, p50 x{n['p50_ms'] / b['p50_ms']:.2f},"
                f" client CPU per call x{n['cpu_us_rate'] / b['cpu_us_rate']:.2f} (64 in flight)"
                f" x{n['cpu_us_lat'] / b['cpu_us_lat']:.2f} (1 in flight)",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short round, wire secure")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="rate window per client and round")
    ap.add_argument("--calls", type=int, default=2000, help="sequential calls for the latency figures")
    ap.add_argument("--inflight", type=int, default=64, help="calls in flight for the rate")
    ap.add_argument("--warmup", type=int, default=200, help="calls before measuring")
    ap.add_argument("--wires", default="secure,key", help=f"comma-separated, from: {', '.join(WIRES)}")
    ap.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the Python processes' loop"
    )
    ap.add_argument("--limit", type=float, default=120.0, help="seconds a client run may take")
    ap.add_argument("--node-prof", metavar="DIR", help="run node with --cpu-prof, profiles into DIR")
    ap.add_argument(
        "--base",
        metavar="DIR",
        help="a third contender, node-base: DIR is another version's clients/typescript, compiled (A/B of src/ changes)",
    )
    ap.add_argument("--build", action="store_true", help="recompile the package even if it looks fresh")
    ap.add_argument("--py-client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--wire", choices=list(WIRES), default="secure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.py_client:
        res = run_loop(
            py_client(args.port, args.wire, args.seconds, args.calls, args.inflight, args.warmup), args.loop
        )
        print(json.dumps(res))
        return
    if args.quick:
        args.rounds, args.seconds, args.calls, args.warmup = 1, 0.5, 300, 50
        if args.wires == "secure,key":
            args.wires = "secure"
    if args.build:
        build(force=True)
    report(args)


if __name__ == "__main__":
    main()
