"""Unary call rate and latency: kcprpc over loopback KCP vs grpcio's asyncio API over TCP loopback.

Each contender runs its server in a child process and its client here, 64-byte payloads, raw-bytes
handlers on the gRPC side (no protobuf cost). Rounds alternate the contenders (A B A B ...):

* rate: calls/s with 64 calls in flight on one connection/channel for ``--seconds``;
* latency: p50/p99 of ``--calls`` sequential calls (1 in flight).

Contenders (each line of the report names the contender's wire mode):

* ``kcprpc``: the default wire mode, secure and keyless (encrypted with ChaCha20-Poly1305 after a
  Noise NN handshake, anonymous); unary calls on the shared control stream with call ids;
* ``kcprpc-key``: secure mode with a passphrase, as in the README (Noise NNpsk0; the same AEAD);
* ``kcprpc-compat``: compat mode (kcp-go's wire) without a cipher: no encryption at all;
* ``kcprpc-stream``: the default wire mode with a mux stream per call, to compare the framings;
* ``grpcio``: grpcio's asyncio API over TCP loopback, no TLS.

    python bench/rpc.py            # 3 rounds
    python bench/rpc.py --quick    # 1 short round
    python bench/rpc.py --fanout 1000            # push fan-out: runs bench/fanout.py
    python bench/rpc.py --link --calls 1000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import rpc_grpc
from _common import ROOT, medians, percentile, run_loop, stop_process, transport_for

import kcprpc
from kcprpc import ClientConfig

PAYLOAD = b"x" * 64
WIRES: dict[str, str] = {
    "kcprpc": "secure, keyless",
    "kcprpc-key": "secure, passphrase",
    "kcprpc-compat": "compat, no cipher",
    "kcprpc-stream": "secure, keyless; a stream per call",
    "grpcio": "TCP, no TLS",
}


def wire_of(contender: str) -> str:
    return {"kcprpc-key": "key", "kcprpc-compat": "compat"}.get(contender, "secure")


class Bench(kcprpc.Service, name="bench.Echo"):
    """The benchmark service."""

    async def Echo(self, data: bytes) -> bytes:
        return data

    async def Stream(self, n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield PAYLOAD

    async def Cpu(self) -> float:
        """The server process's CPU seconds so far (bench/ts_client.py: server CPU per call)."""
        return time.process_time()


# ---------------------------------------------------------------------------------------- servers
async def serve_kcprpc(host: str = "127.0.0.1", port: int = 0, wire: str = "secure") -> None:
    server = kcprpc.Server([Bench()], host, port, transport=transport_for(wire))
    _host, port = await server.start()
    print(json.dumps({"port": port}), flush=True)
    await server.serve()


# ---------------------------------------------------------------------------------------- clients
Call = Callable[[], Awaitable[Any]]


async def measure(call: Call, seconds: float, calls: int, inflight: int = 64) -> dict[str, float]:
    for _ in range(200):  # warm up
        await call()
    stop = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call()
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(inflight)])
    rate = done / (time.perf_counter() - t0)
    lat = []
    for _ in range(calls):
        t = time.perf_counter()
        await call()
        lat.append(time.perf_counter() - t)
    lat.sort()
    return {"rate": rate, "p50_ms": percentile(lat, 0.5) * 1000, "p99_ms": percentile(lat, 0.99) * 1000}


async def client_kcprpc(
    port: int, framing: str, seconds: float, calls: int, wire: str = "secure"
) -> dict[str, float]:
    cfg = ClientConfig(unary_framing=framing)  # type: ignore[arg-type]
    async with kcprpc.connect("127.0.0.1", port, config=cfg, transport=transport_for(wire)) as client:
        stub = client.stub(Bench)

        async def call() -> Any:
            r = await stub.Echo(PAYLOAD)
            assert len(r) == 64

        return await measure(call, seconds, calls)


async def client_grpc(port: int, seconds: float, calls: int, host: str = "127.0.0.1") -> dict[str, float]:
    async def body(echo: Any) -> dict[str, float]:
        async def call() -> Any:
            r = await echo(PAYLOAD)
            assert len(r) == 64

        return await measure(call, seconds, calls)

    return await rpc_grpc.with_echo(host, port, body)  # type: ignore[no-any-return]


def start_server(kind: str, loop_kind: str, wire: str = "secure") -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--loop", loop_kind, "--wire", wire],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, int(json.loads(line)["port"])


def one(contender: str, args: argparse.Namespace) -> dict[str, float]:
    kind = "grpc" if contender == "grpcio" else "kcprpc"
    loop_kind = args.grpc_loop if kind == "grpc" else args.loop
    wire = wire_of(contender)
    proc, port = start_server(kind, loop_kind, wire)
    try:
        if kind == "grpc":
            return run_loop(client_grpc(port, args.seconds, args.calls), loop_kind)  # type: ignore[no-any-return]
        framing = "stream" if contender == "kcprpc-stream" else "shared"
        client = client_kcprpc(port, framing, args.seconds, args.calls, wire)
        return run_loop(client, loop_kind)  # type: ignore[no-any-return]
    finally:
        stop_process(proc)


