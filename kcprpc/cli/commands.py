"""The grpcurl-like client commands: ``list``, ``describe``, ``call`` (:mod:`kcprpc.cli.call`),
``watch``, ``ping`` and ``stats``, and their arguments.

::

    kcprpc list HOST:PORT [SERVICE]
    kcprpc describe HOST:PORT SERVICE[.METHOD|.MESSAGE] [--json]
    kcprpc call HOST:PORT SERVICE.METHOD ['{"json": "request"}'] [-d @file] [-H key=value] [--timeout S]
    kcprpc watch HOST:PORT TOPIC [-n COUNT] [--duration S]   (stderr: "subscribed to TOPIC" once live)
    kcprpc ping HOST:PORT [-c COUNT]      kcprpc stats HOST:PORT

They learn the service from the server's reflection service (or from ``--idl DOC`` files), so they
never import the service's code. ``--timeout`` bounds each call and the connect (which waits at
most ``min(--connect-timeout, --timeout)``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from kcprpc.cli.args import nonnegative_float, positive_float, positive_int
from kcprpc.cli.call import cmd_call
from kcprpc.cli.catalog import Catalog
from kcprpc.cli.connect import DEFAULT_CONNECT_TIMEOUT, with_client
from kcprpc.cli.flags import add_transport_args
from kcprpc.cli.render import describe_text, dump_json, jsonable, method_line, referenced_defs
from kcprpc.cli.runner import CliError
from kcprpc.client import Client, RawEvent
from kcprpc.status import Status


async def cmd_list(args: argparse.Namespace) -> int:
    """``kcprpc list HOST:PORT [SERVICE]``: services, or one service's methods."""

    async def body(client: Client, cat: Catalog) -> int:
        if args.service:
            doc, _ = await cat.resolve(args.service)
            for name in sorted(doc["methods"]):
                print(f"{doc['name']}.{name}")
        else:
            for name in await cat.services():
                print(name)
        return 0

    return await with_client(args, body)


async def cmd_describe(args: argparse.Namespace) -> int:
    """``kcprpc describe HOST:PORT SERVICE[.METHOD|.MESSAGE]``."""

    async def body(client: Client, cat: Catalog) -> int:
        targets = [args.target] if args.target else await cat.services()
        for target in targets:
            doc, member = await cat.resolve(target)
            if member is None:
                if args.json:
                    from kcprpc.idl.schema import dumps

                    sys.stdout.write(dumps(doc))
                else:
                    sys.stdout.write(describe_text(doc))
                continue
            m = doc["methods"].get(member)
            if m is not None:
                info = {
                    "method": m,
                    "$defs": referenced_defs(doc, [m["request"], m["response"]]),
                }
                if not args.json:
                    print(f"{doc['name']}.{member}:  {method_line(member, m)}")
                print(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False))
                continue
            for section in ("$defs", "events"):
                if member in doc.get(section, {}):
                    node = doc[section][member]
                    info = {"schema": node, "$defs": referenced_defs(doc, [node])}
                    if not args.json:
                        print(f"{doc['name']}.{member}:  {'message' if section == '$defs' else 'event'}")
                    print(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False))
                    break
            else:
                raise CliError(Status.NOT_FOUND, f"{doc['name']} has no method, message or event {member!r}")
        return 0

    return await with_client(args, body)


async def cmd_watch(args: argparse.Namespace) -> int:
    """``kcprpc watch HOST:PORT TOPIC``: pushed events as JSON lines."""

    async def body(client: Client, cat: Catalog) -> int:
        q: asyncio.Queue[RawEvent] = asyncio.Queue()
        client.on_raw_event(q.put_nowait)
        await asyncio.wait_for(client.subscribe(args.topic), args.timeout)
        # on stderr, so stdout stays one JSON event per line; scripts may wait for this line
        print(f"subscribed to {args.topic}", file=sys.stderr, flush=True)
        loop = asyncio.get_running_loop()
        end = None if args.duration is None else loop.time() + args.duration
        n = 0
        while args.count is None or n < args.count:
            left = None if end is None else end - loop.time()
            if left is not None and left <= 0:
                break
            try:
                ev = await asyncio.wait_for(q.get(), left)
            except TimeoutError:
                break
            if ev.topic != args.topic:
                continue
            line = {"event": ev.name, "topic": ev.topic, "seq": ev.seq, "epoch": ev.epoch, "data": ev.payload}
            print(dump_json(line, False), flush=True)
            n += 1
        return 0

    return await with_client(args, body)


