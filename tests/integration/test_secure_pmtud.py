"""Path MTU discovery on real loopback UDP (loopback's MTU is 65536): a secure session's search
stops at the configured maximum, both ends raise their KCP MTU to it, and bulk data still
crosses. The socket sends with DF. Compat sessions never probe."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import kcp
from kcp.demo import echo
from kcp.secure import SecureConfig, generate_keypair
from kcp.secure.testing import seeded_rng
from kcp.secure_path import SECURE_OVERHEAD, set_dont_fragment
from kcp.session import KCPSession

TIMEOUT = 20.0
PRIV, PUB = generate_keypair(seeded_rng(21))
PSK = bytes(range(32))


@contextlib.asynccontextmanager
async def _session(
    server: kcp.SecureWire | kcp.CompatWire,
    client: kcp.SecureWire | kcp.CompatWire,
    on_accept: Callable[[KCPSession], Awaitable[None]] = echo,
) -> AsyncIterator[KCPSession]:
    """A listener on 127.0.0.1 with ``server`` and a session dialed to it with ``client``; both
    closed on exit."""
    lis = await kcp.listen("127.0.0.1", 0, server, on_accept=on_accept)
    try:
        c = await kcp.dial("127.0.0.1", lis.address[1], client)
        try:
            yield c
        finally:
            c.close()
            await asyncio.wait_for(c.wait_closed(), TIMEOUT)
    finally:
        lis.close()
        await lis.wait_closed()


async def _roundtrip(c: KCPSession, msg: bytes) -> None:
    c.write(msg)
    assert await asyncio.wait_for(c.readexactly(len(msg)), TIMEOUT) == msg


async def _until_pmtu(c: KCPSession, want: int, watched: KCPSession | None = None) -> None:
    """Echo round trips from ``c`` (real traffic, no sleeps) until the MTU of ``watched`` (``c``
    itself by default; the server's end of the session, which only its echo handler reads)
    reaches ``want``."""
    s = c if watched is None else watched
    for _ in range(200):
        if s.stats["pmtu"] >= want:
            return
        await _roundtrip(c, b"x")
    raise AssertionError(f"pmtu stuck at {s.stats['pmtu']}, wanted {want}")


async def test_loopback_search_stops_at_the_configured_maximum() -> None:
    accepted: list[KCPSession] = []

    async def on_accept(s: KCPSession) -> None:
        accepted.append(s)
        await echo(s)

    cfg = SecureConfig(pmtud_max=1472)
    server = kcp.SecureWire(key=PSK, static_private_key=PRIV, config=cfg)
    async with _session(server, kcp.SecureWire(key=PSK, server_public_key=PUB, config=cfg), on_accept) as c:
        await asyncio.wait_for(_until_pmtu(c, 1472), TIMEOUT)
        assert accepted
        await asyncio.wait_for(_until_pmtu(c, 1472, accepted[0]), TIMEOUT)
        payload = random.Random(3).randbytes(300_000)
        await _roundtrip(c, payload)
        for s in (c, accepted[0]):
            st = s.stats
            assert st["pmtu"] == 1472  # not 65536: the configured maximum
            assert st["mtu"] == 1472 - SECURE_OVERHEAD  # the engine's MTU followed
            assert st["pmtud_probes_acked"] >= 1 and st["pmtud_black_holes"] == 0
            assert st["pmtud_searching"] == 0
        assert c.stats["pmtud_probes_sent"] <= 3  # 1472 at once (plus confirmations)


async def test_pmtud_off_keeps_the_negotiated_mtu() -> None:
    cfg = SecureConfig(pmtud=False)
    server = kcp.SecureWire(key=PSK, static_private_key=PRIV, config=cfg)
    async with _session(server, kcp.SecureWire(key=PSK, server_public_key=PUB, config=cfg)) as c:
        for _ in range(5):
            await _roundtrip(c, b"y" * 3000)
        st = c.stats
        assert "pmtu" not in st and st["mtu"] == 1400 - SECURE_OVERHEAD
        assert st["secure_mtu_probes_answered"] == 0 and st["secure_mtu_probe_acks"] == 0


async def test_compat_sessions_never_probe() -> None:
    async with _session(kcp.CompatWire(), kcp.CompatWire()) as c:
        for _ in range(5):
            await _roundtrip(c, b"z" * 3000)
        st = c.stats
        assert "pmtu" not in st and st["mtu"] == 1400


def test_set_dont_fragment_on_a_real_socket() -> None:
    """DF (IP_PMTUDISC_PROBE) on IPv4 and IPv6 UDP sockets: a probe must not cross as fragments."""
    for family, level, opt in (
        (socket.AF_INET, socket.IPPROTO_IP, 10),
        (socket.AF_INET6, socket.IPPROTO_IPV6, 23),
    ):
        try:
            s = socket.socket(family, socket.SOCK_DGRAM)
        except OSError:
            continue  # no IPv6 here
        with s:
            ok = set_dont_fragment(s)
            if sys.platform.startswith("linux"):
                assert ok and s.getsockopt(level, opt) == 3
            else:
                assert not ok
