"""KCP sessions over real loopback UDP: echo with every cipher, FEC, loss, closing, backpressure."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator

import pytest

import kcp
from kcp.crypt import CIPHER_NAMES
from kcp.demo import echo
from kcp.relay import LossyRelay
from kcp.session import KCPSession
from kcp.timers import NO_ENTRY, entry_due

TIMEOUT = 20.0


@pytest.fixture
async def echo_server() -> AsyncIterator[kcp.Listener]:
    lis = await kcp.listen("127.0.0.1", 0, on_accept=echo)
    yield lis
    lis.close()
    await lis.wait_closed()


async def _roundtrips(c: KCPSession, count: int = 10) -> None:
    for i in range(count):
        msg = b"ping %d " % i + bytes(i * 37 % 200)
        c.write(msg)
        assert await asyncio.wait_for(c.readexactly(len(msg)), TIMEOUT) == msg


async def _bulk(c: KCPSession, size: int, seed: int = 1, chunk: int = 16384) -> None:
    payload = random.Random(seed).randbytes(size)

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
    for i in range(0, size, chunk):
        c.write(payload[i : i + chunk])
        await asyncio.wait_for(c.drain(), TIMEOUT)
    echoed = await asyncio.wait_for(task, TIMEOUT)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


@pytest.mark.parametrize("fec", [(0, 0), (10, 3)], ids=["nofec", "fec10-3"])
@pytest.mark.parametrize("cipher", CIPHER_NAMES)
async def test_echo_every_cipher(cipher: str, fec: tuple[int, int]) -> None:
    ds, ps = fec
    async with await kcp.listen(
        "127.0.0.1", 0, kcp.CompatWire(crypt=cipher, key="secret", fec=(ds, ps)), on_accept=echo
    ) as lis:
        c = await kcp.dial(
            "127.0.0.1", lis.address[1], kcp.CompatWire(crypt=cipher, key="secret", fec=(ds, ps))
        )
        async with c:
            await _roundtrips(c, 5)
            await _bulk(c, 40_000)
            st = c.stats
            assert st["in_errs"] == 0 and st["kcp_in_errors"] == 0
            assert lis.stats["dropped_no_session"] == 0


async def test_wrong_key_never_connects() -> None:
    async with await kcp.listen(
        "127.0.0.1", 0, kcp.CompatWire(crypt="aes", key="right"), on_accept=echo
    ) as lis:
        c = await kcp.dial(
            "127.0.0.1",
            lis.address[1],
            kcp.CompatWire(crypt="aes", key="wrong"),
            session=kcp.SessionConfig(dead_link=4),
        )
        c.write(b"hello")
        with pytest.raises(kcp.DeadLinkError):
            await asyncio.wait_for(c.read(), TIMEOUT)
        assert len(lis) == 0
        assert lis.stats["in_csum_errors"] > 0 and lis.stats["dropped_no_session"] > 0


@pytest.mark.parametrize("fec", [(0, 0), (10, 3)], ids=["nofec", "fec10-3"])
async def test_transfer_through_lossy_relay(fec: tuple[int, int]) -> None:
    ds, ps = fec
    async with (
        await kcp.listen(
            "127.0.0.1", 0, kcp.CompatWire(crypt="aes", key="k", fec=(ds, ps)), on_accept=echo
        ) as lis,
        LossyRelay(target=lis.address, loss=10, jitter=2, delay=2, dup=1, reorder=1, seed=11) as relay,
    ):
        c = await kcp.dial("127.0.0.1", relay.address[1], kcp.CompatWire(crypt="aes", key="k", fec=(ds, ps)))
        async with c:
            await _roundtrips(c, 5)
            await _bulk(c, 300_000, seed=fec[0])
            st = c.stats
            assert st["retrans_segs"] > 0
            if ds:
                assert st["fec_recovered"] > 0
        assert relay.stats["up_dropped"] > 0 and relay.stats["down_dropped"] > 0


@pytest.mark.parametrize("mmsg", [True, False], ids=["mmsg", "fallback"])
async def test_batch_and_fallback_sessions_agree(mmsg: bool) -> None:
    async with await kcp.listen("127.0.0.1", 0, io=kcp.IOOptions(mmsg=mmsg), on_accept=echo) as lis:
        c = await kcp.dial("127.0.0.1", lis.address[1], io=kcp.IOOptions(mmsg=mmsg))
        async with c:
            await _roundtrips(c, 3)
            await _bulk(c, 200_000, seed=3)
        st = lis.stats
        if mmsg:
            assert st["recv_syscalls"] < st["in_pkts"] / 2
        else:
            assert st["recv_syscalls"] > st["in_pkts"]


def test_uvloop_and_default_loop() -> None:
    async def main() -> None:
        async with await kcp.listen("127.0.0.1", 0, on_accept=echo) as lis:
            c = await kcp.dial("127.0.0.1", lis.address[1])
            async with c:
                await _roundtrips(c, 3)
                await _bulk(c, 50_000)

    kcp.run(main())
    asyncio.run(main())


async def test_datagrams_both_ways() -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_accept(s: KCPSession) -> None:
        while True:
            try:
                d = await s.recv_datagram()
            except kcp.ConnectionClosedError:
                return
            await got.put(d)
            s.send_datagram(d[::-1])

    async with await kcp.listen(
        "127.0.0.1", 0, kcp.CompatWire(crypt="aes", key="k"), on_accept=on_accept
    ) as lis:
        c = await kcp.dial("127.0.0.1", lis.address[1], kcp.CompatWire(crypt="aes", key="k"))
        async with c:
            c.write(b"open")  # OOB packets alone never create a session (as in kcp-go)
            c.send_datagram(b"abc")
            assert await asyncio.wait_for(got.get(), TIMEOUT) == b"abc"
            assert await asyncio.wait_for(c.recv_datagram(), TIMEOUT) == b"cba"
            with pytest.raises(kcp.KCPUsageError):
                c.send_datagram(bytes(c.max_datagram_size() + 1))
            c.send_datagram(bytes(c.max_datagram_size()))
            assert len(await asyncio.wait_for(got.get(), TIMEOUT)) == c.max_datagram_size()


async def test_idle_timeout_closes_both_ends_and_listener_forgets() -> None:
    accepted: list[KCPSession] = []
    async with await kcp.listen("127.0.0.1", 0, session=kcp.SessionConfig(idle_timeout=0.3)) as lis:
        c = await kcp.dial("127.0.0.1", lis.address[1], session=kcp.SessionConfig(idle_timeout=0.3))
        c.write(b"hi")
        s = await asyncio.wait_for(lis.accept(), TIMEOUT)
        accepted.append(s)
        assert await s.read() == b"hi"
        t0 = asyncio.get_running_loop().time()
        await asyncio.wait_for(asyncio.gather(s.wait_closed(), c.wait_closed()), TIMEOUT)
        assert asyncio.get_running_loop().time() - t0 >= 0.25
        assert s.close_reason == c.close_reason == "idle timeout"
        assert await s.read() == b"" and await c.read() == b""
        with pytest.raises(kcp.ConnectionClosedError):
            c.write(b"late")
        assert len(lis) == 0


async def test_close_lingers_until_data_is_acked(echo_server: kcp.Listener) -> None:
    received = bytearray()
    done = asyncio.get_running_loop().create_future()
    size = 400_000

    async def sink(s: KCPSession) -> None:
        while len(received) < size:
            received.extend(await s.read(65536))
        done.set_result(None)

    async with await kcp.listen("127.0.0.1", 0, on_accept=sink) as lis:
        c = await kcp.dial("127.0.0.1", lis.address[1])
        payload = random.Random(5).randbytes(size)
        c.write(payload)
        c.close()  # no drain: close() must still deliver what was written
        assert c.is_closing()
        with pytest.raises(kcp.ConnectionClosedError):
            c.write(b"x")
        assert await c.read() == b""
        await asyncio.wait_for(c.wait_closed(), TIMEOUT)
        await asyncio.wait_for(done, TIMEOUT)
        assert bytes(received) == payload
        assert c.close_reason == "closed"


async def test_dead_link_raises_on_read_and_write() -> None:
    # a relay that drops everything: no ack ever comes back
    lis = await kcp.listen("127.0.0.1", 0, on_accept=echo)
    async with lis, LossyRelay(target=lis.address, loss=100) as relay:
        c = await kcp.dial("127.0.0.1", relay.address[1], session=kcp.SessionConfig(dead_link=5))
        c.write(b"into the void")
        with pytest.raises(kcp.DeadLinkError):
            await asyncio.wait_for(c.read(), TIMEOUT)
        with pytest.raises(kcp.DeadLinkError):
            c.write(b"again")
        with pytest.raises(kcp.DeadLinkError):
            await c.drain()
        assert c.closed and c.close_reason == "dead link"


async def test_backpressure_bounds_memory_of_a_slow_reader() -> None:
    accepted: asyncio.Queue[KCPSession] = asyncio.Queue()
    read_buffer = 64 * 1024
    async with await kcp.listen(
        "127.0.0.1", 0, session=kcp.SessionConfig(read_buffer=read_buffer, rcv_wnd=128)
    ) as lis:
        c = await kcp.dial("127.0.0.1", lis.address[1], session=kcp.SessionConfig(snd_wnd=64))
        chunk = bytes(8192)
        written = 0
        c.write(chunk)
        written += len(chunk)
        s = await asyncio.wait_for(lis.accept(), TIMEOUT)
        await accepted.put(s)
        # nobody reads on the server: the writer must stall
        stalled = False
        for _ in range(2000):
            c.write(chunk)
            written += len(chunk)
            try:
                await asyncio.wait_for(c.drain(), 0.5)
            except TimeoutError:
                stalled = True
                break
        assert stalled, "drain() never applied backpressure"
        mss = s.engine.mss
        # what the receiver holds is bounded by its buffer and its KCP receive window
        assert len(s._rbuf) <= read_buffer + mss * 128
        assert s.engine.nrcv_que <= s.engine.rcv_wnd
        assert written < read_buffer + (128 + 3 * 128) * mss + 2 * 8192 + 64 * mss * 2 * 2
        assert s.engine.rmt_wnd >= 0 and c.engine.rmt_wnd == 0  # the window closed
        # now read everything: the writer resumes and every byte arrives
        drain_task = asyncio.create_task(c.drain())
        got = 0
        while got < written:
            got += len(await asyncio.wait_for(s.read(65536), TIMEOUT))
        await asyncio.wait_for(drain_task, TIMEOUT)
        assert got == written
        c.close()
        await c.wait_closed()


async def test_usage_errors(echo_server: kcp.Listener) -> None:
    c = await kcp.dial("127.0.0.1", echo_server.address[1])
    async with c:
        reader = asyncio.create_task(c.read())
        await asyncio.sleep(0)  # let it start waiting (ordering only, not timing)
        with pytest.raises(kcp.KCPUsageError):
            await c.read()
        c.write(b"x")
        assert await asyncio.wait_for(reader, TIMEOUT) == b"x"
        with pytest.raises(kcp.KCPUsageError):
            await c.readexactly(-1)
    with pytest.raises(kcp.KCPUsageError):
        await kcp.dial("127.0.0.1", 9, kcp.CompatWire(crypt="aes"))  # a cipher needs a key
    with pytest.raises(kcp.KCPUsageError):
        await kcp.dial("127.0.0.1", 9, "aes")  # type: ignore[arg-type]  # not a wire
    with pytest.raises(kcp.KCPUsageError):
        kcp.SessionConfig(mtu=10)


async def test_readexactly_incomplete_after_close(echo_server: kcp.Listener) -> None:
    c = await kcp.dial("127.0.0.1", echo_server.address[1], session=kcp.SessionConfig(idle_timeout=0.3))
    c.write(b"abc")
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await asyncio.wait_for(c.readexactly(10), TIMEOUT)
    assert info.value.partial == b"abc"


async def test_tuning_and_stats(echo_server: kcp.Listener) -> None:
    c = await kcp.dial(
        "127.0.0.1", echo_server.address[1], session=kcp.SessionConfig(stream=False, ack_nodelay=False)
    )
    async with c:
        c.set_nodelay(0, 20, 0, 0)
        c.set_window(256, 256)
        c.set_mtu(1200)
        c.set_stream_mode(True)
        c.set_ack_nodelay(True)
        await _roundtrips(c, 3)
        st = c.stats
        assert st["snd_wnd"] == 256 and st["mtu"] == 1200
        assert st["out_pkts"] > 0 and st["in_pkts"] > 0 and st["srtt"] >= 0
        assert isinstance(c.conv, int) and c.remote_address[1] == echo_server.address[1]
    snap = kcp.snmp()
    assert snap["active_opens"] >= 1 and snap["in_segs"] > 0


def test_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from kcp.demo import main

    assert main(["--messages", "2", "--bulk", "100000", "--loss", "5", "--delay", "2"]) == 0
    out = capsys.readouterr().out
    assert "intact=True" in out and "echo 'hello #1 over KCP'" in out


async def test_idle_sessions_only_wait_for_their_idle_deadline(echo_server: kcp.Listener) -> None:
    clients = [
        await kcp.dial("127.0.0.1", echo_server.address[1], session=kcp.SessionConfig(idle_timeout=30))
        for _ in range(50)
    ]
    for c in clients:
        c.write(b"ping")
    for c in clients:
        assert await asyncio.wait_for(c.readexactly(4), TIMEOUT) == b"ping"
    for c in clients:
        # the echo carried the ack of our ping: nothing is in flight. The ack of the echo waits
        # (ack_delay, 5 ms) for data to ride with; once it went alone, the only wake-up left is the
        # idle deadline, 30 s away (no per-interval polling, no stale retransmission wake-up)
        assert c.write_buffer_size() == 0
        near = c._near._timer_entry  # retransmission, pacing and delayed-ack wake-ups
        if c._engine.acks_pending():
            assert near != NO_ENTRY and entry_due(near) <= c._last_recv + 5
            c._on_timer(entry_due(near))
            assert not c._engine.acks_pending()
        assert c._near._timer_entry == NO_ENTRY
        # the far entry: the idle deadline, where the dial set it (it moves later lazily: it
        # fires early at most once and then re-arms at the deadline of the time)
        entry = c._timer_entry
        now = c._timers.now_ms()
        assert entry != NO_ENTRY and now + 20_000 <= entry_due(entry) <= c._last_recv + 30_000
        c.abort()


async def test_a_message_and_its_ack_leave_the_far_wakeup_where_it_was() -> None:
    """A push to a thousand sessions sets a retransmission wake-up per session, and each ack
    removes it: that is the near entry's (kcp.session_timing.NearWake). The far one (the idle
    deadline, which every ack moves later) stays where it was: no heap insertion per message."""
    cfg = kcp.SessionConfig(idle_timeout=30, ack_delay=0)
    accepted: asyncio.Queue[kcp.KCPSession] = asyncio.Queue()
    async with await kcp.listen("127.0.0.1", 0, session=cfg, on_accept=accepted.put_nowait) as lis:
        c = await kcp.dial("127.0.0.1", lis.address[1], session=cfg)
        c.write(b"hi")
        s = await asyncio.wait_for(accepted.get(), TIMEOUT)
        assert await asyncio.wait_for(s.readexactly(2), TIMEOUT) == b"hi"
        far = s._timer_entry
        assert far != NO_ENTRY and entry_due(far) > s._timers.now_ms() + 20_000
        for _ in range(3):
            s.write(b"event")
            assert await asyncio.wait_for(c.readexactly(5), TIMEOUT) == b"event"
            c.write(b"ok")  # rides with (or follows) the client's ack of the event
            assert await asyncio.wait_for(s.readexactly(2), TIMEOUT) == b"ok"
            assert s._engine.waitsnd() == 0 and s._near._timer_entry == NO_ENTRY
            assert s._timer_entry == far
        c.abort()


async def test_an_ended_session_lets_go_of_what_it_had_not_sent() -> None:
    """A peer that stops reading leaves megabytes queued on our side; aborting the session frees
    them at once (the engine's queues are emptied), not whenever the session object is collected."""
    async with await kcp.listen("127.0.0.1", 0) as lis:
        c = await kcp.dial("127.0.0.1", lis.address[1])
        c.write(b"hi")
        s = await asyncio.wait_for(lis.accept(), 5)
        assert await asyncio.wait_for(s.readexactly(2), 5) == b"hi"
        s.write(b"x" * 4_000_000)  # c never reads: its read buffer fills and its window closes
        for _ in range(200):
            if s.engine.waitsnd() > 0 and s.send_backlog() > 1_000_000:
                break
            await asyncio.sleep(0.01)
        assert s.send_backlog() > 1_000_000
        s.abort()
        eng = s.engine
        assert eng.waitsnd() == 0 and not eng.snd_queue and not eng.snd_buf
        assert s.send_backlog() == 0
        c.close()


async def test_bbr_session_bulk_echo() -> None:
    """``congestion="bbr"``: the data arrives intact and the controller measured the path."""
    lis = await kcp.listen("127.0.0.1", 0, on_accept=echo)
    try:
        c = await kcp.dial("127.0.0.1", lis.address[1], session=kcp.SessionConfig(congestion="bbr"))
        cc = c.congestion_controller
        assert cc is not None
        # a delivery rate needs acks spread over 10 ms at least (half its 20 ms window): on
        # loopback the compiled build echoes 2 MiB in less, so send more until one was measured
        for seed in range(5, 5 + 16):
            await _bulk(c, 2 << 20, seed=seed, chunk=1 << 18)  # large writes: data always waits
            if cc.measured and cc.rounds > 0 and cc.bw > 0:
                break
        assert cc.bw > 0 and cc.rounds > 0 and cc.measured
        assert cc.pacing_rate == 0  # loopback: a min RTT below MIN_PACED_RTT is not paced
        c.close()
        await asyncio.wait_for(c.wait_closed(), TIMEOUT)
    finally:
        lis.close()
        await lis.wait_closed()


async def test_bbr_is_the_default_congestion_and_ikcp_has_no_controller() -> None:
    lis = await kcp.listen("127.0.0.1", 0, on_accept=echo)
    try:
        c = await kcp.dial("127.0.0.1", lis.address[1])
        assert c.config.congestion == "bbr"
        assert c.congestion_controller is not None
        c.abort()
        c = await kcp.dial("127.0.0.1", lis.address[1], session=kcp.SessionConfig(congestion="ikcp"))
        assert c.congestion_controller is None
        c.abort()
    finally:
        lis.close()
        await lis.wait_closed()
