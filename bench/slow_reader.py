"""A slow reader across a lossy link: what a lost window update costs a KCP stream.

One process: a ``kcp.listen`` server, a :class:`kcp.relay.LossyRelay` (``--loss`` % each way,
``--delay`` ms one way, seeded) and a ``kcp.dial`` client that writes as fast as the session lets
it for ``--seconds``. The server's application reads for ``--read-ms`` out of every ``--period-ms``
(a consumer slower than the link), so the receive window fills, closes and reopens again and
again, and each time the sender waits for the one window update (WINS) the receiver sends when it
reads again. A contender is the sender's ``SessionConfig.loss_recovery``, optionally followed by
``/`` and the receiver's (default ``adaptive``):

* the sender's ``adaptive`` (the default): window probes after 100 ms, backing off to 1 s;
  ``ikcp``: ikcp's probes (kcp-go's too), 7 s after the window closed, then 10.5 s later, up to
  120 s apart;
* the receiver's ``adaptive``: the window update that reopens a full window is repeated after an
  RTO, two and four while no data comes; ``ikcp``: sent once. ``ikcp/ikcp`` is a kcp-go sender
  and receiver, ``ikcp/adaptive`` a kcp-go sender to a kcprpc receiver.

Per contender and round: the bytes read, the longest gap between two reads that returned data,
and the gaps longer than 2 x ``--period-ms`` (a stall beyond the reader's own pauses). Contenders
alternate between rounds (A B, B A); each run has new sessions.

    python bench/slow_reader.py --rounds 2                  # compat wire, 5 % loss, 20 ms one way
    python bench/slow_reader.py --wire secure --loss 10 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, cast

from _common import run_loop

import kcp
from kcp.relay import LossyRelay

KEY = "slow reader"


async def one(args: argparse.Namespace, contender: str, seed: int) -> dict[str, float]:
    recovery, _, receiver = contender.partition("/")
    wire: Any = kcp.SecureWire(key=KEY) if args.wire == "secure" else kcp.CompatWire()
    accepted: asyncio.Queue[kcp.KCPSession] = asyncio.Queue()
    wnd = args.wnd or kcp.SessionConfig().rcv_wnd
    server_cfg = kcp.SessionConfig(
        read_buffer=args.read_buffer, snd_wnd=wnd, rcv_wnd=wnd, loss_recovery=receiver or "adaptive"
    )
    lis = await kcp.listen("127.0.0.1", 0, wire, session=server_cfg, on_accept=accepted.put)
    relay = LossyRelay(("127.0.0.1", 0), lis.address, loss=args.loss, delay=args.delay, seed=seed)
    await relay.start()
    cfg = kcp.SessionConfig(loss_recovery=cast(Any, recovery), snd_wnd=wnd, rcv_wnd=wnd)
    client = await kcp.dial("127.0.0.1", relay.address[1], wire, session=cfg)
    loop = asyncio.get_running_loop()
    end = loop.time() + args.seconds

    async def write() -> None:
        chunk = bytes(16384)
        while loop.time() < end:
            client.write(chunk)
            await client.drain()

    writer = asyncio.ensure_future(write())
    try:
        client.write(b"hello")
        srv = await asyncio.wait_for(accepted.get(), 10)
        got = 0
        last = loop.time()
        gaps: list[float] = []
        period, reading = args.period_ms / 1000, args.read_ms / 1000
        t0 = loop.time()
        while loop.time() < end:
            phase = (loop.time() - t0) % period
            if phase >= reading:  # the reader's pause
                await asyncio.sleep(period - phase)
                continue
            try:
                data = await asyncio.wait_for(srv.read(1 << 20), reading - phase)
            except TimeoutError:
                continue
            if not data:
                break
            now = loop.time()
            gaps.append(now - last)
            last = now
            got += len(data)
        secs = args.seconds
        return {
            "mbit": got * 8 / secs / 1e6,
            "max_gap_ms": max(gaps, default=secs) * 1000,
            "stalls": sum(g > 2 * period for g in gaps),
        }
    finally:
        writer.cancel()
        client.abort()
        await relay.close()
        lis.close()
        await lis.wait_closed()


async def main(args: argparse.Namespace) -> None:
    contenders = args.contenders.split(",")
    rows: dict[str, list[dict[str, float]]] = {c: [] for c in contenders}
    for r in range(args.rounds):
        order = contenders if r % 2 == 0 else contenders[::-1]
        for c in order:
            t = time.perf_counter()
            res = await one(args, c, args.seed + r)
            rows[c].append(res)
            print(
                f"round {r + 1} {c:13} {res['mbit']:6.2f} Mbit/s read, longest gap {res['max_gap_ms']:7.0f} ms, "
                f"{res['stalls']} stalls over {2 * args.period_ms} ms ({time.perf_counter() - t:.0f} s)",
                flush=True,
            )
    print(
        f"\n{args.wire} wire, loss {args.loss} % each way, {args.delay} ms one way, reading {args.read_ms} of every "
        f"{args.period_ms} ms, {args.seconds:g} s x {args.rounds} rounds"
    )
    for c in contenders:
        xs = rows[c]
        mbit = ", ".join(f"{x['mbit']:.2f}" for x in xs)
        gap = ", ".join(f"{x['max_gap_ms']:.0f}" for x in xs)
        stalls = ", ".join(str(int(x["stalls"])) for x in xs)
        print(f"{c:13} Mbit/s read {mbit}; longest gap {gap} ms; stalls {stalls}")


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--contenders",
        default="adaptive,ikcp",
        help="SENDER[/RECEIVER] loss_recovery values (receiver: adaptive)",
    )
    ap.add_argument("--wire", choices=("compat", "secure"), default="compat")
    ap.add_argument("--loss", type=float, default=5.0, help="%% lost each way")
    ap.add_argument("--delay", type=float, default=20.0, help="ms one way")
    ap.add_argument("--seconds", type=float, default=20.0, help="per run")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--period-ms", type=int, default=900)
    ap.add_argument("--read-ms", type=int, default=300)
    ap.add_argument(
        "--read-buffer", type=int, default=256 << 10, help="the server's SessionConfig.read_buffer"
    )
    ap.add_argument("--wnd", type=int, default=0, help="both ends' KCP windows (segments; 0: the default)")
    ap.add_argument("--seed", type=int, default=1)
    run_loop(main(ap.parse_args()), "asyncio")


if __name__ == "__main__":
    cli()
