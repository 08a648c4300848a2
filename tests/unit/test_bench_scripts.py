"""Every benchmark script answers ``--help`` (a newcomer's first command; the dev extra pulls in the
``bench`` extra, so the peers the scripts import are installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def help_of(script: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    # The scripts import their siblings (``_common``); CI's compiled run sets PYTHONSAFEPATH=1, which
    # keeps a script's own directory off sys.path, so name it explicitly.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=BENCH.parent,
        env=env,
    )
    return script, done


def test_every_bench_script_answers_help() -> None:
    assert len(SCRIPTS) >= 20, SCRIPTS  # the glob found the scripts
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(help_of, SCRIPTS))
    failed = {p.name: (r.returncode, r.stderr[-400:]) for p, r in results if r.returncode != 0}
    assert not failed, failed
    silent = [p.name for p, r in results if "usage" not in r.stdout.lower()]
    assert not silent, f"--help printed no usage: {silent}"


def test_rpc_bench_names_each_contenders_wire_mode() -> None:
    out = help_of(BENCH / "rpc.py")[1].stdout
    for contender in ("kcprpc", "kcprpc-key", "kcprpc-compat", "grpcio"):
        assert contender in out


def run_bench(script: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``bench/<script>`` (bench/ on its path, bounded to 90 s); it must exit 0."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *argv],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=BENCH.parent,
        env=env,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    return done


def test_scale_bench_quick_run_compares_one_process_with_two_workers_on_redis() -> None:
    """bench/scale.py end to end, small: 20 subscribers, one 1.5 s step at 4/s per contender (the
    options given win over --quick's), a real redis-server started by the script. Every contender
    keeps the rate (exit code 0), the 2 workers both serve subscribers, and the ratio and the
    broker's cost are printed."""
    argv = ["--quick", "--subscribers", "20", "--rates", "4", "--seconds", "1.5", "--drain", "3"]
    done = run_bench("scale.py", argv)
    out = done.stdout
    spread = next(line for line in out.splitlines() if "subscribers per worker:" in line)
    counts = [int(part.split(":")[1]) for part in spread.split("worker:", 1)[1].split(";")[0].split(",")]
    assert len(counts) == 2 and all(c > 0 for c in counts) and sum(counts) == 20, spread
    assert "ratio 2w-redis / 1proc, deliveries/s: sustained x" in out
    cost = next(line for line in out.splitlines() if line.startswith("2w-redis ") and "broker's cost" in line)
    assert "redis-server n/a" not in cost, cost


def test_state_sync_bench_quick_run_measures_both_contenders_through_the_relay() -> None:
    """bench/state_sync.py end to end, small: 4 clients in one process through kcp.relay at 5 %
    loss, 1 s measured per contender. Both contenders deliver states at about the tick rate, their
    bytes, ages and CPU are measured (positive, finite), and the ratios with the goals are printed."""
    argv = ["--quick", "--clients", "4", "--procs", "1", "--seconds", "1", "--loss", "5", "--entities", "50"]
    done = run_bench("state_sync.py", argv)
    rows = {}
    for line in done.stdout.splitlines():
        if line.startswith("round 1 loss 5%"):
            name = "a" if "latest-wins" in line else "c"
            figs = [f.strip() for f in line.split("  ")[2:] if f.strip()]  # "key value" each
            rows[name] = {k: float(v.replace(",", "")) for k, v in (f.rsplit(" ", 1) for f in figs)}
    assert set(rows) == {"a", "c"}, done.stdout
    for r in rows.values():
        assert r["msgs/client/s"] >= 10, r  # 20 Hz, a few lost to the relay's 5 %
        assert r["B/client/s"] > 0 and r["cpu us/client/tick"] > 0, r
        assert 0 < r["age p50 ms"] <= r["age p99 ms"] < 1000, r
    assert rows["a"]["B/client/s"] < rows["c"]["B/client/s"], rows  # deltas are smaller than snapshots
    assert rows["a"]["(a) parts/client/tick"] >= 1, rows  # (a) sends PARTS messages (groups)
    assert rows["a"]["oldest part age p99 ms"] >= rows["a"]["age p99 ms"], rows
    assert "ratios a/c: bytes" in done.stdout and "goal <= 0.2" in done.stdout


def test_ts_client_bench_quick_run_races_the_node_client_against_the_python_client() -> None:
    """bench/ts_client.py end to end, small: one Python server, the compiled Node load generator
    (clients/typescript/bench/load.ts) and the Python client, alternated; both finish their calls
    and the ratio line is printed with every figure."""
    done = run_bench("ts_client.py", ["--quick", "--calls", "100"])
    out = done.stdout
    for client in ("node", "python"):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"secure median {client} "))
        rate = float(line.split()[3])
        assert rate > 0, line
    ratio = next(ln for ln in out.splitlines() if ln.startswith("secure node / python: rate x"))
    assert "p50 x" in ratio and "client CPU per call x" in ratio and "server CPU per call x" in ratio, ratio


