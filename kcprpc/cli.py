"""The ``kcprpc`` command.

::

    kcprpc serve module:app [--host H] [--port P] [--grace S] [transport flags]
    kcprpc list | describe | call | watch | ping | stats  HOST:PORT ... [transport flags]
    kcprpc idl export | check | gen-python | validate ...

Every command that talks to a server, and ``serve`` itself, takes the same transport flags, named
as kcptun names them (``--crypt``, ``--key``, ``--datashard``, ``--parityshard``, ``--mode``,
``--mtu`` ...; see :func:`kcprpc.clitools.add_transport_args`), plus ``--wire secure|compat`` (the
wire mode: secure by default, compat implied by ``--crypt``). The client commands and the
``idl`` tools live in :mod:`kcprpc.clitools`; this module adds ``serve`` and the entry point.

Exit codes: 0 on success; ``64 + status code`` when a call (or the server) ends with an RPC status
(``INVALID_ARGUMENT`` 67, ``NOT_FOUND`` 69, ``UNAVAILABLE`` 78 ...), with ``STATUS_NAME: message`` on
stderr; 2 for a usage error (``kcprpc: message``); 1 when ``idl check`` finds a breaking change.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
import sys
from collections.abc import Sequence
from typing import Any

from kcprpc import clitools
from kcprpc.errors import UsageError
from kcprpc.server import Server


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (attribute defaults to ``app``)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"cannot import {module_name!r}: {e}") from None
    try:
        return getattr(module, attr or "app")
    except AttributeError:
        raise UsageError(f"{module_name} has no attribute {attr or 'app'!r}") from None


def make_server(app: Any, args: argparse.Namespace) -> Server:
    """Turn what ``module:app`` names into a :class:`Server` (a Server, a factory, or a list of
    services); ``--host``/``--port`` and the transport flags given on the command line override
    the app's own settings."""
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
    given = clitools.transport_kwargs(args)
    for name, flag in (("server_public_key", "--server-key"), ("token", "--token")):
        if name in given:
            raise UsageError(
                f"{flag} is a client flag (serve takes --static-key and the app's authorize hook)"
            )
    if "crypt" in given and "mode" not in given:
        server.mode = None  # --crypt implies compat mode, whatever the app chose
    elif given.get("mode") == "secure":
        server.crypt = None  # the app's kcp-go cipher has no place in secure mode
    for name, value in given.items():
        if name == "transport_options":
            server.transport_options.update(value)
        else:
            setattr(server, name, value)
    _ = server.wire_mode  # conflicting settings fail here, with the reason
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


def cmd_serve(args: argparse.Namespace) -> int:
    """``kcprpc serve module:app``: serve until SIGINT/SIGTERM, then shut down gracefully."""
    sys.path.insert(0, "")
    server = make_server(load_app(args.app), args)
    return clitools.run_loop(_serve(server, args.grace))


def build_parser() -> argparse.ArgumentParser:
    """The ``kcprpc`` argument parser (every sub-command sets ``func``; see :func:`clitools.run_command`)."""
    ap = argparse.ArgumentParser(prog="kcprpc", description="Typed RPC over KCP.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve module:app (a Server, a list of services, or a factory)")
    s.add_argument("app", help="module:attribute, e.g. examples.quickstart.service:app")
    s.add_argument("--host", default=None)
    s.add_argument("--port", type=int, default=None)
    s.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get at shutdown")
    clitools.add_transport_args(s)
    s.set_defaults(func=cmd_serve, is_async=False)
    clitools.add_commands(sub)  # list, describe, call, watch, ping, stats, idl (see docs/idl.md)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kcprpc`` command."""
    return clitools.run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
