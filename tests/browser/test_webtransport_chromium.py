"""A real Chromium (Debian's, headless) opens a WebTransport session to the kcprpc WebTransport
listener with a development certificate pinned by ``serverCertificateHashes``, makes RPC calls on
the session's one stream and receives an unreliable event as a WebTransport datagram.

The page (wt_roundtrip.html, served from http://127.0.0.1, a secure context) speaks the wire by
hand: OPEN/ACCEPT, smux v1, HELLO/WELCOME, CALL/REPLY; the full browser client and pages are
elsewhere (clients/typescript, examples/browser)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.browser.chromium import Chromium, Page
from tests.integration.web_support import Started, dev_cert, running

pytestmark = pytest.mark.timeout(90)

PAGE = Path(__file__).with_name("wt_roundtrip.html")


@contextlib.asynccontextmanager
async def page_server(body: bytes) -> AsyncIterator[str]:
    """A one-page HTTP server on 127.0.0.1 (a secure context for the page); yields its URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n"
                + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = srv.sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}/"
    finally:
        srv.close()
        await srv.wait_closed()


@contextlib.asynccontextmanager
async def wt_page(
    tmp_path: Path, origins: tuple[str, ...] | None, **opts: object
) -> AsyncIterator[tuple[Page, Started]]:
    """A server with a WebTransport listener (a development certificate; ``origins``, None: the
    page's own; ``opts``: more of its options) and a Chromium page at wt_roundtrip.html, served
    from http://127.0.0.1."""
    async with page_server(PAGE.read_bytes()) as page_url:
        allowed = origins if origins is not None else (page_url.rstrip("/"),)
        async with (
            running(dev_cert(tmp_path), key="wt browser test", origins=allowed, **opts) as started,
            Chromium.launch() as browser,
        ):
            page = await browser.new_page()
            await page.goto(page_url)
            yield page, started


def round_trip(started: Started) -> str:
    """The page's round trip to the listener, the certificate pinned by its hash."""
    _, listener, dev = started
    return f"window.kcprpcRoundTrip({listener.url!r}, {dev.hash_hex!r})"


@pytest.mark.parametrize("retry", [False, True], ids=["direct", "through-a-retry"])
async def test_chromium_calls_over_webtransport(tmp_path: Path, retry: bool) -> None:
    """``through-a-retry``: the listener answers every new connection with a Retry first
    (``handshake_rate=0``, what it does under load) and Chromium comes back with the token."""
    async with wt_page(tmp_path, None, **({"handshake_rate": 0} if retry else {})) as (page, started):
        listener = started[1]
        assert listener.certificate_hashes  # a development certificate: its hash is announced
        result = await page.evaluate(round_trip(started), timeout=30)
        assert result["accept"] == {"mux": 1, "maxDatagram": 1024}, page.console
        assert result["welcome"] == 2
        assert result["reply"] == "FROM CHROMIUM"
        assert result["reply2"] == 43
        event = result["event"]
        assert event["type"] == 10 and event["size"] == event["length"] + 9
        assert event["body"][0] == "wt.pos" and event["body"][1] == {"x": 42}
        stats = listener.stats()
        assert stats["accepted"] == 1 and stats["origins_refused"] == 0
        assert stats["protocol_errors"] == 0
        # (Chromium's first flight was two Initials here, and each gets a Retry)
        assert (stats["quic_retries"] > 0) == retry and stats["invalid_tokens"] == 0


async def test_chromium_from_an_origin_outside_the_list_is_refused(tmp_path: Path) -> None:
    async with wt_page(tmp_path, ("https://game.example",)) as (page, started):
        listener = started[1]
        err = await page.evaluate(f"{round_trip(started)}.then(() => 'opened', e => String(e))")
        assert "Opening handshake failed" in err
        assert listener.stats()["origins_refused"] == 1
        assert listener.stats()["accepted"] == 0
