"""The per-delivery work of a push fan-out (docs/BENCHMARKS.md "Performance (issue 16)", "Fan-out"):
what a session does, and does not do, per datagram it receives and per datagram batch it sends."""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import AsyncIterator
from typing import Any

import pytest

import kcp
import kcp.batch
from kcp.batch import Address, DatagramIO, gso_supported, open_udp_socket
from kcp.endpoint import Endpoint
from kcp.engine import IKCP_CMD_ACK, KCP, SEGMENT_HEADER
from kcp.stats import Counters


def _ack_packet(conv: int, sn: int, una: int) -> bytes:
    """One bare ikcp ACK segment (what a subscriber sends back per delivery)."""
    return SEGMENT_HEADER.pack(conv, IKCP_CMD_ACK, 0, 128, 0, sn, una, 0)


async def test_a_pure_ack_asks_for_no_flush_but_data_and_queued_writes_do() -> None:
    lis = await kcp.listen("127.0.0.1", 0)
    try:
        # ack_delay=0: the ack of a lone segment goes with the batch, not held for data to ride
        # with (that path: tests/integration/test_ack_delay.py)
        s = await kcp.dial("127.0.0.1", lis.address[1], session=kcp.SessionConfig(ack_delay=0))
        try:
            assert s.ack_nodelay  # the default: acks are flushed after each receive batch
            ep = s._ep
            now = ep.timers.now_ms()
            ep.flushq.clear()
            s.feed(_ack_packet(s.conv, 0, 0), now)
            s.after_input(now)
            assert s not in ep.flushq  # an ACK alone leaves nothing to send: no flush

            out: list[bytes] = []
            peer = KCP(s.conv, out.append)  # a peer's data segment: it needs an ack back, so a flush
            peer.send(b"event")
            peer.update(now)
            peer.flush(now)
            (packet,) = out
            s.feed(bytes(packet), now)
            s.after_input(now)
            assert ep.flushq.count(s) == 1
            s.flush_now(now)
            ep.flushq.clear()

            s.write(b"unacked")  # data waiting for its ack: an ACK input still flushes (window)
            s.flush_now(now)
            ep.flushq.clear()
            s.feed(_ack_packet(s.conv, 99, 0), now)
            s.after_input(now)
            assert ep.flushq.count(s) == 1
        finally:
            s.abort()
    finally:
        lis.close()
        await lis.wait_closed()


def test_engine_acks_pending_counts_what_the_next_flush_acknowledges() -> None:
    out: list[bytes] = []
    a, b = KCP(7, out.append), KCP(7)
    a.nodelay(1, 10, 2, 1)  # no congestion window: both segments go at once
    a.send(b"x")
    a.send(b"y")
    a.update(0)
    a.flush(0)
    assert b.acks_pending() == 0
    for p in out:
        b.input(p, 1)
    assert b.acks_pending() == 2
    b.flush(1)
    assert b.acks_pending() == 0


def test_a_lone_datagram_goes_by_sendto_not_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    a = open_udp_socket("127.0.0.1", 0)
    b = open_udp_socket("127.0.0.1", 0)
    try:
        a.connect(b.getsockname())  # a client's socket is connected to its server
        c = Counters()
        tx = DatagramIO(a, c, mmsg=True, gso=True)

        def no_batch(*args: object) -> int:
            raise AssertionError("a lone datagram should not fill a sendmmsg batch")

        monkeypatch.setattr(kcp.batch, "_sendmmsg", no_batch)
        assert tx.send([(b"ack", b.getsockname())]) == 1
        assert (c.send_syscalls, c.out_pkts, c.bytes_sent) == (1, 1, 3)
        b.settimeout(2.0)
        assert b.recv(100) == b"ack"
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(("mmsg", "gso"), [(True, True), (True, False), (False, False)])
def test_a_fan_out_batch_reaches_every_address_in_order(mmsg: bool, gso: bool) -> None:
    """One datagram per subscriber, addresses alternating (no GSO run longer than one): every
    subscriber gets its own datagrams, in order; a repeat to one address still forms a run."""
    tx_sock = open_udp_socket("127.0.0.1", 0)
    subs = [open_udp_socket("127.0.0.1", 0) for _ in range(5)]
    try:
        c = Counters()
        tx = DatagramIO(tx_sock, c, mmsg=mmsg, gso=gso and gso_supported())
        items = [(b"%d:%d" % (r, i), s.getsockname()) for r in range(20) for i, s in enumerate(subs)]
        items += [(b"run%d" % k, subs[0].getsockname()) for k in range(3)]  # a GSO run at the end
        assert tx.send(items) == len(items)
        assert c.out_pkts == len(items)
        for i, s in enumerate(subs):
            want = [b"%d:%d" % (r, i) for r in range(20)] + ([b"run0", b"run1", b"run2"] if i == 0 else [])
            got = [g[0] for g in _recv_n(DatagramIO(s), len(want))]
            assert got == want
    finally:
        tx_sock.close()
        for s in subs:
            s.close()


