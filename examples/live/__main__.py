"""Run a live server, one publisher and a few viewers on loopback KCP for a few seconds, print, exit.

python -m examples.live --viewers 50 --seconds 3
python -m examples.live.load --viewers 1000      # the load script
"""

from __future__ import annotations

import argparse

import kcprpc
from examples.common import ArgumentParser, exit_with, positive_float, positive_int, print_figures
from examples.live.load import run_load
from examples.live.service import KEY, Chat, LiveService, make_server


async def main(args: argparse.Namespace) -> int:
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
    exit_with(main(ap.parse_args()))


if __name__ == "__main__":
    run()
