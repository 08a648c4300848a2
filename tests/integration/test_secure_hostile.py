"""Hostile clients that hold the key, against a real secure listener over loopback UDP.

A flood of authenticated datagrams from one address is cut to that address's budget once the
listener is behind its socket, and other clients keep being served. Item 5: FEC proposals the server's policy does not allow (more than 256 shards, or more parity
than the server runs) are refused or lowered in the handshake, counted and logged with a rate
limit; a failure after the handshake frees the connection and tells the client with an
authenticated CLOSE. Item 6: junk and replayed datagrams sent to a live connection ID do not keep
its session alive. Every wait is bounded; no sleep is used to wait for a state.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import kcp
import kcp.client
import kcp.endpoint
import kcprpc
from kcp.demo import echo
from kcp.demux import secure as demux
from kcp.logutil import RateLimitedLog
from kcp.secure import HandshakeConfig, HandshakeRefused, Reason, SecureClient, SecureConfig, SecureConnection
from kcp.secure.packet import KEEPALIVE_PROBE, T_TRANSPORT
from kcp.secure.testing import HostileClient

TIMEOUT = 10.0
KEY = "hostile clients hold this key"
CLIENT = HandshakeConfig(passphrase=KEY)


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reached the loop's exception handler (a traceback in the log, one per datagram)."""
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    yield errors
    loop.set_exception_handler(None)


def _now() -> int:
    return int(asyncio.get_running_loop().time() * 1000)


def _udp(addr: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(addr)
    return sock


async def _raw_handshake(sock: socket.socket, client: SecureClient) -> None:
    """Run ``client``'s handshake over ``sock`` (bounded); on success send its key confirmation."""
    loop = asyncio.get_running_loop()
    sock.send(client.initiate(_now()))

    async def answers() -> None:
        while client.state == "initiating":
            data = await loop.sock_recv(sock, 4096)
            client.receive(data, sock.getpeername(), _now())
            for d in client.datagrams_to_send(_now()):
                sock.send(d)

    await asyncio.wait_for(answers(), TIMEOUT)
    if client.connection is not None:
        for d, _addr in client.connection.datagrams_to_send(_now()):
            sock.send(d)


async def _until(cond: Callable[[], bool]) -> None:
    """Wait (bounded) for a condition that the listener's own I/O makes true."""

    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), TIMEOUT)


def _secure_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("kcp")]


# ------------------------------------------------------------------------------------ item 5


async def test_oversized_fec_proposals_are_refused_with_a_reason_and_leave_no_state(
    loop_errors: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    attempts = 60
    caplog.set_level(logging.INFO, logger="kcp")
    async with await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key=KEY, fec=(10, 3)), on_accept=echo) as lis:
        for i in range(attempts):
            sock = _udp(lis.address)
            try:
                client = HostileClient(CLIENT, fec=(200, 100))
                await _raw_handshake(sock, client)
            finally:
                sock.close()
            err = client.error
            assert isinstance(err, HandshakeRefused), f"attempt {i}: the server accepted FEC 200/100"
            assert err.code == Reason.PARAMS_REFUSED
            assert str(err).startswith(
                "handshake refused by the server: params refused: "
                "malformed proposal: FEC 200/100 has 300 shards per group, at most 256"
            )
        st = lis.stats
        assert st["secure_refused"] == st["secure_params_refused"] == attempts
        sizes = lis.secure_server.state_sizes() if lis.secure_server else {}
        assert len(lis) == 0 and sizes["connections"] == sizes["half_open"] == 0
        # a legitimate client is still served
        c = await kcp.dial("127.0.0.1", lis.address[1], kcp.SecureWire(key=KEY, fec=(10, 3)))
        c.write(b"still here")
        assert await asyncio.wait_for(c.readexactly(10), TIMEOUT) == b"still here"
        c.close()
        await c.wait_closed()
    assert not loop_errors
    records = _secure_records(caplog)
    refusals = [r for r in records if "refused" in r.getMessage()]
    assert 1 <= len(refusals) <= demux.LOG_BURST  # logged, with a rate limit
    assert all(r.exc_info is None and r.exc_text is None for r in records)


