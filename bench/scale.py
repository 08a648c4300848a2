"""Push fan-out past one process: 1 server process against 2 workers on Redis, as a ratio in one run.

The fan-out of ``bench/fanout.py`` (its processes, stepped publish rates and figures: read its
docstring), with 2,000 subscribers by default, for each contender, alternated A B, B A:

* ``1proc``: one kcprpc server process on the in-process MemoryBroker (today's fan-out);
* ``2w-redis``: ``kcprpc.serve_workers(app, 2)`` (in a child process: it blocks and forks), every
  worker's Server on a :class:`~kcprpc.redis_broker.RedisBroker` to a ``redis-server`` that this
  script starts on 127.0.0.1 (a free port, its own temp dir, no persistence). The subscribers'
  handshakes reach the workers by the kernel's address hash; each session asks which process
  serves it (``Who``), and the spread is printed. A publish goes to Redis (one Lua script:
  sequence, stream history, PUBLISH) and comes back to each worker on its subscription, which
  fans it out to its own sessions;
* ``1proc-redis`` (optional, ``--contenders``): one process on RedisBroker, which separates the
  broker's cost from the second worker's gain.

Per contender: the highest sustained deliveries/s (rate kept, >= 99 % delivered, p99 <=
``--p99-limit`` ms), its p50/p99, the server CPU per delivery (summed over the worker processes,
found as the supervisor's children in /proc) and the broker's cost per delivery: redis-server's
CPU per delivery plus the server's extra CPU per delivery against ``1proc``, both at
``--cost-rate`` publishes/s (a step every contender keeps up with; CPU per delivery falls when a
step falls behind and coalesces). Medians over ``--rounds``, and the ratios to ``1proc``.

Everything runs on this machine: the subscribers (4 processes by default) and the publisher share
its cores with the server and Redis. On 2 cores the second worker competes with them for CPU, so
the 2w-redis / 1proc ratio is a floor, not what 2 workers give on a machine with cores to spare.

    python bench/scale.py --quick                    # 200 subscribers, 2 short steps, 1 round
    python bench/scale.py --rounds 2                 # 2,000 subscribers in 4 processes
    python bench/scale.py --rounds 2 --contenders 1proc,2w-redis,1proc-redis
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from multiprocessing.connection import Connection
from typing import Any

from _common import ROOT
from fanout import Run, at_rate, fanout_server, fmt, highest, median_of, run_contender, summary

import kcprpc

sys.path.insert(0, str(ROOT / "tests" / "brokers"))  # the tests' redis-server fixture
from redis_server import RedisServer

CONTENDERS = ("1proc", "2w-redis", "1proc-redis")
WORKERS = 2


def _workers_proc(conn: Connection, mode: str, broker_url: str) -> None:
    """``serve_workers`` of the fan-out app on ``broker_url``; sends ``(port, worker pids)`` when
    every worker serves, and drains on SIGTERM."""

    def on_ready(_app: kcprpc.Server, address: tuple[str, int], pids: list[int]) -> None:
        conn.send((address[1], pids))

    code = kcprpc.serve_workers(
        lambda: fanout_server(mode, broker_url),
        WORKERS,
        host="127.0.0.1",
        port=0,
        grace=0.5,
        on_ready=on_ready,
    )
    sys.exit(code)


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc/<pid>/task/<pid>/children)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


class ScaleRun(Run):
    """A fan-out run whose server is ``contender``'s: one process (MemoryBroker or Redis) or
    :data:`WORKERS` workers on Redis; redis-server's CPU is reported as ``broker``."""

    def __init__(self, args: argparse.Namespace, contender: str, redis: RedisServer) -> None:
        super().__init__(args, "kcprpc", contender)
        self.contender = contender
        self.redis = redis
        self.worker_pids: list[int] = []
        self.supervisor = 0

    def start_server(self, kind: str, mode: str, loop: str) -> int:
        self.redis.command("FLUSHALL")  # every contender starts on an empty Redis
        if self.contender != "1proc":  # 1proc does not use Redis (idle, it would show its timers)
            self.others = {"broker": self.redis_cpu_s}
        if self.contender == "1proc-redis":
            self.broker_url = self.redis.url()
        if self.contender != "2w-redis":
            return super().start_server(kind, mode, loop)
        conn = self.start(_workers_proc, mode, self.redis.url())
        self.supervisor = self.procs[-1].pid
        port, self.worker_pids = self._ask_port(conn)
        return int(port)

    @staticmethod
    def _ask_port(conn: Connection) -> Any:
        if not conn.poll(60):
            raise TimeoutError("the server did not start within 60 s")
        return conn.recv()

    def redis_cpu_s(self) -> float:
        """redis-server's CPU seconds so far (``INFO cpu``: getrusage, in microseconds; /proc's clock
        ticks of 10 ms are too coarse for a few dozen publishes)."""
        info = self.redis.command("INFO", "cpu").decode()
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        return float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])

    def server_pids(self) -> list[int]:
        if not self.supervisor:
            return super().server_pids()
        return [self.supervisor, *_children(self.supervisor)]

    def __exit__(self, *exc: object) -> None:
        if self.supervisor:  # SIGTERM: the supervisor drains its workers and exits
            now = _children(self.supervisor)
            if sorted(now) != sorted(self.worker_pids):
                print(
                    f"# {self.label}: WORKERS RESTARTED during the run: {self.worker_pids} -> {now}",
                    flush=True,
                )
            for p in self.procs:
                if p.pid == self.supervisor and p.is_alive():
                    p.terminate()
        super().__exit__(*exc)

    def describe(self) -> str:
        """Where the subscribers and the publisher landed (worker index by process id)."""
        if not self.worker_pids:
            return ""
        names = {pid: f"worker {i}" for i, pid in enumerate(self.worker_pids)}
        counts = ", ".join(f"{names.get(pid, pid)}: {n}" for pid, n in sorted(self.where.items()))
        return f"subscribers per worker: {counts}; publisher on {names.get(self.publisher_on, '?')}"


