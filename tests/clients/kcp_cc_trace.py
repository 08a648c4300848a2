"""A seeded bulk flow under the Python congestion controller (kcp.congestion's BBRLite, driven by
kcp.session_cc's SessionCC as a session drives it), printed as JSON for the TypeScript
differential test (clients/typescript/test/kcp_cc.test.ts).

Engine 0 sends through a simulated bottleneck: a rate in bytes per ms, a tail-drop queue, a
one-way delay and random loss; engine 1 receives and acks over an uncongested return path. The
application writes bulk data (with pauses, so that some rounds are app-limited) and now and then a
small message. As in kcp.session, engine 0's receive batches are followed by
``SessionCC.after_input`` and a flush under the controller, and its timer wakes at the earlier of
``check()`` and ``SessionCC.next_send``. The script records every operation (``ops``) and what it
returned (``results``): the datagrams each flush emitted (length and CRC-32), the wake-up times, and the
controller's and the engine's state after each of engine 0's steps, so a replay compares them all.

Usage: python tests/clients/kcp_cc_trace.py SEED CONFIG  (CONFIG: bulk, lossy, bursts, trickle, mtu, probe_rtt)
"""

from __future__ import annotations

import json
import random
import sys
import zlib
from pathlib import Path
from typing import Any

from kcp.congestion import BBRLite
from kcp.session_cc import SessionCC
from kcp.stats import Counters

sys.path.append(str(Path(__file__).resolve().parents[2]))  # the checkout, after an installed kcp
from tests.clients.kcp_engine_trace import engine_pair, set_recovery

CONV = 0x01020304
# the Python session's defaults (kcp.session_setup.make_engine): nodelay, windows, adaptive recovery
RECOVERY: dict[str, Any] = {"flight": 8, "adaptive": True, "copies": 2, "max_copies": 6, "gap": 10}
CONFIGS: dict[str, dict[str, Any]] = {
    # 10 Mbit/s, 20 ms one way, a 50 ms queue, 1 % loss: STARTUP, DRAIN, PROBE_BW's cycle
    "bulk": {"rate": 1250, "delay": 20, "queue_ms": 50, "loss": 0.01, "steps": 3000},
    # 4 Mbit/s, 40 ms one way, 10 % loss: the loss compensation, fast resend, the RTO floor
    "lossy": {"rate": 500, "delay": 40, "queue_ms": 100, "loss": 0.1, "steps": 3000},
    # the application pauses: app-limited rounds, quiet flushes, small messages between bursts
    "bursts": {"rate": 2500, "delay": 10, "queue_ms": 30, "loss": 0.02, "steps": 3000, "pause_p": 0.02},
    # bulk, then a trickle of full segments under loss: the loss compensation's sample falls to
    # about 16 segments over its 10 rounds, the least it counts
    "trickle": {
        "rate": 1250,
        "delay": 20,
        "queue_ms": 50,
        "loss": 0.1,
        "steps": 5000,
        "trickle_after": 1200,
        "trickle_p": 0.035,
    },
    # the segment size changes mid-flow (a path MTU probe, set_mtu)
    "mtu": {"rate": 1250, "delay": 15, "queue_ms": 40, "loss": 0.02, "steps": 2500, "mtu_at": 1200},
    # a short min RTT window: PROBE_RTT, then a deeper queue that the RTT reading drains
    "probe_rtt": {
        "rate": 800,
        "delay": 25,
        "queue_ms": 200,
        "loss": 0.0,
        "steps": 3500,
        "bbr": {"min_rtt_window": 400, "probe_rtt_ms": 100},
    },
}
CC_STATE = ("state", "bw", "min_rtt", "min_rtt_stamp", "rounds", "tokens", "lost_segs", "loss_comp",
            "pacing_gain", "cwnd_gain", "cwnd", "pacing_rate", "measured")  # fmt: skip
ENG_STATE = ("cwnd", "nocwnd", "rx_minrto", "rx_rto", "rx_srtt", "snd_una", "snd_nxt")


def pattern(n: int, b: int) -> bytes:
    """What a ``send`` op writes: ``n`` bytes counting up from ``b``."""
    return bytes((b + i) & 0xFF for i in range(n))


def cc_state(cc: BBRLite) -> list[Any]:
    return [v.value if f == "state" else v for f in CC_STATE for v in (getattr(cc, f),)]


