"""Bulk transfer over a rate-limited, lossy linkemu link (issue 15): TCP bbr vs KCP ("ikcp" and
"bbr" congestion control), alternated on the same link, with throughput and queueing delay.
``node-bbr`` and ``node-ikcp`` are the TypeScript client's session (clients/typescript/bench/bulk.ts)
with each congestion control. ``kcp-*`` and ``node-*`` run compat mode (no cipher, as kcp-go's
peers); ``secure-bbr`` is the same Python session in secure mode (a passphrase, every feature its
handshake offers: repeated acks among them), ``secure-bbr-noreack`` the same without repeated acks
(``SecureConfig(ack_repeat=False)``: docs/tuning.md "Repeated acks"); ``node-secure-bbr`` and
``node-secure-bbr-noreack`` are the TypeScript client's in the same two ways.

    python bench/bulk_linkemu.py run                      # 10 Mbit/s, 20 ms one way, 1 % and 0 % loss, 10 s
    python bench/bulk_linkemu.py run --seconds 30 --rounds 3 --losses "1 0 5" --queue 200
    python bench/bulk_linkemu.py run --losses "1" --seconds 20 --contenders "kcp-bbr+tcp-bbr kcp-bbr+tcp-cubic"
    python bench/bulk_linkemu.py run --losses "1 5" --contenders "tcp-bbr node-ikcp node-bbr kcp-bbr"
    python bench/bulk_linkemu.py run --losses "5 10" --contenders "tcp-bbr secure-bbr-noreack secure-bbr"

Each run sends for ``--seconds`` from side a to side b while a separate process pings b over UDP
every 10 ms (64 B, timestamped, echoed). The pings share the bottleneck's FIFO queue with the bulk
flow, so ``RTT - base RTT`` is the queueing delay the flow causes (the same measure for TCP and
KCP); the base RTT is the minimum over 1 s of pings before the flow starts. Throughput: TCP's is
``tcp_bulk.py``'s (bytes the server counted, connect to its answer); KCP's is the bytes the peer
acknowledged by the end of the run (written minus the send backlog), over the run. A contender
such as ``kcp-bbr+tcp-bbr`` runs both senders at once through the same bottleneck (fairness): the
table's throughput is their sum, and each one's share is printed below it.

Needs root; uses the linkemu instance ``i15cc`` (always brought down on exit). The roles
``sink``, ``send`` and ``ping`` are what ``run`` starts inside the namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LE = str(ROOT / ".." / "shared" / "tools" / "linkemu" / "linkemu")
TCP_BULK = str(ROOT / ".." / "shared" / "tools" / "linkemu" / "bench" / "tcp_bulk.py")
NAME = "i15cc"
B = "10.77.0.2"
KCP_PORT, ECHO_PORT, TCP_PORT = 9400, 9401, 9402
SECURE_PORT = 9420  # the sink's secure-mode listener (TCP servers take 9402 and up)
PSK = "bulk-linkemu"  # the secure contenders' passphrase
BULK_JS = ROOT / "clients" / "typescript" / "dist" / "bench" / "bulk.js"


# ------------------------------------------------------------------------------------- roles
def _session_config(args: argparse.Namespace, congestion: Any) -> Any:
    import kcp

    return kcp.SessionConfig(
        mtu=args.mtu,
        snd_wnd=args.wnd or kcp.SessionConfig().snd_wnd,
        rcv_wnd=args.wnd or kcp.SessionConfig().rcv_wnd,
        read_buffer=4 << 20,
        congestion=congestion,
        idle_timeout=30.0,
    )


async def _sink(args: argparse.Namespace) -> None:
    import kcp

    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.t.sendto(data, addr)

    await loop.create_datagram_endpoint(Echo, local_addr=(args.host, ECHO_PORT))

    async def drain(s: Any) -> None:
        while await s.read(1 << 20):
            pass

    tasks: set[asyncio.Task[None]] = set()

    def accepted(s: Any) -> None:
        t = loop.create_task(drain(s))
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    cfg = _session_config(args, "ikcp")
    async with (
        await kcp.listen(args.host, KCP_PORT, session=cfg, on_accept=accepted),
        await kcp.listen(args.host, SECURE_PORT, kcp.SecureWire(key=PSK), session=cfg, on_accept=accepted),
    ):
        await asyncio.sleep(args.max_seconds)


async def _send(args: argparse.Namespace) -> None:
    import kcp
    from kcp.secure import SecureConfig

    if args.wire == "compat":
        wire: Any = kcp.CompatWire()
    else:  # secure; "secure-noreack": without repeated acks
        wire = kcp.SecureWire(key=PSK, config=SecureConfig(ack_repeat=args.wire == "secure"))
    s = await kcp.dial(args.host, args.port, wire, session=_session_config(args, args.congestion))
    buf = b"\0" * 65536
    written = 0
    t0 = time.perf_counter()
    end = t0 + args.seconds

    async def trace() -> None:
        cc = s.congestion_controller
        while cc is not None and time.perf_counter() < end:
            e = s.engine
            print(
                f"{time.perf_counter() - t0:6.3f}s {cc.state.value:9} bw {cc.bw * 8 / 1000:5.2f} Mbit/s "
                f"min_rtt {cc.min_rtt} srtt {e.rx_srtt} cwnd {cc.cwnd} gain {cc.pacing_gain:.2f} "
                f"inflight {(e.snd_nxt - e.snd_una) & 0xFFFFFFFF} "
                f"retrans {s.stats.get('retrans_segs', 0)} lost {s.stats.get('lost_segs', 0)}",
                file=sys.stderr,
            )
            await asyncio.sleep(0.02 if time.perf_counter() - t0 < 0.6 else 0.25)

    tracer = asyncio.ensure_future(trace()) if args.trace else None
    while time.perf_counter() < end:
        s.write(buf)
        written += len(buf)
        await s.drain()
    if tracer is not None:
        tracer.cancel()
    secs = time.perf_counter() - t0
    delivered = written - s.send_backlog()
    st = s.stats
    print(
        json.dumps(
            {
                "mbit": delivered * 8 / secs / 1e6,
                "retrans": st.get("retrans_segs", 0),
                "rto_retrans": st.get("lost_segs", 0),
                "out_segs": st.get("out_segs", 0),
                "srtt": s.engine.rx_srtt,
                "reacks_useful": st.get("reacks_useful", 0),
            }
        )
    )
    s.abort()


def _ping(args: argparse.Namespace) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((args.host, ECHO_PORT))
    sock.setblocking(False)
    rtts: list[float] = []
    t_end = time.perf_counter() + args.seconds
    nxt = time.perf_counter()
    seq = 0  # pings sent
    pad = b"\0" * 48

    def read_echoes() -> None:
        """Every echo waiting on the socket: its RTT from the timestamp it carries."""
        try:
            while True:
                d = sock.recv(256)
                rtts.append((time.perf_counter_ns() - int.from_bytes(d[8:16], "big")) / 1e6)
        except BlockingIOError:
            pass

    while True:
        now = time.perf_counter()
        if now >= t_end:
            break
        if now >= nxt:
            sock.send(seq.to_bytes(8, "big") + time.perf_counter_ns().to_bytes(8, "big") + pad)
            seq += 1
            nxt += 0.01
        read_echoes()
        time.sleep(max(0.0, min(0.001, nxt - time.perf_counter())))
    t_end += 0.5  # the last pings' echoes
    while time.perf_counter() < t_end:
        read_echoes()
        time.sleep(0.001)
    print(json.dumps({"rtts": rtts, "sent": seq}))


# ------------------------------------------------------------------------------------- driver
def _le(*a: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LE, "--name", NAME, *a], check=check, capture_output=True, text=True)


def _exec_a(cmd: list[str], timeout: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [LE, "--name", NAME, "exec", "a", "--", "timeout", str(int(timeout)), *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def _start(args: argparse.Namespace, contender: str, port: int = TCP_PORT) -> subprocess.Popen[str]:
    """One sender on side a: ``tcp-<cc>`` (tcp_bulk.py with that Linux congestion control, to
    the server on ``port``), ``kcp-<congestion>`` (this script's ``send`` role), ``secure-bbr`` or
    ``secure-bbr-noreack`` (the same in secure mode) or ``node-<congestion>`` and
    ``node-secure-bbr[-noreack]`` (the TypeScript client's bulk.ts, the same roles in Node)."""
    py = sys.executable
    kind, cc = contender.split("-", 1)
    if kind == "tcp":
        cmd = [
            py,
            TCP_BULK,
            "client",
            "--host",
            B,
            "--port",
            str(port),
            "--seconds",
            str(args.seconds),
            "--cc",
            cc,
        ]
        return _exec_a(cmd, args.seconds + 120)
    secure = kind == "secure" or cc.startswith("secure-")
    wire = "secure" + ("-noreack" if cc.endswith("-noreack") else "") if secure else "compat"
    cc = cc.removeprefix("secure-").removesuffix("-noreack")
    if kind == "node":
        role = ["node", str(BULK_JS), "--wire", wire]
    else:
        role = [py, str(Path(__file__).resolve()), "send", "--wire", wire]
    kport = SECURE_PORT if secure else KCP_PORT
    cmd = [*role, "--host", B, "--port", str(kport), "--seconds", str(args.seconds), "--congestion", cc]
    return _exec_a([*cmd, "--wnd", str(args.wnd), "--mtu", str(args.mtu)], args.seconds + 60)


def _finish(args: argparse.Namespace, contender: str, p: subprocess.Popen[str]) -> dict[str, Any]:
    """The sender's result: ``mbit``, and for KCP its retransmission counters."""
    out, err = p.communicate(timeout=args.seconds + 150)
    if contender.startswith("tcp-"):
        try:
            return {"mbit": float(out.split("=")[1].split("Mbit")[0])}
        except (IndexError, ValueError):
            raise SystemExit(f"tcp_bulk failed: {out} {err}") from None
    try:
        res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return res
    except (IndexError, ValueError):
        raise SystemExit(f"kcp sender failed: {out} {err}") from None


def _one(args: argparse.Namespace, contender: str) -> dict[str, Any]:
    """One measured run. ``contender`` is one sender, or several joined by ``+`` that share the
    bottleneck at the same time (e.g. ``kcp-bbr+tcp-bbr``): then ``mbit`` is their sum, and each
    one's throughput and share of the sum are reported too."""
    py = sys.executable
    me = str(Path(__file__).resolve())
    base = _exec_a([py, me, "ping", "--host", B, "--seconds", "1"], 30)
    out, _ = base.communicate(timeout=40)
    base_rtt = min(json.loads(out)["rtts"])
    pinger = _exec_a([py, me, "ping", "--host", B, "--seconds", str(args.seconds)], args.seconds + 30)
    parts = contender.split("+")
    # each TCP flow has its own server (tcp_bulk.py serves one client at a time)
    ports = [TCP_PORT + sum(p.startswith("tcp-") for p in parts[:i]) for i in range(len(parts))]
    procs = [_start(args, c, port) for c, port in zip(parts, ports, strict=True)]
    results = [_finish(args, c, p) for c, p in zip(parts, procs, strict=True)]
    if len(parts) == 1:
        extra = results[0]
        mbit = extra.pop("mbit")
    else:
        mbit = sum(r["mbit"] for r in results)
        extra = {}
        for c, r in zip(parts, results, strict=True):
            extra[f"mbit {c}"] = r["mbit"]
            extra[f"share {c}"] = r["mbit"] / mbit if mbit else float("nan")
    pout, _ = pinger.communicate(timeout=args.seconds + 60)
    pr = json.loads(pout)
    q = [r - base_rtt for r in pr["rtts"]]
    return {
        "contender": contender,
        "mbit": mbit,
        "base_rtt": base_rtt,
        "q50": _pct(q, 0.5),
        "q99": _pct(q, 0.99),
        "qmax": max(q) if q else float("nan"),
        "ping_lost": 1 - len(pr["rtts"]) / max(pr["sent"], 1),
        **extra,
    }


def _run(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise SystemExit("needs root (linkemu)")
    py = sys.executable
    me = str(Path(__file__).resolve())
    contenders = args.contenders.split()
    if any(p.startswith("node-") for c in contenders for p in c.split("+")):
        from ts_client import build  # (bench/: compiles the TypeScript package if it is stale)

        build()
    _le("down", check=False)
    servers: list[subprocess.Popen[Any]] = []
    try:
        for loss in args.losses.split():
            _le("down", check=False)
            _le(
                "up",
                "--rate",
                str(args.rate),
                "--delay",
                str(args.delay),
                "--loss",
                loss,
                "--queue",
                str(args.queue),
                "--seed",
                str(args.seed),
            )
            limit = args.seconds * 4 * args.rounds * len(contenders) + 300
            ntcp = max((sum(p.startswith("tcp-") for p in c.split("+")) for c in contenders), default=0)
            for cmd in (
                [
                    py,
                    me,
                    "sink",
                    "--host",
                    B,
                    "--wnd",
                    str(args.wnd),
                    "--mtu",
                    str(args.mtu),
                    "--max-seconds",
                    str(limit),
                ],
                *(
                    [
                        py,
                        TCP_BULK,
                        "server",
                        "--host",
                        B,
                        "--port",
                        str(TCP_PORT + i),
                        "--max-seconds",
                        str(limit),
                    ]
                    for i in range(ntcp)
                ),
            ):
                servers.append(
                    subprocess.Popen(
                        [LE, "--name", NAME, "exec", "b", "--", "timeout", str(limit + 10), *cmd],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            time.sleep(1.5)
            rows: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
            for r in range(args.rounds):
                for c in contenders:
                    res = _one(args, c)
                    rows[c].append(res)
                    print(f"# loss {loss} round {r + 1}: {json.dumps(res)}", flush=True)
            print(
                f"\nrate {args.rate} Mbit/s, delay {args.delay} ms one way, loss {loss} %, queue "
                f"{args.queue} ms, {args.seconds:g} s x {args.rounds} rounds (medians)"
            )
            print("| contender | Mbit/s | queue p50 ms | queue p99 ms | queue max ms | base RTT ms |")
            print("| --- | --- | --- | --- | --- | --- |")
            for c in contenders:
                m = {
                    k: statistics.median(x[k] for x in rows[c])
                    for k in ("mbit", "q50", "q99", "qmax", "base_rtt")
                }
                print(
                    f"| {c} | {m['mbit']:.2f} | {m['q50']:.1f} | {m['q99']:.1f} | {m['qmax']:.1f} "
                    f"| {m['base_rtt']:.1f} |"
                )
            for c in contenders:
                if "+" in c:
                    print(f"shared bottleneck, {c}, per round:")
                    for x in rows[c]:
                        print(
                            "   "
                            + ", ".join(
                                f"{p} {x[f'mbit {p}']:.2f} Mbit/s ({100 * x[f'share {p}']:.0f} %)"
                                for p in c.split("+")
                            )
                        )
            print(flush=True)
            for s in servers:
                s.terminate()
                s.wait(10)
            servers.clear()
    finally:
        for s in servers:
            s.kill()
        _le("down", check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", choices=("run", "sink", "send", "ping"))
    ap.add_argument("--host", default=B)
    ap.add_argument("--port", type=int, default=KCP_PORT, help="send: the sink's port")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument("--congestion", default="bbr", choices=("ikcp", "bbr"))
    ap.add_argument(
        "--wire", default="compat", choices=("compat", "secure", "secure-noreack"), help="send: the wire mode"
    )
    ap.add_argument("--wnd", type=int, default=0, help="KCP send/receive windows (segments; 0: the default)")
    ap.add_argument(
        "--mtu",
        type=int,
        default=1400,
        help="KCP mtu (UDP payload); 1472 fills a 1500-byte packet as TCP does",
    )
    ap.add_argument("--rate", type=float, default=10.0, help="bottleneck, Mbit/s")
    ap.add_argument("--delay", type=int, default=20, help="one-way delay, ms")
    ap.add_argument("--queue", type=int, default=50, help="bottleneck queue, ms (tail drop)")
    ap.add_argument("--losses", default="1 0", help="loss %% per direction, one link per value")
    ap.add_argument("--trace", action="store_true", help="send: print the controller's state every 0.25 s")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--contenders",
        default="tcp-bbr kcp-ikcp kcp-bbr",
        help="senders run one after the other: tcp-<linux cc>, kcp-<congestion>, secure-bbr[-noreack], "
        "node-<congestion> or node-secure-bbr[-noreack]; several joined by + "
        "share the bottleneck at the same time (e.g. kcp-bbr+tcp-bbr, kcp-bbr+tcp-cubic, tcp-bbr+tcp-cubic)",
    )
    args = ap.parse_args()
    if args.role == "run":
        _run(args)
    elif args.role == "sink":
        asyncio.run(_sink(args))
    elif args.role == "send":
        asyncio.run(_send(args))
    else:
        _ping(args)


if __name__ == "__main__":
    main()
