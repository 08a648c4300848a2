"""Many RPC connections against one server process: server CPU, memory, call latency and errors.

What a user runs: one :class:`kcprpc.Server` process (default wire mode: secure, keyless;
``--wire key`` adds a passphrase, ``--wire compat`` runs kcp-go's wire without a cipher) and ``N``
:func:`kcprpc.connect` clients spread over ``--procs`` client processes, each client with its own
UDP socket, mux, heartbeats and RPC link. Every client makes one small unary call per second
(phases spread over the second); ``--idle`` clients only connect and then send their heartbeats.

Connects are ramped (``--connect-rate`` per second over all client processes, a bounded number
in flight) and every client makes one warm-up call before the window, so a connect storm does
not land in the measurement. Over the window (``--seconds``) it records the server's CPU time
(utime + stime from ``/proc/<pid>/stat``: 100 % is one core) and RSS, each call's latency on the
clients, failed calls, connections lost (heartbeat timeouts or a closed connection, counted by
``Client.on_disconnect``) and the reconnects that followed, and the client processes' CPU.

    python bench/rpc_sessions.py --quick                      # 500 connections, 5 s
    python bench/rpc_sessions.py --sessions 1000,2000,5000    # the issue's rows
    python bench/rpc_sessions.py --sessions 2000 --idle       # heartbeats only
    python bench/rpc_sessions.py --sessions 2000 --idle --settle 20   # idle, in steady state
    python bench/rpc_sessions.py --sessions 1000 --wire key   # secure mode with a passphrase

Client processes share the machine's cores with the server, so latencies include their
scheduling (each freezes its heap after connecting, so that its own full garbage collections stay
out of the latencies); read the figures as ratios against another tree run the same way
(bench/ab.py).

``KCPRPC_BENCH_PROFILE=FILE`` writes a cProfile of the server process over the measurement
window (not the connects) to ``FILE``, ``KCPRPC_BENCH_CLIENT_PROFILE=FILE`` one of the first client
process; ``KCPRPC_BENCH_DEBUG=1`` prints its CPU and garbage
collections every second (and the C clients' counts of their traffic).

``--client c`` runs the clients as ``bench/loadgen/rpc_load.c`` processes instead (compiled with
``cc`` and OpenSSL's libcrypto on first use, into the temp directory; it needs OpenSSL's headers,
Debian's ``libssl-dev``): each process holds its share of the connections, every one with its own
UDP socket on its own 127.0.0.x source address, and speaks what a ``kcprpc.connect`` client
speaks on the secure wire (the handshake with its RETRY cookie, transport packets, KCP with the
Python session's delayed acks, smux v2, HELLO/WELCOME, the calls, transport keepalives as
heartbeats, answers to the server's path MTU probes and probes of its own), so that the server
gets the same datagrams per connection for a fraction of the clients' CPU: on 2 cores the Python
clients take more CPU than the server from a few thousand connections on, and 10,000 cannot be
measured with them. Like the Python clients, they reconnect a lost connection (with a resume
claim) and fail the calls due while it is down; they do not speak ``--wire compat``.

The server gets the same datagrams from either client, but not grouped the same way in time: a
Python client process runs a thousand clients on one event loop, and the links it makes in one
loop turn share a heartbeat schedule for good, so their keepalives reach the server in bursts
that it reads in one batch; the C clients' arrive one by one, as independent devices' do. With
calls the two agree; idle, the server's cost per keepalive is higher with the C clients (the pure
build's cost is mostly per receive batch). ``--group-ms 25`` groups the C clients' heartbeats
about as the Python clients' were grouped on a 2-core machine, for comparisons with figures
measured with them.

    python bench/rpc_sessions.py --client c --sessions 5000,10000 --seconds 8
    python bench/rpc_sessions.py --client c --sessions 10000 --workers 2   # kcprpc.serve_workers

``--over ws`` or ``--over wt`` runs the Python clients over a browser's transport instead: the
server process also listens for WebSocket (``kcprpc.web.listen_websocket``) or WebTransport
(``kcprpc.web.listen_webtransport``, a development certificate it makes), and every client is
``kcprpc.web.connect_websocket`` or ``connect_webtransport`` (QUIC and TLS in Python):

    python bench/rpc_sessions.py --sessions 200,1000 --idle --settle 5 --over wt

``--workers N`` serves the same app from N processes on the one port (:func:`kcprpc.serve_workers`,
docs/workers.md); the server CPU is then theirs together, and the per-process counts (sessions,
collections) are not read.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import gc
import multiprocessing as mp
import os
import random
import resource
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _common import (
    BENCH_KEY,
    LoadgenProcess,
    compile_loadgen,
    end_run,
    gc_pauses,
    proc_cpu_s,
    proc_rss_mb,
    transport_for,
    udp_rcvbuf_errors,
    wait_ready,
)

import kcp
import kcprpc
from kcprpc import ClientConfig, ReconnectPolicy

PAYLOAD = b"x" * 32


class Sessions(kcprpc.Service, name="bench.Sessions"):
    """The benchmark service: one small unary method."""

    async def Echo(self, data: bytes) -> bytes:
        return data


def udp_socket_drops(port: int) -> int:
    """Datagrams the kernel dropped on the UDP socket bound to local ``port`` (/proc/net/udp)."""
    total = 0
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        with open(name) as f:
            next(f)
            for line in f:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port:
                    total += int(cols[-1])
    return total


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ------------------------------------------------------------------------------------------ server
def make_server(wire: str, coalesce_ms: int = 0) -> kcprpc.Server:
    """The measured server: the benchmark service on 127.0.0.1 (any port), in ``wire`` mode, its
    socket read with ``IOOptions.read_coalesce_ms=coalesce_ms`` (0, the default: off)."""
    transport = dataclasses.replace(transport_for(wire), io=kcprpc.IOOptions(read_coalesce_ms=coalesce_ms))
    return kcprpc.Server([Sessions()], "127.0.0.1", 0, transport=transport)


async def _listen_web(server: kcprpc.Server, over: str) -> Any:
    """``--over ws``: a WebSocket listener beside the server's KCP one, its URL; ``wt``: a
    WebTransport listener on a new development certificate, its URL and the certificate's hash."""
    from kcprpc.web import WebTransportOptions, listen_websocket, listen_webtransport
    from kcprpc.web.certs import make_dev_certificate

    if over == "ws":
        ws = await listen_websocket(server, "127.0.0.1", 0)
        return f"ws://127.0.0.1:{ws.address[1]}/kcprpc"
    dev = make_dev_certificate(days=3)
    cert, key = dev.write(Path(tempfile.mkdtemp(prefix="kcprpc-bench-wt-")))
    wt = await listen_webtransport(
        server, "127.0.0.1", 0, WebTransportOptions(certificate=cert, private_key=key)
    )
    return (wt.url, dev.sha256)


