"""Push fan-out: one publisher, N subscribers (default 1,000) on one kcprpc server process.

Processes (all on 127.0.0.1, one machine):

* the server (kcprpc default wire mode: secure, anonymous) in its own process;
* ``--procs`` subscriber processes holding N sessions between them (each session is a
  ``kcprpc.connect`` with its own UDP socket), every session subscribed to one topic;
* the publisher in its own process: a unary call ``Publish(Tick)`` per message, paced at the
  step's rate; the handler publishes the tick on the topic (``server.push.publish``).

Every tick carries ``time.monotonic_ns()`` taken by the publisher just before its call
(CLOCK_MONOTONIC is system-wide on Linux), so each delivery's publish-to-receive latency is
measured in the subscriber that received it. The sessions connect once; then the publisher
runs one step per rate of ``--rates`` (ascending), ``--seconds`` each, with a bounded drain
after each (the publisher overlaps up to 8 calls, so that its pace does not wait on each reply).
A step's delivery *holds* when the publisher kept >= 95 % of the rate (the pace its calls went out at,
with at most 8 unanswered) and >= 99 % of the expected deliveries (published x N) arrived; it is
*sustained* when moreover p99 <= ``--p99-limit`` ms. The steps stop at the first rate whose delivery fails
(or whose p99 passes 5x the limit), then one step at the midpoint to the last good rate runs.
Both the highest sustained and the highest delivered rate are reported per contender and round.
Server CPU % (utime + stime of all its threads from /proc/<pid>/stat over the publish window)
and RSS are reported per step, with the subscriber processes' CPU (they share the cores), and both
as CPU per delivery (µs of CPU over the window / the deliveries expected in it). ``--every-rate``
runs every rate of ``--rates`` whatever happens (fixed steps for A/B runs of two trees; copy the
script outside the repository first, since ``_common.py`` puts its own repository on ``sys.path``).
``FANOUT_PROFILE=FILE`` runs the server under cProfile (CPU time) and writes its stats to FILE.
With grpcio among the contenders, the last lines give the server's CPU per delivery against
grpcio's at each rate: the ratio of each round (the two ran back to back in it) and their median.

The grpcio contender (``--contenders``) is the same shape over TCP: a server-streaming call per
subscriber (one channel each) fed by its own asyncio.Queue, and a unary ``Publish`` that puts
the raw bytes on every queue; raw-bytes handlers (no protobuf), asyncio loop. Contenders
alternate between rounds (A B, B A).

    python bench/fanout.py --quick                  # 200 subscribers, 2 short steps each
    python bench/fanout.py --rounds 2 -v            # 1,000 subscribers in 4 processes
    python bench/rpc.py --fanout 1000               # the same, through bench/rpc.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import resource
import statistics
import struct
import sys
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

from _common import percentile, proc_cpu_s, proc_rss_mb, run_loop, udp_rcvbuf_errors
from pydantic import BaseModel

import kcprpc
from kcprpc import current_context

TOPIC = "fanout"
MAX_INFLIGHT = 8  # the publisher's overlapping Publish calls: its pace does not wait on each reply
SNMP_KEYS = (
    "out_segs",
    "retrans_segs",
    "fast_retrans_segs",
    "lost_segs",
    "in_pkts",
    "out_pkts",
    "recv_syscalls",
    "send_syscalls",
)


@kcprpc.event("bench.Tick")
class Tick(BaseModel):
    """One published message."""

    step: int
    seq: int
    t_ns: int  # time.monotonic_ns() at the publisher, just before its publish call
    pad: bytes = b""


class Publication(BaseModel):
    """A tick to publish on one group's topic (``fanout:GROUP``)."""

    group: str
    tick: Tick


class FanoutService(kcprpc.Service, name="bench.Fanout", topics={TOPIC: [Tick], TOPIC + ":{group}": [Tick]}):
    """The publisher's call: publish one tick on the topic."""

    async def Publish(self, tick: Tick) -> int:
        return await _publish(TOPIC, tick)

    async def PublishTo(self, pub: Publication) -> int:
        """Publish on the topic of one group of subscribers (``fanout:GROUP``: bench/web_fanout.py
        keeps two groups on one server and publishes to one at a time)."""
        return await _publish(group_topic(pub.group), pub.tick)

    async def Who(self) -> int:
        """The answering process's id (which worker a session landed on, in bench/scale.py)."""
        return os.getpid()


_PUBLISH_S: list[float] = []  # server side: seconds spent in push.publish per call (the fan-out)


def group_topic(group: str) -> str:
    """The topic of one group of subscribers ("": the one topic of a plain fan-out)."""
    return f"{TOPIC}:{group}" if group else TOPIC


