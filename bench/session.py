"""Bulk throughput of one KCP session over loopback UDP, sender and receiver in two processes.

Contenders, alternated round by round (A B C ... A B C ...), medians reported:

* ``ours``: :func:`kcp.dial` / :func:`kcp.listen`, no crypt, no FEC (defaults: recvmmsg, and
  sendmmsg with UDP GSO where the kernel has it);
* ``ours-nogso``: the same without GSO (``gso=False``);
* ``ours-nommsg``: plain recvfrom/sendto, one datagram per system call (``mmsg=False, gso=False``);
* ``ours-aes-fec``: aes + FEC (10, 3);
* ``siokcp``: skywind3000's C ikcp (siokcp ``KCPConnection``) driven by a plain asyncio datagram
  endpoint (update every interval, one flush per loop iteration after inputs/sends, ``current``
  refreshed before each input as kcp-go does, the same 4 MiB socket buffers and loop type as ours);
* ``udp-blocking``, ``udp-mmsg``, ``udp-gso``: raw datagram throughput (``bench/udp_raw.py``).

KCP settings everywhere: nodelay 1/10/2/1, windows 512/512 (``--wnd``), mtu 1400, stream mode. The sender
writes ``--mbytes`` MB in 64 KiB writes (waiting for ``drain()``/the send window) and the
receiver answers one byte once it has everything; the time is first write to that answer. The
report also gives system calls per datagram on each end (from :class:`kcp.stats.Counters`)::

    python bench/session.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from _common import BULK_KCP_OPTS, CHUNK, child_process, run_loop, send_bulk, sink_bulk

import kcp
from kcp.batch import open_udp_socket
from kcp.session import KCPSession

KCP_OPTS: dict[str, Any] = {**BULK_KCP_OPTS, "idle_timeout": 60.0}


def _variant(name: str) -> dict[str, Any]:
    """kcp.dial/listen's wire, session and io for one contender."""
    out: dict[str, Any] = {"session": kcp.SessionConfig(**KCP_OPTS)}
    if name == "ours-aes-fec":
        out["wire"] = kcp.CompatWire(crypt="aes", key="bench", fec=(10, 3))
    elif name == "ours-nommsg":
        out["io"] = kcp.IOOptions(mmsg=False, gso=False)
    elif name == "ours-nogso":
        out["io"] = kcp.IOOptions(gso=False)
    return out


# ---------------------------------------------------------------------------------------- ours
def _ours_receiver(name: str, total: int, loop_kind: str, port_q: Any, result_q: Any) -> None:
    async def main() -> None:
        done = asyncio.get_running_loop().create_future()

        async def sink(s: KCPSession) -> None:
            await sink_bulk(s, total)
            done.set_result(s.stats)

        lis = await kcp.listen("127.0.0.1", 0, on_accept=sink, **_variant(name))
        port_q.put(lis.address[1])
        sess_stats = await asyncio.wait_for(done, 120)
        await asyncio.sleep(0.2)  # let the last acks leave before closing (bench only)
        result_q.put({"listener": lis.stats, "session": sess_stats})
        lis.close()

    run_loop(main(), loop_kind)


async def _ours_sender(name: str, port: int, total: int) -> dict[str, Any]:
    s = await kcp.dial("127.0.0.1", port, **_variant(name))
    elapsed = await send_bulk(s, total)
    ep = s.endpoint_counters.snapshot()
    st = s.stats
    s.abort()
    return {"elapsed": elapsed, "endpoint": ep, "session": st}


# -------------------------------------------------------------------------------------- siokcp
class _SioEnd(asyncio.DatagramProtocol):
    """C ikcp (siokcp) driven by an asyncio datagram endpoint: the simple, usual way."""

    def __init__(self, conv: int, on_data: Any, remote: Any = None) -> None:
        from siokcp import KCPConnection

        self.kcp = KCPConnection(conv, self._out, lambda s: None)
        self.kcp.nodelay(1, 10, 2, 1)
        self.kcp.wndsize(KCP_OPTS["snd_wnd"], KCP_OPTS["rcv_wnd"])
        self.kcp.setmtu(1400)
        self.kcp.stream = 1
        self.remote = remote
        self.on_data = on_data
        self.transport: Any = None
        self.loop = asyncio.get_running_loop()
        self.writable = asyncio.Event()
        self.pkts_in = self.pkts_out = 0
        self.scheduled = False
        self._tick()

    def _out(self, data: bytes) -> int:
        self.pkts_out += 1
        self.transport.sendto(data, self.remote)
        return 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def _now(self) -> int:
        return int(time.monotonic() * 1000) & 0xFFFFFFFF

    def _tick(self) -> None:
        self.kcp.update(self._now())
        self._after()
        self.loop.call_later(0.01, self._tick)

    def _after(self) -> None:
        if self.kcp.waitsnd() < 2 * KCP_OPTS["snd_wnd"]:
            self.writable.set()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.pkts_in += 1
        if self.remote is None:
            self.remote = addr
        self.kcp.current = self._now()  # as kcp-go does before every input
        self.kcp.receive_data(data)
        self._schedule()

    def _schedule(self) -> None:
        # one flush per loop iteration for everything received or written in it (as aioquic does)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.scheduled = False
        self.kcp.current = self._now()
        self.kcp.flush()
        while True:
            m = self.kcp.next_event()
            if m is None:
                break
            self.on_data(m)
        self._after()

    def send(self, data: bytes) -> None:
        self.kcp.send(data)
        self._schedule()


