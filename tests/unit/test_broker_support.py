"""kcprpc.broker_support: the helpers RedisBroker and NatsBroker share (no broker needed)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kcprpc.broker import BrokerMessage, run_callbacks, unnumbered
from kcprpc.broker_support import BrokerBase, spawn


def test_a_raising_callback_is_counted_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    got: list[str] = []
    stats = {"callback_errors": 0}

    def bad(m: BrokerMessage) -> None:
        raise ValueError("a bug in a subscriber")

    callbacks = [lambda m: got.append("a"), bad, lambda m: got.append("c")]
    with caplog.at_level(logging.ERROR, logger="kcprpc.broker"):
        run_callbacks(callbacks, unnumbered("topic:t", "ev", {}), stats)
    assert got == ["a", "c"]
    assert stats["callback_errors"] == 1
    [rec] = caplog.records
    assert "topic:t" in rec.getMessage() and rec.exc_info is not None


def test_callbacks_are_called_from_a_snapshot() -> None:
    got: list[str] = []
    callbacks: list[object] = []

    def first(m: BrokerMessage) -> None:
        got.append("first")
        callbacks.remove(first)  # unsubscribes while the message is handed out

    callbacks += [first, lambda m: got.append("second")]
    run_callbacks(callbacks, unnumbered("room:r", "ev", {}), {"callback_errors": 0})  # type: ignore[arg-type]
    assert got == ["first", "second"] and len(callbacks) == 1


async def test_spawn_keeps_the_task_until_it_ends() -> None:
    tasks: set[asyncio.Task[object]] = set()
    gate = asyncio.Event()
    t = spawn(tasks, gate.wait())
    assert tasks == {t}
    gate.set()
    await t  # its done callbacks (the discard first) ran before this resumed
    assert tasks == set()


def test_broker_base_reports_epoch_availability_and_a_snapshot_of_the_counters() -> None:
    class B(BrokerBase):
        def __init__(self) -> None:
            self._epoch, self._available, self._stats = 7, False, {"published": 2, "unavailable": 0}

    b = B()
    assert b.epoch == 7 and not b.available
    s = b.stats()
    assert s == {"published": 2, "unavailable": 1}
    s["published"] = 99  # a snapshot: the broker's own counters are untouched
    b._available = True
    assert b.available and b.stats() == {"published": 2, "unavailable": 0}
