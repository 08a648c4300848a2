"""Garbage-collector tuning for long-lived session tables: :class:`GcPolicy` and :class:`GcFreezer`.

A server holding thousands of sessions holds millions of long-lived objects (engines, segments,
buffers, futures, the RPC layer's state). CPython's cyclic collector walks all of them in every
full collection: with 2,000 RPC connections a full collection took 0.3 to 0.7 s, during which
nothing reads the socket, its receive buffer overflows and the dropped datagrams cost a KCP
retransmission timeout each. Those pauses set the latency tail.

``gc.freeze()`` moves every object tracked so far into a permanent generation that collections
no longer walk (CPython documents it for exactly this: long-lived state after a warm-up). The
freezer does it when the session table has grown (by ``growth`` since the last freeze, once it
holds ``min_sessions``), and gives frozen objects back to the collector once many of the frozen
sessions have ended (``churn``), so the cycles they leave behind are still reclaimed: one full
collection then, where there would have been many.

:class:`GcFreezer` only decides and calls the ``gc`` functions it was given; the listener
(:func:`kcp.listen`'s ``gc``) and ``kcprpc.ServerConfig.gc`` drive it from one periodic timer.
The collector is process-wide: with several listeners in one process, give the policy to one.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Protocol

from kcp.errors import KCPUsageError

__all__ = ["GcFreezer", "GcModule", "GcPolicy"]


@dataclass(frozen=True)
class GcPolicy:
    """When to move the session table out of the garbage collector's scans (module docstring).

    ``freeze``: on (the default) or off. Once ``min_sessions`` sessions are live, and again each
    time the table grew by ``growth`` (a fraction) since the last freeze, young garbage is
    collected and everything tracked is frozen. Once sessions that ended since the last freeze
    number ``churn`` times the sessions frozen then, everything is unfrozen and collected (one
    full collection) and frozen again. Checked every ``check_interval`` seconds. At the first
    freeze the youngest generation's threshold is raised to ``young_threshold`` (CPython's is 700
    allocations; None: left alone): with the table frozen, young collections are most of what is
    left, and each one walks the young containers that point into the table (the timer heap, the
    queues), so fewer of them are cheaper. :meth:`GcFreezer.release` puts the thresholds back.
    """

    freeze: bool = True
    min_sessions: int = 500
    growth: float = 0.25
    churn: float = 0.5
    check_interval: float = 2.0
    young_threshold: int | None = 10_000

    def __post_init__(self) -> None:
        if self.min_sessions < 1:
            raise KCPUsageError("GcPolicy.min_sessions must be at least 1")
        if not self.growth > 0 or not self.churn > 0:
            raise KCPUsageError("GcPolicy.growth and GcPolicy.churn must be positive")
        if not self.check_interval > 0:
            raise KCPUsageError("GcPolicy.check_interval must be positive seconds")
        if self.young_threshold is not None and self.young_threshold < 1:
            raise KCPUsageError("GcPolicy.young_threshold must be at least 1 or None")


class GcModule(Protocol):
    """The parts of the ``gc`` module the freezer calls (a fake in tests)."""

    def collect(self, generation: int = 2) -> int: ...

    def freeze(self) -> None: ...

    def unfreeze(self) -> None: ...

    def get_threshold(self) -> tuple[int, int, int]: ...

    def set_threshold(self, threshold0: int, threshold1: int = ..., threshold2: int = ..., /) -> None: ...


_RAISED: dict[GcModule, tuple[int, tuple[int, int, int]]] = {}
"""Per collector (the gc module, or a test's fake): how many freezers hold the raised young
threshold, and the thresholds from before the first of them. The collector is process-wide, and a
process may run several listeners (a test suite runs hundreds): the last freezer to let go restores
what was there before the first. Keyed by the object itself, which the entry keeps alive: an ``id``
could be reused by another fake once the first is gone, and pass for one already held."""


def _hold_young(gcm: GcModule, young: int) -> None:
    held = _RAISED.get(gcm)
    if held is not None:
        _RAISED[gcm] = (held[0] + 1, held[1])
        return
    t = gcm.get_threshold()
    _RAISED[gcm] = (1, t)
    if young > t[0]:
        gcm.set_threshold(young, *t[1:])


def _release_young(gcm: GcModule) -> None:
    n, t = _RAISED[gcm]
    if n > 1:
        _RAISED[gcm] = (n - 1, t)
        return
    del _RAISED[gcm]
    gcm.set_threshold(*t)


class GcFreezer:
    """Applies a :class:`GcPolicy`: call :meth:`check` periodically with the live session count
    and the number of sessions started so far (a running total)."""

    __slots__ = (
        "_ended_at_freeze",
        "_gc",
        "_young_held",
        "freezes",
        "frozen_sessions",
        "policy",
        "refreezes",
    )

    def __init__(self, policy: GcPolicy, gc_module: GcModule | None = None) -> None:
        self.policy = policy
        self._gc: GcModule = gc_module if gc_module is not None else gc
        self.frozen_sessions = 0  # live sessions at the last freeze (0: nothing frozen by us)
        self._ended_at_freeze = 0
        self._young_held = False  # this freezer holds the raised young threshold (_RAISED)
        self.freezes = 0  # counters, for tests and the benchmarks
        self.refreezes = 0

    def start(self) -> None:
        """The listener started: raise the youngest generation's threshold to the policy's
        ``young_threshold`` (never lower it; an application's higher threshold stays)."""
        young = self.policy.young_threshold
        if young is not None and self.policy.freeze and not self._young_held:
            self._young_held = True
            _hold_young(self._gc, young)

    def check(self, live: int, started: int) -> str:
        """Freeze, refreeze or do nothing; returns ``"freeze"``, ``"refreeze"`` or ``""``."""
        p = self.policy
        if not p.freeze:
            return ""
        ended = started - live
        if self.frozen_sessions and ended - self._ended_at_freeze >= p.churn * self.frozen_sessions:
            self._gc.unfreeze()
            self._gc.collect()  # the cycles the ended sessions left behind
            self.frozen_sessions = 0
            self.refreezes += 1
            if live >= p.min_sessions:
                self._freeze(live, ended)
            return "refreeze"
        if live >= p.min_sessions and (
            not self.frozen_sessions or live >= self.frozen_sessions * (1 + p.growth)
        ):
            self._gc.collect(1)  # young garbage is not worth freezing
            self._freeze(live, ended)
            return "freeze"
        return ""

    def _freeze(self, live: int, ended: int) -> None:
        self.start()  # (a freezer driven without start() raises the threshold at its first freeze)
        self._gc.freeze()
        self.frozen_sessions = live
        self._ended_at_freeze = ended
        self.freezes += 1

    def release(self) -> None:
        """The table is gone (its listener closed): give what was frozen back to the collector,
        and its thresholds (once no other freezer in the process holds them raised)."""
        if self.frozen_sessions:
            self._gc.unfreeze()
            self.frozen_sessions = 0
        if self._young_held:
            self._young_held = False
            _release_young(self._gc)
