"""Mux cores over two KCP engines on a seeded lossy, duplicating, reordering link (virtual time).

Both sides open many streams and push seeded data both ways; every byte must arrive intact and in
order, every stream must end with FIN both ways (released), and the receive bucket must never be
overdrawn by more than one frame. The mux core pulls from KCP only while it wants to read, so KCP's
own window carries the backpressure, as smux over kcp-go does in kcptun.
"""

from __future__ import annotations

import random

import pytest

from kcp.engine import KCP
from kcp.simlink import SimLink, drive
from kcprpc.mux import MuxConfig, MuxCore
from kcprpc.mux.core import StreamOpened, StreamRecord

CONV = 0x1D2E3F40


def pattern(sid: int, owner: str, size: int) -> bytes:
    return random.Random(f"{owner}:{sid}").randbytes(size)


class End:
    """One endpoint: a KCP engine, a mux core, and an application with its own streams."""

    def __init__(self, name: str, kcp: KCP, mux: MuxCore, n_open: int, rng: random.Random) -> None:
        self.name = name
        self.kcp = kcp
        self.mux = mux
        self.rng = rng
        self.out: list[tuple[StreamRecord, bytes, int]] = []  # our streams: state, data, offset
        for _ in range(n_open):
            st = mux.open_stream()
            size = rng.choice((0, 1, 777, 40_000, 150_000, 300_000, 600_000))
            self.out.append((st, pattern(st.stream_id, name, size), 0))
        self.incoming: dict[int, tuple[StreamRecord, bytearray]] = {}
        self.complete_in: dict[int, bytes] = {}
        self.min_bucket = mux.bucket

    def pump(self, now: int) -> None:
        mux, kcp = self.mux, self.kcp
        t = mux.next_timer()
        if t is not None and t <= now:
            mux.handle_timer(now)
        # application writes, bounded like MuxStream.drain() would bound them
        limit = mux.config.stream_send_buffer
        for i, (st, data, off) in enumerate(self.out):
            if off < len(data) and st.send_buffered < limit:
                n = min(len(data) - off, self.rng.randint(1, 20_000))
                mux.send(st, data[off : off + n])
                off += n
                self.out[i] = (st, data, off)
                if off == len(data):
                    mux.close_stream(st)
            elif not data and st.writable:
                mux.close_stream(st)
        # transport in: only while the mux wants more (its bucket has tokens)
        while mux.wants_read:
            m = kcp.recv()
            if m is None:
                break
            mux.receive_data(m, now)
            self.min_bucket = min(self.min_bucket, mux.bucket)
        for ev in mux.events():
            if isinstance(ev, StreamOpened):
                new = mux.get_stream(ev.stream_id)
                assert new is not None
                self.incoming[ev.stream_id] = (new, bytearray())
        # application reads, at a random pace
        for sid, (st, buf) in list(self.incoming.items()):
            if self.rng.random() < 0.7:
                buf += mux.read(st, self.rng.choice((100, 5000, -1)))
            if st.at_eof and sid not in self.complete_in:
                self.complete_in[sid] = bytes(buf)
                mux.close_stream(st)
        # mux out -> KCP, respecting KCP's send window
        while kcp.waitsnd() < 2 * kcp.snd_wnd:
            data = mux.data_to_send(16384)
            if not data:
                break
            assert kcp.send(data) == len(data)
        assert not mux.closed, mux.error


@pytest.mark.parametrize(("version", "loss", "seed"), [(1, 0.0, 1), (1, 0.1, 2), (2, 0.1, 3), (2, 0.25, 4)])
def test_many_streams_both_ways_over_lossy_kcp(version: int, loss: float, seed: int) -> None:
    cfg = MuxConfig(
        version=version, max_receive_buffer=256 * 1024, max_stream_buffer=64 * 1024, max_frame_size=4096
    )
    ab = SimLink(seed=seed * 11 + 1, loss=loss, dup=0.02, reorder=0.05, delay=10, jitter=5)
    ba = SimLink(seed=seed * 11 + 2, loss=loss, dup=0.02, reorder=0.05, delay=10, jitter=5)
    ka, kb = KCP(CONV, ab.send), KCP(CONV, ba.send)
    for k in (ka, kb):
        k.nodelay(1, 10, 2, 1)
        k.wndsize(256, 256)
        k.stream = 1
    a = End("client", ka, MuxCore(cfg, client=True), 20, random.Random(seed))
    b = End("server", kb, MuxCore(cfg, client=False), 12, random.Random(seed + 100))

    def done() -> bool:
        return (
            len(b.complete_in) == len(a.out)
            and len(a.complete_in) == len(b.out)
            and a.mux.num_streams == 0
            and b.mux.num_streams == 0
        )

    def step(now: int) -> bool:
        a.pump(now)
        b.pump(now)
        return done()

    def ack_now(ep: object, now: int) -> None:
        assert isinstance(ep, KCP)
        ep.flush(now)

    drive(ka, kb, ab, ba, step, after_input=ack_now, max_ms=600_000)
    for sender, receiver in ((a, b), (b, a)):
        for st, data, _ in sender.out:
            assert receiver.complete_in[st.stream_id] == data, f"stream {st.stream_id} corrupted"
        # the bucket is checked before each frame, so it can go at most one frame below zero
        assert receiver.min_bucket > -cfg.max_frame_size
        assert receiver.mux.counters["protocol_errors"] == 0
        assert receiver.mux.counters["dropped_unknown_stream"] == 0
    assert sorted(st.stream_id for st, _, _ in a.out) == list(range(3, 3 + 2 * 20, 2))
    assert sorted(st.stream_id for st, _, _ in b.out) == list(range(2, 2 + 2 * 12, 2))
    if loss:
        assert ab.lost and ba.lost
    if version == 2:  # per-stream flow control really ran
        assert a.mux.counters["upd_in"] > 0 and b.mux.counters["upd_in"] > 0
