"""One UDP port served by N worker processes: ``kcprpc serve --workers N`` and :func:`serve_workers`.

The supervising process (the parent) binds N sockets to the port with ``SO_REUSEPORT``, in order,
and keeps every one of them open for its whole life: socket ``i`` is worker ``i``'s, and the
reuseport group never changes (its indexes would shift if a socket closed). In secure mode each
worker hands out connection IDs whose first byte is its index (``SecureConfig.cid_prefix``) and a
classic BPF program on the group sends each transport packet to the socket that byte names
(:mod:`kcp.reuseport`): a client that migrates (a new address or port) reaches its own worker.
Handshakes and compat (kcp-go) packets carry no worker byte and go by the kernel's address hash.

The parent then starts the workers, each of which builds the app (a :class:`~kcprpc.Server`) and
serves on its own socket. A worker that dies is started again on the same socket (the datagrams
that arrived meanwhile wait in its buffer; its clients' sessions are gone, and their next packets
get a stateless reset every worker can make, so they reconnect at once), after a delay that
doubles while it keeps dying young (:class:`RestartPolicy`); each restart is counted and logged.
SIGTERM or SIGINT drains every worker (``Server.shutdown(grace)``) and the parent exits when all
have.

Why ``fork`` and not new interpreters: the app can be any callable (a closure too), it is imported
once, and the sockets are inherited as they are. The parent never runs an event loop or a thread,
so nothing of that kind is copied into a worker; each worker runs its own loop from scratch and
ends with ``os._exit`` (the parent's ``atexit`` work is not the worker's). Linux only (reuseport
routing by BPF, ``fork``).

What every worker must agree on is derived from the app's configuration, never drawn per process:
the stateless-reset key comes from the server's static key or PSK (an anonymous server gets one
random key drawn here, in the parent), and a worker whose app has another identity (a factory that
draws a new key each call) refuses to start. What stays per worker: sessions, resume tokens (a
resume succeeds on the same worker only), the cookie secret of handshake retries (a retry goes to
the same worker, by the client's address) and, with the in-process ``MemoryBroker``, rooms, topics
and presence: give every worker one broker across processes (Redis, NATS) for those.

Browsers (``web=``, :class:`WebListeners`): the parent also binds N listening TCP sockets (WebSocket)
and N UDP sockets (WebTransport) with ``SO_REUSEPORT``, one of each per worker, and the kernel's
address hash spreads connections over them. A web client's reconnect comes from a new port, so it
lands on any worker: on its own it resumes, elsewhere it restores onto a fresh session.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

import kcp
from kcp.config import SecureWire
from kcp.reuseport import MAX_WORKERS, open_reuseport_group
from kcprpc.appspec import load_app
from kcprpc.broker import MemoryBroker
from kcprpc.config import ANONYMOUS_PSK, Transport, effective_transport
from kcprpc.errors import UsageError
from kcprpc.server import Server

__all__ = [
    "AppSpec",
    "RestartPolicy",
    "WebListeners",
    "WorkerInfo",
    "current_worker",
    "serve_workers",
    "worker_transport",
]

log = logging.getLogger("kcprpc.workers")

AppSpec = str | Server | Callable[[], Server]
"""What :func:`serve_workers` serves: ``"module:attribute"`` (as ``kcprpc serve`` takes), a
:class:`~kcprpc.Server` (each worker gets its own copy of it, not started), or a callable that
returns one (called once in the parent, to learn the address and identity, then once per worker)."""

OnReady = Callable[[Server, tuple[str, int], list[int]], None]
"""``on_ready(app, (host, port), pids)``: every worker serves (``app`` is the parent's copy)."""

_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
_STARTUP_TIMEOUT: Final = 60.0
_KILL_MARGIN: Final = 10.0
"""Seconds past ``grace`` that a draining worker gets before it is killed."""
_EXIT_IDENTITY: Final = 3


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead worker starts again: ``initial`` seconds after its first death, doubling for
    each death that follows a run shorter than ``stable_after`` seconds, at most ``maximum``."""

    initial: float = 0.1
    maximum: float = 5.0
    stable_after: float = 10.0

    def __post_init__(self) -> None:
        if not (0 <= self.initial <= self.maximum) or self.stable_after < 0:
            raise UsageError("RestartPolicy: need 0 <= initial <= maximum and stable_after >= 0")

    def delay(self, failures: int) -> float:
        """The wait before a restart after ``failures`` deaths in a row (1: the first)."""
        return min(self.maximum, self.initial * float(2 ** max(0, min(failures - 1, 32))))

    def failures_after(self, previous: int, lived: float) -> int:
        """The count of deaths in a row after one more, by a worker that ran ``lived`` seconds."""
        return 1 if lived >= self.stable_after else previous + 1


@dataclass(frozen=True)
class WebListeners:
    """The web listeners every worker of :func:`serve_workers` serves beside the UDP port
    (docs/browser.md, docs/workers.md). ``websocket=(host, port)``: a WebSocket listener
    (:func:`kcprpc.web.listen_websocket`) with ``websocket_options`` (a
    :class:`kcprpc.web.WebSocketOptions`, None: the defaults; its ``web_root`` and
    ``/kcprpc.json`` are served by every worker); the parent binds N TCP sockets to the port with
    ``SO_REUSEPORT`` and the kernel spreads new connections over them by address hash.
    ``webtransport=(host, port)``: a WebTransport listener (:func:`kcprpc.web.listen_webtransport`)
    with ``webtransport_options`` (a :class:`kcprpc.web.WebTransportOptions`, required); N UDP
    sockets with ``SO_REUSEPORT``, a QUIC connection kept on one worker by the kernel's hash of its
    addresses (a client that changes address loses its session). Port 0: a free port, the same
    for every worker. Needs the ``web`` extra (imported in the workers only)."""

    websocket: tuple[str, int] | None = None
    websocket_options: Any = None
    webtransport: tuple[str, int] | None = None
    webtransport_options: Any = None

    def __post_init__(self) -> None:
        if self.webtransport is not None and self.webtransport_options is None:
            raise UsageError("WebListeners: webtransport needs webtransport_options (a certificate and key)")
        if self.websocket is None and self.websocket_options is not None:
            raise UsageError("WebListeners: websocket_options without websocket=(host, port)")
        if self.webtransport is None and self.webtransport_options is not None:
            raise UsageError("WebListeners: webtransport_options without webtransport=(host, port)")


def _open_tcp_group(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening, non-blocking TCP sockets bound to ``host:port`` with ``SO_REUSEPORT``
    (port 0: the first takes a free port, the others the same)."""
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.setblocking(False)
            s.bind((addr[0], port, *addr[2:]))
            port = s.getsockname()[1]
            s.listen(511)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


@dataclass(frozen=True)
class WorkerInfo:
    """Which worker this process is (:func:`current_worker`)."""

    index: int
    workers: int


_current: WorkerInfo | None = None


def current_worker() -> WorkerInfo | None:
    """In a worker of :func:`serve_workers`: its index and the number of workers; else None."""
    return _current


def worker_transport(transport: Transport, index: int | None, reset_key: bytes | None) -> Transport:
    """The transport worker ``index`` serves: a secure wire's connection IDs start with the index
    (None: a single worker, unchanged), and ``reset_key`` (if given) is its stateless-reset key,
    unless the wire's config sets one. A compat wire is unchanged (the kernel's hash routes it)."""
    wire = transport.wire
    if not isinstance(wire, SecureWire):
        return transport
    cfg = wire.config
    changes: dict[str, bytes] = {}
    if index is not None:
        changes["cid_prefix"] = bytes((index,))
    if reset_key is not None and (cfg is None or cfg.reset_key is None):
        changes["reset_key"] = reset_key
    if not changes:
        return transport
    return replace(transport, wire=wire.with_config(**changes))


def _identity(transport: Transport) -> tuple[object, ...]:
    """What must be the same in every worker: the wire mode and its keys (as the server runs it)."""
    wire = effective_transport(transport, side="server").wire
    if isinstance(wire, SecureWire):
        return ("secure", wire.key, wire.static_private_key, wire.config)
    return ("compat", wire.crypt if isinstance(wire.crypt, str | None) else type(wire.crypt), wire.key)


def _anonymous(transport: Transport) -> bool:
    wire = effective_transport(transport, side="server").wire
    return isinstance(wire, SecureWire) and wire.key == ANONYMOUS_PSK and wire.static_private_key is None


def _build(app: AppSpec, host: str | None, port: int | None) -> Server:
    if isinstance(app, str):
        app = load_app(app)
    server = app if isinstance(app, Server) else app() if callable(app) else None
    if not isinstance(server, Server):
        raise UsageError("serve_workers needs a kcprpc.Server, a callable returning one, or 'module:app'")
    if host is not None:
        server.host = host
    if port is not None:
        server.port = port
    return server


def serve_workers(
    app: AppSpec,
    workers: int,
    *,
    host: str | None = None,
    port: int | None = None,
    grace: float = 5.0,
    restart: RestartPolicy | None = None,
    route_by_cid: bool = True,
    on_ready: OnReady | None = None,
    metrics: tuple[str, int] | None = None,
    web: WebListeners | None = None,
    on_listening: Callable[[WebListeners], None] | None = None,
) -> int:
    """Serve ``app`` from ``workers`` processes on one UDP port until SIGTERM or SIGINT; returns
    the exit code (0: every worker drained). Blocks; call it from a program's main thread, with no
    event loop running.

    ``host``/``port`` override the app's own (port 0: a free port, the same for every worker).
    ``grace``: the seconds in-flight calls get at shutdown (``Server.shutdown``). ``restart``: when
    a dead worker starts again (:class:`RestartPolicy`). ``route_by_cid=False`` leaves secure
    packets to the kernel's address hash too (a client that migrates then loses its session: for
    tests and comparisons only). ``on_ready(app, address, pids)`` runs once every worker serves.
    ``metrics=(host, port)``: each worker serves its own ``/metrics`` and ``/healthz``
    (:func:`kcprpc.start_metrics`) on ``port + index`` (port 0: any free port). ``web``: the
    WebSocket and WebTransport listeners every worker serves (:class:`WebListeners`);
    ``on_listening(web)`` runs once they are bound, before the workers start, with the ports
    they were bound to. Raises :class:`UsageError` for misuse and ``OSError`` if the port cannot be bound.
    """
    if not sys.platform.startswith("linux"):
        raise UsageError("serve_workers (--workers) needs Linux (SO_REUSEPORT routed by BPF, fork)")
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"workers must be 1..{MAX_WORKERS}")
    if grace < 0:
        raise UsageError("grace must be >= 0 seconds")
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop()
        raise UsageError("serve_workers blocks and forks: call it with no event loop running")
    if threading.current_thread() is not threading.main_thread():
        raise UsageError("serve_workers handles signals: call it from the main thread")
    template = _build(app, host, port)
    if template.host is None or template.port is None:
        raise UsageError("serve_workers needs host and port (the app's, or host=/port=)")
    if workers > 1 and isinstance(template.push.broker, MemoryBroker):
        log.warning(
            "%d workers share the in-process MemoryBroker: rooms, topics and presence reach only the "
            "sessions of the same worker; give the Server a broker across processes (Redis, NATS)",
            workers,
        )
    secure = isinstance(template.transport.wire, SecureWire)
    reset_key = os.urandom(32) if _anonymous(template.transport) else None
    socks = open_reuseport_group(
        template.host, template.port, workers, route_by_cid=secure and route_by_cid and workers > 1
    )
    address = socks[0].getsockname()[:2]
    ws_socks: list[socket.socket] = []
    wt_socks: list[socket.socket] = []
    try:
        if web is not None and web.websocket is not None:
            ws_socks = _open_tcp_group(*web.websocket, workers)
            web = replace(web, websocket=_bound(ws_socks[0]))
        if web is not None and web.webtransport is not None:
            wt_socks = open_reuseport_group(*web.webtransport, workers, route_by_cid=False)
            web = replace(web, webtransport=_bound(wt_socks[0]))
        if web is not None and on_listening is not None:
            on_listening(web)
        sup = _Supervisor(
            _WorkerPlan(
                app, host, port, workers, _identity(template.transport), reset_key, grace, socks, metrics,
                web, ws_socks, wt_socks,
            ),
            restart or RestartPolicy(),
        )  # fmt: skip
        return sup.run(lambda pids: on_ready(template, address, pids) if on_ready else None)
    finally:
        for s in [*socks, *ws_socks, *wt_socks]:
            s.close()