async def cmd_ping(args: argparse.Namespace) -> int:
    """``kcprpc ping HOST:PORT``: health-check round trips and the heartbeat RTT."""

    async def body(client: Client, cat: Catalog) -> int:
        status = "?"
        for i in range(args.count):
            t0 = time.perf_counter()
            status = await asyncio.wait_for(client.health(), args.timeout)
            ms = (time.perf_counter() - t0) * 1000
            hb = client.rtt_ms
            hb_text = f" heartbeat_rtt={hb:.3f} ms" if hb is not None else ""
            print(f"{args.address} seq={i} {status} time={ms:.3f} ms{hb_text}", flush=True)
            if i + 1 < args.count:
                await asyncio.sleep(args.every)
        if status != "SERVING":
            raise CliError(Status.UNAVAILABLE, f"server is {status}")
        return 0

    return await with_client(args, body)


async def cmd_stats(args: argparse.Namespace) -> int:
    """``kcprpc stats HOST:PORT``: the connection's transport counters and the server's counters."""

    async def body(client: Client, cat: Catalog) -> int:
        st = await asyncio.wait_for(client.stats(), args.timeout)
        print(json.dumps(jsonable(st), indent=2, sort_keys=True))
        return 0

    return await with_client(args, body)


def _client_parser(sub: Any, name: str, helptext: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=helptext, description=helptext)
    p.add_argument("address", metavar="HOST:PORT")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=10.0,
        help="seconds per call, and at most this long to connect (default 10)",
    )
    p.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=None,
        help=f"seconds to connect (default {DEFAULT_CONNECT_TIMEOUT:g}; capped by --timeout)",
    )
    p.add_argument(
        "--idl", action="append", metavar="DOC", help="use this document instead of reflection (repeatable)"
    )
    add_transport_args(p)
    return p


ASYNC_COMMANDS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "list": cmd_list,
    "describe": cmd_describe,
    "call": cmd_call,
    "watch": cmd_watch,
    "ping": cmd_ping,
    "stats": cmd_stats,
}


def add_client_commands(sub: Any) -> None:
    """Register ``list``, ``describe``, ``call``, ``watch``, ``ping`` and ``stats`` on an
    ``argparse`` sub-parsers object. Each sets ``func`` (see :func:`kcprpc.cli.runner.run_command`)."""
    p = _client_parser(sub, "list", "list a server's services, or one service's methods")
    p.add_argument("service", nargs="?", metavar="SERVICE")
    p = _client_parser(sub, "describe", "describe a service, method, message or event")
    p.add_argument("target", nargs="?", metavar="SERVICE[.METHOD|.MESSAGE]")
    p.add_argument("--json", action="store_true", help="print the document (or schema) as JSON only")
    p = _client_parser(sub, "call", "call a method with a JSON request; print the response as JSON")
    p.add_argument("method", metavar="SERVICE.METHOD")
    p.add_argument(
        "request", nargs="?", metavar="JSON", help="the request (streaming methods: JSON lines on stdin)"
    )
    p.add_argument("-d", "--data", help="the request; @FILE reads a file, @- stdin (streams: JSON lines)")
    p.add_argument("-H", "--header", action="append", metavar="KEY=VALUE", help="call metadata (repeatable)")
    p.add_argument("--no-validate", action="store_true", help="send without checking the JSON Schema")
    p = _client_parser(sub, "watch", "print events pushed on a topic as JSON lines")
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("-n", "--count", type=positive_int, default=None, help="exit after COUNT events")
    p.add_argument("--duration", type=positive_float, default=None, help="exit after this many seconds")
    p = _client_parser(sub, "ping", "health-check a server; print round trips and the heartbeat RTT")
    p.add_argument("-c", "--count", type=positive_int, default=3)
    p.add_argument(
        "-i", "--every", dest="every", type=nonnegative_float, default=0.2, help="seconds between pings"
    )
    _client_parser(sub, "stats", "print the transport counters of a connection and the server's counters")
    for name, fn in ASYNC_COMMANDS.items():
        # surplus positionals (e.g. the older `ping HOST PORT`) land here and get a clear message
        sub.choices[name].add_argument("extra", nargs="*", help=argparse.SUPPRESS)
        sub.choices[name].set_defaults(func=fn, is_async=True)
