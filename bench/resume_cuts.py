"""Reliable events sent to one session across a lossy link that is cut again and again: how many
reach the client, once each and in order, with numbered direct events and without.

One process: a kcprpc server (default wire: secure, anonymous), ``--clients`` clients, and a
:class:`kcp.relay.LossyRelay` between them (``--loss`` % each way, ``--delay`` ms one way,
seeded). The server sends each client a small reliable event (``session.send``) ``--rate`` times
a second for ``--seconds``; ``--cuts`` times the relay drops everything for ``--cut`` seconds,
longer than the client's heartbeat timeout (2 s here), so each client reconnects and resumes its
session. Contenders, alternated between rounds (A B, B A), differ only in what the server does:

* ``numbered``: the clients take numbered direct events (what they ask for): what the lost
  connection had taken and never delivered is sent again on the resume;
* ``unnumbered``: the server numbers nothing (``session.numbered = False`` in ``on_connect``: an
  older client): only what was still waiting for the transport is held for the resume.

Per contender: events sent, received once, lost (sent, never received), received twice, out of
order, the resumes, and the misses the clients were told of (``kcprpc.Recovered(key="session")``).

    python bench/resume_cuts.py --rounds 2
    python bench/resume_cuts.py --rounds 1 --seconds 8 --cuts 1     # quick
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
from collections.abc import Callable

from _common import run_loop
from pydantic import BaseModel

import kcprpc
from kcp.relay import LossyRelay


@kcprpc.event("bench.CutNote")
class Note(BaseModel):
    """One event to one session."""

    seq: int


class Nothing(kcprpc.Service, name="bench.Cuts"):
    """A service for the clients to connect to (the events come from the server's side)."""

    async def ping(self) -> int:
        return 0


CLIENT = kcprpc.ClientConfig(
    heartbeat=kcprpc.HeartbeatConfig(interval=0.25, timeout=2.0),
    reconnect=kcprpc.ReconnectPolicy(initial=0.05, maximum=0.2),
)


def _collect(seqs: list[int]) -> Callable[[Note], None]:
    return lambda n: seqs.append(n.seq)  # (one parameter: a handler of two gets the EventInfo)


def _count_missed(missed: list[int], i: int) -> Callable[[kcprpc.Recovered], None]:
    def on_recovered(r: kcprpc.Recovered) -> None:
        if r.key == "session":
            missed[i] += r.missed or 0

    return on_recovered


async def one_round(args: argparse.Namespace, numbered: bool, seed: int) -> dict[str, float]:
    sessions: list[kcprpc.ServerSession] = []

    def on_connect(session: kcprpc.ServerSession) -> None:
        if not numbered:
            session.numbered = False  # as for a client that does not take numbered events
        sessions.append(session)

    server = kcprpc.Server([Nothing()], "127.0.0.1", 0, on_connect=on_connect)
    _h, port = await server.start()
    relay = LossyRelay(("127.0.0.1", 0), ("127.0.0.1", port), loss=args.loss, delay=args.delay, seed=seed)
    await relay.start()
    clients = [kcprpc.connect("127.0.0.1", relay.address[1], config=CLIENT) for _ in range(args.clients)]
    got: list[list[int]] = [[] for _ in clients]
    missed = [0] * len(clients)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(asyncio.gather(*(c.connect() for c in clients)), 60)
        for i, c in enumerate(clients):
            c.on(Note, _collect(got[i]))
            c.on(kcprpc.Recovered, _count_missed(missed, i))
        mine = list(sessions)  # each client's session (a resume keeps it)
        n = int(args.seconds * args.rate)
        cut_at = {int(n * (k + 1) / (args.cuts + 1)) for k in range(args.cuts)}
        start = loop.time()
        lossy = relay.loss
        for seq in range(n):  # bounded: rate x seconds events per client
            await asyncio.sleep(max(0.0, start + seq / args.rate - loop.time()))
            if seq in cut_at:
                relay.loss = (1.0, 1.0)  # the link is cut: nothing passes either way

                def heal() -> None:
                    relay.loss = lossy

                loop.call_later(args.cut, heal)
            for s in mine:
                s.send(Note(seq=seq))
        deadline = loop.time() + 15.0 + args.cut
        while any(len(set(g)) < n for g in got) and loop.time() < deadline:  # the drain
            await asyncio.sleep(0.05)
        resumes = sum(c.resumes for c in clients)
        reconnects = sum(c.reconnects for c in clients)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await relay.close()
        await server.shutdown(grace=0.5)
    sent = n * len(clients)
    once = sum(len(set(g)) for g in got)
    dups = sum(len(g) - len(set(g)) for g in got)
    disorder = sum(sum(1 for a, b in itertools.pairwise(g) if b < a) for g in got)
    return {
        "sent": float(sent),
        "received": float(once),
        "lost": float(sent - once),
        "duplicates": float(dups),
        "out_of_order": float(disorder),
        "reconnects": float(reconnects),
        "resumes": float(resumes),
        "told_missed": float(sum(missed)),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4, help="clients (default 4)")
    ap.add_argument("--rate", type=float, default=50.0, help="events per second to each client (default 50)")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of sending per round (default 20)")
    ap.add_argument("--cuts", type=int, default=3, help="cuts of the link per round (default 3)")
    ap.add_argument("--cut", type=float, default=3.0, help="seconds each cut lasts (default 3)")
    ap.add_argument("--loss", type=float, default=5.0, help="%% loss each way besides the cuts (default 5)")
    ap.add_argument("--delay", type=float, default=20.0, help="ms one way (default 20)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of each contender, alternated (default 2)")
    args = ap.parse_args(argv)
    if CLIENT.heartbeat is None or args.cut <= CLIENT.heartbeat.timeout:
        ap.error("--cut must be longer than the clients' heartbeat timeout (2 s), or nothing resumes")
    print(
        f"# {args.clients} clients, {args.rate:g} reliable events/s each for {args.seconds:g} s, "
        f"{args.cuts} cuts of {args.cut:g} s, {args.loss:g} % loss, {args.delay:g} ms one way"
    )
    results: dict[str, list[dict[str, float]]] = {"numbered": [], "unnumbered": []}

    async def run() -> None:
        for r in range(args.rounds):
            order = ("numbered", "unnumbered") if r % 2 == 0 else ("unnumbered", "numbered")
            for name in order:
                res = await one_round(args, name == "numbered", seed=r + 1)
                results[name].append(res)
                print(
                    f"round {r + 1} {name:10} " + "  ".join(f"{k} {v:g}" for k, v in res.items()), flush=True
                )

    run_loop(run())
    for name, rounds in results.items():
        med = {k: statistics.median(x[k] for x in rounds) for k in rounds[0]}
        print(f"median {name:10} " + "  ".join(f"{k} {v:g}" for k, v in med.items()))


if __name__ == "__main__":
    main()
