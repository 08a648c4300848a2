"""``kcprpc serve module:app [--host H] [--port P] [--grace S] [--log-level L] [--log-format F]
[--metrics HOST:PORT] [--broker URL] [--ws HOST:PORT [--web-origin ORIGIN ...] [--web-root DIR]]
[transport flags]``.

``module:app`` names a :class:`~kcprpc.Server`, a list of services, or a factory of either. The
transport flags given override the app's own settings (:func:`kcprpc.cli.flags.build_transport`
over the app's transport); those left out keep them.

``serve`` binds 127.0.0.1 unless the app or ``--host`` names another address (``--host 0.0.0.0``
to accept other machines), prints what it serves, where, in which wire mode and whether clients are
authenticated (a warning on stderr when nobody is), and logs at ``--log-level`` (docs/logging.md).

Every option can come from a ``KCPRPC_*`` variable instead (``KCPRPC_PORT``, ``KCPRPC_APP`` ...;
:mod:`kcprpc.cli.env`): the command line beats the environment, which beats the app's settings.
``--log-format``, ``--metrics`` and ``--broker`` are :mod:`kcprpc.cli.ops`' (docs/deploy.md).
``--workers N`` serves the port from N processes (:func:`kcprpc.workers.serve_workers`, docs/workers.md).
``--ws``, ``--web-origin`` and ``--web-root`` are :mod:`kcprpc.cli.web`'s (browsers over WebSocket).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import sys
from collections.abc import Sequence
from typing import Any

from kcp.config import CompatWire
from kcprpc.appspec import load_app
from kcprpc.cli.args import nonnegative_float, port_number
from kcprpc.cli.env import apply_env, defer_defaults
from kcprpc.cli.flags import add_transport_args, build_transport
from kcprpc.cli.ops import add_ops_args, start_endpoint, use_broker
from kcprpc.cli.runner import run_loop
from kcprpc.cli.web import add_web_args, check_web_args, start_web, web_lines, web_listeners
from kcprpc.config import Transport, effective_transport
from kcprpc.errors import UsageError
from kcprpc.logconfig import LOG_LEVELS, TEXT_FORMAT, configure_logging
from kcprpc.server import Server

DEFAULT_HOST = "127.0.0.1"
LOG_FORMAT = TEXT_FORMAT


def make_server(app: Any, args: argparse.Namespace) -> Server:
    """Turn what ``module:app`` names into a :class:`Server` (a Server, a factory, or a list of
    services); ``--host``/``--port`` and the transport flags given on the command line override
    the app's own settings (and so do ``KCPRPC_*`` variables for what the command line left out)."""
    apply_env(args)
    if callable(app) and not isinstance(app, Server) and not isinstance(app, type):
        try:
            app = app()
        except UsageError:
            raise
        except Exception as e:  # the app's factory failed: its bug, not the command's
            name = getattr(app, "__qualname__", None) or repr(app)
            raise UsageError(f"the app factory {name}() raised {type(e).__name__}: {e}") from None
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
        server.host = DEFAULT_HOST  # loopback unless told otherwise: --host 0.0.0.0 is explicit
    if server.port is None:
        server.port = 9000
    for name, flag in (("server_key", "--server-key"), ("token", "--token")):
        if getattr(args, name, None) is not None:
            raise UsageError(
                f"{flag} is a client flag (serve takes --static-key and the app's authorize hook)"
            )
    use_broker(server, getattr(args, "broker", None))
    server.transport = build_transport(args, server.transport)
    effective_transport(
        server.transport, side="server"
    )  # what a server cannot run fails here, with the reason
    return server


