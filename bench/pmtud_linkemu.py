"""Path MTU discovery across linkemu with a small link MTU (issue 15, item 4).

    bash bench/pmtud_linkemu.sh [--mtu 1400] [--delay 10]

or by hand, as root (LE="$ROOT/../shared/tools/linkemu/linkemu"):

    $LE --name i15mtu up --mtu 1400 --delay 10
    $LE --name i15mtu exec b -- .venv/bin/python bench/pmtud_linkemu.py server &
    $LE --name i15mtu exec a -- .venv/bin/python bench/pmtud_linkemu.py client
    $LE --name i15mtu down

The client dials a secure echo server at 10.77.0.2 and echoes 200 KB writes until its MTU search
completes (or ``--seconds`` pass), printing the session's ``pmtu``, the engine's ``mtu``, the
probe counters and KCP's retransmissions. A TUN MTU of 1400 carries at most 1372 bytes of UDP
payload: the search should end just below it, with no data retransmitted.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", choices=("server", "client"))
    ap.add_argument("--host", default="10.77.0.2")
    ap.add_argument("--port", type=int, default=7400)
    ap.add_argument("--seconds", type=float, default=40.0)
    a = ap.parse_args()
    if a.role == "server":
        asyncio.run(server(a.host, a.port, a.seconds))
        return 0
    return asyncio.run(client(a.host, a.port, a.seconds))


if __name__ == "__main__":
    raise SystemExit(main())
