"""Export interface documents from service classes.

Everything comes from the :class:`~kcprpc.service.ServiceSpec` (kinds, deliveries, wire names) and
from pydantic (``model_json_schema`` machinery, one generator per document so ``$defs`` are shared).
Request schemas are pydantic's *validation* schemas (what the server accepts), response and event
schemas its *serialization* schemas (what the server sends).

Events and topics are declared on the service class::

    class GameService(kcprpc.Service, name="game.v1.Game", events=[WorldSnapshot],   # sessions, rooms
                      topics={"channel:{channel}": [Chat, Gift]}):                   # topics, what they carry

(a plain class sets ``__rpc_events__`` / ``__rpc_topics__`` itself)

or passed to :func:`export_service` (``events=``, ``topics=``). Export is deterministic: the same
code gives byte-identical text from :func:`dumps` (sorted keys, no timestamps).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

from kcprpc.codec import PROTOCOL_VERSION
from kcprpc.errors import UsageError
from kcprpc.service import event_info, event_send, service_spec

from .schema import FORMAT, FORMAT_VERSION, dumps, validate_document

__all__ = ["declared_events", "declared_topics", "dumps", "export_service"]


def declared_events(cls: type) -> list[Any]:
    """Event types a service class declares in ``__rpc_events__`` (and through its topics)."""
    out: list[Any] = list(getattr(cls, "__rpc_events__", ()) or ())
    for evs in (getattr(cls, "__rpc_topics__", None) or {}).values():
        out.extend(evs)
    return out


def declared_topics(cls: type) -> dict[str, list[Any]]:
    """Topics a service class declares in ``__rpc_topics__``."""
    return {str(k): list(v) for k, v in (getattr(cls, "__rpc_topics__", None) or {}).items()}


def _split(name: str) -> tuple[str, str]:
    pkg, _, svc = name.rpartition(".")
    return pkg, svc


def _doc(obj: Any) -> str | None:
    d = getattr(obj, "__doc__", None)  # own docstring only (inspect.getdoc would inherit one)
    return inspect.cleandoc(d).strip() or None if isinstance(d, str) else None


def export_service(
    cls: type,
    *,
    events: Iterable[Any] = (),
    topics: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, Any]:
    """The interface document of service class ``cls`` as a JSON-ready dict (validated)."""
    if not isinstance(cls, type):
        cls = type(cls)
    spec = service_spec(cls)
    pkg, svc = _split(spec.name)
    if not svc.isidentifier():
        raise UsageError(f"service name {spec.name!r}: the last part must be an identifier")
    all_topics = declared_topics(cls)
    for t, evs in (topics or {}).items():
        merged = all_topics.setdefault(t, [])
        merged.extend(e for e in evs if e not in merged)
    event_types: list[Any] = []
    for e in [*declared_events(cls), *events, *(e for evs in all_topics.values() for e in evs)]:
        if e not in event_types:
            event_types.append(e)

    inputs: list[tuple[Any, Any, Any]] = []
    methods = sorted(spec.methods.values(), key=lambda m: m.wire_name)
    for m in methods:
        inputs.append((("req", m.wire_name), "validation", m.request_adapter.core_schema))
        inputs.append((("resp", m.wire_name), "serialization", m.response_adapter.core_schema))
    event_names: dict[Any, tuple[str, str]] = {}
    for e in event_types:
        name, delivery, adapter = event_info(e)
        if name in {n for n, _ in event_names.values()}:
            raise UsageError(f"{spec.name}: two event types use the wire name {name!r}")
        event_names[e] = (name, delivery.value)
        inputs.append((("event", name), "serialization", adapter.core_schema))

    gen = GenerateJsonSchema(ref_template="#/$defs/{model}")
    mapping, defs = gen.generate_definitions(inputs)

    def schema(key: Any, mode: str) -> dict[str, Any]:
        return dict(mapping[(key, mode)])  # type: ignore[index]

    doc_methods: dict[str, Any] = {}
    for m in methods:
        mname = m.wire_name.split("/", 1)[1]
        entry: dict[str, Any] = {
            "wire_name": m.wire_name,
            "kind": m.kind.value,
            "delivery": m.delivery.value,
            "request": schema(("req", m.wire_name), "validation"),
            "response": schema(("resp", m.wire_name), "serialization"),
        }
        d = _doc(getattr(cls, m.attr, None))
        if d:
            entry["description"] = d
        doc_methods[mname] = entry
    doc_events: dict[str, Any] = {}
    for name, ev_delivery in event_names.values():
        ev: dict[str, Any] = {"delivery": ev_delivery, "schema": schema(("event", name), "serialization")}
        send = event_send(name)
        if send is not None:  # only when declared: documents of unkeyed events stay as they were
            if send.key_field is not None:
                ev["key"] = send.key_field
            if send.lane is not None:
                ev["lane"] = send.lane
        doc_events[name] = ev
    doc_topics = {t: {"events": sorted(event_names[e][0] for e in evs)} for t, evs in all_topics.items()}
    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "package": pkg,
        "service": svc,
        "protocol_version": PROTOCOL_VERSION,
        "methods": doc_methods,
        "events": doc_events,
        "topics": doc_topics,
        "$defs": dict(defs),
    }
    d = cls.__dict__.get("__doc__")
    if isinstance(d, str) and d.strip():
        doc["description"] = inspect.cleandoc(d).strip()
    return validate_document(doc, f"export of {spec.name}")


def export_text(cls: type, **kwargs: Any) -> str:
    """:func:`export_service` as canonical JSON text."""
    return dumps(export_service(cls, **kwargs))


def schema_of(tp: Any, mode: str = "validation") -> dict[str, Any]:
    """A standalone JSON Schema of one type (helper for tests and tools)."""
    return TypeAdapter(tp).json_schema(mode=mode)  # type: ignore[arg-type]
