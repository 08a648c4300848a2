"""Headless Chromium for the browser tests, driven over the DevTools protocol from Python.

Debian's ``/usr/bin/chromium`` (``.ci/run`` installs it when missing; never a downloaded browser
build), started with the flags docs/wire-format/web.md ("WebTransport notes") lists, a fresh
``--user-data-dir`` and ``--remote-debugging-port=0``; the DevTools WebSocket it announces on
stderr is spoken with the ``websockets`` package (the ``web`` extra), so no npm is
needed. QUIC stays on (WebTransport needs it).

::

    async with Chromium.launch() as browser:
        page = await browser.new_page()
        await page.goto("http://127.0.0.1:8000/")
        value = await page.evaluate("(async () => 1 + 1)()")
        png = await page.screenshot()

Every wait is bounded; the process is killed and its profile removed on exit, also on failure.
``page.console`` holds the page's console messages and exceptions (shown by failing tests).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets

CHROMIUM = os.environ.get("KCPRPC_CHROMIUM", "/usr/bin/chromium")
"""The browser executable (Debian's package)."""

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
)
"""The flags every launch passes (never ``--disable-quic``)."""


class CdpError(RuntimeError):
    """A DevTools command failed, or a page script threw."""


class Page:
    """One tab: navigate, evaluate scripts, take screenshots."""

    def __init__(self, browser: Chromium, session_id: str) -> None:
        self._browser = browser
        self.session_id = session_id
        self.console: list[str] = []
        """The page's console messages and uncaught exceptions, in order."""

    async def send(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30.0) -> Any:
        """Send one DevTools command to this page; returns its result."""
        return await self._browser.send(method, params, session_id=self.session_id, timeout=timeout)

    async def goto(self, url: str, *, timeout: float = 30.0) -> None:
        """Load ``url`` and wait for its ``load`` event."""
        loaded = self._browser.wait_event("Page.loadEventFired", self.session_id)
        try:
            res = await self.send("Page.navigate", {"url": url}, timeout=timeout)
            if res.get("errorText"):
                raise CdpError(f"navigating to {url}: {res['errorText']}")
            await asyncio.wait_for(asyncio.shield(loaded), timeout)
        finally:
            loaded.cancel()

    async def evaluate(self, expression: str, *, timeout: float = 30.0) -> Any:
        """Evaluate a script in the page, awaiting a returned promise; returns its value (JSON).
        A thrown error raises :class:`CdpError` with the page's message."""
        res = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout=timeout,
        )
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            desc = d.get("exception", {}).get("description") or d.get("text")
            raise CdpError(f"page script threw: {desc}\nconsole: {self.console}")
        return res["result"].get("value")

    async def wait_for(self, expression: str, *, timeout: float = 30.0) -> Any:
        """Wait until ``expression`` is truthy in the page (checked in the page every 20 ms,
        bounded by ``timeout``); returns its value."""
        ms, quoted = int(timeout * 1000), json.dumps(expression)
        js = (
            "(async () => { const end = Date.now() + "
            + str(ms)
            + "; for (;;) { const v = ("
            + expression
            + ");"
            " if (v) return v; if (Date.now() > end) throw new Error('timed out waiting for: ' + "
            + quoted
            + ");"
            " await new Promise(r => setTimeout(r, 20)); } })()"
        )
        return await self.evaluate(js, timeout=timeout + 5)

    async def screenshot(self, path: str | os.PathLike[str] | None = None) -> bytes:
        """A PNG of the page's viewport (also written to ``path`` when given)."""
        res = await self.send("Page.captureScreenshot", {"format": "png"})
        png = base64.b64decode(res["data"])
        if path is not None:
            Path(path).write_bytes(png)
        return png

    async def set_viewport(self, width: int, height: int) -> None:
        """Size the viewport (screenshots are this size)."""
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    async def close(self) -> None:
        """Close the tab."""
        with contextlib.suppress(Exception):
            await self._browser.send("Target.closeTarget", {"targetId": self._target_id()})

    def _target_id(self) -> str:
        return self._browser.targets[self.session_id]