def _bound(sock: socket.socket) -> tuple[str, int]:
    name = sock.getsockname()
    return (str(name[0]), int(name[1]))


@dataclass(frozen=True)
class _WorkerPlan:
    app: AppSpec
    host: str | None
    port: int | None
    workers: int
    identity: tuple[object, ...]
    reset_key: bytes | None
    grace: float
    socks: list[socket.socket]
    metrics: tuple[str, int] | None = None
    web: WebListeners | None = None
    ws_socks: list[socket.socket] | None = None
    wt_socks: list[socket.socket] | None = None


@dataclass
class _Worker:
    index: int
    pid: int = 0
    started: float = 0.0
    ready_fd: int = -1
    ready: bool = False
    failures: int = 0
    restart_at: float | None = None
    status: int = 0  # the last exit code (negative: the signal that ended it)


class _Supervisor:
    """The parent's loop: start, reap, restart, drain. Single-threaded, no event loop (it forks)."""

    def __init__(self, plan: _WorkerPlan, policy: RestartPolicy) -> None:
        self.plan = plan
        self.policy = policy
        self.workers = [_Worker(i) for i in range(plan.workers)]
        self.stopping = False
        self.stop_deadline = 0.0
        self._signalled = 0  # the stop signal received (the handler only records it)
        self.stats = {"started": 0, "restarts": 0, "deaths": 0, "killed": 0}

    # ------------------------------------------------------------------ the loop
    def run(self, on_ready: Callable[[list[int]], None]) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_handlers = {sig: signal.getsignal(sig) for sig in (*_SIGNALS, signal.SIGCHLD)}
        old_wakeup = signal.set_wakeup_fd(wake_w)
        for sig in _SIGNALS:
            signal.signal(sig, self._on_stop_signal)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select (set_wakeup_fd)
        self._wake = (wake_r, wake_w)
        try:
            return self._loop(on_ready)
        except BaseException:  # on_ready raised, or a bug here: no worker outlives the supervisor
            self._terminate_all()
            raise
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
            for w in self.workers:
                self._close_ready(w)
            os.close(wake_r)
            os.close(wake_w)

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        self._signalled = self._signalled or signum  # acted on by the loop (woken by the wakeup fd)

    def _stop(self, why: str) -> None:
        """Drain every worker: SIGTERM now, SIGKILL past the deadline; no more restarts."""
        if self.stopping:
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.plan.grace + _KILL_MARGIN
        log.info("%s: draining %d workers", why, len(self.workers))
        for w in self.workers:
            w.restart_at = None
            if w.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGTERM)

    def _loop(self, on_ready: Callable[[list[int]], None]) -> int:
        for w in self.workers:
            self._start(w)
        startup_end = time.monotonic() + _STARTUP_TIMEOUT
        announced = False
        failed = False
        while True:
            self._reap(starting=not announced)
            if self._signalled:
                self._stop(f"{signal.Signals(self._signalled).name}")
            if not announced and not self.stopping:
                if any(w.pid == 0 and w.restart_at is None for w in self.workers):
                    log.error("a worker exited before it served (the app failed to start): stopping")
                    failed = True
                    self._stop("startup failed")
                elif all(w.ready for w in self.workers):
                    announced = True
                    on_ready([w.pid for w in self.workers])
                elif time.monotonic() > startup_end:
                    log.error("the workers did not start within %.0f s: stopping", _STARTUP_TIMEOUT)
                    failed = True
                    self._stop("startup timed out")
            if self.stopping:
                if all(w.pid == 0 for w in self.workers):
                    break
                if time.monotonic() > self.stop_deadline:
                    for w in self.workers:
                        if w.pid:
                            log.error("worker %d (pid %d) did not drain in time: killed", w.index, w.pid)
                            self.stats["killed"] += 1
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(w.pid, signal.SIGKILL)
                    self.stop_deadline = float("inf")
            else:
                now = time.monotonic()
                for w in self.workers:
                    if w.restart_at is not None and w.restart_at <= now:
                        w.restart_at = None
                        self.stats["restarts"] += 1
                        self._start(w)
                        log.warning("worker %d restarted (pid %d; restart %d)", w.index, w.pid,
                                    self.stats["restarts"])  # fmt: skip
            self._wait()
        clean = all(w.status in (0, -signal.SIGTERM, -signal.SIGINT) for w in self.workers)
        code = 1 if failed or not clean or self.stats["killed"] else 0
        log.info("stopped (exit code %d): %s", code, ", ".join(f"{k} {v}" for k, v in self.stats.items()))
        return code

    def _terminate_all(self) -> None:
        """SIGTERM to every live worker, each reaped within the drain deadline or killed."""
        self._stop("the supervisor failed")
        for w in self.workers:
            if w.pid:
                exited = os.pidfd_open(w.pid)  # readable once it exited (not yet reaped: still ours)
                try:
                    left = max(0.0, self.stop_deadline - time.monotonic())
                    if not select.select([exited], [], [], left)[0]:
                        os.kill(w.pid, signal.SIGKILL)
                finally:
                    os.close(exited)
                os.waitpid(w.pid, 0)
                w.pid = 0

    def _wait(self) -> None:
        """Until a signal, a worker's readiness, or the next restart or deadline."""
        now = time.monotonic()
        due = [w.restart_at for w in self.workers if w.restart_at is not None]
        if self.stopping and self.stop_deadline != float("inf"):
            due.append(self.stop_deadline)
        timeout = max(0.0, min(due) - now) if due else 1.0
        fds = [self._wake[0], *(w.ready_fd for w in self.workers if w.ready_fd >= 0)]
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select(fds, [], [], timeout)
            for fd in readable:
                if fd == self._wake[0]:
                    with contextlib.suppress(BlockingIOError):
                        os.read(fd, 512)
                    continue
                for w in self.workers:
                    if w.ready_fd == fd:
                        data = b""
                        with contextlib.suppress(OSError):
                            data = os.read(fd, 1)
                        w.ready = w.ready or data == b"R"
                        self._close_ready(w)

    def _reap(self, starting: bool) -> None:
        for w in self.workers:  # our workers only: the program may have other children
            if w.pid:
                try:
                    pid, status = os.waitpid(w.pid, os.WNOHANG)
                except ChildProcessError:
                    pid, status = w.pid, 0
                if pid:
                    self._died(w, os.waitstatus_to_exitcode(status), starting)

    def _died(self, w: _Worker, code: int, starting: bool) -> None:
        lived = time.monotonic() - w.started
        w.pid = 0
        w.status = code
        self._close_ready(w)
        how = _how(code)
        if self.stopping:
            log.info("worker %d stopped (%s)", w.index, how)
            return
        self.stats["deaths"] += 1
        if starting and not w.ready:
            log.error("worker %d died while starting (%s)", w.index, how)
            return
        w.failures = self.policy.failures_after(w.failures, lived)
        delay = self.policy.delay(w.failures)
        w.restart_at = time.monotonic() + delay
        log.warning("worker %d died (%s) after %.1f s; restarting in %.2f s", w.index, how, lived, delay)

    def _close_ready(self, w: _Worker) -> None:
        if w.ready_fd >= 0:
            os.close(w.ready_fd)
            w.ready_fd = -1

    # ------------------------------------------------------------------ one worker
    def _start(self, w: _Worker) -> None:
        ready_r, ready_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        # the child unblocks them once it handles them: none is lost, none kills it half-built
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(ready_r)
            os.close(ready_w)
            raise
        if pid == 0:  # the worker: never returns
            code = 70
            try:
                os.close(ready_r)
                code = _worker_process(self.plan, w.index, ready_w, keep_open=self._wake)
            finally:
                with contextlib.suppress(Exception):
                    logging.shutdown()
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(ready_w)
        w.pid = pid
        w.started = time.monotonic()
        w.ready = False
        w.ready_fd = ready_r
        self.stats["started"] += 1
        log.info("worker %d started (pid %d)", w.index, pid)


