"""kcp.admission: the sans-I/O admission core of compat-mode listeners (time is injected)."""

from __future__ import annotations

import ipaddress

import pytest

from kcp.admission import ALIVE, REPLACE, RESTART_POKES, WAIT, Admission, AdmissionConfig
from kcp.errors import KCPUsageError

A = ("203.0.113.7", 4000)
B = ("203.0.113.8", 4000)


def test_config_validation() -> None:
    for bad in (
        {"max_pending": 0},
        {"max_pending_bytes": 100},
        {"pending_datagrams": 0},
        {"pending_timeout": 0},
        {"restart_quiet": -1},
        {"rate": -1},
        {"rate": 5, "burst": 0},
        {"prefix_v4": 33},
        {"prefix_v6": 129},
        {"exempt": ("not a network",)},
    ):
        with pytest.raises(KCPUsageError):
            AdmissionConfig(**bad)  # type: ignore[arg-type]
    AdmissionConfig(rate=0, burst=0)  # no rate limit: the burst is unused


def test_pending_table_is_bounded_by_count_and_bytes_oldest_first() -> None:
    adm = Admission(AdmissionConfig(max_pending=3, max_pending_bytes=4096))
    evicted = []
    for i in range(5):
        evicted += adm.add(("10.0.0.1", i), i, b"x" * 100, i, now=i, restart=False)
    assert evicted == [("10.0.0.1", 0), ("10.0.0.1", 1)]
    assert list(adm.pending) == [("10.0.0.1", 2), ("10.0.0.1", 3), ("10.0.0.1", 4)]
    assert adm.bytes == 300
    # a big datagram pushes out as many old entries as its bytes need
    assert adm.add(A, 9, b"y" * 2000, 99, now=10, restart=False) == [("10.0.0.1", 2)]
    assert adm.add(B, 9, b"y" * 2000, 98, now=11, restart=False) == [("10.0.0.1", 3), ("10.0.0.1", 4)]
    assert adm.bytes == 4000 and len(adm) == 2


def test_held_datagrams_are_bounded_per_peer_and_in_total() -> None:
    adm = Admission(AdmissionConfig(pending_datagrams=3, max_pending_bytes=3000))
    adm.add(A, 1, b"a" * 1000, 1, now=0, restart=False)
    p = adm.pending[A]
    assert adm.hold(p, b"b" * 1000)
    assert not adm.hold(p, b"c" * 1001)  # over the byte budget
    assert adm.hold(p, b"c" * 1000)
    assert not adm.hold(p, b"d")  # over the per-peer count
    assert p.datagrams() == [b"a" * 1000, b"b" * 1000, b"c" * 1000] and adm.bytes == 3000
    adm.drop(A)
    assert adm.bytes == 0 and len(adm) == 0


def test_expiry_and_next_due() -> None:
    adm = Admission(AdmissionConfig(pending_timeout=1.0))
    assert adm.next_due() is None
    adm.add(A, 1, b"a", 1, now=100, restart=False)
    adm.add(B, 2, b"b", 2, now=600, restart=False)
    assert adm.next_due() == 1100
    assert adm.expire(1099) == []
    assert [a for a, _ in adm.expire(1100)] == [A]
    assert adm.next_due() == 1600
    assert [a for a, _ in adm.expire(5000)] == [B]
    assert adm.sizes() == dict.fromkeys(adm.sizes(), 0)


def test_replay_digests_belong_to_one_address_while_it_is_pending_or_a_session() -> None:
    adm = Admission(AdmissionConfig())
    adm.add(A, 1, b"first", 111, now=0, restart=False)
    assert adm.is_replay(111, B) and not adm.is_replay(111, A)
    p = adm.take(A, 222)  # proven by a datagram with digest 222: a session now
    assert p.first == b"first" and len(adm) == 0
    assert adm.is_replay(111, B) and adm.is_replay(222, B)  # copies of either, from elsewhere
    adm.session_closed(A)
    assert not adm.is_replay(111, B) and not adm.is_replay(222, B)
    # an expired or evicted peer's digest is released too
    adm.add(A, 1, b"first", 111, now=0, restart=False)
    adm.expire(10_000)
    assert not adm.is_replay(111, B)
    assert adm.sizes() == dict.fromkeys(adm.sizes(), 0)