class Chromium:
    """A headless Chromium process and its DevTools connection (use :meth:`launch`)."""

    def __init__(self, proc: asyncio.subprocess.Process, ws: Any, stderr: _StderrTail) -> None:
        self.proc = proc
        self._ws = ws
        self._stderr = stderr
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._waiters: list[tuple[str, str | None, asyncio.Future[dict[str, Any]]]] = []
        self._pages: dict[str, Page] = {}
        self.targets: dict[str, str] = {}
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, *extra_flags: str, timeout: float = 30.0) -> AsyncIterator[Chromium]:
        """Start Chromium (killed and its profile removed when the block ends)."""
        if not os.path.exists(CHROMIUM):
            raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
        profile = tempfile.mkdtemp(prefix="kcprpc-chromium-")
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            *extra_flags,
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: the end kills its helpers too
        )
        assert proc.stderr is not None
        stderr = _StderrTail(proc.stderr)
        browser: Chromium | None = None
        try:
            ws_url = await asyncio.wait_for(stderr.devtools_url, timeout)
            ws = await asyncio.wait_for(websockets.connect(ws_url, max_size=None), timeout)
            browser = cls(proc, ws, stderr)
            yield browser
        except TimeoutError:
            raise RuntimeError(f"chromium did not start in {timeout} s: {stderr.text()}") from None
        finally:
            if browser is not None:
                await browser._shutdown()  # Browser.close: Chromium ends itself and its helpers
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group this launch started
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            await stderr.close()
            shutil.rmtree(profile, ignore_errors=True)

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        timeout: float = 30.0,
    ) -> Any:
        """Send one DevTools command; returns its result (raises :class:`CdpError` on an error)."""
        i = next(self._ids)
        msg: dict[str, Any] = {"id": i, "method": method, "params": params or {}}
        if session_id is not None:
            msg["sessionId"] = session_id
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[i] = fut
        try:
            await self._ws.send(json.dumps(msg))
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(i, None)

    def wait_event(self, method: str, session_id: str | None = None) -> asyncio.Future[dict[str, Any]]:
        """A future for the next event ``method`` (of that page's session, when given): register
        it before the command that causes the event."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, session_id, fut))
        return fut

    async def new_page(self) -> Page:
        """A new tab, attached, with Page and Runtime events on."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        att = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        sid = att["sessionId"]
        page = Page(self, sid)
        self._pages[sid] = page
        self.targets[sid] = target["targetId"]
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        return page

    def stderr_tail(self) -> str:
        """The end of Chromium's stderr (for a failing test's message)."""
        return self._stderr.text()

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                msg = json.loads(raw)
                if "id" in msg:
                    fut = self._pending.get(msg["id"])
                    if fut is not None and not fut.done():
                        if "error" in msg:
                            fut.set_exception(
                                CdpError(f"{msg['error'].get('message')}: {msg['error'].get('data', '')}")
                            )
                        else:
                            fut.set_result(msg.get("result", {}))
                    continue
                self._on_event(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(CdpError("the DevTools connection closed: " + self.stderr_tail()))

    def _on_event(self, msg: dict[str, Any]) -> None:
        method, sid = msg.get("method", ""), msg.get("sessionId")
        params = msg.get("params", {})
        page = self._pages.get(sid) if sid is not None else None
        if page is not None:
            if method == "Runtime.consoleAPICalled":
                args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                page.console.append(f"{params.get('type')}: {args}")
            elif method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails", {})
                page.console.append(
                    "exception: " + str(d.get("exception", {}).get("description") or d.get("text"))
                )
        keep = []
        for w in self._waiters:
            m, s, fut = w
            if fut.done():
                continue
            if m == method and (s is None or s == sid):
                fut.set_result(params)
            else:
                keep.append(w)
        self._waiters = keep

    async def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            await self.send("Browser.close", timeout=5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ws.close(), 5)
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


class _StderrTail:
    """Reads Chromium's stderr to its end: resolves :attr:`devtools_url` from its
    ``DevTools listening on ws://...`` line and keeps the last lines (for error messages)."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.devtools_url: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._lines: collections.deque[str] = collections.deque(maxlen=40)
        self._task = asyncio.ensure_future(self._run(stream))

    async def _run(self, stream: asyncio.StreamReader) -> None:
        try:
            while line := await stream.readline():
                text = line.decode("utf-8", "replace").rstrip()
                self._lines.append(text)
                if not self.devtools_url.done() and text.startswith("DevTools listening on "):
                    self.devtools_url.set_result(text.removeprefix("DevTools listening on ").strip())
        finally:
            if not self.devtools_url.done():
                self.devtools_url.set_exception(RuntimeError(f"chromium exited: {self.text()}"))

    def text(self) -> str:
        """Chromium's last stderr lines."""
        return "\n".join(self._lines)

    async def close(self) -> None:
        """Stop reading (the process is gone)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), 5)
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        if self.devtools_url.done() and not self.devtools_url.cancelled():
            self.devtools_url.exception()  # retrieved: no "never retrieved" warning
