"""Clients that stop reading: every send path of a session is bounded (docs/rpc.md, "Clients that
stop reading"). Driven through the public API over the real smux implementation in memory; the
client "stops reading" by stopping its mux reader (nothing is read off its transport any more) or
its control stream reader (the mux goes on, the control stream's window closes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

import kcprpc
from kcprpc import Client, ClientConfig, HeartbeatConfig, RpcError, ServerConfig, Status
from kcprpc.mux.core import MuxCore
from kcprpc.server import ServerSession
from kcprpc.testing import RpcPair, pair

TIMEOUT = 5.0
KIB = 1024


@kcprpc.event("bounds.news")
class News(BaseModel):
    data: bytes


@kcprpc.event("bounds.state", delivery="unreliable")
class State(BaseModel):
    data: bytes


class Svc(kcprpc.Service, name="test.Bounds"):
    def __init__(self) -> None:
        self.streamed = 0
        self.stream_done = asyncio.Event()
        self.hang_started = asyncio.Event()

    async def echo(self, data: bytes) -> bytes:
        return data

    async def hang(self) -> None:
        self.hang_started.set()
        await asyncio.Event().wait()

    async def trickle(self, n: int) -> AsyncIterator[bytes]:
        """``n`` messages of 1 KiB, one per loop turn (never more than one per tick: a flush per
        message, so only the stream's own buffer can show that the client stopped reading)."""
        chunk = b"s" * KIB
        try:
            for _ in range(n):
                yield chunk
                self.streamed += 1
                await asyncio.sleep(0)
        finally:
            self.stream_done.set()


def small(**kw: Any) -> ServerConfig:
    """A server with small send bounds, so that tests move little data."""
    base: dict[str, Any] = {
        "max_message_size": 16 * KIB,
        "max_send_backlog": 256 * KIB,
        "max_send_backlog_total": 1024 * KIB,
        "slow_consumer_timeout": None,
    }
    base.update(kw)
    return ServerConfig(**base)


PINGING = ClientConfig(heartbeat=HeartbeatConfig(interval=0.02, timeout=60.0))
"""A client that keeps pinging and never gives up on its side."""


def stop_reading_transport(client: Client) -> None:
    """The client reads nothing more off its connection: its mux's reader task stops, and a KCP
    session no longer hands its input to the mux directly (``KCPSession.set_receiver``)."""
    link: Any = client.lifecycle.link
    mux = link.conn.mux
    mux._reader.cancel()
    set_receiver = getattr(mux.transport, "set_receiver", None)
    if set_receiver is not None:
        set_receiver(None)


def stop_reading_control(client: Client) -> None:
    """The client stops reading its control stream; its mux goes on."""
    link: Any = client.lifecycle.link
    link.tasks[0].cancel()


async def until(cond: Any, timeout: float = TIMEOUT) -> None:
    """Wait for a condition that the event loop's own tasks make true (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def backlog(sess: ServerSession) -> int:
    """What the server holds for this client (mux unsent bytes plus the pipe's unread ones)."""
    fn = getattr(sess.conn, "send_backlog", None)
    return int(fn()) if fn is not None else 0


async def more_clients(p: RpcPair, n: int) -> list[Client]:
    """``n`` more pinging clients of ``p``'s server, connected (the caller closes them)."""
    out = []
    for _ in range(n):
        c = Client(p.connector, config=PINGING)
        await c.connect()
        out.append(c)
    return out


def only_session(p: RpcPair) -> ServerSession:
    (sess,) = p.server.sessions
    return sess


def watch_disconnect(client: Client) -> asyncio.Future[str]:
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_disconnect(_c: Client, reason: str) -> None:
        if not fut.done():
            fut.set_result(reason)

    client.on_disconnect = on_disconnect
    return fut


async def test_a_subscriber_that_stops_reading_ends_as_a_slow_consumer_and_is_told() -> None:
    svc = Svc()
    async with pair([svc], link="mux", server_config=small(), client_config=PINGING) as p:
        other = Client(p.connector)  # a legitimate client on the same server
        await other.connect()
        try:
            got: list[News] = []
            other.on(News, got.append)
            await other.subscribe("news")
            await p.client.subscribe("news")
            lost = watch_disconnect(p.client)
            pending = asyncio.ensure_future(p.client.stub(Svc).hang())
            await asyncio.wait_for(svc.hang_started.wait(), TIMEOUT)
            sess = next(s for s in p.server.sessions if s.id == p.client.session_id)
            stop_reading_transport(p.client)
            peak = sent = 0
            for _ in range(2000):  # 2 MB: eight times the bound
                if sess.closed:
                    break
                await p.server.push.publish("news", News(data=b"n" * KIB))
                sent += 1
                peak = max(peak, backlog(sess))
                await asyncio.sleep(0)
            assert sess.closed, "the session was never ended"
            # the bound, plus what may be written between two checks (1/32 of it) and one frame
            assert peak <= 256 * KIB + 8 * KIB + 2 * KIB
            reason = await asyncio.wait_for(lost, TIMEOUT)
            assert "RESOURCE_EXHAUSTED" in reason and "slow consumer" in reason
            with pytest.raises(RpcError) as e:
                await asyncio.wait_for(pending, TIMEOUT)
            assert e.value.status is Status.RESOURCE_EXHAUSTED and "slow consumer" in e.value.message
            assert p.server.stats["slow_consumers"] == 1
            # the other client's calls go on, and it got every event (pushed before this reply)
            assert await other.stub(Svc).echo(b"still here") == b"still here"
            assert len(got) == sent
            # the ended session is gone from the server and from the topic
            await until(lambda: len(p.server.sessions) == 1)
            assert p.server.push._local["topic:news"] == set(p.server.sessions)
        finally:
            await other.close()


async def test_past_the_process_wide_bound_the_largest_backlogs_end_first() -> None:
    cfg = small(max_send_backlog=256 * KIB, max_send_backlog_total=512 * KIB)
    async with pair([Svc()], link="mux", server_config=cfg, client_config=PINGING) as p:
        slow = [p.client, *await more_clients(p, 2)]
        reader = Client(p.connector)  # reads everything
        await reader.connect()
        try:
            got: list[News] = []
            reader.on(News, got.append)
            for c in [*slow, reader]:
                await c.subscribe("news")
            lost = [watch_disconnect(c) for c in slow]
            mine = next(s for s in p.server.sessions if s.id == reader.session_id)
            for c in slow:
                stop_reading_transport(c)
            sent = 0
            for _ in range(2000):  # each slow one alone stays under its 256 KiB: together over 512
                if p.server.stats["slow_consumers_shed"]:
                    break
                await p.server.push.publish("news", News(data=b"n" * KIB))
                sent += 1
                await asyncio.sleep(0)
            assert p.server.stats["slow_consumers_shed"] >= 1
            assert p.server.stats["slow_consumers"] == 0  # none had reached its own bound
            assert p.server._backlog_total <= 512 * KIB
            done, _ = await asyncio.wait(lost, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            assert done and all("slow consumer" in f.result() for f in done)
            assert not mine.closed  # the reading client is never among the largest
            assert await reader.stub(Svc).echo(b"x") == b"x"
            assert len(got) == sent
        finally:
            for c in [*slow[1:], reader]:
                await c.close()


async def test_unread_unary_replies_end_the_session_at_the_bound() -> None:
    async with pair([Svc()], link="mux", server_config=small(), client_config=PINGING) as p:
        lost = watch_disconnect(p.client)
        sess = only_session(p)
        stop_reading_control(p.client)
        echo = p.client.stub(Svc).echo
        calls = [asyncio.ensure_future(echo(b"r" * (8 * KIB))) for _ in range(200)]  # 1.6 MB of replies
        peak = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while not sess.closed and not all(c.done() for c in calls) and loop.time() < deadline:
            peak = max(peak, backlog(sess))
            await asyncio.sleep(0)
        assert sess.closed
        assert peak <= 256 * KIB + 8 * KIB + 9 * KIB  # the bound + 1/32 of it + one reply
        reason = await asyncio.wait_for(lost, TIMEOUT)
        assert "slow consumer" in reason
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), TIMEOUT)
        failed = [r for r in results if isinstance(r, RpcError)]
        assert failed and all(r.status is Status.RESOURCE_EXHAUSTED for r in failed)
        assert p.server.stats["slow_consumers"] == 1


async def test_pings_alone_do_not_keep_a_client_that_consumes_nothing() -> None:
    cfg = small(
        max_send_backlog=8 * 1024 * KIB,
        max_send_backlog_total=64 * 1024 * KIB,
        slow_consumer_timeout=0.3,
        heartbeat=HeartbeatConfig(interval=0.05, timeout=30.0),
    )
    async with pair([Svc()], link="mux", server_config=cfg, client_config=PINGING) as p:
        await p.client.subscribe("news")
        lost = watch_disconnect(p.client)
        sess = only_session(p)
        stop_reading_transport(p.client)
        stopped_at = sess.loop.time()
        for _ in range(3):  # a few events: far below the bound, they just wait
            await p.server.push.publish("news", News(data=b"n" * KIB))
        reason = await asyncio.wait_for(lost, TIMEOUT)
        assert "slow consumer" in reason and "none was consumed" in reason
        assert p.server.stats["slow_consumers_stalled"] == 1
        assert p.server.stats["slow_consumers"] == 0
        assert sess.last_receive > stopped_at + 0.2  # its pings kept arriving all along


async def test_a_client_that_reads_is_not_a_slow_consumer() -> None:
    cfg = small(slow_consumer_timeout=0.2, heartbeat=HeartbeatConfig(interval=0.02, timeout=30.0))
    async with pair([Svc()], link="mux", server_config=cfg, client_config=PINGING) as p:
        got: list[News] = []
        p.client.on(News, got.append)
        await p.client.subscribe("news")
        sess = only_session(p)
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.6  # three stall timeouts of steady traffic
        sent = 0
        while loop.time() < end:
            for _ in range(20):
                await p.server.push.publish("news", News(data=b"n" * (4 * KIB)))
                sent += 1
            await asyncio.sleep(0.01)
        assert not sess.closed
        assert p.server.stats["slow_consumers"] + p.server.stats["slow_consumers_stalled"] == 0
        assert await p.client.stub(Svc).echo(b"x") == b"x"
        assert len(got) == sent


async def test_unreliable_events_are_dropped_and_counted_not_queued_behind_a_backlog() -> None:
    async with pair([Svc()], link="mux", server_config=small(), client_config=PINGING) as p:
        await p.client.subscribe("state")
        sess = only_session(p)
        stop_reading_transport(p.client)
        big = State(data=b"u" * (4 * KIB))  # too big for a datagram: it would go on the stream
        for _ in range(500):  # 2 MB: eight times the bound
            await p.server.push.publish("state", big)
            await asyncio.sleep(0)
        assert not sess.closed  # unreliable traffic never ends a session
        assert p.server.stats["slow_consumers"] == 0
        assert p.server.stats["unreliable_dropped"] > 0
        assert sess.conn.send_backlog() <= 256 * KIB  # type: ignore[attr-defined]


async def test_a_stalled_stream_waits_without_growing_and_the_session_goes_on() -> None:
    svc = Svc()
    async with pair([svc], link="mux", server_config=small(), client_config=PINGING) as p:
        sess = only_session(p)
        total = 5000  # 5 MB if nothing held the handler back
        async with p.client.stream(Svc.trickle, total) as it:
            await it.__anext__()  # then the client reads this stream no more
            for _ in range(20000):  # loop turns, not time: the handler runs once per turn
                if svc.stream_done.is_set():
                    break
                await asyncio.sleep(0)
            assert not svc.stream_done.is_set(), "the handler streamed everything into memory"
            # the client buffers (its inbox, then one 512 KiB window); the server held at most
            # about stream_high_water (64 KiB) more
            assert svc.streamed < 1000
            assert sess.conn.send_backlog() <= 80 * KIB  # type: ignore[attr-defined]
            # one slow stream does not take the session down: calls go on
            assert await p.client.stub(Svc).echo(b"x") == b"x"
            assert not sess.closed and p.server.stats["slow_consumers"] == 0


def test_send_stall_times_a_stretch_without_consumption() -> None:
    from kcprpc.heartbeat import SendStall

    st = SendStall(1000)
    assert not st.observe(0, 0, 0) and st.since is None  # nothing waits: no stall
    assert not st.observe(100, 500, 7)  # data waits from now on
    assert st.since == 100
    assert not st.observe(900, 800, 7)  # more waits, nothing consumed yet
    assert st.observe(1100, 800, 7)  # 1000 ms without consumption
    st = SendStall(1000)
    st.observe(0, 500, 7)
    assert not st.observe(900, 500, 8)  # progress: the stretch starts again
    assert not st.observe(1800, 500, 8)
    assert st.observe(1900, 500, 8)
    st = SendStall(1000)
    st.observe(0, 500, 7)
    assert not st.observe(900, 400, 7)  # the backlog fell (acknowledged): progress too
    assert not st.observe(1500, 450, 7)
    assert st.observe(1900, 450, 7)
    assert not st.observe(2000, 0, 7) and st.since is None  # drained


def test_mux_core_keeps_the_unsent_total_of_all_streams() -> None:
    core = MuxCore(kcprpc.mux.MuxConfig(version=2, max_stream_buffer=64 * KIB), client=True)
    a, b = core.open_stream(), core.open_stream()
    core.send(a, b"a" * 100 * KIB)
    core.send(b, b"b" * 10 * KIB)
    assert core.send_buffered == 110 * KIB
    out = core.data_to_send(1 << 30)  # the peer's initial window (256 KiB per stream) lets it all out
    assert len(out) > 110 * KIB and core.send_buffered == 0
    core.send(a, b"a" * 300 * KIB)  # 44 KiB fit a's window, the rest waits for the peer
    core.data_to_send(1 << 30)
    assert core.send_buffered == a.send_bytes == 300 * KIB - (256 - 100) * KIB
    core.abort_stream(a)
    assert core.send_buffered == 0


def test_close_codes_carry_a_status() -> None:
    from kcprpc.transport import close_code, close_status

    assert close_status(close_code(Status.RESOURCE_EXHAUSTED)) is Status.RESOURCE_EXHAUSTED
    assert close_status(0) is None and close_status(9) is None and close_status(None) is None


def test_config_validates_the_send_bounds() -> None:
    with pytest.raises(kcprpc.UsageError):
        ServerConfig(max_send_backlog=4 * 1024 * KIB)  # not above max_message_size (4 MiB)
    with pytest.raises(kcprpc.UsageError):
        ServerConfig(max_send_backlog_total=1024 * KIB)  # below max_send_backlog
    with pytest.raises(kcprpc.UsageError):
        ServerConfig(slow_consumer_timeout=0)
    cfg = ServerConfig()
    assert (cfg.max_send_backlog, cfg.max_send_backlog_total, cfg.slow_consumer_timeout) == (
        8 * 1024 * KIB,
        64 * 1024 * KIB,
        10.0,
    )


async def test_events_waiting_in_send_lanes_count_in_the_process_wide_backlog() -> None:
    """Lanes hold a client's events back while its transport holds ``lanes.window``; each lane is
    bounded per session (bulk: 1 MiB, refusing past it), but what they held was in no backlog
    figure: clients that read just enough made the server hold 1.5 MiB each, past
    ``max_send_backlog_total`` and never shed. Now the sweep counts it: past the total the largest
    are shed."""
    from kcprpc.send_lanes import LaneConfig

    cfg = small(
        max_send_backlog=512 * KIB,
        max_send_backlog_total=512 * KIB,
        lanes=LaneConfig(window=8 * KIB),
        heartbeat=HeartbeatConfig(interval=0.05, timeout=60.0),
    )
    async with pair([Svc()], link="mux", server_config=cfg, client_config=PINGING) as p:
        slow = [p.client, *await more_clients(p, 2)]
        try:
            lost = [watch_disconnect(c) for c in slow]
            for c in slow:
                stop_reading_transport(c)
            sessions = list(p.server.sessions)
            for _ in range(300):  # 300 KiB in each one's bulk lane: 900 KiB together
                for s in sessions:
                    s.send(News(data=b"n" * KIB), lane="bulk")
            assert all(s.lanes is not None and s.lanes.queued_bytes > 256 * KIB for s in sessions)
            await until(lambda: p.server.stats["slow_consumers_shed"] >= 1)
            done, _ = await asyncio.wait(lost, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            assert done and all("slow consumer" in f.result() for f in done)
        finally:
            for c in slow[1:]:
                await c.close()


class Heavy(kcprpc.Service, name="test.Heavy"):
    """A handler that waits on something first (a broker's history, a database), then answers big."""

    def __init__(self) -> None:
        self.ran = 0

    async def page(self, n: int) -> bytes:
        await asyncio.sleep(0.001)  # (a round trip to the broker)
        self.ran += 1
        return b"x" * n


async def test_a_session_ended_as_a_slow_consumer_runs_none_of_the_calls_it_queued() -> None:
    """A client pipelines many calls whose handlers wait on something and then answer big (a
    ``History`` of a room over Redis), and reads nothing: the session ends as a slow consumer after
    a few replies, and its calls stop there: the running ones are cancelled and the queued ones
    run no handler. Before, every one ran to its end after the session was over (the audit: 150
    such calls cost the server seconds of CPU)."""
    heavy = Heavy()
    cfg = small(max_message_size=64 * KIB, max_send_backlog=128 * KIB, max_send_backlog_total=1024 * KIB)
    async with pair([heavy], link="mux", server_config=cfg, client_config=PINGING) as p:
        c = p.client
        lost = watch_disconnect(c)
        stop_reading_transport(c)
        stub = c.stub(Heavy)
        calls = [asyncio.ensure_future(stub.page(60 * KIB)) for _ in range(60)]
        reason = await asyncio.wait_for(lost, TIMEOUT)
        assert "slow consumer" in reason
        await asyncio.wait(calls, timeout=TIMEOUT)
        assert all(f.done() for f in calls)
        for f in calls:
            f.exception()  # retrieved
        await asyncio.sleep(0.05)  # what was cancelled would have finished by now
        assert heavy.ran <= 10, heavy.ran