def _dial_for(over: str, web: Any, port: int, transport: Any, cfg: ClientConfig) -> kcprpc.Client:
    """A client of the server: ``kcprpc.connect`` to ``port``, or over the web listener ``web``."""
    if over == "ws":
        from kcprpc.web import connect_websocket

        return connect_websocket(web, config=cfg)
    if over == "wt":
        from kcprpc.web import connect_webtransport

        url, sha256 = web
        return connect_webtransport(url, certificate_hashes=[sha256], config=cfg)
    return kcprpc.connect("127.0.0.1", port, transport=transport, config=cfg)


def _server(ctl: Connection, wire: str, coalesce_ms: int, over: str = "kcp") -> None:
    import cProfile

    profiler = cProfile.Profile()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = make_server(wire, coalesce_ms)
        _host, port = await server.start()
        ctl.send(port)
        if over != "kcp":
            ctl.send(await _listen_web(server, over))
        done = loop.create_future()
        prof_file = os.environ.get("KCPRPC_BENCH_PROFILE")
        marks = 0

        def on_ctl() -> None:
            nonlocal marks
            cmd = ctl.recv()
            if cmd == "stop":
                loop.remove_reader(ctl.fileno())
                done.set_result(None)
                return
            marks += 1
            if prof_file:  # the window only: from the first mark to the second
                if marks == 1:
                    profiler.enable()
                elif marks == 2:
                    profiler.disable()
                    profiler.dump_stats(prof_file)
            st = server.stats
            ctl.send(
                {
                    "sessions": len(server.sessions),
                    "connections": st["connections"],
                    "gc": [g["collections"] for g in gc.get_stats()],
                }
            )

        loop.add_reader(ctl.fileno(), on_ctl)
        if os.environ.get("KCPRPC_BENCH_DEBUG"):
            _debug_ticks(loop, server)
        await done
        await server.shutdown(grace=0.5)

    kcp.run(main())