def _sio_receiver(name: str, total: int, loop_kind: str, port_q: Any, result_q: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        state = {"got": 0}
        end: list[_SioEnd] = []

        def on_data(m: bytes) -> None:
            state["got"] += len(m)
            if state["got"] >= total and not done.done():
                end[0].send(b"!")
                done.set_result(None)

        # the same 4 MiB socket buffers as ours
        tr, proto = await loop.create_datagram_endpoint(
            lambda: _SioEnd(1, on_data), sock=open_udp_socket("127.0.0.1", 0)
        )
        end.append(proto)
        port_q.put(tr.get_extra_info("sockname")[1])
        await asyncio.wait_for(done, 120)
        await asyncio.sleep(0.2)
        result_q.put({"pkts_in": proto.pkts_in, "pkts_out": proto.pkts_out})
        tr.close()

    run_loop(main(), loop_kind)


async def _sio_sender(name: str, port: int, total: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    acked = loop.create_future()

    def on_data(m: bytes) -> None:
        if not acked.done():
            acked.set_result(m)

    sock = open_udp_socket("127.0.0.1", 0)
    tr, proto = await loop.create_datagram_endpoint(
        lambda: _SioEnd(1, on_data, ("127.0.0.1", port)), sock=sock
    )
    payload = b"\x5a" * CHUNK
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        if proto.kcp.waitsnd() >= 2 * KCP_OPTS["snd_wnd"]:
            proto.writable.clear()
            await proto.writable.wait()
            continue
        n = min(CHUNK, total - sent)
        proto.send(payload[:n])
        sent += n
        await asyncio.sleep(0)
    await asyncio.wait_for(acked, 120)
    elapsed = time.perf_counter() - t0
    tr.close()
    return {"elapsed": elapsed}


# ---------------------------------------------------------------------------------------- runner
def one_round(name: str, total: int, loop_kind: str) -> dict[str, Any]:
    """Run one transfer of ``total`` bytes with contender ``name``."""
    if name.startswith("udp-"):
        import udp_raw

        r = udp_raw.run(name[4:], 1.0)
        return {"mb_s": r["mb_s"], "dgram_s": r["dgram_s"]}
    target = _sio_receiver if name == "siokcp" else _ours_receiver
    with child_process(target, name, total, loop_kind) as (port_q, result_q):
        port = port_q.get(timeout=20)
        sender = _sio_sender if name == "siokcp" else _ours_sender
        res: dict[str, Any] = run_loop(sender(name, port, total), loop_kind)
        res["receiver"] = result_q.get(timeout=60)
    res["mb_s"] = total / res["elapsed"] / 1e6
    if "endpoint" in res:
        ep = res["endpoint"]
        lst = res["receiver"]["listener"]
        res["sender_sys_per_dgram"] = (ep["send_syscalls"] + ep["recv_syscalls"]) / max(
            ep["out_pkts"] + ep["in_pkts"], 1
        )
        res["receiver_sys_per_dgram"] = (lst["send_syscalls"] + lst["recv_syscalls"]) / max(
            lst["out_pkts"] + lst["in_pkts"], 1
        )
        res["dgram_s"] = (ep["out_pkts"]) / res["elapsed"]
        res["retrans"] = res["session"]["retrans_segs"]
    return res


def main(argv: list[str] | None = None) -> None:
    """Alternate the contenders and print medians and ratios."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 rounds, 8 MB (4 MB with aes+FEC)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mbytes", type=float, default=32.0)
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--wnd", type=int, default=512, help="KCP send/receive windows (segments)")
    p.add_argument(
        "--only",
        default="ours,ours-nogso,ours-nommsg,ours-aes-fec,siokcp,udp-blocking,udp-mmsg,udp-gso",
        help="contenders",
    )
    args = p.parse_args(argv)
    rounds, mbytes = (2, 8.0) if args.quick else (args.rounds, args.mbytes)
    KCP_OPTS["snd_wnd"] = KCP_OPTS["rcv_wnd"] = args.wnd
    names = args.only.split(",")
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names:
            total = int(mbytes * 1e6 / (2 if name == "ours-aes-fec" else 1))
            res = one_round(name, total, args.loop)
            results[name].append(res)
            extra = ""
            if "sender_sys_per_dgram" in res:
                extra = (
                    f" syscalls/dgram sender {res['sender_sys_per_dgram']:.3f} "
                    f"receiver {res['receiver_sys_per_dgram']:.3f} retrans {res['retrans']}"
                )
            print(f"round {r + 1} {name:13} {res['mb_s']:7.1f} MB/s{extra}", flush=True)
    med = {n: statistics.median(x["mb_s"] for x in rs) for n, rs in results.items()}
    print(f"\nmedians over {rounds} rounds ({args.loop}, {mbytes:g} MB per KCP transfer):")
    for n, v in med.items():
        line = f"  {n:13} {v:7.1f} MB/s"
        rs = results[n]
        if "sender_sys_per_dgram" in rs[0]:
            s_ = statistics.median(x["sender_sys_per_dgram"] for x in rs)
            r_ = statistics.median(x["receiver_sys_per_dgram"] for x in rs)
            line += f"   syscalls/datagram: sender {s_:.3f}, receiver {r_:.3f}"
        print(line)
    base = med.get("udp-blocking")
    for n in ("ours", "ours-nogso", "ours-nommsg", "ours-aes-fec"):
        if n in med:
            parts = []
            if "siokcp" in med:
                parts.append(f"{med[n] / med['siokcp']:.2f}x siokcp")
            if base:
                parts.append(f"{med[n] / base * 100:.0f} % of raw UDP (blocking)")
            for raw in ("udp-mmsg", "udp-gso"):
                if raw in med:
                    parts.append(f"{med[n] / med[raw] * 100:.0f} % of raw UDP ({raw[4:]})")
            print(f"  {n}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
