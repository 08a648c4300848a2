"""Two worker processes on one port, on 127.0.0.1: ``kcprpc serve --workers 2`` and
``kcprpc.serve_workers``. Clients spread across the workers; a secure client that migrates keeps
its session and its worker (and loses both without the CBPF router); a killed worker is restarted
on the same socket and its clients reconnect; SIGTERM drains every worker and exits 0."""

from __future__ import annotations

import asyncio
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

import kcprpc
from kcprpc import ClientConfig, ReconnectPolicy, RpcError
from tests.integration.workers_app import KEY, Who

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "tests" / "integration" / "workers_api.py"
START_TIMEOUT = 30.0
CALL_TIMEOUT = 5.0


def _lines(stream: IO[str]) -> queue.Queue[str]:
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return q


class Workers:
    """A supervising process and its two workers: ``port``, the workers' ``pids`` (in order)."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log, text=True, stdin=subprocess.DEVNULL
        )
        assert self.proc.stdout is not None
        self.out = _lines(self.proc.stdout)
        self.port = 0
        self.pids: list[int] = []
        self.workers_line = ""
        self.metrics = 0  # the first worker's metrics port, where a test asks for them

    def expect(self, prefix: str, timeout: float = START_TIMEOUT) -> str:
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.out.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line starting {prefix!r}; log:\n{self.log()}") from None
            if line.lstrip().startswith(prefix):
                return line.strip()

    def log(self) -> str:
        return self.log_path.read_text()  # the processes write it (their stderr)

    def stop(self) -> int:
        """SIGTERM, then the exit code (killed if it does not exit within 20 s: its workers then
        get SIGTERM from the kernel and drain)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = -9
        self._log.close()  # a worker outliving a killed parent drains on its own (PR_SET_PDEATHSIG)
        return code


def cli_workers(log: Path, *flags: str, app: str = "tests.integration.workers_app:app") -> Workers:
    w = Workers(
        [sys.executable, "-m", "kcprpc", "serve", app, "--workers", "2",
         "--port", "0", "--key", KEY, "--grace", "1", "--log-level", "info", *flags],
        log,
    )  # fmt: skip
    banner = w.expect("kcprpc serving")
    w.port = int(banner.rsplit(":", 1)[1])
    workers = w.workers_line = w.expect("workers:")  # workers:   2 (pids 1, 2); secure sessions reach ...
    w.pids = [int(p) for p in workers.split("(pids ", 1)[1].split(")", 1)[0].split(", ")]
    return w


def api_workers(log: Path, *flags: str) -> Workers:
    w = Workers([sys.executable, str(API), *flags], log)
    line = w.expect("PORT ").split()
    w.port = int(line[1])
    w.pids = [int(p) for p in line[3].split(",")]
    return w


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Workers]:
    w = cli_workers(tmp_path / "serve.log")
    yield w
    w.stop()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Workers]:
    w = api_workers(tmp_path / "api.log")
    yield w
    w.stop()


@pytest.fixture
def api_unrouted(tmp_path: Path) -> Iterator[Workers]:
    w = api_workers(tmp_path / "unrouted.log", "--no-route")
    yield w
    w.stop()


async def whoami(client: kcprpc.Client) -> dict[str, int]:
    return await client.stub(Who, timeout=CALL_TIMEOUT).whoami()


class Clients:
    def __init__(self) -> None:
        self.all: list[kcprpc.Client] = []

    async def open(
        self, port: int, config: ClientConfig | None = None, transport: kcprpc.Transport | None = None
    ) -> kcprpc.Client:
        c = kcprpc.connect(
            "127.0.0.1", port, key=None if transport else KEY, transport=transport, config=config
        )
        self.all.append(c)
        await asyncio.wait_for(c.connect(), CALL_TIMEOUT)
        return c


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    c = Clients()
    yield c
    await asyncio.gather(*(x.close() for x in c.all), return_exceptions=True)


