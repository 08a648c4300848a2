"""kcprpc unary echo probe for calls under loss (issue 6, benchmark 3); the twin of linkemu's grpc_unary.py.

    python bench/rpc_loss.py server --host ADDR [--port 9300] [transport options]
    python bench/rpc_loss.py client --host PEER [--port 9300] [-n 2000] [--size 64] [transport options]

The server serves one method, ``bench.LossEcho/Echo`` (bytes in, the same bytes out). The client makes
``--warmup`` uncounted calls, then ``-n`` sequential calls (1 in flight) on one connection, and prints one
JSON line: latency percentiles p50/p90/p99/max/mean in ms (nearest rank, as grpc_unary.py), the error
count, the wall time, and the client's KCP counters (retransmissions, FEC recoveries, ...).

Transport options (both sides must agree on ``--crypt``/``--key``/``--fec``; set the ARQ knobs on both
sides, since the server retransmits the responses): ``--nodelay --interval --resend --nc`` (ikcp's
``nodelay()``; kcprpc's default is kcptun's fast3 = 1 10 2 1), ``--fec D/P``, ``--crypt NAME --key K``,
``--wnd SND/RCV``, ``--mtu``, ``--no-ack-nodelay``. Every run is bounded: ``--deadline`` per call and
``--max-seconds`` for the whole process.

Only ever point it at 127.0.0.1 or a linkemu namespace address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kcprpc  # noqa: E402


class LossEcho(kcprpc.Service, name="bench.LossEcho"):
    """Echo service for the loss benchmark."""

    async def Echo(self, data: bytes) -> bytes:
        """Return the request unchanged."""
        return data


def transport(a: argparse.Namespace) -> kcprpc.Transport:
    """The :class:`kcprpc.Transport` of both sides: compat mode with ``--crypt``, else secure
    (``--key`` its passphrase; none: anonymous), the FEC and the session options given."""
    opts: dict[str, Any] = {
        "nodelay": a.nodelay,
        "interval": a.interval,
        "resend": a.resend,
        "nc": a.nc,
        "ack_nodelay": not a.no_ack_nodelay,
        "loss_recovery": a.loss_recovery,
        "max_copies": a.max_copies,
    }
    if a.lead_copies is not None:
        opts["lead_copies"] = a.lead_copies if a.lead_copies == "auto" else int(a.lead_copies)
    if a.ack_delay is not None:
        opts["ack_delay"] = a.ack_delay
    if a.mtu:
        opts["mtu"] = a.mtu
    if a.wnd:
        snd, rcv = (int(x) for x in a.wnd.split("/"))
        opts["snd_wnd"], opts["rcv_wnd"] = snd, rcv
    fec = (0, 0)
    if a.fec and a.fec not in ("0", "0/0", "off"):
        d, p = (int(x) for x in a.fec.split("/"))
        fec = (d, p)
    wire: kcprpc.CompatWire | kcprpc.SecureWire
    if a.crypt:
        wire = kcprpc.CompatWire(crypt=a.crypt, key=a.key, fec=fec)
    else:
        wire = kcprpc.SecureWire(key=a.key, fec=fec)
    return kcprpc.Transport(wire, session=kcprpc.SessionConfig(**opts))


def describe(a: argparse.Namespace) -> str:
    """A short label of the transport configuration."""
    s = f"nodelay={a.nodelay},{a.interval},{a.resend},{a.nc}"
    if a.fec and a.fec not in ("0", "0/0", "off"):
        s += f" fec={a.fec}"
    if a.crypt:
        s += f" crypt={a.crypt}"
    if a.no_ack_nodelay:
        s += " ack_nodelay=0"
    s += f" recovery={a.loss_recovery}"
    if a.loss_recovery == "adaptive":
        s += f"/{a.max_copies}" + (f"+lead{a.lead_copies}" if a.lead_copies else "")
    return s


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile of a sorted list (the same rule as linkemu's grpc_unary.py)."""
    return xs[min(len(xs) - 1, round(p / 100.0 * (len(xs) - 1)))]


async def serve(a: argparse.Namespace) -> int:
    """Serve LossEcho until ``--max-seconds`` pass (or the process is terminated)."""
    server = kcprpc.Server([LossEcho()], a.host, a.port, transport=transport(a))
    host, port = await server.start()
    print(json.dumps({"listening": f"{host}:{port}", "config": describe(a)}), flush=True)
    try:
        await asyncio.wait_for(server.serve(), a.max_seconds)
    except TimeoutError:
        pass
    finally:
        await server.shutdown(grace=0.5)
    return 0


KEEP = (
    "out_pkts",
    "in_pkts",
    "out_segs",
    "in_segs",
    "retrans_segs",
    "fast_retrans_segs",
    "early_retrans_segs",
    "copy_segs",
    "lost_segs",
    "repeat_segs",
    "fec_recovered",
    "fec_parity_shards",
    "fec_errs",
    "fec_short_shards",
    "srtt",
    "rttvar",
    "rto",
)


def client_counters(client: kcprpc.Client) -> dict[str, int]:
    """The client connection's KCP counters and RTT figures kept in the report (``Client.transport_stats``)."""
    return {k: v for k, v in client.transport_stats().items() if k in KEEP}


