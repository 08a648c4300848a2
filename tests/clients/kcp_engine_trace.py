"""A seeded KCP scenario run through the Python engine, printed as JSON for the TypeScript
differential test (clients/typescript/test/kcp_engine.test.ts).

Two engines (0 and 1) talk through a simulated lossy, reordering link. The script records every
operation it applies (``ops``) and what the engine returned (``results``): the datagrams each
update/flush emitted (hex), send/input return codes, recv results, check values, and the engines'
visible state at the end. Inputs name a datagram by its index in the sender's output list, so a
replay feeds the replaying engine's own datagrams and any difference shows up as a mismatch.

``python tests/clients/kcp_engine_trace.py picks`` prints the recovery's copy picks over a grid.

Usage: python tests/clients/kcp_engine_trace.py SEEDS CONFIG  (SEEDS: one seed, or several
comma-separated, which print a JSON list of their traces: one interpreter for a test's seeds;
CONFIG: normal, fast, smallwnd,
stall, stall_probe, stall_wins, stream, mtu; recovery, recovery_burst, recovery_lead, recovery_auto, recovery_auto_burst,
recovery_blackout: the sparse-flight loss recovery of docs/tuning.md, on small messages, with
random or Gilbert-Elliott burst loss, or an outage; held, held_lossy: held acks; reack,
reack_stream: repeated acks)
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

from kcp.engine import KCP, lead_copies_for, recovery_copies_for
from kcp.stats import Counters

CONV = 0x0A0B0C0D
STATE = ("snd_una", "snd_nxt", "rcv_nxt", "cwnd", "ssthresh", "rx_rto", "rx_srtt", "rx_rttval",
         "rmt_wnd", "probe_wait", "ts_probe", "xmit", "incr", "ts_flush", "state")  # fmt: skip

CONFIGS: dict[str, dict[str, Any]] = {
    "normal": {"steps": 900, "loss": 0.1, "max_size": 4000},
    "fast": {"nodelay": (1, 10, 2, 1), "wnd": (64, 128), "steps": 900, "loss": 0.15, "max_size": 6000},
    "smallwnd": {"nodelay": (2, 20, 1, 0), "wnd": (4, 128), "steps": 900, "loss": 0.2, "max_size": 3000},
    "stall": {"steps": 1500, "loss": 0.05, "max_size": 9000, "stall_until": 30000, "dt": 40},
    # the same with kcp.session's quicker window probes (loss_recovery="adaptive": 100 ms, at most 1 s)
    "stall_probe": {
        "steps": 1500,
        "loss": 0.05,
        "max_size": 9000,
        "stall_until": 30000,
        "dt": 40,
        "probe": (100, 1000),
    },
    # a slow reader (its window closes and reopens again and again) with ikcp's probes and the
    # receiver's repeated window updates (loss_recovery="adaptive"'s wins_repeat)
    "stall_wins": {
        "nodelay": (1, 10, 2, 1),
        "wnd": (128, 128),
        "steps": 3000,
        "loss": 0.15,
        "max_size": 30000,
        "dt": 40,
        "senders": (0,),
        "send_p": 0.6,
        "read_period": (900, 150),
        "wins": 3,
    },
    "stream": {"nodelay": (1, 10, 2, 1), "stream": True, "steps": 900, "loss": 0.1, "max_size": 5000},
    "mtu": {"mtu": 576, "nodelay": (0, 30, 3, 1), "steps": 900, "loss": 0.1, "max_size": 3000},
}
# the sparse-flight loss recovery (kcp.session_setup.make_engine's "adaptive" settings), on flights
# of a few small messages; "ge": Gilbert-Elliott bursts (enter, leave: bursts of 1 / leave packets)
_ADAPTIVE = {"flight": 8, "adaptive": True, "copies": 2, "max_copies": 6, "gap": 10}
_SPARSE = {"nodelay": (1, 10, 2, 1), "steps": 1500, "max_size": 300, "send_p": 0.08}
CONFIGS.update(
    {
        "recovery": {**_SPARSE, "loss": 0.1, "recovery": _ADAPTIVE},
        "recovery_burst": {**_SPARSE, "loss": 0.02, "ge": (0.06, 0.15), "steps": 4000, "recovery": _ADAPTIVE},
        "recovery_lead": {**_SPARSE, "loss": 0.08, "recovery": {**_ADAPTIVE, "lead": 1}},
        "recovery_auto": {**_SPARSE, "loss": 0.06, "steps": 2500, "recovery": {**_ADAPTIVE, "auto_lead": 2}},
        # a 2.5 s outage both ways: rounds past the quick ones, their backoff up to its cap
        "recovery_blackout": {**_SPARSE, "loss": 0.05, "blackout": (4000, 6500), "recovery": _ADAPTIVE},
        "recovery_auto_burst": {
            **_SPARSE,
            "loss": 0.04,
            "ge": (0.04, 0.2),
            "steps": 4000,
            "recovery": {**_ADAPTIVE, "auto_lead": 2},
        },
    }
)
# held acks (docs/wire-format/kcp.md): both engines hold-aware, engine 1 only receives and acks,
# holding its acks (ack_frg 1, now and then 0 for a while; its first ack of a flush says how long
# it waited), so engine 0 adds the hold to its RTO and leaves the wait out of its RTT samples
CONFIGS["held"] = {**_SPARSE, "loss": 0.05, "held": True, "senders": (0,), "steps": 2500,
                   "recovery": _ADAPTIVE}  # fmt: skip
CONFIGS["held_lossy"] = {**_SPARSE, "loss": 0.15, "held": True, "senders": (0,), "steps": 2500}
RECOVERY = ("recovery_copies", "recovery_lead", "recovery_rounds", "recovery_samples")
HELD = ("rto_extra", "ack_frg", "disorder")
# repeated acks (docs/wire-format/kcp.md "Repeated acks"): both engines agreed, large messages in
# wide windows through loss, so segments come above holes and their ACKs go again as REACKs
CONFIGS["reack"] = {"nodelay": (1, 10, 2, 1), "wnd": (128, 128), "steps": 1200, "loss": 0.15, "max_size": 20000,
                    "reack": True}  # fmt: skip
CONFIGS["reack_stream"] = {**CONFIGS["reack"], "stream": True, "loss": 0.08}
REACK = ("reacks_sent", "reacks_useful", "repeat_segs", "retrans_segs")


def engine_pair(conv: int) -> tuple[list[list[bytes]], list[KCP]]:
    """Two engines whose datagrams collect in ``outs[0]`` and ``outs[1]``: ``(outs, engines)``."""
    outs: list[list[bytes]] = [[], []]
    return outs, [KCP(conv, outs[0].append), KCP(conv, outs[1].append)]


def set_recovery(eng: KCP, rec: dict[str, Any]) -> None:
    """The sparse-flight loss recovery's settings of a trace's config (``recovery``)."""
    eng.recovery_flight = rec["flight"]
    eng.recovery_adaptive = rec["adaptive"]
    eng.recovery_copies = rec["copies"]
    eng.recovery_max_copies = rec["max_copies"]
    eng.recovery_gap = rec["gap"]
    eng.recovery_lead = rec.get("lead", 0)
    eng.recovery_auto_lead = rec.get("auto_lead", 0)


def run(seed: int, name: str) -> dict[str, Any]:
    cfg = CONFIGS[name]
    rng = random.Random(seed)
    outs, engines = engine_pair(CONV)
    ops: list[dict[str, Any]] = []
    results: list[Any] = []
    start = rng.choice([0, 1000, 0xFFFFFFFF - 20000])  # some runs cross the 32-bit clock wrap
    rec = cfg.get("recovery")
    held = bool(cfg.get("held"))
    reack = bool(cfg.get("reack"))
    ops.append({"op": "config", "nodelay": cfg.get("nodelay"), "wnd": cfg.get("wnd"),
                "stream": bool(cfg.get("stream")), "mtu": cfg.get("mtu"), "recovery": rec,
                "held": held, "reack": reack, "probe": cfg.get("probe"), "wins": cfg.get("wins", 0)})  # fmt: skip
    results.append(None)
    for eng in engines:
        if cfg.get("nodelay"):
            eng.nodelay(*cfg["nodelay"])
        if cfg.get("wnd"):
            eng.wndsize(*cfg["wnd"])
        if cfg.get("mtu"):
            eng.setmtu(cfg["mtu"])
        eng.stream = 1 if cfg.get("stream") else 0
        if rec:
            set_recovery(eng, rec)
        eng.hold_aware = held
        eng.ack_repeat = reack
        if cfg.get("probe"):
            eng.probe_init, eng.probe_limit = cfg["probe"]
        eng.wins_repeat = cfg.get("wins", 0)
        eng.counters = Counters()
    if held:
        engines[1].ack_frg = 1
    bad = [False, False]  # Gilbert-Elliott state per direction (cfg "ge")
    in_flight: list[tuple[int, int, int]] = []  # (deliver_at, to, index in outs[1 - to])
    seen = [0, 0]
    now = start

    def collect(e: int) -> list[str]:
        new = outs[e][seen[e] :]
        for i in range(seen[e], len(outs[e])):
            lost = rng.random() < cfg["loss"]
            if "blackout" in cfg:
                lost = lost or cfg["blackout"][0] <= now - start < cfg["blackout"][1]
            if "ge" in cfg:
                enter, leave = cfg["ge"]
                lost = lost or bad[e]
                bad[e] = rng.random() >= leave if bad[e] else rng.random() < enter
            if not lost:
                in_flight.append((now + rng.randint(5, 80), 1 - e, i))
            if rng.random() < 0.02:  # a duplicate
                in_flight.append((now + rng.randint(5, 120), 1 - e, i))
        seen[e] = len(outs[e])
        return [d.hex() for d in new]

    for _step in range(cfg["steps"]):
        now += rng.randint(1, cfg.get("dt", 25))
        e = rng.choice(cfg.get("senders", (0, 1)))
        r = rng.random()
        if r < cfg.get("send_p", 0.15):
            size = rng.choice([0, 1, rng.randint(1, 200), rng.randint(1, cfg["max_size"])])
            data = bytes(rng.getrandbits(8) for _ in range(size))
            ops.append({"op": "send", "e": e, "data": data.hex()})
            results.append(engines[e].send(data))
        elif r < 0.17:
            garbage = rng.randbytes(rng.randint(0, 60))
            ops.append({"op": "input_raw", "e": e, "now": now, "data": garbage.hex()})
            results.append(engines[e].input(garbage, now))
        # deliveries due now, in order of arrival time
        due = sorted((x for x in in_flight if x[0] <= now), key=lambda x: x[0])
        for x in due:
            in_flight.remove(x)
            _, to, idx = x
            ops.append({"op": "input", "e": to, "now": now, "idx": idx})
            results.append(engines[to].input(outs[1 - to][idx], now))
        for k in (0, 1):
            if k == 1 and now - start < cfg.get("stall_until", 0):
                continue
            if k == 1 and "read_period" in cfg:  # a slow reader: reads `reading` ms of every `period`
                period, reading = cfg["read_period"]
                if (now - start) % period >= reading:
                    continue
            ops.append({"op": "recv", "e": k})
            got = []
            while (m := engines[k].recv()) is not None:
                got.append(m.hex())
            results.append(got)
        if held:  # engine 1 holds: its first ack says how long it waited; now and then it stops
            if rng.random() < 0.01:
                frg = 1 - engines[1].ack_frg
                ops.append({"op": "ack_frg", "e": 1, "frg": frg})
                results.append(None)
                engines[1].ack_frg = frg
            if engines[1].ack_frg and rng.random() < 0.5:
                waited = rng.randint(0, 300)
                ops.append({"op": "hold_first_ack", "e": 1, "ms": waited})
                results.append(None)
                engines[1].hold_first_ack(waited)
        for k in (0, 1):
            ops.append({"op": "update", "e": k, "now": now})
            engines[k].update(now)
            results.append(collect(k))
            ops.append({"op": "check", "e": k, "now": now})
            results.append(engines[k].check(now))
        if rng.random() < 0.05:
            k = rng.randrange(2)
            ops.append({"op": "flush", "e": k, "now": now})
            engines[k].flush(now)
            results.append(collect(k))
    ops.append({"op": "state"})
    results.append([{f: getattr(eng, f) for f in STATE} for eng in engines])
    if rec:
        ops.append({"op": "recovery"})
        results.append([{f: getattr(eng, f) for f in RECOVERY} for eng in engines])
    if held:
        ops.append({"op": "held"})
        results.append([{f: getattr(eng, f) for f in HELD} for eng in engines])
    if reack:
        ops.append({"op": "reack"})
        results.append([{f: getattr(eng.counters, f) for f in REACK} for eng in engines])
    if cfg.get("wins"):
        ops.append({"op": "wins"})
        results.append([{"wins_repeated": eng.counters.wins_repeated} for eng in engines])
    return {"seed": seed, "config": name, "ops": ops, "results": results}


def picks() -> dict[str, list[list[int]]]:
    """The recovery's two picks over a grid of arguments, each row ``[*args, result]`` (``picks``)."""
    copies = [[r, f, c, m, recovery_copies_for(r, f, c, m)]
              for r in (0, 1, 8, 32, 100) for f in range(0, 9, 2) if f <= r
              for c in (1, 2, 3, 6) for m in (1, 4, 6, 16)]  # fmt: skip
    lead = [[n, f, c, m, lead_copies_for(n, f, c, m)]
            for n in (1, 31, 32, 127, 128, 255) for f in (0, 1, 2, 5, 9, 30, 60) if f <= n
            for c in (0, 1, 2) for m in (1, 2)]  # fmt: skip
    return {"copies": copies, "lead": lead}


if __name__ == "__main__":
    if sys.argv[1] == "picks":
        json.dump(picks(), sys.stdout)
    else:
        seeds = [int(x) for x in sys.argv[1].split(",")]
        traces = [run(seed, sys.argv[2]) for seed in seeds]
        json.dump(traces if "," in sys.argv[1] else traces[0], sys.stdout)
