"""kcp.ratelimit: the token buckets per source network (compat admission, the secure handshake
budget), the tally of sessions per source network (``max_sessions_per_address``) and the bytes
held per source network (``SourceBytes``)."""

from __future__ import annotations

import ipaddress

from kcp.ratelimit import PrefixLimiter, SourceBytes, SourceKeys, SourceTally


def test_prefix_limiter_buckets_keys_and_bounds() -> None:
    lim = PrefixLimiter(10.0, 3, SourceKeys(prefix_v4=24, prefix_v6=64, max_cached=2), max_prefixes=2)
    addr = ("192.0.2.7", 1)
    assert [lim.allow(addr, 0) for _ in range(4)] == [True, True, True, False]
    assert lim.allow(("192.0.2.200", 5), 0) is False  # the same /24
    assert lim.allow(addr, 99) is False and lim.allow(addr, 100) is True  # 10/s: one per 100 ms
    assert lim.keys.key(addr) == ipaddress.ip_network("192.0.2.0/24")
    assert lim.keys.key(("::ffff:192.0.2.7", 1, 0, 0)) == ipaddress.ip_network("192.0.2.0/24")
    assert lim.keys.key(("127.0.0.5", 1)) is None and lim.keys.key(("not an address", 1)) is None
    for i in range(5):
        lim.allow((f"198.51.{i}.1", 1), 0)
    assert len(lim) == 2  # the least recently used buckets went
    keys = [lim.keys.key((f"203.0.{i}.1", 1)) for i in range(5)]  # the parse cache stays bounded too
    assert keys[-1] == ipaddress.ip_network("203.0.4.0/24") and lim.keys.cached() <= 2
    lim.clear()
    assert len(lim) == 0


def test_source_tally_charges_releases_and_caps_per_network() -> None:
    tally = SourceTally(SourceKeys(prefix_v4=32, prefix_v6=64), cap=2)
    a1, a2, b = ("198.51.100.7", 1000), ("198.51.100.7", 1001), ("198.51.100.8", 1000)
    assert not tally.over(a1)
    tally.add("cid-1", a1)
    tally.add("cid-2", a2)  # another port of the same address: the same network
    assert tally.over(a1) and tally.over(("198.51.100.7", 9)) and not tally.over(b)
    assert not tally.over(a1, replacing=True)  # one of its own is being replaced
    assert tally.count(a1) == 2 and len(tally) == 1
    tally.add("cid-2", b)  # the owner charged again: the charge moves
    assert tally.count(a1) == 1 and tally.count(b) == 1 and not tally.over(a1)
    tally.remove("cid-1")
    tally.remove("cid-1")  # twice: no effect
    assert tally.count(a1) == 0 and len(tally) == 1
    v6 = SourceTally(SourceKeys(prefix_v4=32, prefix_v6=64), cap=1)
    v6.add("x", ("2001:db8:1:2::1", 1, 0, 0))
    assert v6.over(("2001:db8:1:2:ffff::9", 1, 0, 0)) and not v6.over(("2001:db8:1:3::1", 1, 0, 0))


def test_source_tally_exempt_and_uncapped() -> None:
    tally = SourceTally(SourceKeys(prefix_v4=32, prefix_v6=64), cap=1)
    for i in range(5):
        tally.add(i, ("127.0.0.1", 1000 + i))  # loopback is exempt by default: never charged
    assert not tally.over(("127.0.0.1", 1)) and len(tally) == 0
    tally.add("unix", "/run/socket")  # not an IP address: not charged
    assert len(tally) == 0
    free = SourceTally(SourceKeys(prefix_v4=32, prefix_v6=64, exempt=()), cap=None)
    for i in range(5):
        free.add(i, ("127.0.0.1", 1000 + i))
    assert free.count(("127.0.0.1", 1)) == 5 and not free.over(("127.0.0.1", 1))
    free.clear()
    assert len(free) == 0


def test_source_bytes_bounds_the_total_and_each_networks_share() -> None:
    held = SourceBytes(SourceKeys(prefix_v4=32, prefix_v6=64), total=1000, per_network=400)
    a, b, local = ("198.51.100.7", 1), ("198.51.100.8", 1), ("127.0.0.1", 1)
    assert held.charge("a1", a, 300)
    assert not held.charge("a2", a, 200)  # 500 past a's 400
    assert held.charge("a2", a, 100) and held.held == 400
    assert held.charge("b1", b, 400)
    assert held.charge("l1", local, 150)  # loopback is exempt from the share, not the total
    assert not held.charge("l2", local, 100) and held.held == 950
    held.release("a1")
    held.release("a1")  # twice: no effect
    assert held.held == 650 and held.charge("a3", a, 300)
    assert held.charge("b1", b, 50) and held.held == 600  # charged again: in place of what it held
    for owner in ("a2", "a3", "b1", "l1"):
        held.release(owner)
    assert held.held == 0 and held._by_network == {}
    # one charge larger than a bound passes while nothing is held against it
    assert held.charge("huge", a, 5000) and not held.charge("more", b, 1)
    held.release("huge")
    assert held.charge("a-big", a, 600) and held.charge("b-small", b, 10)
    assert not held.charge("a-more", a, 1)


def test_prefix_limiter_lets_go_of_refilled_buckets_as_new_networks_come() -> None:
    """The per-address budgets of the push hub, presence and QUIC admission were never pruned: an
    attack through 4,096 networks left every bucket after it stopped (an audit: 6.7 MB for five
    limiters). A new network now drops the least recently used buckets that are full again; one
    still in debt (``charge``) stays until it is paid back."""
    lim = PrefixLimiter(10.0, 5, SourceKeys(prefix_v4=32, prefix_v6=64, exempt=()), max_prefixes=100)
    for i in range(50):
        assert lim.allow((f"198.51.100.{i}", 1), 0)
    lim.charge(("198.51.100.49", 1), 100, 0)  # in debt: 10 s to pay back
    assert len(lim) == 50
    assert lim.allow(("203.0.113.1", 1), 1000)  # a second later every other bucket is full again
    assert len(lim) == 2  # the indebted one and the new one
    assert not lim.allow(("198.51.100.49", 1), 1000)  # still in debt: not forgotten
