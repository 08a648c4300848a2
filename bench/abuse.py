"""Attacks by clients that hold the key, each against a fresh real server on 127.0.0.1.

For every attack of the threat table (docs/security.md) this starts the target server
(``python -m bench._abuse_server``), a legitimate client process (sequential 64-byte unary calls at
50/s on one connection, plus a fresh connect-and-call every second), and the attack in its own
process for ``--seconds``. Then it prints, per attack:

- the server's RSS before the attack, its peak during it, and after the attack stopped (once the
  server's sessions and RSS settle, at most ``--settle`` seconds); when that is still more than
  10 MB above the start, also after the server collected its garbage and handed its free pages
  back to the OS (``gc.collect()``, glibc's ``malloc_trim``): memory the allocator keeps for
  reuse is not memory the attack still holds, so "released" is judged on that figure;
- the server's CPU during the attack (percent of one core);
- the legitimate client's calls during the attack (of those its pace would have made), their
  p50/p99, and its calls and connects that failed;
- the tracebacks in the server's log;
- the server's counters that moved (drops, refusals, closes) and the attack's own counters.

Pass/fail against the targets: RSS growth under 50 MB and released, no failed legitimate call, the
legitimate client served (at least 80 % of the calls its pace would have made during the attack:
latency may rise, but a client that gets through half of its calls is not being served), no
traceback. Bounded: every loop stops at its deadline; only 127.0.0.1 is used.

    python bench/abuse.py                      # every attack, 5 s each
    python bench/abuse.py --only restore-claims --seconds 3
    python bench/abuse.py --list
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._abuse_common import Attack, Target  # noqa: E402

RSS_BUDGET_MB = 50.0
RELEASE_SLACK_MB = 10.0  # "released": back within this of the RSS before the attack
LEGIT_INTERVAL = 0.02  # the legitimate client's pace: one call every 20 ms
SERVED_SHARE = 0.8  # "served": at least this share of the calls that pace makes in the attack's window
INTERESTING = (
    "drop",
    "refus",
    "denied",
    "reject",
    "fail",
    "error",
    "slow",
    "closed",
    "evict",
    "limit",
    "overflow",
    "exhaust",
    "reset",
    "bad",
    "pending",
    "replay",
    "expired",
    "oversized",
    "stale",
    "detached",
    "resum",
    "ignored",
    "unknown",
    "shed",
)


def all_attacks() -> list[Attack]:
    """Every ``ATTACKS`` of ``bench/_abuse_*.py``, in module order."""
    out: list[Attack] = []
    bench_dir = Path(__file__).resolve().parent
    for info in sorted(pkgutil.iter_modules([str(bench_dir)]), key=lambda i: i.name):
        if info.name.startswith("_abuse_") and info.name not in ("_abuse_common", "_abuse_server"):
            mod = importlib.import_module(f"bench.{info.name}")
            out.extend(getattr(mod, "ATTACKS", []))
    out.sort(key=lambda a: (a.item, a.name))
    return out


def find(name: str) -> Attack:
    for a in all_attacks():
        if a.name == name:
            return a
    raise SystemExit(f"no attack named {name!r} (see --list)")


# ---------------------------------------------------------------------------- child processes
def _target(attack: Attack, port: int, pid: int) -> Target:
    from bench._abuse_common import COMPAT_CRYPT

    return Target(
        "127.0.0.1",
        port,
        attack.mode,
        crypt=COMPAT_CRYPT if attack.mode == "compat" else None,
        fec=attack.fec,
        pid=pid,
    )


def run_attack_child(name: str, port: int, pid: int, seconds: float) -> None:
    """``--attack-child``: run one attack and print its counters as one JSON line."""
    import kcp

    attack = find(name)

    async def main() -> dict[str, int]:
        return await attack.run(_target(attack, port, pid), seconds)

    counters = kcp.run(main())
    print(json.dumps(counters), flush=True)


def run_legit_child(name: str, port: int, seconds: float) -> None:
    """``--legit-child``: a legitimate client for ``seconds``; prints one JSON line."""
    import kcp
    import kcprpc
    from bench._abuse_common import AbuseService, EchoMsg

    attack = find(name)
    target = _target(attack, port, 0)

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        lat: list[tuple[float, float]] = []  # (start time, latency)
        failures: list[str] = []
        connects = connect_failures = 0
        payload = EchoMsg(data=b"x" * 64)
        client = kcprpc.connect(target.host, target.port, transport=target.transport())
        await client.connect()
        stub = client.stub(AbuseService, timeout=5.0)
        end = loop.time() + seconds

        async def fresh_connects() -> None:
            nonlocal connects, connect_failures
            while loop.time() < end - 1.0:
                connects += 1
                try:
                    async with kcprpc.connect(target.host, target.port, transport=target.transport()) as c:
                        await c.stub(AbuseService, timeout=5.0).echo(payload)
                except Exception as e:
                    connect_failures += 1
                    failures.append(f"connect: {e}")
                await asyncio.sleep(1.0)

        side = asyncio.ensure_future(fresh_connects())
        print(json.dumps({"ready": True}), flush=True)
        next_at = loop.time()
        while loop.time() < end:
            t0 = time.perf_counter()
            try:
                await stub.echo(payload)
                lat.append((time.time(), time.perf_counter() - t0))
            except Exception as e:
                failures.append(f"call: {e}")
            next_at += LEGIT_INTERVAL
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        await side
        await client.close()
        return {"lat": lat, "failures": failures, "connects": connects, "connect_failures": connect_failures}

    print(json.dumps(kcp.run(main())), flush=True)


# ---------------------------------------------------------------------------- the parent
def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Server:
    def __init__(self, attack: Attack, log: IO[str]) -> None:
        args = [sys.executable, "-m", "bench._abuse_server", "--mode", attack.mode]
        if attack.fec is not None:
            args += ["--datashard", str(attack.fec[0]), "--parityshard", str(attack.fec[1])]
        args += list(attack.server_args)
        self.proc = subprocess.Popen(
            args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        hello = json.loads(self.proc.stdout.readline())
        self.port: int = hello["port"]
        self.pid: int = hello["pid"]

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]

    def trimmed(self) -> dict[str, Any]:
        """Counters after the server collected its garbage and handed free pages back to the OS."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("trim\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _child(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _last_json(text: str) -> Any:
    for line in reversed(text.strip().splitlines()):
        with contextlib.suppress(ValueError):
            return json.loads(line)
    return None


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_one(attack: Attack, seconds: float, settle: float) -> dict[str, Any]:
    """Run one attack against a fresh server; return its row."""
    with tempfile.TemporaryFile("w+") as log:
        server = _Server(attack, log)
        try:
            legit = _child(
                ["--legit-child", attack.name, "--port", str(server.port), "--seconds", str(seconds + 3.0)]
            )
            assert legit.stdout is not None
            legit.stdout.readline()  # ready: connected
            time.sleep(1.0)  # a baseline second of legitimate calls
            before = server.stats()
            cpu0, t0 = _cpu_seconds(server.pid), time.monotonic()
            wall0 = time.time()
            attacker = _child(
                [
                    "--attack-child",
                    attack.name,
                    "--port",
                    str(server.port),
                    "--pid",
                    str(server.pid),
                    "--seconds",
                    str(seconds),
                ]
            )
            peak = before["rss_kib"]
            peak_sessions = before["sessions"]
            while attacker.poll() is None and time.monotonic() - t0 < seconds + 30:
                time.sleep(0.25)
                st = server.stats()
                peak = max(peak, st["rss_kib"])
                peak_sessions = max(peak_sessions, st["sessions"])
            if attacker.poll() is None:
                attacker.kill()
            a_out, a_err = attacker.communicate()
            cpu = (_cpu_seconds(server.pid) - cpu0) / max(1e-9, time.monotonic() - t0)
            wall1 = time.time()
            during = server.stats()
            # settle: wait for the attack's sessions to go and the RSS to come back
            settle_end = time.monotonic() + max(settle, attack.settle)
            after = during
            while time.monotonic() < settle_end:
                after = server.stats()
                peak = max(peak, after["rss_kib"])
                if (
                    after["sessions"] <= before["sessions"]
                    and after["detached"] <= before["detached"]
                    and (after["rss_kib"] - before["rss_kib"] < RELEASE_SLACK_MB * 1024)
                ):
                    break
                time.sleep(0.25)
            # what the live objects hold: the garbage collected and free pages handed back
            trimmed = (
                server.trimmed() if after["rss_kib"] - before["rss_kib"] >= RELEASE_SLACK_MB * 1024 else after
            )
            l_out, _l_err = legit.communicate(timeout=seconds + 60)
        finally:
            server.stop()
        log.seek(0)
        server_log = log.read()
    legit_res = _last_json(l_out) or {
        "lat": [],
        "failures": ["legit client printed nothing"],
        "connects": 0,
        "connect_failures": 0,
    }
    during_lat = [lat * 1000 for (t, lat) in legit_res["lat"] if wall0 <= t <= wall1]
    base_lat = [lat * 1000 for (t, lat) in legit_res["lat"] if t < wall0]
    moved = {
        k: after[k] - before.get(k, 0)
        for k in after
        if isinstance(after[k], int) and after[k] != before.get(k, 0) and any(w in k for w in INTERESTING)
    }
    attack_counters = _last_json(a_out)
    if attack_counters is None:
        attack_counters = {"error": (a_err.strip().splitlines() or ["no output"])[-1]}
    return {
        "name": attack.name,
        "item": attack.item,
        "mode": attack.mode,
        "rss_before_mb": before["rss_kib"] / 1024,
        "rss_peak_mb": peak / 1024,
        "rss_after_mb": after["rss_kib"] / 1024,
        "rss_trimmed_mb": trimmed["rss_kib"] / 1024,
        "peak_sessions": peak_sessions,
        "cpu_pct": cpu * 100,
        "legit_calls": len(during_lat),
        "legit_paced": int((wall1 - wall0) / LEGIT_INTERVAL),  # what its pace would have made
        "legit_p50_ms": _pct(during_lat, 0.5),
        "legit_p99_ms": _pct(during_lat, 0.99),
        "baseline_p99_ms": _pct(base_lat, 0.99),
        "legit_failures": legit_res["failures"][:5],
        "legit_failed": len(legit_res["failures"]),
        "connects": legit_res["connects"],
        "tracebacks": server_log.count("Traceback"),
        "log_lines": len(server_log.splitlines()),
        "server_counters": moved,
        "attack_counters": attack_counters,
    }


def verdict(row: dict[str, Any]) -> list[str]:
    """The targets a row misses (empty: it holds)."""
    bad = []
    growth = row["rss_peak_mb"] - row["rss_before_mb"]
    if growth >= RSS_BUDGET_MB:
        bad.append(f"RSS grew {growth:.0f} MB")
    if row["rss_trimmed_mb"] - row["rss_before_mb"] >= RELEASE_SLACK_MB:
        bad.append(
            f"RSS not released ({row['rss_trimmed_mb'] - row['rss_before_mb']:.0f} MB kept after a trim)"
        )
    if row["legit_failed"]:
        bad.append(f"{row['legit_failed']} legitimate calls/connects failed")
    if row["legit_calls"] < SERVED_SHARE * row["legit_paced"]:
        bad.append(f"legitimate client not served ({row['legit_calls']} of {row['legit_paced']} calls)")
    if row["tracebacks"]:
        bad.append(f"{row['tracebacks']} tracebacks")
    return bad


def print_row(row: dict[str, Any]) -> None:
    bad = verdict(row)
    print(
        f"\n## {row['name']} (item {row['item']}, {row['mode']}): {'HOLDS' if not bad else 'FAILS: ' + '; '.join(bad)}\n"
        f"  server RSS  {row['rss_before_mb']:.1f} MB before, {row['rss_peak_mb']:.1f} peak, "
        f"{row['rss_after_mb']:.1f} after, {row['rss_trimmed_mb']:.1f} after a trim  (peak sessions {row['peak_sessions']})\n"
        f"  server CPU  {row['cpu_pct']:.0f} % of a core during the attack\n"
        f"  legit       {row['legit_calls']} of {row['legit_paced']} calls, p50 {row['legit_p50_ms']:.2f} ms, "
        f"p99 {row['legit_p99_ms']:.2f} ms (before the attack {row['baseline_p99_ms']:.2f} ms); "
        f"{row['legit_failed']} failed, {row['connects']} fresh connects\n"
        f"  log         {row['tracebacks']} tracebacks, {row['log_lines']} lines\n"
        f"  counters    {json.dumps(row['server_counters'])}\n"
        f"  attack      {json.dumps(row['attack_counters'])}"
    )
    for f in row["legit_failures"]:
        print(f"    legit failure: {f}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="attack duration (default 5)")
    ap.add_argument("--settle", type=float, default=15.0, help="max seconds to wait for release (default 15)")
    ap.add_argument("--only", nargs="*", help="attack names")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="one more argument of every target server (repeatable), e.g. --server-arg=--datagram-rate=0 "
        "to see an attack without that bound (python -m bench._abuse_server --help)",
    )
    ap.add_argument("--attack-child", help=argparse.SUPPRESS)
    ap.add_argument("--legit-child", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--pid", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.attack_child:
        run_attack_child(args.attack_child, args.port, args.pid, args.seconds)
        return 0
    if args.legit_child:
        run_legit_child(args.legit_child, args.port, args.seconds)
        return 0
    attacks = all_attacks()
    if args.list:
        for a in attacks:
            print(f"{a.name:24} item {a.item}  {a.mode:7} {a.description}")
        return 0
    if args.only:
        attacks = [find(n) for n in args.only]
    if args.server_arg:
        attacks = [dataclasses.replace(a, server_args=(*a.server_args, *args.server_arg)) for a in attacks]
    print(f"# abuse bench: {len(attacks)} attacks, {args.seconds:g} s each, 127.0.0.1")
    rows = []
    for a in attacks:
        row = run_one(a, args.seconds, args.settle)
        rows.append(row)
        print_row(row)
    failing = [r["name"] for r in rows if verdict(r)]
    print(
        f"\n# {len(rows) - len(failing)} of {len(rows)} hold"
        + (f"; failing: {', '.join(failing)}" if failing else "")
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
