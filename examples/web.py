"""Serving an example to browsers: the WebSocket listener (with the pages of examples/browser and
the discovery document ``/kcprpc.json``) and, when asked, the WebTransport listener with a fresh
development certificate, beside the example's KCP listener (docs/browser.md).

    python -m examples.live --serve --web 127.0.0.1:8080 [--wt 127.0.0.1:4433]
    python -m examples.game --serve --web 127.0.0.1:8081 [--wt 127.0.0.1:4434]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kcprpc
from examples.common import host_port

WEB_ROOT = Path(__file__).resolve().parent / "browser"
"""The pages (examples/browser): ``live/``, ``game/`` and what they share."""


def listen_address(text: str) -> tuple[str, int]:
    """``argparse`` type: ``HOST:PORT`` to listen on, port 0 meaning any free one."""
    head, sep, port = text.rpartition(":")
    if sep and port == "0":
        return host_port(f"{head}:1")[0], 0
    return host_port(text)


WEB_DEFAULT = ("127.0.0.1", 8080)
"""Where ``--web`` listens when given no address."""
WT_DEFAULT = ("127.0.0.1", 4433)
"""Where ``--wt`` listens when given no address."""


def add_web_arguments(ap: argparse.ArgumentParser) -> None:
    """``--web [HOST:PORT]``, ``--wt [HOST:PORT]``, ``--web-origin ORIGIN``, ``--json``."""
    ap.add_argument(
        "--web", type=listen_address, metavar="HOST:PORT", nargs="?", const=WEB_DEFAULT,
        help="also listen for browsers over WebSocket (default 127.0.0.1:8080; port 0: any free one), "
        "serving the pages of examples/browser",
    )  # fmt: skip
    ap.add_argument(
        "--wt", type=listen_address, metavar="HOST:PORT", nargs="?", const=WT_DEFAULT,
        help="also listen for WebTransport (UDP; default 127.0.0.1:4433), with a development certificate "
        "made at start",
    )  # fmt: skip
    ap.add_argument(
        "--web-origin", action="append", metavar="ORIGIN",
        help="an origin allowed to connect (repeatable; default: the pages' own, http://HOST:PORT of --web, "
        "and its localhost twin)",
    )  # fmt: skip
    ap.add_argument("--json", action="store_true", help="print the addresses as one JSON line (for tests)")


@dataclass
class WebServing:
    """What :func:`start_web` started: the listeners' addresses and the page URL base."""

    kcp: tuple[str, int]
    http: str | None = None
    """``http://HOST:PORT`` of the WebSocket listener (the pages, ``/kcprpc.json``)."""
    webtransport: str | None = None
    """``https://HOST:PORT/kcprpc`` of the WebTransport listener."""
    certificate_hash: str | None = None
    """The development certificate's SHA-256 (base64), for ``serverCertificateHashes``."""
    listeners: list[Any] = field(default_factory=list)
    folder: tempfile.TemporaryDirectory[str] | None = None
    """The folder the WebSocket listener serves (a copy made at start)."""

    def close(self) -> None:
        """Remove the served folder (after the server's shutdown)."""
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None

    def describe(self, page: str) -> dict[str, Any]:
        """The addresses, with the URL of ``page`` (e.g. ``"live/"``)."""
        return {
            "kcp": f"{self.kcp[0]}:{self.kcp[1]}",
            "page": f"{self.http}/{page}" if self.http else None,
            "http": self.http,
            "webtransport": self.webtransport,
            "certificate_hash": self.certificate_hash,
        }


BUNDLE = Path(__file__).resolve().parents[1] / "clients" / "typescript" / "dist" / "browser" / "kcprpc.js"
"""The kcprpc browser bundle the pages import as ``/kcprpc.js`` (built in clients/typescript)."""


def web_folder(into: Path) -> Path:
    """The folder the WebSocket listener serves: the pages of examples/browser and the bundle
    as ``/kcprpc.js``, copied into ``into`` at start (a listener serves nothing from outside its
    folder, symlinks included, and the bundle lives in clients/typescript)."""
    if not BUNDLE.is_file():
        raise kcprpc.UsageError(
            f"the browser bundle {BUNDLE} is missing: build it first "
            "(cd clients/typescript && npm ci && npm run build:browser)"
        )
    shutil.copytree(WEB_ROOT, into, dirs_exist_ok=True)
    shutil.copy2(BUNDLE, into / "kcprpc.js")
    source_map = BUNDLE.with_name(BUNDLE.name + ".map")
    if source_map.is_file():  # for the browser's developer tools
        shutil.copy2(source_map, into / source_map.name)
    return into


def page_origins(host: str, port: int) -> tuple[str, ...]:
    """The origins of pages served from ``http://host:port``: a loopback address's also under
    the other loopback name (``127.0.0.1`` and ``localhost``)."""
    names = [host]
    if host in ("127.0.0.1", "localhost"):
        names = ["127.0.0.1", "localhost"]
    return tuple(f"http://{n}:{port}" for n in names)


async def start_web(server: kcprpc.Server, kcp: tuple[str, int], args: argparse.Namespace) -> WebServing:
    """Start the listeners ``args`` asks for (``--web``, ``--wt``) on ``server`` (started);
    they close with ``server.shutdown()``, the served folder with :meth:`WebServing.close`."""
    out = WebServing(kcp)
    if args.wt is not None and args.web is None:
        raise kcprpc.UsageError("--wt needs --web: the pages and /kcprpc.json come from the WebSocket listener")
    if args.web is None:
        return out
    try:
        from kcprpc import web
    except ImportError as e:
        raise kcprpc.UsageError(f"--web needs the web extra: pip install 'kcprpc[web]' ({e})") from None

    out.folder = tempfile.TemporaryDirectory(prefix="kcprpc-web-")
    root = web_folder(Path(out.folder.name))
    host, port = args.web
    # port 0: the page's origin is known only once listening, so any origin may connect
    origins = tuple(args.web_origin or ()) or (("*",) if port == 0 else page_origins(host, port))
    ws = await web.listen_websocket(server, host, port, web.WebSocketOptions(origins=origins, web_root=root))
    h, p = ws.address[:2]
    out.http = f"http://{h}:{p}"
    out.listeners.append(ws)
    if args.wt is not None:
        # discovery (/kcprpc.json on the WebSocket listener) announces this listener and its hash
        from kcprpc.web.certs import make_dev_certificate

        cert_path, key_path = make_dev_certificate().write(Path(out.folder.name) / ".cert")
        wt = await web.listen_webtransport(
            server,
            args.wt[0],
            args.wt[1],
            web.WebTransportOptions(
                origins=tuple(args.web_origin or ()) or page_origins(h, p),  # the pages' own, port known now
                certificate=cert_path,
                private_key=key_path,
            ),  # a development certificate: the listener announces its hash
        )
        out.webtransport = wt.url
        out.certificate_hash = wt.certificate_hashes[0] if wt.certificate_hashes else None
        out.listeners.append(wt)
    return out


def announce(serving: WebServing, page: str, as_json: bool) -> None:
    """Print where the example listens (one JSON line with ``--json``)."""
    d = serving.describe(page)
    if as_json:
        print(json.dumps(d), flush=True)
        return
    if d["page"]:
        print(f"open {d['page']} in a browser", flush=True)
    if d["webtransport"]:
        print(f"webtransport on {d['webtransport']} (development certificate sha-256 {d['certificate_hash']})")


async def until_signalled() -> None:
    """Wait for SIGINT or SIGTERM (how a server started with ``--serve`` is stopped)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
