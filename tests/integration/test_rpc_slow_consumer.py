"""A client that stops reading, over real KCP on 127.0.0.1: the KCP send queue is what grows (the
client's receive window closes), the server ends the session at ``max_send_backlog`` and the client
is told RESOURCE_EXHAUSTED "slow consumer" (secure mode: in the authenticated CLOSE and an OOB
GOAWAY datagram; compat mode: the datagram)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import kcprpc
from kcprpc import (
    ClientConfig,
    CompatWire,
    HeartbeatConfig,
    MuxConfig,
    RpcError,
    SecureWire,
    ServerConfig,
    SessionConfig,
    Status,
    Transport,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_rpc_send_bounds import Svc, stop_reading_transport

TIMEOUT = 20.0
KIB = 1024


@kcprpc.event("slow.news")
class News(BaseModel):
    data: bytes


@pytest.mark.parametrize("mode", ["secure", "compat"])
async def test_a_kcp_client_that_stops_reading_ends_as_a_slow_consumer(mode: str) -> None:
    wire = SecureWire(key="slow consumer") if mode == "secure" else CompatWire(crypt="aes", key="k")
    cfg = ServerConfig(
        max_message_size=64 * KIB,
        max_send_backlog=1024 * KIB,
        max_send_backlog_total=8192 * KIB,
        slow_consumer_timeout=None,
    )
    svc = Svc()
    # a high KCP write buffer (2048 segments, ~2.7 MB, where drain() waits) and a client mux window
    # of 4 MiB: the whole backlog fits the KCP send queue, the mux above never holds any of it
    served = Transport(wire, session=SessionConfig(write_buffer=2048))
    mux = MuxConfig(version=2, max_stream_buffer=4096 * KIB, max_receive_buffer=4096 * KIB)
    slow_side = Transport(wire, session=SessionConfig(read_buffer=64 * KIB), mux=mux)
    async with kcprpc.Server([svc], "127.0.0.1", 0, config=cfg, transport=served) as server:
        host, port = server.address  # type: ignore[misc]
        pinging = ClientConfig(heartbeat=HeartbeatConfig(interval=0.05, timeout=60.0))
        slow = await kcprpc.connect(host, port, config=pinging, transport=slow_side)
        other = await kcprpc.connect(host, port, transport=Transport(wire))  # a legitimate client beside it
        try:
            got: list[News] = []
            other.on(News, got.append)
            await other.subscribe("news")
            await slow.subscribe("news")
            lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            slow.on_disconnect = lambda _c, reason: lost.done() or lost.set_result(reason)
            pending = asyncio.ensure_future(slow.stub(Svc).hang())
            await asyncio.wait_for(svc.hang_started.wait(), TIMEOUT)
            sess = next(s for s in server.sessions if s.id == slow.session_id)
            kcp_session: Any = sess.conn.datagrams  # type: ignore[attr-defined]
            stop_reading_transport(slow)  # the client reads nothing more off its KCP session
            kcp_peak = sent = 0
            for _ in range(1000):  # 4 MB at most: three times what the client and the bound hold
                if sess.closed:
                    break
                await server.push.publish("news", News(data=b"n" * (4 * KIB)))
                sent += 1
                # segments queued or in flight, in bytes (stream mode: full segments)
                kcp_peak = max(kcp_peak, kcp_session.write_buffer_size() * kcp_session.engine.mss)
                await asyncio.sleep(0.002)  # pacing: the sessions run on real time
            assert sess.closed, "the session was never ended"
            # the KCP send queue grew, up to the bound (+ 1/32 of it written between two checks + a frame)
            assert 768 * KIB < kcp_peak <= 1024 * KIB + 32 * KIB + 8 * KIB
            reason = await asyncio.wait_for(lost, TIMEOUT)
            assert "RESOURCE_EXHAUSTED" in reason and "slow consumer" in reason
            with pytest.raises(RpcError) as e:
                await asyncio.wait_for(pending, TIMEOUT)
            assert e.value.status is Status.RESOURCE_EXHAUSTED and "slow consumer" in e.value.message
            assert server.stats["slow_consumers"] == 1
            # the legitimate client got every event and its calls go on
            assert await other.stub(Svc, timeout=TIMEOUT).echo(b"still here") == b"still here"
            assert len(got) == sent
        finally:
            await other.close()
            await slow.close()


async def test_a_kcp_client_whose_pings_arrive_but_that_consumes_nothing_is_ended() -> None:
    cfg = ServerConfig(
        slow_consumer_timeout=0.5,
        heartbeat=HeartbeatConfig(interval=0.1, timeout=30.0),  # the sweep samples every 0.1 s
    )
    async with kcprpc.Server([Svc()], "127.0.0.1", 0, config=cfg, key="stall") as server:
        host, port = server.address  # type: ignore[misc]
        pinging = ClientConfig(heartbeat=HeartbeatConfig(interval=0.05, timeout=60.0))
        slow_side = Transport(
            SecureWire(key="stall"), session=SessionConfig(read_buffer=64 * KIB, rcv_wnd=128)
        )
        slow = await kcprpc.connect(host, port, config=pinging, transport=slow_side)
        try:
            await slow.subscribe("news")
            lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            slow.on_disconnect = lambda _c, reason: lost.done() or lost.set_result(reason)
            (sess,) = server.sessions
            stop_reading_transport(slow)  # the client reads nothing more off its KCP session
            loop = asyncio.get_running_loop()
            stopped_at = loop.time()
            # 400 KB: more than the client's KCP takes in before its window closes (its 64 KiB read
            # buffer and 128 segments), far below max_send_backlog (8 MiB): only the stall can end it
            for _ in range(100):
                await server.push.publish("news", News(data=b"n" * (4 * KIB)))
                await asyncio.sleep(0.001)  # pacing: the sessions run on real time
            reason = await asyncio.wait_for(lost, TIMEOUT)
            assert "RESOURCE_EXHAUSTED" in reason and "none was consumed" in reason
            assert server.stats["slow_consumers_stalled"] == 1 and server.stats["slow_consumers"] == 0
            # its pings (transport keepalives: WELCOME said tping) kept arriving all along
            silent_ms = sess.conn.silent_ms()
            assert silent_ms is not None and loop.time() - silent_ms / 1000 > stopped_at + 0.4
            assert sess.last_receive < stopped_at + 0.4  # none of them was an RPC frame
        finally:
            await slow.close()
