"""docs/browser.md's page, walked through as a reader would: its ```html block saved as
``site/index.html`` beside the browser bundle, served by ``kcprpc serve
examples.quickstart.service:app --ws ... --web-root site`` (and ``--wt`` with a certificate from
``kcprpc web-cert``), opened in a real headless Chromium. The page's ``connectWeb`` reads
discovery, calls ``quickstart.Greeter/hello`` and shows the reply with the URL it connected to:
WebTransport when the server offers it, WebSocket when it does not.

(The page's shell and Python blocks run in tests/docs/test_docs.py; this is the part that needs a
browser.) The server is a child process, on free ports of 127.0.0.1 (``--web-origin '*'``: the
ports, and so the page's origin, are known only once it listens), ended when the test ends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.browser.chromium import Chromium
from tests.browser.example_server import stop

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "browser.md"
START_TIMEOUT_S = 30.0
SHOWN = "(() => { const t = document.getElementById('out')?.textContent ?? ''; return t.startsWith('Hello') ? t : null; })()"


def docs_page_html() -> str:
    """The one ```html block of docs/browser.md (the page the reader saves as site/index.html)."""
    blocks = re.findall(r"^```html\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.S | re.M)
    assert len(blocks) == 1, f"docs/browser.md should hold one html block, not {len(blocks)}"
    return str(blocks[0])


def reader_env() -> dict[str, str]:
    """The environment of the reader's commands, run in a folder of their own: the checkout after
    whatever PYTHONPATH holds (``examples.quickstart`` is imported from it)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)
    return env


@contextlib.asynccontextmanager
async def kcprpc_serve(args: list[str], cwd: Path) -> AsyncIterator[list[str]]:
    """``kcprpc serve ARGS`` in ``cwd``; yields its banner lines once it serves (SIGINT at the end,
    as Ctrl-C, then SIGKILL if it does not stop)."""
    env = reader_env()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kcprpc", "serve", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []

    async def banner() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            lines.append(line.decode("utf-8", "replace").rstrip())
            if any(ln.lstrip().startswith("webtransport:") for ln in lines) or (
                "--wt" not in args and any(ln.lstrip().startswith("websocket:") for ln in lines)
            ):
                return
        raise AssertionError(f"kcprpc serve exited: {lines}")

    try:
        try:
            await asyncio.wait_for(banner(), START_TIMEOUT_S)
        except TimeoutError:
            raise AssertionError(
                f"kcprpc serve printed no listener within {START_TIMEOUT_S} s: {lines}"
            ) from None
        yield lines
    finally:
        await stop(proc, signal.SIGINT)


def _url(lines: list[str], name: str) -> str:
    for ln in lines:
        m = re.match(rf"\s*{name}: (\S+)", ln)
        if m:
            return m.group(1)
    raise AssertionError(f"no {name} line in the banner: {lines}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["webtransport", "websocket"])
async def test_the_docs_page_calls_the_greeter_over_the_transport_the_server_offers(
    transport: str, bundle: Path, browser: Chromium, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(docs_page_html(), encoding="utf-8")
    shutil.copy(bundle, site / "kcprpc.js")
    args = ["examples.quickstart.service:app", "--port", "0", "--ws", "127.0.0.1:0", "--web-root", "site"]
    args += ["--web-origin", "*"]
    if transport == "webtransport":
        subprocess.run(
            [sys.executable, "-m", "kcprpc", "web-cert", "--out", "dev-cert"],
            cwd=tmp_path, env=reader_env(), check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        args += ["--wt", "127.0.0.1:0", "--wt-cert", "dev-cert/cert.pem", "--wt-key", "dev-cert/key.pem"]
    async with kcprpc_serve(args, tmp_path) as banner:
        ws_url = _url(banner, "websocket")
        http = ws_url.replace("ws://", "http://").removesuffix("/kcprpc")
        page = await browser.new_page()
        await page.goto(http + "/")
        try:
            shown = await page.wait_for(SHOWN, timeout=30)
        except Exception as e:
            raise AssertionError(
                f"the page showed no reply: {e}\nconsole: {page.console}\nserver: {banner}"
            ) from None
        want = _url(banner, "webtransport") if transport == "webtransport" else ws_url
        assert shown == f"Hello, browser! over {want}", (shown, page.console)
