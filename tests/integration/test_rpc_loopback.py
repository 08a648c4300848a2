"""RPC over real KCP on 127.0.0.1: clean link, the lossy relay at 10 % loss, reconnect, shutdown."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_rpc_support import Demo, Pos, Probe, Req, Tick, rejoin_open_rooms

import kcprpc
from kcp.relay import LossyRelay
from kcprpc import (
    ClientConfig,
    CompatWire,
    HeartbeatConfig,
    ReconnectPolicy,
    RpcError,
    SecureWire,
    Status,
    Transport,
)

TIMEOUT = 20.0
COMPAT = Transport(CompatWire(crypt="aes", key="test key", fec=(10, 3)))


async def test_calls_over_kcp_with_aes_and_fec() -> None:
    async with kcprpc.Server([Demo(Probe())], "127.0.0.1", 0, transport=COMPAT) as server:
        host, port = server.address  # type: ignore[misc]
        async with kcprpc.connect(host, port, transport=COMPAT) as client:
            d = client.stub(Demo, timeout=TIMEOUT)
            assert (await d.hello(Req(name="udp"))).text == "hello udp"
            assert [r.text async for r in d.count(Req(name="s", n=50))] == [f"s{i}" for i in range(50)]
            blobs = await asyncio.gather(*[d.echo(bytes([i]) * 3000) for i in range(64)])
            assert blobs == [bytes([i]) * 3000 for i in range(64)]
            pr = server.services[0].probe  # type: ignore[attr-defined]
            await d.position(Pos(x=1, y=2))  # OOB datagram
            assert await asyncio.wait_for(pr.notified.get(), TIMEOUT) == Pos(x=1, y=2)
            q: asyncio.Queue[Tick] = asyncio.Queue()
            client.on(Tick, q.put_nowait)
            await client.subscribe("t")
            await server.push.publish("t", Tick(n=1))
            assert await asyncio.wait_for(q.get(), TIMEOUT) == Tick(n=1)
            st = await client.stats()
            assert st.transport["in_segs"] > 0 and st.transport["mux_frames_in"] > 0
            local = client.transport_stats()  # this end's view, no round trip
            assert local["in_segs"] > 0 and local["out_segs"] > 0 and local["mux_frames_in"] > 0
            assert local["rto"] > 0 and local["srtt"] >= 0 and local["rttvar"] >= 0 and local["mtu"] > 0
            assert all(type(v) is int for v in local.values())
        assert kcprpc.connect(host, port, transport=COMPAT).transport_stats() == {}


async def test_calls_through_relay_at_10_percent_loss() -> None:
    server = kcprpc.Server([Demo(Probe())], "127.0.0.1", 0)
    relay = LossyRelay(target=await server.start(), loss=10.0, seed=7)
    async with server, relay, kcprpc.connect(*relay.address) as client:
        d = client.stub(Demo, timeout=TIMEOUT)
        replies = await asyncio.gather(*[d.hello(Req(name=str(i))) for i in range(100)])
        assert [r.text for r in replies] == [f"hello {i}" for i in range(100)]
        assert [r.text async for r in d.count(Req(name="s", n=100))] == [f"s{i}" for i in range(100)]
        # bad payload: INVALID_ARGUMENT and the connection stays up
        with pytest.raises(RpcError) as ei:
            await d.hello({"name": ""})  # type: ignore[arg-type]
        assert ei.value.status is Status.INVALID_ARGUMENT
        assert (await d.hello(Req(name="after"))).text == "hello after"
        st = relay.stats
        assert st["up_dropped"] > 0 and st["down_dropped"] > 0


async def test_reconnect_after_server_restart() -> None:
    cfg = ClientConfig(
        heartbeat=HeartbeatConfig(interval=0.05, timeout=0.5),
        reconnect=ReconnectPolicy(initial=0.02, maximum=0.2),
    )
    server = kcprpc.Server([Demo()], "127.0.0.1", 0, on_restore=rejoin_open_rooms)
    host, port = await server.start()
    client = kcprpc.connect(host, port, config=cfg)
    await client.connect()
    try:
        d = client.stub(Demo, timeout=TIMEOUT)
        await d.join(Req(name="room"))
        reconnected = asyncio.Event()
        client.on_reconnect = lambda c: reconnected.set()
        await server.shutdown(grace=0)
        server = kcprpc.Server([Demo()], "127.0.0.1", port, on_restore=rejoin_open_rooms)
        await server.start()
        await asyncio.wait_for(reconnected.wait(), TIMEOUT)
        assert (await d.hello(Req(name="again"))).text == "hello again"
        q: asyncio.Queue[Tick] = asyncio.Queue()
        client.on(Tick, q.put_nowait)
        for _ in range(200):  # the restore runs right after the handshake
            if server.push.members("room"):
                break
            await asyncio.sleep(0.01)
        await server.push.to_room("room", Tick(n=5))
        assert await asyncio.wait_for(q.get(), TIMEOUT) == Tick(n=5)
    finally:
        await client.close()
        await server.shutdown(grace=0)


async def test_graceful_shutdown_over_kcp_finishes_in_flight_calls() -> None:
    server = kcprpc.Server([Demo(Probe())], "127.0.0.1", 0)
    host, port = await server.start()
    async with kcprpc.connect(host, port) as client:
        reasons: list[str] = []
        client.on_disconnect = lambda _c, reason: reasons.append(reason)
        d = client.stub(Demo, timeout=TIMEOUT)
        pr = server.services[0].probe  # type: ignore[attr-defined]
        call = asyncio.ensure_future(d.slow(Req(name="x")))
        await asyncio.wait_for(pr.started.wait(), TIMEOUT)
        shut = asyncio.ensure_future(server.shutdown(grace=TIMEOUT))
        for _ in range(1000):  # GOAWAY reaches the client: new calls fail fast
            try:
                await d.hello(Req(name="late"))
            except RpcError as e:
                assert e.status is Status.UNAVAILABLE
                break
        else:
            raise AssertionError("calls kept succeeding during shutdown")
        pr.release.set()
        assert (await call).text == "done"
        await asyncio.wait_for(shut, TIMEOUT)
        for _ in range(1000):
            if reasons:
                break
            await asyncio.sleep(0.01)
        # the client learns why its connection ended: not just "connection closed"
        assert reasons == ["the server is draining: UNAVAILABLE: server shutting down"], reasons


@pytest.mark.parametrize("mode", ["secure", "compat"])
async def test_connect_to_nothing_fails_with_unavailable(mode: str) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a port nobody answers on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        cfg = ClientConfig(connect_timeout=0.3)
        wire = SecureWire() if mode == "secure" else CompatWire()
        client = kcprpc.connect("127.0.0.1", port, transport=Transport(wire), config=cfg)
        with pytest.raises(RpcError) as ei:
            await client.connect()
        assert ei.value.status is Status.UNAVAILABLE
        if mode == "secure":  # the handshake's own reason, within the connect timeout
            assert f"no answer from the server at 127.0.0.1:{port} within 0.3 s" in ei.value.message
        else:
            assert f"no answer from 127.0.0.1:{port} within 0.3 s" in ei.value.message
        assert not client.connected


async def test_dead_link_detected_by_heartbeats_then_reconnect_restores_rooms() -> None:
    cfg = ClientConfig(
        heartbeat=HeartbeatConfig(interval=0.05, timeout=0.5),
        reconnect=ReconnectPolicy(initial=0.05, maximum=0.2),
        connect_timeout=0.5,
    )
    server = kcprpc.Server([Demo(Probe())], "127.0.0.1", 0, on_restore=rejoin_open_rooms)
    relay = LossyRelay(target=await server.start(), seed=3)
    async with server, relay, kcprpc.connect(*relay.address, config=cfg) as client:
        d = client.stub(Demo, timeout=TIMEOUT)
        await d.join(Req(name="arena"))
        for _ in range(200):  # a first heartbeat RTT sample
            if client.rtt_ms is not None:
                break
            await asyncio.sleep(0.02)
        assert client.rtt_ms is not None
        lost = asyncio.Event()
        back = asyncio.Event()
        client.on_disconnect = lambda c, reason: lost.set()
        client.on_reconnect = lambda c: back.set()
        pr = server.services[0].probe  # type: ignore[attr-defined]
        call = asyncio.ensure_future(d.slow(Req(name="x")))
        await asyncio.wait_for(pr.started.wait(), TIMEOUT)
        relay.loss = (1.0, 1.0)  # the link goes silent both ways: no EOF, only heartbeats notice
        await asyncio.wait_for(lost.wait(), TIMEOUT)
        with pytest.raises(RpcError) as ei:
            await call
        assert ei.value.status is Status.UNAVAILABLE
        relay.loss = (0.0, 0.0)
        await asyncio.wait_for(back.wait(), TIMEOUT)
        q: asyncio.Queue[Tick] = asyncio.Queue()
        client.on(Tick, q.put_nowait)
        await server.push.to_room("arena", Tick(n=9))
        assert await asyncio.wait_for(q.get(), TIMEOUT) == Tick(n=9)
        assert client.rtt_ms is not None  # carried over the reconnect
        pr.release.set()  # the orphaned handler on the dead session may finish: no shutdown grace wait
