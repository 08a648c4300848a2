"""Browsers' transports against KCP: push fan-out to N WebSocket (or WebTransport) and N KCP
subscribers of one server.

The fan-out of ``bench/fanout.py`` (its processes, stepped publish rates and figures: read its
docstring), on one kcprpc server process that listens on both transports:

* the server: ``bench/fanout.py``'s ``FanoutService`` on its KCP listener (``--mode``, default the
  secure wire) and a WebSocket listener (``kcprpc.web.listen_websocket``, ``ws://``, default
  options) in the same process and event loop;
* ``kcp``: N subscribers over KCP (``kcprpc.connect``), in ``--procs`` processes, on topic
  ``fanout:kcp``;
* ``ws``: N subscribers over WebSocket (``kcprpc.web.connect_websocket``: the same Client over the
  web wire, docs/wire-format/web.md), in ``--procs`` other processes, on topic ``fanout:ws``;
* ``wt`` (``--sides kcp,wt`` or ``kcp,ws,wt``): N subscribers over WebTransport
  (``kcprpc.web.connect_webtransport``, QUIC and TLS in Python, pinned to a development
  certificate the server process makes), on topic ``fanout:wt``;
* the publisher (one process, over KCP: its transport is not under test) calls
  ``PublishTo(group, tick)``, which publishes on one side's topic.

All 2N sessions connect once and stay for the whole run, so the server holds both sides at every
step; each round steps the publish rate up on one side's topic (the other side's N sessions sit
idle on the same server), and the sides alternate between rounds (A B, B A, ...). Per side and
round: the highest rate whose delivery held with p99 <= ``--p99-limit`` ms, and at
``--cost-rate`` (a step both sides keep up with) p50/p99 and the server's and subscribers' CPU
per delivery. Then the medians over the rounds and the ratios WS / KCP of each figure.

``FANOUT_PROFILE=FILE`` runs the server under cProfile (CPU time) and writes its stats to FILE;
with ``--sides ws`` (or ``kcp``) only that side's subscribers connect and publish.

    python bench/web_fanout.py --quick               # 200 + 200 subscribers, 2 short steps
    python bench/web_fanout.py --rounds 2            # 1,000 + 1,000 subscribers, 4 processes each
    python bench/web_fanout.py --sides kcp,wt --subscribers 200 --procs 2 --rounds 2
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from fanout import (
    Dial,
    Run,
    add_run_args,
    at_rate,
    fmt,
    highest,
    median_of,
    run_args,
    step_rates,
    summary,
)

import kcprpc

SIDES = ("kcp", "ws", "wt")
WS_PATH = "/kcprpc"  # the WebSocket listener's default path (docs/wire-format/web.md)
FIGURES = ("p50_ms", "p99_ms", "server_us_per_delivery", "subs_us_per_delivery")


async def _listen_web(sides: tuple[str, ...], server: kcprpc.Server) -> dict[str, Any]:
    """The web listeners of ``sides`` beside ``server``'s KCP listener (127.0.0.1, any port): the
    WebSocket's port (``ws``), the WebTransport's URL and certificate hash (``wt``)."""
    from kcprpc.web import WebTransportOptions, listen_websocket, listen_webtransport
    from kcprpc.web.certs import make_dev_certificate

    out: dict[str, Any] = {}
    if "ws" in sides:
        ws = await listen_websocket(server, "127.0.0.1", 0)
        out["ws"] = int(ws.address[1])
    if "wt" in sides:
        dev = make_dev_certificate(days=3)
        cert, key = dev.write(Path(tempfile.mkdtemp(prefix="kcprpc-bench-wt-")))
        wt = await listen_webtransport(
            server, "127.0.0.1", 0, WebTransportOptions(certificate=cert, private_key=key)
        )
        out["wt"] = (wt.url, dev.sha256)
    return out


def _ws_dial(url: str) -> Dial:
    def dial() -> kcprpc.Client:
        from kcprpc.web import connect_websocket

        return connect_websocket(url)

    return dial


def _wt_dial(url: str, sha256: bytes) -> Dial:
    def dial() -> kcprpc.Client:
        from kcprpc.web import connect_webtransport

        return connect_webtransport(url, certificate_hashes=[sha256])

    return dial


class WebRun(Run):
    """One server process with a KCP listener and the web ones, ``--subscribers`` subscribers per
    side in ``--procs`` processes each, one publisher: :attr:`sides` are the sides' views of it
    (each a :class:`Run` whose steps publish on its own group's topic and count its own subscribers)."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, "kcprpc", "+".join(args.sides))
        if set(args.sides) - {"kcp"}:
            self.listen = functools.partial(_listen_web, tuple(args.sides))
        self.sides: dict[str, Run] = {}

    def __enter__(self) -> WebRun:
        a = self.args
        port = self.start_server("kcprpc", a.mode, a.loop)
        dials: dict[str, Dial | None] = {"kcp": None}
        web = self.listened or {}
        if "ws" in web:
            dials["ws"] = _ws_dial(f"ws://127.0.0.1:{web['ws']}{WS_PATH}")
        if "wt" in web:
            dials["wt"] = _wt_dial(*web["wt"])
        started: dict[str, tuple[list[Connection], int, float]] = {}
        for side in a.sides:
            t0 = time.perf_counter()
            subs, n = self.start_subscribers(port, "kcprpc", a.mode, a.loop, dials[side], side)
            started[side] = (subs, n, time.perf_counter() - t0)
        self.start_publisher(port, "kcprpc", a.mode, a.loop)
        for side, (subs, n, connect_s) in started.items():
            view = copy.copy(self)
            view.label, view.group, view.subs, view.n, view.connect_s = side, side, subs, n, connect_s
            self.sides[side] = view
        return self


def report(args: argparse.Namespace, results: dict[str, list[list[dict[str, float]]]]) -> dict[str, Any]:
    """Print each round's highest sustained step per side, the medians and each web side's ratio
    to KCP;
    return the medians (side -> figure -> value)."""
    med: dict[str, dict[str, float | None]] = {}
    print(f"# highest sustained rate per round (rate kept, >= 99 % delivered, p99 <= {args.p99_limit:g} ms)")
    for side, rounds in results.items():
        bests = [highest(steps, args.p99_limit) for steps in rounds]
        for i, b in enumerate(bests):
            print(f"{side:4} round {i + 1}: {summary(b, args.subscribers)}")
        m = med.setdefault(side, {})
        m["sustained"] = median_of([b["per_s"] if b else 0.0 for b in bests])
        delivered = [highest(steps, None) for steps in rounds]
        m["delivered"] = median_of([b["per_s"] if b else 0.0 for b in delivered])
        at = [at_rate(steps, args.cost_rate) for steps in rounds]
        for k in FIGURES:
            m[k] = median_of([r[k] if r else None for r in at])
    print(
        f"# medians of {args.rounds} rounds; p50, p99 and CPU per delivery at {args.cost_rate:g} publishes/s "
        f"({args.subscribers} subscribers per side)"
    )
    for side, m in med.items():
        print(
            f"{side:4} sustained {fmt(m['sustained'], '.0f')} deliveries/s (delivered {fmt(m['delivered'], '.0f')}/s) "
            f"| at {args.cost_rate:g}/s: p50 {fmt(m['p50_ms'])} ms p99 {fmt(m['p99_ms'])} ms, CPU per delivery: "
            f"server {fmt(m['server_us_per_delivery'])} us, subscribers {fmt(m['subs_us_per_delivery'])} us"
        )
    kcp = med.get("kcp")
    for side, web in med.items():
        if kcp is None or side == "kcp":
            continue

        def ratio(k: str, web: dict[str, float | None] = web, kcp: dict[str, float | None] = kcp) -> str:
            a, b = web[k], kcp[k]
            return "n/a" if a is None or not b else f"x{a / b:.2f}"

        print(
            f"ratio {side} / kcp: sustained {ratio('sustained')}, delivered {ratio('delivered')}, "
            f"p50 {ratio('p50_ms')}, p99 {ratio('p99_ms')}, server CPU per delivery "
            f"{ratio('server_us_per_delivery')}, subscribers' CPU per delivery {ratio('subs_us_per_delivery')}"
        )
    return med


def main(argv: list[str] | None = None) -> int:
    """Connect both sides once, step each side's rate in alternating rounds, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap, " per side")
    ap.add_argument("--sides", default="kcp,ws", help="of kcp, ws, wt (one alone: to profile it)")
    ap.add_argument(
        "--cost-rate",
        type=float,
        default=5.0,
        help="publishes/s of the p50/p99 and CPU figures (a rate of --rates)",
    )
    args = ap.parse_args(argv)
    rates = run_args(args)
    if args.quick and args.cost_rate not in rates:
        args.cost_rate = rates[0]
    args.sides = [s for s in args.sides.split(",") if s]
    if not args.sides or any(s not in SIDES for s in args.sides) or len(set(args.sides)) != len(args.sides):
        ap.error("--sides: of kcp, ws, wt")
    if args.cost_rate not in rates:
        ap.error(f"--cost-rate {args.cost_rate:g} is not one of --rates {args.rates}")
    print(
        f"# web fan-out: 1 publisher process -> 1 server process (KCP mode={args.mode} + web listeners, "
        f"loop={args.loop}) -> {args.subscribers} subscribers per side ({', '.join(args.sides)}) in "
        f"{args.procs} processes each, all connected for the whole run; cpus={os.cpu_count()}; "
        f"{args.seconds:g} s per step; sustained = rate kept, >= 99 % delivered and p99 <= {args.p99_limit:g} ms",
        flush=True,
    )
    results: dict[str, list[list[dict[str, float]]]] = {side: [] for side in args.sides}
    with WebRun(args) as run:
        for r in range(args.rounds):  # sides alternate: A B, B A, ...
            for side in args.sides if r % 2 == 0 else args.sides[::-1]:
                load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
                print(f"# round {r + 1}, {side}: load average {load} (other processes share the cores)")
                results[side].append(step_rates(args, run.sides[side], rates, first_step=1000 * r))
    report(args, results)
    if args.every_rate:
        return 0  # a measurement of fixed steps: a failed step is a figure, not an error
    return 0 if all(highest(steps, None) for rounds in results.values() for steps in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