def security_summary(transport: Transport) -> tuple[list[str], str | None]:
    """What ``serve`` says about a server's transport before it starts: lines for the wire mode,
    the server's key (if any) and who is authenticated; and a warning or None (a server that
    authenticates nobody, or compat mode without a cipher)."""
    wire = transport.wire
    fec = f"; FEC {wire.fec[0]}/{wire.fec[1]}" if wire.fec != (0, 0) else ""
    if isinstance(wire, CompatWire):
        if wire.crypt in (None, "none", "null"):
            return [
                f"wire mode: compat (kcp-go's packet format; no encryption{fec})",
                "clients:   not authenticated: anyone can connect and read the traffic",
            ], "compat mode without a cipher: traffic is neither encrypted nor authenticated"
        return [
            f"wire mode: compat (kcp-go's packet format; cipher {wire.crypt}{fec})",
            "clients:   not authenticated (kcp-go's ciphers encrypt with the shared key, with no "
            "identity and no cryptographic integrity check; secure mode has both)",
        ], None
    who = []
    if wire.key is not None:
        who.append("the passphrase (--key)")
    if wire.authorize is not None:
        who.append("the app's authorize hook")
    pub = public_key(wire.static_private_key)
    if pub is None and not who:
        return [
            f"wire mode: secure, anonymous (encrypted; the pre-shared key is public{fec})",
            "clients:   NOT authenticated",
        ], (
            "keyless secure mode authenticates nobody: traffic is encrypted, but anyone can connect "
            "and an active attacker can sit in the middle; give --key PASSPHRASE (clients give the "
            "same) or --static-key @FILE (clients pin its public key; `kcprpc keygen` makes one)"
        )
    lines = [f"wire mode: secure (encrypted and authenticated{fec})"]
    if pub is not None:
        lines.append(f"server key: {pub.hex()} (clients pin it with --server-key)")
    if who:
        lines.append("clients:   authenticated by " + " and ".join(who))
    else:
        lines.append(
            "clients:   not authenticated (they authenticate this server by its key; "
            "--key or an authorize hook would authenticate them)"
        )
    return lines, None


def listen_error(e: OSError, host: object, port: object) -> UsageError:
    """The one-line error for a port ``serve`` cannot bind, with what to do about it."""
    hint = (
        "another server has that port: choose one with --port, or --port 0 for any free port"
        if e.errno == errno.EADDRINUSE
        else "--host must be an address of this machine, e.g. 127.0.0.1 or 0.0.0.0"
    )
    return UsageError(f"cannot listen on {host}:{port}: {e.strerror or e} ({hint})")


def print_banner(server: Server, host: str, port: int, extra: Sequence[str] = ()) -> None:
    """What ``serve`` prints once it serves: services, address, wire mode, who is authenticated."""
    lines, warning = security_summary(server.transport)
    names = sorted({m.service for m in server.methods.values()})
    print(f"kcprpc serving {', '.join(names)} on {host}:{port}", flush=True)
    for line in [*lines, *extra]:
        print("  " + line, flush=True)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


