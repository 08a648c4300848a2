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

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from kcprpc.errors import UsageError
from kcprpc.state.delta import ADD, CHANGE, FIELD, REMOVE, BadDelta, Budget, apply, diff, full, walk
from kcprpc.state.schema import LIST, MAP, MODEL, Node, Schema
from kcprpc.state.service import StateAck, StateService
from kcprpc.state.sync import DEFAULT_NAME, DELTA, SNAPSHOT

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
)

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
        if max_baselines < 1 or max_entities < 1 or max_nodes < 1:
            raise UsageError("max_baselines, max_entities and max_nodes must be at least 1")
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
        self._trees: OrderedDict[int, Any] = OrderedDict()  # seq -> tree, oldest first
        self._pin = 0  # the baseline of the last delta: kept while newer ones come
        self._fields: dict[str, list[Callable[[Any, Any], Any]]] = {}
        self._entries: dict[tuple[str, str], list[Callable[[Any, Any], Any]]] = {}
        self._states: list[Callable[[M], Any]] = []

    @property
    def held(self) -> int:
        """How many states this view keeps to apply deltas to (at most ``max(2, max_baselines)``)."""
        return len(self._trees)

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
    def receive(self, msg: Any) -> int | None:
        """Apply one message (``[kind, seq, schema id | base seq, body, extra?]``); returns the seq to
        acknowledge, or None when it was dropped (counted)."""
        stats = self.stats
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
                base = self._trees.get(ref)
                if base is None:
                    stats["no_base"] += 1
                    return None
                tree = apply(root, base, body, budget)
            else:
                stats["malformed"] += 1
                return None
            state = self.schema.value(tree)
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
        self._keep(seq, tree, ref if kind == DELTA else seq)
        old_tree = self._tree if self._tree is not None else _empty(root)
        old_state = self.state
        self._tree = tree
        self.state = state  # type: ignore[assignment]
        self.seq = seq
        self.extra = msg[4] if len(msg) == 5 else None
        stats["applied"] += 1
        if kind == SNAPSHOT:
            stats["snapshots"] += 1
        if self._fields or self._entries:
            self._fire(root, old_tree, tree, old_state, state)
        for cb in list(self._states):
            self._call(cb, state)
        return seq

    def _keep(self, seq: int, tree: Any, base: int) -> None:
        trees = self._trees
        # the server never sends a delta against a baseline older than one it already used
        for s in [s for s in trees if s < base]:
            del trees[s]
        trees[seq] = tree
        self._pin = base
        # keep the pinned baseline and the newest state (what this view acknowledges next)
        while len(trees) > max(2, self.max_baselines):
            s = next(s for s in trees if s != self._pin)
            del trees[s]

    def _fire(self, root: Node, old_tree: Any, tree: Any, old: Any, new: Any) -> None:
        change = diff(root, old_tree, tree)
        fields, entries = self._fields, self._entries
        for path, what, key in walk(root, old_tree, change, ()):
            p = ".".join(path)
            if what == FIELD:
                cbs = fields.get(p)
                if cbs:
                    a, b = _get(new, path), _get(old, path)
                    for cb in list(cbs):
                        self._call(cb, a, b)
                continue
            cbs = entries.get((p, what))
            if not cbs:
                continue
            coll = _get(old if what == REMOVE else new, path)
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

    def on_raw(ev: RawEvent) -> None:
        if ev.name != view.name:
            return
        seq = view.receive(ev.payload)
        if seq is not None:
            client.notify(StateService.ack, StateAck(name=view.name, seq=seq))

    return client.on_raw_event(on_raw)


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