async def test_cli_workers_spread_clients_answer_calls_and_drain_on_sigterm(
    cli: Workers, clients: Clients
) -> None:
    answers = []
    for _ in range(16):  # 16 source ports: all on one worker with p = 2**-15
        c = await clients.open(cli.port)
        answers.append(await whoami(c))
    assert {a["pid"] for a in answers} == set(cli.pids)
    assert {a["worker"] for a in answers} == {0, 1}
    assert all(a["pid"] == cli.pids[a["worker"]] for a in answers)  # worker i serves socket i
    for c, a in zip(clients.all, answers, strict=True):  # each connection stays on its worker
        assert await whoami(c) == {**a, "sessions": (await whoami(c))["sessions"]}
    assert cli.stop() == 0
    log = cli.log()
    assert "worker 0 stopped (exit code 0)" in log and "worker 1 stopped (exit code 0)" in log
    assert "MemoryBroker" in log  # the warning: rooms and topics stay inside each worker


async def migrate(client: kcprpc.Client, rebinds: int) -> list[dict[str, int]]:
    """Rebind the client's socket ``rebinds`` times (a new source port each time), a call after each."""
    seen = []
    for _ in range(rebinds):
        client.rebind()
        seen.append(await whoami(client))
    return seen


async def test_a_migrating_secure_client_keeps_its_session_and_its_worker(
    api: Workers, clients: Clients
) -> None:
    on: dict[int, kcprpc.Client] = {}
    for _ in range(32):  # a client on each worker (the handshake goes by the address hash)
        c = await clients.open(api.port)
        on.setdefault((await whoami(c))["worker"], c)
        if len(on) == 2:
            break
    assert sorted(on) == [0, 1]
    for worker, c in on.items():
        sid = c.session_id
        after = await migrate(c, 8)
        assert {a["pid"] for a in after} == {api.pids[worker]}  # every datagram reached its worker
        assert c.session_id == sid and c.reconnects == 0 and c.connected  # the same session
        stats = await c.stats()
        assert stats.server["path_changes"] >= 8 and stats.transport["secure_path_changes"] >= 8


async def test_without_cid_routing_migrating_across_workers_breaks(
    api_unrouted: Workers, clients: Clients
) -> None:
    """The control: the same migration with the kernel's address hash alone soon reaches the
    worker that does not know the connection, which answers with a stateless reset."""
    c = await clients.open(api_unrouted.port)
    await whoami(c)
    error: RpcError | None = None
    for _ in range(20):  # each rebind moves to the other worker with p = 1/2
        c.rebind()
        try:
            await whoami(c)
        except RpcError as e:
            error = e
            break
    assert error is not None, "20 rebinds never left the worker without CID routing"
    assert error.status == kcprpc.Status.UNAVAILABLE and "stateless reset" in error.message, error
    assert not c.connected


async def test_a_killed_worker_is_restarted_on_its_socket_and_its_clients_reconnect(
    cli: Workers, clients: Clients
) -> None:
    cfg = ClientConfig(reconnect=ReconnectPolicy(initial=0.05, maximum=0.5))
    on: dict[int, kcprpc.Client] = {}
    for _ in range(32):
        c = await clients.open(cli.port, cfg)
        on.setdefault((await whoami(c))["worker"], c)
        if len(on) == 2:
            break
    victim_pid = cli.pids[1]
    os.kill(victim_pid, signal.SIGKILL)
    client = on[1]
    end = time.monotonic() + 20
    answer: dict[str, Any] | None = None
    while time.monotonic() < end:  # the next calls: a stateless reset from the new worker 1, a reconnect
        try:
            answer = await whoami(client)
        except RpcError:
            await asyncio.wait_for(client.wait_connected(), CALL_TIMEOUT)
            continue
        if answer["pid"] != victim_pid:
            break
    assert answer is not None and answer["pid"] != victim_pid, cli.log()
    assert client.reconnects >= 1
    assert (await whoami(on[0]))["pid"] == cli.pids[0]  # the other worker's clients never noticed
    assert on[0].reconnects == 0
    # the new worker 1 serves socket 1: fresh clients reach it by the address hash
    new_pids = set()
    for _ in range(16):
        c = await clients.open(cli.port)
        a = await whoami(c)
        if a["worker"] == 1:
            new_pids.add(a["pid"])
    assert len(new_pids) == 1 and victim_pid not in new_pids
    cli.pids.append(new_pids.pop())
    log = cli.log()
    assert "worker 1 died (killed by SIGKILL)" in log and "worker 1 restarted" in log
    assert cli.stop() == 0


