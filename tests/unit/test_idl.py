"""Interface documents: deterministic export, the checked-in idl/ folder, the format's own schema,
clear errors for malformed documents."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

import kcprpc
from kcprpc import rpc
from kcprpc.idl import DocumentError, dumps, export_service, format_schema, load_document, loads_document
from kcprpc.idl.registry import TARGETS, render_all

ROOT = Path(__file__).resolve().parents[2]
IDL = ROOT / "idl"


class Item(BaseModel):
    """A thing."""

    name: str = Field(max_length=8)
    tags: list[str] = []
    color: Literal["red", "green"] = "red"
    blob: bytes = b""


@kcprpc.event("shop.sold", delivery="unreliable")
class Sold(BaseModel):
    item: Item
    price: int = Field(ge=0)


class Shop(kcprpc.Service, name="shop.v2.Shop"):
    """Buy and sell."""

    __rpc_events__ = (Sold,)
    __rpc_topics__: ClassVar[dict[str, tuple[type, ...]]] = {"prices:{region}": (Sold,)}

    async def buy(self, item: Item) -> int:
        """Buy one item."""
        return 1

    async def browse(self, q: str) -> AsyncIterator[Item]:
        yield Item(name=q)

    async def upload(self, items: AsyncIterator[Item]) -> int:
        return 0

    async def chat(self, lines: AsyncIterator[str]) -> AsyncIterator[str]:
        async for x in lines:
            yield x

    @rpc.notify(name="ping-me")
    async def ping(self, n: int) -> None:
        return None

    async def nothing(self) -> None:
        return None


def test_export_shape() -> None:
    doc = export_service(Shop)
    assert doc["name"] == "shop.v2.Shop" and doc["package"] == "shop.v2" and doc["service"] == "Shop"
    assert doc["protocol_version"] == kcprpc.codec.PROTOCOL_VERSION
    assert doc["description"] == "Buy and sell."
    m = doc["methods"]
    assert {k: (v["kind"], v["delivery"]) for k, v in m.items()} == {
        "buy": ("unary", "reliable"),
        "browse": ("server_stream", "reliable"),
        "upload": ("client_stream", "reliable"),
        "chat": ("bidi", "reliable"),
        "ping-me": ("notify", "unreliable"),
        "nothing": ("unary", "reliable"),
    }
    assert m["ping-me"]["wire_name"] == "shop.v2.Shop/ping-me"
    assert m["buy"]["request"] == {"$ref": "#/$defs/Item"} and m["buy"]["response"] == {"type": "integer"}
    assert m["buy"]["description"] == "Buy one item."
    assert m["nothing"]["request"] == {"type": "null"}
    assert m["chat"]["request"] == {"type": "string"}
    assert doc["events"]["shop.sold"]["delivery"] == "unreliable"
    assert doc["events"]["shop.sold"]["schema"] == {"$ref": "#/$defs/Sold"}
    assert doc["topics"] == {"prices:{region}": {"events": ["shop.sold"]}}
    item = doc["$defs"]["Item"]  # shared: used by requests, responses and the event
    assert item["properties"]["name"]["maxLength"] == 8
    assert item["properties"]["color"]["enum"] == ["red", "green"]
    assert doc["$defs"]["Sold"]["properties"]["item"] == {"$ref": "#/$defs/Item"}


def test_export_is_deterministic_across_processes() -> None:
    here = dumps(export_service(TARGETS_CLS()))
    assert here == dumps(export_service(TARGETS_CLS()))
    out = subprocess.run(
        [sys.executable, "-m", "kcprpc", "idl", "export", "examples.game.service:GameService"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout == (IDL / "game.v1.Game.json").read_text()
    assert "timestamp" not in out.stdout


def test_export_command_writes_files(tmp_path: Path) -> None:
    target = tmp_path / "g.json"
    for argv in (
        ["examples.quickstart.service:Greeter", "-o", str(target)],
        ["examples.quickstart.service:Greeter", "kcprpc.health:HealthService", "-o", str(tmp_path / "out")],
        ["--all", "-o", str(tmp_path / "all")],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "kcprpc", "idl", "export", *argv],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    assert target.read_text() == (IDL / "quickstart.Greeter.json").read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "kcprpc.Health.json",
        "quickstart.Greeter.json",
    ]
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == sorted(p.name for p in IDL.glob("*.json"))


def TARGETS_CLS() -> type:
    from examples.game.service import GameService

    return GameService


def test_checked_in_documents_match_the_code() -> None:
    """CI's regenerate-and-diff: `kcprpc idl export --all` must have been run after any change."""
    files = render_all()
    assert set(files) == {f"{n}.json" for n in TARGETS} | {"schema.json"}
    stale = [name for name, text in files.items() if (IDL / name).read_text(encoding="utf-8") != text]
    assert not stale, f"out of date, run `kcprpc idl export --all`: {stale}"
    check = subprocess.run(
        [sys.executable, "-m", "kcprpc", "idl", "export", "--all", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_every_document_validates_against_the_format_schema() -> None:
    schema = json.loads((IDL / "schema.json").read_text())
    assert schema == format_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    docs = [json.loads(p.read_text()) for p in sorted(IDL.glob("*.json")) if p.name != "schema.json"]
    docs.append(export_service(Shop))
    assert len(docs) == len(TARGETS) + 1
    for doc in docs:
        validator.validate(doc)
        # every message schema is itself valid JSON Schema, with $defs resolvable
        for m in doc["methods"].values():
            for part in ("request", "response"):
                jsonschema.Draft202012Validator.check_schema({**m[part], "$defs": doc["$defs"]})
    bad = dict(docs[0])
    bad["methods"] = {"x": {"kind": "sideways"}}
    assert not validator.is_valid(bad)


def test_loaded_documents_round_trip() -> None:
    for p in IDL.glob("*.json"):
        if p.name != "schema.json":
            assert dumps(load_document(p)) == p.read_text()


GOOD = json.loads(dumps(export_service(Shop)))


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "a JSON object"),
        ('{"format": "openapi"}', "not a kcprpc interface document"),
        (json.dumps({**GOOD, "format_version": 9}), "format_version 9 is not supported"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "methods"}), "methods: Field required"),
        (json.dumps({**GOOD, "methods": {"buy": {**GOOD["methods"]["buy"], "kind": "sideways"}}}), "methods/buy/kind"),
        (json.dumps({**GOOD, "methods": {"buy": {**GOOD["methods"]["buy"], "request": {"$ref": "#/$defs/Nope"}}}}),
         "does not name an entry of $defs"),
        (json.dumps({**GOOD, "methods": {"buy": {**GOOD["methods"]["buy"], "wire_name": "x/y"}}}),
         "wire_name must be"),
        (json.dumps({**GOOD, "name": "other.Shop"}), "is not package + '.' + service"),
        (json.dumps({**GOOD, "topics": {"t": {"events": ["ghost"]}}}), "'ghost' is not declared"),
        (json.dumps({**GOOD, "surprise": 1}), "surprise: Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_malformed_documents_give_clear_errors(text: str, expect: str) -> None:
    with pytest.raises(DocumentError) as ei:
        loads_document(text, "doc.json")
    msg = str(ei.value)
    assert msg.startswith("doc.json: ") and expect in msg, msg


def test_malformed_document_on_the_command_line_is_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "kcprpc-idl", "format_version": 1, "name": 3}')
    missing = tmp_path / "missing.json"
    good = IDL / "game.v1.Game.json"
    for argv in (
        ["idl", "check", str(bad), str(good)],
        ["idl", "check", str(good), str(missing)],
        ["idl", "validate", str(bad)],
        ["idl", "gen-python", str(bad)],
        ["idl", "export", "no.such.module:Thing"],
        ["describe", "127.0.0.1:1", "--idl", str(bad)],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "kcprpc", *argv],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert r.returncode == 2, (argv, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.startswith("kcprpc: "), r.stderr
    assert "name: Input should be a valid string" in subprocess.run(
        [sys.executable, "-m", "kcprpc", "idl", "validate", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    ).stderr  # fmt: skip


def test_events_and_topics_declared_as_class_keywords() -> None:
    class Kw(kcprpc.Service, name="shop.v2.Shop", events=[Sold], topics={"prices:{region}": [Sold]}):
        """Buy and sell."""

        async def buy(self, item: Item) -> int:
            return 1

    class Sub(Kw):  # inherited
        pass

    assert Kw.__rpc_events__ == (Sold,) and Kw.__rpc_topics__ == {"prices:{region}": (Sold,)}
    for cls in (Kw, Sub):
        doc = export_service(cls)
        assert doc["events"] == export_service(Shop)["events"]
        assert doc["topics"] == {"prices:{region}": {"events": ["shop.sold"]}}
