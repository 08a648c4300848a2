"""A compat-mode KCP echo server for the TypeScript session tests (clients/typescript/test/kcp_session.test.ts).

Usage: python tests/clients/kcp_echo_server.py CRYPT KEY DATA_SHARDS PARITY_SHARDS

Listens on 127.0.0.1 (a free port), prints the port on its first line, then echoes every
session's stream bytes and out-of-band datagrams back to it, until it is killed.
"""

from __future__ import annotations

import asyncio
import sys

import kcp


async def echo(session: kcp.KCPSession) -> None:
    async def datagrams() -> None:
        while True:
            try:
                d = await session.recv_datagram()
            except kcp.ConnectionClosedError:
                return
            session.send_datagram(d)

    task = asyncio.create_task(datagrams())
    try:
        while True:
            data = await session.read(65536)
            if not data:
                return
            session.write(data)
            await session.drain()
    finally:
        task.cancel()


async def main(crypt: str, key: str, ds: int, ps: int) -> None:
    wire = kcp.CompatWire(crypt=crypt, key=key, fec=(ds, ps))
    listener = await kcp.listen("127.0.0.1", 0, wire, on_accept=echo)
    async with listener:
        print(listener.address[1], flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    kcp.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
