"""Command line: ``kcprpc serve module:app``, ``kcprpc ping HOST PORT``, ``kcprpc stats HOST PORT``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from kcprpc.client import connect
from kcprpc.errors import RpcError, UsageError
from kcprpc.server import Server


def _fec(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        data, parity = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("--fec takes DATA,PARITY (e.g. 10,3)") from None
    return data, parity


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (attribute defaults to ``app``)."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr or "app")
    except AttributeError:
        raise UsageError(f"{module_name} has no attribute {attr or 'app'!r}") from None


def make_server(app: Any, args: argparse.Namespace) -> Server:
    """Turn what ``module:app`` names into a :class:`Server` (a Server, a factory, or a list of services)."""
    if callable(app) and not isinstance(app, Server) and not isinstance(app, type):
        app = app()
    if isinstance(app, Server):
        server = app
    elif isinstance(app, (list, tuple)):
        server = Server(app)
    else:
        raise UsageError("module:app must name a kcprpc.Server, a list of services, or a factory of either")
    if args.host is not None:
        server.host = args.host
    if args.port is not None:
        server.port = args.port
    if server.host is None:
        server.host = "0.0.0.0"
    if server.port is None:
        server.port = 9000
    if args.crypt is not None:
        server.crypt = args.crypt
    if args.key is not None:
        server.key = args.key
    if args.fec is not None:
        server.fec = args.fec
    return server


async def _serve(server: Server, grace: float) -> int:
    loop = asyncio.get_running_loop()
    host, port = await server.start()
    names = sorted({m.service for m in server.methods.values()})
    print(f"kcprpc serving {', '.join(names)} on {host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    serving = asyncio.ensure_future(server.serve())
    await asyncio.wait({serving, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    print("shutting down", flush=True)
    await server.shutdown(grace)
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    return 0


async def _ping(args: argparse.Namespace) -> int:
    async with connect(args.host, args.port, crypt=args.crypt, key=args.key, fec=args.fec) as client:
        status = "?"
        for i in range(args.count):
            t0 = time.perf_counter()
            status = await asyncio.wait_for(client.health(), args.timeout)
            print(f"{args.host}:{args.port} seq={i} {status} time={(time.perf_counter() - t0) * 1000:.3f} ms")
            if i + 1 < args.count:
                await asyncio.sleep(args.interval)
        return 0 if status == "SERVING" else 1


async def _stats(args: argparse.Namespace) -> int:
    async with connect(args.host, args.port, crypt=args.crypt, key=args.key, fec=args.fec) as client:
        st = await asyncio.wait_for(client.stats(), args.timeout)
        print(json.dumps(st.model_dump(), indent=2))
        return 0


def _run(coro: Any) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return int(asyncio.run(coro))
    return int(uvloop.run(coro))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kcprpc`` command."""
    ap = argparse.ArgumentParser(prog="kcprpc", description="Typed RPC over KCP.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def transport_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--crypt", default=None, help="kcptun cipher name (aes, salsa20, none ...)")
        p.add_argument("--key", default=None, help="pre-shared passphrase")
        p.add_argument("--fec", type=_fec, default=None, help="FEC shards DATA,PARITY, e.g. 10,3")

    s = sub.add_parser("serve", help="serve module:app (a Server, a list of services, or a factory)")
    s.add_argument("app", help="module:attribute, e.g. examples.quickstart.service:app")
    s.add_argument("--host", default=None)
    s.add_argument("--port", type=int, default=None)
    s.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get at shutdown")
    transport_args(s)
    for name, helptext in (("ping", "health-check a server"), ("stats", "print a server's counters")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("host")
        p.add_argument("port", type=int)
        p.add_argument("--timeout", type=float, default=5.0)
        if name == "ping":
            p.add_argument("-c", "--count", type=int, default=3)
            p.add_argument("-i", "--interval", type=float, default=0.2)
        transport_args(p)
    from kcprpc import clitools

    clitools.add_commands(sub)  # list, describe, call, watch, idl (see docs/idl.md)
    args = ap.parse_args(argv)
    if getattr(args, "func", None) is not None:
        return clitools.run_command(args)
    try:
        if args.cmd == "serve":
            sys.path.insert(0, "")
            server = make_server(load_app(args.app), args)
            return _run(_serve(server, args.grace))
        return _run(_ping(args) if args.cmd == "ping" else _stats(args))
    except (UsageError, ImportError) as e:
        print(f"kcprpc: {e}", file=sys.stderr)
        return 2
    except (RpcError, ConnectionError, OSError, asyncio.TimeoutError) as e:
        print(f"kcprpc: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
