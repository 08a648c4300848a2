"""The live example's browser viewer (examples/browser/live) in a real headless Chromium against a
real server (``python -m examples.live --serve --web ... [--wt ...]``), over WebSocket and over
WebTransport: the page connects over the transport asked for, answers its unary call, shows the
viewer count (an unreliable event), shows each message published, gets a cut connection back
without a gap, and after a reload resumes from the position it saved with no message missed and
none twice, while the server keeps publishing. Its list is then compared, as pixels, with the
same page rendering the expected messages in its static mode."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import kcprpc
from examples.live.service import KEY, Chat, LiveService
from tests.browser import png
from tests.browser.chromium import Chromium, Page
from tests.browser.example_server import TRANSPORTS, ExampleServer, example_page

VIEWPORT = (1000, 900)


class Publisher:
    """The channel's publisher, over KCP (the publisher token in the call metadata)."""

    def __init__(self, client: kcprpc.Client) -> None:
        self.live = client.stub(LiveService, metadata={"token": "publisher-secret"}, timeout=5.0)

    async def publish(self, numbers: Iterable[int], pace: float = 0.0) -> None:
        """Chat messages ``"<n>"`` from ``host``, one every ``pace`` seconds (the pace of a
        publisher, not a synchronisation)."""
        for n in numbers:
            await self.live.chat(Chat(channel="main", user="host", text=str(n)))
            if pace:
                await asyncio.sleep(pace)


@asynccontextmanager
async def publisher(server: ExampleServer) -> AsyncIterator[Publisher]:
    async with kcprpc.connect(*server.kcp, key=KEY) as client:
        yield Publisher(client)


async def reload(
    browser: Chromium, page: Page, while_down: Callable[[], Awaitable[None]], timeout: float = 30.0
) -> None:
    """Reload the page (Page.reload) and run ``while_down()`` while it is between its two lives:
    the old document is gone and the new one has not connected yet (its discovery request,
    ``/kcprpc.json``, is held by the DevTools Fetch domain until ``while_down()`` returned). Then
    wait for the load event."""
    await page.send("Fetch.enable", {"patterns": [{"urlPattern": "*/kcprpc.json", "requestStage": "Request"}]})
    paused = browser.wait_event("Fetch.requestPaused", page.session_id)
    loaded = browser.wait_event("Page.loadEventFired", page.session_id)
    try:
        await page.send("Page.reload", {"ignoreCache": False})
        request = await asyncio.wait_for(asyncio.shield(paused), timeout)
        await while_down()
        await page.send("Fetch.continueRequest", {"requestId": request["requestId"]})
        await page.send("Fetch.disable")
        await asyncio.wait_for(asyncio.shield(loaded), timeout)
    finally:
        paused.cancel()
        loaded.cancel()


async def element_image(page: Page, selector: str) -> png.Image:
    """A screenshot of the viewport, cut to the element's box."""
    box = await page.evaluate(
        f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
        " return [Math.round(r.left), Math.round(r.top), Math.round(r.width), Math.round(r.height)]; })()"
    )
    shot = png.decode(await page.screenshot())
    return shot.crop(*box)