async def test_a_failure_after_the_handshake_frees_the_connection_and_tells_the_client(
    loop_errors: list[dict[str, Any]], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried: list[bytes] = []
    opened = kcp.session.session_opened

    def broken_session(counters: Any, path: Any, *, passive: bool) -> Any:
        # the server's sessions only (passive): the client dials as usual. A step of KCPSession's
        # set-up fails (kcp.session's name for kcp.snmp.session_opened, which the compiled module
        # looks up at each call; the native KCPSession's methods cannot be patched)
        if not passive:
            return opened(counters, path, passive=passive)
        tried.append(path.connection.local_cid)
        raise kcp.KCPUsageError("no session today")

    def server_connections() -> list[SecureConnection]:  # the ones this test's server made
        gc.collect()
        return [o for o in gc.get_objects() if isinstance(o, SecureConnection) and o.local_cid in tried]

    monkeypatch.setattr(kcp.session, "session_opened", broken_session)
    caplog.set_level(logging.INFO, logger="kcp")
    async with await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key=KEY), on_accept=echo) as lis:
        for _ in range(3):
            c = await kcp.dial("127.0.0.1", lis.address[1], kcp.SecureWire(key=KEY))
            await asyncio.wait_for(c.wait_closed(), TIMEOUT)  # the CLOSE came at once, not an idle timeout
            assert c.close_reason == "closed by peer: internal: server could not set up the session"
            assert c.close_code == Reason.INTERNAL
        server = lis.secure_server
        assert server is not None and server.state_sizes()["connections"] == 0 and len(lis) == 0
        assert lis.stats["secure_accept_failed"] == 3
        assert len(tried) == 3 and not server_connections()  # the connection state was freed
    assert not loop_errors
    records = _secure_records(caplog)
    assert any("not set up (KCPUsageError: no session today); sent CLOSE" in r.getMessage() for r in records)
    assert all(r.exc_info is None for r in records)


async def test_a_client_that_cannot_set_up_its_session_closes_and_the_server_keeps_nothing(
    loop_errors: list[dict[str, Any]], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_session(*args: Any, **kwargs: Any) -> Any:
        raise kcp.KCPUsageError("no client session today")

    monkeypatch.setattr(kcp.client, "KCPSession", broken_session)
    caplog.set_level(logging.INFO, logger="kcp")
    async with await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key=KEY), on_accept=echo) as lis:
        with pytest.raises(kcp.KCPUsageError, match="no client session today"):
            await kcp.dial("127.0.0.1", lis.address[1], kcp.SecureWire(key=KEY))
        server = lis.secure_server
        assert server is not None

        await _until(lambda: server.counters.accepted >= 1)  # the client's CLOSE confirms, then ends, it
        assert server.state_sizes()["connections"] == server.state_sizes()["half_open"] == 0 and len(lis) == 0
    assert not loop_errors
    assert any(
        "closed while confirming the handshake: internal: client could not set up the session"
        in r.getMessage()
        for r in _secure_records(caplog)
    )


async def test_the_mtu_is_declared_once_on_the_session() -> None:
    with pytest.raises(kcp.KCPUsageError, match=r"mtu must be in 64\.\.9000"):
        kcp.SessionConfig(mtu=10000)
    with pytest.raises(TypeError):  # the secure knobs hold no MTU, window, FEC or identity
        SecureConfig(mtu=1400)  # type: ignore[call-arg]


async def test_a_flexible_client_asking_fec_1_255_gets_the_servers_10_3() -> None:
    async with await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key=KEY, fec=(10, 3)), on_accept=echo) as lis:
        c = await kcp.dial("127.0.0.1", lis.address[1], kcp.SecureWire(key=KEY, fec=(1, 255)))
        assert c.secure is not None
        assert (c.secure.params.data_shards, c.secure.params.parity_shards) == (10, 3)
        payload = random.Random(1).randbytes(60_000)
        c.write(payload)
        assert await asyncio.wait_for(c.readexactly(len(payload)), TIMEOUT) == payload
        (srv,) = lis.sessions.values()
        assert srv.secure is not None
        assert (srv.secure.params.data_shards, srv.secure.params.parity_shards) == (10, 3)
        # what the server sent: 3 parity shards per 10 data shards, not 255 per 1
        st = c.stats
        assert 0 < st["fec_parity_shards"] <= 0.3 * st["in_pkts"], st
        assert lis.stats["secure_fec_clamped"] == 1
        c.close()
        await c.wait_closed()


