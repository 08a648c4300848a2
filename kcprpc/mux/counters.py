"""A mux session's counters: one native object per session (compiled), a field per counter.

The hot paths add to fields (``c.frames_out += 1``); everything else reads the counters as a
read-only mapping of :data:`COUNTER_NAMES` (``c["frames_out"]``, ``dict(c)``, ``c.snapshot()``), as
it read the dict they were before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Final

from kcp.stats import CounterSet

__all__ = ["COUNTER_NAMES", "MuxCounters"]

COUNTER_NAMES: Final = (
    "frames_in",
    "frames_out",
    "bytes_in",  # PSH payload bytes accepted for a live stream
    "bytes_out",  # PSH payload bytes sent
    "syn_in",
    "syn_out",
    "fin_in",
    "fin_out",
    "nop_in",
    "nop_out",
    "upd_in",
    "upd_out",
    "streams_opened",  # by us
    "streams_accepted",  # opened by the peer and admitted
    "streams_refused",  # peer SYN beyond max_streams, answered with FIN
    "streams_released",  # FIN both ways, left the table
    "duplicate_syn",  # SYN for an id already open (ignored, as smux)
    "duplicate_fin",  # FIN after the peer's own FIN on that stream (ignored)
    "dropped_unknown_stream",  # PSH for no open stream (dropped, as smux)
    "dropped_after_fin",  # PSH after the peer's own FIN on that stream
    "bad_version",
    "bad_cmd",
    "bad_length",
    "bad_upd",  # UPD acknowledging bytes never sent
    "protocol_errors",  # sum of the above four: each closed the session
    "keepalive_timeouts",
    "recv_paused",  # times the token bucket ran dry and parsing paused
)
_NAMES: Final = frozenset(COUNTER_NAMES)


class MuxCounters(CounterSet):
    """The counters of one mux session (:data:`COUNTER_NAMES`), all 0 to start with: a
    :class:`kcp.stats.CounterSet` (``snapshot``, ``add``, ``reset``) that also reads as a read-only
    mapping of its names."""

    FIELDS: ClassVar[tuple[str, ...]] = COUNTER_NAMES
    __slots__ = COUNTER_NAMES
    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int
    syn_in: int
    syn_out: int
    fin_in: int
    fin_out: int
    nop_in: int
    nop_out: int
    upd_in: int
    upd_out: int
    streams_opened: int
    streams_accepted: int
    streams_refused: int
    streams_released: int
    duplicate_syn: int
    duplicate_fin: int
    dropped_unknown_stream: int
    dropped_after_fin: int
    bad_version: int
    bad_cmd: int
    bad_length: int
    bad_upd: int
    protocol_errors: int
    keepalive_timeouts: int
    recv_paused: int

    def __getitem__(self, name: str) -> int:
        if name not in _NAMES:
            raise KeyError(name)
        value: int = getattr(self, name)
        return value

    def keys(self) -> tuple[str, ...]:
        """:data:`COUNTER_NAMES` (so that ``dict(counters)`` copies them)."""
        return COUNTER_NAMES

    def __iter__(self) -> Iterator[str]:
        return iter(COUNTER_NAMES)

    def __len__(self) -> int:
        return len(COUNTER_NAMES)

    def __contains__(self, name: object) -> bool:
        return name in _NAMES
