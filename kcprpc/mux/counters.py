"""A mux session's counters: one native object per session (compiled), a field per counter.

The hot paths add to fields (``c.frames_out += 1``); everything else reads the counters as a
read-only mapping of :data:`COUNTER_NAMES` (``c["frames_out"]``, ``dict(c)``, :meth:`as_dict`), as it
read the dict they were before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

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


class MuxCounters:
    """The counters of one mux session (:data:`COUNTER_NAMES`), all 0 to start with."""

    def __init__(self) -> None:
        self.frames_in = 0
        self.frames_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.syn_in = 0
        self.syn_out = 0
        self.fin_in = 0
        self.fin_out = 0
        self.nop_in = 0
        self.nop_out = 0
        self.upd_in = 0
        self.upd_out = 0
        self.streams_opened = 0
        self.streams_accepted = 0
        self.streams_refused = 0
        self.streams_released = 0
        self.duplicate_syn = 0
        self.duplicate_fin = 0
        self.dropped_unknown_stream = 0
        self.dropped_after_fin = 0
        self.bad_version = 0
        self.bad_cmd = 0
        self.bad_length = 0
        self.bad_upd = 0
        self.protocol_errors = 0
        self.keepalive_timeouts = 0
        self.recv_paused = 0

    def __getitem__(self, name: str) -> int:
        if name not in _NAMES:
            raise KeyError(name)
        value: int = getattr(self, name)
        return value

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter called ``name`` (one named at run time)."""
        if name not in _NAMES:
            raise KeyError(name)
        setattr(self, name, getattr(self, name) + n)

    def keys(self) -> tuple[str, ...]:
        """:data:`COUNTER_NAMES` (so that ``dict(counters)`` copies them)."""
        return COUNTER_NAMES

    def __iter__(self) -> Iterator[str]:
        return iter(COUNTER_NAMES)

    def __len__(self) -> int:
        return len(COUNTER_NAMES)

    def __contains__(self, name: object) -> bool:
        return name in _NAMES

    def as_dict(self) -> dict[str, int]:
        """A copy: ``{name: value}`` in :data:`COUNTER_NAMES` order."""
        return {name: getattr(self, name) for name in COUNTER_NAMES}

    def __repr__(self) -> str:
        return f"MuxCounters({self.as_dict()!r})"
