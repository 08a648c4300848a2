"""Unary call rate and latency: kcprpc over loopback KCP vs grpcio's asyncio API over TCP loopback.

Each contender runs its server in a child process and its client here, 64-byte payloads, raw-bytes
handlers on the gRPC side (no protobuf cost). Rounds alternate the contenders (A B A B ...):

* rate: calls/s with 64 calls in flight on one connection/channel for ``--seconds``;
* latency: p50/p99 of ``--calls`` sequential calls (1 in flight).

Contenders: ``kcprpc`` (unary calls on the shared control stream with call ids, the default),
``kcprpc-stream`` (a mux stream per call, to compare the framings), ``grpcio``.

    python bench/rpc.py            # 3 rounds
    python bench/rpc.py --quick    # 1 short round
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kcprpc  # noqa: E402
from kcprpc import ClientConfig  # noqa: E402

PAYLOAD = b"x" * 64


class Bench(kcprpc.Service, name="bench.Echo"):
    """The benchmark service."""

    async def Echo(self, data: bytes) -> bytes:
        return data


# ---------------------------------------------------------------------------------------- servers
async def serve_kcprpc() -> None:
    server = kcprpc.Server([Bench()], "127.0.0.1", 0)
    _host, port = await server.start()
    print(json.dumps({"port": port}), flush=True)
    await server.serve()


async def serve_grpc() -> None:
    import grpc

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(json.dumps({"port": port}), flush=True)
    await server.wait_for_termination()


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
    return {
        "rate": rate,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
    }


async def client_kcprpc(port: int, framing: str, seconds: float, calls: int) -> dict[str, float]:
    cfg = ClientConfig(unary_framing=framing)  # type: ignore[arg-type]
    async with kcprpc.connect("127.0.0.1", port, config=cfg) as client:
        stub = client.stub(Bench)

        async def call() -> Any:
            r = await stub.Echo(PAYLOAD)
            assert len(r) == 64

        return await measure(call, seconds, calls)


async def client_grpc(port: int, seconds: float, calls: int) -> dict[str, float]:
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo = channel.unary_unary("/bench.Echo/Echo")

        async def call() -> Any:
            r = await echo(PAYLOAD)
            assert len(r) == 64

        return await measure(call, seconds, calls)


def run_loop(coro: Any, loop_kind: str) -> Any:
    if loop_kind == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def start_server(kind: str, loop_kind: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--loop", loop_kind],
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
    proc, port = start_server(kind, loop_kind)
    try:
        if kind == "grpc":
            return run_loop(client_grpc(port, args.seconds, args.calls), loop_kind)  # type: ignore[no-any-return]
        framing = "stream" if contender == "kcprpc-stream" else "shared"
        return run_loop(client_kcprpc(port, framing, args.seconds, args.calls), loop_kind)  # type: ignore[no-any-return]
    finally:
        proc.terminate()
        proc.wait(5)


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
    ap.add_argument("--contenders", default="kcprpc,grpcio,kcprpc-stream")
    ap.add_argument("--serve", choices=["kcprpc", "grpc"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        run_loop(serve_kcprpc() if args.serve == "kcprpc" else serve_grpc(), args.loop)
        return
    if args.quick:
        args.rounds, args.seconds, args.calls = 1, 1.0, 500
    contenders = args.contenders.split(",")
    results: dict[str, list[dict[str, float]]] = {c: [] for c in contenders}
    print(
        f"# unary, 64 B payloads; kcprpc loop={args.loop}, grpcio loop={args.grpc_loop}; cpus={os.cpu_count()}"
    )
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
    med = {c: {k: statistics.median(x[k] for x in v) for k in v[0]} for c, v in results.items()}
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


if __name__ == "__main__":
    main()
