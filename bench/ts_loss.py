"""Sequential unary calls from the Node client across a lossy link: its loss recovery, measured.

A call is one message each way, so a lost request is the client's to recover: the TypeScript
client now retransmits small flights as the Python session does (``lossRecovery: "adaptive"``,
docs/tuning.md "Loss recovery"). This compares, on the same seeded link, alternated per round:

* ``node``: the Node client with its default (``"adaptive"``);
* ``node-ikcp``: the Node client with ``lossRecovery: "ikcp"`` (what it did before: ikcp's one
  retransmission per RTO with its backoff);
* ``python``: the Python client, default settings (for reference).

The server is one kcprpc process (bench/rpc.py's ``bench.Echo``, keyless secure mode, its own
default recovery for the answers). Each contender run gets a fresh ``python -m kcp.relay`` in front
of it, with the same seed: ``--delay`` ms each way and either random loss (``--loss``) or
Gilbert-Elliott bursts (``--ge-p``/``--ge-r``, linkemu's model). Per contender: ``--calls``
sequential 64-byte calls after 20 warm-up calls; p50, p99 and max latency, and the UDP payload
bytes (both ways, the client's counters) per call. Calls have no deadline; each run is bounded
(``--limit``).

    python bench/ts_loss.py                                   # bursts of ~4 (ge 1/25), 40 ms, 3 rounds
    python bench/ts_loss.py --links "ge1-25=--ge-p 1 --ge-r 25;random5=--loss 5" --calls 500
    python bench/ts_loss.py --quick                           # one short round
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from _common import ROOT, medians, stop_process
from ts_client import LOAD_JS, build

CONTENDERS = ("node", "node-ikcp", "python")


def start_relay(target: int, link: str, delay: float, seed: int) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "kcp.relay", "--listen", "127.0.0.1:0", "--target", f"127.0.0.1:{target}",
           "--delay", str(delay), "--seed", str(seed), *shlex.split(link)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "relay 127.0.0.1:PORT -> ..."
    if not line.startswith("relay "):
        stop_process(proc)
        sys.exit(f"the relay did not start: {line!r}")
    return proc, int(line.split()[1].rsplit(":", 1)[1])


def run_one(kind: str, port: int, args: argparse.Namespace) -> dict[str, float]:
    if kind == "python":  # bench/ts_client.py's Python contender, sequential calls only
        cmd = [sys.executable, str(Path(__file__).with_name("ts_client.py")), "--py-client", "--port", str(port),
               "--seconds", "0", "--warmup", "20", "--calls", str(args.calls)]  # fmt: skip
    else:
        recovery = "ikcp" if kind == "node-ikcp" else "adaptive"
        cmd = ["node", str(LOAD_JS), "--port", str(port), "--seconds", "0", "--warmup", "20",
               "--calls", str(args.calls), "--loss-recovery", recovery, "--limit", str(args.limit)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.limit + 10, cwd=ROOT, check=False)
    if done.returncode != 0:
        sys.exit(
            f"the {kind} client failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    res: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return {k: res[k] for k in ("p50_ms", "p99_ms", "max_ms", "bytes_lat")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--links", default="ge1-25=--ge-p 1 --ge-r 25",
                    help='"NAME=RELAY OPTIONS;..." (kcp.relay loss options), default bursts of ~4')  # fmt: skip
    ap.add_argument("--delay", type=float, default=40.0, help="one-way delay, ms (default 40)")
    ap.add_argument("--calls", type=int, default=500, help="sequential calls per contender and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help=f"from: {', '.join(CONTENDERS)}")
    ap.add_argument("--limit", type=float, default=300.0, help="seconds a client run may take")
    ap.add_argument("--quick", action="store_true", help="one round of 60 calls")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.calls = 1, 60
    contenders = args.contenders.split(",")
    if unknown := [c for c in contenders if c not in CONTENDERS]:
        sys.exit(f"unknown contender(s) {', '.join(unknown)}: choose from {', '.join(CONTENDERS)}")
    build()
    from rpc import start_server

    print(f"# {args.calls} sequential 64 B calls per run, {args.delay:g} ms each way, seed {args.seed}")
    server, port = start_server("kcprpc", "uvloop", "secure")
    try:
        for spec in args.links.split(";"):
            name, _, link = spec.partition("=")
            results: dict[str, list[dict[str, float]]] = {c: [] for c in contenders}
            for r in range(args.rounds):
                for c in contenders if r % 2 == 0 else list(reversed(contenders)):
                    relay, rport = start_relay(port, link, args.delay, args.seed + r)
                    try:
                        res = run_one(c, rport, args)
                    finally:
                        stop_process(relay)
                    results[c].append(res)
                    print(f"{name} round {r + 1} {c:9}  p50 {res['p50_ms']:7.1f}  p99 {res['p99_ms']:7.1f}"
                          f"  max {res['max_ms']:7.1f} ms  {res['bytes_lat']:6.0f} B/call", flush=True)  # fmt: skip
            med = medians(results)
            for c, m in med.items():
                print(f"{name} median {c:9}  p50 {m['p50_ms']:7.1f}  p99 {m['p99_ms']:7.1f}"
                      f"  max {m['max_ms']:7.1f} ms  {m['bytes_lat']:6.0f} B/call")  # fmt: skip
            if "node" in med and "node-ikcp" in med:
                a, b = med["node"], med["node-ikcp"]
                print(f"{name} node / node-ikcp: p99 x{a['p99_ms'] / b['p99_ms']:.2f}, max x{a['max_ms'] / b['max_ms']:.2f},"
                      f" bytes x{a['bytes_lat'] / b['bytes_lat']:.2f}", flush=True)  # fmt: skip
    finally:
        stop_process(server)


if __name__ == "__main__":
    main()
