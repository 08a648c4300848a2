"""A viewer that survives its own restart: it resumes the channel where it left off, with nothing
missed and nothing twice.

    python -m examples.live.viewer 127.0.0.1:9200 --channel main --log viewer.jsonl

Each event it receives is appended to ``--log`` as one JSON line *with its position*; the log is
both what the viewer did and what it saved. Kill it (even with SIGKILL) and start it again with the
same log: it reads the last position there and subscribes with ``since=``, so the server replays
what was published in between (flagged as replayed) before the live events, in order. One write
per event, so a kill cannot leave a message done but its position unsaved (a duplicate) or the
other way round (a gap); a line cut short by the kill is dropped on restart.

Run a server with ``python -m examples.live.viewer --serve 9200`` and publish with
``python -m examples.live.viewer 127.0.0.1:9200 --publish 100``.

The same viewer for Node, with the stubs generated from ``idl/live.v1.Live.json``, is
``clients/typescript/examples/live-viewer.ts`` (``node dist/examples/live-viewer.js --host
127.0.0.1 --port 9200 --log viewer.jsonl``, after ``npm run build`` there; see its README): its log
has the same lines, and it also resumes a dead link in place.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

import kcprpc
from examples.common import ArgumentParser, exit_with, host_port, nonnegative_float, port_number, positive_int
from examples.live.service import KEY, Chat, Gift, LiveService, Score, make_server, topic


def last_position(log: Path) -> kcprpc.Position | None:
    """The position of the last whole line of ``log`` (None: no log yet, or nothing in it); a last
    line cut short by a kill is removed."""
    if not log.exists():
        return None
    data = log.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):  # a partial line: the write the kill interrupted
        with log.open("r+b") as f:
            f.truncate(keep)
    for line in reversed(data[:keep].splitlines()):
        entry = json.loads(line)
        return kcprpc.Position(entry["epoch"], entry["offset"])
    return None


async def view(host: str, port: int, channel: str, log: Path, seconds: float | None) -> int:
    """Follow ``channel``, appending every event to ``log``, from the position saved there."""
    since = last_position(log)
    config = kcprpc.ClientConfig(reconnect=kcprpc.ReconnectPolicy(restore=True))
    with log.open("a", encoding="utf-8") as out:

        def record(kind: str, position: kcprpc.Position, **fields: Any) -> None:
            entry = {"kind": kind, "epoch": position.epoch, "offset": position.offset, **fields}
            out.write(json.dumps(entry) + "\n")
            out.flush()  # one write per event: the event and its position are saved together

        def on_event(ev: Chat | Gift | Score, info: kcprpc.EventInfo) -> None:
            assert info.position is not None  # a topic event always has one
            record(type(ev).__name__.lower(), info.position, replayed=info.replayed, **ev.model_dump())

        async with kcprpc.connect(host, port, key=KEY, config=config) as client:
            for event_type in (Chat, Gift, Score):
                client.on(event_type, on_event)
            reply = await client.subscribe(topic(channel), since=since)
            # saved at once: a viewer killed before its first event resumes from here
            record("subscribed", reply.position, recovered=reply.recovered, replayed=reply.replayed)
            print(
                json.dumps(
                    {
                        "since": list(since) if since is not None else None,
                        "position": list(reply.position),
                        "recovered": reply.recovered,
                        "replayed": reply.replayed,
                        "missed": reply.missed,
                    }
                ),
                flush=True,
            )
            if seconds is None:
                await asyncio.Event().wait()  # until killed
            else:
                await asyncio.sleep(seconds)
    return 0


async def publish(host: str, port: int, channel: str, n: int, pace: float, token: str) -> int:
    """Publish ``n`` chat messages ``"0"`` ... ``"n-1"``, one every ``pace`` seconds."""
    async with kcprpc.connect(host, port, key=KEY) as pub:
        live = pub.stub(LiveService, metadata={"token": token}, timeout=5.0)
        for i in range(n):
            await live.chat(Chat(channel=channel, user="host", text=str(i)))
            await asyncio.sleep(pace)
    return 0


async def serve(port: int) -> int:
    server = make_server("127.0.0.1", port)
    host, p = await server.start()
    print(f"live server on kcp://{host}:{p}", flush=True)
    await server.serve()
    return 0


async def main(args: argparse.Namespace) -> int:
    if args.serve is not None:
        return await serve(args.serve)
    if args.address is None:
        raise kcprpc.UsageError("give the server's HOST:PORT (or --serve PORT)")
    host, port = args.address
    if args.publish:
        return await publish(host, port, args.channel, args.publish, args.pace, args.token)
    return await view(host, port, args.channel, Path(args.log), args.seconds)


def run() -> None:
    ap = ArgumentParser(
        prog="python -m examples.live.viewer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("address", nargs="?", type=host_port, metavar="HOST:PORT")
    ap.add_argument("--channel", default="main")
    ap.add_argument("--log", default=os.environ.get("VIEWER_LOG", "viewer.jsonl"), help="events and positions")
    ap.add_argument("--seconds", type=nonnegative_float, help="stop after this long (default: run until killed)")
    ap.add_argument("--serve", type=port_number, metavar="PORT", help="run a live server instead")
    ap.add_argument("--publish", type=positive_int, metavar="N", help="publish N chat messages instead")
    ap.add_argument("--pace", type=nonnegative_float, default=0.05, help="seconds between published messages")
    ap.add_argument("--token", default="publisher-secret")
    exit_with(main(ap.parse_args()))


if __name__ == "__main__":
    run()
