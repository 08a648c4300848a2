"""``kcprpc serve --workers 2 --broker redis://... --ws 127.0.0.1:0 --wt 127.0.0.1:0`` on
127.0.0.1: WebSocket and WebTransport clients are served by both workers (each answers with its
own pid), a topic published on either worker reaches the web subscribers of both, every worker
serves ``/kcprpc.json`` and the ``--web-root`` files, and the web clients of a killed worker
reconnect (to whichever worker the kernel picks: a fresh session there) and restore their topic
from its positions, nothing missed and nothing twice."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "brokers"))

from redis_server import RedisServer

from kcprpc.web import connect_websocket
from kcprpc.web.webtransport_client import connect_webtransport
from tests.integration.node_service import Node
from tests.integration.test_workers import Workers, cli_workers, whoami
from tests.integration.test_workers_redis import (
    FAST,
    Member,
    kill_worker_1_under_its_clients,
    spread,
    until,
)
from tests.integration.web_support import dev_cert

pytestmark = pytest.mark.timeout(90)
TIMEOUT = 20.0


class WebWorkers:
    """The supervisor and its workers, with the ``ws`` URL, the ``wt`` URL and the certificate hash."""

    def __init__(self, workers: Workers, ws: str, wt: str, cert_hash: bytes) -> None:
        self.w = workers
        self.ws = ws
        self.wt = wt
        self.cert_hash = cert_hash


@pytest.fixture
def web(tmp_path: Path, redis: RedisServer) -> Iterator[WebWorkers]:
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>workers</title>")
    dev, cert, key = dev_cert(tmp_path)
    w = cli_workers(
        tmp_path / "serve.log",
        "--broker", redis.url(), "--ws", "127.0.0.1:0", "--web-root", str(root),
        "--wt", "127.0.0.1:0", "--wt-cert", str(cert), "--wt-key", str(key),
        app="tests.integration.workers_app:push_app",
    )  # fmt: skip
    log = w.log()
    ws_line, wt_line = w.expect("websocket:"), w.expect("webtransport:")
    assert "on every worker" in ws_line and "on every worker" in wt_line, (ws_line, wt_line, log)
    hash_line = w.expect("development certificate")
    assert hash_line.endswith(base64.b64encode(dev.sha256).decode()), hash_line
    yield WebWorkers(w, ws_line.split()[1], wt_line.split()[1], dev.sha256)
    assert w.stop() == 0, w.log()


@pytest.fixture
async def members() -> AsyncIterator[list[Member]]:
    out: list[Member] = []
    yield out
    await asyncio.gather(*(m.client.close() for m in out), return_exceptions=True)


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read()


async def test_websocket_clients_on_both_workers_get_the_topic_published_on_either(
    web: WebWorkers, members: list[Member]
) -> None:
    on = await spread(lambda: connect_websocket(web.ws, config=FAST), members, 2)
    pids = {(await whoami(on[i][0].client))["pid"] for i in (0, 1)}
    assert pids == set(web.w.pids)  # the workers the supervisor started, one each
    for m in members:
        await m.client.subscribe("news")
    a, b = on[0][0].client.stub(Node, timeout=5), on[1][0].client.stub(Node, timeout=5)
    for n in range(1, 21):
        await (a if n % 2 else b).announce(n)  # published by handlers on both workers
    for m in members:
        await until(lambda m=m: len(m.ns("topic:news")) >= 20, "20 messages on every web client")
    for m in members:
        assert m.ns("topic:news") == list(range(1, 21)), m.events


async def test_every_worker_serves_discovery_and_the_web_root(web: WebWorkers) -> None:
    base = web.ws.rsplit("/", 1)[0].replace("ws://", "http://")
    # 16 connections from 16 source ports: all hashed to one worker's socket with p = 2**-15, and a
    # socket whose worker did not serve would leave its connection unanswered (a timeout here)
    pages = await asyncio.gather(*(asyncio.to_thread(get, f"{base}/kcprpc.json") for _ in range(16)))
    assert {s for s, _ in pages} == {200}
    doc = json.loads(pages[0][1])
    assert all(json.loads(body) == doc for _, body in pages)  # the same document from every worker
    assert doc["websocket"] == "/kcprpc" and doc["webtransport"]["url"] == web.wt, doc
    index = await asyncio.gather(*(asyncio.to_thread(get, f"{base}/") for _ in range(16)))
    assert {s for s, _ in index} == {200} and all(b"<title>workers</title>" in body for _, body in index)


async def test_a_killed_workers_web_clients_reconnect_elsewhere_and_restore_their_topic(
    web: WebWorkers, members: list[Member]
) -> None:
    dead, landed = await kill_worker_1_under_its_clients(
        lambda: connect_websocket(web.ws, config=FAST), web.w.pids, members
    )
    assert dead not in landed  # the dead process serves nobody
    await until(
        lambda: "worker 1 restarted" in web.w.log(), "worker 1 restarted (a clean exit code at SIGTERM)"
    )


async def test_a_web_client_whose_connection_is_cut_resumes_on_its_worker_or_restores_on_another(
    web: WebWorkers, members: list[Member]
) -> None:
    """A new TCP connection goes to a worker by the kernel's hash of its new source port: back on
    its own worker the session resumes; on the other one, which does not know it, the client gets a
    fresh session there and restores its topic from its position (nothing missed, nothing twice)."""
    on = await spread(lambda: connect_websocket(web.ws, config=FAST), members, 1)
    publisher = on[0][0].client.stub(Node, timeout=5)
    m = on[1][0]
    await m.client.subscribe("news")
    n = 0
    outcomes: dict[str, int] = {"resumed": 0, "moved": 0}
    for _ in range(24):  # each cut lands on the other worker with p = 1/2: none in 24 with p = 2**-24
        n += 1
        await publisher.announce(n)
        await until(lambda n=n: m.ns("topic:news")[-1:] == [n], f"message {n}")
        before_worker, before_sid, before_resumes = (
            (await whoami(m.client))["worker"],
            m.client.session_id,
            m.client.resumes,
        )
        link = m.client.lifecycle.link
        assert link is not None
        back = asyncio.Event()
        m.client.on_reconnect = lambda _c, back=back: back.set()
        link.conn.transport.transport.abort()  # type: ignore[attr-defined]  # the TCP connection cut, no close
        n += 1
        await publisher.announce(n)  # while it is away or coming back
        await asyncio.wait_for(back.wait(), TIMEOUT)
        after = (await whoami(m.client))["worker"]
        if after == before_worker:
            assert m.client.session_id == before_sid and m.client.resumes == before_resumes + 1
            outcomes["resumed"] += 1
        else:
            assert m.client.session_id != before_sid  # a fresh session on the other worker
            outcomes["moved"] += 1
            if outcomes["resumed"]:
                break
    assert outcomes["moved"] >= 1, outcomes
    n += 1
    await publisher.announce(n)
    await until(lambda: m.ns("topic:news")[-1:] == [n], f"message {n}")
    assert m.ns("topic:news") == list(range(1, n + 1)), m.events  # nothing missed, nothing twice
    assert any(r.key == "topic:news" and r.recovered for r in m.recovered), m.recovered


async def test_webtransport_clients_on_both_workers_get_the_topic(
    web: WebWorkers, members: list[Member]
) -> None:
    on = await spread(
        lambda: connect_webtransport(web.wt, certificate_hashes=[web.cert_hash], config=FAST), members, 2
    )
    for m in members:
        await m.client.subscribe("news")
    a, b = on[0][0].client.stub(Node, timeout=5), on[1][0].client.stub(Node, timeout=5)
    for n in range(1, 11):
        await (a if n % 2 else b).announce(n)
    for m in members:
        await until(lambda m=m: len(m.ns("topic:news")) >= 10, "10 messages on every WebTransport client")
    for m in members:
        assert m.ns("topic:news") == list(range(1, 11)), m.events
