"""Load: one publisher and N viewers (default 1,000) on one topic; reports delivered messages/s
and publish-to-receive latency. The server runs in a child process unless ``--connect`` is given.

    python -m examples.live.load --viewers 1000 --seconds 5 --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import kcprpc
from examples.common import ArgumentParser, exit_with, host_port, positive_float, positive_int, print_figures
from examples.live.service import KEY, Chat, Gift, LiveService, Score, topic


@dataclass
class Viewer:
    client: kcprpc.Client
    received: int = 0
    latencies: list[float] = field(default_factory=list)

    def on_event(self, ev: Chat | Gift | Score) -> None:
        self.received += 1
        self.latencies.append(time.time() - ev.sent_at)


async def connect_viewers(host: str, port: int, n: int, channel: str, batch: int = 100) -> list[Viewer]:
    """Connect and subscribe ``n`` viewers, ``batch`` at a time."""
    viewers: list[Viewer] = []
    for start in range(0, n, batch):
        chunk = [Viewer(kcprpc.connect(host, port, key=KEY)) for _ in range(min(batch, n - start))]
        await asyncio.gather(*(v.client.connect() for v in chunk))
        for v in chunk:
            v.client.on(Chat, v.on_event)
            v.client.on(Gift, v.on_event)
            v.client.on(Score, v.on_event)
        await asyncio.gather(*(v.client.subscribe(topic(channel)) for v in chunk))
        viewers.extend(chunk)
    return viewers


async def publish(host: str, port: int, channel: str, rate: float, seconds: float, token: str) -> int:
    """Publish chat (most), gift and score events at ``rate`` per second; returns how many."""
    async with kcprpc.connect(host, port, key=KEY) as pub:
        live = pub.stub(LiveService, metadata={"token": token}, timeout=10.0)
        loop = asyncio.get_running_loop()
        n = 0
        start = loop.time()
        while loop.time() - start < seconds:
            now = time.time()
            if n % 20 == 19:
                await live.score(Score(channel=channel, home=n // 20, away=n // 40, sent_at=now))
            elif n % 10 == 9:
                await live.gift(Gift(channel=channel, user="fan", gift="rose", amount=1, sent_at=now))
            else:
                await live.chat(Chat(channel=channel, user="host", text=f"message {n}", sent_at=now))
            n += 1
            await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
        return n


async def run_load(
    host: str,
    port: int,
    viewers: int,
    seconds: float,
    rate: float,
    token: str = "publisher-secret",
    publisher_process: bool = False,
) -> dict[str, Any]:
    """Connect viewers, publish for ``seconds``, wait for delivery, return the figures.

    With ``publisher_process`` the publisher runs in a child process, so that the viewers' work
    does not slow its pace (a load test); otherwise it shares this event loop.
    """
    t0 = time.perf_counter()
    vs = await connect_viewers(host, port, viewers, "main")
    connect_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    if publisher_process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "examples.live.load", "--publisher", f"{host}:{port}",
            "--rate", str(rate), "--seconds", str(seconds), "--token", token,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        sent = int(json.loads(out.decode().strip().splitlines()[-1])["published"])
    else:
        sent = await publish(host, port, "main", rate, seconds, token)
    expected = sent * viewers
    deadline = time.perf_counter() + 20.0
    while sum(v.received for v in vs) < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t1
    delivered = sum(v.received for v in vs)
    lat = sorted(x for v in vs for x in v.latencies)
    await asyncio.gather(*(v.client.close() for v in vs), return_exceptions=True)
    return {
        "viewers": viewers,
        "published": sent,
        "delivered": delivered,
        "expected": expected,
        "delivered_per_s": delivered / elapsed,
        "p50_ms": lat[len(lat) // 2] * 1000 if lat else None,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000 if lat else None,
        "max_ms": lat[-1] * 1000 if lat else None,
        "connect_s": connect_s,
    }


def start_server_process(port: int = 0) -> tuple[subprocess.Popen[str], int]:
    """Run the live server in a child process; returns it and its port."""
    code = (
        "import asyncio, json, uvloop\n"
        "from examples.live.service import make_server\n"
        "async def main():\n"
        f"    s = make_server('127.0.0.1', {port})\n"
        "    h, p = await s.start()\n"
        "    print(json.dumps({'port': p}), flush=True)\n"
        "    await s.serve()\n"
        "uvloop.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(json.loads(proc.stdout.readline())["port"])


async def main(args: argparse.Namespace) -> int:
    if args.publisher:
        host, p = args.publisher
        sent = await publish(host, p, "main", args.rate, args.seconds, args.token)
        print(json.dumps({"published": sent}), flush=True)
        return 0
    proc = None
    if args.connect:
        host, port = args.connect
    else:
        proc, port = start_server_process()
        host = "127.0.0.1"
    try:
        res = await run_load(host, port, args.viewers, args.seconds, args.rate, publisher_process=True)
    finally:
        if proc is not None:
            proc.terminate()
            with contextlib.suppress(Exception):
                proc.wait(5)
                if proc.stdout is not None:
                    proc.stdout.close()
    print_figures(res)
    return 0 if res["delivered"] == res["expected"] else 1


def run() -> None:
    ap = ArgumentParser(
        prog="python -m examples.live.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--viewers", type=positive_int, default=1000)
    ap.add_argument("--seconds", type=positive_float, default=5.0)
    ap.add_argument("--rate", type=positive_float, default=20.0, help="events published per second")
    ap.add_argument("--connect", type=host_port, metavar="HOST:PORT", help="a running live server")
    ap.add_argument("--token", default="publisher-secret")
    ap.add_argument("--publisher", type=host_port, help=argparse.SUPPRESS)  # run only the publisher
    exit_with(main(ap.parse_args()))


if __name__ == "__main__":
    run()
