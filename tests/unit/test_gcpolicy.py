"""The garbage-collector tuning of long-lived session tables (kcp.gcpolicy): decisions on a fake
``gc`` module, and the policy reaching the listener of a kcp.listen and of a kcprpc.Server."""

from __future__ import annotations

import asyncio

import pytest

import kcp
import kcprpc
from kcp.gcpolicy import GcFreezer, GcPolicy


class FakeGc:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.threshold = (700, 10, 10)

    def get_threshold(self) -> tuple[int, int, int]:
        return self.threshold

    def set_threshold(self, threshold0: int, threshold1: int = 10, threshold2: int = 10, /) -> None:
        self.threshold = (threshold0, threshold1, threshold2)

    def collect(self, generation: int = 2) -> int:
        self.calls.append(f"collect{generation}")
        return 0

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")


def test_freezes_once_the_table_is_big_and_again_as_it_grows() -> None:
    g = FakeGc()
    f = GcFreezer(GcPolicy(min_sessions=100, growth=0.5), g)
    assert f.check(live=99, started=99) == ""
    assert g.calls == []
    assert f.check(live=100, started=100) == "freeze"
    assert g.calls == ["collect1", "freeze"]  # young garbage first, then everything tracked
    assert f.check(live=149, started=149) == ""  # grown by less than half
    assert f.check(live=150, started=150) == "freeze"
    assert f.frozen_sessions == 150 and f.freezes == 2


def test_churn_gives_the_frozen_objects_back_to_the_collector() -> None:
    g = FakeGc()
    f = GcFreezer(GcPolicy(min_sessions=100, churn=0.5), g)
    f.check(live=200, started=200)
    g.calls.clear()
    # 99 of the 200 frozen sessions ended (and 99 new ones came): not yet
    assert f.check(live=200, started=299) == ""
    # 100 ended: their cycles are frozen garbage; unfreeze, collect them all, freeze the rest again
    assert f.check(live=200, started=300) == "refreeze"
    assert g.calls == ["unfreeze", "collect2", "freeze"]
    assert f.refreezes == 1 and f.frozen_sessions == 200
    # a table that shrank below min_sessions stays unfrozen
    g.calls.clear()
    assert f.check(live=50, started=450) == "refreeze"
    assert g.calls == ["unfreeze", "collect2"]
    assert f.frozen_sessions == 0


def test_young_threshold_is_raised_at_start_and_restored() -> None:
    g = FakeGc()
    f = GcFreezer(GcPolicy(min_sessions=10, young_threshold=5000), g)
    f.start()  # a busy server with one session collects its calls' garbage less often too
    assert g.threshold == (5000, 10, 10)
    f.check(live=9, started=9)
    assert g.threshold == (5000, 10, 10)
    f.release()
    assert g.threshold == (700, 10, 10)
    g.threshold = (20_000, 10, 10)  # an application's own higher threshold is never lowered
    GcFreezer(GcPolicy(young_threshold=5000), g).start()
    assert g.threshold == (20_000, 10, 10)
    GcFreezer(GcPolicy(freeze=False, young_threshold=5000), g2 := FakeGc()).start()
    assert g2.threshold == (700, 10, 10)  # a policy that is off changes nothing


def test_a_collector_held_by_a_freezer_that_never_let_go_is_not_taken_for_a_new_one() -> None:
    """A listener that ends without releasing its freezer (a test's, say) keeps its collector
    held; a new collector must not pass for it. Keyed by ``id``, a new fake could take the freed
    fake's address and find its threshold "already raised" (seen on Python 3.13)."""
    a = FakeGc()
    GcFreezer(GcPolicy(young_threshold=5000), a).start()  # never released
    gone = id(a)
    del a
    fakes = [FakeGc() for _ in range(100)]
    assert all(id(f) != gone for f in fakes)  # the held one is still alive: its id stays its own
    GcFreezer(GcPolicy(young_threshold=5000), fakes[0]).start()
    assert fakes[0].threshold == (5000, 10, 10)


def test_several_listeners_restore_the_threshold_when_the_last_one_closes() -> None:
    g = FakeGc()
    a = GcFreezer(GcPolicy(young_threshold=5000), g)
    b = GcFreezer(GcPolicy(young_threshold=8000), g)
    a.start()
    b.start()
    assert g.threshold == (5000, 10, 10)  # the first raise stands; the second only holds it
    a.release()
    assert g.threshold == (5000, 10, 10)  # b's listener still runs: not lowered under it
    a.release()  # a second release of one freezer does not count twice
    assert g.threshold == (5000, 10, 10)
    b.release()
    assert g.threshold == (700, 10, 10)  # what it was before the first raise