def _how(code: int) -> str:
    """An exit code in words (negative: the signal that ended the process)."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


# ---------------------------------------------------------------------- in the worker process


def _worker_process(plan: _WorkerPlan, index: int, ready_w: int, keep_open: tuple[int, int]) -> int:
    """The forked worker: a clean signal state, only its own socket, then its own event loop."""
    global _current
    signal.set_wakeup_fd(-1)
    for sig in (*_SIGNALS, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    for fd in keep_open:
        with contextlib.suppress(OSError):
            os.close(fd)
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:
        return 1
    sock = plan.socks[index]
    for group in (plan.socks, plan.ws_socks or [], plan.wt_socks or []):
        for i, s in enumerate(group):
            if i != index:
                s.close()
    _current = WorkerInfo(index, plan.workers)
    try:
        return kcp.run(_serve_worker(plan, index, sock, ready_w))  # uvloop when installed, as `serve`
    except Exception:
        log.exception("worker %d failed", index)
        return 1


async def _start_web(server: Server, plan: _WorkerPlan, index: int) -> None:
    """Worker ``index``'s web listeners, on its sockets of the groups the parent bound."""
    web = plan.web
    if web is None:
        return
    from kcprpc import web as kweb  # the web extra: only where web listeners are asked for

    if plan.ws_socks:
        await kweb.listen_websocket(server, options=web.websocket_options, sock=plan.ws_socks[index])
    if plan.wt_socks:
        await kweb.listen_webtransport(server, options=web.webtransport_options, sock=plan.wt_socks[index])