def test_ts_loss_bench_quick_run_crosses_a_lossy_relay_with_each_recovery() -> None:
    """bench/ts_loss.py end to end, small: the Node client with each loss recovery and the Python
    client, each across its own seeded relay (5 ms each way, 10 % loss); every contender finishes
    its calls, no faster than the link allows, and the node / node-ikcp ratios are printed."""
    done = run_bench("ts_loss.py", ["--quick", "--calls", "40", "--delay", "5", "--links", "r10=--loss 10"])
    out = done.stdout
    for c in ("node", "node-ikcp", "python"):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"r10 median {c} "))
        f = line.split()
        p50, p99, max_ms, per_call = float(f[4]), float(f[6]), float(f[8]), float(f[10])
        assert 10 <= p50 <= p99 <= max_ms, line  # 5 ms each way
        assert per_call > 64 * 2, line  # the payload both ways, plus the headers
    ratio = next(ln for ln in out.splitlines() if ln.startswith("r10 node / node-ikcp: p99 x"))
    assert "max x" in ratio and "bytes x" in ratio, ratio


def test_web_fanout_bench_quick_run_races_websocket_against_kcp_subscribers_of_one_server() -> None:
    """bench/web_fanout.py end to end, small: 20 subscribers per side (KCP, WebSocket and
    WebTransport) on one server, one 0.5 s step per side and round, 2 rounds (the sides
    alternate). Every side keeps the rate in both rounds (exit code 0), every round is reported
    per side, and each web side's ratios to KCP are printed."""
    argv = ["--subscribers", "20", "--procs", "1", "--rates", "4", "--cost-rate", "4", "--seconds", "0.5"]
    done = run_bench("web_fanout.py", [*argv, "--drain", "3", "--rounds", "2", "--sides", "kcp,ws,wt"])
    out = done.stdout
    for side in ("kcp", "ws", "wt"):
        assert f"# {side}: 20 subscribers connected and subscribed" in out, out
        rounds = [ln for ln in out.splitlines() if ln.startswith(f"{side:4} round ")]
        assert len(rounds) == 2 and all("4 publishes/s x 20" in r for r in rounds), rounds
        med = next(ln for ln in out.splitlines() if ln.startswith(f"{side:4} sustained "))
        assert "p50 n/a" not in med and "p99 n/a" not in med, med
    for side in ("ws", "wt"):
        ratio = next(ln for ln in out.splitlines() if ln.startswith(f"ratio {side} / kcp: "))
        for figure in ("sustained x", "delivered x", "p50 x", "p99 x"):  # CPU: /proc's ticks may read 0 here
            assert figure in ratio, ratio


def test_state_apply_bench_quick_run_times_both_contenders() -> None:
    """bench/state_apply.py, small: every contender applies states and gets a positive µs figure
    and a ratio to (c)."""
    done = run_bench("state_apply.py", ["--rounds", "1", "--ticks", "30", "--entities", "40"])
    rows = [line.split() for line in done.stdout.splitlines() if "us/state" in line]
    assert [r[0] for r in rows] == ["(a)", "(a)", "(c)"], done.stdout
    for r in rows:
        us = float(r[r.index("us/state") - 1])
        assert us > 0, r
    assert done.stdout.rstrip().endswith("1.00 of (c)"), done.stdout


def test_many_sessions_bench_runs_the_c_load_generator() -> None:
    """bench/many_sessions.py --client c end to end, small: the C load generator
    (bench/loadgen/kcp_echo_load.c, compiled by the script) speaks KCP to the server's kcp.listen:
    every session of both client processes echoes every second of the window, without an error."""
    done = run_bench("many_sessions.py", ["--client", "c", "--sessions", "100", "--seconds", "2"])
    line = next(x for x in done.stdout.splitlines() if "sessions: server CPU" in x)
    echoes = int(line.split(" echoes")[0].rsplit(" ", 1)[1])
    assert " 0 errors" in line and " 100 sessions" in line, line
    assert 190 <= echoes <= 210, line  # 100 sessions x 1 msg/s x 2 s, each message's phase random


def test_rpc_sessions_bench_runs_the_c_load_generator() -> None:
    """bench/rpc_sessions.py --client c end to end, small: the C load generator
    (bench/loadgen/rpc_load.c, compiled by the script with OpenSSL's libcrypto) connects to a
    kcprpc.Server as kcprpc.connect does (secure handshake, KCP, smux, HELLO/WELCOME, a warm-up
    call): every connection of both client processes connects and makes its call every second of
    the window, none fails and none is lost. Without a C compiler or OpenSSL's headers (Debian's
    libssl-dev) the script exits saying what to install, and this test fails with that message."""
    done = run_bench("rpc_sessions.py", ["--client", "c", "--sessions", "100", "--seconds", "2"])
    line = next(x for x in done.stdout.splitlines() if " connections, read coalescing 0 ms: server CPU" in x)
    calls = int(line.split(" calls,")[0].rsplit(" ", 1)[1])
    assert " 0 failed, 0 lost " in line and "(connected 100, 0 connect errors" in line, line
    assert 190 <= calls <= 200, line  # 100 connections x 1 call/s x 2 s, each call's phase random