def test_young_threshold_is_raised_at_the_first_freeze_without_start_and_restored() -> None:
    g = FakeGc()
    f = GcFreezer(GcPolicy(min_sessions=10, young_threshold=5000), g)
    f.check(live=9, started=9)
    assert g.threshold == (700, 10, 10)
    f.check(live=10, started=10)
    assert g.threshold == (5000, 10, 10)
    g.threshold = (6000, 10, 10)  # the application changed it meanwhile: a refreeze keeps that
    f.check(live=20, started=20)
    assert g.threshold == (6000, 10, 10)
    f.release()
    assert g.threshold == (700, 10, 10)  # what it was before the first freeze
    g2 = FakeGc()
    GcFreezer(GcPolicy(min_sessions=1, young_threshold=None), g2).check(live=1, started=1)
    assert g2.threshold == (700, 10, 10)


def test_off_and_invalid_policies() -> None:
    g = FakeGc()
    f = GcFreezer(GcPolicy(freeze=False, min_sessions=1), g)
    assert f.check(live=10_000, started=10_000) == ""
    assert g.calls == []
    for bad in (
        {"min_sessions": 0},
        {"growth": 0},
        {"churn": -1},
        {"check_interval": 0},
        {"young_threshold": 0},
    ):
        with pytest.raises(kcp.KCPUsageError):
            GcPolicy(**bad)  # type: ignore[arg-type]


def test_release_unfreezes_only_what_it_froze() -> None:
    g = FakeGc()
    f = GcFreezer(GcPolicy(min_sessions=1), g)
    f.release()
    assert g.calls == []
    f.check(live=1, started=1)
    f.release()
    assert g.calls[-1] == "unfreeze" and f.frozen_sessions == 0


async def test_listener_runs_the_policy_and_none_turns_it_off() -> None:
    policy = GcPolicy(min_sessions=10**9, check_interval=0.01)
    lis = await kcp.listen("127.0.0.1", 0, gc=policy)
    try:
        assert lis.gc_freezer is not None and lis.gc_freezer.policy is policy
    finally:
        lis.close()
        await lis.wait_closed()
    off = await kcp.listen("127.0.0.1", 0, gc=None)
    try:
        assert off.gc_freezer is None
    finally:
        off.close()
        await off.wait_closed()
    default = await kcp.listen("127.0.0.1", 0)
    try:
        assert default.gc_freezer is not None and default.gc_freezer.policy == GcPolicy()
    finally:
        default.close()
        await default.wait_closed()


async def test_listener_freezes_when_its_table_is_big_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    g = FakeGc()
    monkeypatch.setattr("kcp.gcpolicy.gc", g)
    lis = await kcp.listen("127.0.0.1", 0, gc=GcPolicy(min_sessions=1, check_interval=0.01))
    client = await kcp.dial("127.0.0.1", lis.address[1])
    try:
        client.write(b"hello")
        peer = await asyncio.wait_for(lis.accept(), 5)
        assert await asyncio.wait_for(peer.read(), 5) == b"hello"
        freezer = lis.gc_freezer
        assert freezer is not None
        for _ in range(500):
            if freezer.freezes:
                break
            await asyncio.sleep(0.01)
        assert freezer.freezes == 1 and g.calls == ["collect1", "freeze"]
        assert lis.sessions_started == 1
    finally:
        client.abort()
        lis.close()
        await lis.wait_closed()
    assert g.calls[-1] == "unfreeze"  # a closed listener gives its table back to the collector


async def test_server_config_gc_reaches_the_listener() -> None:
    policy = GcPolicy(min_sessions=12_345)
    server = kcprpc.Server([], "127.0.0.1", 0, config=kcprpc.ServerConfig(gc=policy))
    await server.start()
    try:
        lis = server._listener
        assert lis is not None and lis.listener.gc_freezer is not None
        assert lis.listener.gc_freezer.policy is policy
    finally:
        await server.shutdown()
    server = kcprpc.Server([], "127.0.0.1", 0, config=kcprpc.ServerConfig(gc=None))
    await server.start()
    try:
        assert server._listener is not None and server._listener.listener.gc_freezer is None
    finally:
        await server.shutdown()
