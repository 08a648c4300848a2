"""A fan-out's per-delivery server work, in one process, without the event loop's scheduling noise.

    python bench/fanout_path.py                 # 1,000 secure sessions, 20 rounds
    python bench/fanout_path.py --sessions 200 --rounds 50

One listener and ``--sessions`` dialled sessions (secure mode, the default wire of kcprpc) on
127.0.0.1, all in this process. Each round is one broadcast, driven step by step: a write of one
event to every server-side session, the server endpoint's tick (every engine flushed, every datagram
sealed and handed to ``sendmmsg``), then each subscriber reads its datagram and sends its ack
(not timed), then the server reads the acks (receive, demux, AEAD open, engine input,
``after_input`` with the timer re-arm). It prints the wall time per delivery of the three server
steps (``write``, ``tick``, ``acks``) and their sum (``server``), the best of ``--repeat`` runs of
``--rounds`` rounds each: the machine's other load only adds, so the minimum is the steadiest
figure (``--clock cpu``: the process's CPU time instead of wall time, steadier still on a busy
machine). bench/fanout.py measures the whole server (mux, frames, push, event loop) with
subscribers in other processes; this one isolates the transport's part of it, the part that
docs/BENCHMARKS.md "Fan-out" profiles, and is steady enough on a busy machine to A/B small changes
(bench/ab.py, bench/builds.py).

It drives the transport's internals (the endpoint's flush queue, tick and read, a session's
``after_input``) as the event loop would, so it needs the kcp package of its tree and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _common import run_loop

import kcp
from kcp.endpoint import Endpoint
from kcp.secure import SecureConfig, generate_keypair


def _answer(cli: kcp.KCPSession) -> int:
    """The subscriber's side of one delivery: read the datagram, ack it. Returns datagrams read."""
    ep: Endpoint = cli._ep
    items = ep.io.recv(1)
    if not items:
        return 0
    now = ep.timers.now_ms()
    for data, addr in items:
        ep.dispatch(data, addr, now)
    _after_input(ep, now)
    return len(items)


def _after_input(ep: Endpoint, now: int) -> None:
    dirty = ep.dirty
    ep.dirty = []
    for s in dirty:
        s.after_input(now)
    q = ep.flushq
    ep.flushq = []
    for s in q:
        s.flush_now(now)
    ep.send_now()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20, help="broadcasts per run")
    ap.add_argument("--repeat", type=int, default=5, help="runs; the best is reported")
    ap.add_argument("--size", type=int, default=90, help="bytes per event (a push frame of bench/fanout.py)")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time (default) or this process's CPU time (time.process_time: user + system), "
        "which the machine's other load inflates less",
    )
    ap.add_argument(
        "--suite",
        choices=("aesgcm", "chachapoly"),
        default=SecureConfig().suites[0],
        help="the AEAD the sessions use (the clients propose it; default: secure mode's first)",
    )
    args = ap.parse_args()
    priv, pub = generate_keypair()
    suite = SecureConfig(suites=(args.suite,))
    lis = await kcp.listen("127.0.0.1", 0, kcp.SecureWire(static_private_key=priv))
    # ack_delay=0: each subscriber acks at once (the bench's subscribers wait up to 5 ms for data to
    # ride with, then ack alone: the same datagram)
    cfg = kcp.SessionConfig(ack_delay=0)
    clis: list[kcp.KCPSession] = []
    srvs: list[kcp.KCPSession] = []
    try:
        for _ in range(args.sessions):
            wire = kcp.SecureWire(server_public_key=pub, config=suite)
            c = await kcp.dial("127.0.0.1", lis.address[1], wire, session=cfg)
            c.write(b"hi")
            clis.append(c)
            srvs.append(await asyncio.wait_for(lis.accept(), 10))
        for s in srvs:
            await asyncio.wait_for(s.readexactly(2), 10)
        await asyncio.sleep(0.3)  # handshakes settled, first acks in
        ep: Endpoint = srvs[0]._ep
        event = b"e" * args.size
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        best: tuple[float, float, float] | None = None
        lost = 0
        for _ in range(args.repeat):
            tw = tt = ta = 0.0
            for _ in range(args.rounds):
                await asyncio.sleep(0.02)  # the loop runs its timers between broadcasts, as a server's does
                t0 = clock()
                for s in srvs:
                    s.write(event)
                t1 = clock()
                ep._tick()
                t2 = clock()
                for c in clis:
                    if _answer(c):
                        c._rbuf.clear()
                    else:
                        lost += 1
                t3 = clock()
                ep._read(64)
                ep._tick()
                t4 = clock()
                tw += t1 - t0
                tt += t2 - t1
                ta += t4 - t3
            if best is None or tw + tt + ta < sum(best):
                best = (tw, tt, ta)
        assert best is not None
        k = 1e6 / (args.rounds * args.sessions)
        w, t, a = (x * k for x in best)
        build = "compiled" if kcp.compiled else "pure"
        print(
            f"{args.sessions} sessions ({build}, {args.suite}), best of {args.repeat} x {args.rounds} rounds, "
            f"{args.clock} time per delivery: "
            f"write {w:.2f} us  tick {t:.2f} us  acks {a:.2f} us  server {w + t + a:.2f} us"
            + (f"  ({lost} datagrams not seen by a subscriber)" if lost else "")
        )
    finally:
        for c in clis:
            c.abort()
        lis.close()
        await lis.wait_closed()


if __name__ == "__main__":
    run_loop(main())