async def _publish(topic: str, tick: Tick) -> int:
    t0 = time.perf_counter()
    msg = await current_context().server.push.publish(topic, tick)
    _PUBLISH_S.append(time.perf_counter() - t0)
    return msg.seq


HELD_ACKS_MS = 200
"""The ``kcprpc-held`` contender's ``ServerConfig.ack_hold``: its WELCOME asks the subscribers to
hold their lone acks (docs/tuning.md "Delayed acks")."""


def _transport(mode: str) -> kcprpc.Transport:
    """The wire mode ``mode``: secure (anonymous: no key; ``secure-held`` too; ``secure-coalesce``:
    a listener's ``IOOptions(read_coalesce_ms=1)``, which a dial ignores) or compat (no cipher)."""
    if mode == "compat":
        return kcprpc.Transport(kcprpc.CompatWire())
    io = kcprpc.IOOptions(read_coalesce_ms=1 if mode == "secure-coalesce" else 0)
    return kcprpc.Transport(kcprpc.SecureWire(), io=io)


# ------------------------------------------------------------------------------------ processes
def _wait_cmd(loop: asyncio.AbstractEventLoop, conn: Connection) -> asyncio.Future[Any]:
    """A future with the next object received on ``conn`` (read from the event loop)."""
    fut: asyncio.Future[Any] = loop.create_future()

    def on_readable() -> None:
        loop.remove_reader(conn.fileno())
        # uvloop's add_reader leaves the socket non-blocking, and a send back on it (a step's
        # latencies: 8 bytes a delivery, past the socket's buffer at a few 10,000 deliveries)
        # would fail with EAGAIN: the pipe to the coordinator is blocking again here
        os.set_blocking(conn.fileno(), True)
        try:
            fut.set_result(conn.recv())
        except EOFError:
            fut.set_result(("stop",))

    loop.add_reader(conn.fileno(), on_readable)
    return fut


def fanout_server(mode: str, broker_url: str | None = None) -> kcprpc.Server:
    """The kcprpc server under test (not started): :class:`FanoutService` on 127.0.0.1, any port,
    wire ``mode``, on the broker of ``broker_url`` (None: the in-process MemoryBroker)."""
    broker = kcprpc.broker_from_url(broker_url) if broker_url else None
    config = kcprpc.ServerConfig(ack_hold=HELD_ACKS_MS) if mode == "secure-held" else None
    return kcprpc.Server(
        [FanoutService()], "127.0.0.1", 0, transport=_transport(mode), broker=broker, config=config
    )


Listen = Callable[[kcprpc.Server], Awaitable[Any]]
"""More listeners for a kcprpc server process (run once it serves); what it returns is sent to the
coordinator after the port (bench/web_fanout.py: a WebSocket listener and its port)."""