def test_rate_limit_token_bucket_per_prefix() -> None:
    adm = Admission(AdmissionConfig(rate=10.0, burst=3, exempt=()))
    same24 = [(f"198.51.100.{i}", 1) for i in range(5)]
    assert [adm.allow(a, 0) for a in same24] == [True, True, True, False, False]
    assert adm.allow(("198.51.101.1", 1), 0)  # another /24 has its own bucket
    assert not adm.allow(same24[0], 99)  # 0.99 token after 99 ms
    assert adm.allow(same24[0], 100)  # one token per 100 ms at 10/s
    assert not adm.allow(same24[0], 100)
    assert [adm.allow(a, 10_000) for a in same24] == [
        True,
        True,
        True,
        False,
        False,
    ]  # refilled to burst only


def test_prefixes_exemptions_and_bucket_bounds() -> None:
    adm = Admission(AdmissionConfig(max_prefixes=2))
    assert adm.prefix(("127.0.0.1", 1)) is None  # loopback is exempt by default
    assert adm.prefix(("::1", 1, 0, 0)) is None
    assert adm.prefix(("198.51.100.77", 1)) == ipaddress.ip_network("198.51.100.0/24")
    assert adm.prefix(("::ffff:198.51.100.77", 1, 0, 0)) == ipaddress.ip_network("198.51.100.0/24")
    assert adm.prefix(("2001:db8:1:2:3::4", 1, 0, 0)) == ipaddress.ip_network("2001:db8:1:2::/64")
    assert adm.prefix(("fe80::1%eth0", 1, 0, 2)) == ipaddress.ip_network("fe80::/64")
    assert adm.prefix(("not an address", 1)) is None
    for i in range(5):
        adm.allow((f"198.51.{i}.1", 1), 0)
    assert adm.sizes()["prefix_buckets"] == 2  # least recently used dropped
    adm.expire(10**9)  # refilled buckets are pruned
    assert adm.sizes()["prefix_buckets"] == 0
    assert Admission(AdmissionConfig(rate=0)).allow(("198.51.100.1", 1), 0)


def test_restart_candidate_verdict_and_liveness_pokes() -> None:
    adm = Admission(AdmissionConfig(restart_quiet=2.0, pending_timeout=1.0))
    adm.add(A, 9, b"sn0", 5, now=1000, restart=True)
    p = adm.pending[A]
    assert adm.due_pokes(1000) == [A] and adm.due_pokes(1000) == []
    pokes = 1
    for t in range(1000, 3000, 50):
        pokes += len(adm.due_pokes(t))
    assert pokes == RESTART_POKES  # spread over restart_quiet
    assert adm.restart_verdict(p, last_valid=900, closing=False, now=2999) == WAIT
    assert adm.restart_verdict(p, last_valid=900, closing=False, now=3000) == REPLACE
    assert adm.restart_verdict(p, last_valid=1500, closing=False, now=3000) == ALIVE  # it answered
    assert adm.restart_verdict(p, last_valid=1500, closing=True, now=1001) == REPLACE
    # a candidate lives pending_timeout + restart_quiet, and does not hold up others' expiry
    adm.add(B, 1, b"b", 6, now=1500, restart=False)
    assert [a for a, _ in adm.expire(2500)] == [B]
    assert adm.next_due() == 4000 and list(adm.pending) == [A]
    assert [a for a, _ in adm.expire(4000)] == [A]
    assert adm.sizes() == dict.fromkeys(adm.sizes(), 0)
