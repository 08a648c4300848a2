"""The operational endpoint: Prometheus/OpenMetrics ``/metrics`` and a ``/healthz`` for container
health checks, on a small HTTP server in the server's own event loop (docs/deploy.md).

``await start_metrics(server, host, port)`` (``kcprpc serve --metrics HOST:PORT``) serves both until
:meth:`MetricsServer.close`. Each scrape reads the counters where they live, at that moment
(:func:`families`): the transport's (:func:`kcp.snmp`, secure mode's ``secure_*`` included), the
mux's (:func:`kcprpc.mux.totals.mux_totals`), the server's (``server.stats``: calls, errors by
status, backlog, sheds, resumes, presence, recovery ...) and the broker's (``broker.stats()``,
``broker.available``). Nothing is counted twice and nothing runs between scrapes.

The exposition uses prometheus-client (the ``kcprpc[metrics]`` extra), imported when an endpoint
starts: without it, :func:`start_metrics` raises :class:`~kcprpc.UsageError` naming the extra.
The HTTP server runs in the event loop, so a scrape reads the counters between two callbacks,
never halfway through one; it answers ``GET``/``HEAD`` of ``/metrics`` and ``/healthz``, holds at
most :data:`MAX_CLIENTS` connections, a request head of at most :data:`MAX_REQUEST_HEAD` bytes, and
gives a client :data:`REQUEST_TIMEOUT` seconds to send it.

Several processes (``kcprpc serve --workers N``): each serves its own endpoint, worker ``i`` on
``port + i``; the kcp and mux counters are per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from kcp.snmp import snmp
from kcprpc.errors import UsageError
from kcprpc.mux.totals import mux_totals

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "EXTRA_HINT",
    "Family",
    "MetricsServer",
    "MetricsSource",
    "families",
    "health",
    "start_metrics",
]

EXTRA_HINT = "pip install 'kcprpc[metrics]'"
"""How to get what the metrics endpoint needs."""
MAX_CLIENTS = 32
"""Scrapes served at once; more connections are closed at once."""
MAX_REQUEST_HEAD = 8192
"""Bytes of request line and headers read from a scraper; a longer head gets 431."""
REQUEST_TIMEOUT = 5.0
"""Seconds a scraper has to send its request head."""

SERVER_GAUGES: dict[str, tuple[str, str]] = {
    "send_backlog": ("server_send_backlog_bytes", "bytes held for all clients at the last sweep"),
    "presence_entries": ("server_presence_entries", "this server's sessions recorded in a presence"),
    "streams_open": ("server_streams_open", "streams open besides the control streams"),
    "receive_held": ("server_receive_held_bytes", "bytes held from all clients at the last count"),
    "recovery_held": ("server_recovery_held_bytes", "live messages held back while recoveries replay"),
}
"""The ``server.stats`` entries that are gauges (metric name without ``kcprpc_``, help); every
other entry is a counter, ``kcprpc_server_<name>_total``."""
STATUS_PREFIX = "status_"
"""``server.stats`` entries ``status_<name>`` (calls ended with that status) are one counter,
``kcprpc_server_call_errors_total{status="NAME"}``."""
KCP_GAUGES: dict[str, tuple[str, str]] = {
    "curr_estab": ("kcp_sessions_open", "KCP sessions open now (this process)"),
    "max_conn": ("kcp_sessions_open_max", "the most KCP sessions open at once (this process)"),
}
"""The :func:`kcp.snmp` fields that are gauges."""
MUX_GAUGES: dict[str, tuple[str, str]] = {
    "sessions_open": ("mux_sessions_open", "mux sessions open now (this process)"),
    "streams_open": ("mux_streams_open", "mux streams open now (this process)"),
}
"""The :func:`kcprpc.mux.totals.mux_totals` entries that are gauges."""
BROKER_GAUGES = frozenset({"pending_bytes", "queued_bytes", "reorder_bytes", "subscriptions"})
"""The ``broker.stats()`` entries that are gauges (what the Redis and NATS brokers hold now),
besides those a broker names in a ``stats_gauges`` attribute of its own; every other entry is a
counter, and ``unavailable`` is :func:`families`' ``kcprpc_broker_available``."""
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


class PushLike(Protocol):
    """What the endpoint reads of the server's push hub."""

    @property
    def broker(self) -> Any:
        """The broker (its ``stats()`` and ``available`` are read)."""
        ...


