from __future__ import annotations

from kcp.stats import SNMP, Counters


def test_counters_start_at_zero_and_snapshot_is_a_copy() -> None:
    c = Counters()
    assert set(c.snapshot().values()) == {0}
    c.in_pkts += 3
    snap = c.snapshot()
    c.in_pkts += 1
    assert snap["in_pkts"] == 3
    assert c.snapshot()["in_pkts"] == 4


def test_add_and_reset() -> None:
    a, b = Counters(), Counters()
    a.retrans_segs = 2
    b.retrans_segs = 5
    b.fec_recovered = 1
    a.add(b)
    assert (a.retrans_segs, a.fec_recovered) == (7, 1)
    a.reset()
    assert a.snapshot() == Counters().snapshot()


def test_fields_are_slots_not_a_dict() -> None:
    c = Counters()
    try:
        c.not_a_counter = 1  # type: ignore[attr-defined]
    except AttributeError:
        pass
    else:  # pragma: no cover - would mean a typo in a counter name goes unnoticed
        raise AssertionError("unknown counter names must be rejected")
    assert isinstance(SNMP, Counters)


def test_declared_fields_match_slots() -> None:
    assert set(Counters.__annotations__) - {"FIELDS"} == set(Counters.FIELDS)
