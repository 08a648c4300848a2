"""A KCP session with ``congestion="bbr"`` over real loopback UDP: the data arrives intact and the
controller measured the path (a bandwidth, a minimum RTT, out of STARTUP)."""

from __future__ import annotations

import asyncio
import hashlib
import random

import kcp
from kcp.demo import echo

TIMEOUT = 20.0


async def test_bbr_session_bulk_echo() -> None:
    lis = await kcp.listen("127.0.0.1", 0, on_accept=echo)
    try:
        port = lis.address[1]
        c = await kcp.dial("127.0.0.1", port, session=kcp.SessionConfig(congestion="bbr"))
        size = 2 << 20
        payload = random.Random(5).randbytes(size)

        async def reader() -> bytes:
            parts = []
            got = 0
            while got < size:
                chunk = await c.read(65536)
                assert chunk, "session ended early"
                parts.append(chunk)
                got += len(chunk)
            return b"".join(parts)

        task = asyncio.create_task(reader())
        for i in range(0, size, 1 << 18):  # large writes: the sender always has data waiting
            c.write(payload[i : i + (1 << 18)])
            await asyncio.wait_for(c.drain(), TIMEOUT)
        echoed = await asyncio.wait_for(task, TIMEOUT)
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
        cc = c.congestion_controller
        assert cc is not None
        assert cc.bw > 0 and cc.rounds > 0 and cc.pacing_rate > 0
        c.close()
        await asyncio.wait_for(c.wait_closed(), TIMEOUT)
    finally:
        lis.close()
        await lis.wait_closed()


async def test_ikcp_is_the_default_and_has_no_controller() -> None:
    lis = await kcp.listen("127.0.0.1", 0, on_accept=echo)
    try:
        c = await kcp.dial("127.0.0.1", lis.address[1])
        assert c.config.congestion == "ikcp"
        assert c.congestion_controller is None
        c.abort()
    finally:
        lis.close()
        await lis.wait_closed()
