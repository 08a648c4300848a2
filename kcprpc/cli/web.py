"""``kcprpc serve``'s web options: ``--ws HOST:PORT`` (a WebSocket listener beside the KCP port,
docs/wire-format/web.md), ``--web-origin ORIGIN`` (repeatable: the browser origins allowed, on
both web listeners), ``--web-root DIR`` (the files of a browser app, served over plain HTTP on the
``--ws`` port) and ``--wt HOST:PORT --wt-cert PEM --wt-key PEM`` (a WebTransport listener on that
UDP port; ``kcprpc web-cert`` makes a development certificate). Like every ``serve`` option they
can come from ``KCPRPC_*`` variables (``KCPRPC_WS``, ``KCPRPC_WEB_ORIGIN`` as a comma-separated
list, ``KCPRPC_WEB_ROOT``, ``KCPRPC_WT``, ``KCPRPC_WT_CERT``, ``KCPRPC_WT_KEY``)."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

from kcprpc.cli.env import AppendList
from kcprpc.cli.ops import metrics_address
from kcprpc.errors import UsageError
from kcprpc.server import Server
from kcprpc.workers import WebListeners

__all__ = ["add_web_args", "check_web_args", "start_web", "web_lines", "web_listeners"]


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
    p.add_argument(
        "--wt",
        type=metrics_address,
        default=None,
        metavar="HOST:PORT",
        help="also serve WebTransport clients (browsers, HTTP/3 over UDP) there, path /kcprpc "
        "(needs --wt-cert and --wt-key; port 0: any)",
    )
    p.add_argument(
        "--wt-cert",
        default=None,
        metavar="PEM",
        help="the WebTransport listener's TLS certificate (kcprpc web-cert --out DIR makes a development one)",
    )
    p.add_argument("--wt-key", default=None, metavar="PEM", help="the private key of --wt-cert")


def check_web_args(args: argparse.Namespace) -> None:
    """The web options that make no sense as given raise :class:`UsageError`."""
    ws = getattr(args, "ws", None)
    wt = getattr(args, "wt", None)
    if ws is None and getattr(args, "web_root", None):
        raise UsageError("--web-root needs --ws HOST:PORT")
    if ws is None and wt is None and getattr(args, "web_origin", None):
        raise UsageError("--web-origin needs --ws HOST:PORT or --wt HOST:PORT")
    cert, key = getattr(args, "wt_cert", None), getattr(args, "wt_key", None)
    if wt is None and (cert or key):
        raise UsageError("--wt-cert and --wt-key need --wt HOST:PORT")
    if wt is not None and (not cert or not key):
        raise UsageError("--wt needs --wt-cert PEM and --wt-key PEM (kcprpc web-cert --out DIR makes a pair)")


def _origin_list(args: argparse.Namespace) -> list[str]:
    origins: list[str] = []
    for item in getattr(args, "web_origin", None) or ():
        origins.extend(o.strip() for o in item.split(",") if o.strip())
    return origins


def web_listeners(args: argparse.Namespace) -> WebListeners | None:
    """``--workers N`` with ``--ws``/``--wt``: what every worker serves (None: no web listener)."""
    check_web_args(args)
    origins = _origin_list(args)
    ws, wt = _wanted(args, "--ws"), _wanted(args, "--wt")
    if ws is None and wt is None:
        return None
    from kcprpc.web import WebSocketOptions, WebTransportOptions

    return WebListeners(
        websocket=ws,
        websocket_options=WebSocketOptions(origins=tuple(origins), web_root=args.web_root) if ws else None,
        webtransport=wt,
        webtransport_options=WebTransportOptions(
            origins=tuple(origins), certificate=args.wt_cert, private_key=args.wt_key
        )
        if wt
        else None,
    )


def web_lines(web: WebListeners, authorized: bool) -> list[str]:
    """The banner's lines about the web listeners of ``--workers N`` (bound by the parent)."""
    lines: list[str] = []
    auth = "authenticated by the app's authorize hook" if authorized else "NOT authenticated"
    if web.websocket is not None:
        opts = web.websocket_options
        h, p = web.websocket
        shown = f"[{h}]" if ":" in h else h
        lines.append(f"websocket: ws://{shown}:{p}{opts.path} {_origins(list(opts.origins))} on every worker")
        lines.append(
            f"           its clients are {auth}; a reconnect may land on another worker (a fresh session)"
        )
        if opts.web_root is not None:
            lines.append(f"web root:  {opts.web_root} at http://{shown}:{p}/")
    if web.webtransport is not None:
        opts = web.webtransport_options
        h, p = web.webtransport
        shown = f"[{h}]" if ":" in h else h
        lines.append(
            f"webtransport: https://{shown}:{p}{opts.path} {_origins(list(opts.origins))} on every worker "
            "(by address hash)"
        )
        from kcprpc.web.certs import dev_certificate_hash

        try:
            digest = dev_certificate_hash(Path(str(opts.certificate)).read_bytes())
        except (OSError, UsageError):
            digest = None
        if digest is not None:
            lines.append(
                "           development certificate, serverCertificateHashes sha-256 (base64): "
                + base64.b64encode(digest).decode("ascii")
            )
    return lines


