"""The listener: kcp-go demux, 1000 concurrent sessions, bounded tables under a flood."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest
from raw_peer import RawPeer, push

import kcp
from kcp.admission import AdmissionConfig
from kcp.batch import open_udp_socket
from kcp.demo import echo
from kcp.session import KCPSession

TIMEOUT = 30.0


async def test_thousand_concurrent_sessions() -> None:
    n = 1000
    async with await kcp.listen("127.0.0.1", 0, on_accept=echo) as lis:
        port = lis.address[1]
        clients = [await kcp.dial("127.0.0.1", port) for _ in range(n)]

        async def one(i: int, c: KCPSession) -> None:
            msg = b"hello %d" % i
            c.write(msg)
            assert await c.readexactly(len(msg)) == msg

        await asyncio.wait_for(asyncio.gather(*(one(i, c) for i, c in enumerate(clients))), TIMEOUT)
        assert len(lis) == n
        st = lis.stats
        assert st["dropped_backlog_full"] == st["dropped_table_full"] == 0
        # batching: far fewer receive syscalls than datagrams on the listener
        assert st["recv_syscalls"] < st["in_pkts"]
        for c in clients:
            c.close()
        await asyncio.wait_for(asyncio.gather(*(c.wait_closed() for c in clients)), TIMEOUT)
        assert {c.conv for c in clients} == {s.conv for s in lis.sessions.values()} or len(lis) <= n


async def test_garbage_flood_leaves_listener_healthy_and_bounded() -> None:
    rng = random.Random(42)
    async with await kcp.listen(
        "127.0.0.1", 0, session=kcp.SessionConfig(idle_timeout=30), on_accept=echo, max_sessions=64
    ) as lis:
        addr = lis.address
        probe = await kcp.dial("127.0.0.1", addr[1])
        probe.write(b"first")
        assert await asyncio.wait_for(probe.readexactly(5), TIMEOUT) == b"first"
        # 1. random garbage from one socket: never a session
        g = open_udp_socket("127.0.0.1", 0)
        for _ in range(2000):
            g.sendto(rng.randbytes(rng.randrange(0, 1000)), addr)
        # 2. well-formed KCP packets from 200 sources (distinct sockets) that also answer the
        # listener's challenge, as real peers do: the table caps
        flooders = [RawPeer(addr) for _ in range(200)]
        convs = [rng.getrandbits(32) for _ in flooders]
        for f, conv in zip(flooders, convs, strict=True):
            f.send(push(conv, 0))
        for f, conv in zip(flooders, convs, strict=True):
            await f.prove(conv, TIMEOUT)
        # the probe's echo comes back only after the listener went through the flood queued before it
        probe.write(b"after")
        assert await asyncio.wait_for(probe.readexactly(5), TIMEOUT) == b"after"
        st = lis.stats
        assert len(lis) == 64  # the probe plus 63 flood sessions, no more
        assert st["dropped_table_full"] == 200 - 63  # the answers that found the table full
        assert st["dropped_no_session"] >= 1990  # garbage (a rare random blob may parse as KCP)
        # healthy: once flood sessions go (idle timeout, here sooner), new clients are served
        for s in list(lis.sessions.values()):
            if s.remote_address != probe.local_address:
                s.abort()
        assert len(lis) == 1
        c = await kcp.dial("127.0.0.1", addr[1])
        async with c:
            c.write(b"still alive")
            assert await asyncio.wait_for(c.readexactly(11), TIMEOUT) == b"still alive"
        probe.close()
        g.close()
        for f in flooders:
            f.close()


async def test_backlog_bounds_half_open_sessions() -> None:
    async with await kcp.listen("127.0.0.1", 0, backlog=5) as lis:
        peers = [RawPeer(lis.address) for _ in range(21)]
        for i, p in enumerate(peers[:20]):
            p.send(push(1000 + i, 0))
        for i, p in enumerate(peers[:20]):
            await p.prove(1000 + i, TIMEOUT)
        loop = asyncio.get_running_loop()
        end = loop.time() + TIMEOUT
        while lis.stats["pending_promoted"] + lis.stats["dropped_backlog_full"] < 20:  # all answers seen
            assert loop.time() < end
            await asyncio.sleep(0.01)
        sessions = [await asyncio.wait_for(lis.accept(), TIMEOUT) for _ in range(5)]
        assert [s.conv for s in sessions] == [1000 + i for i in range(5)]
        # a sentinel sent after the 20: once it is accepted, the 15 refused ones were seen
        peers[20].send(push(2000, 0))
        await peers[20].prove(2000, TIMEOUT)
        sentinel = await asyncio.wait_for(lis.accept(), TIMEOUT)
        assert sentinel.conv == 2000
        st = lis.stats
        assert st["dropped_backlog_full"] == 15  # their answers came while the backlog was full
        assert len(lis) == 6 and st["backlog"] == 0 and st["pending"] == 15
        for p in peers:
            p.close()


async def test_conv_mismatch_dropped_or_restart_only_when_proven_and_old_peer_silent() -> None:
    quiet = 0.3
    async with await kcp.listen("127.0.0.1", 0, admission=AdmissionConfig(restart_quiet=quiet)) as lis:
        peer = RawPeer(lis.address)
        peer.send(push(7, 0, b"a"))
        peer.send(push(7, 1, b"b"))  # sent before the answer: held for the session
        # a second datagram alone proves nothing: acknowledging the challenge does
        assert lis.stats["pending"] == 1 or len(lis) == 0
        await peer.prove(7, TIMEOUT)
        first = await asyncio.wait_for(lis.accept(), TIMEOUT)
        assert first.conv == 7 and await asyncio.wait_for(first.readexactly(2), TIMEOUT) == b"ab"
        # another conv, sn != 0: dropped and counted, the session stays
        peer.send(push(8, 5, b"x"))
        # then the same conv again shows ordering: once it is read, the drop happened
        peer.send(push(7, 2, b"c"))
        assert await asyncio.wait_for(first.read(), TIMEOUT) == b"c"
        assert lis.stats["dropped_bad_conv"] == 1 and not first.is_closing()
        # another conv with sn == 0 (kcp-go would replace the session now): only a restart candidate
        peer.send(push(9, 0, b"d", ts=1))
        challenge = await peer.challenge(9, TIMEOUT)
        assert not first.is_closing() and lis.stats["pending"] == 1
        # the old peer speaks after the candidate came, then the candidate answers: not a restart
        peer.send(push(7, 3, b"e"))
        assert await asyncio.wait_for(first.read(), TIMEOUT) == b"e"
        peer.answer(9, challenge)
        peer.send(push(7, 4, b"f"))
        assert await asyncio.wait_for(first.read(), TIMEOUT) == b"f"
        assert not first.is_closing() and lis.stats["restart_deferred"] == 1
        assert lis.stats["sessions_replaced"] == 0 and list(lis.sessions.values()) == [first]
        # a real restart: the old peer is gone (no more conv 7); the new one retransmits its first
        # segment and acknowledges each challenge, until the old session has been silent (it does
        # not answer its liveness probes) for restart_quiet
        t0 = asyncio.get_running_loop().time()

        async def new_peer() -> None:
            ts = 2
            while True:
                peer.send(push(9, 0, b"d", ts=ts))
                ts += 1
                for conv, cmd, cts, sn in await peer.recv_packets(TIMEOUT):
                    if conv == 9 and cmd == 81 and sn == 0xFFFFFFFF:
                        peer.answer(9, cts)
                await asyncio.sleep(0.05)

        task = asyncio.ensure_future(new_peer())
        try:
            second = await asyncio.wait_for(lis.accept(), TIMEOUT)
        finally:
            task.cancel()
        assert asyncio.get_running_loop().time() - t0 >= quiet - 0.05
        assert second.conv == 9 and await asyncio.wait_for(second.read(), TIMEOUT) == b"d"
        assert first.closed and first.close_reason == "replaced by a new conversation"
        assert await first.read() == b""
        assert list(lis.sessions.values()) == [second]
        assert lis.stats["sessions_replaced"] == 1
        peer.close()


async def test_segments_beside_the_challenge_answer_reach_the_session() -> None:
    # an engine flushes its ack of the challenge together with whatever it has to send: that
    # datagram is the peer's like any other (and its ack gives no RTT sample)
    async with await kcp.listen("127.0.0.1", 0) as lis:
        peer = RawPeer(lis.address)
        peer.send(push(5, 0, b"a"))
        ts = await peer.challenge(5, TIMEOUT)
        peer.answer(5, ts, more=push(5, 1, b"b"))
        s = await asyncio.wait_for(lis.accept(), TIMEOUT)
        assert await asyncio.wait_for(s.readexactly(2), TIMEOUT) == b"ab"
        assert s.stats["srtt"] == 0 and s.stats["rto"] <= 200  # the engine's initial RTT state
        assert s.stats["kcp_in_errors"] == 0
        peer.close()


async def test_redial_from_same_address_replaces_session() -> None:
    # a client that restarts on the same port: its new conv replaces the old session once the old
    # peer has not answered the listener's liveness probes for restart_quiet
    adm = AdmissionConfig(restart_quiet=0.5)
    async with await kcp.listen("127.0.0.1", 0, on_accept=echo, admission=adm) as lis:
        c1 = await kcp.dial("127.0.0.1", lis.address[1], conv=1)
        c1.write(b"one")
        assert await asyncio.wait_for(c1.readexactly(3), TIMEOUT) == b"one"
        local = c1.local_address
        c1.abort()
        c2 = await kcp.dial(
            "127.0.0.1", lis.address[1], io=kcp.IOOptions(local_address=("127.0.0.1", local[1])), conv=2
        )
        async with c2:
            c2.write(b"two")
            assert await asyncio.wait_for(c2.readexactly(3), TIMEOUT) == b"two"
            assert [s.conv for s in lis.sessions.values()] == [2]


async def test_closed_sessions_are_forgotten_and_listener_close_ends_all() -> None:
    lis = await kcp.listen("127.0.0.1", 0)
    clients = [await kcp.dial("127.0.0.1", lis.address[1]) for _ in range(3)]
    for c in clients:
        c.write(b"x")
    accepted = [await asyncio.wait_for(lis.accept(), TIMEOUT) for _ in range(3)]
    accepted[0].close()
    await accepted[0].wait_closed()
    assert len(lis) == 2
    lis.close()
    await lis.wait_closed()
    assert all(s.closed for s in accepted)
    assert [s.close_reason for s in accepted[1:]] == ["listener closed"] * 2
    async for _ in lis:  # iteration ends at once on a closed listener
        raise AssertionError("no session expected")
    for c in clients:
        c.abort()


async def test_ipv6_and_reuse_port() -> None:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:  # pragma: no cover
        return
    async with await kcp.listen("::1", 0, io=kcp.IOOptions(reuse_port=True), on_accept=echo) as lis:
        port = lis.address[1]
        async with await kcp.listen("::1", port, io=kcp.IOOptions(reuse_port=True), on_accept=echo):
            c = await kcp.dial("::1", port)
            async with c:
                c.write(b"v6")
                assert await asyncio.wait_for(c.readexactly(2), TIMEOUT) == b"v6"
                assert c.remote_address[0] == "::1"


async def test_garbage_into_crypt_and_fec_listener_is_counted_not_raised() -> None:
    rng = random.Random(7)
    wire = kcp.CompatWire(crypt="aes", key="k", fec=(10, 3))
    errors: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        async with await kcp.listen("127.0.0.1", 0, wire, on_accept=echo) as lis:
            c = await kcp.dial("127.0.0.1", lis.address[1], wire)
            c.write(b"hi")
            assert await asyncio.wait_for(c.readexactly(2), TIMEOUT) == b"hi"
            g = open_udp_socket("127.0.0.1", 0)
            for _ in range(1000):
                g.sendto(rng.randbytes(rng.randrange(0, 1400)), lis.address)
            # garbage from the session's own address too: its pipeline must count, not raise
            for _ in range(200):
                c._ep.sock.send(rng.randbytes(rng.randrange(0, 1400)))
            c.write(b"after")
            assert await asyncio.wait_for(c.readexactly(5), TIMEOUT) == b"after"
            st = lis.stats
            assert st["in_csum_errors"] + st["short_packets"] >= 990
            assert len(lis) == 1 and not errors
            (server_side,) = lis.sessions.values()
            assert server_side.stats["in_csum_errors"] + server_side.stats["short_packets"] >= 195
            g.close()
            c.close()
    finally:
        loop.set_exception_handler(None)


@pytest.mark.parametrize("kind", ["plain", "async"])
async def test_an_accept_callback_that_raises_aborts_its_session(kind: str) -> None:
    """Either kind of ``on_accept`` that raises: the error goes to the loop's exception handler
    and the session is aborted, leaving the table (before, an async one's session stayed in it,
    counted against ``max_sessions`` and its address's share, its error unseen until the task was
    collected)."""
    errors: list[BaseException] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx["exception"]))

    def plain(s: KCPSession) -> None:
        raise RuntimeError("app bug in on_accept")

    async def coro(s: KCPSession) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("app bug in on_accept")

    try:
        async with await kcp.listen("127.0.0.1", 0, on_accept=plain if kind == "plain" else coro) as lis:
            c = await kcp.dial("127.0.0.1", lis.address[1])
            c.write(b"hi")
            deadline = loop.time() + TIMEOUT
            while (len(lis) or not errors) and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert len(lis) == 0 and [str(e) for e in errors] == ["app bug in on_accept"]
            c.abort()
    finally:
        loop.set_exception_handler(None)
