"""What all clients together may make a server hold on the receive side (``ServerConfig.max_receive_total``,
docs/rpc.md "Flow control and memory per connection"): every connection's frames in part are
counted in one process total as they are reserved, and what the connections hold besides (decoded
bodies, unread mux buffers) is counted by the sweep; past the bound the largest holders are ended
with RESOURCE_EXHAUSTED "receive memory", until the total is under 90 % of it.

The hostile clients speak raw frames on the real mux (``mux_memory_pair``, as in
test_rpc_receive_limits.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from test_rpc_receive_limits import Peer, frame_start
from test_rpc_support import Demo, Probe

import kcprpc
from kcprpc import ClientConfig, HeartbeatConfig, RpcError, Server, ServerConfig, Status
from kcprpc import codec as c
from kcprpc.process_bounds import shed_largest
from kcprpc.receive import FrameBudget, ReceiveTotal
from kcprpc.testing import pair

KiB = 1024
MiB = 1024 * 1024


# --------------------------------------------------------------------------- the process total
def test_every_change_of_a_budget_reaches_the_total() -> None:
    overs: list[int] = []
    total = ReceiveTotal(100, lambda: overs.append(total.reserved))
    a, b = FrameBudget(60, total, "a"), FrameBudget(60, total, "b")
    assert a.try_reserve(50) and b.try_reserve(40)
    assert total.reserved == 90 and total.holders == {a, b} and overs == []
    b.force(20)  # the control stream's frame, past b's own limit
    assert total.reserved == 110 and overs == [110] and total.peak == 110
    a.release(50)
    assert total.reserved == 60 and total.holders == {b}
    assert not b.try_reserve(1)  # b is over its own limit: the total does not decide that
    b.release(20)
    b.detach()  # the connection ended holding 40: it leaves the total at once ...
    assert total.reserved == 0 and total.holders == set()
    b.release(40)  # ... and its readers' later releases stay local
    assert total.reserved == 0 and b.used == 0
    assert (a.owner, b.owner) == ("a", None)  # an ended connection forgets its session


async def test_a_grant_to_a_waiting_reader_reaches_the_total() -> None:
    total = ReceiveTotal(1000, lambda: None)
    budget = FrameBudget(100, total)
    assert budget.try_reserve(80)
    waiter = asyncio.ensure_future(budget.reserve(60))
    await asyncio.sleep(0)
    budget.release(80)
    await waiter
    assert budget.used == 60 and total.reserved == 60 and total.holders == {budget}


def test_shed_largest_ends_the_largest_until_under_ninety_percent() -> None:
    sized = [(10, "a"), (50, "b"), (30, "c"), (25, "d"), (0, "e")]
    assert shed_largest(sized, 115, 120) == []  # not over: nothing
    # over 100: 115 -> 65 after "b" (under 90)
    assert shed_largest(sized, 115, 100) == [(50, "b")]
    # over 60: 115 -> 65 -> 35 (under 54)
    assert shed_largest(sized, 115, 60) == [(50, "b"), (30, "c")]
    # a cap below everything: all but what holds nothing
    assert [s for _h, s in shed_largest(sized, 115, 1)] == ["b", "c", "d", "a"]


def test_the_default_follows_the_message_size_and_a_bound_must_fit_one_connection() -> None:
    assert ServerConfig().receive_total() == 24 * MiB
    partial = 16 * MiB + c.HEADER_SIZE + 256 * KiB
    big = ServerConfig(max_message_size=16 * MiB, max_send_backlog=32 * MiB, max_send_backlog_total=64 * MiB)
    assert big.receive_total() == 4 * partial
    assert ServerConfig(max_receive_total=5 * MiB).receive_total() == 5 * MiB
    with pytest.raises(kcprpc.UsageError, match="max_receive_total"):
        ServerConfig(max_receive_total=4 * MiB)  # one connection's 4.25 MiB of frames would not fit


# --------------------------------------------------------------------------- against a server
async def test_connections_that_stall_large_frames_are_shed_past_the_process_bound() -> None:
    """Five connections each start a 1 MiB CALL (600 KiB of it) and stall: each is within its own
    bound, but together they pass 3 MiB. The server ends the largest holders with RESOURCE_EXHAUSTED
    "receive memory" as soon as the total passes, so it never holds more than the bound and one
    frame; a connection that only makes small calls goes on."""
    # messages up to 1 MiB: a connection's frames in part take up to 1.25 MiB; all of them 3 MiB
    server = Server([Demo()], config=ServerConfig(max_message_size=MiB, max_receive_total=3 * MiB))
    legit = Peer(server)
    await legit.hello()
    peers = [Peer(server) for _ in range(5)]
    for p in peers:
        await p.hello()
    worst = 0
    for i, p in enumerate(peers):
        s = await p.cc.open_stream()
        s.write(frame_start(c.CALL, 10 + i, MiB, 600 * KiB))
        for _ in range(50):  # until its frame is reserved (or its connection shed)
            await asyncio.sleep(0)
        worst = max(worst, server.receive_total.reserved)
    for _ in range(50):
        await asyncio.sleep(0)
    cap = 3 * MiB
    assert worst <= cap + MiB + c.HEADER_SIZE  # the bound, plus the one frame that passed it
    shed = server.stats["receive_shed"]
    assert shed >= 1
    assert server.receive_total.reserved <= cap - cap // 10
    ended = [p for p in peers if all(s.conn is not p.sc for s in server.sessions)]
    assert len(ended) == shed
    # the shed sessions are over for good (never resumable), the others hold their frames
    assert all(not s.closed for s in server.sessions)
    assert server.stats["receive_held"] > 0
    # the legitimate connection was never among the largest: its calls go on
    assert await legit.call(5, "test.Demo/Echo", b"hi") == (c.REPLY, 5, [b"hi", None, None])
    for p in [legit, *peers]:
        await p.cc.close()
    await server.shutdown(grace=0)
    assert server.receive_total.reserved == 0 and server.receive_total.holders == set()


class Sink(kcprpc.Service, name="test.Sink"):
    """A client-streaming method whose handler reads nothing until told to."""

    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def drain(self, chunks: AsyncIterator[bytes]) -> int:
        await self.go.wait()
        return sum([len(x) async for x in chunks])


async def test_the_sweep_counts_what_connections_hold_unread() -> None:
    """Bytes that no frame reserves (a streaming call whose handler reads nothing: its inbox, then
    the mux's stream buffer) are counted by the sweep, every fourth heartbeat interval: past the
    bound the holder is shed."""
    sink = Sink()
    cfg = ServerConfig(
        max_message_size=64 * KiB,
        max_decoded_bytes=128 * KiB,  # the inbox pauses at a quarter of it
        max_receive_total=400 * KiB,
        heartbeat=HeartbeatConfig(interval=0.05, timeout=5.0),
    )
    server = Server([sink], config=cfg)
    peer = Peer(server)
    await peer.hello()
    s = await peer.cc.open_stream()
    s.write(c.encode_frame(c.CALL, 7, ["test.Sink/drain", None, 30_000, 0, None]))
    chunk = c.encode_frame(c.MSG, 7, b"x" * (8 * KiB))
    for _ in range(60):  # 480 KiB: the inbox takes ~32 KiB of it, the mux the rest
        s.write(chunk)
    sess = peer.session
    for _ in range(200):
        if server.stats["receive_shed"]:
            break
        await asyncio.sleep(0.01)
    assert server.stats["receive_shed"] == 1 and sess.closed and not sess.may_resume
    assert server.stats["receive_held"] > 400 * KiB
    sink.go.set()
    await peer.cc.close()
    await server.shutdown(grace=0)


async def test_a_real_client_whose_stream_is_shed_is_told_why() -> None:
    """A :class:`kcprpc.Client` streams into a handler that reads nothing: the sweep counts the
    inbox and the mux's buffer, sheds the connection, and the client's call fails with
    RESOURCE_EXHAUSTED naming the receive bound."""
    sink = Sink()
    cfg = ServerConfig(
        max_message_size=64 * KiB,
        max_decoded_bytes=128 * KiB,
        max_receive_total=400 * KiB,
        heartbeat=HeartbeatConfig(interval=0.05, timeout=5.0),
    )
    client_cfg = ClientConfig(heartbeat=HeartbeatConfig(interval=0.02, timeout=60.0))
    async with pair([sink], link="mux", server_config=cfg, client_config=client_cfg) as p:

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(200):  # 1.6 MB: four times the bound
                yield b"y" * (8 * KiB)

        with pytest.raises(RpcError) as e:
            await asyncio.wait_for(p.client.stub(Sink).drain(chunks()), 5.0)
        assert e.value.status is Status.RESOURCE_EXHAUSTED
        assert "receive memory" in e.value.message and "max_receive_total" in e.value.message
        assert p.server.stats["receive_shed"] == 1
        sink.go.set()


# --------------------------------------------------------------------------- streams
async def test_streams_past_the_process_bound_are_refused_and_the_most_shed() -> None:
    """Two connections open 30 idle streams each against a bound of 50 (control streams are free):
    the 51st is refused at once, and the connection with the most is ended with
    RESOURCE_EXHAUSTED "streams"; a third connection's calls go on, and every count comes back to
    zero once they are gone."""
    server = Server([Demo()], config=ServerConfig(max_streams_total=50))
    legit, a, b = Peer(server), Peer(server), Peer(server)
    for p in (legit, a, b):
        await p.hello()
    sa, sb = (next(s for s in server.sessions if s.conn is p.sc) for p in (a, b))
    held = [await a.cc.open_stream() for _ in range(30)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert server.stats["streams_open"] == 30
    held += [await b.cc.open_stream() for _ in range(30)]
    for _ in range(100):
        if server.stats["streams_shed"]:
            break
        await asyncio.sleep(0.01)
    assert server.stats["streams_refused"] >= 1 and server.stats["streams_shed"] == 1
    assert server.stats["streams_open"] <= 50
    assert sa.closed and not sa.may_resume and not sb.closed  # a (30 streams) was the largest
    assert await legit.call(5, "test.Demo/Echo", b"ok") == (c.REPLY, 5, [b"ok", None, None])
    for p in (legit, a, b):
        await p.cc.close()
    for _ in range(100):
        if not server.sessions:
            break
        await asyncio.sleep(0.01)
    await server.shutdown(grace=0)
    assert server.stats["streams_open"] == 0


async def test_many_running_calls_are_not_receive_memory() -> None:
    """120 connections each wait on a long call (a long poll): the decode budget charges each
    running call's small request its worst case (a few KB), over 400 KB in all, past this
    server's bound. That is an estimate, not bytes held: the process total counts bytes buffered (frames in
    part, unread mux and KCP data) and sheds nobody here."""
    probe = Probe()
    cfg = ServerConfig(
        max_message_size=64 * KiB,
        max_receive_total=340 * KiB,
        heartbeat=HeartbeatConfig(interval=0.02, timeout=5.0),
    )
    server = Server([Demo(probe)], config=cfg)
    peers = [Peer(server) for _ in range(120)]
    for i, p in enumerate(peers):
        await p.hello()
        p.ctrl.write(
            c.encode_frame(c.CALL, 1, ["test.Demo/slow", None, 30_000, c.FLAG_END, {"name": str(i)}])
        )
    for _ in range(200):
        if sum(s.receive.decode.held for s in server.sessions) > cfg.receive_total():
            break
        await asyncio.sleep(0.005)
    charged = sum(s.receive.decode.held for s in server.sessions)
    assert charged > cfg.receive_total()  # what the decode budgets hold against each connection
    for _ in range(3):  # three counts of every session (every 4th sweep: 0.08 s)
        server.stats["receive_held"] = -1
        for _ in range(100):
            if server.stats["receive_held"] != -1:
                break
            await asyncio.sleep(0.01)
        assert server.stats["receive_held"] != -1, "no count came"
    assert server.stats["receive_shed"] == 0 and server.stats["receive_held"] < cfg.receive_total()
    probe.release.set()
    for p in peers:
        frame = await p.next(p.ctrl)
        assert frame[0] == c.REPLY
        await p.cc.close()
    await server.shutdown(grace=0)


async def test_connections_within_their_stream_allowance_are_refused_not_shed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Twenty connections with three streams each against a bound of 50: the streams past it are
    refused, but no connection has more than its allowance, so nobody is ended."""
    server = Server([Demo()], config=ServerConfig(max_streams_total=50))
    peers = [Peer(server) for _ in range(20)]
    for p in peers:
        await p.hello()
        for _ in range(3):
            await p.cc.open_stream()
    for _ in range(100):
        if server.stats["streams_refused"] >= 10 and any(
            "raise the bound" in r.getMessage() for r in caplog.records
        ):
            break
        await asyncio.sleep(0.005)
    assert server.stats["streams_open"] == 50 and server.stats["streams_refused"] == 10
    assert server.stats["streams_shed"] == 0 and not any(s.closed for s in server.sessions)
    assert any("raise the bound" in r.getMessage() for r in caplog.records)
    assert await peers[0].call(5, "test.Demo/Echo", b"ok") == (c.REPLY, 5, [b"ok", None, None])
    for p in peers:
        await p.cc.close()
    await server.shutdown(grace=0)


class Watch(kcprpc.Service, name="test.Watch"):
    async def watch(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
        await asyncio.Event().wait()  # the stream stays open


@pytest.mark.parametrize("link", ["kcp", "mux"])
async def test_a_call_whose_stream_the_server_refuses_fails_instead_of_waiting_for_good(link: str) -> None:
    """At ``max_streams_total`` the server closes a new call's stream at once, before reading its
    CALL: the client's call (no deadline) waited for its status for good. An EOF before the
    status cancels the call (docs/wire-format/rpc.md, "Framing")."""
    async with pair([Watch()], link=link, server_config=ServerConfig(max_streams_total=1)) as p:
        stub = p.client.stub(Watch)
        first = stub.watch(1)
        assert await asyncio.wait_for(first.__anext__(), 5) == 0
        second = stub.watch(1)
        with pytest.raises(RpcError) as e:
            await asyncio.wait_for(second.__anext__(), 5)
        assert e.value.status is Status.CANCELLED and "before its status" in e.value.message
        assert p.server.stats["streams_refused"] == 1 and p.client.connected
        first.cancel()
