"""grpcio's asyncio API with raw-bytes handlers (no protobuf cost): the peer that bench/rpc.py
measures kcprpc against. Run on its own: ``python bench/rpc_grpc.py serve --port 50051``;
``python bench/rpc_grpc.py --quick`` checks it (server and client in this process) and exits."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

METHOD = "/bench.Echo/Echo"


async def serve(host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve ``bench.Echo/Echo`` (echoes the request bytes); prints ``{"port": N}`` when ready."""
    server, bound = await start_server(host, port)
    print(json.dumps({"port": bound}), flush=True)
    await server.wait_for_termination()


async def start_server(host: str, port: int) -> tuple[Any, int]:
    """Start the echo server; return it and the bound port."""
    import grpc

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    async def stream(request: bytes, context: Any) -> Any:
        payload = b"x" * 64
        for _ in range(int(request)):
            yield payload

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


async def with_echo(
    host: str, port: int, body: Callable[[Callable[[bytes], Awaitable[bytes]]], Awaitable[Any]]
) -> Any:
    """Open a channel and run ``body(echo)`` where ``await echo(payload)`` makes one call."""
    import grpc

    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        echo = channel.unary_unary(METHOD)

        async def call(payload: bytes) -> bytes:
            r: bytes = await echo(payload)
            return r

        return await body(call)


async def self_check(calls: int, messages: int) -> None:
    """Server and client in this process: sequential unary calls and one stream, rates printed."""
    server, port = await start_server("127.0.0.1", 0)
    try:

        async def body(echo: Callable[[bytes], Awaitable[bytes]]) -> float:
            payload = b"x" * 64
            t0 = time.perf_counter()
            for _ in range(calls):
                assert await echo(payload) == payload
            return calls / (time.perf_counter() - t0)

        rate = await with_echo("127.0.0.1", port, body)
        streamed = await count_stream("127.0.0.1", port, messages)
    finally:
        await server.stop(None)
    print(f"grpcio peer, one process: {rate:.0f} sequential unary calls/s, {streamed:.0f} streamed msgs/s")


async def count_stream(host: str, port: int, n: int) -> float:
    """Receive ``n`` 64-byte messages of one server-streaming call; returns messages/s."""
    import grpc

    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        call = channel.unary_stream("/bench.Echo/Stream")
        async for _ in call(b"100"):  # warm up
            pass
        t0 = time.perf_counter()
        got = 0
        async for _ in call(str(n).encode()):
            got += 1
        assert got == n
        return n / (time.perf_counter() - t0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("cmd", nargs="?", choices=["serve"], help="serve until killed")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a short self-check (the default without cmd)")
    a = ap.parse_args()
    if a.cmd == "serve":
        asyncio.run(serve(a.host, a.port))
    else:
        asyncio.run(self_check(500 if a.quick else 2000, 5000 if a.quick else 20000))
