"""``kcprpc serve``'s web options: ``--ws HOST:PORT`` (a WebSocket listener beside the KCP port,
docs/wire-format/web.md), ``--web-origin ORIGIN`` (repeatable: the browser origins allowed) and
``--web-root DIR`` (the files of a browser app, served over plain HTTP on the same port). Like
every ``serve`` option they can come from ``KCPRPC_*`` variables (``KCPRPC_WS``,
``KCPRPC_WEB_ORIGIN`` as a comma-separated list, ``KCPRPC_WEB_ROOT``)."""

from __future__ import annotations

import argparse
from typing import Any

from kcprpc.cli.env import AppendList
from kcprpc.cli.ops import metrics_address
from kcprpc.errors import UsageError
from kcprpc.server import Server

__all__ = ["add_web_args", "check_web_args", "start_web"]


def add_web_args(p: argparse.ArgumentParser) -> None:
    """Add ``--ws``, ``--web-origin`` and ``--web-root`` to ``serve``'s parser."""
    p.add_argument(
        "--ws",
        type=metrics_address,
        default=None,
        metavar="HOST:PORT",
        help="also serve WebSocket clients (browsers) there, path /kcprpc (needs kcprpc[web]; port 0: any)",
    )
    p.add_argument(
        "--web-origin",
        action=AppendList,
        default=None,
        metavar="ORIGIN",
        help="a browser origin allowed to connect, e.g. http://localhost:8000 (repeatable; * allows any; "
        "default: none, only non-browser clients)",
    )
    p.add_argument(
        "--web-root",
        default=None,
        metavar="DIR",
        help="serve the files of this folder over HTTP on the --ws port (and /kcprpc.json)",
    )


def check_web_args(args: argparse.Namespace) -> None:
    """The web options that make no sense as given raise :class:`UsageError`."""
    ws = getattr(args, "ws", None)
    if ws is None and (getattr(args, "web_origin", None) or getattr(args, "web_root", None)):
        raise UsageError("--web-origin and --web-root need --ws HOST:PORT")
    if ws is not None and getattr(args, "workers", 1) > 1:
        raise UsageError("--ws serves from one process: it does not go with --workers")


async def start_web(server: Server, args: argparse.Namespace) -> list[str]:
    """Start the WebSocket listener ``--ws`` asks for (after ``server.start()``); the lines
    ``serve``'s banner prints about it (none without ``--ws``)."""
    check_web_args(args)
    where: Any = getattr(args, "ws", None)
    if where is None:
        return []
    try:
        from kcprpc.web import WebSocketOptions, listen_websocket
    except ImportError as e:  # pragma: no cover - the web extra is in dev
        raise UsageError(f"--ws needs the web extra: pip install 'kcprpc[web]' ({e})") from None
    origins: list[str] = []
    for item in args.web_origin or ():
        origins.extend(o.strip() for o in item.split(",") if o.strip())
    options = WebSocketOptions(origins=tuple(origins), web_root=args.web_root)
    host, port = where
    listener = await listen_websocket(server, host, port, options)
    h, p = listener.address
    shown = f"[{h}]" if ":" in h else h
    lines = [f"websocket: ws://{shown}:{p}{options.path} (origins: {', '.join(origins) or 'none'})"]
    if listener.authorize is not None:
        lines.append("           its clients are authenticated by the app's authorize hook (their token)")
    else:
        lines.append(
            "           its clients are NOT authenticated (the passphrase is KCP's; an authorize hook checks tokens)"
        )
    if options.web_root is not None:
        lines.append(f"web root:  {options.web_root} at http://{shown}:{p}/")
    return lines