def _workers_server(ctl: Connection, wire: str, workers: int, coalesce_ms: int) -> None:
    """``--workers N``: the same app served by :func:`kcprpc.serve_workers` (N processes on one
    port); sends ``(port, worker pids)`` once they serve, answers the coordinator's marks with
    unknown counts (each worker has its own) and ends the workers on ``"stop"``."""
    import signal
    import threading

    def serve_ctl() -> None:
        while ctl.recv() != "stop":
            ctl.send({"sessions": -1, "connections": -1, "gc": [0, 0, 0]})
        os.kill(os.getpid(), signal.SIGTERM)  # serve_workers drains the workers and returns

    def on_ready(_app: kcprpc.Server, address: tuple[str, int], pids: list[int]) -> None:
        ctl.send((address[1], list(pids)))
        threading.Thread(target=serve_ctl, daemon=True).start()

    kcprpc.serve_workers(
        functools.partial(make_server, wire, coalesce_ms),
        workers,
        host="127.0.0.1",
        port=0,
        grace=0.5,
        on_ready=on_ready,
    )


def _debug_ticks(loop: asyncio.AbstractEventLoop, server: kcprpc.Server) -> None:
    """Print the server's CPU, garbage collections, datagrams per system call and timer wake-ups
    once a second (``KCPRPC_BENCH_DEBUG=1``)."""
    from kcp.stats import SNMP
    from kcp.timers import TimerHeap

    gc_t = gc_pauses()
    heap = TimerHeap.for_loop(loop)

    def counts() -> dict[str, float]:
        return {
            "cpu": _self_cpu(),
            "t": time.perf_counter(),
            "in": SNMP.in_pkts,
            "recvs": SNMP.recv_syscalls,
            "out": SNMP.out_pkts,
            "sends": SNMP.send_syscalls,
            "fired": heap.fired,
            "polled": heap.polled,
        }

    last = counts()
    # once: gc.get_freeze_count() walks the frozen objects' list (a third of an idle server's
    # CPU when it was printed every second)
    print(f"[server] frozen objects {gc.get_freeze_count()}", file=sys.stderr, flush=True)

    def tick() -> None:
        now = counts()
        d = {k: now[k] - last[k] for k in now}
        print(
            f"[server] cpu {100 * d['cpu'] / d['t']:5.1f} % "
            f"sessions {len(server.sessions)} gc {gc_t['n']:.0f} runs {gc_t['total'] * 1000:.0f} ms "
            f"max {gc_t['max'] * 1000:.0f} ms gens {[g['collections'] for g in gc.get_stats()]} counts {gc.get_count()} "
            f"| in {d['in']:.0f} in {d['recvs']:.0f} reads, out {d['out']:.0f} in {d['sends']:.0f} sends, "
            f"timers {d['fired']:.0f} fired, {d['polled']:.0f} input polls",
            file=sys.stderr,
            flush=True,
        )
        last.update(now)
        gc_t.update(total=0.0, n=0.0, max=0.0)
        loop.call_later(1.0, tick)

    tick()


