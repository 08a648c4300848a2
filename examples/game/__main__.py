"""Run a game server and N bot players on loopback KCP, print what they saw, exit.

python -m examples.game --bots 20 --seconds 3
python -m examples.game --serve --port 9100          # server only
python -m examples.game --serve --web 127.0.0.1:8081 [--wt 127.0.0.1:4434]
                                                     # and for browsers: open http://127.0.0.1:8081/game/
python -m examples.game --connect 127.0.0.1:9100     # bots only
python -m examples.game --reconnect                  # a player keeps their seat across a dropped connection
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
from typing import Any

import kcprpc
from examples.common import (
    ArgumentParser,
    exit_with,
    host_port,
    port_number,
    positive_float,
    positive_int,
    print_figures,
)
from examples.game.bots import BotStats, run_bot
from examples.game.reconnect import keep_seat
from examples.game.service import KEY, make_server
from examples.web import add_web_arguments, announce, start_web, until_signalled


async def run_bots(host: str, port: int, bots: int, seconds: float, rooms: int, seed: int) -> list[BotStats]:
    stop = asyncio.Event()
    clients = [kcprpc.connect(host, port, key=KEY) for _ in range(bots)]
    await asyncio.gather(*(c.connect() for c in clients))
    try:
        tasks = [
            asyncio.ensure_future(run_bot(c, f"bot{i}", f"room{i % rooms}", stop, random.Random(seed + i)))
            for i, c in enumerate(clients)
        ]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(asyncio.gather(*tasks)), seconds)
        stop.set()
        return list(await asyncio.gather(*tasks))
    finally:
        await asyncio.gather(*(c.close() for c in clients))


def report(stats: list[BotStats], seconds: float, world: Any = None) -> dict[str, float]:
    states = [s.states for s in stats]
    ages = sorted(a for s in stats for a in s.state_age_ms)
    out = {
        "bots": len(stats),
        "states_per_bot_per_s": statistics.mean(states) / seconds,
        "min_states": min(states),
        "ticks_missed": sum(s.ticks_missed for s in stats),
        "moves": sum(s.moves for s in stats),
        "positions_sent": sum(s.positions_sent for s in stats),
        "positions_acked_min": min(s.positions_acked for s in stats),
        "others_seen_mean": statistics.mean(len(s.others_seen) for s in stats),
        "chat_lines": sum(s.chat_lines for s in stats),
        "state_age_p50_ms": ages[len(ages) // 2] if ages else float("nan"),
        "state_age_p99_ms": ages[int(len(ages) * 0.99)] if ages else float("nan"),
    }
    rtts = [s.rtt_ms for s in stats if s.rtt_ms is not None]
    if rtts:
        out["heartbeat_rtt_ms"] = statistics.mean(rtts)
    if world is not None:
        out["positions_applied"] = world.positions_applied
    return out


async def main(args: argparse.Namespace) -> int:
    if args.connect:
        host, port = args.connect
        stats = await run_bots(host, port, args.bots, args.seconds, args.rooms, args.seed)
        print_figures(report(stats, args.seconds), 28)
        return 0
    if not args.serve and (args.web is not None or args.wt is not None):
        raise kcprpc.UsageError("--web and --wt go with --serve")
    server, world = make_server("127.0.0.1", args.port)
    host, port = await server.start()
    if not args.json:
        print(f"game server on kcp://{host}:{port}, matches tick at 20 Hz, state sync to each player", flush=True)
    serving = None
    try:
        if args.serve:
            serving = await start_web(server, (host, port), args)
            announce(serving, "game/", args.json)
            await until_signalled()
            print("shutting down")
            return 0
        if args.reconnect:
            kept = await keep_seat(host, port)
            print(
                f"player {kept.player_id}: session {kept.session_before} -> {kept.session_after} "
                f"(resumes: {kept.resumes}), position {kept.position_before} -> {kept.position_after}, "
                f"back in the match's state: {kept.in_snapshot}"
            )
            return 0 if kept.session_after == kept.session_before and kept.in_snapshot else 1
        stats = await run_bots(host, port, args.bots, args.seconds, args.rooms, args.seed)
        rep = report(stats, args.seconds, world)
        print_figures(rep, 28)
        return 0 if rep["min_states"] > 0 else 1
    finally:
        await server.shutdown(grace=1.0)
        if serving is not None:
            serving.close()


def run() -> None:
    ap = ArgumentParser(
        prog="python -m examples.game", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bots", type=positive_int, default=20)
    ap.add_argument("--rooms", type=positive_int, default=4)
    ap.add_argument("--seconds", type=positive_float, default=3.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--port", type=port_number, default=0, help="the server's port (default: any free one)")
    ap.add_argument("--serve", action="store_true", help="run only the server")
    ap.add_argument("--reconnect", action="store_true", help="one player drops the connection and keeps the seat")
    ap.add_argument("--connect", type=host_port, metavar="HOST:PORT", help="run only the bots against HOST:PORT")
    add_web_arguments(ap)
    exit_with(main(ap.parse_args()))  # Ctrl-C on --serve: the server shuts down in main()'s finally


if __name__ == "__main__":
    run()
