"""Numbered direct events: a reliable ``session.send`` that survives a resume exactly (sans-I/O;
docs/wire-format/rpc.md, "Numbered direct events").

A client that says so in its HELLO (``"numbered": true``) gets every reliable event sent to its
session alone numbered: the EVENT frame's call id carries the number (1, 2, 3 ... wrapping after
2³² - 1, never 0), given as the frame goes on the control stream, so numbers follow the stream's
order whatever the send lanes reorder. The client acknowledges the last one it handled with an
``EVENT_ACK`` frame (after :data:`ACK_DELAY`, at once after :data:`ACK_EVERY` unacknowledged), and
names it in a resume claim (``"last"``).

The server keeps each numbered frame until the client acknowledges it (:class:`DirectRing`),
bounded in bytes (``ServerConfig.detached_send_buffer``): past the bound the oldest is forgotten
and counted. On a resume it sends again, first and in order, those after the client's ``last``,
and reports exactly how many it no longer had (``WELCOME.direct``: ``[replayed, missed]``; the
client raises ``kcprpc.Recovered(key="session", ...)``). Before, a reliable event the transport
had taken and never delivered was lost with the connection, and the client resumed without
being told.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from kcprpc.codec import HEADER_SIZE

__all__ = [
    "ACK_DELAY",
    "ACK_EVERY",
    "DIRECT_COUNTERS",
    "ENTRY_COST",
    "SESSION_KEY",
    "DirectRing",
    "advance",
    "after",
    "distance",
    "next_number",
    "numbered",
]

MASK: Final = 0xFFFFFFFF
_HALF: Final = 1 << 31

ACK_DELAY: Final = 2.0
"""Seconds a client waits before it acknowledges what it handled (more events may follow). Long
enough that a client that only receives stays a receiver (its transport's held acks go on: an
ack every 100 ms stopped them, one a second halved them), and it matters little for a resume:
the server keeps the newest ``detached_send_buffer`` bytes of them whatever the client
acknowledged, and those are what a lost connection may have left undelivered."""
ACK_EVERY: Final = 256
"""Unacknowledged events after which a client acknowledges at once."""
ENTRY_COST: Final = 64
"""Bytes a kept frame is charged besides its own (its entry), so that tiny events are bounded too."""
SESSION_KEY: Final = "session"
"""The key of the ``kcprpc.Recovered`` event that reports a resumed session's direct events."""

DIRECT_COUNTERS: Final = (
    "direct_replayed",  # numbered direct events sent again (or held, sent first) on a resume
    "direct_forgotten",  # ... forgotten unacknowledged past detached_send_buffer (missed, if lost)
    "direct_missed",  # ... reported missed to a resuming client (it had not received them)
)


def next_number(n: int) -> int:
    """The number after ``n`` (wrapping after 2³² - 1 to 1: 0 means "not numbered")."""
    return (n + 1) & MASK or 1


def after(a: int, b: int) -> bool:
    """True when number ``a`` comes after ``b`` (serial number arithmetic, RFC 1982)."""
    return 0 < ((a - b) & MASK) < _HALF


def distance(a: int, b: int) -> int:
    """How many numbers come after ``b`` up to ``a`` included (``a`` after ``b``; 0 is skipped)."""
    d = (a - b) & MASK
    return d - 1 if a < b else d


def advance(n: int, k: int) -> int:
    """The number ``k`` numbers after ``n`` (0: before the first)."""
    return ((n - 1 + k) % MASK) + 1 if k else n


def numbered(frame: bytes, n: int) -> bytes:
    """``frame`` (an encoded EVENT, call id 0) with the number ``n`` in its call id."""
    return frame[: HEADER_SIZE - 4] + n.to_bytes(4, "big") + frame[HEADER_SIZE:]


class DirectRing:
    """What one session's client may still need of its direct events (server side): the numbered
    frames it has not acknowledged, and while it is detached the frames held for its resume (a
    held frame that is not a numbered event, a ROOMS or a room's event, is kept with number 0)."""

    __slots__ = ("bytes", "entries", "forgotten", "next", "stats")

    def __init__(self, stats: dict[str, int]) -> None:
        self.entries: deque[tuple[int, bytes]] = deque()
        self.bytes = 0  # what the entries are charged (each frame plus ENTRY_COST)
        self.next = 1  # the number the next event gets
        self.forgotten = 0  # the newest number forgotten unacknowledged (0: none)
        self.stats = stats

    def number(self, frame: bytes) -> bytes:
        """Number an EVENT ``frame`` (call id 0) and keep it until acknowledged; the frame to send."""
        n = self.next
        self.next = n + 1 if n != MASK else 1
        out = frame[:5] + n.to_bytes(4, "big") + frame[9:]  # (numbered(), inline: once per event)
        self.entries.append((n, out))
        self.bytes += len(out) + ENTRY_COST
        return out

    def hold(self, frame: bytes) -> None:
        """Keep a frame that is not a numbered event for the resume (the session is detached)."""
        self.entries.append((0, frame))
        self.bytes += len(frame) + ENTRY_COST

    def trim(self, limit: int) -> int:
        """Forget the oldest numbered frames while the ring is over ``limit`` bytes; returns the
        bytes still over it (frames that are not numbered events are never forgotten here)."""
        entries = self.entries
        if self.bytes <= limit:
            return 0
        kept: deque[tuple[int, bytes]] | None = None
        while entries and self.bytes > limit:
            n, frame = entries.popleft()
            if n == 0:
                if kept is None:
                    kept = deque()
                kept.append((n, frame))
                continue
            self.bytes -= len(frame) + ENTRY_COST
            self.forgotten = n
            self.stats["direct_forgotten"] += 1
        if kept is not None:
            kept.extend(entries)
            self.entries = kept
        return max(0, self.bytes - limit)

    def ack(self, n: int) -> None:
        """The client handled every number up to ``n``: forget them."""
        entries = self.entries
        popleft = entries.popleft
        freed = 0
        while entries:
            m, frame = entries[0]
            if m == 0 or 0 < ((m - n) & MASK) < _HALF:  # held, or after n: kept
                break
            popleft()
            freed += len(frame) + ENTRY_COST
        self.bytes -= freed
        f = self.forgotten
        if f and not after(f, n):  # the client handled past it: never to be reported
            self.forgotten = 0

    def resume(self, last: int) -> tuple[list[bytes], int, int]:
        """The client resumes, having handled every number up to ``last`` (0: none): the frames
        to send first (the numbered ones after ``last``, and the held ones, in order), how many
        numbered ones those are, and how many after ``last`` were forgotten (reported once: the
        client then counts them as handled, its last number moved on by as many)."""
        out: list[bytes] = []
        kept: deque[tuple[int, bytes]] = deque()
        replayed = 0
        size = 0
        for n, frame in self.entries:
            if n == 0:  # held, never sent: sent once, not kept
                out.append(frame)
            elif after(n, last):
                out.append(frame)
                kept.append((n, frame))
                size += len(frame) + ENTRY_COST
                replayed += 1
        self.entries = kept
        self.bytes = size
        f = self.forgotten
        missed = distance(f, last) if f and after(f, last) else 0
        self.forgotten = 0  # reported once: the client counts them as handled (advance)
        self.stats["direct_replayed"] += replayed
        self.stats["direct_missed"] += missed
        return out, replayed, missed
