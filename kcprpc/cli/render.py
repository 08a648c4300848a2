"""How the client commands print: JSON values (bytes as base64 where JSON has no bytes) and the
readable summaries of interface documents that ``kcprpc describe`` shows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic_core import to_jsonable_python


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON values (pydantic models, dataclasses ...; bytes as base64 if need be)."""
    try:
        return to_jsonable_python(value)
    except Exception:
        return to_jsonable_python(value, bytes_mode="base64")


def dump_json(value: Any, pretty: bool) -> str:
    """``value`` as JSON text: indented when ``pretty``, else one line."""
    return json.dumps(jsonable(value), indent=2 if pretty else None, ensure_ascii=False)


def type_name(schema: Any) -> str:
    """A short human name for a schema (``JoinRequest``, ``list[int]``, ``str | None`` ...)."""
    if not isinstance(schema, dict) or not schema:
        return "any"
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(type_name(s) for s in schema[key])
    if "enum" in schema:
        return "enum(" + ", ".join(json.dumps(v) for v in schema["enum"]) + ")"
    if "const" in schema:
        return f"const({json.dumps(schema['const'])})"
    t = schema.get("type")
    if t == "array":
        return f"list[{type_name(schema.get('items', {}))}]"
    if t == "object" and "additionalProperties" in schema and "properties" not in schema:
        return f"dict[str, {type_name(schema['additionalProperties'])}]"
    names = {
        "string": "str",
        "integer": "int",
        "number": "float",
        "boolean": "bool",
        "null": "None",
        "object": "object",
    }
    if t == "string" and schema.get("format") == "binary":
        return "bytes"
    return names.get(str(t), str(t))


def _arg(schema: Any, stream: bool) -> str:
    if schema == {"type": "null"}:
        return "stream" if stream else ""
    return ("stream " if stream else "") + type_name(schema)


def describe_text(doc: dict[str, Any]) -> str:
    """A readable summary of a service document."""
    out = [f"service {doc['name']}  (package {doc['package'] or '-'}, protocol {doc['protocol_version']})"]
    if doc.get("description"):
        out.extend("  # " + line for line in doc["description"].splitlines())
    for name, m in sorted(doc["methods"].items()):
        out.append("  " + method_line(name, m))
    for name, e in sorted(doc.get("events", {}).items()):
        out.append(f"  event {name}: {type_name(e['schema'])}  [{e['delivery']}]")
    for name, t in sorted(doc.get("topics", {}).items()):
        out.append(f"  topic {name}: {', '.join(t['events'])}")
    return "\n".join(out) + "\n"


def method_line(name: str, m: dict[str, Any]) -> str:
    """One method of a document as ``rpc name(Request) returns (Response)  [kind, delivery]``."""
    kind = m["kind"]
    req = _arg(m["request"], kind in ("client_stream", "bidi"))
    resp = _arg(m["response"], kind in ("server_stream", "bidi"))
    ret = "" if kind == "notify" else f" returns ({resp or 'None'})"
    return f"rpc {name}({req}){ret}  [{kind}, {m['delivery']}]"


def referenced_defs(doc: dict[str, Any], roots: Sequence[Any]) -> dict[str, Any]:
    """The ``$defs`` of ``doc`` that the schemas in ``roots`` reference, directly or not."""
    defs = doc.get("$defs", {})
    found: dict[str, Any] = {}
    stack = list(roots)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                name = ref.rsplit("/", 1)[-1]
                if name in defs and name not in found:
                    found[name] = defs[name]
                    stack.append(defs[name])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return dict(sorted(found.items()))
