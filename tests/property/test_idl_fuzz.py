"""Garbage documents: loading raises only DocumentError; the breaking checker never crashes on any
pair of documents that load, and finds nothing between a document and itself."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kcprpc.idl import DocumentError, loads_document
from kcprpc.idl.breaking import check

ROOT = Path(__file__).resolve().parents[2]
DOCS = [json.loads(p.read_text()) for p in sorted((ROOT / "idl").glob("*.json")) if p.name != "schema.json"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# keys and values that mean something to the loader and the checker
schema_keys = st.sampled_from(
    ["type", "$ref", "enum", "const", "anyOf", "oneOf", "items", "properties", "required", "maxLength",
     "minimum", "additionalProperties", "prefixItems", "pattern", "format", "kind", "delivery", "events"]
)  # fmt: skip
schema_values = st.one_of(
    json_values,
    st.sampled_from(["string", "integer", "number", "null", "object", "array", "#/$defs/JoinRequest", "#/x"]),
    st.lists(st.sampled_from(["a", 1, None]), max_size=3),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _load(doc: Any) -> dict[str, Any] | None:
    try:
        return loads_document(json.dumps(doc))
    except DocumentError:
        return None


@settings(max_examples=150)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_garbage_text_only_raises_document_error(data: bytes) -> None:
    try:
        loads_document(data, "fuzz")
    except DocumentError as e:
        assert str(e).startswith("fuzz: ")


@settings(max_examples=300)
@given(st.data())
def test_mutated_documents_load_or_fail_cleanly_and_check_never_crashes(data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(DOCS))
    doc = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        path = data.draw(st.sampled_from(paths))
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = data.draw(schema_values)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(schema_keys)] = data.draw(schema_values)
    loaded = _load(doc)
    if loaded is None:
        return
    assert check(loaded, loaded) == []
    for a, b in ((base, loaded), (loaded, base)):
        for change in check(a, b):
            assert change.rule.isupper() and change.location