class MetricsSource(Protocol):
    """What the endpoint reads of its :class:`kcprpc.Server`."""

    stats: dict[str, int]

    @property
    def sessions(self) -> Any:
        """The live sessions (sized)."""
        ...

    @property
    def detached_sessions(self) -> int:
        """Sessions detached and waiting for a resume."""
        ...

    @property
    def closing(self) -> bool:
        """True once the server is shutting down (``/healthz`` answers 503)."""
        ...

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the server listens (None before it does)."""
        ...

    @property
    def push(self) -> PushLike:
        """The push hub (its broker)."""
        ...


@dataclass(frozen=True)
class Family:
    """One metric: its name (with the ``kcprpc_`` prefix, without ``_total``), kind, help and
    samples (labels, value)."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def metric_name(name: str) -> str:
    """A counter's name as Prometheus spells it: ``bytes_sent`` -> ``sent_bytes`` (the unit last),
    characters a metric name cannot hold -> ``_``."""
    name = _INVALID.sub("_", name)
    if name.startswith("bytes_"):
        name = name[len("bytes_") :] + "_bytes"
    return name


def _one(name: str, kind: Literal["counter", "gauge"], help: str, value: float) -> Family:
    return Family(f"kcprpc_{name}", kind, help, [({}, float(value))])


def broker_state(broker: Any) -> tuple[bool, dict[str, int]]:
    """Whether ``broker`` is available and its counters: ``broker.available`` and
    ``broker.stats()`` when it has them (a broker without them, e.g. an older
    :class:`~kcprpc.MemoryBroker`, is available and counts nothing). A ``stats()`` that raises
    gives no counters."""
    available = bool(getattr(broker, "available", True))
    stats: dict[str, int] = {}
    get = getattr(broker, "stats", None)
    if callable(get):
        with contextlib.suppress(Exception):
            stats = {str(k): int(v) for k, v in dict(get()).items()}
    return available, stats


def health(server: MetricsSource) -> tuple[bool, str]:
    """``(healthy, why)``: healthy while ``server`` is serving (started, not shutting down) and
    its broker is available; ``why`` says which of these is not so."""
    if server.address is None:
        return False, "not serving: not started"
    if server.closing:
        return False, "not serving: shutting down"
    available, _ = broker_state(server.push.broker)
    if not available:
        return False, "broker unavailable"
    return True, "serving"


def families(server: MetricsSource) -> list[Family]:
    """Every kcprpc metric of ``server``'s process, read now (names: docs/deploy.md, "Metrics")."""
    out: list[Family] = []
    healthy, _ = health(server)
    out.append(_one("serving", "gauge", "1 while serving with its broker available (/healthz 200)", healthy))
    # the transport (kcp.snmp: this process), secure mode's summary among it
    for k, v in snmp().items():
        if k in KCP_GAUGES:
            name, help = KCP_GAUGES[k]
            out.append(_one(name, "gauge", help, v))
        elif k.startswith("secure_"):
            out.append(_one(metric_name(k), "counter", f"kcp.snmp() {k} (secure mode)", v))
        else:
            name = metric_name(k)
            out.append(
                _one(name if name.startswith("kcp_") else "kcp_" + name, "counter", f"kcp.snmp() {k}", v)
            )
    for k, v in mux_totals().items():
        if k in MUX_GAUGES:
            name, help = MUX_GAUGES[k]
            out.append(_one(name, "gauge", help, v))
        else:
            out.append(_one("mux_" + metric_name(k), "counter", f"mux {k} (kcprpc.mux.totals)", v))
    # the server
    out.append(_one("server_sessions", "gauge", "client sessions connected", len(server.sessions)))
    out.append(
        _one("server_detached_sessions", "gauge", "sessions kept for a resume now", server.detached_sessions)
    )
    errors = Family("kcprpc_server_call_errors", "counter", "calls that ended with an error status")
    for k, v in server.stats.items():
        if k.startswith(STATUS_PREFIX):
            errors.samples.append(({"status": k[len(STATUS_PREFIX) :].upper()}, float(v)))
        elif k in SERVER_GAUGES:
            name, help = SERVER_GAUGES[k]
            out.append(_one(name, "gauge", help, v))
        else:
            out.append(_one("server_" + metric_name(k), "counter", f"server.stats[{k!r}]", v))
    out.append(errors)
    # the listeners added with Server.add_listener (the web ones): <name>_<counter>
    listener_stats = getattr(server, "listener_stats", None)
    if callable(listener_stats):
        for k, v in listener_stats().items():
            # (what is open now, and a WebTransport listener's QUIC connections, are gauges)
            gauge = k.endswith(("_open", "_quic_connections"))
            lkind: Literal["counter", "gauge"] = "gauge" if gauge else "counter"
            out.append(
                _one("listener_" + metric_name(k), lkind, f"listener stats {k!r} (Server.add_listener)", v)
            )
    # the broker
    broker = server.push.broker
    available, stats = broker_state(broker)
    kind = type(broker).__name__
    out.append(
        Family("kcprpc_broker_available", "gauge", "1 while the broker is reachable",
               [({"broker": kind}, float(available))])
    )  # fmt: skip
    gauges = BROKER_GAUGES | frozenset(getattr(broker, "stats_gauges", ()))
    for k, v in stats.items():
        if k == "unavailable":  # kcprpc_broker_available says it
            continue
        gauge = k in gauges
        help = f"broker.stats() {k} ({kind}{', now' if gauge else ''})"
        out.append(_one("broker_" + metric_name(k), "gauge" if gauge else "counter", help, v))
    return out


