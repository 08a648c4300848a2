"""The server side of state sync: per-client baselines, snapshots then deltas (sans-I/O core).

Design (Quake-3-style snapshot deltas, see docs/state.md): every :meth:`StateSync.tick` numbers
the state (``seq``, one counter per sync) and, for each client, builds the client's *view* (its
interest filter applied) and sends

* a **snapshot** (the whole view) while the client has acknowledged nothing, or
* a **delta** against the last view the client **acknowledged** (its baseline).

Frames go over unreliable delivery and are latest-wins: a lost delta is superseded by the next
one, which is computed against the still-acknowledged baseline. The client acknowledges the
``seq`` it applied (:class:`~kcprpc.state.StateService`, an unreliable notify); an ack moves the baseline to the
view sent with that ``seq``. The views sent and not yet acknowledged are kept per client, at most
``max_baselines`` (the oldest is forgotten; an ack for it is then ignored and counted). A client
that acknowledged nothing for ``max_baselines`` ticks gets snapshots again until it does.

:meth:`StateSync.tick` is pure (no I/O, no clock): it returns the message for each client.
:meth:`StateSync.send` encodes each as an ``EVENT`` frame and routes it unreliably
(:func:`kcprpc.push.route`: one OOB datagram when it fits, else the control stream).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Final, Generic, Literal, TypeVar

from pydantic import BaseModel

from kcp.fieldcheck import check_count, is_int, shown
from kcp.logutil import RateLimitedLog
from kcprpc import codec
from kcprpc.codec import encode_frame, encode_frame_raw
from kcprpc.errors import UsageError
from kcprpc.push import route
from kcprpc.service import Delivery
from kcprpc.state.delta import SAME, diff
from kcprpc.state.groups import MAX_GROUPS, Groups
from kcprpc.state.interest import Interest, Views
from kcprpc.state.schema import Schema

M = TypeVar("M", bound=BaseModel)

SNAPSHOT: Final = 0
DELTA: Final = 1
PARTS: Final = 2

DEFAULT_PART_SIZE: Final = 1100
DEFAULT_MAX_PARTS: Final = 8
SNAPSHOT_RESEND: Final = 4  # ticks between snapshots of a group while none is acknowledged

DEFAULT_NAME: Final = "kcprpc.state"
MAX_NAME: Final = 128


def check_name(owner: str, name: object) -> str:
    """``name`` if it names a sync (a str of 1 to :data:`MAX_NAME` characters: what a client's
    ``kcprpc.State/Ack`` may carry), else a :class:`UsageError` naming ``owner``."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise UsageError(f"{owner}: name must be a str of 1 to {MAX_NAME} characters, not {shown(name)}")
    return name


def check_sync_settings(
    owner: str, max_baselines: object, groups: object, part_size: object, max_parts: object
) -> None:
    """A :class:`UsageError` naming ``owner`` and the parameter for a :class:`StateSync` setting
    out of its range (a :class:`~kcprpc.state.SyncSender` checks its own when it is made, not
    at the first join)."""
    check_count(max_baselines, f"{owner}: max_baselines", UsageError, 1)
    check_count(part_size, f"{owner}: part_size (bytes)", UsageError, 64)
    check_count(max_parts, f"{owner}: max_parts", UsageError, 1)
    # (typed object: a wrong type is this error, not a TypeError, in a compiled build too)
    if groups != "auto" and not (is_int(groups) and 1 <= groups <= MAX_GROUPS):
        raise UsageError(
            f'{owner}: groups must be "auto" or an int from 1 to {MAX_GROUPS}, not {shown(groups)}'
        )


STATE_COUNTERS: Final = (
    "snapshots",  # snapshot messages made (a client with no acknowledged baseline)
    "deltas",  # delta messages made
    "idle",  # ticks a client was sent nothing: its acknowledged view was current
    "acks",  # acknowledgements that moved a baseline
    "acks_ignored",  # acknowledgements for an unknown client, an old or forgotten seq
    "baselines_evicted",  # unacknowledged views forgotten past max_baselines
    "resets",  # clients sent a snapshot again: no ack for max_baselines ticks
    "bytes",  # bytes of EVENT frames sent by send()
    "parts",  # PARTS messages made (groups > 1)
    "oversized",  # group entries larger than part_size alone (their part goes on the stream)
    "deferred",  # group entries left for a later tick: over max_parts
    "regroups",  # groups="auto": the state cut into (more) groups, every client starting them over
    "interest_errors",  # a client's interest filter raised: that client skipped for the tick (logged)
)

