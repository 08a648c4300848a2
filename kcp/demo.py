"""A loopback KCP echo in one process: ``python -m kcp.demo``.

A listener and a client talk AES-encrypted KCP with FEC (10 data + 3 parity shards) through the
in-process lossy relay (:mod:`kcp.relay`). The demo prints a few echoed messages with their round
trip times, a bulk transfer's throughput, and the counters, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import kcp
from kcp.relay import LossyRelay


async def echo(session: kcp.KCPSession) -> None:
    """Echo everything a session sends back to it, with backpressure, until it closes."""
    while True:
        data = await session.read(65536)
        if not data:
            return
        session.write(data)
        await session.drain()


async def demo(loss: float, delay: float, messages: int, bulk: int, seed: int) -> int:
    """Run the echo demo; returns a process exit code."""
    wire = kcp.CompatWire(crypt="aes", key="kcprpc demo", fec=(10, 3))
    listener = await kcp.listen("127.0.0.1", 0, wire, on_accept=echo)
    async with (
        listener,
        LossyRelay(target=listener.address, loss=loss, delay=delay, jitter=delay / 5, seed=seed) as relay,
    ):
        print(
            f"listener {listener.address[0]}:{listener.address[1]}, relay {relay.address[0]}:{relay.address[1]}"
        )
        print(f"link: {loss:g} % loss each way, {delay:g} ms one-way delay; aes + FEC 10/3")
        session = await kcp.dial("127.0.0.1", relay.address[1], wire)
        async with session:
            rtts = []
            for i in range(messages):
                msg = f"hello #{i} over KCP".encode()
                t0 = time.perf_counter()
                session.write(msg)
                echoed = await asyncio.wait_for(session.readexactly(len(msg)), 10)
                rtt = (time.perf_counter() - t0) * 1000
                rtts.append(rtt)
                print(f"  echo {echoed.decode()!r:28} rtt {rtt:7.2f} ms")
            rtts.sort()
            print(
                f"rtt: median {rtts[len(rtts) // 2]:.2f} ms, max {rtts[-1]:.2f} ms (KCP srtt {session.stats['srtt']} ms)"
            )

            payload = os.urandom(bulk)
            t0 = time.perf_counter()

            async def reader() -> bytes:
                parts, got = [], 0
                while got < bulk:
                    chunk = await session.read(65536)
                    if not chunk:
                        break
                    parts.append(chunk)
                    got += len(chunk)
                return b"".join(parts)

            task = asyncio.create_task(reader())
            for off in range(0, bulk, 32768):
                session.write(payload[off : off + 32768])
                await session.drain()
            back = await asyncio.wait_for(task, 30)
            secs = time.perf_counter() - t0
            ok = back == payload
            print(
                f"bulk echo: {bulk / 1e6:.1f} MB each way in {secs:.2f} s ({bulk / secs / 1e6:.2f} MB/s), intact={ok}"
            )
            st = session.stats
            keys = (
                "out_pkts",
                "in_pkts",
                "retrans_segs",
                "fast_retrans_segs",
                "lost_segs",
                "fec_recovered",
                "fec_parity_shards",
                "in_csum_errors",
            )
            print("client counters: " + ", ".join(f"{k}={st[k]}" for k in keys))
            r = relay.stats
            print(
                f"relay: up {r['up_delivered']} delivered / {r['up_dropped']} dropped, "
                f"down {r['down_delivered']} delivered / {r['down_dropped']} dropped"
            )
        snap = kcp.snmp()
        print(
            "process: "
            + ", ".join(
                f"{k}={snap[k]}"
                for k in (
                    "active_opens",
                    "passive_opens",
                    "curr_estab",
                    "send_syscalls",
                    "out_pkts",
                    "recv_syscalls",
                    "in_pkts",
                )
            )
        )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="python -m kcp.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--loss", type=float, default=5.0, help="loss %% each way (default 5)")
    p.add_argument("--delay", type=float, default=5.0, help="one-way delay in ms (default 5)")
    p.add_argument("--messages", type=int, default=5)
    p.add_argument("--bulk", type=int, default=1_000_000, help="bytes for the bulk echo")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    return kcp.run(demo(args.loss, args.delay, args.messages, args.bulk, args.seed))


if __name__ == "__main__":
    raise SystemExit(main())