async def start_web(server: Server, args: argparse.Namespace) -> list[str]:
    """Start the WebSocket listener ``--ws`` asks for (after ``server.start()``); the lines
    ``serve``'s banner prints about it (none without ``--ws``)."""
    check_web_args(args)
    origins = _origin_list(args)
    lines = await _start_ws(server, args, origins)
    lines += await _start_wt(server, args, origins)
    return lines


def _wanted(args: argparse.Namespace, flag: str) -> tuple[str, int] | None:
    """The ``HOST, PORT`` of ``--ws`` or ``--wt`` (``flag``), None when not given; given, the web
    extra must be installed (else a UsageError naming the flag)."""
    where: tuple[str, int] | None = getattr(args, flag.removeprefix("--"), None)
    if where is not None:
        try:
            import kcprpc.web  # noqa: F401
        except ImportError as e:  # pragma: no cover - the web extra is in dev
            raise UsageError(f"{flag} needs the web extra: pip install 'kcprpc[web]' ({e})") from None
    return where


def _origins(origins: list[str]) -> str:
    return f"(origins: {', '.join(origins) or 'none'})"


async def _start_ws(server: Server, args: argparse.Namespace, origins: list[str]) -> list[str]:
    where = _wanted(args, "--ws")
    if where is None:
        return []
    from kcprpc.web import WebSocketOptions, listen_websocket

    options = WebSocketOptions(origins=tuple(origins), web_root=args.web_root)
    listener = await listen_websocket(server, *where, options)
    h, p = listener.address
    shown = f"[{h}]" if ":" in h else h
    lines = [f"websocket: ws://{shown}:{p}{options.path} {_origins(origins)}"]
    if listener.authorize is not None:
        lines.append("           its clients are authenticated by the app's authorize hook (their token)")
    else:
        lines.append(
            "           its clients are NOT authenticated (the passphrase is KCP's; an authorize hook checks tokens)"
        )
    if options.web_root is not None:
        lines.append(f"web root:  {options.web_root} at http://{shown}:{p}/")
    return lines


async def _start_wt(server: Server, args: argparse.Namespace, origins: list[str]) -> list[str]:
    where = _wanted(args, "--wt")
    if where is None:
        return []
    from kcprpc.web import WebTransportOptions, listen_webtransport

    options = WebTransportOptions(origins=tuple(origins), certificate=args.wt_cert, private_key=args.wt_key)
    listener = await listen_webtransport(server, *where, options)
    lines = [f"webtransport: {listener.url} {_origins(origins)}"]
    if listener.certificate_hashes:
        lines.append(
            f"           development certificate, serverCertificateHashes sha-256 (base64): "
            f"{', '.join(listener.certificate_hashes)}"
        )
    if listener.authorize is None:
        lines.append("           its clients are NOT authenticated (an authorize hook checks tokens)")
    return lines