class _Collector:
    """prometheus-client's Collector: :func:`families` at every scrape."""

    def __init__(self, server: MetricsSource) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for f in families(self.server):
            m = (CounterMetricFamily if f.kind == "counter" else GaugeMetricFamily)(
                f.name, f.help, labels=sorted({k for labels, _ in f.samples for k in labels})
            )
            for labels, value in f.samples:
                m.add_metric([labels[k] for k in sorted(labels)], value)
            yield m


def _registry(server: MetricsSource) -> CollectorRegistry:
    try:
        from prometheus_client import CollectorRegistry, ProcessCollector
    except ImportError:
        raise UsageError(f"the metrics endpoint needs prometheus-client: {EXTRA_HINT}") from None
    registry = CollectorRegistry()
    registry.register(_Collector(server))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes ...
    return registry


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}  # fmt: skip


class MetricsServer:
    """The HTTP endpoint of one server's metrics and health (:func:`start_metrics` makes it)."""

    def __init__(self, server: MetricsSource, registry: CollectorRegistry) -> None:
        self.server = server
        self.registry = registry
        self.address: tuple[str, int] = ("", 0)
        """The bound (host, port)."""
        self.scrapes = 0
        """Requests of /metrics answered."""
        self.refused = 0
        """Connections closed unanswered: over :data:`MAX_CLIENTS`."""
        self._clients = 0
        self._tcp: asyncio.Server | None = None

    async def _listen(self, host: str, port: int) -> None:
        self._tcp = await asyncio.start_server(self._client, host, port, limit=MAX_REQUEST_HEAD)
        sock = self._tcp.sockets[0].getsockname()
        self.address = (str(sock[0]), int(sock[1]))

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the endpoint."""
        host = self.address[0]
        return f"http://[{host}]:{self.address[1]}" if ":" in host else f"http://{host}:{self.address[1]}"

    def answer(self, method: str, path: str, accept: str) -> tuple[int, str, bytes]:
        """(status, content type, body) of a request."""
        path = path.split("?", 1)[0]
        if path not in ("/metrics", "/healthz"):
            return 404, "text/plain; charset=utf-8", b"not found: /metrics or /healthz\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"GET or HEAD\n"
        if path == "/healthz":
            ok, why = health(self.server)
            return (200 if ok else 503), "text/plain; charset=utf-8", (why + "\n").encode()
        from prometheus_client.exposition import choose_encoder

        try:
            encoder, content_type = choose_encoder(accept)
        except Exception:  # prometheus-client raises on a malformed version= (a traceback per request)
            return 400, "text/plain; charset=utf-8", b"bad Accept header\n"
        self.scrapes += 1
        return 200, content_type, encoder(self.registry)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            self.refused += 1
            writer.close()
            return
        self._clients += 1
        try:
            method, status, ctype, body = await self._request(reader)
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
            with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        finally:
            self._clients -= 1
            writer.close()

    async def _request(self, reader: asyncio.StreamReader) -> tuple[str, int, str, bytes]:
        """(method, status, content type, body) of the request ``reader`` brings."""
        plain = "text/plain; charset=utf-8"
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
        except TimeoutError:
            return "", 408, plain, b"request head not received in time\n"
        except asyncio.LimitOverrunError:
            return "", 431, plain, b"request head too large\n"
        except (asyncio.IncompleteReadError, ConnectionError):
            return "", 400, plain, b"incomplete request\n"
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "", 400, plain, b"bad request line\n"
        accept = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        return (parts[0], *self.answer(parts[0], parts[1], accept))

    async def close(self) -> None:
        """Stop serving (the scrapes in progress finish)."""
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), REQUEST_TIMEOUT)
            self._tcp = None


async def start_metrics(server: MetricsSource, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    """Serve ``server``'s ``/metrics`` (Prometheus text, or OpenMetrics when the scraper asks for
    it) and ``/healthz`` (200 ``serving``; 503 with the reason while not started, shutting down, or
    its broker unavailable) over HTTP on ``host``:``port`` (0: any free port; the bound one is
    ``.address``), in the running event loop, until ``await endpoint.close()``.

    Several workers of one server each call it with their own port (worker ``i``: ``port + i``).
    Raises :class:`~kcprpc.UsageError` without prometheus-client (the ``kcprpc[metrics]`` extra),
    and ``OSError`` when the address cannot be bound.
    """
    if not 0 <= port <= 65535:
        raise UsageError(f"metrics port {port}: expected 0..65535")
    endpoint = MetricsServer(server, _registry(server))
    await endpoint._listen(host, port)
    return endpoint
