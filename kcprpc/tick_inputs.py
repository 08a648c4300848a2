"""Client inputs waiting for a simulation tick (docs/game.md, "Inputs").

One :class:`InputQueue` per room member: the inputs it sent, each with the client's sequence
number, in increasing sequence order. An input whose sequence number is not above every one
already accepted from that client (a duplicate or a late datagram) is dropped and counted. The
queue is bounded in count and in bytes: past either bound the oldest inputs are dropped and
counted. :attr:`InputQueue.acked` is the sequence number of the last input handed to the
simulation, which state messages carry back so that the client can reconcile its prediction.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

from kcp.token_bucket import TokenBucket

__all__ = ["INPUT_COUNTERS", "InputQueue", "TickInput"]

INPUT_COUNTERS = (
    "inputs_accepted",  # queued for a tick
    "inputs_processed",  # handed to update()
    "inputs_stale",  # sequence number not above the last accepted one (duplicate, reordered)
    "inputs_dropped",  # the oldest, pushed out past max_inputs or max_input_bytes
    "inputs_invalid",  # refused by the room's input model, or larger than max_input_bytes alone
    "inputs_rate_limited",  # new inputs past the member's max_input_rate (dropped before any work)
)
"""The input counters of a room (``room.stats``)."""


class TickInput(NamedTuple):
    """One client input: the client's sequence number and the validated payload."""

    seq: int
    payload: Any


class InputQueue:
    """The queued inputs of one client, at most ``max_inputs`` and ``max_bytes`` (sizes as given
    to :meth:`push`); ``stats`` receives the counters of :data:`INPUT_COUNTERS`."""

    __slots__ = ("_items", "acked", "bucket", "bytes", "last_seq", "max_bytes", "max_inputs", "stats")

    def __init__(
        self, max_inputs: int, max_bytes: int, stats: dict[str, int], bucket: TokenBucket | None = None
    ) -> None:
        self._items: deque[tuple[TickInput, int]] = deque()
        self.bucket = bucket
        """The member's new inputs a second (``TickRoom.max_input_rate``; None: no bound)."""
        self.max_inputs = max_inputs
        self.max_bytes = max_bytes
        self.stats = stats
        self.bytes = 0
        self.last_seq = -1
        """The highest sequence number accepted (-1: none yet)."""
        self.acked = -1
        """The sequence number of the last input handed to the simulation (-1: none yet)."""

    def __len__(self) -> int:
        return len(self._items)

    def admit(self, seq: int, now_ms: int) -> bool:
        """Before an input is validated and measured: False (counted) when it is stale, or new
        but past the member's rate, so that neither costs more than this check."""
        if seq <= self.last_seq:
            self.stats["inputs_stale"] += 1
            return False
        if self.bucket is not None and not self.bucket.take(now_ms):
            self.stats["inputs_rate_limited"] += 1
            return False
        return True

    def push(self, seq: int, payload: Any, size: int) -> bool:
        """Queue an input of ``size`` bytes; False when it was dropped (stale or too large)."""
        if seq <= self.last_seq:
            self.stats["inputs_stale"] += 1
            return False
        if size > self.max_bytes:
            self.stats["inputs_invalid"] += 1
            return False
        self.last_seq = seq
        self._items.append((TickInput(seq, payload), size))
        self.bytes += size
        while len(self._items) > self.max_inputs or self.bytes > self.max_bytes:
            _, n = self._items.popleft()
            self.bytes -= n
            self.stats["inputs_dropped"] += 1
        self.stats["inputs_accepted"] += 1
        return True

    def take(self, limit: int | None) -> list[TickInput]:
        """The oldest ``limit`` inputs (all with None), in sequence order; ``acked`` moves to the
        last one taken."""
        n = len(self._items) if limit is None else min(limit, len(self._items))
        out: list[TickInput] = []
        for _ in range(n):
            item, size = self._items.popleft()
            self.bytes -= size
            out.append(item)
        if out:
            self.acked = out[-1].seq
            self.stats["inputs_processed"] += len(out)
        return out
