"""The interface document format (version 1): its pydantic model, its own JSON Schema, loading.

A document describes one service. It is plain JSON (see ``docs/idl.md``)::

    {
      "format": "kcprpc-idl", "format_version": 1,
      "name": "game.v1.Game", "package": "game.v1", "service": "Game",
      "protocol_version": 1,
      "methods": {"join": {"wire_name": "game.v1.Game/join", "kind": "unary",
                           "delivery": "reliable", "request": {...}, "response": {...}}},
      "events": {"game.snapshot": {"delivery": "reliable", "schema": {...}}},
      "topics": {"channel:{channel}": {"events": ["live.chat"]}},
      "$defs": {...}
    }

Message schemas are JSON Schema (draft 2020-12, as pydantic writes it); ``$ref`` s point into the
document's shared ``$defs``. :func:`format_schema` is the JSON Schema *of the format*, checked in as
``idl/schema.json``. :func:`load_document` gives clear :class:`DocumentError` s, never tracebacks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kcprpc.errors import UsageError

FORMAT = "kcprpc-idl"
FORMAT_VERSION = 1

JsonSchema = dict[str, Any]

_NAME = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"


class DocumentError(UsageError):
    """A document (or a file said to be one) is malformed. The message says where and why."""


class MethodDef(BaseModel):
    """One method of a service."""

    model_config = ConfigDict(extra="forbid")

    wire_name: str = Field(
        description='"<service>/<method>": what the wire carries in a CALL or NOTIFY frame.'
    )
    kind: Literal["unary", "server_stream", "client_stream", "bidi", "notify"]
    delivery: Literal["reliable", "unreliable"]
    id: int | None = Field(
        default=None,
        ge=0,
        description="Stable numeric method id, for wires that use ids (absent: names only).",
    )
    request: JsonSchema = Field(description="Schema of one request message (streaming: of each message).")
    response: JsonSchema = Field(description="Schema of one response message; {'type': 'null'} for none.")
    description: str | None = None


class EventDef(BaseModel):
    """One server-push event type."""

    model_config = ConfigDict(extra="forbid")

    delivery: Literal["reliable", "unreliable"]
    schema_: JsonSchema = Field(alias="schema", description="Schema of the event payload.")
    key: str | None = Field(
        default=None,
        description="The payload field whose value is the event's latest-wins key (absent: unkeyed);"
        " keyed EVENT frames carry it as their 7th element (wire-format/rpc.md, 'Latest-wins keys').",
    )
    lane: str | None = Field(
        default=None, description="The server's send lane (priority class) of the event."
    )
    description: str | None = None


class TopicDef(BaseModel):
    """A topic clients subscribe to (``{name}`` parts are placeholders) and the events it carries."""

    model_config = ConfigDict(extra="forbid")

    events: list[str] = Field(description="Names of events (keys of 'events') published on the topic.")
    description: str | None = None


class Document(BaseModel):
    """One versioned interface document: a service, its methods, events, topics and messages."""

    model_config = ConfigDict(extra="forbid", title="kcprpc interface document")

    format: Literal["kcprpc-idl"]
    format_version: Literal[1]
    name: str = Field(pattern=_NAME, description="Full wire name of the service: package + '.' + service.")
    package: str = Field(description="Dotted package (may be empty).")
    service: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    protocol_version: int = Field(ge=1, description="Version of the kcprpc wire protocol.")
    description: str | None = None
    methods: dict[str, MethodDef]
    events: dict[str, EventDef] = Field(default_factory=dict)
    topics: dict[str, TopicDef] = Field(default_factory=dict)
    defs: dict[str, JsonSchema] = Field(default_factory=dict, alias="$defs")


def format_schema() -> JsonSchema:
    """The JSON Schema of the document format (what ``idl/schema.json`` holds)."""
    schema = Document.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://kcprpc.invalid/idl/schema.json"
    return schema


def dumps(doc: Any) -> str:
    """Canonical JSON text: sorted keys, two-space indent, a final newline. Deterministic."""
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def _where(loc: tuple[Any, ...]) -> str:
    return "/".join(str(p) for p in loc) or "(top level)"


def _check_refs(doc: dict[str, Any], source: str) -> None:
    defs = doc.get("$defs", {})

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and (
                not ref.startswith("#/$defs/") or ref[len("#/$defs/") :] not in defs
            ):
                raise DocumentError(f"{source}: {where}: $ref {ref!r} does not name an entry of $defs")
            for k, v in node.items():
                walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}/{i}")

    walk({k: v for k, v in doc.items() if k in ("methods", "events", "$defs")}, "")
    for topic, t in doc.get("topics", {}).items():
        for ev in t.get("events", []):
            if ev not in doc.get("events", {}):
                raise DocumentError(f"{source}: topics/{topic}: event {ev!r} is not declared under 'events'")
    name = doc.get("name", "")
    pkg, svc = doc.get("package", ""), doc.get("service", "")
    if name != (f"{pkg}.{svc}" if pkg else svc):
        raise DocumentError(f"{source}: name {name!r} is not package + '.' + service ({pkg!r}, {svc!r})")
    for mname, m in doc.get("methods", {}).items():
        if m.get("wire_name") != f"{name}/{mname}":
            raise DocumentError(f"{source}: methods/{mname}: wire_name must be {name + '/' + mname!r}")
        if m.get("delivery") == "unreliable" and m.get("kind") != "notify":
            raise DocumentError(f"{source}: methods/{mname}: only notify methods can be unreliable")


def validate_document(doc: Any, source: str = "document") -> dict[str, Any]:
    """Check ``doc`` (parsed JSON) against the format; returns it. Raises :class:`DocumentError`."""
    if not isinstance(doc, dict):
        raise DocumentError(f"{source}: a document is a JSON object, not {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise DocumentError(f'{source}: not a kcprpc interface document ("format" must be {FORMAT!r})')
    if doc.get("format_version") != FORMAT_VERSION:
        raise DocumentError(
            f"{source}: format_version {doc.get('format_version')!r} is not supported (this kcprpc reads {FORMAT_VERSION})"
        )
    try:
        Document.model_validate(doc)
    except ValidationError as e:
        lines = [f"{_where(err['loc'])}: {err['msg']}" for err in e.errors(include_url=False)[:10]]
        raise DocumentError(f"{source}: invalid document:\n  " + "\n  ".join(lines)) from None
    _check_refs(doc, source)
    _check_message_schemas(doc, source)
    return doc


def _check_message_schemas(doc: dict[str, Any], source: str) -> None:
    """Every message schema must itself be valid JSON Schema (draft 2020-12)."""
    import jsonschema  # type: ignore[import-untyped]

    meta = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)
    parts: list[tuple[str, Any]] = [(f"$defs/{k}", v) for k, v in doc.get("$defs", {}).items()]
    for name, m in doc.get("methods", {}).items():
        parts += [
            (f"methods/{name}/request", m.get("request")),
            (f"methods/{name}/response", m.get("response")),
        ]
    parts += [(f"events/{name}/schema", e.get("schema")) for name, e in doc.get("events", {}).items()]
    for where, schema in parts:
        err = jsonschema.exceptions.best_match(meta.iter_errors(schema))
        if err is not None:
            at = "/".join(str(p) for p in err.absolute_path)
            raise DocumentError(
                f"{source}: {where}{'/' + at if at else ''}: not valid JSON Schema: {err.message}"
            )


def loads_document(text: str | bytes, source: str = "document") -> dict[str, Any]:
    """Parse and validate a document from JSON text."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise DocumentError(f"{source}: not valid JSON: {e}") from None
    return validate_document(doc, source)


def load_document(path: str | Path) -> dict[str, Any]:
    """Read, parse and validate a document file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise DocumentError(f"{p}: cannot read: {e.strerror or e}") from None
    return loads_document(data, str(p))
