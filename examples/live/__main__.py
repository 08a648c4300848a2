"""Run a live server, one publisher and a few viewers on loopback KCP for a few seconds, print, exit.

python -m examples.live --viewers 50 --seconds 3
python -m examples.live.load --viewers 1000      # the load script
python -m examples.live --serve --port 9200 --web 127.0.0.1:8080 [--wt 127.0.0.1:4433]
                                                 # a server for browsers: open http://127.0.0.1:8080/live/
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import kcprpc
from examples.common import (
    ArgumentParser,
    exit_with,
    port_number,
    positive_float,
    positive_int,
    print_figures,
)
from examples.live.load import run_load
from examples.live.service import KEY, Chat, LiveService, make_server, report_viewers
from examples.web import add_web_arguments, announce, start_web, until_signalled


async def serve(args: argparse.Namespace) -> int:
    """Run the server (and its web listeners) until SIGINT or SIGTERM; viewers of ``main`` are
    told their number (``live.viewers``, unreliable)."""
    server = make_server("127.0.0.1", args.port)
    host, port = await server.start()
    if not args.json:
        print(f"live server on kcp://{host}:{port}", flush=True)
    viewers = asyncio.ensure_future(report_viewers(server, "main"))
    serving = None
    try:
        serving = await start_web(server, (host, port), args)
        announce(serving, "live/", args.json)
        await until_signalled()
        return 0
    finally:
        viewers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await viewers
        await server.shutdown(grace=1.0)
        if serving is not None:
            serving.close()


async def main(args: argparse.Namespace) -> int:
    if args.serve:
        return await serve(args)
    if args.web is not None or args.wt is not None:
        raise kcprpc.UsageError("--web and --wt go with --serve")
    server = make_server("127.0.0.1", 0)
    host, port = await server.start()
    print(f"live server on kcp://{host}:{port}")
    try:
        # a viewer may not publish: PERMISSION_DENIED from the interceptor
        async with kcprpc.connect(host, port, key=KEY) as viewer:
            try:
                await viewer.stub(LiveService).chat(Chat(channel="main", user="troll", text="hi"))
            except kcprpc.RpcError as e:
                print(f"viewer publishing -> {e.status.name}")
        res = await run_load(host, port, args.viewers, args.seconds, args.rate)
        print_figures(res)
        return 0 if res["delivered"] == res["expected"] else 1
    finally:
        await server.shutdown(grace=1.0)


def run() -> None:
    ap = ArgumentParser(
        prog="python -m examples.live", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--viewers", type=positive_int, default=50)
    ap.add_argument("--seconds", type=positive_float, default=3.0)
    ap.add_argument("--rate", type=positive_float, default=20.0, help="events published per second")
    ap.add_argument("--serve", action="store_true", help="run only the server, until Ctrl-C")
    ap.add_argument("--port", type=port_number, default=0, help="the server's KCP port with --serve (default: any)")
    add_web_arguments(ap)
    exit_with(main(ap.parse_args()))


if __name__ == "__main__":
    run()
