"""Raw UDP datagram throughput from Python over loopback, two processes: the physical limit.

Contenders (1400-byte datagrams, sender and receiver in separate processes):

* ``blocking``: blocking ``sendto`` / ``recvfrom``, one datagram per system call;
* ``mmsg``: ``sendmmsg`` / ``recvmmsg`` through :class:`kcp.batch.DatagramIO`, batches of 64;
* ``gso``: the same with UDP GSO (each ``sendmmsg`` message carries a run of up to 46 datagrams
  that the kernel splits), the ceiling for any Python UDP sender here.

The sender blasts for ``--seconds``; the rate is what the receiver got (datagrams the kernel
dropped because the receiver fell behind do not count). Rounds alternate the contenders
(A B A B) and the report gives medians::

    python bench/udp_raw.py --quick
"""

from __future__ import annotations

import argparse
import select
import time
from typing import Any

from _common import child_process, medians

from kcp.batch import DatagramIO, open_udp_socket

SIZE = 1400


def _receiver(kind: str, seconds: float, port_q: Any, result_q: Any) -> None:
    sock = open_udp_socket("127.0.0.1", 0)
    port_q.put(sock.getsockname()[1])
    count = 0
    first = last = 0.0
    deadline = time.monotonic() + seconds + 5
    io = DatagramIO(sock, batch=64, gso=False) if kind != "blocking" else None
    sock.setblocking(io is None)
    if io is None:
        sock.settimeout(0.3)
    while time.monotonic() < deadline:
        if io is None:
            try:
                sock.recvfrom(2048)
            except TimeoutError:
                if count:
                    break
                continue
            n = 1
        else:
            r, _, _ = select.select([sock], [], [], 0.3)
            if not r:
                if count:
                    break
                continue
            n = len(io.recv())
        now = time.perf_counter()
        if not count:
            first = now
        count += n
        last = now
    sock.close()
    result_q.put((count, max(last - first, 1e-9)))


def _sender(kind: str, port: int, seconds: float) -> int:
    sock = open_udp_socket("127.0.0.1", 0)
    addr = ("127.0.0.1", port)
    payload = b"x" * SIZE
    sent = 0
    end = time.perf_counter() + seconds
    if kind == "blocking":
        sock.setblocking(True)
        while time.perf_counter() < end:
            for _ in range(64):
                sock.sendto(payload, addr)
            sent += 64
    else:
        io = DatagramIO(sock, batch=64, gso=kind == "gso")
        batch = [(payload, addr)] * 64
        while time.perf_counter() < end:
            n = io.send(batch)
            sent += n
            if n < 64:
                select.select([], [sock], [], 0.1)
    sock.close()
    return sent


def run(kind: str, seconds: float) -> dict[str, float]:
    """One round of ``kind`` (``blocking``, ``mmsg`` or ``gso``): received datagrams/s and MB/s."""
    with child_process(_receiver, kind, seconds) as (port_q, result_q):
        port = port_q.get(timeout=10)
        sent = _sender(kind, port, seconds)
        count, elapsed = result_q.get(timeout=seconds + 15)
    rate = count / elapsed
    return {"dgram_s": rate, "mb_s": rate * SIZE / 1e6, "loss": 1 - count / max(sent, 1)}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the rounds and print medians; returns them for other benches."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 rounds of 1 s")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args(argv)
    rounds, seconds = (2, 1.0) if args.quick else (args.rounds, args.seconds)
    results: dict[str, list[dict[str, float]]] = {"blocking": [], "mmsg": [], "gso": []}
    for _ in range(rounds):
        for kind in results:
            results[kind].append(run(kind, seconds))
    out = medians(results)
    for kind, rs in results.items():
        med = out[kind]
        print(
            f"{kind:9} {med['dgram_s'] / 1e3:8.1f} k dgram/s  {med['mb_s']:7.1f} MB/s  "
            f"(sender-side loss {med['loss'] * 100:4.1f} %)  rounds: "
            + " ".join(f"{r['dgram_s'] / 1e3:.0f}k" for r in rs)
        )
    print(
        f"mmsg / blocking: {out['mmsg']['dgram_s'] / out['blocking']['dgram_s']:.2f}x, "
        f"gso / blocking: {out['gso']['dgram_s'] / out['blocking']['dgram_s']:.2f}x"
    )
    return out


if __name__ == "__main__":
    main()
