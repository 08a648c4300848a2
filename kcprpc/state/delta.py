"""Deltas between state trees: compute, apply, check (sans-I/O; docs/wire-format/state.md).

A *change* of a node, as sent on the wire (msgpack):

* ``MODEL``: a map ``{field index: change of that field}`` (only the fields that changed);
* ``MAP``: ``[removed keys, {key: change of the entry}, {key: full tree of a new entry}]``;
* ``LIST``: ``[new length, {index: change of the entry}, [full trees of the appended entries]]``;
* ``LEAF``: the new value.

A *full tree* (snapshots, new entries): a model is an array of its fields' full trees in index
order, a map a map, a list an array, a leaf its value.

:func:`diff` computes a change, :func:`apply` applies one received from the network, checking its
shape against the schema and a :class:`Budget` (it raises :class:`BadDelta` on anything else, so a
forged or truncated delta is dropped, never half applied: trees are never mutated).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from kcprpc.state.schema import LEAF, LIST, MAP, MODEL, Node, entry_changes


class _Same:
    __slots__ = ()

    def __repr__(self) -> str:
        return "SAME"


SAME: Final = _Same()
"""What :func:`diff` returns for equal trees."""


class BadDelta(ValueError):
    """A snapshot or delta from the network that does not fit the schema or the bounds."""


class Budget:
    """Bounds on one received frame: at most ``entries`` tree nodes below the root (entities,
    fields, list entries) and at most ``max_entities`` entries in any one dict or list."""

    __slots__ = ("entries", "max_entities")

    def __init__(self, entries: int, max_entities: int) -> None:
        self.entries = entries
        self.max_entities = max_entities

    def take(self, n: int = 1) -> None:
        """Charge ``n`` nodes; :class:`BadDelta` when the frame is over its budget."""
        self.entries -= n
        if self.entries < 0:
            raise BadDelta("frame over its size budget")


# ---------------------------------------------------------------------------------------- diff
def diff(node: Node, old: Any, new: Any) -> Any:
    """The change from tree ``old`` to tree ``new`` (:data:`SAME` when equal)."""
    if old is new or old == new:
        return SAME
    kind = node.kind
    if kind == LEAF:
        return new
    if kind == MODEL:
        out: dict[int, Any] = {}
        for i, f in enumerate(node.fields):
            o, n = old[i], new[i]
            if o is n or o == n:
                continue
            out[i] = n if f.kind == LEAF else diff(f, o, n)
        return out
    item = node.item
    assert item is not None
    leaf = item.kind == LEAF
    if kind == MAP:
        removed = [k for k in old if k not in new]
        changed: dict[Any, Any] = {}
        added: dict[Any, Any] = {}
        for k, n in new.items():
            o = old.get(k, SAME)
            if o is SAME:
                added[k] = n
            elif o is not n and o != n:
                changed[k] = n if leaf else diff(item, o, n)
        return [removed, changed, added]
    common = min(len(old), len(new))
    lchanged: dict[int, Any] = {}
    for i in range(common):
        o, n = old[i], new[i]
        if o is not n and o != n:
            lchanged[i] = n if leaf else diff(item, o, n)
    return [len(new), lchanged, list(new[common:])]


# --------------------------------------------------------------------------------------- check
def _key_ok(node: Node, k: Any) -> bool:
    return type(k) is node.key


def full(node: Node, value: Any, budget: Budget) -> Any:
    """Check a full tree from the network against ``node``; returns it as a tree (arrays of
    models become tuples). :class:`BadDelta` when it does not fit."""
    kind = node.kind
    if kind == LEAF:
        return value
    if kind == MODEL:
        if not isinstance(value, (list, tuple)) or len(value) != len(node.fields):
            raise BadDelta("a model must be an array of its fields")
        budget.take(len(value))
        return tuple(
            v if f.kind == LEAF else full(f, v, budget) for f, v in zip(node.fields, value, strict=True)
        )
    item = node.item
    assert item is not None
    if kind == MAP:
        if not isinstance(value, dict):
            raise BadDelta("a dict must be a map")
        if len(value) > budget.max_entities:
            raise BadDelta("too many entities")
        budget.take(len(value))
        for k in value:
            if not _key_ok(node, k):
                raise BadDelta("bad key type")
        if item.kind == LEAF:
            return dict(value)
        return {k: full(item, v, budget) for k, v in value.items()}
    if not isinstance(value, (list, tuple)):
        raise BadDelta("a list must be an array")
    if len(value) > budget.max_entities:
        raise BadDelta("too many entities")
    budget.take(len(value))
    if item.kind == LEAF:
        return tuple(value)
    return tuple(full(item, v, budget) for v in value)


# --------------------------------------------------------------------------------------- apply
def apply(node: Node, old: Any, change: Any, budget: Budget, ref: Any = None) -> Any:
    """The tree ``old`` with ``change`` (from the network) applied; ``old`` is not modified.
    :class:`BadDelta` when the change does not fit the schema, the tree or the budget.

    ``ref``: another tree of ``node`` (the one the client holds now, when ``old`` is an older
    baseline). An entity of a dict of flat entities that comes out equal to ``ref``'s is
    ``ref``'s object: a delta against an older baseline repeats changes the client has, and
    keeping their objects lets the typed state find what changed by identity."""
    kind = node.kind
    if kind == LEAF:
        return change
    if kind == MODEL:
        if not isinstance(change, dict):
            raise BadDelta("a model change must be a map")
        budget.take(len(change))
        out = list(old)
        fields = node.fields
        nf = len(fields)
        for i, c in change.items():
            if type(i) is not int or not 0 <= i < nf:
                raise BadDelta("bad field index")
            f = fields[i]
            out[i] = c if f.kind == LEAF else apply(f, old[i], c, budget, None if ref is None else ref[i])
        return tuple(out)
    item = node.item
    assert item is not None
    leaf = item.kind == LEAF
    if not isinstance(change, (list, tuple)) or len(change) != 3:
        raise BadDelta("a collection change must be a 3-array")
    a, changed, added = change
    if not isinstance(changed, dict):
        raise BadDelta("changed entries must be a map")
    if kind == MAP:
        if not isinstance(a, (list, tuple)) or not isinstance(added, dict):
            raise BadDelta("bad map change")
        budget.take(len(changed) + len(a) + len(added))
        new = dict(old)
        for k in a:
            if type(k) is not node.key or k not in new:
                raise BadDelta("removed key not present")
            del new[k]
        key = node.key
        if item.flat:  # entities of leaves, inlined (apply and full of a flat model, per entity)
            nf = len(item.fields)
            held = ref.get if isinstance(ref, dict) else {}.get
            for k, c in changed.items():
                if type(k) is not key or k not in new:
                    raise BadDelta("changed key not present")
                if not isinstance(c, dict):
                    raise BadDelta("a model change must be a map")
                budget.entries -= len(c)  # Budget.take, inlined: before anything is built
                if budget.entries < 0:
                    raise BadDelta("frame over its size budget")
                out = list(new[k])
                for i, v in c.items():
                    if type(i) is not int or not 0 <= i < nf:
                        raise BadDelta("bad field index")
                    out[i] = v
                t = tuple(out)
                r = held(k)
                new[k] = r if r is not None and r == t else t
            for k, v in added.items():
                if type(k) is not key or k in new:
                    raise BadDelta("added key already present")
                if not isinstance(v, (list, tuple)) or len(v) != nf:
                    raise BadDelta("a model must be an array of its fields")
                budget.take(nf)
                t = tuple(v)
                r = held(k)
                new[k] = r if r is not None and r == t else t
        else:
            for k, c in changed.items():
                if type(k) is not key or k not in new:
                    raise BadDelta("changed key not present")
                new[k] = c if leaf else apply(item, new[k], c, budget)
            for k, v in added.items():
                if type(k) is not key or k in new:
                    raise BadDelta("added key already present")
                new[k] = v if leaf else full(item, v, budget)
        if len(new) > budget.max_entities:
            raise BadDelta("too many entities")
        return new
    # LIST
    if type(a) is not int or not isinstance(added, (list, tuple)):
        raise BadDelta("bad list change")
    budget.take(len(changed) + len(added))
    n_old = len(old)
    if a < 0 or a > budget.max_entities:
        raise BadDelta("bad list length")
    if (a <= n_old and added) or (a > n_old and len(added) != a - n_old):
        raise BadDelta("list length does not match the appended entries")
    lst = list(old[:a])
    for i, c in changed.items():
        if type(i) is not int or not 0 <= i < min(a, n_old):
            raise BadDelta("bad list index")
        lst[i] = c if leaf else apply(item, lst[i], c, budget)
    for v in added:
        lst.append(v if leaf else full(item, v, budget))
    return tuple(lst)


# ------------------------------------------------------------------------------------- changes
ADD: Final = "add"
CHANGE: Final = "change"
REMOVE: Final = "remove"
FIELD: Final = "field"


def walk(
    node: Node, old: Any, new: Any, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], str, list[Any] | None]]:
    """The changes from model tree ``old`` to ``new``, outermost first: ``(path, FIELD, None)``
    for each model field that changed (its path of names), and ``(path of the collection, ADD |
    CHANGE | REMOVE, keys or indexes)`` for the entries of each dict or list field (what
    :func:`diff` would say, without building the change). Entries of collections inside
    entities are not walked (their entity's CHANGE covers them)."""
    if old is new:
        return
    for i, f in enumerate(node.fields):
        o, n = old[i], new[i]
        if o is n or o == n:
            continue
        p = (*path, node.names[i])
        yield p, FIELD, None
        if f.kind == MODEL:
            yield from walk(f, o, n, p)
        elif f.kind == MAP:
            removed, changed, added = entry_changes(o, n)
            if removed:
                yield p, REMOVE, removed
            if changed:
                yield p, CHANGE, changed
            if added:
                yield p, ADD, added
        elif f.kind == LIST:
            n_old, n_new = len(o), len(n)
            if n_new < n_old:
                yield p, REMOVE, list(range(n_new, n_old))
            common = [j for j in range(min(n_old, n_new)) if o[j] is not n[j] and o[j] != n[j]]
            if common:
                yield p, CHANGE, common
            if n_new > n_old:
                yield p, ADD, list(range(n_old, n_new))
