"""An example's browser server in a child process, as a user starts it:
``python -m examples.live --serve --web 127.0.0.1:0 [--wt 127.0.0.1:0] --json`` (examples/web.py),
on free ports of 127.0.0.1. Its addresses come from the one JSON line it prints; the process is
ended (SIGTERM, then SIGKILL) when the block ends, also on failure. ``example_page`` adds a
Chromium page to it, for the example pages' tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.browser.chromium import Chromium, Page

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
TRANSPORTS = ["websocket", "webtransport"]
"""The transports an example page is tested over (its ``?transport=``)."""


@dataclass
class ExampleServer:
    """A running example server: its KCP address, its page base URL and the rest it printed."""

    kcp: tuple[str, int]
    http: str
    """``http://127.0.0.1:PORT``: the pages (``/live/``, ``/game/``) and ``/kcprpc.json``."""
    info: dict[str, Any]
    output: list[str]
    """What it printed on stdout and stderr (for a failing test's message)."""


@contextlib.asynccontextmanager
async def example_server(module: str, *, webtransport: bool) -> AsyncIterator[ExampleServer]:
    """Run ``python -m <module> --serve`` with a WebSocket listener (and a WebTransport one)."""
    cmd = [sys.executable, "-m", module, "--serve", "--web", "127.0.0.1:0", "--json"]
    if webtransport:
        cmd += ["--wt", "127.0.0.1:0"]
    # the environment as is: `python -m` from the checkout finds examples/ (the compiled build's
    # run gives it on PYTHONPATH, with PYTHONSAFEPATH, so the installed kcprpc is the one used)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    output: list[str] = []
    drain: asyncio.Task[None] | None = None
    try:
        info = await asyncio.wait_for(_first_json(proc.stdout, output), START_TIMEOUT_S)
        drain = asyncio.ensure_future(_keep_reading(proc.stdout, output))
        host, _, port = str(info["kcp"]).rpartition(":")
        yield ExampleServer((host, int(port)), str(info["http"]), info, output)
    except TimeoutError:
        raise AssertionError(
            f"{' '.join(cmd)} printed no addresses in {START_TIMEOUT_S} s: {output}"
        ) from None
    finally:
        await stop(proc, signal.SIGTERM)
        if drain is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(drain, 5)
            drain.cancel()


async def stop(proc: asyncio.subprocess.Process, sig: int) -> None:
    """End ``proc`` (started with ``start_new_session``): ``sig``, then SIGKILL to its process
    group if it has not exited within 10 s."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)


@contextlib.asynccontextmanager
async def example_page(
    browser: Chromium, module: str, transport: str, viewport: tuple[int, int]
) -> AsyncIterator[tuple[ExampleServer, Page]]:
    """The example's server (with a WebTransport listener when ``transport`` is "webtransport")
    and a fresh page of ``browser`` of the size ``viewport``. When the block fails, the page's
    console and the server's output are printed (pytest shows them with the failure)."""
    async with example_server(module, webtransport=transport == "webtransport") as server:
        page = await browser.new_page()
        await page.set_viewport(*viewport)
        try:
            yield server, page
        except BaseException:
            print(f"\npage console: {page.console[-30:]}\nserver output: {server.output[-30:]}")
            raise


async def _first_json(stream: asyncio.StreamReader, output: list[str]) -> dict[str, Any]:
    while line := await stream.readline():
        text = line.decode("utf-8", "replace").rstrip()
        output.append(text)
        if text.startswith("{"):
            info: dict[str, Any] = json.loads(text)
            return info
    raise AssertionError(f"the server exited before printing its addresses: {output}")


async def _keep_reading(stream: asyncio.StreamReader, output: list[str]) -> None:
    while line := await stream.readline():
        output.append(line.decode("utf-8", "replace").rstrip())
        del output[:-200]  # bounded
