"""The shape of a state model, compiled once: field indexes, collections, leaves (sans-I/O).

A state model is a pydantic model. Each of its fields is one of:

* a nested model (``MODEL``): its fields are synced one by one;
* a dict of entities, ``dict[str | int, V]`` (``MAP``): entries are added, changed and removed by key;
* a list, ``list[V]`` (``LIST``): entries are added, changed and removed by index;
* anything else (``LEAF``): sent whole when it changes (numbers, strings, optional models, sets ...);
  a number annotated ``Annotated[float, Quantized(step)]`` is sent as ``round(value / step)``.

``V`` is itself a model (an entity, synced field by field) or a leaf. Fields are numbered in
declaration order; the number is the field's wire index (docs/wire-format/state.md).

The *tree* of a state is its wire form: a model is a tuple of its fields' trees in index order,
a map a dict of key to tree, a list a tuple of trees, a leaf its ``model_dump`` (python mode)
value. Trees are immutable by convention and shared between baselines.
"""

from __future__ import annotations

import contextlib
import sys
import types
import typing
import zlib
from dataclasses import dataclass, field
from itertools import compress
from operator import is_not
from typing import Any, Final, Union

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from kcprpc.errors import UsageError

LEAF: Final = 0
MODEL: Final = 1
MAP: Final = 2
LIST: Final = 3

NO_DEFAULT: Final = object()
_MISSING: Final = object()


@dataclass(eq=False)
class Node:
    """One node of a compiled schema."""

    kind: int
    step: float | None = None  # LEAF: a quantized number, sent as round(value / step)
    model: type[BaseModel] | None = None  # MODEL
    names: tuple[str, ...] = ()  # MODEL: field names in index order
    fields: tuple[Node, ...] = ()  # MODEL: their nodes
    defaults: tuple[Any, ...] = ()  # MODEL: each field's default tree (NO_DEFAULT: none)
    key: type | None = None  # MAP: str or int
    item: Node | None = None  # MAP, LIST: the node of an entry
    index: dict[str, int] = field(default_factory=dict)  # MODEL: name -> index
    flat: bool = False  # MODEL: every field a plain leaf (not quantized): its tree is its values

    def describe(self) -> str:
        """The canonical description hashed into the schema id (docs/wire-format/state.md)."""
        if self.kind == MODEL:
            return (
                "{"
                + ",".join(f"{n}:{f.describe()}" for n, f in zip(self.names, self.fields, strict=True))
                + "}"
            )
        if self.kind == MAP:
            assert self.item is not None
            return ("map<str," if self.key is str else "map<int,") + self.item.describe() + ">"
        if self.kind == LIST:
            assert self.item is not None
            return "list<" + self.item.describe() + ">"
        return "v" if self.step is None else f"q{round(self.step * 1_000_000)}"


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _node(tp: Any, seen: tuple[type, ...]) -> Node:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(tp)
        return _quantized(_node(base, seen), meta)
    if _is_model(tp):
        return _model_node(tp, seen)
    if origin is dict:
        args = typing.get_args(tp)
        if len(args) == 2 and args[0] in (str, int):
            return Node(MAP, key=args[0], item=_item(args[1], seen))
        return Node(LEAF)
    if origin is list:
        args = typing.get_args(tp)
        if len(args) == 1:
            return Node(LIST, item=_item(args[0], seen))
        return Node(LEAF)
    if origin in (Union, types.UnionType):
        return Node(LEAF)  # optional models and unions are leaves: sent whole
    return Node(LEAF)


@dataclass(frozen=True, slots=True)
class Quantized:
    """``Annotated[float, Quantized(0.01)]``: the field goes on the wire as the integer
    ``round(value / step)`` and comes back as ``that * step`` (a change smaller than half a step
    is not sent). For numbers only (a value that is not a finite number goes as it is)."""

    step: float

    def __post_init__(self) -> None:
        if not (isinstance(self.step, (int, float)) and 1e-6 <= self.step < 1e12):
            raise UsageError(f"Quantized step must be a number from 1e-6 to 1e12, not {self.step!r}")


def _quantized(node: Node, meta: Any) -> Node:
    q = [m for m in meta if isinstance(m, Quantized)]
    if not q:
        return node
    if node.kind != LEAF:
        raise UsageError("Quantized applies to a number field, not a model, dict or list")
    return Node(LEAF, step=float(q[-1].step))


def _q(step: float, v: Any) -> Any:
    if type(v) is float or type(v) is int:
        try:
            return round(v / step)
        except (OverflowError, ValueError):  # inf, nan: as they are
            return v
    return v