def report_unary(args: argparse.Namespace) -> None:
    contenders = args.contenders.split(",")
    unknown = [c for c in contenders if c not in WIRES]
    if unknown:
        sys.exit(f"unknown contender(s) {', '.join(unknown)}: choose from {', '.join(WIRES)}")
    results: dict[str, list[dict[str, float]]] = {c: [] for c in contenders}
    print(
        f"# unary, 64 B payloads; kcprpc loop={args.loop}, grpcio loop={args.grpc_loop}; cpus={os.cpu_count()}"
    )
    for c in contenders:
        print(f"# {c}: {WIRES[c]}")
    for r in range(args.rounds):
        order = contenders if r % 2 == 0 else list(reversed(contenders))
        for c in order:
            res = one(c, args)
            results[c].append(res)
            print(
                f"round {r + 1} {c:14} {res['rate']:9.0f} calls/s (64 in flight)   "
                f"p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms (1 in flight)",
                flush=True,
            )
    print("# medians")
    med = medians(results)
    for c, m in med.items():
        print(f"{c:14} {m['rate']:9.0f} calls/s   p50 {m['p50_ms']:.3f} ms   p99 {m['p99_ms']:.3f} ms")
    if "grpcio" in med:
        g = med["grpcio"]
        for c, m in med.items():
            if c != "grpcio":
                print(
                    f"{c} / grpcio: rate x{m['rate'] / g['rate']:.2f}, p50 x{m['p50_ms'] / g['p50_ms']:.2f}"
                    f" (lower is better), p99 x{m['p99_ms'] / g['p99_ms']:.2f}"
                )


# ------------------------------------------------------------------------------ server streaming
async def kcprpc_stream_rate(port: int, n: int) -> float:
    async with kcprpc.connect("127.0.0.1", port) as client:
        stub = client.stub(Bench)
        async for _ in stub.Stream(100):  # warm up
            pass
        t0 = time.perf_counter()
        got = 0
        async for _ in stub.Stream(n):
            got += 1
        assert got == n
        return n / (time.perf_counter() - t0)


def report_streaming(args: argparse.Namespace) -> None:
    n = args.messages
    print(
        f"# server streaming, one call, {n} messages of 64 B; kcprpc loop={args.loop}, grpcio loop={args.grpc_loop}"
    )
    results: dict[str, list[float]] = {"kcprpc": [], "grpcio": []}
    for r in range(args.rounds):
        for c in ["kcprpc", "grpcio"] if r % 2 == 0 else ["grpcio", "kcprpc"]:
            kind = "grpc" if c == "grpcio" else "kcprpc"
            loop_kind = args.grpc_loop if kind == "grpc" else args.loop
            proc, port = start_server(kind, loop_kind)
            try:
                coro = (
                    rpc_grpc.count_stream("127.0.0.1", port, n)
                    if kind == "grpc"
                    else kcprpc_stream_rate(port, n)
                )
                rate = run_loop(coro, loop_kind)
            finally:
                stop_process(proc)
            results[c].append(rate)
            print(f"round {r + 1} {c:8} {rate:9.0f} msgs/s", flush=True)
    k, g = statistics.median(results["kcprpc"]), statistics.median(results["grpcio"])
    print(f"medians: kcprpc {k:.0f} msgs/s, grpcio {g:.0f} msgs/s, ratio x{k / g:.2f}")


# ------------------------------------------------------------------------------ push fan-out
def report_fanout(args: argparse.Namespace) -> int:
    """``--fanout N``: bench/fanout.py with N subscribers (its processes, rate steps and figures)."""
    import fanout

    argv = ["--subscribers", str(args.fanout), "--seconds", str(args.seconds), "--loop", args.loop]
    if args.rates:
        argv += ["--rates", args.rates]
    if args.quick:
        argv.append("--quick")
    return fanout.main(argv)


