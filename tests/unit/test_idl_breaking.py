"""`kcprpc idl check`: one pair of documents per breaking rule, and safe changes that pass."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import BaseModel, Field

import kcprpc
from kcprpc import rpc
from kcprpc.idl import dumps, export_service, validate_document
from kcprpc.idl.breaking import Change, check

ROOT = Path(__file__).resolve().parents[2]


class Req(BaseModel):
    name: str = Field(max_length=16)
    level: int = Field(ge=0, le=10)
    mode: Literal["a", "b"] = "a"
    note: str | None = None


class Resp(BaseModel):
    id: int
    status: Literal["ok", "busy"]
    label: str = Field(max_length=8)


@kcprpc.event("t.ev")
class Ev(BaseModel):
    n: int


class Svc(kcprpc.Service, name="t.v1.Svc"):
    __rpc_topics__: ClassVar[dict[str, tuple[type, ...]]] = {"news": (Ev,)}

    async def get(self, r: Req) -> Resp:
        raise NotImplementedError

    async def feed(self, r: Req) -> AsyncIterator[Resp]:
        yield Resp(id=1, status="ok", label="")

    @rpc.notify
    async def poke(self, r: Req) -> None:
        return None


BASE: dict[str, Any] = json.loads(dumps(export_service(Svc)))

Mutation = Callable[[dict[str, Any]], None]


def _req(d: dict[str, Any]) -> dict[str, Any]:
    return d["$defs"]["Req"]["properties"]  # type: ignore[no-any-return]


def _resp(d: dict[str, Any]) -> dict[str, Any]:
    return d["$defs"]["Resp"]["properties"]  # type: ignore[no-any-return]


def _set(d: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split("/")
    node = d
    for p in parents:
        node = node[p]
    if value is _DEL:
        del node[last]
    else:
        node[last] = value


_DEL = object()


def _rename_field(d: dict[str, Any]) -> None:
    props = _req(d)
    props["title"] = props.pop("name")
    d["$defs"]["Req"]["required"] = ["title", "level"]


def _retype(d: dict[str, Any]) -> None:
    _req(d)["level"] = {"type": "string", "title": "Level"}


def _became_required(d: dict[str, Any]) -> None:
    d["$defs"]["Req"]["required"].append("note")


def _add_required(d: dict[str, Any]) -> None:
    _req(d)["token"] = {"type": "string"}
    d["$defs"]["Req"]["required"].append("token")


def _became_optional(d: dict[str, Any]) -> None:
    d["$defs"]["Resp"]["required"].remove("label")


def _rename_service(d: dict[str, Any]) -> None:
    d.update(name="t.v2.Svc", package="t.v2")
    for name, m in d["methods"].items():
        m["wire_name"] = f"t.v2.Svc/{name}"


def _with_id(d: dict[str, Any], n: int) -> None:
    d["methods"]["get"]["id"] = n


CASES: list[tuple[str, Mutation, str, Mutation | None]] = [
    # (rule, mutation of NEW, expected location, optional mutation of OLD)
    ("SERVICE_RENAMED", lambda d: _rename_service(d), "t.v2.Svc", None),
    ("PROTOCOL_VERSION_CHANGED", lambda d: d.update(protocol_version=2), "t.v1.Svc", None),
    ("METHOD_REMOVED", lambda d: d["methods"].pop("feed"), "t.v1.Svc/feed", None),
    ("METHOD_KIND_CHANGED", lambda d: _set(d, "methods/feed/kind", "unary"), "t.v1.Svc/feed", None),
    ("METHOD_DELIVERY_CHANGED", lambda d: _set(d, "methods/poke/delivery", "reliable"), "t.v1.Svc/poke", None),
    ("METHOD_ID_CHANGED", lambda d: _with_id(d, 2), "t.v1.Svc/get", lambda d: _with_id(d, 1)),
    ("EVENT_REMOVED", lambda d: (d["events"].pop("t.ev"), d.update(topics={})), "event t.ev", None),
    ("EVENT_DELIVERY_CHANGED", lambda d: _set(d, "events/t.ev/delivery", "unreliable"), "event t.ev", None),
    ("EVENT_KEY_CHANGED", lambda d: _set(d, "events/t.ev/key", "n"), "event t.ev", None),
    ("EVENT_KEY_CHANGED", lambda d: d["events"]["t.ev"].pop("key"), "event t.ev",
     lambda d: _set(d, "events/t.ev/key", "n")),
    ("TOPIC_REMOVED", lambda d: d.update(topics={}), "topic news", None),
    ("TOPIC_EVENT_REMOVED", lambda d: _set(d, "topics/news/events", []), "topic news", None),
    ("FIELD_REMOVED", lambda d: _req(d).pop("note"), "Req.note", None),
    ("FIELD_RENAMED", _rename_field, "Req.name", None),
    ("FIELD_TYPE_CHANGED", _retype, "Req.level", None),
    ("FIELD_BECAME_REQUIRED", _became_required, "Req.note", None),
    ("FIELD_ADDED_REQUIRED", _add_required, "Req.token", None),
    ("FIELD_BECAME_OPTIONAL", _became_optional, "Resp.label", None),
    ("ENUM_VALUE_REMOVED", lambda d: _set(d, "$defs/Req/properties/mode/enum", ["a"]), "Req.mode", None),
    ("ENUM_VALUE_ADDED", lambda d: _set(d, "$defs/Resp/properties/status/enum", ["ok", "busy", "gone"]),
     "Resp.status", None),
    ("CONSTRAINT_NARROWED", lambda d: _set(d, "$defs/Req/properties/name/maxLength", 8), "Req.name", None),
    ("CONSTRAINT_NARROWED", lambda d: _set(d, "$defs/Req/properties/level/minimum", 1), "Req.level", None),
    ("CONSTRAINT_NARROWED", lambda d: _set(d, "$defs/Req/properties/name/pattern", "^[a-z]+$"), "Req.name", None),
    ("CONSTRAINT_WIDENED", lambda d: _set(d, "$defs/Resp/properties/label/maxLength", 64), "Resp.label", None),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "mutate", "where", "mutate_old"), CASES)
def test_each_breaking_rule(rule: str, mutate: Mutation, where: str, mutate_old: Mutation | None) -> None:
    old, new = copy.deepcopy(BASE), copy.deepcopy(BASE)
    if mutate_old is not None:
        mutate_old(old)
        mutate_old(new)
    mutate(new)
    validate_document(old)
    validate_document(new)
    changes = check(old, new)
    hits = [c for c in changes if c.rule == rule]
    assert hits, changes
    assert all(c.breaking for c in hits)
    assert any(c.location == where for c in hits), hits


def test_no_change_no_report() -> None:
    assert check(BASE, copy.deepcopy(BASE)) == []


# A real code change that old peers tolerate: new optional fields, a new method, a new event and
# topic, a looser request constraint, a stricter response constraint, a renamed message class.


class Req2(BaseModel):
    name: str = Field(max_length=32)  # wider request constraint: safe
    level: int = Field(ge=0, le=10)
    mode: Literal["a", "b", "c"] = "a"  # new enum value in a request: safe
    note: str | None = None
    lang: str = "en"  # new optional field


class Resp2(BaseModel):
    id: int
    status: Literal["ok", "busy"]
    label: str = Field(max_length=4)  # stricter response constraint: safe
    extra: int = 0  # new field in a response


@kcprpc.event("t.ev2")
class Ev2(BaseModel):
    m: int


class Svc2(kcprpc.Service, name="t.v1.Svc"):
    __rpc_topics__: ClassVar[dict[str, tuple[type, ...]]] = {"news": (Ev, Ev2), "weather": (Ev2,)}

    async def get(self, r: Req2) -> Resp2:
        raise NotImplementedError

    async def feed(self, r: Req2) -> AsyncIterator[Resp2]:
        yield Resp2(id=1, status="ok", label="")

    @rpc.notify
    async def poke(self, r: Req2) -> None:
        return None

    async def extra(self) -> int:  # new method
        return 0


def test_safe_changes_pass() -> None:
    new = export_service(Svc2)
    changes = check(BASE, new)
    assert not [c for c in changes if c.breaking], changes
    rules = {c.rule for c in changes}
    assert {"METHOD_ADDED", "EVENT_ADDED", "TOPIC_ADDED", "FIELD_ADDED", "CONSTRAINT_WIDENED"} <= rules
    assert {"CONSTRAINT_NARROWED", "ENUM_VALUE_ADDED"} <= rules  # reported, but safe in their direction
    added = [c for c in changes if c.rule == "FIELD_ADDED"]
    assert {c.location for c in added} == {"Req2.lang", "Resp2.extra"}


def test_optional_widening_of_a_request_type_is_safe_but_not_of_a_response() -> None:
    old, new = copy.deepcopy(BASE), copy.deepcopy(BASE)
    _req(new)["level"] = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 10}, {"type": "null"}]}
    assert not [c for c in check(old, new) if c.breaking]
    new = copy.deepcopy(BASE)
    _resp(new)["id"] = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    hits = [c for c in check(old, new) if c.breaking]
    assert [c.rule for c in hits] == ["FIELD_TYPE_CHANGED"] and hits[0].location == "Resp.id"


class Node(BaseModel):
    value: int
    children: list[Node] = []


def test_recursive_messages_terminate() -> None:
    class Tree(kcprpc.Service, name="t.Tree"):
        async def put(self, n: Node) -> None:
            return None

    doc = export_service(Tree)
    new = copy.deepcopy(doc)
    new["$defs"]["Node"]["properties"]["value"]["maximum"] = 3
    assert [c.rule for c in check(doc, new)] == ["CONSTRAINT_NARROWED"]


def test_cli_check_exit_codes_and_output(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(dumps(BASE))
    safe = tmp_path / "safe.json"
    safe.write_text(dumps(export_service(Svc2)))
    broken_doc = copy.deepcopy(BASE)
    broken_doc["methods"].pop("feed")
    _set(broken_doc, "$defs/Req/properties/name/maxLength", 4)
    broken = tmp_path / "broken.json"
    broken.write_text(dumps(broken_doc))

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kcprpc", "idl", "check", *argv],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    r = run(str(old), str(safe))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 breaking change(s)" in r.stdout and "safe METHOD_ADDED: t.v1.Svc/extra" in r.stdout
    r = run(str(old), str(broken))
    assert r.returncode == 1
    assert "BREAKING METHOD_REMOVED: t.v1.Svc/feed: method removed" in r.stdout
    assert "BREAKING CONSTRAINT_NARROWED: Req.name: maxLength 16 -> 4" in r.stdout
    assert "2 breaking change(s)" in r.stdout
    r = run(str(old), str(broken), "--json")
    assert r.returncode == 1
    got = [Change(**c) for c in json.loads(r.stdout)]
    assert {c.rule for c in got if c.breaking} == {"METHOD_REMOVED", "CONSTRAINT_NARROWED"}


def test_cli_check_folders_and_git_refs(tmp_path: Path) -> None:
    """`kcprpc idl check git:REF:idl idl`: what a CI job runs against the main branch."""
    import os

    repo = tmp_path / "repo"
    (repo / "idl").mkdir(parents=True)
    (repo / "idl" / "svc.json").write_text(dumps(BASE))
    (repo / "idl" / "schema.json").write_text("{}")  # the format's schema is skipped
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip

    def sh(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=repo, capture_output=True, text=True, timeout=60, check=False, env=env
        )

    assert sh("git", "init", "-q").returncode == 0
    assert sh("git", "add", "idl").returncode == 0
    assert sh("git", "commit", "-q", "-m", "v1").returncode == 0, "git commit failed"
    new = copy.deepcopy(BASE)
    new["methods"].pop("poke")
    (repo / "idl" / "svc.json").write_text(dumps(new))
    other = dumps(export_service(Svc2)).replace("t.v1.Svc", "t.v1.Other").replace('"Svc"', '"Other"')
    (repo / "idl" / "other.json").write_text(other)

    kcprpc = (sys.executable, "-m", "kcprpc", "idl", "check")
    r = sh(*kcprpc, "git:HEAD:idl", "idl")
    assert r.returncode == 1, r.stderr
    assert (
        "BREAKING METHOD_REMOVED: t.v1.Svc/poke" in r.stdout and "safe SERVICE_ADDED: t.v1.Other" in r.stdout
    )
    r = sh(*kcprpc, "git:HEAD:idl/svc.json", "idl/svc.json")
    assert r.returncode == 1 and "METHOD_REMOVED" in r.stdout
    (repo / "idl" / "svc.json").unlink()
    r = sh(*kcprpc, "git:HEAD:idl", "idl")
    assert r.returncode == 1 and "BREAKING SERVICE_REMOVED: t.v1.Svc: service removed" in r.stdout
    r = sh(*kcprpc, "git:nope:idl", "idl")
    assert r.returncode == 2 and r.stderr.startswith("kcprpc: git ") and "Traceback" not in r.stderr


def test_lane_change_is_reported_as_safe() -> None:
    old, new = copy.deepcopy(BASE), copy.deepcopy(BASE)
    _set(new, "events/t.ev/lane", "chat")
    validate_document(new)
    changes = check(old, new)
    assert [(c.rule, c.breaking, c.location) for c in changes] == [("EVENT_LANE_CHANGED", False, "event t.ev")]
    assert "lane default became chat" in changes[0].message