def _unq(step: float, v: Any) -> Any:
    return v * step if type(v) is int else v


def _item(tp: Any, seen: tuple[type, ...]) -> Node:
    n = _node(tp, seen)
    if n.kind in (MAP, LIST):  # a collection of collections: the inner one is a leaf
        return Node(LEAF)
    return n


def _caller_namespace() -> dict[str, Any]:
    """The globals and locals of the first frame outside kcprpc.state (where the model is used)."""
    f = sys._getframe(1)
    while f is not None and f.f_globals.get("__name__", "").startswith("kcprpc.state"):
        f = f.f_back  # type: ignore[assignment]
    return {} if f is None else {**f.f_globals, **f.f_locals}


def _complete(model: type[BaseModel]) -> None:
    """Resolve a model's forward references (as pydantic does when it is first instantiated)."""
    if model.__pydantic_complete__:
        return
    with contextlib.suppress(Exception):
        model.model_rebuild(_types_namespace=_caller_namespace())
    if not model.__pydantic_complete__:
        raise UsageError(
            f"state model {model.__name__} is not fully defined (unresolved annotations): "
            f"call {model.__name__}.model_rebuild() once its types exist"
        )


def _model_node(model: type[BaseModel], seen: tuple[type, ...]) -> Node:
    _complete(model)
    if model in seen:
        raise UsageError(f"state model {model.__name__} is recursive: a state's shape must be finite")
    names: list[str] = []
    nodes: list[Node] = []
    defaults: list[Any] = []
    for name, info in model.model_fields.items():
        names.append(name)
        n = _quantized(_node(info.annotation, (*seen, model)), info.metadata)
        nodes.append(n)
        if info.default is not PydanticUndefined:
            defaults.append(info.default)
        elif info.default_factory is not None:
            defaults.append(info.default_factory())  # type: ignore[call-arg]
        else:
            defaults.append(NO_DEFAULT)
    node = Node(MODEL, model=model, names=tuple(names), fields=tuple(nodes))
    node.defaults = tuple(
        d if d is NO_DEFAULT else to_tree(f, _dump_default(d)) for d, f in zip(defaults, nodes, strict=True)
    )
    node.index = {n: i for i, n in enumerate(names)}
    node.flat = all(f.kind == LEAF and f.step is None for f in nodes)
    return node


