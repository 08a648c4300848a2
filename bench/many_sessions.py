"""Many concurrent KCP sessions against one server process: CPU, memory and echo latency.

One server process runs :func:`kcp.listen` with an echo handler. ``--procs`` client processes
open ``N`` sessions between them (each :func:`kcp.dial` has its own UDP socket, as kcp-go's
does); every session sends a 32-byte message once per second (phases spread over the second)
and waits for the echo. After a warm-up exchange on every session, the measurement window
(``--seconds``) records the server's CPU time (``resource.getrusage``) and RSS (``/proc``), and
each echo's latency on the clients.

    python bench/many_sessions.py --quick            # 1,000 sessions, 5 s
    python bench/many_sessions.py --sessions 5000    # the issue's goal: < 50 % CPU, p99 < 50 ms
    python bench/many_sessions.py --sessions 1000,5000,10000,20000

Client processes share the machine with the server, so latencies include their scheduling.
``--client c`` runs the clients as ``bench/loadgen/kcp_echo_load.c`` processes instead (compiled
with ``cc`` on first use): plain KCP segments from a stop-and-wait C sender, a few percent of a
core for 20,000 sessions where the Python clients take more than both cores, so that the server
has a core to itself and the figures are the server's.

    python bench/many_sessions.py --client c --sessions 10000,20000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import resource
import sys
import time
from typing import Any

from _common import LoadgenProcess, compile_loadgen, end_run, gc_pauses, wait_ready

import kcp
from kcp.session import KCPSession

MSG = 32
WARM_BATCH = 500  # sessions whose first echo is in flight at once, per client process


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _server(port_q: Any, ctl: Any, max_sessions: int) -> None:
    async def echo(s: KCPSession) -> None:
        with contextlib.suppress(kcp.KCPError):  # a session that died (an overload run) just ends
            while True:
                data = await s.read(4096)
                if not data:
                    return
                s.write(data)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        lis = await kcp.listen(
            "127.0.0.1",
            0,
            session=kcp.SessionConfig(idle_timeout=120),
            on_accept=echo,
            max_sessions=max_sessions,
            backlog=max_sessions,
        )
        port_q.put(lis.address[1])
        done = loop.create_future()

        def on_ctl() -> None:
            cmd = ctl.recv()
            if cmd == "stop":
                loop.remove_reader(ctl.fileno())
                done.set_result(None)
                return
            if cmd == "freeze":
                import gc

                gc.collect()
                gc.freeze()  # long-lived sessions leave the collector's scans
                ctl.send(None)
                return
            st = lis.stats
            snap = kcp.snmp()
            st.update({k: snap[k] for k in ("retrans_segs", "lost_segs", "fast_retrans_segs", "in_segs")})
            ctl.send(
                {"cpu": _cpu(), "wall": time.perf_counter(), "rss": _rss_mb(), "sessions": len(lis), **st}
            )

        loop.add_reader(ctl.fileno(), on_ctl)
        if os.environ.get("KCP_BENCH_DEBUG"):
            import gc

            gc_t = gc_pauses()
            last = {"cpu": _cpu(), "t": time.perf_counter(), "in": 0, "calls": 0, "fired": 0}
            heap = lis.endpoint.timers

            def tick() -> None:
                st = lis.stats
                now = time.perf_counter()
                print(
                    f"[server] cpu {100 * (_cpu() - last['cpu']) / (now - last['t']):5.1f} % "
                    f"in {st['in_pkts'] - last['in']} calls {st['recv_syscalls'] - last['calls']} "
                    f"timer wakes {heap.fired - last['fired']} heap {len(heap)} tx {len(lis.endpoint.tx)} "
                    f"gc {gc_t['n']:.0f} runs {gc_t['total'] * 1000:.0f} ms max {gc_t['max'] * 1000:.0f} ms "
                    f"gens {[g['collections'] for g in gc.get_stats()]} counts {gc.get_count()}",
                    file=sys.stderr,
                    flush=True,
                )
                last.update(cpu=_cpu(), t=now, fired=heap.fired, calls=st["recv_syscalls"])
                last["in"] = st["in_pkts"]
                gc_t.update(total=0.0, n=0, max=0.0)
                loop.call_later(1.0, tick)

            tick()
        await done
        lis.close()

    if os.environ.get("KCP_BENCH_PROFILE"):
        import cProfile

        cProfile.runctx("kcp.run(main())", globals(), locals(), os.environ["KCP_BENCH_PROFILE"])
    else:
        kcp.run(main())


def _client(idx: int, port: int, n: int, ready_q: Any, go: Any, seconds: float, result_q: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sessions = [
            await kcp.dial("127.0.0.1", port, session=kcp.SessionConfig(idle_timeout=120)) for _ in range(n)
        ]
        rng = random.Random(idx)

        async def warm(s: KCPSession) -> None:
            s.write(bytes(MSG))
            await s.readexactly(MSG)

        # a first echo on every session, WARM_BATCH at a time: all at once would overrun the server's
        # socket at 20,000 sessions, and the losses' retransmissions would stretch the setup
        for i in range(0, len(sessions), WARM_BATCH):
            await asyncio.wait_for(asyncio.gather(*(warm(s) for s in sessions[i : i + WARM_BATCH])), 60)
        ready_q.put(idx)
        await loop.run_in_executor(None, go.wait)
        start = loop.time()
        cpu0 = _cpu()
        end = start + seconds
        lats: list[float] = []
        errors = 0

        async def run(s: KCPSession) -> None:
            nonlocal errors
            t = start + rng.random()
            while True:
                if t >= end:
                    return
                await asyncio.sleep(t - loop.time())
                t0 = time.perf_counter()  # uvloop's loop.time() has 1 ms resolution
                s.write(t0.hex().encode().ljust(MSG)[:MSG])
                try:
                    await asyncio.wait_for(s.readexactly(MSG), 5)
                except (TimeoutError, asyncio.IncompleteReadError, kcp.KCPError):
                    errors += 1
                    return
                lats.append(time.perf_counter() - t0)
                t += 1.0

        await asyncio.gather(*(run(s) for s in sessions))
        result_q.put({"lats": lats, "errors": errors, "cpu": _cpu() - cpu0, "wall": loop.time() - start})
        for s in sessions:
            s.abort()

    kcp.run(main())


def loadgen() -> str:
    """The C load generator (bench/loadgen/kcp_echo_load.c), compiled once per version."""
    return compile_loadgen("kcp_echo_load")


class CClient(LoadgenProcess):
    """One C load-generator process (:class:`LoadgenProcess`) holding ``n`` sessions."""

    def __init__(
        self, exe: str, idx: int, port: int, n: int, seconds: float, ready_q: Any, result_q: Any
    ) -> None:
        # each process's sockets on their own loopback address: one address has ~28,000 ports
        source = f"127.0.0.{idx + 1}"
        argv = [exe, "127.0.0.1", str(port), str(n), str(seconds), str(WARM_BATCH), str(idx + 1), source]
        super().__init__(argv, idx, ready_q, result_q)

    def parse(self, word: str, rest: list[str], idx: int, ready_q: Any, result_q: Any) -> None:
        if word == "ready":
            ready_q.put(idx)
        elif word == "result":
            errors, cpu, wall, count = int(rest[0]), float(rest[1]), float(rest[2]), int(rest[3])
            lats = [int(x) / 1e6 for x in rest[4 : 4 + count]]
            result_q.put({"lats": lats, "errors": errors, "cpu": cpu, "wall": wall})


def measure(
    n: int, procs: int, seconds: float, gc_freeze: bool = False, client: str = "python"
) -> dict[str, float]:
    """One run with ``n`` sessions; returns the server's CPU %, RSS and echo latency figures.
    ``client``: ``"python"`` (:func:`kcp.dial` sessions) or ``"c"`` (:class:`CClient`)."""
    exe = loadgen() if client == "c" else ""  # compiled before the server starts: a failure ends the run here
    ctx = mp.get_context("fork")
    port_q: Any = ctx.Queue()
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_server, args=(port_q, child, n + 100))
    server.start()
    port = port_q.get(timeout=30)
    ready_q: Any = ctx.Queue()
    result_q: Any = ctx.Queue()
    go = ctx.Event()
    per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    t_setup = time.perf_counter()
    clients: list[Any] = (
        [CClient(exe, i, port, per[i], seconds, ready_q, result_q) for i in range(procs)]
        if client == "c"
        else [
            ctx.Process(target=_client, args=(i, port, per[i], ready_q, go, seconds, result_q))
            for i in range(procs)
        ]
    )
    for c in clients:
        c.start()
    wait_ready(ready_q, clients, [server], 300)
    setup = time.perf_counter() - t_setup
    if gc_freeze:
        parent.send("freeze")
        parent.recv()
    parent.send("mark")
    a = parent.recv()
    go.set()
    for c in clients:
        if isinstance(c, CClient):
            c.go()
    time.sleep(seconds)
    parent.send("mark")
    b = parent.recv()
    results, lats, q = end_run(parent, result_q, clients, server)
    errors = sum(r["errors"] for r in results)
    return {
        "sessions": b["sessions"],
        "cpu_pct": 100 * (b["cpu"] - a["cpu"]) / (b["wall"] - a["wall"]),
        "rss_mb": b["rss"],
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": (lats[-1] if lats else 0.0) * 1000,
        "echoes": len(lats),
        "errors": errors,
        "setup_s": setup,
        "srv_retrans": b["retrans_segs"] - a["retrans_segs"],
        "srv_in_segs": b["in_segs"] - a["in_segs"],
        "client_cpu_pct": 100 * sum(r["cpu"] / r["wall"] for r in results),
        "srv_recv_sys_per_dgram": (b["recv_syscalls"] - a["recv_syscalls"])
        / max(b["in_pkts"] - a["in_pkts"], 1),
        "srv_send_sys_per_dgram": (b["send_syscalls"] - a["send_syscalls"])
        / max(b["out_pkts"] - a["out_pkts"], 1),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the requested session counts and print one line each."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1,000 sessions for 5 s")
    p.add_argument("--sessions", default="1000,5000")
    p.add_argument("--procs", type=int, default=2, help="client processes")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--gc-freeze", action="store_true", help="server calls gc.freeze() after the warm-up")
    p.add_argument(
        "--client",
        choices=("python", "c"),
        default="python",
        help="the clients: kcp.dial sessions in Python, or the C load generator (bench/loadgen/)",
    )
    args = p.parse_args(argv)
    counts = [1000] if args.quick else [int(x) for x in args.sessions.split(",")]
    seconds = 5.0 if args.quick else args.seconds
    print(
        f"pid {os.getpid()}: {args.procs} client processes ({args.client}), {seconds:g} s window, "
        f"1 msg/s/session of {MSG} B"
    )
    for n in counts:
        r = measure(n, args.procs, seconds, args.gc_freeze, args.client)
        print(
            f"{n:6d} sessions: server CPU {r['cpu_pct']:5.1f} % of one core, RSS {r['rss_mb']:6.1f} MB, "
            f"echo p50 {r['p50_ms']:6.2f} ms p99 {r['p99_ms']:6.2f} ms max {r['max_ms']:7.2f} ms, "
            f"{r['echoes']} echoes, {r['errors']} errors, server syscalls/dgram recv "
            f"{r['srv_recv_sys_per_dgram']:.2f} send {r['srv_send_sys_per_dgram']:.2f} (setup {r['setup_s']:.1f} s, "
            f"clients' CPU {r['client_cpu_pct']:.0f} %, server retrans {r['srv_retrans']} of {r['srv_in_segs']} segs in)",
            flush=True,
        )


if __name__ == "__main__":
    main()
