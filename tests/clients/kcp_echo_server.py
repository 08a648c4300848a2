"""A compat-mode KCP echo server for the TypeScript session tests (clients/typescript/test/kcp_session.test.ts).

Usage: python tests/clients/kcp_echo_server.py CRYPT KEY DATA_SHARDS PARITY_SHARDS [LOSS_PERCENT [DELAY_MS
[RATE_KBPS QUEUE_MS [sink]]]]

CRYPT is a kcptun cipher name for a compat server, or ``secure`` for a secure-wire server with
passphrase KEY.

Listens on 127.0.0.1 (a free port), prints the port on its first line, then echoes every
session's stream bytes and out-of-band datagrams back to it, until it is killed. With
LOSS_PERCENT, the printed port is that of a :class:`kcp.relay.LossyRelay` in front of the
listener, dropping that share of datagrams each way (seeded, 2 ms delay), and with RATE_KBPS a
bottleneck of that rate each way, with a tail-drop queue of QUEUE_MS. ``sink`` answers a stream
with one byte per 16,384 bytes it received instead of echoing it (bulk uploads, whose acks must
not queue behind an echo on the way back).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import kcp
from kcp.relay import LossyRelay

sys.path.append(str(Path(__file__).resolve().parents[2]))  # the checkout, after an installed kcp
from tests.clients.echo_session import Outcome, echo

SINK_UNIT = 16384


async def sink(session: kcp.KCPSession) -> None:
    """Read and count ``session``'s stream: one byte back per :data:`SINK_UNIT` bytes received."""
    received = 0

    async def count(s: kcp.KCPSession, data: bytes) -> Outcome:
        nonlocal received
        before = received // SINK_UNIT
        received += len(data)
        if received // SINK_UNIT > before:
            s.write(b"." * (received // SINK_UNIT - before))
        return "next"

    await echo(session, count)


async def main(
    crypt: str,
    key: str,
    ds: int,
    ps: int,
    loss: float | None,
    delay: float = 2.0,
    rate: tuple[float, float] = (0, 50),
    mode: str = "echo",
) -> None:
    wire: kcp.CompatWire | kcp.SecureWire
    if crypt == "secure":  # a secure-wire server (what a compat dial must recognise by its hint)
        wire = kcp.SecureWire(key=key, fec=(ds, ps))
    else:
        wire = kcp.CompatWire(crypt=crypt, key=key, fec=(ds, ps))
    listener = await kcp.listen("127.0.0.1", 0, wire, on_accept=sink if mode == "sink" else echo)
    async with listener:
        if loss is None:
            print(listener.address[1], flush=True)
            await asyncio.Event().wait()
            return
        relay = LossyRelay(
            target=listener.address, loss=loss, delay=delay, rate=rate[0], queue=rate[1], seed=7
        )
        async with relay:
            print(relay.address[1], flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    a = sys.argv
    loss, delay = (float(a[5]) if len(a) > 5 else None), (float(a[6]) if len(a) > 6 else 2.0)
    rate = (float(a[7]), float(a[8])) if len(a) > 8 else (0.0, 50.0)
    kcp.run(main(a[1], a[2], int(a[3]), int(a[4]), loss, delay, rate, a[9] if len(a) > 9 else "echo"))
