"""The TypeScript client's browser bundle (clients/typescript/dist/browser/kcprpc.js) in a real
Chromium (Debian's, headless), over WebSocket and over WebTransport, against a server in this
process: the page (ts_bundle.html, imported through an import map as a page's code would) reads
``/kcprpc.json``, is refused with a bad token (RpcError UNAUTHENTICATED), makes unary and
server-stream calls (also through a generated stub served beside the bundle), gets pushes to the session, a room and a topic and unreliable events (as
WebTransport datagrams or WebSocket DATAGRAM messages), then the server drops its connection and
the client resumes the same session. ``auto`` picks WebTransport when it is offered."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import kcprpc
from examples.quickstart.service import Greeter
from kcprpc.web import WebSocketOptions, listen_websocket
from kcprpc.web.certs import make_dev_certificate
from kcprpc.web.options import WebTransportOptions
from kcprpc.web.webtransport import listen_webtransport
from tests.browser.chromium import Chromium
from tests.browser.conftest import PACKAGE
from tests.clients.ts_app import App, authorize_web, refuse, restore

pytestmark = pytest.mark.timeout(120)

PAGE = Path(__file__).with_name("ts_bundle.html")


async def _run_page(
    browser: Chromium, bundle: Path, tmp_path: Path, transport: str, tls: ssl.SSLContext | None = None
) -> dict[str, Any]:
    """Serve the page and the bundle (WebSocket listener's web root; ``tls``: over https and
    wss) beside a WebTransport listener with a development certificate, run the page's checks
    over ``transport``."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(PAGE, root / "index.html")
    shutil.copy(bundle, root / "kcprpc.js")
    shutil.copy(bundle.with_name("kcprpc.js.map"), root / "kcprpc.js.map")
    # the quickstart's generated stub, compiled as a page's build would (esbuild strips its type imports)
    esbuild = PACKAGE / "node_modules" / ".bin" / "esbuild"
    stub = PACKAGE / "src" / "generated" / "quickstart.Greeter.ts"
    (root / "stubs").mkdir()
    subprocess.run(
        [str(esbuild), str(stub), "--format=esm", f"--outfile={root / 'stubs' / 'quickstart.Greeter.js'}"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    cert, key = make_dev_certificate(days=3).write(tmp_path)
    app = App()
    server = kcprpc.Server([app, Greeter()], "127.0.0.1", 0, on_connect=refuse, on_restore=restore)
    app.server = server
    await server.start()
    try:
        ws = await listen_websocket(
            server,
            "127.0.0.1",
            0,
            WebSocketOptions(web_root=root, origins=("*",), authorize=authorize_web, ssl=tls),
        )
        origin = f"{'https' if tls else 'http'}://127.0.0.1:{ws.address[1]}"
        wt = await listen_webtransport(
            server,
            "127.0.0.1",
            0,
            WebTransportOptions(
                certificate=cert, private_key=key, origins=(origin,), authorize=authorize_web
            ),
        )
        page = await browser.new_page()
        await page.goto(f"{origin}/")
        await page.wait_for("window.kcprpcBundle", timeout=10)
        result: dict[str, Any] = await page.evaluate(f"window.kcprpcBundle.run({transport!r})", timeout=60)
        # the page closed its client: its session ends for good (not kept for a resume)
        deadline = asyncio.get_running_loop().time() + 10
        while server.sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        result["sessions_after_close"] = len(server.sessions)
        result["detached_after_close"] = server.detached_sessions
        result["server_stats"] = dict(server.stats)
        result["ws_stats"] = ws.stats()
        result["wt_stats"] = wt.stats()
        result["wt_url"] = wt.url
        result["console"] = page.console
        return result
    finally:
        await server.shutdown(grace=0.5)


def _check_common(r: dict[str, Any], scheme: str = "ws") -> None:
    """What holds over either transport."""
    assert r["offered"]["websocket"].startswith(f"{scheme}://127.0.0.1:"), r
    assert r["offered"]["webtransport"] == r["wt_url"] and r["offered"]["hashes"] == 1, r
    assert r["refused"] == {"rpcError": True, "status": "UNAUTHENTICATED", "message": "bad web token"}, r
    assert r["echo"] == {"text": "hi", "bytes": [1, 2, 3]}
    assert r["greeting"] == "Hello, chromium!" and r["greeterCount"] == [1, 2, 3]
    assert r["count"] == [2000, 2000]
    assert r["failed"] == ["NOT_FOUND", "nope"]
    pushes = r["pushes"]
    assert pushes["chatKeys"] == ["room:r1", "topic:news"], pushes
    assert pushes["blip"] and all(pushes["blip"]), pushes  # unreliable events, as datagrams
    assert pushes["pos"] == ["true:42"], pushes  # unreliable and latest-wins by entity
    assert None in pushes["note"] and "k1" in pushes["note"], pushes
    assert r["stats"]["datagrams_received"] >= 1, r["stats"]
    resumed = r["resumed"]
    assert resumed["sameSession"] is True and resumed["resumes"] == 1 and resumed["reconnects"] == 1, resumed
    assert resumed["rooms"] == ["r1"] and resumed["topics"] == ["news"], resumed
    assert resumed["echo"] == "after"
    # the close at the end: the session ended, and only the drop ever detached it
    assert r["sessions_after_close"] == 0 and r["detached_after_close"] == 0, r["server_stats"]
    assert r["server_stats"]["sessions_detached"] == 1, r["server_stats"]


@pytest.mark.parametrize("transport", ["websocket", "webtransport"])
async def test_bundle_over_each_transport(
    browser: Chromium, bundle: Path, tmp_path: Path, transport: str
) -> None:
    r = await _run_page(browser, bundle, tmp_path, transport)
    _check_common(r)
    wanted = r["offered"]["websocket"] if transport == "websocket" else r["wt_url"]
    assert r["remote"] == wanted and r["resumed"]["remote"] == wanted, r
    used, unused = ("ws_stats", "wt_stats") if transport == "websocket" else ("wt_stats", "ws_stats")
    # the refused OPEN and the two connections of the client (before and after the drop)
    assert r[used]["refused_unauthenticated"] == 1 and r[used]["accepted"] == 2, r[used]
    assert r[unused]["accepted"] == 0, r[unused]
    assert r[used]["protocol_errors"] == 0, r[used]


async def test_bundle_over_wss_served_by_the_listener(bundle: Path, tmp_path: Path) -> None:
    """The page and the WebSocket over TLS that the listener runs itself (``WebSocketOptions.ssl``:
    the handshake after the TCP accept, kcprpc.web.tls_accept), Chromium trusting the development
    certificate by its key's hash as a browser trusts a CA's."""
    dev = make_dev_certificate(days=3)
    cert, key = dev.write(tmp_path / "wss")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    spki = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = spki.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pin = base64.b64encode(hashlib.sha256(der).digest()).decode()
    async with Chromium.launch(f"--ignore-certificate-errors-spki-list={pin}") as browser:
        r = await _run_page(browser, bundle, tmp_path, "websocket", tls=ctx)
    _check_common(r, "wss")
    assert r["remote"] == r["offered"]["websocket"] == r["resumed"]["remote"], r
    assert r["ws_stats"]["refused_unauthenticated"] == 1 and r["ws_stats"]["accepted"] == 2, r["ws_stats"]
    assert r["ws_stats"]["tls_failed"] == 0 and r["ws_stats"]["handshakes_open"] == 0, r["ws_stats"]


async def test_auto_prefers_webtransport(browser: Chromium, bundle: Path, tmp_path: Path) -> None:
    r = await _run_page(browser, bundle, tmp_path, "auto")
    _check_common(r)
    assert r["remote"] == r["wt_url"], r
    assert r["ws_stats"]["accepted"] == 0 and r["wt_stats"]["accepted"] == 2, (r["ws_stats"], r["wt_stats"])
