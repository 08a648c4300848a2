"""Path MTU discovery under a secure session's packet path (kcp.secure_path.SecurePath, the real
glue) on the seeded simulated link: a link that drops every datagram above a size. The MTU
converges to the largest size that passes, the KCP engine sends segments of that size, and when
the path MTU shrinks the search detects the black hole, falls back to the base and finds the new
size. Compat mode has no path MTU search."""

from __future__ import annotations

import random
from typing import Any, cast

from kcp.engine import KCP
from kcp.path import CompatPath
from kcp.pipeline import Pipeline, bare_kcp
from kcp.secure import HandshakeConfig, SecureConnection, generate_keypair
from kcp.secure.testing import CLIENT_ADDR, SERVER_ADDR, run_handshake, seeded_rng
from kcp.secure_path import SECURE_OVERHEAD, SecurePath, conv_of
from kcp.simlink import SimLink, drive
from kcp.stats import Counters

PRIV, PUB = generate_keypair(seeded_rng(5))
KNOBS: dict[str, Any] = {
    "pmtud_max": 1472,
    "pmtud_probe_timeout_ms": 200,
    "pmtud_confirm_ms": 2000,
    "pmtud_raise_ms": 60_000,
}


class CappedLink(SimLink):
    """A SimLink that drops every datagram longer than ``cap`` (a path MTU without ICMP), when it
    is sent and, if ``cap`` fell meanwhile, when it would arrive (the route changed under it)."""

    def __init__(self, cap: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.cap = cap
        self.too_big = 0
        self.largest = 0

    def send(self, data: bytes, now: int | None = None) -> None:
        if len(data) > self.cap:
            self.too_big += 1
            return
        self.largest = max(self.largest, len(data))
        super().send(data, now)

    def deliver(self, now: int) -> list[bytes]:
        out = super().deliver(now)
        kept = [d for d in out if len(d) <= self.cap]
        self.too_big += len(out) - len(kept)
        return kept


class _Timers:
    def __init__(self) -> None:
        self.now = 0

    def now_ms(self) -> int:
        return self.now


class _Endpoint:
    def __init__(self) -> None:
        self.tx: list[tuple[bytes, Any]] = []
        self.timers = _Timers()
        self.loop: Any = None

    def kick(self) -> None:
        return None

    def send(self, datagram: bytes, addr: Any) -> None:
        self.tx.append((datagram, addr))

    def forget(self, addr: Any) -> None:
        return None


class Side:
    """One end: a KCP engine, its pipeline and a real SecurePath; the path's owner (PathOwner)."""

    def __init__(self, conn: SecureConnection, out: SimLink, peer: Any, now: int) -> None:
        self.conn = conn
        self.out = out
        self.peer = peer
        self.ep = _Endpoint()
        self.ep.timers.now = now
        self.path = SecurePath(cast(Any, self.ep), conn, now)
        self.remote_address = peer
        self.goaway_received: tuple[int, str] | None = None
        self.ended = False
        self.counters = Counters()
        self.pipe = Pipeline(None, 0, 0, Counters())
        self.overhead = self.pipe.overhead + SECURE_OVERHEAD
        eng = self.engine = KCP(conv_of(conn), self.path.make_output(self.pipe, True, self.counters))
        eng.counters = self.counters
        eng.nodelay(1, 10, 2, 1)
        eng.wndsize(128, 128)
        eng.stream = 1
        eng.setmtu(conn.params.mtu - self.overhead)
        self.received = bytearray()
        self.path.attach(self)  # as KCPSession does: after the engine is built

    # PathOwner
    def feed(self, datagram: bytes, now: int) -> None:
        if bare_kcp(datagram):
            self.engine.input(datagram, now)
            return
        for _kind, pkt in self.pipe.open(datagram, now):
            self.engine.input(pkt, now)

    def touch(self, now: int) -> None:
        return None

    def request_flush(self) -> None:
        return None

    def peer_closed(self, now: int, code: int, reason: str) -> None:
        self.ended = True

    def set_mtu(self, mtu: int) -> None:
        assert self.engine.setmtu(mtu - self.overhead) == 0

    # simlink.drive's endpoint
    def _flush(self, now: int) -> None:
        for d, _addr in self.ep.tx:
            self.out.send(d, now)
        self.ep.tx.clear()

    def input(self, data: bytes, now: int) -> None:
        self.ep.timers.now = now
        self.path.input(data, self.peer, now)
        self._flush(now)

    def update(self, now: int) -> None:
        self.ep.timers.now = now
        if now >= self.path.timer():
            self.path.on_timer(now)
        self.engine.update(now)
        while (m := self.engine.recv()) is not None:
            self.received += m
        self._flush(now)

    def check(self, now: int) -> int:
        return min(self.engine.check(now), self.path.timer())

    @property
    def pmtu(self) -> int:
        assert self.path.pmtud is not None
        return self.path.pmtud.plpmtu


def _setup(cap: int, **knobs: Any) -> tuple[Side, Side, CappedLink, CappedLink, int]:
    k = KNOBS | knobs
    run = run_handshake(
        HandshakeConfig(server_public_key=PUB, **k),
        HandshakeConfig(static_key=PRIV, **k),
    )
    cc, sc, now = run.client_conn, run.server_conn, run.now
    assert cc is not None and sc is not None
    assert cc.params.mtu == 1400
    up = CappedLink(cap, seed=1, delay=20, jitter=5)
    down = CappedLink(cap, seed=2, delay=20, jitter=5)
    client = Side(cc, up, SERVER_ADDR, now)
    server = Side(sc, down, CLIENT_ADDR, now)
    return client, server, up, down, now


def _transfer(client: Side, server: Side, up: SimLink, down: SimLink, start: int, size: int) -> int:
    payload = random.Random(start).randbytes(size)
    base = len(server.received)
    for i in range(0, size, 16384):
        chunk = payload[i : i + 16384]
        assert client.engine.send(chunk) == len(chunk)

    def done(now: int) -> bool:
        return len(server.received) >= base + size and client.engine.waitsnd() == 0

    end = drive(client, server, up, down, done, start=start, max_ms=60_000)
    assert bytes(server.received[base:]) == payload
    return end


def _idle(client: Side, server: Side, up: SimLink, down: SimLink, start: int, ms: int) -> int:
    return drive(client, server, up, down, lambda now: now >= start + ms, start=start, max_ms=ms + 1000)


def test_the_mtu_converges_to_the_largest_size_that_passes_then_falls_back_when_it_shrinks() -> None:
    client, server, up, down, now = _setup(cap=1450)
    now = _idle(client, server, up, down, now, 5000)
    assert 1450 - 16 <= client.pmtu <= 1450 and 1450 - 16 <= server.pmtu <= 1450
    assert client.engine.mtu == client.pmtu - client.overhead  # the engine uses it
    now = _transfer(client, server, up, down, now, 200_000)
    assert up.largest == client.pmtu  # full segments of the discovered size crossed the link
    stats: dict[str, int] = {}
    client.path.add_stats(stats)
    assert stats["pmtu"] == client.pmtu
    assert stats["pmtud_probes_lost"] >= 3 and stats["pmtud_probes_acked"] >= 1
    assert stats["secure_mtu_probe_acks"] >= stats["pmtud_probes_acked"]
    assert server.conn.counters.mtu_probes_answered >= stats["pmtud_probes_acked"]

    # the route changes: 1300 bytes now, without any signal (no ICMP)
    up.cap = down.cap = 1300
    now = _idle(client, server, up, down, now, 8000)  # confirmation at 2 s, 3 rounds of 200 ms
    assert client.path.pmtud is not None and client.path.pmtud.black_holes == 1
    assert 1300 - 16 <= client.pmtu <= 1300
    assert client.engine.mtu == client.pmtu - client.overhead
    before = up.too_big
    now = _transfer(client, server, up, down, now, 100_000)
    assert up.too_big == before  # no data datagram above the new path MTU
    assert up.largest <= 1450


def test_the_search_starts_at_the_base_and_lost_probes_keep_it() -> None:
    client, server, up, down, now = _setup(cap=1200)
    assert client.pmtu == 1200 and client.engine.mtu == 1200 - client.overhead  # before any probe
    now = _idle(client, server, up, down, now, 10_000)
    assert client.pmtu == 1200 and client.engine.mtu == 1200 - client.overhead
    assert client.path.pmtud is not None
    assert client.path.pmtud.black_holes == 0 and client.path.pmtud.probes_lost >= 3
    _transfer(client, server, up, down, now, 50_000)
    assert up.largest <= 1200


def test_a_path_smaller_than_the_negotiated_mtu_is_found_from_below() -> None:
    """1300 bytes pass, the negotiated MTU is 1400: the search starts at 1200 and stops below 1300,
    so data never goes out at a size the path drops."""
    client, server, up, down, now = _setup(cap=1300)
    now = _transfer(client, server, up, down, now, 100_000)
    now = _idle(client, server, up, down, now, 10_000)
    assert 1300 - 16 <= client.pmtu <= 1300 and 1300 - 16 <= server.pmtu <= 1300
    assert client.path.pmtud is not None and server.path.pmtud is not None
    # every datagram the path dropped was a probe: no data went out too big
    assert up.too_big == client.path.pmtud.probes_lost > 0
    assert down.too_big == server.path.pmtud.probes_lost > 0
    assert client.counters.retrans_segs == 0


def test_retransmissions_start_a_confirmation_before_its_timer() -> None:
    """The path shrinks in the middle of a transfer: KCP resends, the session suspects its MTU
    and confirms it at once (not after the 60 s confirmation timer), finds the black hole and
    falls back. (Segments already sent at the old size stay that size: KCP cannot split them.)"""
    client, server, up, down, now = _setup(cap=1500, pmtud_confirm_ms=60_000)
    now = _idle(client, server, up, down, now, 2000)
    assert client.pmtu == 1472
    payload = random.Random(9).randbytes(16384)
    for _ in range(4):
        assert client.engine.send(payload) == len(payload)
    up.cap = down.cap = 1300
    now = _idle(client, server, up, down, now, 8000)
    assert client.counters.retrans_segs > 0
    pm = client.path.pmtud
    assert pm is not None and pm.black_holes == 1
    assert 1300 - 16 <= client.pmtu <= 1300  # within 8 s of the shrink, with a 60 s timer


def test_pmtud_off_sends_no_probes() -> None:
    run = run_handshake(
        HandshakeConfig(server_public_key=PUB, pmtud=False),
        HandshakeConfig(static_key=PRIV, pmtud=False),
    )
    assert run.client_conn is not None
    path = SecurePath(cast(Any, _Endpoint()), run.client_conn, run.now)
    assert path.pmtud is None
    stats: dict[str, int] = {}
    path.add_stats(stats)
    assert "pmtu" not in stats


def test_compat_paths_have_no_mtu_search() -> None:
    path = CompatPath(cast(Any, _Endpoint()))
    assert not path.has_timer and not hasattr(path, "pmtud")
    stats: dict[str, int] = {}
    path.add_stats(stats)
    assert stats == {}


def _drop_mid_transfer(**knobs: Any) -> tuple[Side, Side, CappedLink, CappedLink, bytes, int, int]:
    """A 300 KB transfer on a 1472-byte path; 100 ms in, the path shrinks to 1252 bytes of UDP
    payload (a 1280-byte IPv6-minimum link, no ICMP) with full-size segments in flight both ways.
    Returns the sides, the uplink, the payload, when the drop happened and when the run ended
    (all delivered and acked, or 60 s)."""
    client, server, up, down, now = _setup(cap=1500, **knobs)
    up.rate = down.rate = 300.0  # 2.4 Mbit/s, a router queue of 100 ms: the transfer takes a second
    up.limit = down.limit = 100
    for side in (client, server):
        side.engine.wndsize(16, 128)  # 23 KB in flight: the queue never overflows
    now = _idle(client, server, up, down, now, 2000)
    assert client.pmtu == server.pmtu == 1472
    payload = random.Random(11).randbytes(300_000)
    for i in range(0, len(payload), 16384):
        chunk = payload[i : i + 16384]
        assert client.engine.send(chunk) == len(chunk)
    now = _idle(client, server, up, down, now, 100)
    assert client.engine.nsnd_buf > 0 and up.largest == 1472  # full-size segments in flight
    drop = now
    up.cap = down.cap = 1252

    def done(t: int) -> bool:
        return (len(server.received) >= len(payload) and client.engine.waitsnd() == 0) or t >= drop + 60_000

    end = drive(client, server, up, down, done, start=now, max_ms=61_000)
    return client, server, up, down, payload, drop, end


def test_a_session_survives_an_mtu_drop_with_full_size_segments_in_flight() -> None:
    """The path MTU falls while segments of the old size are in flight: KCP can only resend them
    whole, so they go as DATA_PART pieces that fit the new MTU, and the peer reassembles them.
    Every byte arrives, the MTU falls back and is found again below the new path MTU."""
    client, server, up, down, payload, drop, end = _drop_mid_transfer()
    assert bytes(server.received) == payload
    assert client.engine.state == 0 and client.engine.waitsnd() == 0  # no dead link
    assert end - drop < 5000  # seconds, not a dead link
    pm = client.path.pmtud
    assert pm is not None and pm.black_holes == 1 and pm.plpmtu <= 1252
    _idle(client, server, up, down, end, 5000)  # the search below the failed size ends
    assert 1252 - 16 <= pm.plpmtu <= 1252 and client.engine.mtu == pm.plpmtu - client.overhead
    cc, sc = client.conn.counters, server.conn.counters
    assert cc.payloads_split > 0 and cc.parts_sent >= 2 * cc.payloads_split
    assert sc.parts_reassembled == cc.payloads_split  # nothing lost on this link but the too-big
    assert sc.part_errors == 0 and sc.parts_dropped == 0
    assert server.conn.parts_pending == (0, 0)


def test_without_data_parts_the_same_drop_stalls_the_session() -> None:
    """The same drop with DATA_PART off (an older peer): the MTU falls back, but the segments
    already sent at 1472 bytes can never cross, and the transfer does not finish."""
    client, server, _up, _down, payload, drop, end = _drop_mid_transfer(data_parts=False)
    assert not client.conn.params.data_parts
    assert end >= drop + 60_000 and len(server.received) < len(payload)
    pm = client.path.pmtud
    assert pm is not None and pm.black_holes == 1 and pm.plpmtu <= 1252  # the search did its part
    assert client.conn.counters.payloads_split == 0


def test_random_loss_of_small_messages_starts_no_confirmation_rounds() -> None:
    # Calls and events are smaller than the search's base: their loss cannot mean that the path
    # MTU fell, so retransmitting them must not bring the two full-size probes of a
    # confirmation round (which at 5 % loss had doubled a call's bytes).
    client, server, up, down, now = _setup(cap=1500, pmtud_confirm_ms=600_000)
    now = _idle(client, server, up, down, now, 3000)
    assert client.pmtu == 1472
    assert client.path.pmtud is not None
    probes = client.path.pmtud.probes_sent
    up.loss = down.loss = 0.2
    for _ in range(60):  # 64-byte messages, 200 ms apart: many of them resent
        client.engine.send(bytes(64))
        now = _idle(client, server, up, down, now, 200)
    assert client.counters.retrans_segs > 5
    assert client.path.pmtud.probes_sent == probes  # no round was started by suspicion
    # large data that is being resent does start one (at most one per 5 probe timeouts)
    now = _transfer(client, server, up, down, now, 100_000)
    assert client.path.pmtud.probes_sent > probes