@pytest.mark.parametrize("over", ["ws", "wt"])
def test_rpc_sessions_bench_runs_its_clients_over_a_web_transport(over: str) -> None:
    """bench/rpc_sessions.py --over ws/wt, small: 20 Python clients of the server's WebSocket or
    WebTransport listener each make their call every second of the window; none fails or is lost."""
    done = run_bench(
        "rpc_sessions.py", ["--over", over, "--sessions", "20", "--seconds", "2", "--procs", "1"]
    )
    assert f"over {over}," in done.stdout, done.stdout
    line = next(x for x in done.stdout.splitlines() if " connections, read coalescing 0 ms: server CPU" in x)
    calls = int(line.split(" calls,")[0].rsplit(" ", 1)[1])
    assert " 0 failed, 0 lost " in line and "(connected 20, 0 connect errors" in line, line
    assert 36 <= calls <= 40, line  # 20 connections x 1 call/s x 2 s, each call's phase random


def test_wt_flood_bench_sends_retries_past_the_budget_and_the_client_is_served() -> None:
    """bench/wt_flood.py, small: 400 spoofed Initials in 1 s against the default budget (100 at
    once, 50 a second): the rest get Retries and make no connection, and the legitimate client's
    calls all succeed. (How many get through depends on how long the flood really took: on a
    loaded machine its second stretches, and the budget refills meanwhile.)"""
    done = run_bench("wt_flood.py", ["--rates", "400", "--seconds", "1", "--contenders", "budget"])
    line = next(x for x in done.stdout.splitlines() if x.startswith("budget "))
    retries = int(line.split("Retries ")[1].split(";")[0])
    held = int(line.split("QUIC connections held ")[1].split(",")[0])
    assert retries > 0 and held + retries <= 401, (
        line
    )  # 400 sent (+ the client): each made a connection or got a Retry
    assert " 0 failed" in line and " legitimate client 0 of" not in line, line


def test_fanout_bench_pairs_each_rounds_server_cpu_with_grpcios() -> None:
    """bench/fanout.py's closing lines: the server's CPU per delivery against grpcio's, round by
    round (the contenders ran back to back in each), at each rate; a step a contender did not
    hold has no ratio, and says so."""
    sys.path.insert(0, str(BENCH))
    try:
        import fanout
    finally:
        sys.path.remove(str(BENCH))

    def step(rate: float, us: float, achieved: float | None = None) -> dict[str, float]:
        return {
            "rate": rate,
            "achieved_rate": rate if achieved is None else achieved,
            "ratio": 1.0,
            "server_us_per_delivery": us,
        }

    results = {
        "kcprpc": [[step(10, 18.0), step(30, 15.0)], [step(10, 20.0), step(30, 14.0)]],
        "grpcio": [[step(10, 36.0), step(30, 28.0, achieved=25.0)], [step(10, 32.0), step(30, 28.0)]],
    }
    ten, thirty = fanout.cpu_ratio_lines(results, [10.0, 30.0])
    assert ten == "kcprpc / grpcio server CPU per delivery at 10/s, per round: 0.50 0.62; median x0.56"
    assert thirty.startswith(
        "kcprpc / grpcio server CPU per delivery at 30/s, per round: n/a 0.50; median x0.50"
    )
    assert thirty.endswith("(n/a: a contender did not hold the rate)")
    assert fanout.cpu_ratio_lines({"kcprpc": results["kcprpc"]}, [10.0]) == []  # no grpcio: no ratio


def test_decode_walk_bench_times_each_walk_beside_msgpacks_decode() -> None:
    """bench/decode_walk.py, small: a row per body with a positive figure for each walk the build
    has (the C walk in the compiled build only) and for msgpack's decode (the collector on, and
    paused), and the kept publish."""
    from kcprpc import msgpack_size

    done = run_bench("decode_walk.py", ["--rounds", "1", "--seconds", "0.01"])
    lines = done.stdout.splitlines()
    walks = 2 if msgpack_size.native() else 1
    assert ("C walk: built" in lines[0]) == (walks == 2), done.stdout
    rows = [ln for ln in lines if ln.startswith(("chat message", "game state", "40 KB", "60 KB", "24 KB"))]
    assert len(rows) == 6, done.stdout
    for row in rows:
        figures = [float(x) for x in row.split()[-(walks + 2 + (walks == 2)) :]]
        assert all(f > 0 for f in figures), row
    assert any(ln.startswith("kept publish (chat)") for ln in lines), done.stdout
