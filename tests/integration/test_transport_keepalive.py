"""Heartbeats as transport keepalives (issue 16, idle connections).

A secure-mode client whose server says ``tping`` in WELCOME sends its heartbeats as authenticated
secure PINGs that the server's transport answers by itself: no KCP segment, mux frame or RPC frame on
either side. The server's sweep counts them as liveness; a compat client still sends PING frames.
Real sockets on 127.0.0.1, bounded waits on conditions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import kcp
import kcprpc
from kcp import CompatWire, KCPSession, KCPUsageError
from kcp.relay import LossyRelay
from kcp.secure import PingAnswered
from kcprpc import ClientConfig, HeartbeatConfig, MuxConfig, SecureWire, ServerConfig, Transport
from kcprpc.net import dial
from kcprpc.protocol.frames import hello_frame

TIMEOUT = 10.0


class Svc(kcprpc.Service, name="test.Keepalive"):
    async def echo(self, data: bytes) -> bytes:
        return data


async def until(cond: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Wait (bounded) until ``cond()`` holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_a_session_ping_is_answered_by_the_peer_transport_alone() -> None:
    wire = kcp.SecureWire(key="ka")
    accepted: asyncio.Future[KCPSession] = asyncio.get_running_loop().create_future()

    async def on_accept(s: KCPSession) -> None:
        accepted.set_result(s)
        await s.wait_closed()

    async with await kcp.listen("127.0.0.1", 0, wire, on_accept=on_accept) as lis:
        client = await kcp.dial("127.0.0.1", lis.address[1], wire)
        async with client:
            answers: list[int] = []
            client.add_event_callback(
                lambda ev: answers.append(ev.nonce) if isinstance(ev, PingAnswered) else None
            )
            client.write(b"hello")  # the server accepts the session with its first data
            server = await asyncio.wait_for(accepted, TIMEOUT)
            await until(lambda: server.stats["in_segs"] >= 1 and client.stats["out_segs"] >= 1, "the hello")
            await until(lambda: client.engine.waitsnd() == 0, "the hello's ack")
            before = dict(server.stats)
            assert client.ping(7) and client.ping(2**63 - 1)
            await until(lambda: len(answers) == 2, "both answers")
            assert answers == [7, 2**63 - 1]
            after = server.stats
            assert after["secure_mtu_probes_answered"] - before["secure_mtu_probes_answered"] == 2
            # nothing reached the server's KCP engine, and it sent no segment back
            assert after["in_segs"] == before["in_segs"] and after["out_segs"] == before["out_segs"]
            assert 0 <= server.silent_ms() < 1000
            with pytest.raises(KCPUsageError, match="nonce"):
                client.ping(2**63)
            with pytest.raises(KCPUsageError, match="nonce"):
                client.ping(-1)
        assert not client.ping(8)  # a closed session sends nothing


async def test_compat_sessions_have_no_ping() -> None:
    async with await kcp.listen("127.0.0.1", 0, kcp.CompatWire(), on_accept=lambda s: s.wait_closed()) as lis:
        client = await kcp.dial("127.0.0.1", lis.address[1], kcp.CompatWire())
        async with client:
            assert client.ping(1) is False


def _fast_server() -> ServerConfig:
    # the sweep every 0.1 s closes sessions silent for 0.6 s
    return ServerConfig(heartbeat=HeartbeatConfig(interval=0.1, timeout=0.6))


FAST_CLIENT = ClientConfig(heartbeat=HeartbeatConfig(interval=0.05, timeout=1.0), reconnect=None)


# a mux keepalive short enough to show within the test: NOPs every 0.2 s, closed after 0.6 s of silence
QUICK_MUX = MuxConfig(version=2, max_stream_buffer=512 * 1024, keepalive_interval=0.2, keepalive_timeout=0.6)


async def test_a_quiet_secure_client_stays_alive_on_transport_keepalives_alone() -> None:
    tr = Transport(SecureWire(key="ka"), mux=QUICK_MUX)
    async with kcprpc.Server([Svc()], "127.0.0.1", 0, config=_fast_server(), transport=tr) as server:
        host, port = server.address  # type: ignore[misc]
        client = await kcprpc.connect(host, port, config=FAST_CLIENT, transport=tr)
        try:
            link: Any = client.lifecycle.link
            assert link.transport_ping  # WELCOME said tping
            (sess,) = server.sessions
            loop = asyncio.get_running_loop()
            quiet_since = sess.last_receive
            # three heartbeat timeouts with no RPC frame from the client: only keepalives
            await until(lambda: loop.time() - quiet_since > 1.8, "1.8 s of RPC silence")
            assert server.sessions == {sess} and not sess.closed and client.connected
            assert sess.last_receive == quiet_since  # no PING frame reached the RPC layer
            assert sess.protocol.rtt_ms is None  # ... so the client reported no RTT in one
            assert sess.rtt_ms is not None  # the transport's own estimate stands in
            st = sess.conn.stats()
            assert st["secure_mtu_probes_answered"] >= 5
            # both muxes went quiet (HELLO and WELCOME said tping): no NOP either way in 1.8 s,
            # nine of their keepalive intervals, and no silence timeout in three of theirs
            assert st["mux_nop_out"] == 0 and st["mux_nop_in"] == 0 and st["mux_keepalive_timeouts"] == 0
            assert client.rtt_ms is not None  # the answers came back
            assert await client.stub(Svc, timeout=TIMEOUT).echo(b"x") == b"x"
        finally:
            await client.close()


async def test_a_silent_secure_client_is_still_closed_by_the_sweep() -> None:
    async with kcprpc.Server([Svc()], "127.0.0.1", 0, config=_fast_server(), key="ka") as server:
        host, port = server.address  # type: ignore[misc]
        client = await kcprpc.connect(
            host, port, key="ka", config=ClientConfig(heartbeat=None, reconnect=None)
        )
        try:
            (sess,) = server.sessions
            loop = asyncio.get_running_loop()
            connected_at = loop.time()
            await until(lambda: sess.closed, "the sweep to close a client that sends nothing")
            assert loop.time() - connected_at >= 0.55  # not before its 0.6 s heartbeat timeout
        finally:
            await client.close()


async def test_a_server_whose_answers_stop_is_declared_dead_by_the_client() -> None:
    async with (
        kcprpc.Server([Svc()], "127.0.0.1", 0, key="ka") as server,
        LossyRelay(target=server.address) as relay,  # type: ignore[arg-type]
    ):
        lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        client = await kcprpc.connect(*relay.address, key="ka", config=FAST_CLIENT)
        client.on_disconnect = lambda _c, reason: lost.done() or lost.set_result(reason)
        try:
            link: Any = client.lifecycle.link
            await until(lambda: link.hb.srtt_ms is not None, "a first answered keepalive")
            relay.loss = (0.0, 1.0)  # every datagram from the server is lost from now on
            reason = await asyncio.wait_for(lost, TIMEOUT)
            assert "heartbeats" in reason
        finally:
            await client.close()


async def test_a_compat_client_heartbeats_with_ping_frames() -> None:
    compat = Transport(CompatWire(), mux=QUICK_MUX)
    async with kcprpc.Server([Svc()], "127.0.0.1", 0, config=_fast_server(), transport=compat) as server:
        host, port = server.address  # type: ignore[misc]
        client = await kcprpc.connect(host, port, config=FAST_CLIENT, transport=compat)
        try:
            link: Any = client.lifecycle.link
            assert not link.transport_ping
            (sess,) = server.sessions
            await until(lambda: sess.protocol.rtt_ms is not None, "a PING frame with the client's RTT")
            quiet_since = sess.last_receive
            await until(lambda: sess.last_receive > quiet_since, "the next PING frame")
            assert sess.conn.silent_ms() is None  # compat: unauthenticated packets prove nothing
        finally:
            await client.close()


async def test_compat_muxes_keep_their_keepalive() -> None:
    compat = Transport(CompatWire(), mux=QUICK_MUX)
    cfg = ServerConfig(heartbeat=HeartbeatConfig(interval=0.1, timeout=30.0))
    async with kcprpc.Server([Svc()], "127.0.0.1", 0, config=cfg, transport=compat) as server:
        host, port = server.address  # type: ignore[misc]
        quiet = ClientConfig(heartbeat=None, reconnect=None)  # no PING frames: only the muxes speak
        client = await kcprpc.connect(host, port, config=quiet, transport=compat)
        try:
            (sess,) = server.sessions
            st = sess.conn.stats
            await until(lambda: st()["mux_nop_in"] >= 2 and st()["mux_nop_out"] >= 2, "NOPs both ways")
            assert not sess.closed and client.connected
        finally:
            await client.close()


async def test_an_older_client_without_tping_in_hello_keeps_the_server_mux_nops() -> None:
    """An older client's HELLO has no tping: the server still says tping in WELCOME (the client
    may ignore it) but keeps its mux keepalive, whose NOPs the older client's mux needs."""
    tr = Transport(SecureWire(key="ka"), mux=QUICK_MUX)
    cfg = ServerConfig(heartbeat=HeartbeatConfig(interval=0.1, timeout=30.0))
    async with kcprpc.Server([Svc()], "127.0.0.1", 0, config=cfg, transport=tr) as server:
        host, port = server.address  # type: ignore[misc]
        conn = await dial(host, port, tr)
        try:
            control = await conn.open_stream()
            control.write(hello_frame({}, None, None, transport_ping=False))  # as an older client
            welcome = await asyncio.wait_for(control.read(), TIMEOUT)
            assert b"tping" in welcome
            (sess,) = server.sessions
            await until(lambda: sess.conn.stats()["mux_nop_out"] >= 2, "the server mux's NOPs")
            assert not sess.closed
        finally:
            await conn.close()
