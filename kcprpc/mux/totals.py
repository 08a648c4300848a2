"""Process-wide mux counters: what every :class:`~kcprpc.mux.MuxSession` of this process counted.

The mux's own :mod:`kcp.snmp`: a live session's counters are read where they are (its core's
dict), and folded into the totals once, when the session ends (:func:`session_closed`), so the
hot path still does one ``+=`` on one dict. :func:`mux_totals` is what the metrics endpoint
(:mod:`kcprpc.metrics`) reads at scrape time; clients in the same process count too.
"""

from __future__ import annotations

import weakref
from typing import Protocol

from .core import COUNTER_NAMES

__all__ = ["mux_totals", "session_closed", "session_opened"]


class LiveMux(Protocol):
    """What the totals read of a live session (:class:`~kcprpc.mux.MuxSession`)."""

    @property
    def counters(self) -> dict[str, int]: ...


_live: weakref.WeakSet[LiveMux] = weakref.WeakSet()
_ended: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)


def session_opened(session: LiveMux) -> None:
    """A mux session started: its counters count in :func:`mux_totals` until it ends."""
    _live.add(session)


def session_closed(session: LiveMux) -> None:
    """A mux session ended: fold its counters into the totals (once; a second call does nothing)."""
    if session not in _live:
        return
    _live.discard(session)
    counters = session.counters
    for name in COUNTER_NAMES:
        _ended[name] += counters[name]


def mux_totals() -> dict[str, int]:
    """Every counter of :data:`~kcprpc.mux.core.COUNTER_NAMES`, summed over the sessions that ended
    and the live ones, plus two gauges: ``sessions_open`` (live sessions) and ``streams_open``
    (their open streams)."""
    out = dict(_ended)
    streams = 0
    live = list(_live)
    for s in live:
        counters = s.counters
        for name in COUNTER_NAMES:
            out[name] += counters[name]
        streams += counters.get("streams_open", 0)
    out["sessions_open"] = len(live)
    out["streams_open"] = streams
    return out