# ------------------------------------------------------------------------------------------ clients
def _client(
    idx: int,
    port: int,
    n: int,
    wire: str,
    connect_rate: float,
    idle: bool,
    seconds: float,
    ready_q: Any,
    go: Any,
    result_q: Any,
    over: str = "kcp",
    web: Any = None,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        lost: dict[str, int] = {}
        cfg = ClientConfig(
            reconnect=ReconnectPolicy(initial=0.5, maximum=2.0, restore=False), connect_timeout=20.0
        )
        transport = transport_for(wire)
        clients: list[kcprpc.Client] = []
        connect_errors = 0
        gate = asyncio.Semaphore(64)  # connects in flight per process

        def on_disconnect(_c: kcprpc.Client, why: str) -> None:
            key = "heartbeat" if "heartbeat" in why else why.split(":")[0][:40]
            lost[key] = lost.get(key, 0) + 1

        async def open_one(at: float) -> None:
            nonlocal connect_errors
            await asyncio.sleep(max(0.0, at - loop.time()))
            async with gate:
                c = _dial_for(over, web, port, transport, cfg)
                c.on_disconnect = on_disconnect
                try:
                    await c.connect()
                    if not idle:
                        await c.stub(Sessions, timeout=20.0).Echo(PAYLOAD)
                except Exception:
                    connect_errors += 1
                    await c.close()
                    return
                clients.append(c)

        t0 = loop.time()
        await asyncio.gather(*(open_one(t0 + i / connect_rate) for i in range(n)))
        # a thousand clients in one process are not what is measured: keep their collector's
        # full collections out of the latencies (the server does as its GcPolicy says)
        gc.collect()
        gc.freeze()
        ready_q.put((idx, len(clients), connect_errors))
        await loop.run_in_executor(None, go.wait)
        lost.clear()
        prof_file = os.environ.get("KCPRPC_BENCH_CLIENT_PROFILE") if idx == 0 else None
        if prof_file:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        reconnects0 = sum(c.reconnects for c in clients)
        start = loop.time()
        cpu0 = _self_cpu()
        end = start + seconds
        lats: list[float] = []
        failed = 0
        rng = random.Random(idx)

        async def run(c: kcprpc.Client) -> None:
            nonlocal failed
            stub = c.stub(Sessions, timeout=5.0)
            t = start + rng.random()
            while t < end:
                await asyncio.sleep(t - loop.time())
                t0 = time.perf_counter()  # uvloop's loop.time() has 1 ms resolution
                try:
                    await stub.Echo(PAYLOAD)
                except Exception:
                    failed += 1
                else:
                    lats.append(time.perf_counter() - t0)
                t += 1.0

        if idle:
            await asyncio.sleep(seconds)
        else:
            await asyncio.gather(*(run(c) for c in clients))
        wall = loop.time() - start
        if prof_file:
            profiler.disable()
            profiler.dump_stats(prof_file)
        result_q.put(
            {
                "lats": lats,
                "failed": failed,
                "lost": dict(lost),
                "reconnects": sum(c.reconnects for c in clients) - reconnects0,
                "cpu": _self_cpu() - cpu0,
                "wall": wall,
            }
        )
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    kcp.run(main())


# ------------------------------------------------------------------------------------ C clients
CONNECTS_IN_FLIGHT = 64  # per client process, as the Python clients' gate


def loadgen() -> str:
    """The C load generator (bench/loadgen/rpc_load.c), compiled once per version with OpenSSL's
    libcrypto; a missing compiler or missing OpenSSL headers end the run saying what to install."""
    return compile_loadgen(
        "rpc_load", ("-lcrypto",), " OpenSSL's headers are missing (Debian: apt-get install libssl-dev)."
    )


class CClient(LoadgenProcess):
    """One C load-generator process (:class:`LoadgenProcess`) holding ``n`` connections."""

    def __init__(
        self,
        exe: str,
        idx: int,
        port: int,
        n: int,
        seconds: float,
        wire: str,
        idle: bool,
        connect_rate: float,
        ready_q: Any,
        result_q: Any,
        group_ms: int = 0,
    ) -> None:
        # each process's sockets on their own loopback address: one address has ~28,000 ports
        source = f"127.0.0.{idx + 1}"
        argv = [exe, "127.0.0.1", str(port), str(n), str(seconds), str(connect_rate), str(idx + 1), source]
        argv += ["--inflight", str(CONNECTS_IN_FLIGHT)]
        if idle:
            argv.append("--idle")
        if group_ms:
            argv += ["--group-ms", str(group_ms)]
        if wire == "key":
            argv += ["--key", BENCH_KEY]
        if os.environ.get("KCPRPC_BENCH_DEBUG"):
            argv.append("--stats")  # its traffic's counts on stderr
        super().__init__(argv, idx, ready_q, result_q)

    def parse(self, word: str, rest: list[str], idx: int, ready_q: Any, result_q: Any) -> None:
        if word == "ready":
            ready_q.put((idx, int(rest[0]), int(rest[1])))
        elif word == "result":
            failed, cpu, wall, reconnects = int(rest[0]), float(rest[1]), float(rest[2]), int(rest[3])
            why, count = rest[4], int(rest[5])
            lost = {} if why == "-" else {k: int(v) for k, v in (x.split(":") for x in why.split(","))}
            lats = [int(x) / 1e6 for x in rest[6 : 6 + count]]
            result_q.put(
                {
                    "lats": lats,
                    "failed": failed,
                    "lost": lost,
                    "reconnects": reconnects,
                    "cpu": cpu,
                    "wall": wall,
                }
            )


# ------------------------------------------------------------------------------------- coordinator
def measure(
    n: int,
    procs: int,
    seconds: float,
    wire: str,
    idle: bool,
    connect_rate: float,
    settle: float = 1.0,
    client: str = "python",
    group_ms: int = 0,
    workers: int = 1,
    coalesce_ms: int = 0,
    over: str = "kcp",
) -> dict[str, Any]:
    """One run with ``n`` connections; returns the server's CPU %, RSS, call latency and errors
    (``workers`` > 1: the server's N worker processes together, :func:`kcprpc.serve_workers`;
    ``over``: the Python clients' transport, kcp, ws or wt).
    ``client``: ``"python"`` (:func:`kcprpc.connect` clients) or ``"c"`` (:class:`CClient`, whose
    connections made within one ``group_ms`` slot share a heartbeat schedule when it is set)."""
    exe = loadgen() if client == "c" else ""  # compiled before the server starts: a failure ends the run here
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    if workers > 1:
        server = ctx.Process(target=_workers_server, args=(child, wire, workers, coalesce_ms))
    else:
        server = ctx.Process(target=_server, args=(child, wire, coalesce_ms, over), daemon=True)
    server.start()
    if not parent.poll(30):
        raise RuntimeError("the server did not start")
    assert server.pid is not None
    port, pids = parent.recv() if workers > 1 else (parent.recv(), [server.pid])
    web = parent.recv() if over != "kcp" else None  # the web listener's URL (and hash)
    ready_q: Any = ctx.Queue()
    result_q: Any = ctx.Queue()
    go = ctx.Event()
    per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    clients: list[Any] = (
        [
            CClient(
                exe, i, port, per[i], seconds, wire, idle, connect_rate / procs, ready_q, result_q, group_ms
            )
            for i in range(procs)
        ]
        if client == "c"
        else [
            ctx.Process(
                target=_client,
                args=(
                    i,
                    port,
                    per[i],
                    wire,
                    connect_rate / procs,
                    idle,
                    seconds,
                    ready_q,
                    go,
                    result_q,
                    over,
                    web,
                ),
                daemon=True,
            )
            for i in range(procs)
        ]
    )
    t_setup = time.perf_counter()
    for c in clients:
        c.start()
    ready = wait_ready(ready_q, clients, [server], 60 + 3 * n / connect_rate)
    setup = time.perf_counter() - t_setup
    time.sleep(settle)  # let the last handshakes' work settle (and, idle, the connects' after-effects)
    parent.send("mark")
    a = parent.recv()
    cpu_a, wall_a, rcvbuf_a = sum(map(proc_cpu_s, pids)), time.perf_counter(), udp_rcvbuf_errors()
    drops_a = udp_socket_drops(port)
    go.set()
    for c in clients:
        if isinstance(c, CClient):
            c.go()
    time.sleep(seconds)
    cpu_b, wall_b, rcvbuf_b = sum(map(proc_cpu_s, pids)), time.perf_counter(), udp_rcvbuf_errors()
    drops_b = udp_socket_drops(port)
    rss = sum(map(proc_rss_mb, pids))
    parent.send("mark")
    b = parent.recv()
    results, lats, q = end_run(parent, result_q, clients, server)
    lost: dict[str, int] = {}
    for r in results:
        for k, v in r["lost"].items():
            lost[k] = lost.get(k, 0) + v
    return {
        "sessions": b["sessions"],
        "connected": sum(r[1] for r in ready),
        "connect_errors": sum(r[2] for r in ready),
        "cpu_pct": 100 * (cpu_b - cpu_a) / (wall_b - wall_a),
        "rss_mb": rss,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": (lats[-1] if lats else 0.0) * 1000,
        "calls": len(lats),
        "failed": sum(r["failed"] for r in results),
        "lost": lost,
        "reconnects": sum(r["reconnects"] for r in results),
        "client_cpu_pct": 100 * sum(r["cpu"] / r["wall"] for r in results),
        "setup_s": setup,
        "gc_full": b["gc"][2] - a["gc"][2],
        "rcvbuf_errors": rcvbuf_b - rcvbuf_a,
        "server_drops": drops_b - drops_a,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the requested connection counts and print one line each."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="500 connections for 5 s")
    p.add_argument("--sessions", default="1000,2000", help="comma-separated connection counts")
    p.add_argument("--procs", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--seconds", type=float, default=10.0, help="measurement window (default 10)")
    p.add_argument("--wire", choices=("secure", "key", "compat"), default="secure", help="wire mode")
    p.add_argument("--idle", action="store_true", help="no calls: connect, then heartbeats only")
    p.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds between the last connect and the window (default 1; idle steady state: 20, past "
        "the heartbeats' stretching and the path MTU search's first confirmation, 15 s after connect)",
    )
    p.add_argument("--connect-rate", type=float, default=400.0, help="connects per second, all processes")
    p.add_argument(
        "--client",
        choices=("python", "c"),
        default="python",
        help="the clients: kcprpc.connect in Python (default), or the C load generator "
        "(bench/loadgen/rpc_load.c: the same wire for a fraction of the CPU; needs cc and libssl-dev)",
    )
    p.add_argument(
        "--group-ms",
        type=int,
        default=0,
        help="--client c: connections made within one such slot share a heartbeat schedule, as the Python "
        "clients' links made in one event-loop turn do, so that their keepalives reach the server in one "
        "batch (default 0: each its own, as independent devices)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server worker processes on the one port (kcprpc.serve_workers; default 1: one process); "
        "the server CPU is theirs together (one core = 100 %%)",
    )
    p.add_argument(
        "--coalesce-ms",
        default="0",
        help="the server's IOOptions.read_coalesce_ms, comma-separated to compare several in one run "
        "(each connection count runs each value, alternated; default 0: read at each arrival)",
    )
    p.add_argument(
        "--over",
        choices=("kcp", "ws", "wt"),
        default="kcp",
        help="the Python clients' transport: KCP (default), or a WebSocket or WebTransport listener of "
        "the same server (kcprpc.web)",
    )
    args = p.parse_args(argv)
    coalesce = [int(x) for x in args.coalesce_ms.split(",")]
    if args.client == "c" and args.wire == "compat":
        p.error("--client c speaks the secure wire only (--wire secure or key), not --wire compat")
    if args.over != "kcp" and (args.client == "c" or args.workers > 1):
        p.error("--over ws/wt: Python clients (--client python) and one server process (--workers 1)")
    counts = [500] if args.quick else [int(x) for x in args.sessions.split(",")]
    seconds = 5.0 if args.quick else args.seconds
    mode = "idle (heartbeats only)" if args.idle else "1 unary call/s per connection"
    print(
        f"pid {os.getpid()}: wire {args.wire} over {args.over}, {args.procs} client processes ({args.client}), {seconds:g} s "
        f"window, {mode}, {args.workers} server process(es)",
        flush=True,
    )
    for n, coalesce_ms in [(n, c) for n in counts for c in coalesce]:
        r = measure(
            n,
            args.procs,
            seconds,
            args.wire,
            args.idle,
            args.connect_rate,
            args.settle,
            args.client,
            args.group_ms,
            args.workers,
            coalesce_ms,
            args.over,
        )
        lost = sum(r["lost"].values())
        print(
            f"{n:6d} connections, read coalescing {coalesce_ms} ms: server CPU {r['cpu_pct']:5.1f} % of one core, RSS {r['rss_mb']:6.1f} MB, "
            f"call p50 {r['p50_ms']:6.2f} ms p99 {r['p99_ms']:7.2f} ms max {r['max_ms']:7.1f} ms, "
            f"{r['calls']} calls, {r['failed']} failed, {lost} lost {r['lost'] or ''} "
            f"{r['reconnects']} reconnects (connected {r['connected']}, {r['connect_errors']} connect errors, "
            f"setup {r['setup_s']:.1f} s, clients' CPU {r['client_cpu_pct']:.0f} %, server full GCs "
            f"{r['gc_full']}, UDP drops: server socket {r['server_drops']}, all {r['rcvbuf_errors']})",
            flush=True,
        )


if __name__ == "__main__":
    main()
