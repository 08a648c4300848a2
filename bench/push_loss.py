"""Pushes to receive-only subscribers across a lossy, delayed link: what held acks cost and save.

One process: a kcprpc server (default wire: secure, anonymous), ``--subscribers`` clients that
only receive, subscribed to one topic, and a :class:`kcp.relay.LossyRelay` between them
(``--loss`` % each way, ``--delay`` ms one way, seeded). The server publishes a small event at
``--rate`` per second; each delivery's latency is the client's ``time.monotonic_ns()`` minus the
publisher's, taken just before the publish (one process, one clock). Contenders, alternated
between rounds (A B, B A), differ only in the subscribers' ``SessionConfig.ack_hold``:

* ``held``: ``ack_hold=200``: once a subscriber only receives, it acks every second push
  (docs/tuning.md "Delayed acks");
* ``every``: ``ack_hold=0``, the default: an ack datagram per push.

Per contender: delivery latency p50 / p99 / max, deliveries missing at the end of the drain, the
datagrams the subscribers sent per delivery (the relay's count, lost ones included) and the
segments the process retransmitted per 1,000 deliveries (``kcp.snmp()``: almost all the server's).
A warm-up (``--warmup`` s, not counted) lets the subscribers settle into holding; each contender
starts with new sessions, so a session's first loss is part of the window.

    python bench/push_loss.py --rounds 2                     # 5 % loss, 20 ms one way
    python bench/push_loss.py --loss 0 --rounds 1 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from _common import percentile, run_loop
from pydantic import BaseModel

import kcp
import kcprpc
from kcp.relay import LossyRelay

TOPIC = "pushloss"


@kcprpc.event("bench.PushLossTick")
class Tick(BaseModel):
    """One published event."""

    seq: int
    t_ns: int  # time.monotonic_ns() just before the publish


class PushLossService(kcprpc.Service, name="bench.PushLoss", topics={TOPIC: [Tick]}):
    """Only the topic: the bench publishes from the server's side."""

    async def Ping(self) -> int:
        return 0


async def _one(args: argparse.Namespace, hold: int, seed: int) -> dict[str, float]:
    server = kcprpc.Server([PushLossService()], "127.0.0.1", 0)
    _h, port = await server.start()
    relay = LossyRelay(("127.0.0.1", 0), ("127.0.0.1", port), loss=args.loss, delay=args.delay, seed=seed)
    await relay.start()
    transport = kcprpc.Transport(session=kcp.SessionConfig(ack_hold=hold))
    clients = [
        kcprpc.connect("127.0.0.1", relay.address[1], transport=transport) for _ in range(args.subscribers)
    ]
    lat: list[float] = []
    measuring = False
    got = 0

    def on_tick(t: Tick) -> None:
        nonlocal got
        if measuring and t.seq >= 0:
            lat.append((time.monotonic_ns() - t.t_ns) / 1e6)
            got += 1

    try:
        await asyncio.wait_for(asyncio.gather(*(c.connect() for c in clients)), 60)
        for c in clients:
            c.on(Tick, on_tick)
        await asyncio.wait_for(asyncio.gather(*(c.subscribe(TOPIC) for c in clients)), 60)
        period = 1.0 / args.rate
        loop = asyncio.get_running_loop()

        async def publish(seconds: float, first_seq: int) -> int:
            start = loop.time()
            n = int(seconds * args.rate)
            for i in range(n):  # bounded: rate x seconds events
                await asyncio.sleep(max(0.0, start + i * period - loop.time()))
                await server.push.publish(TOPIC, Tick(seq=first_seq + i, t_ns=time.monotonic_ns()))
            return n

        await publish(args.warmup, -1_000_000)
        await asyncio.sleep(1.0)  # the warm-up's retransmissions end
        up0 = relay.stats["up_delivered"] + relay.stats["up_dropped"]
        snmp0 = kcp.snmp()
        measuring = True
        sent = await publish(args.seconds, 0)
        expected = sent * args.subscribers
        deadline = loop.time() + 10.0
        while got < expected and loop.time() < deadline:  # the drain: retransmissions land
            await asyncio.sleep(0.05)
        measuring = False
        snmp1 = kcp.snmp()
        up = relay.stats["up_delivered"] + relay.stats["up_dropped"] - up0
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await relay.close()
        await server.shutdown(grace=0.5)
    lat.sort()
    retrans = snmp1.get("retrans_segs", 0) - snmp0.get("retrans_segs", 0)
    return {
        "p50": percentile(lat, 0.5) if lat else float("nan"),
        "p99": percentile(lat, 0.99) if lat else float("nan"),
        "max": lat[-1] if lat else float("nan"),
        "missing": float(expected - got),
        "up_per_delivery": up / max(1, got),
        "retrans_per_1000": 1000.0 * retrans / max(1, got),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--subscribers", type=int, default=20)
    ap.add_argument("--rate", type=float, default=10.0, help="events per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured, per contender and round")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--loss", type=float, default=5.0, help="loss %% each way")
    ap.add_argument("--delay", type=float, default=20.0, help="one-way delay, ms")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, contenders alternated")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    contenders = {"held": 200, "every": kcp.SessionConfig().ack_hold}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    print(
        f"# {args.subscribers} subscribers, {args.rate:g} events/s, {args.loss:g} % loss each way, "
        f"{args.delay:g} ms one way, {args.seconds:g} s measured per contender and round"
    )
    for r in range(args.rounds):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            # the same seed for both contenders of a round: the same loss pattern per datagram
            res = run_loop(_one(args, contenders[name], args.seed + r))
            results[name].append(res)
            print(
                f"{name:6} round {r + 1}: p50 {res['p50']:6.1f} ms  p99 {res['p99']:6.1f} ms  "
                f"max {res['max']:6.1f} ms  missing {res['missing']:.0f}  "
                f"subscriber datagrams/delivery {res['up_per_delivery']:.2f}  "
                f"retransmitted/1000 deliveries {res['retrans_per_1000']:.1f}",
                flush=True,
            )
    for key in ("p50", "p99", "max", "up_per_delivery", "retrans_per_1000"):
        ratios = [h[key] / e[key] for h, e in zip(results["held"], results["every"], strict=True) if e[key]]
        med = statistics.median(ratios) if ratios else float("nan")
        print(f"held / every {key}: per round {' '.join(f'{x:.2f}' for x in ratios)}; median x{med:.2f}")


if __name__ == "__main__":
    main()
