"""Helpers shared by the benchmark scripts: KCP bulk settings and transfer, child processes,
alternating rounds of micro-benchmarks, medians and percentiles.

Not a benchmark: running it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import multiprocessing as mp
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
# the tree whose kcp and kcprpc the benchmark imports: this one, unless bench/ab.py runs a script of
# this tree against an older tree's code (it sets KCPRPC_BENCH_CODE to that tree)
CODE = Path(os.environ.get("KCPRPC_BENCH_CODE") or ROOT)
if str(CODE) not in sys.path:
    sys.path.insert(0, str(CODE))

_T = TypeVar("_T")

BULK_KCP_OPTS: dict[str, Any] = {
    "nodelay": 1,
    "interval": 10,
    "resend": 2,
    "nc": 1,
    "snd_wnd": 1024,
    "rcv_wnd": 1024,
    "mtu": 1400,
    "stream": True,
    "read_buffer": 4 << 20,
}
"""KCP settings of the bulk-transfer benches: nodelay 1/10/2/1, windows 1024, mtu 1400, stream mode."""

CHUNK = 65536
"""Application write size of the bulk benches."""


def run_loop(coro: Coroutine[Any, Any, _T], loop_kind: str = "uvloop") -> _T:
    """Run ``coro`` on uvloop (through :func:`kcp.run`) or on asyncio's default loop."""
    if loop_kind == "uvloop":
        import kcp

        return kcp.run(coro)
    return asyncio.run(coro)


async def sink_bulk(s: Any, total: int) -> int:
    """Read until ``total`` bytes (or EOF) arrived on session ``s``, answer one byte; return bytes read."""
    got = 0
    while got < total:
        data = await s.read(1 << 20)
        if not data:
            break
        got += len(data)
    s.write(b"!")
    await s.drain()
    return got


_PAYLOAD = b"\x5a" * CHUNK


async def write_all(w: Any, total: int) -> None:
    """Write ``total`` bytes to ``w`` in :data:`CHUNK` writes, awaiting ``drain()`` after each."""
    sent = 0
    while sent < total:
        n = min(CHUNK, total - sent)
        w.write(_PAYLOAD if n == CHUNK else _PAYLOAD[:n])
        sent += n
        await w.drain()


async def send_bulk(s: Any, total: int, timeout: float = 120.0) -> float:
    """Write ``total`` bytes with :func:`write_all`, wait for the receiver's one-byte answer;
    return the seconds from the first write to the answer."""
    t0 = time.perf_counter()
    await write_all(s, total)
    ack = await asyncio.wait_for(s.readexactly(1), timeout)
    elapsed = time.perf_counter() - t0
    assert ack == b"!"
    return elapsed


@contextlib.contextmanager
def child_process(target: Callable[..., None], *args: Any, method: str = "fork") -> Iterator[tuple[Any, Any]]:
    """Run ``target(*args, port_q, result_q)`` in a child process; yield ``(port_q, result_q)``.

    On leaving, the child is joined (10 s) and killed if it is still alive.
    """
    ctx: Any = mp.get_context(method)
    port_q: Any = ctx.Queue()
    result_q: Any = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, port_q, result_q))
    p.start()
    try:
        yield port_q, result_q
    finally:
        join_processes([p], 10)


def wait_ready(ready_q: Any, clients: list[Any], others: list[Any], timeout: float) -> list[Any]:
    """One item from ``ready_q`` per client process, within ``timeout`` seconds. A client that dies
    first, or the timeout, ends the run with a message (after stopping ``clients`` and ``others``),
    not with a wait for the whole timeout."""
    items: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(items) < len(clients):
        try:
            items.append(ready_q.get(timeout=1))
        except queue.Empty:
            dead = [c.exitcode for c in clients if not c.is_alive() and c.exitcode]
            if dead or time.monotonic() > deadline:
                join_processes([*clients, *others], 5)
                sys.exit(f"the setup failed (client exit codes {dead}, {len(items)} of {len(clients)} ready)")
    return items


def end_run(
    parent: Any, result_q: Any, clients: list[Any], server: Any
) -> tuple[list[Any], list[float], list[float]]:
    """The clients' results (one dict each, with their ``lats``), then ``"stop"`` to the server over
    ``parent`` and every process joined; returns the results, all latencies sorted, and their 99
    percentiles (zeros with fewer than three)."""
    results = [result_q.get(timeout=60) for _ in clients]
    parent.send("stop")
    join_processes([*clients, server])
    lats = sorted(x for r in results for x in r["lats"])
    return results, lats, statistics.quantiles(lats, n=100) if len(lats) > 2 else [0.0] * 99


def join_processes(procs: list[Any], timeout: float = 30.0) -> None:
    """Join child processes within ``timeout`` seconds in all; kill those still alive then."""
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(2)


def stop_process(proc: subprocess.Popen[str]) -> None:
    """Terminate a server subprocess, wait for it (5 s) and close its stdout pipe."""
    proc.terminate()
    proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


LOADGEN_DIR = Path(__file__).resolve().with_name("loadgen")


