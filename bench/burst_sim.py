"""Sequential calls over a simulated lossy link, engine to engine (issue 15): what the KCP
engine's loss recovery does to call latency under random and burst loss, in virtual time.

    python bench/burst_sim.py                      # the default link settings, every recovery mode
    python bench/burst_sim.py -n 5000 --delay 40 --links "ge1-25=ge_p=0.01,ge_r=0.25"

Each call is one 64-byte message each way (a unary call): the client engine sends it, the server
engine answers when it has read it, and the latency is the virtual time until the client has read
the answer. Acks are flushed at once after each input (``SessionConfig.ack_nodelay``). The link is
:class:`kcp.simlink.SimLink` (seeded; Gilbert-Elliott as linkemu models it, per datagram). It prints
p50 / p99 / max in ms and datagrams and bytes per call. No sockets, no real time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kcp.config import SessionConfig  # noqa: E402
from kcp.engine import KCP  # noqa: E402
from kcp.simlink import SimLink, call_latencies  # noqa: E402

LINKS = "random5=loss=0.05;ge1-25=ge_p=0.01,ge_r=0.25;ge1-10=ge_p=0.01,ge_r=0.10;ge3-25=ge_p=0.03,ge_r=0.25;clean="


def engine(conv: int, cfg: SessionConfig, recovery: dict[str, Any]) -> KCP:
    eng = KCP(conv, None)
    eng.nodelay(cfg.nodelay, cfg.interval, cfg.resend, cfg.nc)
    eng.wndsize(cfg.snd_wnd, cfg.rcv_wnd)
    eng.setmtu(cfg.mtu - 24)
    eng.stream = 1
    for k, v in recovery.items():
        setattr(eng, k, v)
    return eng


def run(n: int, delay: int, link: dict[str, float], recovery: dict[str, Any], seed: int) -> dict[str, Any]:
    cfg = SessionConfig()
    a = engine(1, cfg, recovery)
    b = engine(1, cfg, recovery)
    LAST[:] = [a, b]
    ab = SimLink(seed=seed, delay=delay, **link)  # type: ignore[arg-type]
    ba = SimLink(seed=seed + 1, delay=delay, **link)  # type: ignore[arg-type]
    a.output = ab.send
    b.output = ba.send
    lat = sorted(call_latencies(a, b, ab, ba, n))
    pkts = ab.sent + ba.sent
    return {
        "p50": lat[len(lat) // 2],
        "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "max": lat[-1],
        "pkts": pkts / n,
        "loss": (ab.lost + ba.lost) / max(1, pkts),
        "copies": f"{a.recovery_copies}/{b.recovery_copies}",
    }


def parse_links(spec: str) -> list[tuple[str, dict[str, float]]]:
    out = []
    for item in spec.split(";"):
        label, _, opts = item.partition("=")
        kw = {k: float(v) for k, v in (o.split("=") for o in opts.split(",") if o)}
        out.append((label, kw))
    return out


LAST: list[KCP] = []  # the engines of the last run (for inspection)
MODES: dict[str, dict[str, Any]] = {
    "ikcp": {},
    "sparse1": {"recovery_flight": 8, "recovery_copies": 1},
    "sparse2": {"recovery_flight": 8, "recovery_copies": 2},
    "sparse3": {"recovery_flight": 8, "recovery_copies": 3},
    "sparse4": {"recovery_flight": 8, "recovery_copies": 4},
    "sparse6": {"recovery_flight": 8, "recovery_copies": 6},
    "adaptive": {"recovery_flight": 8, "recovery_adaptive": True, "recovery_copies": 2},
    "adaptive8": {"recovery_flight": 8, "recovery_adaptive": True, "recovery_copies": 2, "recovery_max_copies": 8},
    "lead1+3": {"recovery_flight": 8, "recovery_copies": 3, "recovery_lead": 1},
    "lead2+4": {"recovery_flight": 8, "recovery_copies": 4, "recovery_lead": 2},
    "auto": {"recovery_flight": 8, "recovery_adaptive": True, "recovery_copies": 2, "recovery_auto_lead": 2},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--delay", type=int, default=40, help="one-way delay, ms")
    ap.add_argument("--links", default=LINKS)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    print(f"{'link':10} {'mode':12} {'p50':>6} {'p99':>6} {'max':>6} {'pkts/call':>9} {'loss%':>6} copies")
    for label, link in parse_links(a.links):
        for mode in a.modes.split(","):
            r = run(a.n, a.delay, link, MODES[mode], a.seed)
            print(
                f"{label:10} {mode:12} {r['p50']:6.0f} {r['p99']:6.0f} {r['max']:6.0f} "
                f"{r['pkts']:9.2f} {100 * r['loss']:6.2f} {r['copies']}"
            )


if __name__ == "__main__":
    main()
