"""The metrics endpoint, scraped for real over HTTP on 127.0.0.1: counters move with calls, the
error statuses are labelled, OpenMetrics on request, /healthz turns 503 while the server drains
and when its broker is unavailable; the bounds of the HTTP side."""

from __future__ import annotations

import asyncio
import sys
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

import kcprpc
from examples.quickstart.service import Greeter, HelloRequest
from kcprpc.metrics import MAX_REQUEST_HEAD, families, start_metrics

TRANSPORT = kcprpc.Transport(kcprpc.SecureWire(key="metrics test"))
BOUND = 10.0


def get(url: str, accept: str = "") -> tuple[int, str, str]:
    """(status, content type, body) of a GET (blocking: run it in a thread)."""
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=BOUND) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, labels) -> value."""
    status, _, body = await asyncio.to_thread(get, url + "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body)
        for s in f.samples
    }


async def test_scrape_counts_calls_errors_and_transport() -> None:
    server = kcprpc.Server([Greeter()], "127.0.0.1", 0, transport=TRANSPORT)
    host, port = await server.start()
    endpoint = await start_metrics(server, "127.0.0.1", 0)
    try:
        before = await scrape(endpoint.url)
        assert before[("kcprpc_serving", ())] == 1.0
        assert before[("kcprpc_broker_available", (("broker", "MemoryBroker"),))] == 1.0
        async with kcprpc.connect(host, port, transport=TRANSPORT) as client:
            greeter = client.stub(Greeter, timeout=BOUND)
            for i in range(5):
                assert (await greeter.hello(HelloRequest(name=f"n{i}"))).message == f"Hello, n{i}!"
            for _ in range(2):
                with pytest.raises(kcprpc.RpcError) as e:
                    await greeter.hello({"name": ""})  # type: ignore[arg-type]
                assert e.value.status is kcprpc.Status.INVALID_ARGUMENT
            during = await scrape(endpoint.url)
            assert during[("kcprpc_server_sessions", ())] == 1.0
            assert during[("kcprpc_mux_sessions_open", ())] >= 2.0  # the client's and the server's
        after = await scrape(endpoint.url)
    finally:
        await endpoint.close()
        await server.shutdown(0)

    def moved(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after[(name, labels)] - before.get((name, labels), 0.0)

    assert moved("kcprpc_server_calls_started_total") >= 7  # (the client's HELLO adds none)
    assert moved("kcprpc_server_calls_ok_total") >= 5
    assert moved("kcprpc_server_calls_failed_total") == 2
    assert moved("kcprpc_server_call_errors_total", (("status", "INVALID_ARGUMENT"),)) == 2
    assert moved("kcprpc_server_call_errors_total", (("status", "INTERNAL"),)) == 0
    assert moved("kcprpc_server_connections_total") == 1
    assert moved("kcprpc_kcp_sent_bytes_total") > 0
    assert moved("kcprpc_kcp_in_pkts_total") > 0
    assert moved("kcprpc_secure_handshakes_total") >= 1
    assert moved("kcprpc_mux_frames_in_total") > 0  # the client's mux, ended: folded in
    assert ("process_cpu_seconds_total", ()) in after or sys.platform != "linux"


async def test_openmetrics_head_404_and_bounds() -> None:
    server = kcprpc.Server([Greeter()], "127.0.0.1", 0, transport=TRANSPORT)
    await server.start()
    endpoint = await start_metrics(server, "127.0.0.1", 0)
    try:
        status, ctype, body = await asyncio.to_thread(
            get, endpoint.url + "/metrics", "application/openmetrics-text; version=1.0.0"
        )
        assert status == 200 and ctype.startswith("application/openmetrics-text")
        assert body.endswith("# EOF\n") and "kcprpc_server_calls_ok_total 0.0" in body
        status, _, body = await asyncio.to_thread(get, endpoint.url + "/nope")
        assert status == 404 and "/metrics" in body

        async def raw(request: bytes) -> bytes:
            reader, writer = await asyncio.open_connection(*endpoint.address)
            writer.write(request)
            data = await asyncio.wait_for(reader.read(), BOUND)
            writer.close()
            return data

        head = await raw(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")  # no body
        assert (await raw(b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
        assert (await raw(b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        big = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST_HEAD + b"\r\n\r\n"
        assert (await raw(big)).startswith(b"HTTP/1.1 431 ")
        # a malformed version= in Accept made prometheus-client raise: an unhandled exception
        # and its traceback per request, and no answer (an audit); now a 400
        reported: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: reported.append(ctx))
        for accept in (b"application/openmetrics-text; version=a", b"text/plain; version=x.y"):
            got = await raw(b"GET /metrics HTTP/1.1\r\nAccept: " + accept + b"\r\n\r\n")
            assert got.startswith(b"HTTP/1.1 400 ") and b"bad Accept header" in got
        assert reported == [] and endpoint.scrapes == 1
    finally:
        await endpoint.close()
        await server.shutdown(0)


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0)


class Slow(kcprpc.Service, name="test.Slow"):
    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def wait(self) -> int:
        self.started.set()
        await self.release.wait()
        return 1


async def test_healthz_is_503_while_draining() -> None:
    slow = Slow()
    server = kcprpc.Server([slow], "127.0.0.1", 0, transport=TRANSPORT)
    endpoint = await start_metrics(server, "127.0.0.1", 0)
    try:
        status, _, body = await asyncio.to_thread(get, endpoint.url + "/healthz")
        assert (status, body) == (503, "not serving: not started\n")
        host, port = await server.start()
        status, _, body = await asyncio.to_thread(get, endpoint.url + "/healthz")
        assert (status, body) == (200, "serving\n")
        async with kcprpc.connect(host, port, transport=TRANSPORT) as client:
            call = asyncio.ensure_future(client.stub(Slow, timeout=BOUND).wait())
            await asyncio.wait_for(slow.started.wait(), BOUND)
            draining = asyncio.ensure_future(server.shutdown(grace=BOUND))  # waits for the call
            await asyncio.wait_for(until(lambda: server.closing), BOUND)
            status, _, body = await asyncio.to_thread(get, endpoint.url + "/healthz")
            assert (status, body) == (503, "not serving: shutting down\n")
            samples = await scrape(endpoint.url)
            assert samples[("kcprpc_serving", ())] == 0.0
            slow.release.set()
            assert await asyncio.wait_for(call, BOUND) == 1
            await asyncio.wait_for(draining, BOUND)
    finally:
        await endpoint.close()
        await server.shutdown(0)


class Unreachable(kcprpc.MemoryBroker):
    """A MemoryBroker that says it is unreachable and counts (this unit of the test says so: it
    only stands in for the ``available``/``stats()`` a Redis or NATS broker reports)."""

    available = False

    def stats(self) -> dict[str, int]:
        return {"published": 3, "publish_errors": 2, "unavailable": 1, "pending_bytes": 512, "held": 4}

    stats_gauges = ("held",)


async def test_broker_state_in_healthz_and_metrics() -> None:
    server = kcprpc.Server([Greeter()], "127.0.0.1", 0, transport=TRANSPORT, broker=Unreachable())
    await server.start()
    endpoint = await start_metrics(server, "127.0.0.1", 0)
    try:
        status, _, body = await asyncio.to_thread(get, endpoint.url + "/healthz")
        assert (status, body) == (503, "broker unavailable\n")
        samples = await scrape(endpoint.url)
        assert samples[("kcprpc_broker_available", (("broker", "Unreachable"),))] == 0.0
        assert samples[("kcprpc_broker_published_total", ())] == 3.0
        assert samples[("kcprpc_broker_publish_errors_total", ())] == 2.0
        assert not any(name == "kcprpc_broker_unavailable_total" for name, _ in samples)
        assert samples[("kcprpc_broker_pending_bytes", ())] == 512.0  # gauges: no _total
        assert samples[("kcprpc_broker_held", ())] == 4.0
    finally:
        await endpoint.close()
        await server.shutdown(0)


def test_names_follow_prometheus_conventions() -> None:
    server = kcprpc.Server([Greeter()], "127.0.0.1", 0, transport=TRANSPORT)
    seen = set()
    for f in families(server):
        assert f.name.startswith("kcprpc_") and not f.name.endswith("_total"), f.name
        assert f.name not in seen, f.name
        seen.add(f.name)
        assert f.help
    assert "kcprpc_kcp_sent_bytes" in seen and "kcprpc_kcp_kcp_in_errors" not in seen
    assert "kcprpc_server_send_backlog_bytes" in seen and "kcprpc_mux_in_bytes" in seen
    assert "kcprpc_server_detached_sessions" in seen and "kcprpc_server_sessions_detached" in seen
    # the stats that go down are gauges (rate() of a counter that falls reads as a reset)
    types = {f.name: f.kind for f in families(server)}
    for gauge in (
        "server_send_backlog_bytes",
        "server_presence_entries",
        "server_streams_open",
        "server_receive_held_bytes",
    ):
        assert types["kcprpc_" + gauge] == "gauge", gauge


async def test_missing_extra_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    server = kcprpc.Server([Greeter()], "127.0.0.1", 0, transport=TRANSPORT)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if the extra were not installed
    with pytest.raises(kcprpc.UsageError, match=r"kcprpc\[metrics\]"):
        await start_metrics(server, "127.0.0.1", 0)
