"""Send lanes over a real KCP engine on a seeded lossy, rate-limited link (virtual time).

The server side is what ``ServerSession.pump`` does: release lane frames while the transport holds
less than the window, the transport's figure being KCP's unacknowledged send queue (``waitsnd`` x
MSS, what ``MuxConnection.send_backlog`` counts). A 96 KiB bulk transfer congests the link; two
entities get an update every 5 ms meanwhile. Latest-wins sends far fewer updates than were made,
each entity's updates arrive in order and the newest of each arrives, ahead of the end of the bulk
transfer (the state lane goes first). The run is exactly reproducible from its seed.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from kcp.engine import KCP
from kcp.simlink import SimLink, drive
from kcprpc.codec import EVENT, encode_frame, unpack
from kcprpc.send_lanes import LaneConfig, SendLanes, encode_keyed_event

HEADER = struct.Struct(">IBI")
UPDATES = 100  # per entity, one every 5 ms
BULK_CHUNKS = 96  # 1 KiB each


class Client:
    """Reassembles EVENT frames from the KCP byte stream."""

    def __init__(self, kcp: KCP) -> None:
        self.kcp = kcp
        self.buf = bytearray()
        self.events: list[tuple[int, list[Any]]] = []  # (arrival ms, body)

    def read(self, now: int) -> None:
        while (m := self.kcp.recv()) is not None:
            self.buf += m
        while len(self.buf) >= HEADER.size:
            n, ftype, _ = HEADER.unpack_from(self.buf)
            if len(self.buf) < HEADER.size + n:
                break
            assert ftype == EVENT
            self.events.append((now, unpack(bytes(self.buf[HEADER.size : HEADER.size + n]))))
            del self.buf[: HEADER.size + n]


def run(seed: int, loss: float) -> tuple[Client, SendLanes, int]:
    ab = SimLink(seed=seed, loss=loss, delay=20, jitter=5, rate=40.0, limit=200)  # 40 KB/s
    ba = SimLink(seed=seed + 1, loss=loss, delay=20, jitter=5)
    s, r = KCP(7, ab.send), KCP(7, ba.send)
    for e in (s, r):
        e.nodelay(1, 10, 2, 1)
        e.wndsize(128, 128)
        e.stream = 1
    lanes = SendLanes(LaneConfig(window=8 * 1024))
    client = Client(r)
    for _ in range(BULK_CHUNKS):
        lanes.put(encode_frame(EVENT, 0, ["blob", bytes(1000), None, None, None, 0]), "bulk")
    made = {"A": 0, "B": 0}

    def step(now: int) -> bool:
        # the application: an update per entity every 5 ms for 500 ms (caught up at each step)
        while made["A"] < UPDATES and made["A"] * 5 <= now:
            for ent in ("A", "B"):
                made[ent] += 1
                seq = made[ent]
                lanes.put(encode_keyed_event("pos", {"x": seq}, None, seq, 1, ent), "state", ent)
        # the session's pump: the transport's backlog is KCP's unacknowledged queue
        budget = lanes.config.window - s.waitsnd() * s.mss
        if budget > 0:
            for frame, _, _ in lanes.take(budget):
                s.send(frame)
        client.read(now)
        blobs = sum(1 for _, b in client.events if b[0] == "blob")
        return made["A"] == UPDATES and not len(lanes) and blobs == BULK_CHUNKS

    end = drive(s, r, ab, ba, step, max_ms=120_000)
    return client, lanes, end


@pytest.mark.parametrize(("seed", "loss"), [(1, 0.0), (2, 0.05)])
def test_latest_wins_and_priority_over_congested_kcp(seed: int, loss: float) -> None:
    client, lanes, end = run(seed, loss)
    st = lanes.stats
    pos = [(t, b) for t, b in client.events if b[0] == "pos"]
    blobs = [t for t, b in client.events if b[0] == "blob"]
    # every update was either sent or replaced by a newer one of its entity, exactly
    assert st["lanes_sent"] == len(pos) + len(blobs)
    assert len(pos) + st["lanes_conflated"] == 2 * UPDATES
    assert st["lanes_conflated"] > UPDATES  # the link was congested: most updates never went out
    for ent in ("A", "B"):
        seqs = [int(b[3]) for _, b in pos if b[6] == ent]
        assert seqs == sorted(set(seqs))  # in order, no duplicate
        assert seqs[-1] == UPDATES  # the newest arrived
        last = max(t for t, b in pos if b[6] == ent)
        assert last < blobs[-1]  # ahead of the end of the bulk transfer (higher lane)
    assert end > 96_000 // 40  # the bulk transfer alone needs ~2.4 s at 40 KB/s


def test_the_run_is_reproducible() -> None:
    a, _, end_a = run(3, 0.05)
    b, _, end_b = run(3, 0.05)
    assert a.events == b.events and end_a == end_b
