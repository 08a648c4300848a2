"""IDL documents of events with a latest-wins key and a lane: exported only when declared, and
generated back into ``@kcprpc.event(..., key=, lane=)``."""

from __future__ import annotations

import json

from pydantic import BaseModel

import kcprpc
from kcprpc.idl import export_service, loads_document
from kcprpc.idl.gen import generate_python
from kcprpc.service import event_send


@kcprpc.event("lanes.moved", delivery="unreliable", key="entity", lane="state")
class Moved(BaseModel):
    entity: int
    x: float


@kcprpc.event("lanes.said")
class Said(BaseModel):
    text: str


class Arena(kcprpc.Service, name="lanes.v1.Arena"):
    async def ping(self) -> None:
        return None


def test_export_and_generate_keep_the_key_and_lane() -> None:
    doc = export_service(Arena, events=[Moved, Said])
    assert doc["events"]["lanes.moved"]["key"] == "entity"
    assert doc["events"]["lanes.moved"]["lane"] == "state"
    assert "key" not in doc["events"]["lanes.said"] and "lane" not in doc["events"]["lanes.said"]
    loads_document(json.dumps(doc))  # the format accepts them
    code = generate_python(doc)
    assert "kcprpc.event('lanes.moved', delivery='unreliable', key='entity', lane='state')" in code
    assert "kcprpc.event('lanes.said', delivery='reliable')(" in code
    ns: dict[str, object] = {}
    exec(compile(code, "<generated>", "exec"), ns)
    assert event_send("lanes.moved") == ("entity", "state")