# ------------------------------------------------------------------------------ calls under loss (linkemu)
async def sequential_latency(kind: str, host: str, port: int, n: int) -> dict[str, float]:
    lat: list[float] = []

    async def run(call: Callable[[], Awaitable[Any]]) -> None:
        for _ in range(20):
            await call()
        for _ in range(n):
            t = time.perf_counter()
            await call()
            lat.append((time.perf_counter() - t) * 1000)

    if kind == "grpc":

        async def body(echo: Any) -> None:
            await run(lambda: echo(PAYLOAD))

        await rpc_grpc.with_echo(host, port, body)
    else:
        async with kcprpc.connect(host, port) as client:
            stub = client.stub(Bench)
            await run(lambda: stub.Echo(PAYLOAD))
    lat.sort()
    return {"p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99), "max_ms": lat[-1], "n": n}


def report_link(args: argparse.Namespace) -> None:
    le = args.linkemu
    name = ["--name", "rpcbench"]
    link = ["--loss", str(args.loss), "--delay", str(args.delay), "--seed", "1"]
    subprocess.run([le, *name, "down"], capture_output=True, check=False)
    subprocess.run([le, *name, "up", *link], check=True, capture_output=True)
    print(
        f"# unary calls across linkemu: {args.loss} % loss each way, {args.delay} ms one-way delay, {args.calls} sequential calls"
    )
    results: dict[str, list[dict[str, float]]] = {"kcprpc": [], "grpcio": []}
    try:
        for r in range(args.rounds):
            for c in ["kcprpc", "grpcio"] if r % 2 == 0 else ["grpcio", "kcprpc"]:
                kind = "grpc" if c == "grpcio" else "kcprpc"
                port = 9400 + r * 2 + (kind == "grpc")
                srv = subprocess.Popen(
                    [le, *name, "exec", "b", "--", sys.executable, __file__, "--serve", kind, "--host", "10.77.0.2",
                     "--port", str(port), "--loop", "asyncio" if kind == "grpc" else args.loop],
                    stdout=subprocess.PIPE, text=True, cwd=ROOT,
                )  # fmt: skip
                try:
                    assert srv.stdout is not None
                    srv.stdout.readline()
                    out = subprocess.run(
                        [le, *name, "exec", "a", "--", sys.executable, __file__, "--latency-client", kind,
                         "--host", "10.77.0.2", "--port", str(port), "--calls", str(args.calls), "--loop",
                         "asyncio" if kind == "grpc" else args.loop],
                        capture_output=True, text=True, cwd=ROOT, check=True, timeout=3600,
                    )  # fmt: skip
                    res = json.loads(out.stdout.strip().splitlines()[-1])
                finally:
                    srv.terminate()
                    srv.wait(10)
                results[c].append(res)
                print(
                    f"round {r + 1} {c:8} p50 {res['p50_ms']:.1f} ms  p99 {res['p99_ms']:.1f} ms  max {res['max_ms']:.1f} ms",
                    flush=True,
                )
    finally:
        subprocess.run([le, *name, "down"], capture_output=True, check=False)
    med = medians(results)
    k, g = med["kcprpc"], med["grpcio"]
    print(
        f"kcprpc / grpcio: p50 x{k['p50_ms'] / g['p50_ms']:.2f}, p99 x{k['p99_ms'] / g['p99_ms']:.2f}, "
        f"max x{k['max_ms'] / g['max_ms']:.2f} (lower is better)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="rate window per contender and round")
    ap.add_argument("--calls", type=int, default=2000, help="sequential calls for the latency figures")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="kcprpc's event loop")
    ap.add_argument(
        "--grpc-loop", choices=["uvloop", "asyncio"], default="asyncio", help="grpcio's event loop"
    )
    ap.add_argument(
        "--contenders",
        default="kcprpc,grpcio,kcprpc-key,kcprpc-compat",
        help=f"comma-separated, from: {', '.join(WIRES)}",
    )
    ap.add_argument("--fanout", type=int, default=0, help="push fan-out benchmark with N subscribers")
    ap.add_argument("--streaming", action="store_true", help="server-streaming message rate vs grpcio")
    ap.add_argument("--messages", type=int, default=100_000, help="--streaming: messages per call")
    ap.add_argument("--rates", help="--fanout: publish rates per second, ascending (bench/fanout.py)")
    ap.add_argument("--link", action="store_true", help="calls under loss across linkemu (needs root)")
    ap.add_argument("--loss", type=float, default=5.0, help="--link: loss in %% each way")
    ap.add_argument("--delay", type=float, default=25.0, help="--link: one-way delay in ms")
    ap.add_argument("--linkemu", default=str(ROOT.parent / "shared/tools/linkemu/linkemu"))
    ap.add_argument("--serve", choices=["kcprpc", "grpc"], help=argparse.SUPPRESS)
    ap.add_argument("--wire", choices=["secure", "key", "compat"], default="secure", help=argparse.SUPPRESS)
    ap.add_argument("--latency-client", choices=["kcprpc", "grpc"], help=argparse.SUPPRESS)
    ap.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        server = (
            serve_kcprpc(args.host, args.port, args.wire)
            if args.serve == "kcprpc"
            else rpc_grpc.serve(args.host, args.port)
        )
        run_loop(server, args.loop)
        return
    if args.latency_client:
        res = run_loop(sequential_latency(args.latency_client, args.host, args.port, args.calls), args.loop)
        print(json.dumps(res))
        return
    if args.quick:
        args.rounds, args.seconds = 1, 1.0
        args.calls = 300 if args.link else 500
    if args.quick:
        args.messages = min(args.messages, 20_000)
    if args.fanout:
        sys.exit(report_fanout(args))
    elif args.streaming:
        report_streaming(args)
    elif args.link:
        report_link(args)
    else:
        report_unary(args)


if __name__ == "__main__":
    main()
