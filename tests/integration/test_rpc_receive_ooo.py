"""A client that holds the key and never fills a hole: it drops one of its own KCP segments for good
and goes on sending, so the server holds every segment after it out of order, up to its receive
window (about 700 KB a connection), and nothing reaches the mux or the RPC layer. Many such
connections together pass ``ServerConfig.max_receive_total``. The KCP session reports its
out-of-order buffer as it grows (``KCPSession.watch_receive``), so the server counts and sheds
them at once, not at its periodic count (every fourth heartbeat sweep): here the sweep never runs
within the test (a 30 s heartbeat interval). An ended session drops what it held out of order at
once. An honest client goes on calling."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_rpc_support import Demo, Probe, Req

import kcp
import kcprpc
from kcp.engine import SEGMENT_HEADER
from kcprpc import ClientConfig, HeartbeatConfig, ServerConfig, Status, Transport
from kcprpc.net import MuxConnection, dial

KEY = "out of order hoard"
MiB = 1024 * 1024
SLOW = HeartbeatConfig(interval=30.0, timeout=120.0)  # no sweep, no heartbeat timeout in the test
TIMEOUT = 20.0


def _drop_sn(session: Any, hole: int) -> None:
    """Make a client's KCP session lose segment ``hole`` on every send, and never give up on it."""
    eng = session._engine
    out = eng.output
    eng.dead_link = 1 << 30

    def output(d: bytes) -> None:
        off = 0
        while off + SEGMENT_HEADER.size <= len(d):
            _c, cmd, _f, _w, _ts, sn, _u, ln = SEGMENT_HEADER.unpack_from(d, off)
            if cmd == 81 and sn == hole:
                return
            off += SEGMENT_HEADER.size + ln
        out(d)

    eng.output = output


async def _hoarder(host: str, port: int) -> tuple[kcprpc.Client, Any]:
    conns: list[MuxConnection] = []

    async def connector() -> MuxConnection:
        c = await dial(host, port, Transport(kcprpc.SecureWire(key=KEY)))
        conns.append(c)
        return c

    client = kcprpc.Client(connector, config=ClientConfig(heartbeat=SLOW))
    await client.__aenter__()
    assert (await client.stub(Demo, timeout=TIMEOUT).hello(Req(name="h"))).text == "hello h"
    session = conns[0].datagrams
    _drop_sn(session, session._engine.snd_nxt)
    for _ in range(4):  # (a stream's window is 256 KiB: the mux lets no more out unacknowledged)
        stream = await conns[0].open_stream()
        stream.write(bytes(256 * 1024))  # all of it after the lost segment: held out of order
    return client, session


async def test_out_of_order_hoards_are_shed_as_they_grow() -> None:
    config = ServerConfig(max_receive_total=5 * MiB, heartbeat=SLOW)
    server = kcprpc.Server([Demo(Probe())], "127.0.0.1", 0, key=KEY, config=config)
    host, port = await server.start()
    hoarders: list[tuple[kcprpc.Client, Any]] = []
    async with server:
        honest = kcprpc.Client(
            lambda: dial(host, port, Transport(kcprpc.SecureWire(key=KEY))),
            config=ClientConfig(heartbeat=SLOW),
        )
        async with honest:
            d = honest.stub(Demo, timeout=TIMEOUT)
            assert (await d.hello(Req(name="before"))).text == "hello before"
            try:
                kcp_sessions: set[Any] = set()  # the server's side of every connection
                for _ in range(12):  # 12 x ~700 KB held: 8.4 MB, over the 5 MiB bound
                    hoarders.append(await _hoarder(host, port))
                    kcp_sessions.update(server._listener.listener.sessions.values())
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10.0
                while server.stats["receive_shed"] < 3 and loop.time() < deadline:
                    await asyncio.sleep(0.05)  # (polling a counter the server moves on its own)
                assert server.stats["receive_shed"] >= 3, dict(server.stats)
                held = sum(s.receive_held() for s in server.sessions if not s.closed)
                assert held <= 5 * MiB

                # an ended session lets go of what it held above the hole at once
                def gone() -> list[Any]:
                    return [k for k in kcp_sessions if k.state is kcp.SessionState.CLOSED]

                while len(gone()) < 3 and loop.time() < deadline:
                    await asyncio.sleep(0.05)  # (its abort runs in a task of its own)
                assert len(gone()) >= 3 and all(not k._engine.rcv_buf for k in gone())
                ended = [s for _c, s in hoarders if s.close_code is not None]
                # each was told why: by the transport's authenticated CLOSE with the status, unless
                # its client acted first on the GOAWAY datagram that goes out just before (its link
                # drains and closes its side itself, code 0: seen once in 6 compiled runs on 3.13)
                told = 0x4B00 + Status.RESOURCE_EXHAUSTED
                assert ended and all(s.close_code in (told, 0) for s in ended), [
                    s.close_reason for s in ended
                ]
                assert any(s.close_code == told for s in ended)
                assert (await d.hello(Req(name="after"))).text == "hello after"
            finally:
                for c, _s in hoarders:
                    await c.__aexit__(None, None, None)