async def texts(page: Page) -> list[str]:
    value: list[str] = await page.evaluate("Array.from(document.querySelectorAll('#messages li'), li => li.textContent)")
    return value


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_live_viewer_calls_pushes_unreliable_drop_and_resume_after_reload(
    browser: Chromium, transport: str, tmp_path: Path
) -> None:
    async with example_page(browser, "examples.live", transport, VIEWPORT) as (server, page):
        await page.goto(f"{server.http}/live/?transport={transport}")
        await page.wait_for("liveView.call !== null || liveView.error", timeout=20)
        view: dict[str, Any] = await page.evaluate(
            "({state: liveView.state, error: liveView.error, transport: liveView.transport, call: liveView.call})"
        )
        assert view["error"] is None and view["state"] == "connected", view
        assert view["transport"] == transport
        # the unary call (kcprpc.Health/Stats) answered with this session's id
        assert view["call"]["session"] and view["call"]["sessions"] >= 1
        assert await page.evaluate("document.getElementById('transport').textContent") == transport
        # the unreliable event: the viewer count (this page is the one viewer)
        await page.wait_for("liveView.viewers === 1", timeout=10)
        assert await page.evaluate("document.getElementById('viewers').textContent") == "1"
        # it came on the datagram path (a WebTransport datagram, a WebSocket DATAGRAM message)
        assert await page.evaluate("liveView.unreliableDatagrams") >= 1

        async with publisher(server) as pub:
            # pushes: each message shown, in order
            await pub.publish(range(1, 11))
            await page.wait_for("liveView.items.length === 10", timeout=10)
            assert await texts(page) == [f"host: {i}" for i in range(1, 11)]

            # a dropped connection: the client reconnects, resumes its session, and what was
            # published meanwhile arrives (replayed), nothing twice
            first = await page.evaluate("liveView.link.connections")
            await page.evaluate("liveView.drop()")
            await pub.publish(range(11, 16))
            await page.wait_for(f"liveView.reconnects >= 1 && liveView.link.connections > {first}", timeout=20)
            await pub.publish(range(16, 21))
            await page.wait_for("liveView.items.length >= 20", timeout=10)
            assert await texts(page) == [f"host: {i}" for i in range(1, 21)]
            assert await page.evaluate("liveView.transport") == transport

            # a reload while the publisher goes on (21..40, from before the reload into it, and
            # 41..50 surely while the page is down): the page resumes from its saved position
            more = asyncio.ensure_future(pub.publish(range(21, 41), pace=0.02))

            async def while_down() -> None:
                await asyncio.wait_for(more, 30)
                await pub.publish(range(41, 51))

            try:
                await page.wait_for("liveView.items.length >= 23", timeout=10)
                await reload(browser, page, while_down)
            finally:
                more.cancel()
            await pub.publish(range(51, 61))  # live again
            await page.wait_for("liveView.items.length >= 60 || liveView.error", timeout=20)
            after: dict[str, Any] = await page.evaluate(
                "({error: liveView.error, resumed: liveView.resumed, transport: liveView.transport,"
                " duplicates: liveView.duplicates, offsets: liveView.items.map(i => i.offset)})"
            )
            assert after["error"] is None
            assert after["transport"] == transport
            assert await texts(page) == [f"host: {i}" for i in range(1, 61)]  # none missed, none twice
            offsets = after["offsets"]
            assert offsets == sorted(set(offsets))
            resumed = after["resumed"]
            assert resumed is not None and resumed["recovered"] is True and resumed["missed"] == 0
            assert resumed["replayed"] >= 10  # 41..50 at least: published while the page was down
            assert resumed["since"][1] in offsets  # the position of a message it had saved

        # the list as pixels: the same as the page in static mode given the expected messages
        got = await element_image(page, "#messages")
        (tmp_path / f"live-{transport}.png").write_bytes(await page.screenshot())
        expected = [f"host: {i}" for i in range(1, 61)]
        ref_page = await browser.new_page()
        await ref_page.set_viewport(*VIEWPORT)
        await ref_page.goto(f"{server.http}/live/?static={urllib.parse.quote(json.dumps(expected))}")
        await ref_page.wait_for("liveView.state === 'static'", timeout=10)
        want = await element_image(ref_page, "#messages")
        assert (got.width, got.height) == (want.width, want.height) and got.height > 100
        assert png.difference(got, want) <= 0.002
        # and not blank: the list's cells have the item colour and dark text pixels
        assert sum(1 for i in range(0, len(got.rgba), 4) if got.rgba[i] < 80) > 500
        # a wrong list would differ: the reference for one message fewer does
        await ref_page.goto(f"{server.http}/live/?static={urllib.parse.quote(json.dumps(expected[:-1]))}")
        await ref_page.wait_for("liveView.state === 'static'", timeout=10)
        fewer = await element_image(ref_page, "#messages")
        assert png.difference(got, fewer) > 0.002 or (fewer.width, fewer.height) != (got.width, got.height)
