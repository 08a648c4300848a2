"""Compat mode against clients that hold the key (items 7 and 8 of the hostile-clients issue).

Through :func:`kcp.listen`/:func:`kcp.dial` and raw datagrams on loopback:

- item 7: one captured client datagram replayed from many source addresses creates no session
  and no per-address state, and legitimate clients connect during the spray; unproven peers
  (one forged datagram each) are bounded and expire; new sessions are rate limited per prefix;
  every per-peer table empties once the peers are gone;
- item 8: packets of a new conversation with ``sn == 0`` sent from a live client's address (kcp-go's
  restart rule) do not end that client's session, even when a second, different packet proves the
  new conversation, because the live client answers the listener's liveness probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import struct
from collections.abc import Callable

from raw_peer import RawPeer, push

import kcp
from kcp.admission import AdmissionConfig
from kcp.batch import open_udp_socket
from kcp.crypt import derive_key, new_crypt
from kcp.demo import echo
from kcp.demux.address import AddressDemux
from kcp.pipeline import Pipeline
from kcp.session import KCPSession
from kcp.stats import Counters

TIMEOUT = 10.0
KEY = "every player has it"
OPTS = {"crypt": "aes", "key": KEY}
WIRE = kcp.CompatWire(crypt="aes", key=KEY)
CHALLENGE_ACK = struct.Struct("<IBBHIIII")  # conv cmd frg wnd ts sn una len


def _sealer() -> Pipeline:
    """The transport's own packet encoder with the key (which every player holds)."""
    return Pipeline(new_crypt("aes", derive_key(OPTS["key"])), 0, 0, Counters())