def report(
    args: argparse.Namespace, results: dict[str, list[list[dict[str, float]]]]
) -> dict[str, dict[str, Any]]:
    """Print each round's best steps, then the medians and ratios; return the medians."""
    med: dict[str, dict[str, Any]] = {}
    limits = {"sustained": args.p99_limit, "delivered": None}
    for label, limit in limits.items():
        cond = f"p99 <= {limit:g} ms" if limit is not None else "any p99"
        print(f"# highest {label} rate (rate kept, >= 99 % delivered, {cond}), per round")
        for c, rounds in results.items():
            bests = [highest(steps, limit) for steps in rounds]
            for i, b in enumerate(bests):
                print(f"{c:12} round {i + 1}: {summary(b, args.subscribers)}")
            m = med.setdefault(c, {})
            m[label] = statistics.median(b["per_s"] if b else 0.0 for b in bests)
            m[f"{label}_p99"] = median_of([b["p99_ms"] if b else None for b in bests])
    for c, rounds in results.items():
        at = [at_rate(steps, args.cost_rate) for steps in rounds]
        for k in (
            "p50_ms",
            "p99_ms",
            "server_us_per_delivery",
            "broker_us_per_delivery",
            "subs_us_per_delivery",
        ):
            med[c][k] = median_of([r.get(k) if r else None for r in at])
    base = med.get("1proc", {})
    print(
        f"# medians of {len(next(iter(results.values())))} rounds; latency and CPU per delivery at {args.cost_rate:g} publishes/s"
    )
    for c, m in med.items():
        srv, b0 = m["server_us_per_delivery"], base.get("server_us_per_delivery")
        m["extra_us"] = extra = None if srv is None or b0 is None else srv - b0
        broker = m["broker_us_per_delivery"]
        m["broker_cost_us"] = cost = None if extra is None or broker is None else broker + extra
        print(
            f"{c:12} sustained {m['sustained']:6.0f} deliveries/s, delivered {m['delivered']:6.0f}/s (p99 "
            f"{fmt(m['delivered_p99'], '.0f')} ms) | at {args.cost_rate:g}/s: p50 {fmt(m['p50_ms'])} ms p99 "
            f"{fmt(m['p99_ms'])} ms, CPU per delivery: server {fmt(srv)} us (vs 1proc {fmt(extra, '+.1f')}), "
            f"redis-server {fmt(broker)} us, subscribers {fmt(m['subs_us_per_delivery'])} us"
            + ("" if c == "1proc" else f" | broker's cost per delivery {fmt(cost)} us")
        )
    for c, m in med.items():
        if c == "1proc" or not base:
            continue
        ratios = [
            f"{label} x{m[label] / base[label]:.2f}" if base[label] else f"{label} n/a (1proc: none)"
            for label in limits
        ]
        print(f"ratio {c} / 1proc, deliveries/s: " + ", ".join(ratios))
    return med