async def _serve(
    server: Server,
    grace: float,
    metrics: tuple[str, int] | None = None,
    args: argparse.Namespace | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    try:
        host, port = await server.start()
    except OSError as e:
        raise listen_error(e, server.host, server.port) from None
    try:
        endpoint = await start_endpoint(server, metrics)  # --metrics: /metrics and /healthz
        web = await start_web(server, args) if args is not None else []  # --ws: browsers
    except BaseException:
        await server.shutdown(0)
        raise
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the banner: a script may signal right after it
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    extra = [f"metrics:   {endpoint.url}/metrics and {endpoint.url}/healthz"] if endpoint is not None else []
    extra += web
    print_banner(server, host, port, extra)
    serving = asyncio.ensure_future(server.serve())
    await asyncio.wait({serving, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    failed = serving.done() and not serving.cancelled() and serving.exception() is not None
    print("serving failed: shutting down" if failed else "shutting down", flush=True)
    await server.shutdown(grace)
    serving.cancel()
    # a failure is logged by the server, and the exit code says it
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await serving
    if endpoint is not None:
        await endpoint.close()  # last: /healthz says 503 while the server drains
    return 1 if failed else 0


def setup_logging(level: str, format: str = "text") -> None:
    """``--log-level`` and ``--log-format``: the root logger's level and a timestamped format on
    stderr, text or JSON lines (docs/logging.md; :func:`kcprpc.configure_logging`)."""
    configure_logging(level, format)


def cmd_serve(args: argparse.Namespace) -> int:
    """``kcprpc serve module:app``: serve until SIGINT/SIGTERM, then shut down gracefully."""
    apply_env(args)  # KCPRPC_* for what the command line left out
    if not args.app:
        raise UsageError("serve needs module:app (e.g. examples.quickstart.service:app) or KCPRPC_APP")
    setup_logging(args.log_level, args.log_format)
    sys.path.insert(0, "")
    check_web_args(args)
    if args.workers > 1:
        return _serve_workers(args)
    server = make_server(load_app(args.app), args)
    return run_loop(_serve(server, args.grace, args.metrics, args))


def _serve_workers(args: argparse.Namespace) -> int:
    """``--workers N``: N processes on the port, supervised by this one (kcprpc.workers)."""
    from kcprpc.workers import WebListeners, serve_workers

    web = web_listeners(args)  # --ws/--wt: every worker serves them (the parent binds the ports)
    bound: list[WebListeners] = []

    def on_ready(server: Server, address: tuple[str, int], pids: list[int]) -> None:
        routed = (
            "; secure sessions reach their worker by connection ID"
            if server.wire_mode == "secure"
            else "; sessions spread by the kernel's address hash"
        )
        pid_list = ", ".join(map(str, pids))
        extra = [f"workers:   {len(pids)} (pids {pid_list}){routed}"]
        if args.metrics is not None:
            mhost, mport = args.metrics
            extra.append(f"metrics:   each worker's on {mhost}:{mport}+index (/metrics and /healthz)")
        if bound:
            wire = server.transport.wire
            authorized = getattr(wire, "authorize", None) is not None
            extra += web_lines(bound[0], authorized)
        print_banner(server, address[0], address[1], extra)

    app = load_app(args.app)
    try:
        code = serve_workers(
            lambda: make_server(app, args),
            args.workers,
            grace=args.grace,
            on_ready=on_ready,
            metrics=args.metrics,
            web=web,
            on_listening=bound.append,
        )
    except OSError as e:
        port = args.port if args.port is not None else "(the app's port)"
        raise listen_error(e, args.host or DEFAULT_HOST, port) from None
    print("shut down", flush=True)
    return code


def public_key(static_private_key: bytes | None) -> bytes | None:
    """The X25519 public key of a server's static private key (what clients pin), or None."""
    if static_private_key is None:
        return None
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.from_private_bytes(static_private_key).public_key().public_bytes_raw()


def add_serve_command(sub: Any) -> None:
    """Register ``serve`` on an ``argparse`` sub-parsers object."""
    s = sub.add_parser("serve", help="serve module:app (a Server, a list of services, or a factory)")
    s.add_argument("app", nargs="?", help="module:attribute, e.g. examples.quickstart.service:app")
    s.add_argument(
        "--host",
        default=None,
        help=f"address to bind (default: the app's, else {DEFAULT_HOST}; 0.0.0.0 accepts other machines)",
    )
    s.add_argument(
        "--port", type=port_number, default=None, help="UDP port (default: the app's, else 9000; 0: any)"
    )
    s.add_argument(
        "--grace",
        type=nonnegative_float,
        default=5.0,
        help="seconds in-flight calls get at shutdown (default 5)",
    )
    s.add_argument(
        "--log-level",
        default="warning",
        type=str.lower,
        choices=LOG_LEVELS,
        help="what the kcprpc.server / kcprpc.client loggers show (default warning; docs/logging.md)",
    )
    add_ops_args(s)  # --log-format, --metrics, --broker
    s.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        help="worker processes on the port (default 1; Linux; docs/workers.md)",
    )
    add_web_args(s)  # --ws, --web-origin, --web-root
    add_transport_args(s)
    defer_defaults(s)  # last: every option above can come from KCPRPC_* (kcprpc.cli.env)
    s.set_defaults(func=cmd_serve, is_async=False)


def worker_count(text: str) -> int:
    """``--workers``: 1..256."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 256:
        raise argparse.ArgumentTypeError(f"{text!r}: the number of workers is 1..256")
    return n