def _server_proc(
    conn: Connection,
    kind: str,
    mode: str,
    loop_kind: str,
    broker_url: str | None = None,
    listen: Listen | None = None,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        if kind == "grpcio":
            gserver, port = await _grpc_server()
        else:
            server = fanout_server(mode, broker_url)
            _host, port = await server.start()
        conn.send(port)
        if listen is not None and kind != "grpcio":
            conn.send(await listen(server))
        import kcp

        for _ in range(100_000):  # bounded: a few commands per step
            cmd = await _wait_cmd(loop, conn)
            if cmd[0] != "snmp":
                break
            snap = kcp.snmp()
            out: dict[str, float] = {k: snap.get(k, 0) for k in SNMP_KEYS}
            out["publish_s"] = sum(_PUBLISH_S)  # cumulative, like the counters
            conn.send(out)
        with contextlib.suppress(Exception):
            if kind == "grpcio":
                await asyncio.wait_for(gserver.stop(0.5), 10)
            else:
                await asyncio.wait_for(server.shutdown(grace=0.5), 10)

    prof = os.environ.get("FANOUT_PROFILE")  # a path: cProfile the server process into it
    if prof:
        import cProfile

        # CPU time, not wall time: on a shared machine a process waiting for a core would
        # otherwise charge the wait to whatever function it was in
        pr = cProfile.Profile(time.process_time)
        pr.runctx("run_loop(main(), loop_kind)", globals(), locals())
        pr.dump_stats(prof)
    else:
        run_loop(main(), loop_kind)


# grpcio contender: raw-bytes handlers (no protobuf), a server-streaming call per subscriber fed
# by its own asyncio.Queue, a unary Publish that puts the message on every queue.
_GRPC_TICK = struct.Struct("<iiq")  # step, seq, t_ns


async def _grpc_server() -> tuple[Any, int]:
    import grpc  # type: ignore[import-untyped]

    queues: set[asyncio.Queue[bytes]] = set()

    async def subscribe(request: bytes, context: Any) -> AsyncIterator[bytes]:
        q: asyncio.Queue[bytes] = asyncio.Queue()
        queues.add(q)
        try:
            yield b""  # subscribed: the client counts the stream as ready
            while True:
                yield await q.get()
        finally:
            queues.discard(q)

    async def publish(request: bytes, context: Any) -> bytes:
        for q in queues:
            q.put_nowait(request)
        return b""

    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 100_000)])
    handler = grpc.method_handlers_generic_handler(
        "bench.Fanout",
        {
            "Subscribe": grpc.unary_stream_rpc_method_handler(subscribe),
            "Publish": grpc.unary_unary_rpc_method_handler(publish),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


Record = Callable[[int, int], None]  # (step, t_ns) of one delivery


Close = Callable[[], Awaitable[Any]]


Dial = Callable[[], kcprpc.Client]
"""A new (unconnected) client of the server under test: ``kcprpc.connect(...)`` or another
transport's dial with the same Client (bench/web_fanout.py: ``kcprpc.web.connect_websocket``)."""


async def _kcprpc_subscribers(
    dial: Dial, n: int, batch: int, record: Record, topic: str = TOPIC
) -> tuple[Close, dict[int, int]]:
    """``n`` clients of ``dial`` subscribed to ``topic``; returns their closer and how many landed
    on each server process."""
    clients: list[kcprpc.Client] = []
    where: dict[int, int] = {}  # the server's process id -> sessions

    async def close() -> None:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    def on_tick(t: Tick) -> None:
        record(t.step, t.t_ns)

    try:
        for start in range(0, n, batch):
            chunk = [dial() for _ in range(min(batch, n - start))]
            clients.extend(chunk)
            await asyncio.wait_for(asyncio.gather(*(c.connect() for c in chunk)), 60)
            for c in chunk:
                c.on(Tick, on_tick)
            await asyncio.wait_for(asyncio.gather(*(c.subscribe(topic) for c in chunk)), 60)
            pids = await asyncio.wait_for(
                asyncio.gather(*(c.stub(FanoutService, timeout=30.0).Who() for c in chunk)), 60
            )
            for pid in pids:
                where[pid] = where.get(pid, 0) + 1
    except BaseException:
        await asyncio.wait_for(close(), 10)
        raise
    return close, where


async def _grpc_subscribers(port: int, n: int, batch: int, record: Record) -> Close:
    import grpc

    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(n)]
    tasks: list[asyncio.Task[None]] = []

    async def close() -> None:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)

    async def run(ch: Any, ready: asyncio.Future[None]) -> None:
        call = ch.unary_stream("/bench.Fanout/Subscribe")(b"")
        first = True
        async for msg in call:
            if first:
                ready.set_result(None)
                first = False
                continue
            step, _seq, t_ns = _GRPC_TICK.unpack_from(msg)
            record(step, t_ns)

    try:
        loop = asyncio.get_running_loop()
        for start in range(0, n, batch):
            ready = [loop.create_future() for _ in range(min(batch, n - start))]
            tasks.extend(loop.create_task(run(ch, f)) for ch, f in zip(channels[start:], ready, strict=False))
            await asyncio.wait_for(asyncio.gather(*ready), 60)
    except BaseException:
        await asyncio.wait_for(close(), 10)
        raise
    return close


