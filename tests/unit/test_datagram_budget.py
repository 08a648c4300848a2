"""The datagram budget per address of a busy secure listener (``SecureConfig.datagram_rate``,
:mod:`kcp.datagram_budget`), sans-I/O: the clock is the ``now`` we pass."""

from __future__ import annotations

import pytest

from kcp.datagram_budget import DatagramBudget
from kcp.secure import SecureConfig
from kcp.secure.errors import SecureUsageError

PLAYER = ("203.0.113.5", 40001)
NEIGHBOUR = ("203.0.113.5", 50002)  # the same IPv4 address: one budget
OTHER = ("198.51.100.9", 40000)


def takes(budget: DatagramBudget, addr: tuple[str, int], n: int, now: int) -> int:
    bucket = budget.charge(addr, now)
    assert bucket is not None
    return sum(bucket.take(now) for _ in range(n))


def test_an_address_gets_its_burst_then_its_rate() -> None:
    budget = DatagramBudget(rate=1000.0, burst=100, exempt=())
    bucket = budget.charge(PLAYER, 0)
    assert bucket is not None
    assert sum(bucket.take(0) for _ in range(300)) == 100
    assert sum(bucket.take(50) for _ in range(300)) == 50  # 50 ms refill 50 tokens
    assert sum(bucket.take(10_000) for _ in range(300)) == 100  # never more than the burst


def test_the_connections_of_one_address_share_a_bucket_and_others_keep_theirs() -> None:
    budget = DatagramBudget(rate=1000.0, burst=100, exempt=())
    first, second = budget.charge(PLAYER, 0), budget.charge(NEIGHBOUR, 0)
    assert first is second and len(budget) == 1
    assert first is not None and sum(first.take(0) for _ in range(80)) == 80
    assert takes(budget, NEIGHBOUR, 80, 0) == 20  # what the first left
    assert takes(budget, OTHER, 80, 0) == 80
    assert len(budget) == 2


def test_a_bucket_goes_with_the_last_connection_of_its_address() -> None:
    budget = DatagramBudget(rate=1000.0, burst=100, exempt=())
    a, b = budget.charge(PLAYER, 0), budget.charge(NEIGHBOUR, 0)
    assert a is not None and b is not None
    budget.release(a)
    assert len(budget) == 1
    budget.release(b)
    assert len(budget) == 0
    again = budget.charge(PLAYER, 5)
    assert again is not None and again is not a and again.tokens == 100.0


def test_exempt_networks_and_a_zero_rate_have_no_budget() -> None:
    assert DatagramBudget(rate=1000.0, burst=100).charge(("127.0.0.1", 9), 0) is None  # loopback: default
    assert DatagramBudget(rate=1000.0, burst=100, exempt=("203.0.113.0/24",)).charge(PLAYER, 0) is None
    assert DatagramBudget(rate=0.0, burst=100, exempt=()).charge(PLAYER, 0) is None
    v6 = DatagramBudget(rate=1000.0, burst=10, exempt=())
    one, two = v6.charge(("2001:db8:1:2::1", 1, 0, 0), 0), v6.charge(("2001:db8:1:2::99", 2, 0, 0), 0)
    assert one is two is not None  # an IPv6 /64 is one address


def test_the_knobs_are_checked() -> None:
    with pytest.raises(SecureUsageError, match="datagram_rate must be >= 0"):
        SecureConfig(datagram_rate=-1.0)
    with pytest.raises(SecureUsageError, match="datagram_burst >= 1"):
        SecureConfig(datagram_rate=10.0, datagram_burst=0)
    SecureConfig(datagram_rate=0.0, datagram_burst=0)  # off: the burst does not matter