_log = RateLimitedLog(logging.getLogger("kcprpc.state"), burst=10, interval=60.0)

InterestFn = Callable[[Any], Interest]


class _Base:
    """What one client acknowledged of the state (or of one group) and what was sent since."""

    __slots__ = ("acked_seq", "acked_tree", "last", "sent", "waiting")

    def __init__(self) -> None:
        self.last = 0  # the seq last sent (groups)
        self.acked_seq = 0
        self.waiting = 0  # the first seq sent since the last ack (0: none)
        self.acked_tree: Any = None
        self.sent: OrderedDict[int, Any] = OrderedDict()

    def ack(self, seq: int) -> bool:
        tree = self.sent.get(seq)
        if tree is None or seq <= self.acked_seq:
            return False
        self.acked_seq = seq
        self.acked_tree = tree
        sent = self.sent
        while sent:
            s = next(iter(sent))
            if s > seq:
                break
            del sent[s]
        self.waiting = next(iter(sent)) if sent else 0
        return True


class _Client(_Base):
    __slots__ = ("bases", "interest")

    def __init__(self, interest: InterestFn | None, groups: int) -> None:
        super().__init__()
        self.interest = interest
        # groups > 1: one baseline per group (this object's own fields are then unused)
        self.bases = [_Base() for _ in range(groups)] if groups > 1 else []


_EMPTY: Final[list[Any]] = []  # a group's view equals its baseline


def groups_for(size: int, part_size: int) -> int:
    """``groups="auto"``: how many groups a state of ``size`` bytes (its encoded full tree) is cut
    into: the smallest power of two that leaves a group about 3/4 of ``part_size`` or less on
    average (room for an uneven spread of the keys), from 2 to 256."""
    n = 2
    while n < MAX_GROUPS and size > n * part_size * 3 // 4:
        n *= 2
    return n


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _interest_fn(interest: InterestFn | Interest | None) -> InterestFn | None:
    """A client's filter as a function of the state (an :class:`Interest` given: the same one)."""
    if isinstance(interest, Interest):
        fixed = interest
        return lambda _state: fixed
    if interest is None or callable(interest):
        return interest
    raise UsageError(f"an interest filter is a function state -> Interest, or an Interest, not {interest!r}")


