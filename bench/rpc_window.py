"""RPC bulk streaming over loopback KCP with different smux v2 stream windows (A B A B ...).

One server-streaming call sends ``--mb`` megabytes in 16 KiB messages; client and server run in
this process. Reports the median throughput per window and the ratio to the first window, from
the same run.

    python bench/rpc_window.py            # 64 KiB (smux default) vs 256 KiB vs 512 KiB vs 1 MiB
    python bench/rpc_window.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kcprpc
from kcprpc.mux import MuxConfig

CHUNK = 16 * 1024


class Bulk(kcprpc.Service, name="bench.Bulk"):
    async def pull(self, n: int) -> AsyncIterator[bytes]:
        blob = b"x" * CHUNK
        for _ in range(n):
            yield blob


async def one(window: int, mb: float) -> float:
    cfg = MuxConfig(version=2, max_stream_buffer=window)
    transport = kcprpc.Transport(mux=cfg)
    server = kcprpc.Server([Bulk()], "127.0.0.1", 0, transport=transport)
    host, port = await server.start()
    n = int(mb * 1e6 / CHUNK)
    try:
        async with kcprpc.connect(host, port, transport=transport) as client:
            bulk = client.stub(Bulk)
            t0 = time.perf_counter()
            got = 0
            async for b in bulk.pull(n):
                got += len(b)
            dt = time.perf_counter() - t0
    finally:
        await server.shutdown(grace=0)
    return got / dt / 1e6


async def main(args: argparse.Namespace) -> None:
    windows = [64 * 1024, 256 * 1024, 512 * 1024, 1024 * 1024]
    runs: dict[int, list[float]] = {w: [] for w in windows}
    for _ in range(args.rounds):
        for w in windows:
            runs[w].append(await one(w, args.mb))
    base = statistics.median(runs[windows[0]])
    print(f"one server-streaming call, {args.mb:g} MB in 16 KiB messages, {args.rounds} rounds alternated")
    for w in windows:
        med = statistics.median(runs[w])
        print(f"  window {w // 1024:5d} KiB: {med:7.1f} MB/s  ({med / base:.2f}x)   runs: "
              + ", ".join(f"{x:.1f}" for x in runs[w]))  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mb", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    a = ap.parse_args()
    a.mb = a.mb or (4.0 if a.quick else 16.0)
    a.rounds = a.rounds or (2 if a.quick else 5)
    import uvloop

    uvloop.run(main(a))