async def test_a_strict_rpc_client_asking_fec_1_255_fails_at_connect_with_the_reason() -> None:
    served = kcprpc.Transport(kcprpc.SecureWire(key=KEY, fec=(10, 3)))
    async with kcprpc.Server([], "127.0.0.1", 0, transport=served) as server:
        host, port = server.address
        strict = kcprpc.SecureWire(key=KEY, fec=(1, 255)).with_config(fec_strict=True)
        client = kcprpc.connect(host, port, transport=kcprpc.Transport(strict))
        with pytest.raises(kcprpc.RpcError) as info:
            await asyncio.wait_for(client.connect(), TIMEOUT)
        assert info.value.status == kcprpc.Status.FAILED_PRECONDITION
        assert "FEC 1/255 refused: the server allows at most 10/3" in str(info.value)


# ------------------------------------------------------------------------------------ item 6


async def _live_raw_session(
    lis: kcp.Listener, accepted: asyncio.Future[kcp.KCPSession]
) -> tuple[socket.socket, SecureConnection, kcp.KCPSession]:
    sock = _udp(lis.address)
    client = SecureClient(CLIENT)
    await _raw_handshake(sock, client)
    assert client.connection is not None
    srv = await asyncio.wait_for(accepted, TIMEOUT)
    return sock, client.connection, srv


def _accept_into(fut: asyncio.Future[kcp.KCPSession]) -> Any:
    return lambda s: None if fut.done() else fut.set_result(s)


async def test_junk_and_replays_to_a_live_connection_id_do_not_keep_it_alive() -> None:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[kcp.KCPSession] = loop.create_future()
    async with await kcp.listen(
        "127.0.0.1",
        0,
        kcp.SecureWire(key=KEY),
        session=kcp.SessionConfig(idle_timeout=0.5),
        on_accept=_accept_into(accepted),
    ) as lis:
        sock, conn, srv = await _live_raw_session(lis, accepted)
        authentic = conn.ping(_now())
        sock.send(authentic)
        header = bytes((T_TRANSPORT,)) + conn.remote_cid
        rnd = random.Random(1)
        sent = 0

        async def attacker() -> None:
            nonlocal sent
            while True:  # junk for the connection ID, and the one authentic packet replayed
                sock.send(header + rnd.randbytes(8) + rnd.randbytes(rnd.randrange(20, 200)))
                sock.send(authentic)
                sent += 2
                await asyncio.sleep(0.01)  # pacing, not synchronisation

        task = asyncio.create_task(attacker())
        t0 = loop.time()
        try:
            await asyncio.wait_for(srv.wait_closed(), 5.0)  # before the fix: open while the junk flows
        finally:
            task.cancel()
            sock.close()
        assert srv.close_reason == "idle timeout"
        assert loop.time() - t0 < 2.0
        st = srv.stats
        assert st["secure_decrypt_errors"] >= 10 and st["secure_replay_duplicates"] >= 10
        assert lis.stats["secure_transport_rejected"] >= 20
        assert len(lis) == 0


async def test_authenticated_pings_do_keep_a_session_alive() -> None:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[kcp.KCPSession] = loop.create_future()
    async with await kcp.listen(
        "127.0.0.1",
        0,
        kcp.SecureWire(key=KEY),
        session=kcp.SessionConfig(idle_timeout=0.4),
        on_accept=_accept_into(accepted),
    ) as lis:
        sock, conn, srv = await _live_raw_session(lis, accepted)
        t_end = loop.time() + 1.2  # three idle timeouts
        try:
            while loop.time() < t_end:
                sock.send(conn.ping(_now()))
                await asyncio.sleep(0.05)  # pacing
            assert not srv.is_closing()
        finally:
            sock.close()
        await asyncio.wait_for(srv.wait_closed(), 5.0)  # silent now: it idles out
        assert srv.close_reason == "idle timeout"


# ------------------------------------------------------------------------------------ defence in depth


async def test_a_bug_hit_by_every_datagram_is_reported_a_few_times_not_per_packet(
    loop_errors: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kcp.endpoint, "_bug_reports", RateLimitedLog(logging.getLogger("t"), burst=3))

    def buggy(data: bytes, addr: Any, now: int) -> None:
        raise RuntimeError("a bug in datagram handling")

    async with await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key=KEY)) as lis:
        lis.endpoint.dispatch = buggy
        sock = _udp(lis.address)
        for _ in range(100):
            sock.send(b"\xc8" + bytes(60))
        sock.close()
        await _until(lambda: lis.stats["in_errs"] >= 100)
    assert len(loop_errors) == 3 and isinstance(loop_errors[0]["exception"], RuntimeError)


