"""Secure mode's MTU probe on the wire: a padded PING that carries a probe id, answered by a small
PING_ACK; plain PINGs stay unanswered; junk answers are bounded and counted."""

from __future__ import annotations

import pytest

from kcp.secure import HandshakeConfig, SecureConfig, SecureConnection, SecureUsageError, generate_keypair
from kcp.secure.connection import MAX_PROBE_ACKS
from kcp.secure.packet import MIN_PROBE
from kcp.secure.testing import CLIENT_ADDR, SERVER_ADDR, run_handshake, seeded_rng

PRIV, PUB = generate_keypair(seeded_rng(3))


def _pair() -> tuple[SecureConnection, SecureConnection, int]:
    run = run_handshake(HandshakeConfig(server_public_key=PUB), HandshakeConfig(static_key=PRIV))
    assert run.client_conn is not None and run.server_conn is not None
    return run.client_conn, run.server_conn, run.now


def test_a_probe_has_the_size_asked_for_and_is_answered_with_its_id() -> None:
    cc, sc, now = _pair()
    sc.datagrams_to_send(now)
    probe = cc.ping(now, 1472, probe_id=0x0102030405060708)
    assert len(probe) == 1472
    assert sc.open(probe, CLIENT_ADDR, now) is None
    out = sc.datagrams_to_send(now)
    assert len(out) == 1
    answer, to = out[0]
    assert to == CLIENT_ADDR and len(answer) == MIN_PROBE < len(probe)  # never an amplifier
    assert sc.counters.mtu_probes_answered == 1
    assert cc.open(answer, SERVER_ADDR, now) is None
    assert cc.probe_acks == [0x0102030405060708]
    assert cc.counters.mtu_probe_acks == 1


def test_the_smallest_probe_is_min_probe_bytes() -> None:
    cc, _sc, now = _pair()
    assert len(cc.ping(now, 0, probe_id=1)) == MIN_PROBE


def test_a_plain_ping_is_not_answered() -> None:
    cc, sc, now = _pair()
    sc.datagrams_to_send(now)
    assert sc.open(cc.ping(now), CLIENT_ADDR, now) is None
    assert sc.datagrams_to_send(now) == []
    assert sc.counters.mtu_probes_answered == 0


def test_answers_nobody_takes_are_bounded() -> None:
    cc, sc, now = _pair()
    sc.datagrams_to_send(now)
    for i in range(MAX_PROBE_ACKS + 10):
        sc.open(cc.ping(now, 100, probe_id=i), CLIENT_ADDR, now)
    for answer, _to in sc.datagrams_to_send(now):
        cc.open(answer, SERVER_ADDR, now)
    assert cc.probe_acks == list(range(MAX_PROBE_ACKS))
    assert cc.counters.mtu_probe_acks == MAX_PROBE_ACKS + 10


def test_a_zero_padded_ping_is_answered_with_id_zero() -> None:
    """A padded PING without an id (``ping(now, pad_to)``) reads as probe 0: harmless."""
    cc, sc, now = _pair()
    sc.datagrams_to_send(now)
    sc.open(cc.ping(now, 600), CLIENT_ADDR, now)
    ((answer, _to),) = sc.datagrams_to_send(now)
    cc.open(answer, SERVER_ADDR, now)
    assert cc.probe_acks == [0]


def test_pmtud_knobs_are_validated() -> None:
    with pytest.raises(SecureUsageError, match="pmtud_max"):
        SecureConfig(pmtud_max=4000)
    with pytest.raises(SecureUsageError, match="pmtud_base"):
        SecureConfig(pmtud_base=1500, pmtud_max=1472)
    with pytest.raises(SecureUsageError, match="pmtud_probe_timeout_ms must be >= 1"):
        SecureConfig(pmtud_probe_timeout_ms=0)
    assert SecureConfig().pmtud and SecureConfig().pmtud_max == 1472