def run(seed: int, name: str) -> dict[str, Any]:
    cfg = CONFIGS[name]
    rng = random.Random(seed)
    outs, engines = engine_pair(CONV)
    ops: list[dict[str, Any]] = []
    results: list[Any] = []
    bbr = cfg.get("bbr", {})
    ops.append({"op": "config", "recovery": RECOVERY, "bbr": bbr})
    results.append(None)
    for eng in engines:
        eng.nodelay(1, 10, 2, 1)
        eng.wndsize(128, 128)
        eng.setmtu(1400)
        eng.stream = 1
        set_recovery(eng, RECOVERY)
    engines[0].counters = Counters()
    sc = SessionCC(engines[0], BBRLite(engines[0].mss, **bbr))
    rate, delay = cfg["rate"], cfg["delay"]
    qlimit = rate * cfg["queue_ms"]
    now = rng.choice([1000, 3_000_000])
    link_free = float(now)  # when the bottleneck finishes what is queued
    queue: list[tuple[float, int]] = []  # (leaves the bottleneck at, bytes) still queued
    in_flight: list[tuple[float, int, int]] = []  # (deliver at, to, index in outs[1 - to])
    seen = [0, 0]
    wake = now
    paused_until = 0

    def collect(e: int) -> list[str]:
        nonlocal link_free
        new = outs[e][seen[e] :]
        for i in range(seen[e], len(outs[e])):
            n = len(outs[e][i])
            if rng.random() < cfg["loss"]:
                continue
            if e == 1:  # the return path: delay only
                in_flight.append((now + delay + rng.random(), 0, i))
                continue
            while queue and queue[0][0] <= now:
                queue.pop(0)
            if sum(q[1] for q in queue) + n > qlimit:
                continue  # tail drop
            link_free = max(link_free, float(now)) + n / rate
            queue.append((link_free, n))
            in_flight.append((link_free + delay, 1, i))
        seen[e] = len(outs[e])
        return [f"{len(d)}:{zlib.crc32(d):08x}" for d in new]

    def step_state() -> None:
        e0 = engines[0]
        ops.append({"op": "cc_state"})
        results.append([cc_state(sc.cc), [getattr(e0, f) for f in ENG_STATE], sc.quiet(e0)])

    for step in range(cfg["steps"]):
        now += rng.randint(1, 3)
        if step == cfg.get("mtu_at"):
            ops.append({"op": "setmtu", "mtu": 1200})
            results.append(engines[0].setmtu(1200))
        # the application: bulk writes that keep the queue full, pauses, small messages
        e0 = engines[0]
        if now >= paused_until and rng.random() < cfg.get("pause_p", 0.0):
            paused_until = now + rng.randint(50, 600)
        n = 0
        if step >= cfg.get("trickle_after", cfg["steps"]):  # after the bulk: a segment now and then
            n = e0.mss if rng.random() < cfg["trickle_p"] else 0
        elif now >= paused_until and e0.waitsnd() < 256:
            n = rng.choice([64, 4000, 20000])
        elif rng.random() < 0.01:
            n = rng.randint(1, 200)
        if n:
            b = rng.randrange(256)
            ops.append({"op": "send", "n": n, "b": b})
            results.append(e0.send(pattern(n, b)))
        # deliveries due now, in order of arrival; each engine's batch ends in a flush
        due = sorted((x for x in in_flight if x[0] <= now), key=lambda x: x[0])
        fed = [False, False]
        for x in due:
            in_flight.remove(x)
            _, to, idx = x
            ops.append({"op": "input", "e": to, "now": now, "idx": idx})
            results.append(engines[to].input(outs[1 - to][idx], now))
            fed[to] = True
        if fed[1]:
            ops.append({"op": "recv", "e": 1})
            got = 0
            while (m := engines[1].recv()) is not None:
                got += len(m)
            results.append(got)
            ops.append({"op": "flush", "e": 1, "now": now})
            engines[1].flush(now)
            results.append(collect(1))
        if fed[0]:
            ops.append({"op": "after_input", "now": now})
            sc.after_input(e0, now)
            results.append(None)
            ops.append({"op": "cc_flush", "now": now})
            sc.flush(e0, now)
            results.append(collect(0))
        if now >= wake:
            ops.append({"op": "cc_update", "now": now})
            sc.update(e0, now)
            results.append(collect(0))
        # the next wake-up, as kcp.session's _post: check(), or the pacer's time if earlier
        ops.append({"op": "wake", "now": now})
        wake = e0.check(now)
        if e0.snd_queue:
            t = sc.next_send(e0, now)
            if t >= 0 and t < wake:
                wake = t
        results.append(wake)
        ops.append({"op": "update", "e": 1, "now": now})
        engines[1].update(now)
        results.append(collect(1))
        if step % 7 == 0:
            step_state()
    step_state()
    return {"seed": seed, "config": name, "ops": ops, "results": results}


if __name__ == "__main__":
    json.dump(run(int(sys.argv[1]), sys.argv[2]), sys.stdout)
