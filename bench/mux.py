"""Mux overhead: one stream and 16 streams over one transport, against the raw transport.

For each transport mode the same run measures, alternating the contenders (A B C A B C ...):

* ``raw``: the bytes written straight to the transport and read on the far side;
* ``mux1``: the same bytes through one :class:`MuxStream`;
* ``mux16``: the same total split over 16 streams written concurrently;

Every contender writes 64 KiB at a time and awaits ``drain()`` after each write; readers read
whatever is buffered. The report gives the median throughput of each and the ratios ``mux/raw``
measured in the same run (goal: overhead < 15 %, i.e. ratio >= 0.85), both on wall time and on
this process's CPU time
(bytes per CPU-second: steadier on a shared machine whose speed flips, since both ends of the
transport and the mux run in this one process). It also measures the cost of opening and closing a
stream (open, SYN, accept, FIN both ways, release), sequentially and 64 at a time.

Modes: ``memory`` (the in-memory pipe of kcprpc.mux.testing) always; ``kcp`` (two KCP sessions
on 127.0.0.1 via kcp.session, when that module is present).

    python bench/mux.py               # full
    python bench/mux.py --quick       # small sizes, 3 rounds
    python bench/mux.py --mode memory --version 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from _common import BULK_KCP_OPTS, CHUNK, write_all

from kcprpc.mux import MuxConfig, MuxSession, MuxStream
from kcprpc.mux.testing import memory_pipe

Pair = tuple[Any, Any]
PairFactory = Callable[[], Awaitable[tuple[Pair, Callable[[], Awaitable[None]]]]]


async def memory_factory() -> tuple[Pair, Callable[[], Awaitable[None]]]:
    a, b = memory_pipe(limit=1 << 20)

    async def cleanup() -> None:
        a.close()
        b.close()

    return (a, b), cleanup


async def kcp_factory() -> tuple[Pair, Callable[[], Awaitable[None]]]:
    import kcp  # both ends in this process, over 127.0.0.1 UDP

    listener = await kcp.listen("127.0.0.1", 0, session=kcp.SessionConfig(**BULK_KCP_OPTS))
    client = await kcp.dial("127.0.0.1", listener.address[1], session=kcp.SessionConfig(**BULK_KCP_OPTS))
    client.write(b"?")  # KCP has no handshake: the listener sees the session with its first packet
    server = await asyncio.wait_for(listener.accept(), 10)
    assert await asyncio.wait_for(server.readexactly(1), 10) == b"?"

    async def cleanup() -> None:
        for s in (client, server):
            s.abort()
        listener.close()
        await listener.wait_closed()

    return (client, server), cleanup


async def _drain_reader(read: Callable[[int], Awaitable[bytes]], total: int) -> int:
    got = 0
    while got < total:
        chunk = await read(1 << 20)
        if not chunk:
            break
        got += len(chunk)
    return got


async def run_raw(factory: PairFactory, total: int) -> tuple[float, float]:
    (a, b), cleanup = await factory()
    t0, c0 = time.perf_counter(), time.process_time()
    reader = asyncio.ensure_future(_drain_reader(b.read, total))
    await write_all(a, total)
    got = await reader
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert got == total, (got, total)
    await cleanup()
    return total / dt, total / cpu


@contextlib.asynccontextmanager
async def mux_pair(factory: PairFactory, cfg: MuxConfig) -> AsyncIterator[tuple[MuxSession, MuxSession]]:
    """A client and a server :class:`MuxSession` over a fresh transport pair, closed on exit."""
    (a, b), cleanup = await factory()
    client = MuxSession(a, client=True, config=cfg)
    server = MuxSession(b, client=False, config=cfg)
    try:
        yield client, server
    finally:
        await client.close()
        await server.close()
        await cleanup()


async def run_mux(factory: PairFactory, total: int, streams: int, cfg: MuxConfig) -> tuple[float, float]:
    per = total // streams
    async with mux_pair(factory, cfg) as (client, server):

        async def writer() -> None:
            st = await client.open_stream()
            await write_all(st, per)
            st.close()

        async def reader() -> int:
            st = await server.accept_stream()
            got = 0
            while chunk := await st.read():
                got += len(chunk)
            st.close()
            return got

        t0, c0 = time.perf_counter(), time.process_time()
        readers = [asyncio.ensure_future(reader()) for _ in range(streams)]
        await asyncio.gather(*(writer() for _ in range(streams)))
        got = sum(await asyncio.gather(*readers))
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert got == per * streams, (got, per * streams)
        return got / dt, got / cpu


async def run_open_close(factory: PairFactory, count: int, parallel: int, cfg: MuxConfig) -> float:
    """Seconds per stream for open + SYN + accept + FIN both ways + release."""
    async with mux_pair(factory, cfg) as (client, server):

        async def acceptor() -> None:
            async def one(st: MuxStream) -> None:
                await st.read()
                st.close()

            pending = set()
            for _ in range(count):
                st = await server.accept_stream()
                pending.add(asyncio.ensure_future(one(st)))
            await asyncio.gather(*pending)

        async def one_stream() -> None:
            st = await client.open_stream()
            st.close()
            assert await st.read() == b""

        acc = asyncio.ensure_future(acceptor())
        t0 = time.perf_counter()
        done = 0
        while done < count:
            n = min(parallel, count - done)
            await asyncio.gather(*(one_stream() for _ in range(n)))
            done += n
        await acc
        return (time.perf_counter() - t0) / count


def fmt_rate(bps: float) -> str:
    return f"{bps / 1e6:8.1f} MB/s"


async def bench_mode(
    name: str, factory: PairFactory, total: int, rounds: int, cfg: MuxConfig, opens: int
) -> None:
    names = ("raw", "mux1", "mux16")
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    ratios: dict[str, list[float]] = {k: [] for k in names[1:]}
    cpu_ratios: dict[str, list[float]] = {k: [] for k in names[1:]}
    for _ in range(rounds):
        for k in names:
            gc.collect()
            w, c = await (run_raw(factory, total) if k == "raw" else run_mux(factory, total, int(k[3:]), cfg))
            wall[k].append(w)
            cpu[k].append(c)
        for k in names[1:]:
            ratios[k].append(wall[k][-1] / wall["raw"][-1])
            cpu_ratios[k].append(cpu[k][-1] / cpu["raw"][-1])
    print(
        f"\n== mode {name}, smux v{cfg.version} (max_stream_buffer {cfg.max_stream_buffer}), {total / 1e6:.1f} MB per run, {rounds} rounds (raw mux1 mux16 alternated) =="
    )
    for k in names:
        print(
            f"  {k:6s} median {fmt_rate(statistics.median(wall[k]))} wall, {fmt_rate(statistics.median(cpu[k]))} per CPU-second"
            "   wall runs: " + ", ".join(f"{x / 1e6:.1f}" for x in wall[k])
        )
    for k in names[1:]:
        r, rc = statistics.median(ratios[k]), statistics.median(cpu_ratios[k])
        print(
            f"  ratio {k}/raw: wall {r:.3f} (overhead {100 * (1 - r):5.1f} %), "
            f"CPU {rc:.3f} (overhead {100 * (1 - rc):5.1f} %)   [medians of per-round ratios]"
        )
    if name == "memory":
        print(
            "  (memory mode: the raw pipe is a bare memcpy whose cost depends on write sizes, so these ratios only"
            " show the mux's own CPU ceiling; the kcp mode ratios are the meaningful ones)"
        )
    seq = await run_open_close(factory, opens, 1, cfg)
    par = await run_open_close(factory, opens, 64, cfg)
    print(
        f"  open+close a stream: {seq * 1e6:.0f} us sequential, {par * 1e6:.0f} us each with 64 in parallel"
    )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, 3 rounds")
    ap.add_argument("--mode", choices=["memory", "kcp", "all"], default="all")
    ap.add_argument("--version", type=int, choices=[1, 2], default=1)
    ap.add_argument("--stream-buffer", type=int, default=None, help="max_stream_buffer (v2 window), bytes")
    ap.add_argument("--mb", type=float, default=None, help="megabytes per run")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    cfg = MuxConfig(version=args.version)
    if args.stream_buffer:
        cfg = MuxConfig(version=args.version, max_stream_buffer=args.stream_buffer)
    modes: list[tuple[str, PairFactory, float]] = []
    if args.mode in ("memory", "all"):
        modes.append(("memory", memory_factory, args.mb or (16 if args.quick else 64)))
    if args.mode in ("kcp", "all"):
        try:
            import kcp.session  # noqa: F401
        except ImportError as exc:
            print(f"(kcp mode skipped: kcp.session not importable: {exc})")
        else:
            modes.append(("kcp", kcp_factory, args.mb or (4 if args.quick else 16)))
    for name, factory, mb in modes:
        await bench_mode(
            name, factory, int(mb * 1e6) // CHUNK * CHUNK, rounds, cfg, 300 if args.quick else 2000
        )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
