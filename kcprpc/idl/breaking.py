"""Breaking-change check between two versions of an interface document (like ``buf breaking``).

:func:`check` returns every difference as a :class:`Change` with a rule name, a location and
whether it breaks existing peers. Message names never travel on the wire (messages are msgpack
maps keyed by field name), so messages are compared *structurally*, following ``$ref`` s.

Direction matters. Requests flow from old clients to a new server, so the new schema must accept
everything the old one did: narrowing a constraint, making a field required or adding a required
field breaks them. Responses and events flow from a new server to old clients, which validate
with the old schema: widening a constraint, making a field optional, or adding an enum value
breaks them. Removing or retyping a field, or removing an enum value, breaks either way.

Rules (breaking unless marked *safe*):

=========================== =============================================================
``SERVICE_RENAMED``          the service's full name changed (every wire name changes)
``PROTOCOL_VERSION_CHANGED`` the wire protocol version changed
``METHOD_REMOVED``           a method is gone
``METHOD_KIND_CHANGED``      unary / server_stream / client_stream / bidi / notify changed
``METHOD_DELIVERY_CHANGED``  reliable / unreliable changed
``METHOD_ID_CHANGED``        the stable numeric method id changed (or appeared/disappeared)
``EVENT_REMOVED``            an event type is gone
``EVENT_DELIVERY_CHANGED``   an event's delivery changed
``EVENT_KEY_CHANGED``        an event's latest-wins key field appeared, disappeared or changed
                            (keyed events travel in a 7-element frame that older clients refuse,
                            and the key decides which messages a client drops as stale)
``TOPIC_REMOVED``            a topic is gone
``TOPIC_EVENT_REMOVED``      a topic no longer carries an event
``FIELD_REMOVED``            a field is gone
``FIELD_RENAMED``            a field is gone and a new one with the same schema appeared
``FIELD_TYPE_CHANGED``       a value's type changed (or a union lost/gained members)
``FIELD_BECAME_REQUIRED``    requests: an optional field became required
``FIELD_ADDED_REQUIRED``     requests: a new required field
``FIELD_BECAME_OPTIONAL``    responses/events: a required field became optional
``ENUM_VALUE_REMOVED``       an enum (or const) lost a value
``ENUM_VALUE_ADDED``         responses/events: an enum gained a value old clients reject
``CONSTRAINT_NARROWED``      requests: maxLength/maximum/... got tighter (or appeared)
``CONSTRAINT_WIDENED``       responses/events: a constraint got looser (or disappeared)
``SERVICE_REMOVED``          (comparing sets of documents) a service is gone
``SERVICE_ADDED``            *safe*: (comparing sets) a new service
``METHOD_ADDED``             *safe*
``EVENT_ADDED``              *safe*
``TOPIC_ADDED``              *safe* (also a topic carrying a new event)
``FIELD_ADDED``              *safe*: a new optional field (or a required one in a response)
``EVENT_LANE_CHANGED``       *safe*: an event's send lane (the server's priority class) changed
=========================== =============================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

REQUEST = "request"  # client -> server
RESPONSE = "response"  # server -> client (responses and events)

# bounds: (keyword, True if a larger value is narrower)
_BOUNDS: tuple[tuple[str, bool], ...] = (
    ("maxLength", False),
    ("maximum", False),
    ("exclusiveMaximum", False),
    ("maxItems", False),
    ("maxProperties", False),
    ("minLength", True),
    ("minimum", True),
    ("exclusiveMinimum", True),
    ("minItems", True),
    ("minProperties", True),
)
_EXACT = ("pattern", "multipleOf", "format", "uniqueItems")


@dataclass(frozen=True, order=True)
class Change:
    """One difference. ``location`` says where (``game.v1.Game/join request JoinRequest.name``)."""

    breaking: bool
    rule: str
    location: str
    message: str

    def __str__(self) -> str:
        tag = "BREAKING" if self.breaking else "safe"
        return f"{tag} {self.rule}: {self.location}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "breaking": self.breaking,
            "rule": self.rule,
            "location": self.location,
            "message": self.message,
        }


def _canon(x: Any) -> str:
    return json.dumps(x, sort_keys=True)


_IGNORED = {"title", "description", "examples", "default", "$comment", "deprecated"}


def _strip(schema: Any) -> Any:
    """Schema without annotations that do not change what validates (for rename detection)."""
    if isinstance(schema, dict):
        return {k: _strip(v) for k, v in schema.items() if k not in _IGNORED}
    if isinstance(schema, list):
        return [_strip(v) for v in schema]
    return schema


class _Checker:
    def __init__(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.old = old
        self.new = new
        self.changes: dict[tuple[str, str], Change] = {}
        self._seen: set[tuple[str, str, str]] = set()

    def add(self, breaking: bool, rule: str, location: str, message: str) -> None:
        self.changes.setdefault((rule, location), Change(breaking, rule, location, message))

    # ------------------------------------------------------------------ schemas
    @staticmethod
    def _resolve(doc: dict[str, Any], schema: Any) -> tuple[Any, str | None]:
        name: str | None = None
        for _ in range(32):  # chains of refs
            if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
                name = schema["$ref"].rsplit("/", 1)[-1]
                rest = {k: v for k, v in schema.items() if k != "$ref"}
                target = doc.get("$defs", {}).get(name, {})
                schema = {**target, **rest} if rest else target
            else:
                break
        return schema, name

    @staticmethod
    def _members(schema: Any) -> list[Any]:
        if isinstance(schema, dict):
            for key in ("anyOf", "oneOf"):
                if isinstance(schema.get(key), list):
                    return list(schema[key])
            t = schema.get("type")
            if isinstance(t, list):
                return [{**schema, "type": x} for x in t]
        return [schema]

    def _kind(self, doc: dict[str, Any], schema: Any) -> str:
        s, _ = self._resolve(doc, schema)
        if not isinstance(s, dict) or s == {}:
            return "any"
        if "const" in s or "enum" in s:
            return "enum"
        t = s.get("type")
        if isinstance(t, str):
            if t == "object" and "properties" not in s and "additionalProperties" in s:
                return "map"
            return t
        if "properties" in s:
            return "object"
        if "allOf" in s and isinstance(s["allOf"], list) and len(s["allOf"]) == 1:
            return self._kind(doc, s["allOf"][0])
        return "any"

    def compare(self, old: Any, new: Any, where: str, direction: str) -> None:
        o_s, o_name = self._resolve(self.old, old)
        n_s, n_name = self._resolve(self.new, new)
        if o_name is not None or n_name is not None:
            key = (o_name or _canon(old), n_name or _canon(new), direction)
            if key in self._seen:
                return
            self._seen.add(key)
            if n_name is not None:
                where = n_name  # inside a message: locate by the message's (new) name
        o_members = self._members(o_s)
        n_members = self._members(n_s)
        if len(o_members) == 1 and len(n_members) == 1:
            self._compare_one(o_s, n_s, where, direction)
            return
        o_by = self._by_kind(self.old, o_members)
        n_by = self._by_kind(self.new, n_members)
        lost = sorted(set(o_by) - set(n_by))
        gained = sorted(set(n_by) - set(o_by))
        if "any" in n_by and direction == REQUEST:
            lost = []
        if "any" in o_by and direction == RESPONSE:
            gained = []
        if lost and direction == REQUEST:
            self.add(True, "FIELD_TYPE_CHANGED", where, f"no longer accepts {', '.join(lost)}")
        if gained and direction == RESPONSE:
            self.add(
                True, "FIELD_TYPE_CHANGED", where, f"may now be {', '.join(gained)}, which old clients reject"
            )
        for k in sorted(set(o_by) & set(n_by)):
            self._compare_one(o_by[k], n_by[k], where, direction)

    def _by_kind(self, doc: dict[str, Any], members: list[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in members:
            k = self._kind(doc, m)
            if k in out:  # several objects in a union: key by their message name
                _, name = self._resolve(doc, m)
                k = f"{k}:{name}"
            out[k] = m
        return out

    def _compare_one(self, old: Any, new: Any, where: str, direction: str) -> None:
        if (isinstance(old, dict) and "$ref" in old) or (isinstance(new, dict) and "$ref" in new):
            self.compare(old, new, where, direction)  # through the ref: dedupe, locate by message name
            return
        o_s, n_s = old, new
        ok, nk = self._kind(self.old, o_s), self._kind(self.new, n_s)
        if ok != nk:
            widening = (ok, nk) in {("integer", "number")} or nk == "any"
            narrowing = (ok, nk) in {("number", "integer")} or ok == "any"
            if direction == REQUEST and widening:
                return
            if direction == RESPONSE and narrowing:
                return
            self.add(True, "FIELD_TYPE_CHANGED", where, f"type {ok} became {nk}")
            return
        if not isinstance(o_s, dict) or not isinstance(n_s, dict):
            return
        if ok == "enum":
            self._compare_enum(o_s, n_s, where, direction)
        self._compare_constraints(o_s, n_s, where, direction)
        if ok == "object":
            self._compare_object(o_s, n_s, where, direction)
        elif ok == "array":
            oi, ni = o_s.get("items"), n_s.get("items")
            if oi is not None or ni is not None:
                self.compare(
                    oi if oi is not None else {}, ni if ni is not None else {}, f"{where}[]", direction
                )
            op, np_ = o_s.get("prefixItems"), n_s.get("prefixItems")
            if isinstance(op, list) and isinstance(np_, list):
                if len(op) != len(np_):
                    self.add(
                        True, "FIELD_TYPE_CHANGED", where, f"tuple of {len(op)} became tuple of {len(np_)}"
                    )
                for i, (a, b) in enumerate(zip(op, np_, strict=False)):
                    self.compare(a, b, f"{where}[{i}]", direction)
        elif ok == "map":
            oa, na = o_s.get("additionalProperties"), n_s.get("additionalProperties")
            self.compare(
                oa if isinstance(oa, dict) else {},
                na if isinstance(na, dict) else {},
                f"{where}{{}}",
                direction,
            )

    def _compare_enum(self, o: dict[str, Any], n: dict[str, Any], where: str, direction: str) -> None:
        ov = o["enum"] if "enum" in o else [o.get("const")]
        nv = n["enum"] if "enum" in n else [n.get("const")]
        oc = {_canon(v): v for v in ov}
        nc = {_canon(v): v for v in nv}
        for k in sorted(set(oc) - set(nc)):
            self.add(True, "ENUM_VALUE_REMOVED", where, f"value {k} removed")
        for k in sorted(set(nc) - set(oc)):
            if direction == RESPONSE:
                self.add(True, "ENUM_VALUE_ADDED", where, f"value {k} added; old clients reject it")
            else:
                self.add(False, "ENUM_VALUE_ADDED", where, f"value {k} added")

    def _compare_constraints(self, o: dict[str, Any], n: dict[str, Any], where: str, direction: str) -> None:
        for key, larger_narrows in _BOUNDS:
            a, b = o.get(key), n.get(key)
            if (
                a == b
                or (a is not None and not isinstance(a, (int, float)))
                or (b is not None and not isinstance(b, (int, float)))
            ):
                continue
            if a is None:
                narrowed = True
            elif b is None:
                narrowed = False
            else:
                narrowed = (b > a) if larger_narrows else (b < a)
            self._bound(
                narrowed,
                where,
                f"{key} {a if a is not None else 'unset'} -> {b if b is not None else 'unset'}",
                direction,
            )
        for key in _EXACT:
            a, b = o.get(key), n.get(key)
            if a == b:
                continue
            if b is None:
                self._bound(False, where, f"{key} {a!r} removed", direction)
            elif a is None:
                self._bound(True, where, f"{key} {b!r} added", direction)
            else:  # cannot tell which is wider: breaks either way
                self._bound(True, where, f"{key} {a!r} -> {b!r}", REQUEST)
                self._bound(False, where, f"{key} {a!r} -> {b!r}", RESPONSE)
        oa, na = o.get("additionalProperties"), n.get("additionalProperties")
        if oa is not False and na is False:
            self._bound(True, where, "additionalProperties became false", direction)
        elif oa is False and na is not False:
            self._bound(False, where, "additionalProperties no longer false", direction)

    def _bound(self, narrowed: bool, where: str, what: str, direction: str) -> None:
        if narrowed:
            self.add(direction == REQUEST, "CONSTRAINT_NARROWED", where, what)
        else:
            self.add(direction == RESPONSE, "CONSTRAINT_WIDENED", where, what)

    def _compare_object(self, o: dict[str, Any], n: dict[str, Any], where: str, direction: str) -> None:
        op: dict[str, Any] = o.get("properties") or {}
        np_: dict[str, Any] = n.get("properties") or {}
        oreq = set(o.get("required") or ())
        nreq = set(n.get("required") or ())
        removed = sorted(set(op) - set(np_))
        added = sorted(set(np_) - set(op))
        renamed: dict[str, str] = {}
        for r in removed:
            same = [
                a
                for a in added
                if a not in renamed.values() and _canon(_strip(np_[a])) == _canon(_strip(op[r]))
            ]
            if len(same) == 1:
                renamed[r] = same[0]
        for r in removed:
            if r in renamed:
                self.add(
                    True,
                    "FIELD_RENAMED",
                    f"{where}.{r}",
                    f"renamed to {renamed[r]!r} (the wire carries field names)",
                )
            else:
                self.add(True, "FIELD_REMOVED", f"{where}.{r}", "field removed")
        for a in added:
            if a in renamed.values():
                continue
            if a in nreq and direction == REQUEST:
                self.add(
                    True,
                    "FIELD_ADDED_REQUIRED",
                    f"{where}.{a}",
                    "new required field; old clients do not send it",
                )
            else:
                self.add(
                    False, "FIELD_ADDED", f"{where}.{a}", "new field" if a in nreq else "new optional field"
                )
        for f in sorted(set(op) & set(np_)):
            loc = f"{where}.{f}"
            if f not in oreq and f in nreq:
                self.add(direction == REQUEST, "FIELD_BECAME_REQUIRED", loc, "optional field became required")
            elif f in oreq and f not in nreq:
                self.add(
                    direction == RESPONSE, "FIELD_BECAME_OPTIONAL", loc, "required field became optional"
                )
            self.compare(op[f], np_[f], loc, direction)

    # ------------------------------------------------------------------ documents
    def run(self) -> list[Change]:
        old, new = self.old, self.new
        svc = new.get("name", "?")
        if old.get("name") != new.get("name"):
            self.add(True, "SERVICE_RENAMED", svc, f"service {old.get('name')!r} became {new.get('name')!r}")
        if old.get("protocol_version") != new.get("protocol_version"):
            self.add(
                True,
                "PROTOCOL_VERSION_CHANGED",
                svc,
                f"protocol {old.get('protocol_version')} became {new.get('protocol_version')}",
            )
        om, nm = old.get("methods", {}), new.get("methods", {})
        for name in sorted(set(om) - set(nm)):
            self.add(True, "METHOD_REMOVED", f"{svc}/{name}", "method removed")
        for name in sorted(set(nm) - set(om)):
            self.add(False, "METHOD_ADDED", f"{svc}/{name}", f"new {nm[name].get('kind')} method")
        for name in sorted(set(om) & set(nm)):
            a, b = om[name], nm[name]
            loc = f"{svc}/{name}"
            if a.get("kind") != b.get("kind"):
                self.add(True, "METHOD_KIND_CHANGED", loc, f"kind {a.get('kind')} became {b.get('kind')}")
            if a.get("delivery") != b.get("delivery"):
                self.add(
                    True,
                    "METHOD_DELIVERY_CHANGED",
                    loc,
                    f"delivery {a.get('delivery')} became {b.get('delivery')}",
                )
            if a.get("id") != b.get("id"):
                self.add(True, "METHOD_ID_CHANGED", loc, f"method id {a.get('id')} became {b.get('id')}")
            self.compare(a.get("request", {}), b.get("request", {}), f"{loc} request", REQUEST)
            self.compare(a.get("response", {}), b.get("response", {}), f"{loc} response", RESPONSE)
        oe, ne = old.get("events", {}), new.get("events", {})
        for name in sorted(set(oe) - set(ne)):
            self.add(True, "EVENT_REMOVED", f"event {name}", "event removed")
        for name in sorted(set(ne) - set(oe)):
            self.add(False, "EVENT_ADDED", f"event {name}", "new event")
        for name in sorted(set(oe) & set(ne)):
            a, b = oe[name], ne[name]
            if a.get("delivery") != b.get("delivery"):
                self.add(
                    True,
                    "EVENT_DELIVERY_CHANGED",
                    f"event {name}",
                    f"delivery {a.get('delivery')} became {b.get('delivery')}",
                )
            if a.get("key") != b.get("key"):
                self.add(
                    True,
                    "EVENT_KEY_CHANGED",
                    f"event {name}",
                    f"latest-wins key {a.get('key') or 'none'} became {b.get('key') or 'none'}",
                )
            if a.get("lane") != b.get("lane"):
                self.add(
                    False,
                    "EVENT_LANE_CHANGED",
                    f"event {name}",
                    f"lane {a.get('lane') or 'default'} became {b.get('lane') or 'default'}",
                )
            self.compare(a.get("schema", {}), b.get("schema", {}), f"event {name}", RESPONSE)
        ot, nt = old.get("topics", {}), new.get("topics", {})
        for name in sorted(set(ot) - set(nt)):
            self.add(True, "TOPIC_REMOVED", f"topic {name}", "topic removed")
        for name in sorted(set(nt) - set(ot)):
            self.add(False, "TOPIC_ADDED", f"topic {name}", "new topic")
        for name in sorted(set(ot) & set(nt)):
            a_ev, b_ev = set(ot[name].get("events", ())), set(nt[name].get("events", ()))
            for ev in sorted(a_ev - b_ev):
                self.add(True, "TOPIC_EVENT_REMOVED", f"topic {name}", f"no longer carries {ev}")
            for ev in sorted(b_ev - a_ev):
                self.add(False, "TOPIC_ADDED", f"topic {name}", f"now also carries {ev}")
        return sorted(self.changes.values(), key=lambda c: (not c.breaking, c.location, c.rule))


def check(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every difference from ``old`` to ``new`` (both validated documents), breaking ones first."""
    return _Checker(old, new).run()


def breaking(changes: list[Change]) -> list[Change]:
    """The breaking ones."""
    return [c for c in changes if c.breaking]


def check_sets(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[Change]:
    """Compare two sets of documents keyed by service name (e.g. two ``idl/`` folders)."""
    out: list[Change] = []
    for name in sorted(set(old) - set(new)):
        out.append(Change(True, "SERVICE_REMOVED", name, "service removed"))
    for name in sorted(set(new) - set(old)):
        out.append(Change(False, "SERVICE_ADDED", name, "new service"))
    for name in sorted(set(old) & set(new)):
        out.extend(check(old[name], new[name]))
    return sorted(out, key=lambda c: (not c.breaking, c.location, c.rule))