async def client(a: argparse.Namespace) -> int:
    """Run the sequential calls and print one JSON line."""
    payload = b"x" * a.size
    lat: list[float] = []
    errors = 0
    first_error = ""
    stop_at = time.monotonic() + a.max_seconds
    config = kcprpc.ClientConfig(connect_timeout=a.connect_timeout)
    async with kcprpc.connect(a.host, a.port, transport=transport(a), config=config) as cl:
        stub = cl.stub(LossEcho, timeout=a.deadline)
        rto_max = srtt_max = rto_prev = 0
        trace: list[list[float]] = []
        t_all = time.perf_counter()
        for i in range(a.warmup + a.n):
            if time.monotonic() > stop_at:
                break
            t0 = time.perf_counter()
            try:
                r = await stub.Echo(payload)
                ok = r == payload
            except (TimeoutError, kcprpc.RpcError, ConnectionError) as e:
                ok = False
                first_error = first_error or f"{type(e).__name__}: {e}"
            dt = (time.perf_counter() - t0) * 1e3
            c = client_counters(cl)  # the engine's RTO as the call left it (an inflated RTO slows repairs)
            rto = c.get("rto", 0)
            if a.trace and (dt > a.trace or rto > 2 * max(rto_prev, 1)):
                trace.append([i - a.warmup, round(dt, 1), rto, c.get("srtt", 0), c.get("rttvar", 0)])
            rto_prev = rto
            rto_max = max(rto_max, rto)
            srtt_max = max(srtt_max, c.get("srtt", 0))
            if i >= a.warmup:
                if ok:
                    lat.append(dt)
                else:
                    errors += 1
        total = time.perf_counter() - t_all
        counters = client_counters(cl)
    out: dict[str, Any] = {
        "impl": "kcprpc",
        "config": describe(a),
        "n": len(lat),
        "size": a.size,
        "errors": errors,
        "total_s": round(total, 2),
    }
    if lat:
        s = sorted(lat)
        out.update(
            p50=round(pct(s, 50), 2),
            p90=round(pct(s, 90), 2),
            p99=round(pct(s, 99), 2),
            max=round(s[-1], 2),
            mean=round(sum(s) / len(s), 2),
        )
        if a.show_slow > 0:
            out["slow"] = [[i, round(x)] for i, x in enumerate(lat) if x > a.show_slow][:60]
    if a.trace:
        out["trace"] = trace[:200]  # [call, ms, rto, srtt, rttvar] for slow calls and RTO jumps
    if first_error:
        out["first_error"] = first_error[:200]
    counters.update(rto_max=rto_max, srtt_max=srtt_max)
    out["counters"] = counters
    print(json.dumps(out), flush=True)
    return 0 if lat else 1


def run(coro: Coroutine[Any, Any, int], loop: str) -> int:
    """Run on uvloop (kcprpc's default) or plain asyncio."""
    if loop == "uvloop":
        with contextlib.suppress(ImportError):
            import uvloop

            result: int = uvloop.run(coro)
            return result
    return asyncio.run(coro)


def main() -> int:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("server", "client"))
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=9300)
    ap.add_argument("-n", type=int, default=2000, help="counted sequential calls")
    ap.add_argument("--warmup", type=int, default=20, help="uncounted calls first")
    ap.add_argument("--size", type=int, default=64, help="payload bytes")
    ap.add_argument("--deadline", type=float, default=10.0, help="per-call timeout, s")
    ap.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="bound on the connect, s (30, as grpc_unary.py waits for its channel; under a burst "
        "counted in packets an idle link can stay lossy for many initiations)",
    )
    ap.add_argument("--max-seconds", type=float, default=1800.0, help="bound on the whole run, s")
    ap.add_argument("--show-slow", type=float, default=0.0, help="also list calls slower than this (ms)")
    ap.add_argument(
        "--trace",
        type=float,
        default=0.0,
        help="record [call, ms, rto, srtt, rttvar] for calls over this (ms)",
    )
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    g = ap.add_argument_group("transport (KCP) options")
    g.add_argument("--nodelay", type=int, default=1)
    g.add_argument("--interval", type=int, default=10, help="ms (kcp.SessionConfig allows 10..5000)")
    g.add_argument("--resend", type=int, default=2)
    g.add_argument("--nc", type=int, default=1)
    g.add_argument("--fec", default="", help="DATA/PARITY shards, e.g. 3/2 or 10/3 (default off)")
    g.add_argument("--crypt", default=None, help="cipher name, e.g. aes, salsa20 (default none)")
    g.add_argument("--key", default=None, help="passphrase for --crypt")
    g.add_argument("--wnd", default="", help="SND/RCV window in segments")
    g.add_argument("--mtu", type=int, default=0)
    g.add_argument("--no-ack-nodelay", action="store_true", help="ack at the next interval, not at once")
    g.add_argument("--loss-recovery", choices=("adaptive", "ikcp"), default="adaptive", help="small flights")
    g.add_argument("--max-copies", type=int, default=6, help="copies per recovery round at most")
    g.add_argument(
        "--lead-copies",
        default=None,
        help="spaced copies of every small flight: N or auto (SessionConfig's default)",
    )
    g.add_argument(
        "--ack-delay", type=int, default=None, help="ms a lone ack waits for data (SessionConfig's default)"
    )
    a = ap.parse_args()
    if a.n < 1 or a.size < 0:
        ap.error("-n must be >= 1 and --size >= 0")
    return run(serve(a) if a.mode == "server" else client(a), a.loop)


if __name__ == "__main__":
    sys.exit(main())
