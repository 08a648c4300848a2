"""The handshake budget per source address (``SecureConfig.handshake_rate``): under load, one
client that holds the key and has proven its address with a cookie still gets only its own share
of the server's Diffie-Hellman work, so it can neither take the CPU nor fill the half-open table
(bench/abuse.py --only handshake-flood). Sans-I/O: the server's clock is the ``now`` we pass."""

from __future__ import annotations

import pytest

from kcp.secure import HandshakeConfig, SecureClient, SecureServer
from kcp.secure.errors import SecureUsageError
from kcp.secure.packet import T_RESPONSE, T_RETRY
from kcp.secure.testing import CookieClient, seeded_rng

KEY = "handshake budget"
ATTACKER = ("198.51.100.9", 40000)
PLAYER = ("203.0.113.5", 40001)


def server(**knobs: object) -> SecureServer:
    settings: dict[str, object] = {"always_retry": True, "handshake_rate": 50.0, "handshake_burst": 100}
    return SecureServer(HandshakeConfig(passphrase=KEY, **(settings | knobs)), seeded_rng(1))  # type: ignore[arg-type]


def cookie_for(srv: SecureServer, addr: tuple[str, int] | tuple[str, int, int, int], now: int) -> bytes:
    """The cookie ``addr`` gets from the server's RETRY (what any real client fetches once)."""
    c = CookieClient(HandshakeConfig(passphrase=KEY), rng=seeded_rng(99))
    r = srv.receive(c.initiate(now), addr, now)
    assert [d[0] for d, _ in r.replies] == [T_RETRY]
    c.receive(r.replies[0][0], addr, now)
    assert c.cookie is not None  # the attacker reuses it for every initiation
    return c.cookie


def initiations(n: int, seed: int, cookie: bytes | None) -> list[bytes]:
    """``n`` initiations with fresh ephemeral keys, each carrying a mac2 of ``cookie``."""
    config = HandshakeConfig(passphrase=KEY)
    return [CookieClient(config, cookie, seeded_rng(seed * 100_000 + i)).initiate(0) for i in range(n)]


def answers(srv: SecureServer, datagrams: list[bytes], addr: object, now: int) -> list[int]:
    kinds: list[int] = []
    for d in datagrams:
        kinds.extend(reply[0] for reply, _ in srv.receive(d, addr, now).replies)
    return kinds


def test_under_load_one_address_gets_its_burst_then_its_rate() -> None:
    srv = server()
    cookie = cookie_for(srv, ATTACKER, 0)
    flood = initiations(400, 1, cookie)
    first = answers(srv, flood[:300], ATTACKER, 0)
    assert first.count(T_RESPONSE) == 100  # the burst, then nothing
    assert srv.counters.handshakes_rate_limited == 200
    assert srv.half_open == 100
    later = answers(srv, flood[300:], ATTACKER, 1000)  # one second refills 50 tokens
    assert later.count(T_RESPONSE) == 50
    assert srv.counters.handshakes_rate_limited == 250
    assert srv.state_sizes()["handshake_sources"] == 1


def test_another_address_keeps_its_own_budget_during_the_flood() -> None:
    srv = server()
    cookie = cookie_for(srv, ATTACKER, 0)
    answers(srv, initiations(300, 2, cookie), ATTACKER, 0)
    player = SecureClient(HandshakeConfig(passphrase=KEY), seeded_rng(5))
    r = srv.receive(player.initiate(10), PLAYER, 10)  # under load: a cookie first
    player.receive(r.replies[0][0], PLAYER, 10)
    (again,) = player.datagrams_to_send(10)
    r = srv.receive(again, PLAYER, 10)
    assert [d[0] for d, _ in r.replies] == [T_RESPONSE]
    conn = player.receive(r.replies[0][0], PLAYER, 10)
    assert conn is not None
    for d, _ in conn.datagrams_to_send(10):  # the key-confirming PING makes it a connection
        assert srv.receive(d, PLAYER, 10).accepted


def test_proof_of_address_comes_before_the_budget() -> None:
    """An initiation without a valid mac2 (a spoofed source under load) gets a RETRY and takes no
    token: an off-path attacker cannot spend a victim's budget."""
    srv = server()
    answers(srv, initiations(500, 3, None), PLAYER, 0)
    assert srv.counters.handshakes_rate_limited == 0
    assert srv.counters.retries_sent == 500
    cookie = cookie_for(srv, PLAYER, 0)
    assert answers(srv, initiations(100, 4, cookie), PLAYER, 0).count(T_RESPONSE) == 100


def test_a_retransmitted_initiation_is_answered_when_the_budget_is_spent() -> None:
    srv = server()
    cookie = cookie_for(srv, ATTACKER, 0)
    flood = initiations(101, 5, cookie)
    answers(srv, flood, ATTACKER, 0)
    assert srv.counters.handshakes_rate_limited == 1
    assert answers(srv, flood[:1], ATTACKER, 0) == [T_RESPONSE]  # the stored answer, no DH work
    assert srv.counters.initiation_retransmits == 1


def test_no_limit_when_not_under_load_exempt_networks_or_rate_zero() -> None:
    not_loaded = server(always_retry=False, retry_threshold=10_000, retry_rate=10_000)
    assert answers(not_loaded, initiations(300, 6, None), ATTACKER, 0).count(T_RESPONSE) == 300
    exempt = server(exempt=("198.51.100.0/24",))
    cookie = cookie_for(exempt, ATTACKER, 0)
    assert answers(exempt, initiations(300, 7, cookie), ATTACKER, 0).count(T_RESPONSE) == 300
    off = server(handshake_rate=0.0)
    cookie = cookie_for(off, ATTACKER, 0)
    assert answers(off, initiations(300, 8, cookie), ATTACKER, 0).count(T_RESPONSE) == 300
    loopback = server()  # the default exemption
    cookie = cookie_for(loopback, ("127.0.0.1", 9), 0)
    flood = initiations(300, 9, cookie)
    assert answers(loopback, flood, ("127.0.0.1", 9), 0).count(T_RESPONSE) == 300


def test_the_budget_is_per_ipv6_slash_64_and_its_table_is_pruned() -> None:
    srv = server()
    a, b = ("2001:db8:1:2::1", 1, 0, 0), ("2001:db8:1:2:ffff::7", 2, 0, 0)
    cookie_a, cookie_b = cookie_for(srv, a, 0), cookie_for(srv, b, 0)
    assert answers(srv, initiations(80, 10, cookie_a), a, 0).count(T_RESPONSE) == 80
    assert answers(srv, initiations(80, 11, cookie_b), b, 0).count(T_RESPONSE) == 20  # one /64
    srv.handle_timer(10_000)  # refilled buckets are the same as none
    assert srv.state_sizes()["handshake_sources"] == 0


@pytest.mark.parametrize(
    ("knobs", "named"),
    [
        ({"handshake_rate": -1.0}, "handshake_rate"),
        ({"handshake_burst": 0}, "handshake_burst"),
        ({"exempt": ("not a network",)}, "exempt"),
    ],
)
def test_bad_budget_settings_are_refused_by_name(knobs: dict[str, object], named: str) -> None:
    with pytest.raises(SecureUsageError, match=named):
        HandshakeConfig(passphrase=KEY, **knobs)  # type: ignore[arg-type]
