"""Secure-mode session throughput against compat mode with aes + crc32, over loopback UDP.

Sender and receiver run in two processes (uvloop), one bulk session per run. Contenders are
alternated round by round (A B C D, A B C D ...), and each round also gives the ratio
secure / compat-aes measured back to back:

* ``compat-aes``: kcp-go's packet format, ``crypt="aes"`` (nonce + crc32 + AES-CFB);
* ``secure``: ``mode="secure"`` with a passphrase (Noise NNpsk0 handshake, AES-256-GCM transport);
* ``compat-aes-fec`` / ``secure-fec``: the same with FEC 10/3;
* ``compat-none``: no crypt at all (the ceiling).

KCP settings: nodelay 1/10/2/1, windows 1024, mtu 1400, stream mode. The sender writes
``--mbytes`` MB in 64 KiB writes (waiting on ``drain()``); the receiver answers one byte once it
has everything; the time runs from the first write to that answer (the handshake is not timed)::

    python bench/secure_session.py --quick
    python bench/secure_session.py --rounds 5 --mbytes 32

``--dials N`` also times N sequential secure dials (IKpsk2 handshake + first round trip) against a
server in another process, and reports dials per second and the latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from _common import BULK_KCP_OPTS, child_process, percentile, send_bulk, sink_bulk

import kcp
from kcp.session import KCPSession

KCP_OPTS: dict[str, Any] = {**BULK_KCP_OPTS, "idle_timeout": 60.0}
CONTENDERS = ("compat-aes", "secure", "compat-aes-fec", "secure-fec", "compat-none")


def _variant(name: str) -> dict[str, Any]:
    """kcp.dial/listen's wire and session for one contender."""
    fec = (10, 3) if name.endswith("-fec") else (0, 0)
    session = kcp.SessionConfig(**KCP_OPTS)
    if name.startswith("secure"):
        return {"wire": kcp.SecureWire(key="bench passphrase", fec=fec), "session": session}
    if name == "compat-none":
        return {"session": session}
    return {"wire": kcp.CompatWire(crypt="aes", key="bench passphrase", fec=fec), "session": session}


def _receiver(name: str, total: int, port_q: Any, result_q: Any) -> None:
    async def main() -> None:
        done = asyncio.get_running_loop().create_future()

        async def sink(s: KCPSession) -> None:
            done.set_result(await sink_bulk(s, total))

        lis = await kcp.listen("127.0.0.1", 0, on_accept=sink, **_variant(name))
        port_q.put(lis.address[1])
        got = await asyncio.wait_for(done, 300)
        await asyncio.sleep(0.2)  # let the last acks leave before closing (bench only)
        result_q.put(got)
        lis.close()

    kcp.run(main())


async def _sender(name: str, port: int, total: int) -> dict[str, Any]:
    s = await kcp.dial("127.0.0.1", port, **_variant(name))
    elapsed = await send_bulk(s, total, timeout=300)
    st = s.stats
    s.abort()
    return {"elapsed": elapsed, "retrans": st.get("retrans_segs", 0), "epoch": st.get("secure_key_epoch", 0)}


def run_one(name: str, total: int) -> dict[str, Any]:
    with child_process(_receiver, name, total, method="spawn") as (port_q, result_q):
        port = port_q.get(timeout=60)
        out: dict[str, Any] = kcp.run(_sender(name, port, total))
        got = result_q.get(timeout=60)
        assert got >= total, (name, got, total)
    out["mbps"] = total / out["elapsed"] / 1e6
    return out


def _dial_server(port_q: Any, stop_q: Any) -> None:
    async def main() -> None:
        from kcp.secure import generate_keypair

        priv, pub = generate_keypair()

        async def echo(s: KCPSession) -> None:
            while data := await s.read(65536):
                s.write(data)

        lis = await kcp.listen("127.0.0.1", 0, kcp.SecureWire(static_private_key=priv), on_accept=echo)
        port_q.put((lis.address[1], pub))
        await asyncio.get_running_loop().run_in_executor(None, stop_q.get)
        lis.close()

    kcp.run(main())


def run_dials(n: int) -> dict[str, float]:
    with child_process(_dial_server, method="spawn") as (port_q, stop_q):
        port, pub = port_q.get(timeout=60)

        async def dials() -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                s = await kcp.dial("127.0.0.1", port, kcp.SecureWire(server_public_key=pub))
                s.write(b"?")
                await s.readexactly(1)
                out.append(time.perf_counter() - t0)
                s.close()
            return out

        t0 = time.perf_counter()
        try:
            lat: list[float] = kcp.run(dials())
        finally:
            stop_q.put(None)
        total = time.perf_counter() - t0
    lat.sort()
    return {"per_s": n / total, "p50_ms": percentile(lat, 0.5) * 1000, "p99_ms": percentile(lat, 0.99) * 1000}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mbytes", type=float, default=16)
    ap.add_argument("--quick", action="store_true", help="2 rounds of 4 MB")
    ap.add_argument("--only", default=",".join(CONTENDERS))
    ap.add_argument("--dials", type=int, default=0, help="also time N sequential secure dials")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.mbytes = 2, 4
    names = [n for n in args.only.split(",") if n]
    total = int(args.mbytes * 1e6)
    results: dict[str, list[float]] = {n: [] for n in names}
    ratios: list[float] = []
    fec_ratios: list[float] = []
    for r in range(args.rounds):
        row = {}
        for n in names:
            res = run_one(n, total)
            results[n].append(res["mbps"])
            row[n] = res["mbps"]
            print(f"round {r + 1} {n:15s} {res['mbps']:7.1f} MB/s  retrans {res['retrans']}  epoch {res['epoch']}")
        if "secure" in row and "compat-aes" in row:
            ratios.append(row["secure"] / row["compat-aes"])
        if "secure-fec" in row and "compat-aes-fec" in row:
            fec_ratios.append(row["secure-fec"] / row["compat-aes-fec"])
    print(f"\n{args.mbytes:g} MB per run, {args.rounds} rounds, medians:")
    for n in names:
        print(f"  {n:15s} {statistics.median(results[n]):7.1f} MB/s   (runs: "
              f"{', '.join(f'{v:.0f}' for v in results[n])})")
    if ratios:
        print(f"  secure / compat-aes, same round:         median {statistics.median(ratios):.2f}x "
              f"({', '.join(f'{v:.2f}' for v in ratios)})")
    if fec_ratios:
        print(f"  secure-fec / compat-aes-fec, same round: median {statistics.median(fec_ratios):.2f}x "
              f"({', '.join(f'{v:.2f}' for v in fec_ratios)})")
    if args.dials:
        d = run_dials(args.dials)
        print(f"  {args.dials} sequential secure dials (IKpsk2 + first round trip): {d['per_s']:.0f}/s, "
              f"p50 {d['p50_ms']:.2f} ms, p99 {d['p99_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
