"""The TypeScript client's reconnect in a real Chromium (Debian's, headless) when the server is
restarted with a NEW development certificate on a NEW WebTransport port: ``connectWeb`` (``"auto"``)
connected over WebTransport with the first certificate's hash, as ``/kcprpc.json`` gave it; the
server goes away and a new one takes the page's origin (the WebSocket listener's port, serving the
discovery document) with a new certificate and WebTransport port; the client's reconnect fails to
dial the old endpoint, re-reads ``/kcprpc.json`` and reconnects over WebTransport with the new hash
(never over WebSocket). The page imports the bundle (clients/typescript/dist/browser/kcprpc.js)
as a page's code does.

The hand-over is ordered so the client's reconnect always finds the new server's discovery: the
new server's WebTransport listener starts first (so its port differs from the old one), the old
server's WebSocket listener closes and the new one takes its port, then the old server shuts down
(which ends the page's connection)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import kcprpc
from kcprpc.web import WebSocketOptions, listen_websocket
from kcprpc.web.certs import make_dev_certificate
from kcprpc.web.options import WebTransportOptions
from kcprpc.web.webtransport import WebTransportListener, listen_webtransport
from tests.browser.chromium import Chromium
from tests.clients.ts_app import App, authorize_web, refuse, restore

pytestmark = pytest.mark.timeout(120)

CONNECT = """(async () => {
  const k = await import("/kcprpc.js");
  window.lost = [];
  window.client = await k.connectWeb(`${location.origin}/`, {
    token: "good",
    connectTimeoutMs: 5000,
    reconnect: { initialMs: 50, maximumMs: 300 },
    heartbeat: { intervalMs: 300, timeoutMs: 3000 },
    onDisconnect: (reason) => window.lost.push(reason),
  });
  const got = await window.client.unary("ts.App/echo", { text: "before" });
  return { remote: window.client.remoteAddress, echo: got.got.text };
})()"""

AFTER = """(async () => {
  const got = await window.client.unary("ts.App/echo", { text: "after" });
  return { remote: window.client.remoteAddress, echo: got.got.text, lost: window.lost.length, reconnects: window.client.reconnects };
})()"""


async def _server(cert_dir: Path) -> tuple[kcprpc.Server, WebTransportListener, str]:
    """A server with a WebTransport listener on a fresh port and a fresh development certificate
    (made in ``cert_dir``); returns it, the listener and the certificate's base64 SHA-256."""
    dev = make_dev_certificate(days=3)
    cert_dir.mkdir()
    cert, key = dev.write(cert_dir)
    app = App()
    server = kcprpc.Server([app], "127.0.0.1", 0, on_connect=refuse, on_restore=restore)
    app.server = server
    await server.start()
    try:
        wt = await listen_webtransport(
            server,
            "127.0.0.1",
            0,
            WebTransportOptions(certificate=cert, private_key=key, origins=("*",), authorize=authorize_web),
        )
    except BaseException:
        await server.shutdown(grace=0)
        raise
    return server, wt, dev.hash_base64


async def test_reconnect_reads_the_restarted_servers_new_certificate(
    browser: Chromium, bundle: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><meta charset='utf-8'><title>reconnect</title>\n")
    shutil.copy(bundle, root / "kcprpc.js")
    ws_options = WebSocketOptions(web_root=root, origins=("*",), authorize=authorize_web)
    servers: list[kcprpc.Server] = []
    try:
        old, old_wt, old_hash = await _server(tmp_path / "cert1")
        servers.append(old)
        old_ws = await listen_websocket(old, "127.0.0.1", 0, ws_options)
        port = old_ws.address[1]
        origin = f"http://127.0.0.1:{port}"
        page = await browser.new_page()
        await page.goto(f"{origin}/")
        first = await page.evaluate(CONNECT, timeout=30)
        assert first == {"remote": old_wt.url, "echo": "before"}, (first, page.console)

        # the restart: a new certificate on a new WebTransport port, the same origin
        new, new_wt, new_hash = await _server(tmp_path / "cert2")
        servers.append(new)
        assert new_hash != old_hash and new_wt.url != old_wt.url, (old_wt.url, new_wt.url)
        old_ws.close()
        await old_ws.wait_closed()
        new_ws = await listen_websocket(new, "127.0.0.1", port, ws_options)
        doc = new_ws.discovery_document()
        assert doc["webtransport"] == {"url": new_wt.url, "certificateHashes": [new_hash]}, json.dumps(doc)
        await old.shutdown(grace=0.2)  # the page's WebTransport connection ends here

        url = json.dumps(new_wt.url)
        await page.wait_for(f"window.client.connected && window.client.remoteAddress === {url}", timeout=30)
        after = await page.evaluate(AFTER, timeout=30)
        assert after == {"remote": new_wt.url, "echo": "after", "lost": 1, "reconnects": 1}, (after, page.console)
        assert new_wt.stats()["accepted"] == 1, new_wt.stats()
        assert new_ws.stats()["accepted"] == 0, ("no WebSocket fallback", new_ws.stats())
    finally:
        for s in servers:
            await s.shutdown(grace=0.2)