def _subscriber_proc(
    conn: Connection,
    port: int,
    n: int,
    kind: str,
    mode: str,
    loop_kind: str,
    batch: int,
    dial: Dial | None = None,
    topic: str = TOPIC,
) -> None:
    """``n`` subscribers of ``kind`` (grpcio, else kcprpc clients of ``dial``, default
    ``kcprpc.connect`` to ``port``) on ``topic``, answering the coordinator's commands."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        counts: dict[int, int] = {}
        lats: dict[int, array[int]] = {}  # step -> latencies in µs

        def record(step: int, t_ns: int) -> None:
            us = (time.monotonic_ns() - t_ns) // 1000
            a = lats.get(step)
            if a is None:
                a = lats[step] = array("q")
                counts[step] = 0
            a.append(us)
            counts[step] += 1

        where: dict[int, int] = {}
        if kind == "grpcio":
            close = await _grpc_subscribers(port, n, batch, record)
        else:
            new = dial or (lambda: kcprpc.connect("127.0.0.1", port, transport=_transport(mode)))
            close, where = await _kcprpc_subscribers(new, n, batch, record, topic)
        try:
            conn.send(("ready", n, where))
            for _ in range(100_000):  # bounded: the coordinator sends a few commands per step
                cmd = await _wait_cmd(loop, conn)
                if cmd[0] == "count":
                    conn.send(counts.get(cmd[1], 0))
                elif cmd[0] == "report":
                    conn.send((counts.pop(cmd[1], 0), lats.pop(cmd[1], array("q")).tobytes(), _cpu_s()))
                elif cmd[0] == "cpu":
                    conn.send(_cpu_s())
                else:
                    break
        finally:
            await asyncio.wait_for(close(), 10)

    run_loop(main(), loop_kind)


def _publisher_proc(conn: Connection, port: int, kind: str, mode: str, loop_kind: str, size: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pad = b"p" * size
        async with contextlib.AsyncExitStack() as stack:
            publish: Callable[[int, int, str], Awaitable[Any]]
            where = 0  # the server process the publisher's calls reach (kcprpc)
            if kind == "grpcio":
                import grpc

                ch = await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
                call = ch.unary_unary("/bench.Fanout/Publish")

                def publish(step: int, seq: int, _group: str) -> Awaitable[Any]:
                    return call(_GRPC_TICK.pack(step, seq, time.monotonic_ns()) + pad, timeout=10.0)  # type: ignore[no-any-return]

            else:
                client = await stack.enter_async_context(
                    kcprpc.connect("127.0.0.1", port, transport=_transport(mode))
                )
                stub = client.stub(FanoutService, timeout=10.0)
                where = await stub.Who()

                def publish(step: int, seq: int, group: str) -> Awaitable[Any]:
                    tick = Tick(step=step, seq=seq, t_ns=time.monotonic_ns(), pad=pad)
                    if group:
                        return stub.PublishTo(Publication(group=group, tick=tick))
                    return stub.Publish(tick)

            conn.send(("ready", where))
            for _ in range(1000):  # bounded: one command per step
                cmd = await _wait_cmd(loop, conn)
                if cmd[0] != "publish":
                    break
                _, step, rate, seconds, group = cmd
                total = max(1, int(rate * seconds))
                t0 = time.perf_counter()
                late = 0.0
                call_ms: list[float] = []
                pending: set[asyncio.Task[None]] = set()

                async def one(step: int, seq: int, group: str, out: list[float]) -> None:
                    c0 = time.perf_counter()
                    await publish(step, seq, group)
                    out.append((time.perf_counter() - c0) * 1000)

                for i in range(total):
                    delay = t0 + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    else:
                        late = max(late, -delay)
                    if len(pending) >= MAX_INFLIGHT:  # calls overlap, up to a bound
                        _done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    pending.add(loop.create_task(one(step, i, group, call_ms)))
                # the pace is when the calls went out (at most MAX_INFLIGHT unanswered, so a server
                # that falls behind holds them back), not when the last answer came: one slow answer
                # at the end of a short window is not a publisher that fell behind
                paced = max(total / rate, time.perf_counter() - t0 + 1 / rate)
                if pending:
                    await asyncio.wait(pending, timeout=30)
                rest = t0 + total / rate - time.perf_counter()  # the window is total / rate long
                if rest > 0:
                    await asyncio.sleep(rest)
                call_ms.sort()
                conn.send(
                    {
                        "published": total,
                        "seconds": paced,
                        "max_late_ms": late * 1000,
                        "call_p50_ms": percentile(call_ms, 0.5),
                        "call_max_ms": call_ms[-1],
                    }
                )

    run_loop(main(), loop_kind)


# ----------------------------------------------------------------------------------- coordinator
def _recv(conn: Connection, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"no answer within {timeout:g} s")
    return conn.recv()


class Run:
    """The server, subscriber and publisher processes of one fan-out run (always reaped on exit).

    ``kind`` is the client side (kcprpc, kcprpc-held, kcprpc-coalesce, kcprpc-compat, grpcio); ``label`` names the contender in
    the output. A subclass serves otherwise (bench/scale.py: workers on Redis) by overriding
    :meth:`start_server`, :meth:`server_pids` and :attr:`others`, or adds listeners to the server
    process (:attr:`listen`) and groups of subscribers (bench/web_fanout.py)."""

    def __init__(self, args: argparse.Namespace, kind: str, label: str | None = None) -> None:
        self.args = args
        self.kind = kind
        self.label = label or kind
        self.ctx: Any = mp.get_context("fork")
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        self.srv: Connection | None = None  # the server process's commands (None: no counters)
        self.server_pid = 0
        self.where: dict[int, int] = {}  # server process id -> subscribers it serves
        self.publisher_on = 0  # the server process id the publisher's calls reach
        self.others: dict[str, Callable[[], float]] = {}
        """Other processes whose CPU per delivery each step reports (name -> their CPU seconds so
        far; e.g. a broker's)."""
        self.broker_url: str | None = None  # the server's broker (None: its in-process MemoryBroker)
        self.listen: Listen | None = None  # more listeners in the kcprpc server process
        self.listened: Any = None  # what :attr:`listen` returned (sent back by the server process)
        self.group = ""  # the subscribers' group: the publisher publishes on its topic (group_topic)

    def start(self, target: Any, *a: Any) -> Connection:
        """Start ``target(conn, *a)`` in a child process; return the parent's end of ``conn``."""
        parent: Connection
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=target, args=(child, *a), daemon=True)
        p.start()
        child.close()
        self.procs.append(p)
        self.conns.append(parent)
        return parent

    def start_server(self, kind: str, mode: str, loop: str) -> int:
        """Start the server process; return its UDP (or TCP) port."""
        self.srv = self.start(_server_proc, kind, mode, loop, self.broker_url, self.listen)
        self.server_pid = self.procs[-1].pid
        port = int(_recv(self.srv, 30))
        if self.listen is not None:
            self.listened = _recv(self.srv, 30)
        return port

    def server_pids(self) -> list[int]:
        """The processes whose CPU is the server's."""
        return [self.server_pid]

    def describe(self) -> str:
        """A line on where the sessions landed, printed once they are connected ("": none)."""
        return ""

    def server_cpu_s(self) -> float:
        """The server processes' CPU seconds so far."""
        return sum(proc_cpu_s(pid) for pid in self.server_pids())

    def __enter__(self) -> Run:
        a, kind, mode = self.args, self.kind, self.args.mode
        if kind == "kcprpc-compat":  # kcprpc in kcp-go's packet format, no cipher
            kind, mode = "kcprpc", "compat"
        elif kind == "kcprpc-held":  # the server asks its subscribers to hold their acks
            kind, mode = "kcprpc", "secure-held"
        elif kind == "kcprpc-coalesce":  # the server reads its busy socket every ms (docs/tuning.md)
            kind, mode = "kcprpc", "secure-coalesce"
        loop = "asyncio" if kind == "grpcio" else a.loop  # grpcio's asyncio API wants asyncio's loop
        port = self.start_server(kind, mode, loop)
        t0 = time.perf_counter()
        self.subs, self.n = self.start_subscribers(port, kind, mode, loop)
        self.connect_s = time.perf_counter() - t0
        self.start_publisher(port, kind, mode, loop)
        return self

    def start_publisher(self, port: int, kind: str, mode: str, loop: str) -> None:
        """Start the publisher process (its client to ``port``) and wait until it is connected."""
        self.pub = self.start(_publisher_proc, port, kind, mode, loop, self.args.size)
        self.publisher_on = _recv(self.pub, 30)[1]

    def start_subscribers(
        self, port: int, kind: str, mode: str, loop: str, dial: Dial | None = None, group: str = ""
    ) -> tuple[list[Connection], int]:
        """``--subscribers`` subscribers spread over ``--procs`` processes (kcprpc: clients of
        ``dial``, default ``kcprpc.connect`` to ``port``), subscribed to ``group``'s topic; returns
        their processes' commands and how many subscribed, once all have."""
        a = self.args
        per = [a.subscribers // a.procs + (1 if i < a.subscribers % a.procs else 0) for i in range(a.procs)]
        topic = group_topic(group)
        subs = [self.start(_subscriber_proc, port, k, kind, mode, loop, 50, dial, topic) for k in per]
        total = 0
        for c in subs:
            _ready, n, where = _recv(c, 240)
            total += n
            for pid, count in where.items():
                self.where[pid] = self.where.get(pid, 0) + count
        return subs, total

    def __exit__(self, *exc: object) -> None:
        for c in self.conns:
            with contextlib.suppress(Exception):
                c.send(("stop",))
        deadline = time.monotonic() + 15
        for p in self.procs:
            p.join(max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(2)
            if p.is_alive():
                p.kill()
                p.join(2)
        for c in self.conns:
            c.close()

    def _counters(self) -> dict[str, float] | None:
        return self._ask(self.srv, ("snmp",)) if self.srv is not None else None

    def step(self, step: int, rate: float, seconds: float | None = None) -> dict[str, float]:
        """Publish at ``rate`` for ``seconds`` (``--seconds``), drain, and return the step's figures."""
        a = self.args
        seconds = a.seconds if seconds is None else seconds
        sub_cpu0 = sum(self._ask(c, ("cpu",)) for c in self.subs)
        snmp0, udp0 = self._counters(), udp_rcvbuf_errors()
        other0 = {k: cpu() for k, cpu in self.others.items()}
        cpu0, w0 = self.server_cpu_s(), time.perf_counter()
        self.pub.send(("publish", step, rate, seconds, self.group))
        pub = _recv(self.pub, seconds * 3 + 30)
        cpu1, w1 = self.server_cpu_s(), time.perf_counter()
        other1 = {k: cpu() for k, cpu in self.others.items()}
        sub_cpu1 = sum(self._ask(c, ("cpu",)) for c in self.subs)
        expected = pub["published"] * self.n
        deadline = time.perf_counter() + a.drain
        delivered = 0
        while time.perf_counter() < deadline:
            delivered = sum(self._ask(c, ("count", step)) for c in self.subs)
            if delivered >= expected:
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - w0
        lat: list[float] = []
        delivered = 0
        for c in self.subs:
            cnt, raw, _cpu = self._ask(c, ("report", step))
            delivered += cnt
            arr = array("q")
            arr.frombytes(raw)
            lat.extend(arr)
        snmp1, udp1 = self._counters(), udp_rcvbuf_errors()
        lat.sort()
        ms = [x / 1000 for x in (percentile(lat, 0.5), percentile(lat, 0.99), lat[-1])] if lat else [0.0] * 3
        per_delivery = 1e6 / expected if expected else 0.0  # µs per delivery of one CPU second
        out = {
            "rate": rate,
            "achieved_rate": pub["published"] / pub["seconds"],
            "published": pub["published"],
            "expected": expected,
            "delivered": delivered,
            "ratio": delivered / expected if expected else 0.0,
            "per_s": delivered / elapsed,
            "p50_ms": ms[0],
            "p99_ms": ms[1],
            "max_ms": ms[2],
            "server_cpu_pct": 100 * (cpu1 - cpu0) / (w1 - w0),
            # CPU per delivery over the publish window (the main fan-out figure: docs/BENCHMARKS.md)
            "server_us_per_delivery": (cpu1 - cpu0) * per_delivery,
            "subs_us_per_delivery": (sub_cpu1 - sub_cpu0) * per_delivery,
            **{f"{k}_us_per_delivery": (other1[k] - other0[k]) * per_delivery for k in self.others},
            "server_rss_mb": sum(proc_rss_mb(pid) for pid in self.server_pids()),
            "subs_cpu_pct": 100 * (sub_cpu1 - sub_cpu0) / (w1 - w0),
            "call_p50_ms": pub["call_p50_ms"],
            "call_max_ms": pub["call_max_ms"],
            "udp_rcvbuf_errors": udp1 - udp0,
        }
        if snmp0 is not None and snmp1 is not None:
            out.update({f"srv_{k}": snmp1[k] - snmp0[k] for k in SNMP_KEYS})
            out["srv_publish_ms_per_call"] = (
                1000 * (snmp1["publish_s"] - snmp0["publish_s"]) / pub["published"]
            )
        return out

    @staticmethod
    def _ask(conn: Connection, cmd: tuple[Any, ...]) -> Any:
        conn.send(cmd)
        return _recv(conn, 30)


def delivered_ok(r: dict[str, float]) -> bool:
    """The publisher kept >= 95 % of the step's rate and >= 99 % of the deliveries arrived."""
    return r["achieved_rate"] >= 0.95 * r["rate"] and r["ratio"] >= 0.99


def run_contender(
    args: argparse.Namespace, kind: str, rates: list[float], run: Run | None = None
) -> list[dict[str, float]]:
    """Connect ``kind``'s subscribers once (in ``run``, default ``Run(args, kind)``), step the
    publish rate up; return every step's figures.

    The steps go on while the delivery holds (:func:`delivered_ok`) and p99 stays within 5x the
    limit; after the first failing step, one step at the midpoint to the last good rate."""
    with run or Run(args, kind) as run_:
        return step_rates(args, run_, rates)


def step_rates(
    args: argparse.Namespace, run: Run, rates: list[float], first_step: int = 0
) -> list[dict[str, float]]:
    """Step the publish rate up on the subscribers of ``run`` (started): a warm-up step, then
    :func:`run_contender`'s steps; return every step's figures. The steps are numbered from
    ``first_step`` (subscribers that stay for several rounds count each round's steps apart)."""
    steps: list[dict[str, float]] = []
    kind = run.label
    print(f"# {kind}: {run.n} subscribers connected and subscribed in {run.connect_s:.1f} s", flush=True)
    if run.describe():
        print(f"# {kind}: {run.describe()}", flush=True)
    w = run.step(first_step, rates[0], 1.0)  # warm-up (first-call paths), not reported
    print(f"# {kind}: warm-up 1 s at {rates[0]:g}/s, p99 {w['p99_ms']:.1f} ms (not counted)", flush=True)
    todo = list(rates)
    good: float | None = None
    midpoint_done = False
    for step in range(1, len(rates) + 2):  # bounded: the rates, then one midpoint
        if not todo:
            break
        rate = todo.pop(0)
        r = run.step(first_step + step, rate)
        steps.append(r)
        ok = delivered_ok(r) and r["p99_ms"] <= 5 * args.p99_limit
        verdict = "sustained" if ok and r["p99_ms"] <= args.p99_limit else "delivered" if ok else "FAILED"
        others = "".join(f", {k} {r[f'{k}_us_per_delivery']:.1f} us" for k in run.others)
        print(
            f"{kind:13} rate {rate:5.1f}/s (achieved {r['achieved_rate']:5.1f}): delivered "
            f"{100 * r['ratio']:6.2f} % of {r['expected']:.0f}, {r['per_s']:6.0f} msgs/s, p50 {r['p50_ms']:6.1f} ms "
            f"p99 {r['p99_ms']:6.1f} ms max {r['max_ms']:6.1f} ms | server CPU {r['server_cpu_pct']:5.1f} % "
            f"RSS {r['server_rss_mb']:.0f} MB | subscribers' CPU {r['subs_cpu_pct']:5.1f} % | CPU per delivery: "
            f"server {r['server_us_per_delivery']:.1f} us, subscribers {r['subs_us_per_delivery']:.1f} us"
            f"{others} {verdict}",
            flush=True,
        )
        if args.verbose:
            print("   ", {k: round(v, 2) for k, v in r.items() if k.startswith(("srv_", "udp_", "call_"))})
        if ok:
            good = rate if good is None else max(good, rate)
        elif args.every_rate:
            pass  # every rate of --rates runs (same steps in every run: A/B comparisons)
        else:
            todo = []
            if good is not None and rate - good >= 4 and not midpoint_done:
                todo = [float(round((good + rate) / 2))]
            midpoint_done = True
    return steps


def highest(steps: list[dict[str, float]], p99_limit: float | None) -> dict[str, float] | None:
    """The highest-rate step whose delivery held (and whose p99 is within ``p99_limit`` if given)."""
    ok = [r for r in steps if delivered_ok(r) and (p99_limit is None or r["p99_ms"] <= p99_limit)]
    return max(ok, key=lambda r: r["rate"]) if ok else None


def at_rate(steps: list[dict[str, float]], rate: float) -> dict[str, float] | None:
    """The step at ``rate`` if its delivery held (latency and CPU per delivery compare there: a step
    that falls behind coalesces publishes, and its CPU per delivery falls)."""
    return next((r for r in steps if r["rate"] == rate and delivered_ok(r)), None)


def median_of(vals: list[float | None]) -> float | None:
    """The median of the values given (None: a round without one), None if none is."""
    got = [v for v in vals if v is not None]
    return statistics.median(got) if got else None


def fmt(v: float | None, f: str = ".1f") -> str:
    """``v`` formatted, "n/a" for None."""
    return "n/a" if v is None else format(v, f)


def summary(r: dict[str, float] | None, n: int) -> str:
    """One line of a step's figures (``r``: None, "none")."""
    if r is None:
        return "none"
    return (
        f"{r['rate']:g} publishes/s x {n} = {r['per_s']:.0f} deliveries/s, p50 {r['p50_ms']:.1f} ms, p99 "
        f"{r['p99_ms']:.1f} ms, server CPU {r['server_cpu_pct']:.0f} % of one core, RSS {r['server_rss_mb']:.0f} MB"
    )


def cpu_ratio_lines(results: dict[str, list[list[dict[str, float]]]], rates: list[float]) -> list[str]:
    """The server's CPU per delivery against grpcio's, per rate: the ratio of each round (the two
    contenders ran back to back in it), where both held the rate, and their median."""
    g_rounds = results.get("grpcio")
    if not g_rounds:
        return []
    lines = []
    for kind, rounds in results.items():
        if kind == "grpcio":
            continue
        for rate in rates:
            ratios: list[float | None] = []
            for mine, theirs in zip(rounds, g_rounds, strict=False):
                a, b = at_rate(mine, rate), at_rate(theirs, rate)
                if a is None or b is None or b["server_us_per_delivery"] <= 0:
                    ratios.append(None)
                else:
                    ratios.append(a["server_us_per_delivery"] / b["server_us_per_delivery"])
            med = median_of(ratios)
            lines.append(
                f"{kind} / grpcio server CPU per delivery at {rate:g}/s, per round: "
                + " ".join(fmt(r, ".2f") for r in ratios)
                + f"; median x{fmt(med, '.2f')}"
                + ("" if all(r is not None for r in ratios) else " (n/a: a contender did not hold the rate)")
            )
    return lines


def add_run_args(ap: argparse.ArgumentParser, whose: str = "") -> None:
    """The options of a fan-out run (subscribers, processes, rate steps, limits, rounds, wire mode,
    loop) on ``ap``; :func:`run_args` completes them once parsed. ``whose``: "" or " per side"."""
    ap.add_argument("--quick", action="store_true", help="200 subscribers, 2 processes, rates 10,20, 1 s")
    ap.add_argument("--subscribers", type=int, help=f"default 1000 (--quick: 200){whose}")
    ap.add_argument("--procs", type=int, default=4, help=f"subscriber processes{whose}")
    ap.add_argument("--rates", default="5,10,15,20,30,40,60,80,100", help="publish rates (msgs/s), ascending")
    ap.add_argument("--seconds", type=float, default=3.0, help="publish window per step")
    ap.add_argument("--drain", type=float, default=5.0, help="max wait for deliveries after a step")
    ap.add_argument("--p99-limit", type=float, default=100.0, help="ms: a sustained step's p99 bound")
    ap.add_argument("--size", type=int, default=32, help="padding bytes per message")
    ap.add_argument("--rounds", type=int, default=1, help="rounds; contenders alternate A B, B A")
    ap.add_argument(
        "--mode", choices=["secure", "compat"], default="secure", help="the kcprpc contender's wire mode"
    )
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="kcprpc's event loop")
    ap.add_argument(
        "--every-rate",
        action="store_true",
        help="run every rate of --rates, also after a failed step (A/B runs)",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="publish call times, server KCP counters")


def run_args(args: argparse.Namespace) -> list[float]:
    """Complete the options of :func:`add_run_args` (``--quick``, defaults); return the rates."""
    if args.quick:
        args.subscribers = args.subscribers or 200
        args.procs, args.rates, args.seconds, args.drain = 2, "10,20", 1.0, 3.0
    args.subscribers = args.subscribers or 1000
    args.procs = max(1, min(args.procs, args.subscribers))
    return [float(x) for x in args.rates.split(",")]


def main(argv: list[str] | None = None) -> int:
    """Run the steps of every contender, one line each, then the highest sustained rates."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap)
    ap.add_argument(
        "--contenders",
        default="kcprpc,grpcio",
        help="of kcprpc, kcprpc-held (a server with ServerConfig(ack_hold=200)), kcprpc-coalesce (a server "
        "with IOOptions(read_coalesce_ms=1)), kcprpc-compat (kcp-go's format), grpcio",
    )
    args = ap.parse_args(argv)
    rates = run_args(args)
    contenders = [c for c in args.contenders.split(",") if c]
    if not contenders or any(
        c not in ("kcprpc", "kcprpc-held", "kcprpc-coalesce", "kcprpc-compat", "grpcio") for c in contenders
    ):
        ap.error("--contenders: of kcprpc, kcprpc-held, kcprpc-coalesce, kcprpc-compat, grpcio")
    print(
        f"# push fan-out: 1 publisher process -> 1 topic -> {args.subscribers} subscribers in {args.procs} "
        f"processes; server in its own process; kcprpc mode={args.mode} loop={args.loop}, grpcio asyncio "
        f"(a server stream per subscriber, one TCP connection each); cpus={os.cpu_count()}; {args.seconds:g} s "
        f"per step; sustained = rate kept, >= 99 % delivered and p99 <= {args.p99_limit:g} ms",
        flush=True,
    )
    results: dict[str, list[list[dict[str, float]]]] = {kind: [] for kind in contenders}
    for r in range(args.rounds):  # contenders alternate: A B, B A, ...
        for kind in contenders if r % 2 == 0 else contenders[::-1]:
            results[kind].append(run_contender(args, kind, rates))
    med: dict[str, dict[str, float]] = {}
    for label, limit in ((f"sustained (p99 <= {args.p99_limit:g} ms)", args.p99_limit), ("delivered", None)):
        print(f"# highest {label} rate: rate kept, >= 99 % delivered")
        for kind, rounds in results.items():
            bests = [highest(steps, limit) for steps in rounds]
            for i, b in enumerate(bests):
                print(f"{kind:13} round {i + 1}: {summary(b, args.subscribers)}")
            med.setdefault(kind, {})[label] = statistics.median(b["per_s"] if b else 0.0 for b in bests)
        print("median deliveries/s: " + ", ".join(f"{kind} {m[label]:.0f}" for kind, m in med.items()))
        g = med.get("grpcio", {}).get(label)
        for kind, m in med.items():
            if g and kind != "grpcio":
                print(f"{kind} / grpcio: x{m[label] / g:.2f}")
    for line in cpu_ratio_lines(results, rates):
        print(line)
    if args.every_rate:
        return 0  # a measurement of fixed steps: a failed step is a figure, not an error
    return 0 if all(highest(steps, None) for rounds in results.values() for steps in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
