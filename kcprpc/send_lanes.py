"""Per-session send lanes: latest-wins per key and priority classes (docs/rpc.md, "Latest-wins
and priorities").

:class:`SendLanes` is a sans-I/O queue of encoded EVENT frames for one session. Frames wait in a
:class:`Lane` until the session's pump hands them to the transport, which it does only while the
transport holds less than :attr:`LaneConfig.window` bytes for the client (KCP's unacknowledged
send queue plus the mux's buffered bytes: ``Connection.send_bounds.send_backlog()``). While they
wait:

* a frame with a *key* replaces the frame of the same key still queued in its lane (the older one
  is never sent: ``lanes_conflated``); it keeps the older one's place in the lane;
* lanes are served by priority (a lower number first, strictly), and lanes of equal priority
  share the link by ``weight`` (weighted fair queueing over bytes), as GameNetworkingSockets' lanes
  do; frames of one lane leave in the order they were queued;
* each lane holds at most ``max_bytes``; past it the oldest *unreliable* keyed frame of the lane
  is dropped first (``lanes_dropped``: a newer frame of that key repairs it). If that is not
  enough, an unreliable frame meets the lane's ``overflow``: ``"refuse"`` (``lanes_refused``) or
  ``"end"`` the session as a slow consumer (the existing ``slow_consumers`` path). A reliable
  frame is never dropped or refused: one that does not fit ends the session, whose client is
  replayed what it missed when it resumes (nothing accepted is lost silently);
* the reliable frames of one room or topic reach the client in the order they were sent, whatever
  their lanes: one that would overtake reliable frames of its room or topic still waiting in
  another lane waits behind them there (the client tracks one offset per room or topic and
  would drop the earlier ones as already seen).

RPC replies, control frames and events sent with neither a key nor a lane never enter a lane: they
go to the control stream at once, as before (the top class).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

from kcp.fieldcheck import check_fields
from kcprpc.codec import EVENT, encode_frame
from kcprpc.errors import UsageError

__all__ = [
    "DEFAULT_LANES",
    "EVENT_KEYED_LEN",
    "LANE_COUNTERS",
    "Lane",
    "LaneConfig",
    "Put",
    "SendLanes",
]

Overflow = Literal["refuse", "end"]

LANE_COUNTERS: Final = (
    "lanes_queued",  # frames put in a lane (keyed or not)
    "lanes_sent",  # frames a lane handed to the transport
    "lanes_conflated",  # keyed frames replaced by a newer one of their key before they were sent
    "lanes_dropped",  # keyed frames dropped to make room in a full lane
    "lanes_refused",  # frames refused by a full lane whose overflow is "refuse"
)
"""The server counters of the send lanes (``server.stats``)."""


@dataclass(frozen=True)
class Lane:
    """One delivery class. ``priority``: lower goes first, strictly (a lane is served only while
    every lane of a lower number is empty); ``weight``: the share of the link among lanes of the
    same priority; ``max_bytes``: what it may hold queued per session; ``overflow``: what happens
    past it once no keyed frame is left to drop (``"refuse"`` the frame or ``"end"`` the session
    as a slow consumer)."""

    name: str
    priority: int
    weight: int = 1
    max_bytes: int = 256 * 1024
    overflow: Overflow = "end"

    def __post_init__(self) -> None:
        check_fields(self, UsageError)
        if not self.name or self.weight <= 0 or self.max_bytes <= 0 or self.priority < 0:
            raise UsageError(f"lane {self.name!r}: needs a name, weight > 0, max_bytes > 0, priority >= 0")
        if self.overflow not in ("refuse", "end"):
            raise UsageError(f"lane {self.name!r}: overflow must be 'refuse' or 'end'")


DEFAULT_LANES: Final = (
    Lane("state", priority=1, max_bytes=256 * 1024, overflow="end"),
    Lane("chat", priority=2, max_bytes=256 * 1024, overflow="end"),
    Lane("bulk", priority=3, max_bytes=1024 * 1024, overflow="refuse"),
)
"""control (replies, control frames, events without key or lane: never queued) > state > chat > bulk."""


@dataclass(frozen=True)
class LaneConfig:
    """The send lanes of a server (``ServerConfig.lanes``). ``window``: bytes the transport may
    hold for a client (unsent or unacknowledged) before lanes stop releasing frames; ``interval``:
    seconds between two looks at the transport while frames wait; ``default_lane``: the lane of a
    keyed event that names none."""

    lanes: tuple[Lane, ...] = DEFAULT_LANES
    window: int = 64 * 1024
    interval: float = 0.01
    default_lane: str = "state"

    def __post_init__(self) -> None:
        check_fields(self, UsageError)
        names = [lane.name for lane in self.lanes]
        if len(set(names)) != len(names) or "control" in names:
            raise UsageError("lane names must be unique and not 'control'")
        if self.default_lane not in names:
            raise UsageError(f"default_lane {self.default_lane!r} is not a lane")
        if self.window <= 0 or not self.interval > 0:
            raise UsageError("lanes: window and interval must be positive")

    def lane(self, name: str) -> Lane:
        """The lane called ``name`` (UsageError if there is none)."""
        for lane in self.lanes:
            if lane.name == name:
                return lane
        raise UsageError(f"no send lane {name!r} (lanes: {', '.join(x.name for x in self.lanes)})")


EVENT_KEYED_LEN: Final = 7
"""A keyed EVENT body: ``[name, payload, key|nil, seq|nil, epoch|nil, flags, latest-wins key]``
(docs/wire-format/rpc.md, "Latest-wins keys")."""


def encode_keyed_event(
    name: str, payload: object, key: str | None, seq: int | None, epoch: int | None, lw_key: str
) -> bytes:
    """The EVENT frame of a keyed message: its 7th element is the latest-wins key ``lw_key``."""
    return encode_frame(EVENT, 0, [name, payload, key, seq, epoch, 0, lw_key])


class _Item:
    __slots__ = ("frame", "key", "order", "unreliable")

    def __init__(self, frame: bytes | None, key: str | None, unreliable: bool, order: str | None) -> None:
        self.frame = frame  # None: dropped (skipped when its turn comes)
        self.key = key
        self.unreliable = unreliable
        self.order = order  # a reliable frame's room or topic (counted in SendLanes._holding)


class _Queue:
    __slots__ = ("bytes", "dead", "items", "keyed", "lane", "live", "vtime")

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.items: deque[_Item] = deque()
        self.keyed: dict[str, _Item] = {}
        self.bytes = 0
        self.live = 0  # items not dropped
        self.dead = 0  # dropped items still in ``items`` (compacted past 2 * live + 16)
        self.vtime = 0.0  # weighted fair queueing: bytes sent / weight


class Put:
    """What :meth:`SendLanes.put` did with a frame."""

    QUEUED: Final = "queued"
    REPLACED: Final = "replaced"  # it took the place of an older frame of its key
    REFUSED: Final = "refused"  # the lane was full ("refuse")
    OVERFLOW: Final = "overflow"  # the lane was full ("end"): end the session


@dataclass
class SendLanes:
    """The lanes of one session (sans-I/O: the caller pumps with :meth:`take`)."""

    config: LaneConfig
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LANE_COUNTERS, 0))

    def __post_init__(self) -> None:
        self._queues = {lane.name: _Queue(lane) for lane in self.config.lanes}
        self._order = sorted(self._queues.values(), key=lambda q: q.lane.priority)
        self.queued_bytes = 0
        # room or topic -> (the lane its reliable frames wait in, how many): a later reliable
        # frame of that room or topic waits behind them there, whatever its own lane
        self._holding: dict[str, tuple[str, int]] = {}

    def holding(self, order: str) -> str | None:
        """The lane where reliable frames of the room or topic ``order`` wait (None: none): a
        reliable frame of it sent now must wait behind them, or it would arrive first, and the
        client, which tracks one offset per room or topic, would drop the earlier ones."""
        h = self._holding.get(order)
        return h[0] if h is not None else None

    def _hold(self, order: str, lane: str, n: int) -> None:
        h = self._holding.get(order)
        left = (h[1] if h is not None else 0) + n
        if left > 0:
            self._holding[order] = (lane, left)
        else:
            del self._holding[order]

    def __len__(self) -> int:
        """Frames waiting."""
        return sum(q.live for q in self._order)

    def lane_bytes(self, name: str) -> int:
        """Bytes waiting in lane ``name``."""
        return self._queues[name].bytes

    def put(
        self,
        frame: bytes,
        lane: str,
        key: str | None = None,
        unreliable: bool = False,
        order: str | None = None,
    ) -> str:
        """Queue ``frame`` in ``lane`` (a :class:`Put` value says what happened). With ``key``, an
        older frame of that key still waiting in the lane is replaced by this one. ``order``: the
        room or topic (broker key) of a reliable frame: while reliable frames of it wait in
        another lane, this one waits behind them there, so that they reach the client in order."""
        if unreliable:
            order = None
        elif order is not None:
            h = self._holding.get(order)
            if h is not None:
                lane = h[0]
        q = self._queues.get(lane)
        if q is None:
            raise UsageError(f"no send lane {lane!r}")
        st = self.stats
        n = len(frame)
        if key is not None:
            old = q.keyed.get(key)
            if old is not None and old.frame is not None:
                delta = n - len(old.frame)
                if q.bytes + delta > q.lane.max_bytes and not self._make_room(q, delta, old):
                    return self._full(q, unreliable)
                old.frame = frame
                old.unreliable = unreliable
                if old.order is not None:
                    self._hold(old.order, lane, -1)
                old.order = order
                if order is not None:
                    self._hold(order, lane, 1)
                q.bytes += delta
                self.queued_bytes += delta
                st["lanes_conflated"] += 1
                return Put.REPLACED
        if q.bytes + n > q.lane.max_bytes and not self._make_room(q, n, None):
            return self._full(q, unreliable)
        item = _Item(frame, key, unreliable, order)
        if order is not None:
            self._hold(order, lane, 1)
        if q.live == 0:  # a lane that was idle does not bank credit: start at its peers' time
            q.vtime = max(q.vtime, self._peer_vtime(q))
        q.items.append(item)
        q.live += 1
        if key is not None:
            q.keyed[key] = item
        q.bytes += n
        self.queued_bytes += n
        st["lanes_queued"] += 1
        return Put.QUEUED

    def _peer_vtime(self, q: _Queue) -> float:
        times = [p.vtime for p in self._order if p is not q and p.live and p.lane.priority == q.lane.priority]
        return min(times) if times else 0.0

    def _make_room(self, q: _Queue, need: int, keep: _Item | None) -> bool:
        """Drop the oldest unreliable keyed frames of ``q`` (not ``keep``) until ``need`` more
        bytes fit. A reliable frame is never dropped: its key may never be sent again."""
        if need > q.lane.max_bytes:
            return False
        for item in q.items:
            if q.bytes + need <= q.lane.max_bytes:
                break
            if item.key is None or item.frame is None or item is keep or not item.unreliable:
                continue
            self._drop(q, item)
            self.stats["lanes_dropped"] += 1
        return q.bytes + need <= q.lane.max_bytes

    def _drop(self, q: _Queue, item: _Item) -> None:
        assert item.frame is not None
        q.bytes -= len(item.frame)
        self.queued_bytes -= len(item.frame)
        item.frame = None
        q.live -= 1
        q.dead += 1
        if not q.live:
            q.items.clear()
            q.dead = 0
        elif q.dead > 2 * q.live + 16:
            q.items = deque(i for i in q.items if i.frame is not None)
            q.dead = 0
        if item.key is not None and q.keyed.get(item.key) is item:
            del q.keyed[item.key]

    def _full(self, q: _Queue, unreliable: bool) -> str:
        """A frame does not fit ``q``: an unreliable one is refused when the lane says so; a
        reliable one never is (nothing accepted is lost silently): the session ends as a slow
        consumer, and a client that resumes is replayed what it missed from the history."""
        if unreliable and q.lane.overflow == "refuse":
            self.stats["lanes_refused"] += 1
            return Put.REFUSED
        return Put.OVERFLOW

    def _next(self) -> _Queue | None:
        """The lane whose turn it is: the lowest priority number with frames, and among lanes of
        that priority the one furthest behind its weighted share."""
        best: _Queue | None = None
        for q in self._order:  # sorted by priority
            if not q.live:
                continue
            if best is not None and q.lane.priority != best.lane.priority:
                break
            if best is None or q.vtime < best.vtime:
                best = q
        return best

    def take(self, budget: int) -> Iterator[tuple[bytes, bool, bool]]:
        """Yield ``(frame, unreliable, direct)`` in sending order while ``budget`` bytes last (the
        frame that crosses it still goes: one frame is never split); ``direct``: a frame sent to
        this session alone, not a room's or topic's (put without an ``order``)."""
        st = self.stats
        while budget > 0:
            q = self._next()
            if q is None:
                return
            item = q.items.popleft()
            frame = item.frame
            if frame is None:
                q.dead -= 1
                continue
            n = len(frame)
            q.live -= 1
            q.bytes -= n
            self.queued_bytes -= n
            if item.key is not None and q.keyed.get(item.key) is item:
                del q.keyed[item.key]
            if item.order is not None:
                self._hold(item.order, q.lane.name, -1)
            q.vtime += n / q.lane.weight
            if not q.live:
                q.items.clear()  # dropped items left behind
                q.dead = 0
            budget -= n
            st["lanes_sent"] += 1
            yield frame, item.unreliable, item.order is None

    def clear(self) -> None:
        """Drop everything waiting (the session ended)."""
        for q in self._order:
            q.items.clear()
            q.keyed.clear()
            q.bytes = q.live = q.dead = 0
        self.queued_bytes = 0
        self._holding.clear()
