"""The canonical JSON form of a kcprpc.state value that the TypeScript state tests compare with
(clients/typescript/test/support/state_canon.ts builds the same): a model as a dict, a map as its
entries sorted by typed key (``i3``, ``s3``), a list item by item."""

from __future__ import annotations

from typing import Any

from kcprpc.state.schema import LIST, MAP, MODEL, Node


def keyrepr(k: Any) -> str:
    """A map key with its type: ``i3`` for the int 3, ``s3`` for the string "3"."""
    return f"i{k}" if type(k) is int else f"s{k}"


def canon(node: Node, v: Any) -> Any:
    """``v`` (of schema ``node``) in the canonical form both sides build."""
    if node.kind == MODEL:
        return {n: canon(f, getattr(v, n)) for n, f in zip(node.names, node.fields, strict=True)}
    if node.kind == MAP:
        assert node.item is not None
        return sorted([keyrepr(k), canon(node.item, x)] for k, x in v.items())
    if node.kind == LIST:
        assert node.item is not None
        return [canon(node.item, x) for x in v]
    return v
