"""Idle clients over a lossy link: how often a client declares a live server dead.

One process: a kcprpc server (default wire: secure, anonymous), ``--clients`` clients with the
default heartbeat (a PING a second, stretched up to 2.5 s while answered; dead after 5 s of
silence) and a :class:`kcp.relay.LossyRelay` between them (``--loss`` % each way, ``--delay`` ms
one way, seeded). Nobody calls anything: only heartbeats cross the link. Every reconnect is a
false alarm (the server was there all along); each is counted, with its reason.

    python bench/idle_heartbeat.py --seconds 90 --loss 5
"""

from __future__ import annotations

import argparse
import asyncio
import collections

from _common import run_loop

import kcprpc
from kcp.relay import LossyRelay


class Idle(kcprpc.Service, name="bench.Idle"):
    """Nothing is called: the clients only keep their connections alive."""

    async def ping(self) -> int:
        return 0


async def run(args: argparse.Namespace) -> None:
    server = kcprpc.Server([Idle()], "127.0.0.1", 0)
    _h, port = await server.start()
    relay = LossyRelay(
        ("127.0.0.1", 0), ("127.0.0.1", port), loss=args.loss, delay=args.delay, seed=args.seed
    )
    await relay.start()
    cfg = kcprpc.ClientConfig(reconnect=kcprpc.ReconnectPolicy(initial=0.05, maximum=0.2))
    clients = [kcprpc.connect("127.0.0.1", relay.address[1], config=cfg) for _ in range(args.clients)]
    reasons: collections.Counter[str] = collections.Counter()
    for c in clients:
        c.on_disconnect = lambda _client, reason: reasons.update([reason])
    try:
        await asyncio.wait_for(asyncio.gather(*(c.connect() for c in clients)), 60)
        await asyncio.sleep(args.seconds)
        reconnects = sum(c.reconnects for c in clients)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await relay.close()
        await server.shutdown(grace=0)
    client_minutes = args.clients * args.seconds / 60
    print(
        f"{args.clients} idle clients, {args.seconds:g} s, {args.loss:g} % loss each way, {args.delay:g} ms: "
        f"{reconnects} reconnects ({reconnects / client_minutes:.3f} per client-minute)"
    )
    for reason, n in reasons.most_common():
        print(f"  {n:4d}  {reason}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8, help="clients (default 8)")
    ap.add_argument("--seconds", type=float, default=90.0, help="seconds idle (default 90)")
    ap.add_argument("--loss", type=float, default=5.0, help="%% loss each way (default 5)")
    ap.add_argument("--delay", type=float, default=20.0, help="ms one way (default 20)")
    ap.add_argument("--seed", type=int, default=3, help="the relay's seed (default 3)")
    run_loop(run(ap.parse_args(argv)))


if __name__ == "__main__":
    main()