# ------------------------------------------------------------------- CPU: authenticated floods

BURST = 200
"""Datagrams a flood sends at once: above the listener's busy read (kcp.endpoint.BUSY_READ), and
few enough that a socket buffer at Linux's default size (208 KiB) holds them all."""


async def test_a_flood_of_authenticated_datagrams_is_cut_to_its_addresss_budget_under_load(
    loop_errors: list[dict[str, Any]],
) -> None:
    rate, burst = 20.0, 50  # a slow refill: a stalled test machine adds few tokens between bursts
    config = SecureConfig(exempt=(), datagram_rate=rate, datagram_burst=burst)  # loopback is limited too
    async with await kcp.listen(
        "127.0.0.1", 0, kcp.SecureWire(key=KEY, config=config), on_accept=echo
    ) as lis:
        assert kcp.endpoint.BUSY_READ <= BURST
        server = lis.secure_server
        assert server is not None
        player = await kcp.dial("127.0.0.1", lis.address[1], kcp.SecureWire(key=KEY))
        flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flooder.setblocking(False)
        flooder.bind(("127.0.0.2", 0))  # an address of its own: its own budget
        flooder.connect(lis.address)
        elsewhere = _udp(lis.address)  # the same connection's datagrams from another address
        try:
            client = SecureClient(CLIENT)
            await _raw_handshake(flooder, client)
            conn = client.connection
            assert conn is not None
            await _until(lambda: len(lis) == 2)
            (theirs,) = [s for s in lis.sessions.values() if s.remote_address[0] == "127.0.0.2"]
            assert theirs.secure is not None
            sc = theirs.secure.counters
            nonce = 0

            def pings(sock: socket.socket, n: int) -> None:
                nonlocal nonce
                for _ in range(n):
                    nonce += 1
                    sock.send(conn.ping(_now(), probe_id=KEEPALIVE_PROBE | nonce))

            def handled() -> int:  # every keepalive the server took: answered or dropped unopened
                return sc.mtu_probes_answered + server.counters.datagrams_rate_limited

            async def answered(n: int) -> None:
                await _until(lambda: sc.mtu_probes_answered >= n)

            async def taken(n: int) -> None:
                await _until(lambda: handled() >= n)

            # keeping up: a few keepalives at a time are all answered, none limited
            for i in range(1, 6):
                pings(flooder, 10)
                await answered(10 * i)
            assert server.counters.datagrams_rate_limited == 0 and lis.state_sizes()["datagram_budgets"] == 2

            # behind: each burst is read at once, and the address gets its budget, no more
            t0 = asyncio.get_running_loop().time()
            before = sc.mtu_probes_answered
            for i in range(1, 6):
                pings(flooder, BURST)
                await taken(50 + i * BURST)
            elapsed = asyncio.get_running_loop().time() - t0
            got = sc.mtu_probes_answered - before
            assert burst <= got <= burst + rate * elapsed + 1
            assert server.counters.datagrams_rate_limited >= 5 * BURST - got

            # the same connection's datagrams from another address still spend the budget of the
            # address that made the connection (a spoofed source spends nobody else's): no new burst
            before_spoof = sc.mtu_probes_answered
            limited = server.counters.datagrams_rate_limited
            pings(elsewhere, BURST)
            await taken(before_spoof + limited + BURST)
            assert sc.mtu_probes_answered - before_spoof < burst  # a bucket of its own would answer 50
            elapsed = asyncio.get_running_loop().time() - t0
            assert sc.mtu_probes_answered - before <= burst + rate * elapsed + 1

            # the other client, from its own address, was served all along
            player.write(b"still served")
            assert await asyncio.wait_for(player.readexactly(12), TIMEOUT) == b"still served"
            assert lis.stats["secure_datagrams_rate_limited"] == server.counters.datagrams_rate_limited
        finally:
            flooder.close()
            elsewhere.close()
            player.close()
            await player.wait_closed()
    assert not loop_errors
