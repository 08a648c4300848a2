"""kcprpc.web.quic_admission: the WebTransport listener's budget of new QUIC connections
(sans-I/O, time in ms), and its options."""

from __future__ import annotations

import pytest

from kcp.ratelimit import address_keys
from kcprpc.errors import UsageError
from kcprpc.web.options import WebTransportOptions
from kcprpc.web.quic_admission import ADMIT, DROP, LOAD_HOLD_MS, RETRY, QuicAdmission

A = ("198.51.100.7", 4433)
B = ("203.0.113.9", 4433)


def admission(rate: float = 10.0, burst: int = 3) -> QuicAdmission:
    return QuicAdmission(rate, burst, address_keys(), now=0)


def test_the_burst_starts_handshakes_then_new_connections_get_a_retry() -> None:
    q = admission(rate=10, burst=3)
    assert [q.initial(A, False, 0) for _ in range(5)] == [ADMIT, ADMIT, ADMIT, RETRY, RETRY]
    assert q.under_load(0) and q.under_load(LOAD_HOLD_MS - 1) and not q.under_load(LOAD_HOLD_MS)
    assert q.initial(B, False, 100) == ADMIT  # 100 ms at 10/s: one token back
    assert q.initial(B, False, 100) == RETRY


def test_a_proven_address_starts_its_handshake_and_under_load_at_its_rate() -> None:
    q = admission(rate=10, burst=3)
    assert q.initial(A, True, 0) == ADMIT  # no load: proven Initials are not counted
    for _ in range(3):
        q.initial(B, False, 0)
    assert q.initial(B, False, 0) == RETRY  # under load from here
    assert [q.initial(A, True, 1) for _ in range(4)] == [ADMIT, ADMIT, ADMIT, DROP]  # A's own budget
    assert q.initial(B, True, 1) == ADMIT  # another address has its own
    assert q.initial(A, True, 101) == ADMIT and q.initial(A, True, 101) == DROP  # refilled 1 at 10/s
    assert q.initial(A, True, 1 + LOAD_HOLD_MS) == ADMIT  # the load is over
    assert all(q.initial(A, True, 1 + LOAD_HOLD_MS) == ADMIT for _ in range(10))


def test_loopback_is_exempt_from_the_per_address_budget() -> None:
    q = admission(rate=10, burst=1)
    q.initial(A, False, 0)
    assert q.initial(A, False, 0) == RETRY
    assert all(q.initial(("127.0.0.1", 5000), True, 0) == ADMIT for _ in range(20))


def test_rate_zero_retries_every_new_connection_and_admits_every_proven_one() -> None:
    q = admission(rate=0, burst=1)
    assert all(q.initial(A, False, t) == RETRY for t in range(0, 5000, 500))
    assert all(q.initial(A, True, 0) == ADMIT for _ in range(50))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"handshake_rate": -1}, "handshake_rate"),
        ({"handshake_rate": float("inf")}, "handshake_rate"),
        ({"handshake_rate": True}, "handshake_rate"),
        ({"handshake_burst": 0}, "handshake_burst"),
        ({"handshake_burst": 2.5}, "handshake_burst"),
    ],
)
def test_bad_budget_options_are_usage_errors(kw: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        WebTransportOptions(**kw)  # type: ignore[arg-type]
