"""Process-wide counters: :data:`kcp.stats.SNMP` plus what live sessions and secure cores counted.

Sessions count engine and packet-layer events in their own :class:`kcp.stats.Counters` and fold
them into ``SNMP`` when they close (:func:`session_closed`); socket-level and session-lifecycle
counters go to ``SNMP`` directly. Secure mode's counters (connections, listeners' handshake cores,
dials) are folded into the ``secure_*`` fields the same way (:data:`kcp.stats.SECURE_SUMMARY`).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Protocol

from kcp.stats import SNMP, Counters, CounterSet

if TYPE_CHECKING:
    from kcp.secure import SecureConnection

__all__ = ["session_closed", "session_opened", "snmp", "track_secure_source", "untrack_secure_source"]


class LiveEntry:
    """A live session's entry in :func:`snmp`'s weak set: what it reads of the session (its
    counters, its path's secure connection), not the session itself. The session holds its entry
    (the only strong reference), so an entry lives exactly as long as its session, and a session
    dropped without being closed leaves the set with it, without the session class having to be
    weakly referenceable (the compiled build's native classes are not)."""

    __slots__ = ("__weakref__", "_path", "counters")

    def __init__(self, counters: Counters, path: HasConnection) -> None:
        self.counters = counters
        self._path = path

    @property
    def secure(self) -> SecureConnection | None:
        return self._path.connection


class HasConnection(Protocol):
    """A session's packet path, as :class:`LiveEntry` reads it."""

    @property
    def connection(self) -> SecureConnection | None: ...


class SecureSource(Protocol):
    """A secure core whose counters :func:`snmp` adds while it lives (a listener's handshake core)."""

    @property
    def counters(self) -> CounterSet: ...


# Counters that live on the endpoint/listener/SNMP directly, not per session (never folded twice)
_NOT_FOLDED = frozenset(
    {
        "bytes_sent",
        "bytes_received",
        "out_pkts",
        "in_pkts",
        "send_syscalls",
        "recv_syscalls",
        "active_opens",
        "passive_opens",
        "curr_estab",
        "max_conn",
        "closed",
        "dropped_no_session",
        "dropped_table_full",
        "dropped_bad_conv",
        "dropped_backlog_full",
        "dropped_replay",
        "dropped_rate_limited",
        "pending_created",
        "pending_promoted",
        "pending_expired",
        "pending_evicted",
        "pending_overflow",
        "restart_deferred",
        "sessions_replaced",
        "wire_hints_sent",
        "wire_hints_rate_limited",
        "wire_hints_received",
        "wire_hints_ignored",
    }
)
# secure_* fields come from kcp.secure's counters (folded with Counters.add_secure), not from sessions'
_FOLDED = tuple(f for f in Counters.FIELDS if f not in _NOT_FOLDED and not f.startswith("secure_"))
_live: weakref.WeakSet[LiveEntry] = weakref.WeakSet()
_live_secure: weakref.WeakSet[SecureSource] = weakref.WeakSet()


def track_secure_source(source: SecureSource) -> None:
    """Count ``source.counters`` (a :class:`kcp.secure.SecureCounters`, a listener's handshake
    core) in :func:`snmp` while ``source`` lives (it folds them into ``SNMP`` when it ends)."""
    _live_secure.add(source)


def untrack_secure_source(source: SecureSource) -> None:
    """``source`` ended (and folded its counters into ``SNMP``)."""
    _live_secure.discard(source)


def snmp() -> dict[str, int]:
    """Process-wide counters: :data:`kcp.stats.SNMP` plus what live sessions counted so far.

    Sessions count engine and packet-layer events in their own :class:`Counters` and fold them into
    ``SNMP`` when they close; socket-level and session-lifecycle counters go to ``SNMP`` directly.
    The ``secure_*`` fields come from secure mode's counters (connections, listeners' handshake
    cores, dials), folded in the same way (:data:`kcp.stats.SECURE_SUMMARY`).
    """
    total = Counters.total([SNMP])
    for s in list(_live):
        total.add(s.counters, _FOLDED)
        conn = s.secure
        if conn is not None:
            total.add_secure(conn.counters)
    for source in list(_live_secure):
        total.add_secure(source.counters)
    out: dict[str, int] = total.snapshot()
    return out


def session_opened(counters: Counters, path: HasConnection, *, passive: bool) -> LiveEntry:
    """A session started: count it, and count its ``counters`` (and its ``path``'s secure
    connection's) in :func:`snmp` until it closes; returns its entry, which the session keeps and
    hands to :func:`session_closed`."""
    entry = LiveEntry(counters, path)
    _live.add(entry)
    SNMP.curr_estab += 1
    if SNMP.curr_estab > SNMP.max_conn:
        SNMP.max_conn = SNMP.curr_estab
    if passive:
        SNMP.passive_opens += 1
    else:
        SNMP.active_opens += 1
    return entry


def session_closed(entry: LiveEntry) -> None:
    """A session ended: fold its own counters into ``SNMP`` (once)."""
    _live.discard(entry)
    SNMP.add(entry.counters, _FOLDED)
    SNMP.curr_estab -= 1
    SNMP.closed += 1
