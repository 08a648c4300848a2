"""Interest filters: what one client sees of a state (sans-I/O).

A filter is a function of the typed state returning an :class:`Interest`, called once per tick
per client by :class:`~kcprpc.state.StateSync`. The client's view is the state's tree with

* ``keys``: for each dict field named by its path (``"players"``, ``"world.items"``,
  ``"teams.*.members"``), only the entries whose key is in the given collection;
* ``hide``: for each model named by its path (``""`` for the root, ``"world"``, ``"players.*"``
  for every entity of ``players``), the named fields at their default value.

The delta a client gets is computed between its own views, so an entity leaving its interest is
a removal for it, and one entering an addition.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kcprpc.errors import UsageError
from kcprpc.state.schema import LIST, MAP, MODEL, NO_DEFAULT, Node, Schema


@dataclass(frozen=True, slots=True)
class Interest:
    """What one client sees: ``keys`` per dict path, ``hide`` (fields left at their default) per
    model path. An empty Interest shows everything."""

    keys: Mapping[str, Collection[Any]] = field(default_factory=dict)
    hide: Mapping[str, Collection[str]] = field(default_factory=dict)


ALL = Interest()
"""The interest that shows everything."""


class _Filter:
    __slots__ = ("children", "defaults", "hide", "keys")

    def __init__(self) -> None:
        self.keys: Collection[Any] | None = None
        self.hide: list[tuple[int, Any]] = []
        self.children: dict[int, _Filter] = {}


class Views:
    """Builds client views of one schema's trees; path lookups are cached."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._paths: dict[str, tuple[Node, tuple[int, ...]]] = {}

    def _resolve(self, path: str) -> tuple[Node, tuple[int, ...]]:
        got = self._paths.get(path)
        if got is None:
            if len(self._paths) > 1024:
                self._paths.clear()
            got = self._paths[path] = self.schema.node_at(path)
        return got

    def _filter(self, interest: Interest) -> _Filter:
        root = _Filter()
        for path, keys in interest.keys.items():
            node, idx = self._resolve(path)
            if node.kind != MAP:
                raise UsageError(f"interest keys {path!r}: only dict fields are filtered by key")
            _at(root, idx).keys = keys
        for path, names in interest.hide.items():
            node, idx = self._resolve(path)
            if node.kind != MODEL:
                raise UsageError(f"interest hide {path!r}: not a model")
            f = _at(root, idx)
            for name in names:
                if name not in node.index:
                    raise UsageError(f"interest hide {path!r}: no field {name!r}")
                j = node.index[name]
                d = node.defaults[j]
                if d is NO_DEFAULT:
                    raise UsageError(f"interest hide {path!r}: field {name!r} has no default to show")
                f.hide.append((j, d))
        return root

    def view(self, tree: Any, interest: Interest) -> Any:
        """The view of ``tree`` under ``interest`` (subtrees outside the filter are shared)."""
        if not interest.keys and not interest.hide:
            return tree
        return _apply(self.schema.root, tree, self._filter(interest))


def _apply(node: Node, tree: Any, f: _Filter) -> Any:
    kind = node.kind
    if kind == MODEL:
        out = list(tree)
        for i, child in f.children.items():
            out[i] = _apply(node.fields[i], tree[i], child)
        for j, d in f.hide:
            out[j] = d
        return tuple(out)
    item = node.item
    assert item is not None
    if kind == MAP:
        keys = f.keys
        if keys is not None:
            if len(keys) < len(tree):
                tree = {k: tree[k] for k in keys if k in tree}
            else:
                tree = {k: v for k, v in tree.items() if k in keys}
        inner = f.children.get(-1)
        if inner is not None:
            return {k: _apply(item, v, inner) for k, v in tree.items()}
        return tree
    if kind == LIST:
        inner = f.children.get(-1)
        if inner is not None:
            return tuple(_apply(item, v, inner) for v in tree)
    return tree


def _at(root: _Filter, idx: Sequence[int]) -> _Filter:
    """The filter node at the field indexes ``idx`` below ``root``, made on the way."""
    f = root
    for i in idx:
        f = f.children.setdefault(i, _Filter())
    return f
