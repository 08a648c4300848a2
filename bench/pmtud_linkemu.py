"""Path MTU discovery across linkemu with a small link MTU (issue 15, item 4).

    bash bench/pmtud_linkemu.sh [--mtu 1400] [--delay 10]
    bash bench/pmtud_linkemu.sh --mtu 1500 --drop-mtu 1280 --drop-at 5 [--delay 20]

or by hand, as root (LE="$ROOT/../shared/tools/linkemu/linkemu"):

    $LE --name i15mtu up --mtu 1400 --delay 10
    $LE --name i15mtu exec b -- .venv/bin/python bench/pmtud_linkemu.py server &
    $LE --name i15mtu exec a -- .venv/bin/python bench/pmtud_linkemu.py client
    $LE --name i15mtu down

The client dials a secure echo server at 10.77.0.2 and echoes 200 KB writes until its MTU search
completes (or ``--seconds`` pass), printing the session's ``pmtu``, the engine's ``mtu``, the
probe counters and KCP's retransmissions. A TUN MTU of 1400 carries at most 1372 bytes of UDP
payload: the search should end just below it, with no data retransmitted.

``stream`` (the script's ``--drop-mtu``): a 12 s echo stream of 32 KB writes while the script
lowers both TUNs' MTU at ``--drop-at`` seconds, with full-size segments in flight; it prints the
longest stall and the DATA_PART counters.
"""

from __future__ import annotations

import argparse
import asyncio

import kcp
from kcp.demo import echo
from kcp.secure import generate_keypair
from kcp.secure.testing import seeded_rng

PRIV, PUB = generate_keypair(seeded_rng(21))
PSK = bytes(range(32))


async def server(host: str, port: int, seconds: float) -> None:
    lis = await kcp.listen(host, port, kcp.SecureWire(key=PSK, static_private_key=PRIV), on_accept=echo)
    print("listening", flush=True)
    try:
        await asyncio.sleep(seconds)  # the script's lifetime, not synchronisation
    finally:
        lis.close()
        await lis.wait_closed()


async def client(host: str, port: int, seconds: float) -> int:
    loop = asyncio.get_running_loop()
    c = await kcp.dial(host, port, kcp.SecureWire(key=PSK, server_public_key=PUB))
    data = bytes(200_000)
    t0 = loop.time()
    last = None
    try:
        while True:
            c.write(data)
            await asyncio.wait_for(c.readexactly(len(data)), 20)
            st = c.stats
            row = (st["pmtu"], st["pmtud_probes_sent"], st["pmtud_probes_lost"])
            done = st["pmtud_searching"] == 0
            if row != last or done:
                last = row
                print(
                    f"t={loop.time() - t0:5.1f}s pmtu={st['pmtu']} engine_mtu={st['mtu']} "
                    f"probes sent={st['pmtud_probes_sent']} acked={st['pmtud_probes_acked']} "
                    f"lost={st['pmtud_probes_lost']} black_holes={st['pmtud_black_holes']} "
                    f"retrans_segs={st['retrans_segs']}",
                    flush=True,
                )
            if done or loop.time() - t0 > seconds:
                return 0 if done else 1
    finally:
        c.close()
        await c.wait_closed()


async def stream(host: str, port: int, seconds: float) -> int:
    """The MTU-drop run: echo 32 KB writes for ``seconds`` (the shell script lowers the link MTU
    meanwhile) and report the longest gap between two completed echoes (the stall), the bytes
    echoed and the MTU search's and DATA_PART counters."""
    loop = asyncio.get_running_loop()
    c = await kcp.dial(host, port, kcp.SecureWire(key=PSK, server_public_key=PUB))
    data = bytes(range(256)) * 128
    t0 = last = loop.time()
    longest = (0.0, 0.0)
    echoed = 0
    pmtu = None
    try:
        while loop.time() - t0 < seconds:
            c.write(data)
            try:
                got = await asyncio.wait_for(c.readexactly(len(data)), 15)
            except TimeoutError:
                st = c.stats
                keys = (
                    "pmtu",
                    "mtu",
                    "pmtud_black_holes",
                    "pmtud_probes_sent",
                    "pmtud_probes_lost",
                    "pmtud_probes_acked",
                    "pmtud_srtt",
                    "retrans_segs",
                    "secure_payloads_split",
                    "secure_parts_reassembled",
                    "secure_held_back",
                    "out_errs",
                    "send_errors",
                )
                print("STALLED 15 s:", {k: st.get(k) for k in keys}, flush=True)
                return 1
            if got != data:
                print("CORRUPTED echo", flush=True)
                return 2
            now = loop.time()
            echoed += len(got)
            if now - last > longest[0]:
                longest = (now - last, last - t0)
            last = now
            if c.stats["pmtu"] != pmtu:
                pmtu = c.stats["pmtu"]
                print(
                    f"t={now - t0:5.2f}s pmtu={pmtu} black_holes={c.stats['pmtud_black_holes']}", flush=True
                )
        st = c.stats
        print(
            f"echoed {echoed / 1e6:.1f} MB in {loop.time() - t0:.1f} s; longest stall {longest[0] * 1000:.0f} ms "
            f"(from t={longest[1]:.2f}s); pmtu={st['pmtu']} black_holes={st['pmtud_black_holes']} "
            f"probes sent={st['pmtud_probes_sent']} lost={st['pmtud_probes_lost']} srtt={st['pmtud_srtt']} ms; "
            f"payloads split={st['secure_payloads_split']} pieces={st['secure_parts_sent']} "
            f"reassembled (from the server)={st['secure_parts_reassembled']}; retrans_segs={st['retrans_segs']}",
            flush=True,
        )
        return 0
    finally:
        c.close()
        await c.wait_closed()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", choices=("server", "client", "stream"))
    ap.add_argument("--host", default="10.77.0.2")
    ap.add_argument("--port", type=int, default=7400)
    ap.add_argument("--seconds", type=float, default=40.0)
    a = ap.parse_args()
    if a.role == "server":
        asyncio.run(server(a.host, a.port, a.seconds))
        return 0
    if a.role == "stream":
        return asyncio.run(stream(a.host, a.port, a.seconds))
    return asyncio.run(client(a.host, a.port, a.seconds))


if __name__ == "__main__":
    raise SystemExit(main())
