"""Engine throughput: our pure-Python KCP engine against C ikcp (siokcp), in-process.

Both engines run the same loop over an in-memory link with a virtual clock (1 ms per round):
the sender queues messages while ``waitsnd() < 2 * wnd``, updates, its datagrams go to the
receiver (seeded loss pattern for the lossy runs), which inputs, flushes (acks) and reads
everything; the acks go back, the sender inputs and flushes. Settings: nodelay 1/10/2/1,
wndsize 1024/1024, mtu 1400, message mode. Contenders alternate (A B A B ...) and the report
gives the median of the rounds and the ratio ours/ikcp measured in the same run.

    python bench/engine.py            # full: 4 rounds x 4 cases
    python bench/engine.py --quick    # fewer messages, 2 rounds
    python bench/engine.py --cpu      # time each run by this process's CPU time, not the wall clock
                                      # (less sensitive to other processes on a shared machine)
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kcp.engine import KCP

CONV = 0x01020304


class _IKCP:
    """siokcp's KCPConnection with our method names (adds one Python call per operation)."""

    __slots__ = ("c", "flush", "input", "recv", "send", "update", "waitsnd")

    def __init__(self, conv: int, output: Callable[[bytes], Any]) -> None:
        from siokcp import KCPConnection

        def out(d: bytes) -> int:
            output(d)
            return 0

        c = KCPConnection(conv, out, lambda s: None)
        self.c = c
        self.send = c.send
        self.input = c.receive_data
        self.recv = c.next_event
        self.update = c.update
        self.flush = c.flush
        self.waitsnd = c.waitsnd


def _make(kind: str, output: Callable[[bytes], Any], stream: bool = False) -> Any:
    eng: Any = KCP(CONV, output) if kind == "ours" else _IKCP(CONV, output)
    target = eng if kind == "ours" else eng.c
    target.nodelay(1, 10, 2, 1)
    target.wndsize(1024, 1024)
    target.stream = int(stream)
    return eng


def run_once(
    kind: str,
    size: int,
    count: int,
    loss: float,
    seed: int = 1,
    stream: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Move ``count`` messages of ``size`` bytes one way; return the seconds ``clock`` measured
    (wall seconds by default).

    In stream mode the receiver counts bytes (``count * size`` of them) instead of messages.
    """
    a_out: list[bytes] = []
    b_out: list[bytes] = []
    a = _make(kind, a_out.append, stream)
    b = _make(kind, b_out.append, stream)
    rng = random.Random(seed)
    pattern = [rng.random() < loss for _ in range(4093)] if loss else None
    pi = 0
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    a_send, a_update, a_input, a_flush, a_waitsnd = a.send, a.update, a.input, a.flush, a.waitsnd
    b_input, b_flush, b_recv, b_update = b.input, b.flush, b.recv, b.update
    limit = 2048
    now = 0
    sent = 0
    received = 0
    gc.collect()
    t0 = clock()
    target = count * size if stream else count
    while received < target:
        while sent < count and a_waitsnd() < limit:
            a_send(payload)
            sent += 1
        a_update(now)
        b_update(now)
        if a_out:
            for d in a_out:
                if pattern is not None:
                    pi += 1
                    if pattern[pi % 4093]:
                        continue
                b_input(d)
            a_out.clear()
            b_flush()
            while True:
                m = b_recv()
                if m is None:
                    break
                received += len(m) if stream else 1
        if b_out:
            for d in b_out:
                if pattern is not None:
                    pi += 1
                    if pattern[pi % 4093]:
                        continue
                a_input(d)
            b_out.clear()
            a_flush()
        now += 1
        if now > 10_000_000:
            raise RuntimeError("stalled")
    return clock() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run for CI / smoke")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--stream", action="store_true", help="stream mode (byte stream) instead of messages")
    ap.add_argument(
        "--cpu", action="store_true", help="time runs by this process's CPU time instead of the wall clock"
    )
    args = ap.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 4)
    scale = 0.1 if args.quick else 1.0
    cases = [
        ("1 KiB, 0% loss", 1024, int(40000 * scale), 0.0),
        ("64 B, 0% loss", 64, int(200000 * scale), 0.0),
        ("1 KiB, 10% loss", 1024, int(20000 * scale), 0.1),
        ("64 B, 10% loss", 64, int(100000 * scale), 0.1),
    ]
    mode = "stream" if args.stream else "message"
    clock = time.process_time if args.cpu else time.perf_counter
    print(
        f"engine bench: {mode} mode, nodelay 1/10/2/1, wnd 1024, {rounds} rounds alternating ours/ikcp, median"
        + (" (CPU time)" if args.cpu else "")
    )
    print(
        f"{'case':18} {'ikcp msg/s':>12} {'ikcp MB/s':>10} {'ours msg/s':>12} {'ours MB/s':>10} {'ours/ikcp':>9}"
    )
    for name, size, count, loss in cases:
        times: dict[str, list[float]] = {"ikcp": [], "ours": []}
        for r in range(rounds):
            order = ("ikcp", "ours") if r % 2 == 0 else ("ours", "ikcp")
            for kind in order:
                times[kind].append(
                    run_once(kind, size, count, loss, seed=r + 1, stream=args.stream, clock=clock)
                )
        med = {k: statistics.median(v) for k, v in times.items()}
        rate = {k: count / med[k] for k in med}
        mbs = {k: count * size / med[k] / 1e6 for k in med}
        print(
            f"{name:18} {rate['ikcp']:12,.0f} {mbs['ikcp']:10.1f} {rate['ours']:12,.0f} {mbs['ours']:10.1f}"
            f" {rate['ours'] / rate['ikcp']:9.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