def _die_with_parent() -> None:
    """Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: a worker drains when its parent dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)


async def _serve_worker(plan: _WorkerPlan, index: int, sock: socket.socket, ready_w: int) -> int:
    server = _build(plan.app, plan.host, plan.port)
    if _identity(server.transport) != plan.identity:
        log.error(
            "worker %d: the app's wire or keys differ from the first one built (a factory that draws "
            "a new key each call?): every worker must have the same identity",
            index,
        )
        return _EXIT_IDENTITY
    server.transport = worker_transport(server.transport, index if plan.workers > 1 else None, plan.reset_key)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)  # a signal sent meanwhile arrives now
    await server.start(sock=sock)
    try:
        await _start_web(server, plan, index)
    except (OSError, UsageError, ImportError) as e:
        log.error("worker %d: web listeners: %s", index, e)
        await server.shutdown(0)
        return 1
    endpoint = None
    if plan.metrics is not None:
        from kcprpc.metrics import start_metrics  # prometheus-client only where metrics are asked for

        mhost, mport = plan.metrics
        try:
            endpoint = await start_metrics(server, mhost, mport + index if mport else 0)
        except (OSError, UsageError) as e:
            log.error("worker %d: metrics endpoint on %s:%s: %s", index, mhost, mport + index, e)
            await server.shutdown(0)
            return 1
    try:
        os.write(ready_w, b"R")
    except OSError as e:  # the parent is gone
        if e.errno != errno.EPIPE:
            raise
    finally:
        os.close(ready_w)
    serving = asyncio.ensure_future(server.serve())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for sig in _SIGNALS:  # draining: a second signal (the parent's after a terminal's) changes nothing
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
    await server.shutdown(plan.grace)
    if endpoint is not None:
        await endpoint.close()
    for t in (serving, stopped):
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
    return 0