def test_a_fan_out_batch_goes_in_the_plain_arrays_and_a_run_in_the_gso_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Datagrams to different addresses (a fan-out) are packed one per message in the plain arrays,
    which need no per-message iovec and control setup; a run to one address still goes as one
    GSO message, in the arrays that carry the segment size."""
    tx_sock = open_udp_socket("127.0.0.1", 0)
    subs = [open_udp_socket("127.0.0.1", 0) for _ in range(4)]
    try:
        tx = DatagramIO(tx_sock, mmsg=True, gso=gso_supported())
        assert tx.mmsg
        calls: list[tuple[object, int]] = []
        real = kcp.batch._sendmmsg

        def spy(fd: int, msgs: int, m: int, flags: int) -> int:
            calls.append((msgs, m))
            return int(real(fd, msgs, m, flags))

        monkeypatch.setattr(kcp.batch, "_sendmmsg", spy)
        native = kcp.batch._native  # the compiled build's C module packs the plain batches itself
        plain: object = tx._b._smsg_ptr
        if native is not None:
            plain = "native"

            class NativeSpy:
                recv = native.recv

                @staticmethod
                def send(fd: int, items: list[Any], i: int, *rest: Any) -> tuple[int, int, int, int]:
                    m, got, done, err = native.send(fd, items, i, *rest)
                    calls.append(("native", m))
                    return m, got, done, err

            monkeypatch.setattr(kcp.batch, "_native", NativeSpy)
        items = [(b"f%d" % i, s.getsockname()) for i, s in enumerate(subs)]
        items += [(b"run%d" % k, subs[0].getsockname()) for k in range(3)]
        assert tx.send(items) == len(items)
        if tx.gso:  # the fan-out's 4 datagrams in 4 plain messages, then the run: one GSO message
            assert tx._b is not tx._bg
            assert calls == [(plain, 4), (tx._bg._smsg_ptr, 1)]
        else:
            assert calls == [(plain, 7)]
        got = [g[0] for g in _recv_n(DatagramIO(subs[0]), 4)]
        assert got == [b"f0", b"run0", b"run1", b"run2"]
    finally:
        tx_sock.close()
        for s in subs:
            s.close()


def _recv_n(io: DatagramIO, count: int) -> list[tuple[bytes, object]]:
    out: list[tuple[bytes, object]] = []
    while len(out) < count:
        ready, _, _ = select.select([io.sock], [], [], 2.0)
        assert ready, f"timed out after {len(out)} of {count} datagrams"
        out.extend(io.recv())
    return out


class _Sealer:
    """An endpoint user whose flush queues one datagram, and notes how many datagrams the
    endpoint had handed to its socket by then."""

    def __init__(self, ep: Endpoint, dest: tuple[str, int], log: list[int]) -> None:
        self.ep, self.dest, self.log = ep, dest, log

    def flush_now(self, now: int) -> None:
        self.log.append(self.ep.counters.out_pkts)
        self.ep.tx.append((b"d%d" % len(self.log), self.dest))

    def after_input(self, now: int) -> None:
        return None


@contextlib.asynccontextmanager
async def _fan_out() -> AsyncIterator[tuple[Endpoint, list[_Sealer], list[int]]]:
    """An endpoint and sealers for two full send batches plus 5; at the end, every datagram must
    have gone in 3 system calls and arrived in order."""
    loop = asyncio.get_running_loop()
    tx_sock = open_udp_socket("127.0.0.1", 0)
    rx = open_udp_socket("127.0.0.1", 0)
    ep = Endpoint(loop, tx_sock, Counters())
    try:
        log: list[int] = []
        users = [_Sealer(ep, rx.getsockname(), log) for _ in range(2 * ep.io.batch + 5)]
        yield ep, users, log
        assert ep.counters.out_pkts == len(users)
        assert ep.counters.send_syscalls == 3  # no more system calls than one send at the end
        got = [g[0] for g in _recv_n(DatagramIO(rx), len(users))]
        assert got == [b"d%d" % (i + 1) for i in range(len(users))]
    finally:
        ep.close()
        rx.close()


async def test_a_tick_sends_each_full_batch_as_soon_as_it_is_sealed() -> None:
    async with _fan_out() as (ep, users, log):
        batch = ep.io.batch
        ep.flushq.extend(users)
        ep._tick()
        assert log[batch - 1] == 0  # the first batch fills up ...
        assert log[batch] == batch  # ... and is on the socket before the next session flushes
        assert log[2 * batch] == 2 * batch


class _Replier:
    """An endpoint user that answers its input: its after_input asks for a flush (a receiver that
    wrote a reply), whose datagram goes to ``dest``."""

    def __init__(self, ep: Endpoint, dest: tuple[str, int]) -> None:
        self.ep, self.dest = ep, dest

    def after_input(self, now: int) -> None:
        self.ep.flushq.append(self)

    def flush_now(self, now: int) -> None:
        self.ep.tx.append((b"reply", self.dest))


@pytest.mark.parametrize(("inputs", "at_once"), [(1, True), (2, True), (3, False)])
async def test_a_quiet_batch_is_answered_in_the_callback_that_read_it(inputs: int, at_once: bool) -> None:
    """A receive batch of at most QUIET_BATCH datagrams: what its input made leaves before the read
    returns (ahead of the callbacks it queued, as a handler task's last step); a busier batch
    leaves it to the tick, so that many calls' replies and acks share datagrams."""
    loop = asyncio.get_running_loop()
    sock = open_udp_socket("127.0.0.1", 0)
    peer = open_udp_socket("127.0.0.1", 0)
    ep = Endpoint(loop, sock, Counters())
    try:
        user = _Replier(ep, peer.getsockname())

        def dispatch(data: bytes, addr: Address, now: int) -> None:
            if user not in ep.dirty:
                ep.dirty.append(user)

        ep.dispatch = dispatch
        for i in range(inputs):
            peer.sendto(b"request %d" % i, sock.getsockname())
        select.select([sock], [], [], 2.0)
        for _ in range(100):  # loopback delivers at once; bounded, in case the datagrams straggle
            ep._read(4)
            if ep.counters.in_pkts >= inputs:
                break
            select.select([sock], [], [], 0.05)
        assert ep.counters.in_pkts == inputs
        assert ep.counters.out_pkts == (1 if at_once else 0)
        if not at_once:
            assert ep.scheduled  # the tick is queued: it sends once the loop runs it
            await asyncio.sleep(0)
            assert ep.counters.out_pkts == 1
        assert [d for d, _ in _recv_n(DatagramIO(peer), 1)] == [b"reply"]
    finally:
        ep.close()
        peer.close()


async def test_a_quiet_read_sends_a_control_answer_without_a_loop_turn() -> None:
    """A datagram whose handling queues a datagram straight on the endpoint (a keepalive's
    PING_ACK, ``Endpoint.send``): it leaves before the read returns, and no tick is left
    scheduled for it; a read that queues nothing schedules a tick, which sends what the callbacks
    it queued write (a caller's next call)."""
    loop = asyncio.get_running_loop()
    sock = open_udp_socket("127.0.0.1", 0)
    peer = open_udp_socket("127.0.0.1", 0)
    ep = Endpoint(loop, sock, Counters())
    try:
        answer = {b"ping": True, b"quiet": False}

        def dispatch(data: bytes, addr: Address, now: int) -> None:
            if answer[data]:
                ep.send(b"pong", addr)

        ep.dispatch = dispatch
        for data, sent in ((b"ping", 1), (b"quiet", 1), (b"ping", 2)):
            peer.sendto(data, sock.getsockname())
            select.select([sock], [], [], 2.0)
            assert ep._read(4) == 1
            assert ep.counters.out_pkts == sent
            assert ep.scheduled is (data == b"quiet")  # no loop turn queued for an answer sent
            await asyncio.sleep(0)  # the quiet read's tick runs
            assert not ep.scheduled
        assert [d for d, _ in _recv_n(DatagramIO(peer), 2)] == [b"pong", b"pong"]
    finally:
        ep.close()
        peer.close()


async def test_a_fan_out_s_first_batch_leaves_before_its_later_writes() -> None:
    """Sessions queue their flush as they are written to (``Endpoint.queue_flush``): once a send
    batch's worth of them waits, they are flushed, sealed and sent at once, so the first peers of
    a fan-out get theirs while the later sessions are still being written; the rest go at the
    tick."""
    async with _fan_out() as (ep, users, _log):
        batch = ep.io.batch
        for i, u in enumerate(users):
            ep.queue_flush(u)
            # sent when the batch filled, not one write later: the datagrams of the first i + 1
            assert ep.counters.out_pkts == (i + 1) // batch * batch
        assert ep.scheduled  # the last 5 wait for the tick
        await asyncio.sleep(0)
