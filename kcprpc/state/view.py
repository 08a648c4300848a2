"""The client side of state sync: apply snapshots and deltas, the typed state, change callbacks.

:class:`StateView` is sans-I/O: :meth:`StateView.receive` takes one message (the payload of the
sync's ``EVENT``) and returns the seq to acknowledge, or None when the message was dropped
(stale, a baseline it no longer holds, malformed, over its bounds, not valid for the model: each
counted in :attr:`StateView.stats`, never raised). :func:`attach` wires a view to a
:class:`kcprpc.Client`: its events in, acknowledgements out (``kcprpc.State/Ack``).

Callbacks (what Colyseus schema users rely on), each registered by a dotted path from the root
and returning an unsubscribe function:

* ``listen(path, cb(new, old))``: a field changed (a nested model or collection: anything in it);
* ``on_add(path, cb(key, entity))``, ``on_change(path, cb(key, entity))``,
  ``on_remove(path, cb(key, old_entity))``: an entry of the dict or list at ``path``;
* ``on_state(cb(state))``: after each applied message.

Callbacks run after the new state is in place, outermost path first; one that raises is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from kcp.fieldcheck import check_count
from kcprpc.errors import UsageError
from kcprpc.state.delta import ADD, CHANGE, FIELD, REMOVE, BadDelta, Budget, apply, full, walk
from kcprpc.state.groups import MAX_GROUPS, Groups
from kcprpc.state.schema import LIST, MAP, MODEL, Node, Schema
from kcprpc.state.service import StateAck, StateService
from kcprpc.state.sync import DEFAULT_NAME, DELTA, PARTS, SNAPSHOT, check_name

if TYPE_CHECKING:
    from kcprpc.client import Client
    from kcprpc.subscriptions import RawEvent

log = logging.getLogger("kcprpc.state")

M = TypeVar("M", bound=BaseModel)

VIEW_COUNTERS: Final = (
    "applied",  # messages applied
    "snapshots",  # ... of them snapshots
    "stale",  # dropped: not newer than the state held (late or duplicated datagram)
    "no_base",  # dropped: a delta against a baseline this view no longer holds
    "malformed",  # dropped: not a state message, or it does not fit the schema or the bounds
    "schema_mismatch",  # dropped: a snapshot of another schema
    "invalid",  # dropped: the result does not validate against the model
    "parts",  # PARTS messages received and kept (some group entry applied)
    "groups_applied",  # group entries of PARTS messages applied
)

COMMIT_DELAY: Final = 0.01
"""How long :func:`attach` waits for the missing parts of a tick before applying those it has (s)."""

_UNSET: Final = object()


def _empty(node: Node) -> Any:
    """A tree every real tree differs from in every field (the 'before' of a first snapshot)."""
    if node.kind == MODEL:
        return tuple(_empty(f) for f in node.fields)
    if node.kind == MAP:
        return {}
    if node.kind == LIST:
        return ()
    return _UNSET


class _Track:
    """The states of the whole state, or of one group, kept to apply deltas to: seq -> tree
    (oldest first), the newest applied seq."""

    __slots__ = ("fresh", "pin", "seq", "trees")

    def __init__(self) -> None:
        self.seq = 0
        self.fresh = 0  # the newest seq this group's state is known current at (>= seq)
        self.trees: OrderedDict[int, Any] = OrderedDict()
        self.pin = 0  # the baseline of the last delta: kept while newer ones come

    def keep(self, seq: int, tree: Any, base: int, bound: int) -> None:
        """Hold ``tree`` (state ``seq``, a delta against ``base``; 0: a snapshot, which keeps the
        states held before it), at most ``max(2, bound)`` states."""
        trees = self.trees
        # the server never sends a delta against a baseline older than one it already used
        # (seqs are kept in increasing order: the oldest first)
        while trees:
            s = next(iter(trees))
            if s >= base:
                break
            del trees[s]
        trees[seq] = tree
        self.pin = base
        self.seq = seq
        if seq > self.fresh:
            self.fresh = seq
        # keep the pinned baseline and the newest state (what this view acknowledges next)
        while len(trees) > bound and len(trees) > 2:
            s = next(s for s in trees if s != base)
            del trees[s]


def _get(obj: Any, names: tuple[str, ...]) -> Any:
    for n in names:
        if obj is None:
            return None
        obj = getattr(obj, n)
    return obj


class StateView(Generic[M]):
    """The client's copy of a synced state: ``view = StateView(RoomState, name="game.state")``.

    Bounds on one message: ``max_entities`` entries in any dict or list, ``max_nodes`` tree nodes
    in all; ``max_baselines`` states kept to apply deltas to (the server's default is the same)."""

    def __init__(
        self,
        model: type[M],
        name: str = DEFAULT_NAME,
        *,
        max_baselines: int = 32,
        max_entities: int = 10_000,
        max_nodes: int = 200_000,
    ) -> None:
        check_name("StateView", name)
        check_count(max_baselines, "StateView: max_baselines", UsageError, 1)
        check_count(max_entities, "StateView: max_entities", UsageError, 1)
        check_count(max_nodes, "StateView: max_nodes", UsageError, 1)
        self.schema = Schema(model)
        self.name = name
        self.max_baselines = max_baselines
        self.max_entities = max_entities
        self.max_nodes = max_nodes
        self.state: M | None = None
        """The typed state (None before the first snapshot)."""
        self.seq = 0
        """The seq of the message the state comes from."""
        self.extra: Any = None
        """The 5th element of that message (None without): a per-client value the server sent
        with the state, e.g. the sequence number of this client's last input it includes."""
        self.stats: dict[str, int] = dict.fromkeys(VIEW_COUNTERS, 0)
        self._tree: Any = None
        self._whole = _Track()  # whole messages: the states kept to apply deltas to
        self._fields: dict[str, list[Callable[[Any, Any], Any]]] = {}
        self._entries: dict[tuple[str, str], list[Callable[[Any, Any], Any]]] = {}
        self._states: list[Callable[[M], Any]] = []
        # PARTS (groups > 1): a track per group, the entries applied and not yet committed
        self._groups: Groups | None = None
        self._tracks: list[_Track] = []
        self._staged: dict[int, tuple[int, Any, int]] = {}  # group -> (seq, tree, base)
        self._staged_seq = 0  # the newest seq staged, and how many of its parts
        self._staged_count = 0
        self._staged_extra: Any = None
        self._complete = False
        self.min_seq = 0
        """The oldest seq any part of the state comes from (with groups: the oldest group's;
        else :attr:`seq`); the state is at least this fresh everywhere."""
        self.acked_groups: list[int] | None = None
        """The groups the last :meth:`receive` applied (None: not a PARTS message)."""

    @property
    def held(self) -> int:
        """How many states this view keeps to apply deltas to (at most ``max(2, max_baselines)``)."""
        return len(self._whole.trees) + sum(len(t.trees) for t in self._tracks)

    @property
    def seqs(self) -> tuple[int, ...]:
        """The seq of each group's state (with groups; group 0 holds the root's other fields), else
        ``(seq,)``."""
        return tuple(t.fresh for t in self._tracks) if self._tracks else (self.seq,)

    @property
    def tree(self) -> Any:
        """The wire tree of the state held (for tests and tools)."""
        return self._tree

    # ------------------------------------------------------------------ callbacks
    def _add(self, table: dict[Any, list[Any]], key: Any, cb: Any) -> Callable[[], None]:
        table.setdefault(key, []).append(cb)

        def off() -> None:
            lst = table.get(key)
            if lst is not None and cb in lst:
                lst.remove(cb)

        return off

    def listen(self, path: str, cb: Callable[[Any, Any], Any]) -> Callable[[], None]:
        """``cb(new, old)`` when the field at ``path`` (``"phase"``, ``"world.weather"``) changes."""
        _, idx = self.schema.node_at(path)
        if not path or -1 in idx:
            raise UsageError(f"listen({path!r}): name a field of the state (not inside an entity)")
        return self._add(self._fields, path, cb)

    def _entry(self, kind: str, path: str, cb: Callable[[Any, Any], Any]) -> Callable[[], None]:
        node, idx = self.schema.node_at(path)
        if node.kind not in (MAP, LIST) or -1 in idx:
            raise UsageError(f"{path!r} is not a dict or list field of the state (outside entities)")
        return self._add(self._entries, (path, kind), cb)

    def on_add(self, path: str, cb: Callable[[Any, Any], Any]) -> Callable[[], None]:
        """``cb(key, entity)`` for each entry added to the dict or list at ``path``."""
        return self._entry(ADD, path, cb)

    def on_change(self, path: str, cb: Callable[[Any, Any], Any]) -> Callable[[], None]:
        """``cb(key, entity)`` for each entry of the dict or list at ``path`` that changed."""
        return self._entry(CHANGE, path, cb)

    def on_remove(self, path: str, cb: Callable[[Any, Any], Any]) -> Callable[[], None]:
        """``cb(key, old_entity)`` for each entry removed from the dict or list at ``path``."""
        return self._entry(REMOVE, path, cb)

    def on_state(self, cb: Callable[[M], Any]) -> Callable[[], None]:
        """``cb(state)`` after each applied message."""
        self._states.append(cb)

        def off() -> None:
            if cb in self._states:
                self._states.remove(cb)

        return off

    # ------------------------------------------------------------------ receiving
    def receive(self, msg: Any, *, commit: bool = True) -> int | None:
        """Apply one message (``[kind, seq, schema id | base seq, body, extra?]``, or a PARTS
        message); returns the seq to acknowledge (with PARTS, :attr:`acked_groups` are its
        groups), or None when it was dropped (counted).

        ``commit=False`` (PARTS only): stage the part's groups without rebuilding the typed state;
        :meth:`commit` applies everything staged at once (one validation and one round of
        callbacks for all the parts of a tick; :attr:`complete` says when they are all in)."""
        stats = self.stats
        if isinstance(msg, (list, tuple)) and len(msg) in (7, 8) and msg[0] == PARTS:
            return self._receive_parts(msg, commit)
        self.acked_groups = None
        if not isinstance(msg, (list, tuple)) or not 4 <= len(msg) <= 5:
            stats["malformed"] += 1
            return None
        kind, seq, ref, body = msg[:4]
        if type(kind) is not int or type(seq) is not int or type(ref) is not int or seq < 1:
            stats["malformed"] += 1
            return None
        if seq <= self.seq:
            stats["stale"] += 1
            return None
        root = self.schema.root
        budget = Budget(self.max_nodes, self.max_entities)
        try:
            if kind == SNAPSHOT:
                if ref != self.schema.id:
                    stats["schema_mismatch"] += 1
                    return None
                tree = full(root, body, budget)
            elif kind == DELTA:
                base = self._whole.trees.get(ref)
                if base is None:
                    stats["no_base"] += 1
                    return None
                tree = apply(root, base, body, budget, self._tree)
            else:
                stats["malformed"] += 1
                return None
            state = self.schema.value(tree, self._prev())
        except BadDelta:
            stats["malformed"] += 1
            return None
        except ValidationError:
            stats["invalid"] += 1
            return None
        except (
            TypeError,
            ValueError,
            ArithmeticError,
            RecursionError,
        ):  # unhashable keys and the like: forged
            stats["malformed"] += 1
            return None
        # a snapshot keeps the states held before it: an ack for one of them may still be on its
        # way and the server's next delta then comes against it
        self._whole.keep(seq, tree, ref if kind == DELTA else 0, self.max_baselines)
        if self._groups is not None:  # the server went back to whole messages: forget the groups
            self._groups, self._tracks = None, []
            self._unstage()
        self.min_seq = seq
        self._install(tree, state, seq, msg[4] if len(msg) == 5 else None)
        if kind == SNAPSHOT:
            stats["snapshots"] += 1
        return seq

    def _prev(self) -> tuple[Any, BaseModel] | None:
        """The state held and its tree (what :meth:`Schema.value` reuses unchanged entities of)."""
        return None if self.state is None or self._tree is None else (self._tree, self.state)

    def _install(self, tree: Any, state: Any, seq: int, extra: Any) -> None:
        old_tree = self._tree if self._tree is not None else _empty(self.schema.root)
        old_state = self.state
        self._tree = tree
        self.state = state
        self.seq = seq
        self.extra = extra
        self.stats["applied"] += 1
        if self._fields or self._entries:
            self._fire(self.schema.root, old_tree, tree, old_state, state)
        for cb in list(self._states):
            self._call(cb, state)

    # ------------------------------------------------------------------ parts
    @property
    def complete(self) -> bool:
        """True when every part of the newest staged tick is staged (:meth:`commit` now)."""
        return self._complete

    @property
    def staged(self) -> bool:
        """Whether group entries wait for :meth:`commit`."""
        return bool(self._staged)

    def _unstage(self) -> None:
        self._staged.clear()
        self._staged_seq = self._staged_count = 0
        self._complete = False

    def _receive_parts(self, msg: Any, commit: bool) -> int | None:
        """``[2, seq, schema id, groups, parts, [[group, base, body], ...], [idle groups], extra?]``."""
        stats = self.stats
        self.acked_groups = None
        _, seq, sid, n, nparts, items, idle = msg[:7]
        if (
            type(seq) is not int
            or type(sid) is not int
            or type(n) is not int
            or type(nparts) is not int
            or seq < 1
            or not 2 <= n <= MAX_GROUPS
            or not 1 <= nparts <= MAX_GROUPS
            or not isinstance(items, (list, tuple))
            or not 1 <= len(items) <= n
            or not isinstance(idle, (list, tuple))
            or len(idle) > n
            or any(type(g) is not int or not 0 <= g < n for g in idle)
        ):
            stats["malformed"] += 1
            return None
        if sid != self.schema.id:
            stats["schema_mismatch"] += 1
            return None
        groups = self._groups
        if groups is None or groups.n != n:  # the first PARTS message, or a server with other groups
            groups = self._groups = Groups(self.schema.root, n)
            self._tracks = [_Track() for _ in range(n)]
            self._unstage()
        tracks = self._tracks
        staged = self._staged
        new: dict[int, tuple[int, Any, int]] = {}
        for item in items:
            if not isinstance(item, (list, tuple)) or len(item) != 3:
                stats["malformed"] += 1
                return None
            g, base, body = item
            if type(g) is not int or type(base) is not int or not 0 <= g < n or g in new or base < 0:
                stats["malformed"] += 1
                return None
            held = staged.get(g)
            if seq <= (held[0] if held is not None else tracks[g].fresh):
                stats["stale"] += 1
                continue
            if base and base not in tracks[g].trees:
                stats["no_base"] += 1
                continue
            # kept as it came: checked and applied by commit(), so that a newer entry for the
            # group staged before then supersedes it unapplied (a client behind skips ahead)
            new[g] = (seq, body, base)
        for g in idle:  # unchanged at seq: what this view holds of them is current
            t = tracks[g]
            if t.seq and g not in staged:
                t.fresh = max(t.fresh, seq)
        if not new:
            return None
        staged.update(new)
        stats["parts"] += 1
        if seq > self._staged_seq:
            self._staged_seq, self._staged_count = seq, 0
            self._staged_extra = msg[7] if len(msg) == 8 else None
        if seq == self._staged_seq:
            self._staged_count += 1
            self._complete = self._staged_count >= nparts
        if commit:
            acks = self.commit()
            if not acks:
                return None
            self.acked_groups = acks.get(seq)
            return seq if seq in acks else None
        self.acked_groups = sorted(new)
        return seq

    def commit(self) -> dict[int, list[int]]:
        """Apply the staged group entries (the newest one per group: a client that fell behind
        applies only the latest): the typed state is rebuilt and validated once, the callbacks
        fire. Returns what to acknowledge, ``{seq: [groups]}`` (empty when nothing was staged,
        or the result did not validate: ``invalid``, all of it dropped; an entry that does not
        fit the schema is dropped alone: ``malformed``)."""
        staged = self._staged
        if not staged:
            return {}
        groups = self._groups
        assert groups is not None
        tracks = self._tracks
        extra = self._staged_extra
        root = self.schema.root
        budget = Budget(self.max_nodes, self.max_entities)
        built: dict[int, tuple[int, Any, int]] = {}
        for g, (seq, body, base) in staged.items():
            try:
                if base == 0:
                    gtree = groups.full(g, body, budget)
                else:
                    groups.check_change(g, body)
                    t = tracks[g]
                    gtree = apply(root, t.trees[base], body, budget, t.trees.get(t.seq))
                    groups.check_keys(g, gtree, body)
            except (BadDelta, LookupError, TypeError, ValueError, ArithmeticError, RecursionError):
                self.stats["malformed"] += 1  # this group's entry; the others go on
                continue
            built[g] = (seq, gtree, base)
        staged = built
        if not staged:
            self._unstage()
            return {}
        trees = []
        for g, t in enumerate(tracks):
            s = staged.get(g)
            trees.append(s[1] if s is not None else t.trees.get(t.seq))
        if any(t is None for t in trees):  # a group never received yet: nothing to show
            state = None
            tree = None
        else:
            tree = groups.merge(trees)
            try:
                state = self.schema.value(tree, self._prev())
            except ValidationError:
                self.stats["invalid"] += 1
                self._unstage()
                return {}
            except (TypeError, ValueError, ArithmeticError, RecursionError):
                self.stats["malformed"] += 1
                self._unstage()
                return {}
        acks: dict[int, list[int]] = {}
        snapshots = 0
        bound = self.max_baselines
        for g, (seq, gtree, base) in sorted(staged.items()):
            tracks[g].keep(seq, gtree, base, bound)  # a snapshot (base 0) keeps older ones
            acks.setdefault(seq, []).append(g)
            snapshots += base == 0
        self.stats["groups_applied"] += len(staged)
        self.stats["snapshots"] += snapshots
        self._unstage()
        if tree is not None:
            self.min_seq = min(t.fresh for t in tracks)
            self._install(tree, state, max(t.seq for t in tracks), extra)
        return acks

    def _fire(self, root: Node, old_tree: Any, tree: Any, old: Any, new: Any) -> None:
        fields, entries = self._fields, self._entries
        for path, what, keys in walk(root, old_tree, tree, ()):
            p = ".".join(path)
            if what == FIELD:
                cbs = fields.get(p)
                if cbs:
                    a, b = _get(new, path), _get(old, path)
                    for cb in list(cbs):
                        self._call(cb, a, b)
                continue
            cbs = entries.get((p, what))
            if not cbs or keys is None:
                continue
            coll = _get(old if what == REMOVE else new, path)
            for key in keys:
                entity = coll[key]
                for cb in list(cbs):
                    self._call(cb, key, entity)

    @staticmethod
    def _call(cb: Callable[..., Any], *args: Any) -> None:
        try:
            cb(*args)
        except Exception:
            log.exception("state callback raised")


def attach(client: Client, view: StateView[Any]) -> Callable[[], None]:
    """Feed ``view`` the ``EVENT``s named ``view.name`` that ``client`` (a :class:`kcprpc.Client`)
    receives, and acknowledge each applied one (``kcprpc.State/Ack``, unreliable). Returns a
    function that detaches it."""

    timer: asyncio.Handle | None = None

    def flush() -> None:
        nonlocal timer
        if timer is not None:
            timer.cancel()
            timer = None
        for seq, groups in view.commit().items():
            client.notify(StateService.ack, StateAck(name=view.name, seq=seq, groups=groups))

    def on_raw(ev: RawEvent) -> None:
        nonlocal timer
        if ev.name != view.name:
            return
        seq = view.receive(ev.payload, commit=False)
        if seq is None:
            return
        if view.acked_groups is None:  # a whole message, applied
            client.notify(StateService.ack, StateAck(name=view.name, seq=seq))
        elif view.complete:  # every part of the tick is in: apply once the datagrams read are
            if timer is not None:
                timer.cancel()
            # handled (a newer tick among them supersedes this one unapplied)
            timer = asyncio.get_running_loop().call_soon(flush)
        elif timer is None:  # wait a little for the tick's other parts
            timer = asyncio.get_running_loop().call_later(COMMIT_DELAY, flush)

    unsubscribe = client.on_raw_event(on_raw)

    def detach() -> None:
        if timer is not None:
            timer.cancel()
        unsubscribe()

    return detach


def client_state(
    client: Client,
    model: type[M],
    name: str = DEFAULT_NAME,
    *,
    max_baselines: int = 32,
    max_entities: int = 10_000,
    max_nodes: int = 200_000,
) -> StateView[M]:
    """A :class:`StateView` of ``model`` attached to ``client``: ``view = client_state(client,
    RoomState, "game.state")``; ``view.state`` is the typed state. The bounds are
    :class:`StateView`'s."""
    view = StateView(model, name, max_baselines=max_baselines, max_entities=max_entities, max_nodes=max_nodes)
    attach(client, view)
    return view