def _dump_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, dict):
        return {k: _dump_default(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dump_default(v) for v in value]
    return value


def to_tree(node: Node, dumped: Any) -> Any:
    """The tree of a value given as ``model_dump()`` (python mode) output."""
    kind = node.kind
    if kind == LEAF:
        return dumped if node.step is None else _q(node.step, dumped)
    if kind == MODEL:
        return tuple(
            dumped[n] if f.kind == LEAF and f.step is None else to_tree(f, dumped[n])
            for n, f in zip(node.names, node.fields, strict=True)
        )
    item = node.item
    assert item is not None
    plain = item.kind == LEAF and item.step is None
    if kind == MAP:
        if plain:
            return dict(dumped)
        return {k: to_tree(item, v) for k, v in dumped.items()}
    if plain:
        return tuple(dumped)
    return tuple(to_tree(item, v) for v in dumped)


def from_tree(node: Node, tree: Any) -> Any:
    """The plain (name-keyed) value of a tree, for ``model_validate``."""
    kind = node.kind
    if kind == LEAF:
        return tree if node.step is None else _unq(node.step, tree)
    if kind == MODEL:
        if node.flat:
            return dict(zip(node.names, tree, strict=False))
        return {n: from_tree(f, v) for n, f, v in zip(node.names, node.fields, tree, strict=True)}
    item = node.item
    assert item is not None
    if item.kind == LEAF and item.step is None:
        return tree if kind == MAP else list(tree)
    if item.flat:
        names = item.names
        if kind == MAP:
            return {k: dict(zip(names, v, strict=False)) for k, v in tree.items()}
        return [dict(zip(names, v, strict=False)) for v in tree]
    if kind == MAP:
        return {k: from_tree(item, v) for k, v in tree.items()}
    return [from_tree(item, v) for v in tree]


def entry_changes(old: dict[Any, Any], new: dict[Any, Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """The keys of dict tree ``new`` removed from ``old`` (in ``old``'s order), changed and added
    (in ``new``'s order). Entries are compared by identity first (an unchanged entity is the
    same object in both trees): with the same keys in the same order, the usual tick, without a
    Python step per unchanged entry."""
    keys = list(new)
    if keys == list(old):
        vals, olds = list(new.values()), list(old.values())
        differ = compress(range(len(keys)), map(is_not, vals, olds))
        return [], [keys[j] for j in differ if vals[j] != olds[j]], []
    removed = [k for k in old if k not in new]
    changed: list[Any] = []
    added: list[Any] = []
    for k, n in new.items():
        o = old.get(k, _MISSING)
        if o is _MISSING:
            added.append(k)
        elif o is not n and o != n:
            changed.append(k)
    return removed, changed, added


def _entities(item: Node, new: dict[Any, Any], was: dict[Any, Any], had: Any) -> dict[Any, Any]:
    """The plain value of the dict of entities ``new`` (a tree) for ``model_validate``, taking
    each entity whose tree equals the one it had in ``was`` from ``had`` (the typed dict of
    ``was``) as it is."""
    names, flat = item.names, item.flat
    if isinstance(had, dict) and had.keys() == was.keys():
        removed, changed, added = entry_changes(was, new)
        if not removed and not added:  # the same entities (the usual tick): only the changed ones
            d = dict(had)
            for k in changed:
                t = new[k]
                d[k] = dict(zip(names, t, strict=False)) if flat else from_tree(item, t)
            return d
    out: dict[Any, Any] = {}
    for k, t in new.items():
        w = was.get(k, _MISSING)
        if (w is t or w == t) and k in had:
            out[k] = had[k]
        else:
            out[k] = dict(zip(names, t, strict=False)) if flat else from_tree(item, t)
    return out


class Schema:
    """A state model compiled once: ``Schema(RoomState)``. Raises :class:`UsageError` for a model
    that is not a pydantic model or is recursive."""

    def __init__(self, model: type[BaseModel]) -> None:
        if not _is_model(model):
            raise UsageError(f"a state must be a pydantic model class, not {model!r}")
        self.model = model
        self.root = _model_node(model, ())
        self.id = zlib.crc32(self.root.describe().encode())
        """The schema id (CRC-32 of :meth:`Node.describe` of the root): a snapshot carries it."""

    def tree(self, state: BaseModel) -> Any:
        """The tree of ``state`` (an instance of the model)."""
        if not isinstance(state, self.model):
            raise UsageError(f"expected a {self.model.__name__}, got {type(state).__name__}")
        return to_tree(self.root, state.model_dump())

    def value(self, tree: Any, prev: tuple[Any, BaseModel] | None = None) -> BaseModel:
        """The typed state of a tree (validated: raises ``pydantic.ValidationError``).

        ``prev``: an earlier ``(tree, state)`` of this schema. An entity of a root dict or list
        field whose tree equals the one it had in ``prev`` (a delta against an older baseline
        repeats changes the client already has) is taken from ``prev``'s state as it is, not
        rebuilt and validated again
        (pydantic keeps model instances it is given): the cost follows the changes, not the
        state's size. The entity objects are then shared between the two states."""
        root = self.root
        if prev is None:
            return self.model.model_validate(from_tree(root, tree))
        old_tree, old_state = prev
        out: dict[str, Any] = {}
        for i, (name, f) in enumerate(zip(root.names, root.fields, strict=True)):
            item = f.item
            if f.kind == MAP and item is not None and item.kind == MODEL:
                out[name] = _entities(item, tree[i], old_tree[i], getattr(old_state, name))
            elif f.kind == LIST and item is not None and item.kind == MODEL:
                was, had = old_tree[i], getattr(old_state, name)
                n = min(len(was), len(had))
                out[name] = [
                    had[j] if j < n and (was[j] is t or was[j] == t) else from_tree(item, t)
                    for j, t in enumerate(tree[i])
                ]
            else:
                out[name] = from_tree(f, tree[i])
        return self.model.model_validate(out)

    def node_at(self, path: str) -> tuple[Node, tuple[int, ...]]:
        """The node at a dotted field path from the root (``"players"``, ``"world.phase"``; an
        entity's fields after ``*``: ``"players.*.hp"``) and its field indexes (``-1`` for ``*``)."""
        node = self.root
        idx: list[int] = []
        for part in path.split(".") if path else ():
            if part == "*":
                if node.kind not in (MAP, LIST) or node.item is None:
                    raise UsageError(f"{path!r}: '*' follows a field that is not a dict or list")
                node = node.item
                idx.append(-1)
                continue
            if node.kind != MODEL or part not in node.index:
                raise UsageError(f"{path!r}: no field {part!r} in the state model {self.model.__name__}")
            i = node.index[part]
            idx.append(i)
            node = node.fields[i]
        return node, tuple(idx)