def main(argv: list[str] | None = None) -> int:
    """Run every contender's steps, alternated per round, then the medians and ratios."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="200 subscribers, 2 processes, rates 2,4, 1 s, 1 round (each unless given)",
    )
    ap.add_argument("--subscribers", type=int, help="default 2000 (--quick: 200)")
    ap.add_argument("--procs", type=int, help="subscriber processes (default 4)")
    ap.add_argument("--rates", help="publish rates (msgs/s), ascending (default 1,2,3,4,5,6,8,10,12)")
    ap.add_argument(
        "--cost-rate", type=float, help="publishes/s of the CPU-per-delivery comparison (default: 2nd rate)"
    )
    ap.add_argument("--seconds", type=float, help="publish window per step (default 3)")
    ap.add_argument("--drain", type=float, help="max wait for deliveries after a step (default 5)")
    ap.add_argument("--p99-limit", type=float, default=100.0, help="ms: a sustained step's p99 bound")
    ap.add_argument("--size", type=int, default=32, help="padding bytes per message")
    ap.add_argument("--rounds", type=int, help="rounds; contenders alternate A B, B A (default 2)")
    ap.add_argument("--contenders", default="1proc,2w-redis", help=f"of {', '.join(CONTENDERS)}")
    ap.add_argument("--mode", choices=["secure", "compat"], default="secure", help="the wire mode")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the clients' event loop")
    ap.add_argument("-v", "--verbose", action="store_true", help="publish call times, server KCP counters")
    args = ap.parse_args(argv)
    defaults: dict[str, Any] = {"subscribers": 2000, "procs": 4, "rates": "1,2,3,4,5,6,8,10,12"}
    defaults.update(seconds=3.0, drain=5.0, rounds=2)
    if args.quick:
        defaults.update(subscribers=200, procs=2, rates="2,4", seconds=1.0, drain=3.0, rounds=1)
    for name, value in defaults.items():  # an option given wins over --quick's value
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.every_rate = False
    rates = [float(x) for x in args.rates.split(",")]
    args.cost_rate = args.cost_rate or rates[min(1, len(rates) - 1)]
    if args.cost_rate not in rates:
        ap.error("--cost-rate must be one of --rates")
    args.procs = max(1, min(args.procs, args.subscribers))
    contenders = [c for c in args.contenders.split(",") if c]
    if not contenders or any(c not in CONTENDERS for c in contenders):
        ap.error(f"--contenders: of {', '.join(CONTENDERS)}")
    print(
        f"# scale: 1 publisher -> 1 topic -> {args.subscribers} subscribers in {args.procs} processes; "
        f"contenders {', '.join(contenders)} ({WORKERS} workers by kcprpc.serve_workers); redis-server on "
        f"127.0.0.1; kcprpc mode={args.mode}; {args.seconds:g} s per step; sustained = rate kept, >= 99 % "
        f"delivered, p99 <= {args.p99_limit:g} ms",
        flush=True,
    )
    print(
        f"# machine: {os.cpu_count()} cores shared by the server, Redis, the subscribers and the publisher "
        f"(load average {os.getloadavg()[0]:.1f}): the workers' gain measured here is a floor",
        flush=True,
    )
    results: dict[str, list[list[dict[str, float]]]] = {c: [] for c in contenders}
    redis = RedisServer().start()
    try:
        for r in range(args.rounds):  # contenders alternate: A B, B A, ...
            for c in contenders if r % 2 == 0 else contenders[::-1]:
                results[c].append(run_contender(args, "kcprpc", rates, ScaleRun(args, c, redis)))
    finally:
        redis.close()
    report(args, results)
    return 0 if all(highest(steps, None) for rounds in results.values() for steps in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