def compile_loadgen(name: str, libs: tuple[str, ...] = (), hint: str = "") -> str:
    """``bench/loadgen/NAME.c``, compiled once per version of the load generators' sources (the
    ``.c`` and the shared headers) into the temp directory, with ``$CC`` (default ``cc``) and
    ``libs`` (``-lcrypto`` ...). A missing compiler or a failed compile ends the run with a message,
    ``hint`` (what to install) added to it when the compiler did not find a header or a library."""
    source = LOADGEN_DIR / f"{name}.c"
    if not source.exists():
        sys.exit(f"{source} is missing (run this script from the repository's bench/)")
    h = hashlib.sha256(source.read_bytes())
    for header in sorted(LOADGEN_DIR.glob("*.h")):
        h.update(header.read_bytes())
    exe = Path(tempfile.gettempdir()) / f"kcprpc-{name.replace('_', '-')}-{h.hexdigest()[:12]}"
    if exe.exists():
        return str(exe)
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        sys.exit(f"{source.name} needs a C compiler ({cc!r} not found; Debian: apt-get install gcc)")
    tmp = exe.with_name(f"{exe.name}.{os.getpid()}")
    done = subprocess.run(
        [cc, "-O2", "-o", str(tmp), str(source), *libs], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        # a header or a library not found (gcc's and ld's words): say what to install
        named = hint if "No such file" in done.stderr or "cannot find -l" in done.stderr else ""
        sys.exit(f"compiling {source.name} failed.{named}\n{done.stderr.strip()[-2000:]}")
    os.replace(tmp, exe)
    return str(exe)


class LoadgenProcess:
    """A C load-generator process (bench/loadgen/), shaped like the ``multiprocessing.Process`` of
    a Python client for :func:`wait_ready`, :func:`end_run` and :func:`join_processes`: a thread
    hands each line it prints to :meth:`parse` (which puts its ``ready`` and ``result`` lines on
    the queues, in the Python clients' shapes); :meth:`go` starts its measurement."""

    def __init__(self, argv: list[str], idx: int, ready_q: Any, result_q: Any) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, args=(idx, ready_q, result_q), daemon=True)
        self._reader.start()

    def _read(self, idx: int, ready_q: Any, result_q: Any) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word, *rest = line.split()
            self.parse(word, rest, idx, ready_q, result_q)

    def parse(self, word: str, rest: list[str], idx: int, ready_q: Any, result_q: Any) -> None:
        """One line of the process's output: its first word and the rest."""
        raise NotImplementedError

    def start(self) -> None:
        """Started already (for the Process interface)."""

    def go(self) -> None:
        """Start the measurement window."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self.proc.poll()

    def join(self, timeout: float | None = None) -> None:
        """Close its stdin (after the window: rpc_load.c then closes its connections and exits, so
        that no CLOSE lands in the server's measurement) and wait for it to exit."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()


Contender = tuple[str, int, Callable[[], None]]
"""(label, operations per call, callable) of a micro-benchmark."""


def alternate_rounds(contenders: list[Contender], rounds: int, target_s: float) -> dict[str, list[float]]:
    """Time every contender once per round, rounds in a row (A B C ... A B C ...): µs per operation.

    Calls per round are calibrated first, so that each contender runs about ``target_s`` a round.
    """
    calls: dict[str, int] = {}
    for label, _, fn in contenders:
        t = time.perf_counter()
        n = 0
        while time.perf_counter() - t < 0.02:
            fn()
            n += 1
        calls[label] = max(3, int(target_s / ((time.perf_counter() - t) / n)))
    results: dict[str, list[float]] = {label: [] for label, _, _ in contenders}
    for _ in range(rounds):
        for label, ops, fn in contenders:
            n = calls[label]
            t = time.perf_counter()
            for _ in range(n):
                fn()
            results[label].append((time.perf_counter() - t) / (n * ops) * 1e6)
    return results


def print_rounds(results: dict[str, list[float]], fmt: str = "8.2f", unit: str = "") -> dict[str, float]:
    """Print ``label  median  (min, max)`` per contender; return the medians."""
    width = max(len(label) for label in results)
    for label, vals in results.items():
        print(
            f"  {label:<{width}}  {statistics.median(vals):{fmt}}{unit}   (min {min(vals):.2f}, max {max(vals):.2f})"
        )
    return {label: statistics.median(vals) for label, vals in results.items()}


def medians(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per contender, the median of every figure over its rounds."""
    return {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in results.items()}


def percentile(sorted_vals: list[float], q: float) -> float:
    """The ``q`` (0..1) quantile of an ascending, non-empty list, by index (as the reports always did)."""
    return sorted_vals[min(len(sorted_vals) - 1, int(len(sorted_vals) * q))]


# ------------------------------------------------------------------------- the processes' figures
BENCH_KEY = "bench passphrase"  # the passphrase of the ``key`` wire mode
CLK_TCK = os.sysconf("SC_CLK_TCK")


def transport_for(wire: str) -> Any:
    """The ``kcprpc.Transport`` of a ``--wire``: ``secure`` (keyless, the default), ``key`` (secure
    with :data:`BENCH_KEY`) or ``compat`` (kcp-go's wire, no cipher)."""
    import kcprpc  # here: not every benchmark loads the RPC layer

    if wire == "key":
        return kcprpc.Transport(kcprpc.SecureWire(key=BENCH_KEY))
    if wire == "compat":
        return kcprpc.Transport(kcprpc.CompatWire())
    return kcprpc.Transport()


def proc_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` in seconds (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def udp_rcvbuf_errors() -> int:
    """The machine's UDP RcvbufErrors counter (/proc/net/snmp; system-wide)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def gc_pauses() -> dict[str, float]:
    """Time this process's garbage collections from now on: the returned dict's ``n`` (runs),
    ``total`` and ``max`` (seconds) grow with each; a caller may reset them between reports."""
    import gc

    stats = {"t0": 0.0, "max": 0.0, "total": 0.0, "n": 0.0}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            stats["t0"] = time.perf_counter()
        else:
            d = time.perf_counter() - stats["t0"]
            stats["total"] += d
            stats["n"] += 1
            stats["max"] = max(stats["max"], d)

    gc.callbacks.append(on_gc)
    return stats
