from __future__ import annotations

import inspect

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
    """Every counter is an attribute of the class (a slot, or a field of the compiled build's
    native class) and there is no other; the pure build's annotations name the same fields."""
    from kcp.secure.stats import SecureCounters
    from kcprpc.mux.counters import MuxCounters

    for cls in (Counters, SecureCounters, MuxCounters):
        fields = {n for n, v in vars(cls).items() if inspect.isdatadescriptor(v) and not n.startswith("__")}
        assert fields == set(cls.FIELDS), cls
        assert len(cls.FIELDS) == len(fields), cls  # no name twice
        declared = set(getattr(cls, "__annotations__", {})) - {"FIELDS"}  # empty when compiled
        assert not declared or declared == fields, cls


def test_one_counters_type_aggregates_and_folds_secure_counters() -> None:
    from kcp.secure.stats import SecureCounters
    from kcp.stats import SECURE_SUMMARY, CounterSet

    assert issubclass(Counters, CounterSet) and issubclass(SecureCounters, CounterSet)
    a, b = Counters(), Counters()
    a.in_pkts, b.in_pkts, b.oob_in = 1, 2, 5
    total = Counters.total([a, b])
    assert (total.in_pkts, total.oob_in) == (3, 5) and a.in_pkts == 1  # a new set, inputs untouched
    a.add(b, ("oob_in",))  # only the named fields
    assert (a.in_pkts, a.oob_in) == (1, 5)
    sc = SecureCounters()
    sc.handshakes_completed, sc.accepted, sc.replay_duplicates, sc.replay_too_old = 1, 2, 3, 4
    assert SecureCounters.total([sc, sc]).accepted == 4
    c = Counters()
    c.add_secure(sc)
    assert c.secure_handshakes == 3 and c.secure_replays == 7
    assert set(SECURE_SUMMARY) == {f for f in Counters.FIELDS if f.startswith("secure_")}
    for sources in SECURE_SUMMARY.values():
        assert set(sources) <= set(SecureCounters.FIELDS)