COMPAT = kcprpc.Transport(kcprpc.CompatWire(crypt="aes", key=KEY))


async def test_compat_mode_workers_spread_by_address(tmp_path: Path, clients: Clients) -> None:
    """kcp-go's format: no router is attached, the kernel's address hash pins each client."""
    w = cli_workers(tmp_path / "compat.log", "--crypt", "aes")
    try:
        assert w.workers_line.endswith("sessions spread by the kernel's address hash")
        answers = []
        for _ in range(16):
            c = await clients.open(w.port, transport=COMPAT)
            answers.append(await whoami(c))
        assert {a["pid"] for a in answers} == set(w.pids)
        for c, a in zip(clients.all, answers, strict=True):
            assert (await whoami(c))["pid"] == a["pid"]
    finally:
        assert w.stop() == 0


async def test_workers_drain_when_their_parent_is_killed(api: Workers, clients: Clients) -> None:
    """SIGKILL to the supervisor: each worker gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and
    drains; its clients see the server go away."""
    c = await clients.open(api.port)
    await whoami(c)
    exits = [os.pidfd_open(pid) for pid in api.pids]  # readable once the process has exited
    try:
        api.proc.kill()
        api.proc.wait(10)
        end = time.monotonic() + 20
        waiting = list(exits)
        while waiting and time.monotonic() < end:
            done, _, _ = select.select(waiting, [], [], max(0.0, end - time.monotonic()))
            waiting = [fd for fd in waiting if fd not in done]
        assert not waiting, "a worker outlived its parent"
    finally:
        for fd in exits:
            os.close(fd)
    with pytest.raises(RpcError):
        await whoami(c)


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    w = Workers(
        [sys.executable, "-m", "kcprpc", "serve", "tests.integration.workers_app:broken_app", "--workers", "2",
         "--port", "0"],
        tmp_path / "broken.log",
    )  # fmt: skip
    try:
        code = w.proc.wait(START_TIMEOUT)
    finally:
        w.stop()
    log = w.log()
    assert code == 1, log
    assert "the database is unreachable" in log and "died while starting" in log
    assert "the app failed to start" in log


async def drop_and_reconnect(client: kcprpc.Client) -> None:
    """Lose the connection without a goodbye (the server detaches the session) and wait for the
    client's reconnect."""
    back = asyncio.Event()
    client.on_reconnect = lambda _: back.set()
    link = client.lifecycle.link
    assert link is not None
    await link.conn.abort()
    await asyncio.wait_for(back.wait(), CALL_TIMEOUT)


RESUMING = ClientConfig(reconnect=ReconnectPolicy(initial=0.01, maximum=0.05))


async def test_a_reconnecting_client_resumes_its_session_on_its_worker(
    api: Workers, clients: Clients
) -> None:
    """A reconnect's handshake asks for the worker of the last connection (its client ID's first
    byte), so the session detached there is resumed, whatever the new source port hashes to."""
    for _ in range(2):
        c = await clients.open(api.port, RESUMING)
        first = await whoami(c)
        sid = c.session_id
        for n in range(1, 7):
            await drop_and_reconnect(c)
            assert (await whoami(c))["pid"] == first["pid"]
            assert c.session_id == sid and c.resumes == n


async def test_without_cid_routing_resumes_miss_their_worker(api_unrouted: Workers, clients: Clients) -> None:
    """The control: by the address hash alone a reconnect lands on the other worker half the time,
    which does not hold the session (SessionExpired, a fresh session)."""
    c = await clients.open(api_unrouted.port, RESUMING)
    await whoami(c)
    for _ in range(16):
        before = c.resumes
        await drop_and_reconnect(c)
        if c.resumes == before:
            break
    else:
        raise AssertionError("16 reconnects all resumed without CID routing")
