"""A flood of QUIC Initials from spoofed sources at the WebTransport listener, with and without
its budget of new connections (``WebTransportOptions.handshake_rate``, kcprpc.web.quic_admission).

Per contender and rate: a fresh server process (a ``kcprpc.Server`` with a WebTransport listener
on a development certificate, 127.0.0.1), one legitimate client (``connect_webtransport``, a
64-byte unary call every 20 ms), and a flood process that sends ``rate`` Initials a second for
``--seconds``, each a new connection (made by aioquic's client before the run), from 64 sockets
bound to random addresses of 127.0.0.0/8 (what an off-path attacker's spoofed sources look like:
each address new, so no per-address limit applies, and loopback is exempt from them anyway). It
prints the server's CPU during the flood (percent of one core), the QUIC connections it holds at
the end, the legitimate client's calls (of those its pace allows), p50/p99 and failures, and the
listener's counters. The contenders alternate within each rate: ``budget`` (the default options)
and ``off`` (``handshake_rate`` so high that every Initial starts a handshake, as before the budget).

    python bench/wt_flood.py                       # rates 100 and 400/s, 5 s each
    python bench/wt_flood.py --rates 400,1500 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import socket
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _common import proc_cpu_s

import kcprpc

OFF_RATE = 1e9  # "off": every new connection may start its handshake
LEGIT_INTERVAL = 0.02


class Echo(kcprpc.Service, name="bench.WtFlood"):
    async def echo(self, text: str) -> str:
        return text


def _server(conn: Connection, handshake_rate: float | None) -> None:
    from kcprpc.web import WebTransportOptions, listen_webtransport
    from kcprpc.web.certs import make_dev_certificate

    async def main() -> None:
        server = kcprpc.Server([Echo()], "127.0.0.1", 0)
        await server.start()
        dev = make_dev_certificate(days=3)
        cert, key = dev.write(Path(tempfile.mkdtemp(prefix="kcprpc-bench-wt-")))
        budget = {} if handshake_rate is None else {"handshake_rate": handshake_rate}  # None: the default
        opts = WebTransportOptions(certificate=cert, private_key=key, **budget)
        wt = await listen_webtransport(server, "127.0.0.1", 0, opts)
        conn.send((wt.url, wt.address, dev.sha256))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        conn.send(wt.stats())
        await server.shutdown(grace=0)

    asyncio.run(main())


def _initials(n: int, addr: tuple[str, int]) -> list[bytes]:
    """``n`` first datagrams of new connections (aioquic's client, as a browser's Initial)."""
    from aioquic.h3.connection import H3_ALPN
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    out = []
    for _ in range(n):
        c = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN))
        c.connect(addr, now=0.0)
        out.append(c.datagrams_to_send(now=0.0)[0][0])
    return out


def _flood(addr: tuple[str, int], rate: float, seconds: float, datagrams: list[bytes]) -> None:
    rng = random.Random(1)
    socks = []
    for _ in range(64):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.{rng.randint(1, 250)}.{rng.randint(0, 250)}.{rng.randint(1, 250)}", 0))
        s.setblocking(False)
        socks.append(s)
    t0 = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - t0) < seconds and sent < len(datagrams):  # bounded both ways
        due = min(len(datagrams), int(elapsed * rate))
        while sent < due:
            with contextlib.suppress(BlockingIOError):  # a full socket buffer: lost, as on a network
                socks[sent % len(socks)].sendto(datagrams[sent], addr)
            sent += 1
        time.sleep(0.002)  # pacing the flood, not synchronising anything


def _legit(conn: Connection, url: str, sha256: bytes, seconds: float) -> None:
    from kcprpc.web import connect_webtransport

    async def main() -> None:
        async with connect_webtransport(url, certificate_hashes=[sha256]) as c:
            stub = c.stub(Echo, timeout=5.0)
            await stub.echo("warm-up")
            conn.send("up")
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            lats: list[float] = []
            failed = 0
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t = time.perf_counter()
                try:
                    await stub.echo("x" * 64)
                except kcprpc.RpcError:
                    failed += 1
                else:
                    lats.append((time.perf_counter() - t) * 1000)
                await asyncio.sleep(LEGIT_INTERVAL)  # the client's pace
            lats.sort()
            q = (lambda p: lats[min(len(lats) - 1, int(p * len(lats)))]) if lats else (lambda p: 0.0)
            conn.send((len(lats), failed, q(0.5), q(0.99)))

    asyncio.run(main())


def run(handshake_rate: float | None, rate: float, seconds: float) -> dict[str, Any]:
    """One flood at ``rate`` Initials/s against a fresh server; its figures."""
    ctx = mp.get_context("fork")
    ctl, child = ctx.Pipe()
    server = ctx.Process(target=_server, args=(child, handshake_rate), daemon=True)
    server.start()
    procs = [server]
    try:
        if not ctl.poll(30):
            raise RuntimeError("the server did not start")
        url, addr, sha256 = ctl.recv()
        datagrams = _initials(int(rate * seconds) + 1, tuple(addr))
        lc, lchild = ctx.Pipe()
        legit = ctx.Process(target=_legit, args=(lchild, url, sha256, seconds), daemon=True)
        legit.start()
        procs.append(legit)
        if not lc.poll(30):
            raise RuntimeError("the legitimate client did not connect")
        lc.recv()
        flood = ctx.Process(target=_flood, args=(tuple(addr), rate, seconds, datagrams), daemon=True)
        assert server.pid is not None
        cpu0, t0 = proc_cpu_s(server.pid), time.perf_counter()
        lc.send("go")
        flood.start()
        procs.append(flood)
        if not lc.poll(seconds + 30):
            raise RuntimeError("the legitimate client did not finish")
        calls, failed, p50, p99 = lc.recv()
        cpu1, t1 = proc_cpu_s(server.pid), time.perf_counter()
        flood.join(10)
        ctl.send("stats")
        stats = ctl.recv() if ctl.poll(30) else {}
        return {
            "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
            "calls": calls,
            "paced": int(seconds / LEGIT_INTERVAL),
            "failed": failed,
            "p50_ms": p50,
            "p99_ms": p99,
            "stats": stats,
        }
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="100,400", help="Initials a second, comma-separated")
    ap.add_argument("--seconds", type=float, default=5.0, help="the flood's length (default 5)")
    ap.add_argument("--contenders", default="budget,off", help="of budget, off (alternated)")
    args = ap.parse_args(argv)
    rates = [float(x) for x in args.rates.split(",")]
    contenders = [c for c in args.contenders.split(",") if c]
    if not contenders or any(c not in ("budget", "off") for c in contenders):
        ap.error("--contenders: of budget, off")
    print(
        f"# pid {os.getpid()}: spoofed QUIC Initials at a WebTransport listener, {args.seconds:g} s each, cpus={os.cpu_count()}"
    )
    for i, rate in enumerate(rates):
        order = contenders if i % 2 == 0 else contenders[::-1]
        for c in order:
            r = run(None if c == "budget" else OFF_RATE, rate, args.seconds)
            st = r["stats"]
            print(
                f"{c:6} {rate:6.0f} Initials/s: server CPU {r['cpu_pct']:5.1f} %, QUIC connections held "
                f"{st.get('quic_connections', -1)}, Retries {st.get('quic_retries', 0)}; legitimate client "
                f"{r['calls']} of {r['paced']} calls, {r['failed']} failed, p50 {r['p50_ms']:.1f} ms "
                f"p99 {r['p99_ms']:.1f} ms",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