async def _until(cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait (bounded) until ``cond()`` holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


async def _capture_first_datagram() -> bytes:
    """A real compat client's first datagram, read by a socket that plays the server."""
    loop = asyncio.get_running_loop()
    trap = open_udp_socket("127.0.0.1", 0)
    try:
        c = await kcp.dial("127.0.0.1", trap.getsockname()[1], WIRE)
        c.write(b"hello")
        data = await asyncio.wait_for(loop.sock_recv(trap, 4096), TIMEOUT)
        c.abort()
        return data
    finally:
        trap.close()


async def _echo_once(port: int, msg: bytes) -> KCPSession:
    c = await kcp.dial("127.0.0.1", port, WIRE)
    c.write(msg)
    assert await asyncio.wait_for(c.readexactly(len(msg)), TIMEOUT) == msg
    return c


async def test_one_captured_datagram_replayed_from_many_addresses_costs_no_session() -> None:
    """Item 7: kcp-go (and our listener before) made one session per spoofed address."""
    n = 300
    async with await kcp.listen("127.0.0.1", 0, WIRE, on_accept=echo) as lis:
        captured = await _capture_first_datagram()
        sources = [open_udp_socket("127.0.0.1", 0) for _ in range(n)]
        try:
            for s in sources:  # byte-identical copies, twice from each address
                s.sendto(captured, lis.address)
                s.sendto(captured, lis.address)
            # a legitimate client after the spray: once it is served, the spray was handled
            c = await _echo_once(lis.address[1], b"legit")
            st = lis.stats
            assert len(lis) == 1  # the legitimate client only
            assert st["dropped_replay"] == 2 * n - 1  # all but the first copy
            assert st["pending_created"] == 2 and st["pending_promoted"] == 1
            assert st["pending"] == 1  # the first source's entry, until it expires
            sizes = lis.state_sizes()
            # no per-address state for the dropped copies: one pending source, one client
            assert sizes["recv_addr_cache"] <= 2 and sizes["send_addr_cache"] <= 2
            c.abort()
        finally:
            for s in sources:
                s.close()


async def test_unproven_peers_are_bounded_answered_small_and_expire() -> None:
    """Item 7 with forged datagrams (one new conv per source): bounded pending table, no session."""
    n = 200
    adm = AdmissionConfig(max_pending=50, pending_timeout=0.5)
    sealer = _sealer()
    async with await kcp.listen("127.0.0.1", 0, WIRE, on_accept=echo, admission=adm) as lis:
        sources = [open_udp_socket("127.0.0.1", 0) for _ in range(n)]
        try:
            forged = [sealer.seal(push(1000 + i, 0, b"q" * 100, ts=1), 0)[0] for i in range(n)]
            for s, d in zip(sources, forged, strict=True):
                s.sendto(d, lis.address)
            c = await _echo_once(lis.address[1], b"legit")
            st = lis.stats
            assert len(lis) == 1 and st["pending_promoted"] == 1
            assert st["pending_created"] == n + 1
            assert st["pending_evicted"] == n + 1 - 50  # the oldest went first
            assert st["pending"] == 49
            assert lis.state_sizes()["pending_bytes"] <= 50 * 2048
            # each source got one challenge, smaller than what it sent (no amplification)
            loop = asyncio.get_running_loop()
            reply = await asyncio.wait_for(loop.sock_recv(sources[-1], 4096), TIMEOUT)
            assert len(reply) < len(forged[-1])
            # the pending peers expire, and with them every per-address entry
            await _until(lambda: lis.stats["pending"] == 0)
            c.abort()
            await _until(lambda: len(lis) == 0 or lis.stats["pending_expired"] >= 49)
            assert lis.stats["pending_expired"] == 49
            sizes = lis.state_sizes()
            assert sizes["pending"] == sizes["pending_bytes"] == sizes["restart_candidates"] == 0
            assert sizes["recv_addr_cache"] <= 1 and sizes["send_addr_cache"] <= 1  # the client's
        finally:
            for s in sources:
                s.close()


async def test_new_sessions_are_rate_limited_per_prefix() -> None:
    """A proven peer over its prefix's rate waits (pending) instead of becoming a session."""
    adm = AdmissionConfig(exempt=(), rate=20.0, burst=2)
    async with await kcp.listen("127.0.0.1", 0, WIRE, admission=adm) as lis:
        peers = [RawPeer(lis.address, **OPTS) for _ in range(5)]
        try:
            for i, p in enumerate(peers):
                p.send(push(50 + i, 0, ts=1))
            for i, p in enumerate(peers):
                await p.prove(50 + i, TIMEOUT)
            # the burst (2) is spent at once; the others stay pending, refused and counted
            await _until(lambda: lis.stats["dropped_rate_limited"] == 3)
            assert len(lis) == 2 and lis.stats["pending"] == 3
            # what a client does until it is served: retransmit, and acknowledge the challenge
            # that comes again; tokens come back at 20/s and the peers get in, one by one
            ts = 2
            loop = asyncio.get_running_loop()
            end = loop.time() + TIMEOUT
            while len(lis) < 5:
                assert loop.time() < end
                waiting = [(i, p) for i, p in enumerate(peers) if p.address not in lis.sessions]
                for i, p in waiting:
                    p.send(push(50 + i, 0, ts=ts))
                ts += 1
                for i, p in waiting:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await p.prove(50 + i, 0.3)  # the challenge goes again at most every 100 ms
            st = lis.stats
            assert st["pending_promoted"] == 5 and st["pending"] == 0 and st["dropped_rate_limited"] >= 3
        finally:
            for p in peers:
                p.close()


async def test_forged_restart_from_a_live_peer_address_does_not_end_its_session() -> None:
    """Item 8: kcp-go's restart rule (new conv, sn 0) used to replace the victim on one packet.

    The victim is idle (it sends nothing on its own). An attacker who holds the key sends, from the
    victim's address, a new conv's sn-0 packet and more packets of that conv for longer than
    ``restart_quiet``. Off the path it cannot see the listener's challenge, so the new conv never
    proves itself. Then, as an on-path attacker that sees the challenge would, it acknowledges
    each challenge too: the victim answers the listener's liveness probes, so its session stays.
    """
    sealer = _sealer()
    async with await kcp.listen("127.0.0.1", 0, WIRE, on_accept=echo) as lis:
        victim = await _echo_once(lis.address[1], b"before")
        (server_side,) = lis.sessions.values()
        addr = server_side.remote_address
        quiet = lis.admission.restart_quiet
        loop = asyncio.get_running_loop()

        def forge(packet: bytes) -> None:  # the victim's socket sends it: the victim's address
            victim._ep.sock.send(sealer.seal(packet, 0)[0])

        # 1. off-path
        end = loop.time() + quiet + 0.5
        ts = 0
        while loop.time() < end:
            forge(push(0xBAD, 0, ts=ts))
            forge(push(0xBAD, 1, ts=ts))
            ts += 1
            await asyncio.sleep(0.05)
        assert not server_side.is_closing() and list(lis.sessions.values()) == [server_side]
        st = lis.stats
        assert st["sessions_replaced"] == 0 and st["pending_created"] >= 2  # the victim's, then ours
        # 2. on-path: the attacker also acknowledges the challenges it sees
        end = loop.time() + quiet + 0.5
        while loop.time() < end:
            forge(push(0xBAD, 0, ts=ts))
            ts += 1
            await asyncio.sleep(0.02)
            demux = lis.demux
            assert isinstance(demux, AddressDemux)
            p = demux.admission.pending.get(addr)  # what an on-path observer reads on the wire
            if p is not None and p.conv == 0xBAD:
                forge(CHALLENGE_ACK.pack(0xBAD, 82, 0, 128, p.challenge, 0xFFFFFFFF, 0, 0))
            await asyncio.sleep(0.03)
        assert not server_side.is_closing() and list(lis.sessions.values()) == [server_side]
        st = lis.stats
        assert st["sessions_replaced"] == 0 and st["restart_deferred"] >= 1
        victim.write(b"after")
        assert await asyncio.wait_for(victim.readexactly(5), TIMEOUT) == b"after"
        victim.abort()


async def test_closed_sessions_leave_no_per_peer_state() -> None:
    """Sessions that end (here by idle timeout) leave nothing behind: tables, caches, objects."""
    n = 100
    ids: set[int] = set()  # the compiled build's native KCPSession cannot be weakly referenced
    accepted = 0  # counted apart: a session that idled out early may leave its id to a later one

    async def tracked(s: KCPSession) -> None:  # every accepted session, even one that idles out early
        nonlocal accepted
        accepted += 1
        ids.add(id(s))
        await echo(s)

    async with await kcp.listen(
        "127.0.0.1", 0, WIRE, session=kcp.SessionConfig(idle_timeout=0.5), on_accept=tracked
    ) as lis:
        clients = [await _echo_once(lis.address[1], b"%d" % i) for i in range(n)]
        assert accepted == n
        for c in clients:
            c.abort()
        del clients
        await _until(lambda: len(lis) == 0)

        def all_freed() -> bool:  # a closing session's last callbacks may still run a tick or two
            gc.collect()
            return not any(
                type(o) is KCPSession
                and id(o) in ids
                # not a client's session at an address a freed server session had
                and o.remote_address != lis.address
                for o in gc.get_objects()
            )

        await _until(all_freed)
        sizes = lis.state_sizes()
        assert sizes == dict.fromkeys(sizes, 0), sizes