class StateSync(Generic[M]):
    """Sync a state model to many clients: ``sync = StateSync(RoomState, name="game.state")``.

    ``name`` is the wire name of the ``EVENT`` frames (and what a client's
    :class:`~kcprpc.state.StateView` listens to); ``max_baselines`` bounds the unacknowledged
    views kept per client (default 32: 1.6 s at 20 Hz). Clients are any hashable handle; for
    :meth:`send` they are sessions (``kcprpc.push.Peer``).

    ``groups``: ``"auto"`` (the default) sends whole messages while the state's full tree fits
    ``part_size`` bytes, and cuts it into :func:`groups_for` groups (PARTS messages) from the
    first tick it does not, into more when a group's average share outgrows ``part_size``
    again (never back: counted in ``regroups``); ``n``: always ``n`` groups (1: whole messages,
    a message larger than a datagram going on the control stream)."""

    def __init__(
        self,
        model: type[M],
        name: str = DEFAULT_NAME,
        *,
        max_baselines: int = 32,
        groups: int | Literal["auto"] = "auto",
        part_size: int = DEFAULT_PART_SIZE,
        max_parts: int = DEFAULT_MAX_PARTS,
    ) -> None:
        check_name("StateSync", name)
        check_sync_settings("StateSync", max_baselines, groups, part_size, max_parts)
        self.max_parts = max_parts
        self.schema = Schema(model)
        self.auto = groups == "auto"
        """Whether the number of groups follows the state's size (``groups="auto"``)."""
        self.groups = Groups(self.schema.root, 1 if groups == "auto" else groups)
        """The grouping (``groups.n`` > 1: PARTS messages, each group synced on its own)."""
        self.part_size = part_size
        self._enc: dict[int, bytes] = {}  # id(group entry) -> its msgpack, for the tick's frames
        self.name = name
        self.max_baselines = max_baselines
        self.seq = 0
        self.stats: dict[str, int] = dict.fromkeys(STATE_COUNTERS, 0)
        self._views = Views(self.schema)
        self._clients: dict[Hashable, _Client] = {}

    # ------------------------------------------------------------------ clients
    def add_client(self, client: Hashable, interest: InterestFn | Interest | None = None) -> None:
        """Start syncing to ``client``: it gets a snapshot at the next tick. ``interest(state) ->
        Interest`` filters what it sees, called once a tick (an :class:`Interest`: the same one
        every tick; None: everything). Adding it again restarts it."""
        self._clients[client] = _Client(_interest_fn(interest), self.groups.n)

    def set_interest(self, client: Hashable, interest: InterestFn | Interest | None) -> None:
        """Change a client's interest filter (from the next tick)."""
        self._client(client).interest = _interest_fn(interest)

    def remove_client(self, client: Hashable) -> None:
        """Stop syncing to ``client`` and forget its baselines (no-op when unknown)."""
        self._clients.pop(client, None)

    def __contains__(self, client: object) -> bool:
        return client in self._clients

    def __len__(self) -> int:
        return len(self._clients)

    def _client(self, client: Hashable) -> _Client:
        c = self._clients.get(client)
        if c is None:
            raise UsageError(f"{client!r} is not a client of state sync {self.name!r}")
        return c

    def acked(self, client: Hashable) -> int:
        """The last seq ``client`` acknowledged (0: none; with groups, the oldest of its groups')."""
        c = self._client(client)
        return min(b.acked_seq for b in c.bases) if c.bases else c.acked_seq

    # ------------------------------------------------------------------ acks
    def ack(self, client: Hashable, seq: int, groups: list[int] | None = None) -> bool:
        """``client`` applied the message ``seq`` (with groups: the groups ``groups`` of it): its
        baseline moves there. False (counted in ``acks_ignored``, once per group) for an unknown
        client, a seq not newer than its baseline, one whose view was forgotten or never sent, a
        group out of range, or (groups > 1) no groups named."""
        c = self._clients.get(client)
        stats = self.stats
        if c is None or type(seq) is not int:
            stats["acks_ignored"] += 1
            return False
        if not c.bases:
            if groups is not None or not c.ack(seq):
                stats["acks_ignored"] += 1
                return False
            stats["acks"] += 1
            return True
        n = len(c.bases)
        moved = False
        for g in groups or (None,):
            if type(g) is int and 0 <= g < n and c.bases[g].ack(seq):
                stats["acks"] += 1
                moved = True
            else:
                stats["acks_ignored"] += 1
        return moved

    # ------------------------------------------------------------------ ticks
    def tick(self, state: M, extras: Mapping[Any, Any] | None = None) -> list[tuple[Hashable, list[Any]]]:
        """Number ``state`` (the next seq) and return each client's message (clients with nothing
        new, and sessions detached for a resume, are left out). Each interest filter is called
        once. Clients without a filter that acknowledged the same baseline share one message
        object (computed once).

        ``extras``: per client, a value its message carries as a 5th element (``StateView.extra``
        on the client), e.g. the sequence number of the client's last input the state includes."""
        tree = self.schema.tree(state)
        self.seq += 1
        seq = self.seq
        views: list[tuple[Hashable, _Client, Any]] = []
        for handle, c in self._clients.items():
            # a session kept for a resume gets nothing (nor costs its filter and its delta); back,
            # it goes on from its acknowledged baseline, or from a snapshot once that is too old
            if getattr(handle, "detached", False):
                continue
            if c.interest is None:
                views.append((handle, c, tree))
                continue
            try:
                views.append((handle, c, self._views.view(tree, c.interest(state))))
            except UsageError:  # an Interest that does not fit the model: the app's bug, loud
                raise
            except Exception:  # one client's filter failed: the others still get their state
                self.stats["interest_errors"] += 1
                _log.exception(
                    "interest", "state sync %s: an interest filter raised: its client skipped", self.name
                )
        if self.auto and views:
            self._adapt(tree, views)
        if self.groups.n > 1:
            return self._tick_groups(views, seq, extras)
        root = self.schema.root
        out: list[tuple[Hashable, list[Any]]] = []
        stats = self.stats
        # clients that see everything and acknowledged the same baseline get the same delta
        shared: dict[int, list[Any]] = {}
        for handle, c, view in views:
            if c.acked_tree is not None and c.waiting and seq - c.waiting >= self.max_baselines:
                # no ack for max_baselines ticks: the client may no longer hold its baseline
                # (a long stall); start over with snapshots
                c.acked_tree = None
                stats["resets"] += 1
            if c.acked_tree is None:
                snap = shared.get(0) if c.interest is None else None
                msg = snap if snap is not None else [SNAPSHOT, seq, self.schema.id, view]
                if c.interest is None:
                    shared[0] = msg
                stats["snapshots"] += 1
            else:
                same = shared.get(id(c.acked_tree)) if c.interest is None else None
                if same is not None:
                    msg = same
                else:
                    change = diff(root, c.acked_tree, view)
                    if change is SAME:
                        if not c.sent:  # the client holds exactly this view: nothing to send
                            stats["idle"] += 1
                            continue
                        change = {}
                    msg = [DELTA, seq, c.acked_seq, change]
                    if c.interest is None:
                        shared[id(c.acked_tree)] = msg
                stats["deltas"] += 1
            c.sent[seq] = view
            if not c.waiting:
                c.waiting = seq
            if len(c.sent) > self.max_baselines:
                c.sent.popitem(last=False)
                stats["baselines_evicted"] += 1
            if extras is not None and handle in extras:
                msg = [*msg, extras[handle]]  # a copy: the body stays shared
            out.append((handle, msg))
        return out

    def _adapt(self, tree: Any, views: list[tuple[Hashable, _Client, Any]]) -> None:
        """``groups="auto"``: whole messages while every client's view (its full state, what its
        snapshot holds) fits ``part_size`` encoded; else groups, and more groups when the largest
        view outgrows ``n`` parts; each client then starts the groups over (group snapshots;
        what it holds stays its state until it has every group)."""
        n = self.groups.n
        limit = n * self.part_size
        if n >= MAX_GROUPS:
            return
        size = len(codec.pack(tree))
        if size <= limit:  # the views are parts of the whole state: all fit
            return
        if any(view is not tree for _, _, view in views):  # interest filters: the views' sizes
            size = max(len(codec.pack(v)) for v in {id(v): v for _, _, v in views}.values())
            if size <= limit:
                return
        n = groups_for(size, self.part_size)
        self.groups = Groups(self.schema.root, n)
        for c in self._clients.values():
            c.bases = [_Base() for _ in range(n)]
        self.stats["regroups"] += 1

    def _tick_groups(
        self, views: list[tuple[Hashable, _Client, Any]], seq: int, extras: Mapping[Any, Any] | None
    ) -> list[tuple[Hashable, list[Any]]]:
        """:meth:`tick` with groups: per client and group a full group tree or a change against the
        group's acknowledged baseline, packed into PARTS messages of about ``part_size`` bytes; each names the client's groups with nothing to
        send (what the client holds of them is current)."""
        groups = self.groups
        n = groups.n
        root = self.schema.root
        stats = self.stats
        enc = self._enc
        enc.clear()
        out: list[tuple[Hashable, list[Any]]] = []
        splits: dict[int, list[tuple[Any, ...]]] = {}  # id(view) -> its group trees
        shared: dict[tuple[int, int], list[Any]] = {}  # (group, id(acked tree) or 0) -> entry
        keep: list[Any] = []  # views split this tick (their ids must stay unique)
        for handle, c, view in views:
            parts = splits.get(id(view))
            if parts is None:
                parts = splits[id(view)] = groups.split(view)
                keep.append(view)
            cands: list[tuple[int, _Base, Any, list[Any]]] = []  # (last sent, base, view, entry)
            idle: list[int] = []
            for g in range(n):
                b = c.bases[g]
                gview = parts[g]
                if b.acked_tree is not None and b.waiting and seq - b.waiting >= self.max_baselines:
                    b.acked_tree = None
                    stats["resets"] += 1
                if b.acked_tree is None and b.sent and seq - b.last < SNAPSHOT_RESEND:
                    continue  # its snapshot is on its way: not again every tick (a join's flood)
                key = (g, 0 if b.acked_tree is None else id(b.acked_tree))
                entry = shared.get(key) if c.interest is None else None
                if entry is None:
                    if b.acked_tree is None:
                        entry = [g, 0, groups.body(g, gview)]
                    else:
                        change = diff(root, b.acked_tree, gview)
                        entry = _EMPTY if change is SAME else [g, b.acked_seq, change]
                    if c.interest is None:
                        shared[key] = entry
                if entry is _EMPTY:
                    if not b.sent:  # the client holds exactly this group's view
                        stats["idle"] += 1
                        idle.append(g)
                        continue
                    entry = [g, b.acked_seq, {}]  # back to the baseline from a newer state sent
                cands.append((b.last, b, gview, entry))
            if not cands:
                continue
            cands.sort(key=lambda x: x[0])  # the groups sent longest ago first (stable: by group)
            packed, taken = self._pack([x[3] for x in cands])
            stats["deferred"] += len(cands) - taken
            for _, b, gview, entry in cands[:taken]:
                stats["snapshots" if entry[1] == 0 else "deltas"] += 1
                b.sent[seq] = gview
                b.last = seq
                if not b.waiting:
                    b.waiting = seq
                if len(b.sent) > self.max_baselines:
                    b.sent.popitem(last=False)
                    stats["baselines_evicted"] += 1
            extra = (extras[handle],) if extras is not None and handle in extras else ()
            for items in packed:
                out.append((handle, [PARTS, seq, self.schema.id, n, len(packed), items, idle, *extra]))
            stats["parts"] += len(packed)
        return out

    def _pack(self, entries: list[Any]) -> tuple[list[list[Any]], int]:
        """Group entries, in order, into at most ``max_parts`` parts of at most ``part_size``
        bytes of entries (one larger entry alone: ``oversized``); returns the parts and how many
        entries they hold (the rest wait for a later tick)."""
        enc = self._enc
        limit = self.part_size
        parts: list[list[Any]] = []
        cur: list[Any] = []
        size = 0
        taken = 0
        for e in entries:
            b = enc.get(id(e))
            if b is None:
                b = enc[id(e)] = codec.pack(e)
                if len(b) > limit:
                    self.stats["oversized"] += 1
            if cur and size + len(b) > limit:
                parts.append(cur)
                cur, size = [], 0
                if len(parts) >= self.max_parts:
                    return parts, taken
            cur.append(e)
            size += len(b)
            taken += 1
        if cur:
            parts.append(cur)
        return parts, taken

    def frame(self, msg: list[Any]) -> bytes:
        """The ``EVENT`` frame carrying one message of :meth:`tick` (PARTS entries are encoded
        once per tick, however many clients share them)."""
        if msg[0] != PARTS:
            return encode_frame(codec.EVENT, 0, [self.name, msg, None, None, None])
        enc = self._enc
        items = msg[5]
        body = [
            b"\x95",  # [name, msg, nil, nil, nil]
            codec.pack(self.name),
            _array_header(len(msg)),
            codec.pack(msg[:5]),  # kind, seq, schema id, groups, parts: a 5-array, header cut below
            _array_header(len(items)),
            *(enc.get(id(e)) or codec.pack(e) for e in items),
        ]
        body[3] = body[3][1:]
        body.append(codec.pack(msg[6]))  # the groups unchanged (idle)
        if len(msg) > 7:
            body.append(codec.pack(msg[7]))
        body.append(b"\xc0\xc0\xc0")
        return encode_frame_raw(codec.EVENT, 0, b"".join(body))

    def send(self, state: M, extras: Mapping[Any, Any] | None = None) -> int:
        """:meth:`tick`, then send each client (a session) its message unreliably; returns the
        bytes sent."""
        total = 0
        frames: dict[int, bytes] = {}  # a message shared by several clients is encoded once
        for peer, msg in self.tick(state, extras):
            f = frames.get(id(msg))
            if f is None:
                f = frames[id(msg)] = self.frame(msg)
            total += len(f)
            route(peer, f, Delivery.UNRELIABLE)  # type: ignore[arg-type]
        self.stats["bytes"] += total
        return total
