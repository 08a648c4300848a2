"""The reflection service: on by default, switchable off, documents identical to the checked-in ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.game.service import GameService
from examples.quickstart.service import Greeter
from kcprpc import RpcError, Status
from kcprpc.reflection import GetDocumentRequest, ReflectionService
from kcprpc.testing import pair

ROOT = Path(__file__).resolve().parents[2]


async def test_list_and_get_documents() -> None:
    async with pair([Greeter(), GameService()]) as p:
        refl = p.client.stub(ReflectionService, timeout=5)
        listed = await refl.ListServices()
        names = [s.name for s in listed.services]
        assert names == sorted(names)
        assert {
            "quickstart.Greeter",
            "game.v1.Game",
            "kcprpc.Health",
            "kcprpc.Push",
            "kcprpc.Reflection",
        } <= set(names)
        methods = {s.name: s.methods for s in listed.services}
        assert methods["kcprpc.Reflection"] == ["GetDocument", "ListServices"]
        assert methods["game.v1.Game"] == ["join", "leave", "move", "position", "say"]
        for name in ("quickstart.Greeter", "game.v1.Game", "kcprpc.Health", "kcprpc.Reflection"):
            doc = await refl.GetDocument(GetDocumentRequest(service=name))
            assert doc.document == (ROOT / "idl" / f"{name}.json").read_text(), name
        with pytest.raises(RpcError) as ei:
            await refl.GetDocument(GetDocumentRequest(service="no.Such"))
        assert ei.value.status is Status.NOT_FOUND


async def test_reflection_can_be_switched_off() -> None:
    async with pair([Greeter()], reflection=False) as p:
        assert not any(w.startswith("kcprpc.Reflection/") for w in p.server.methods)
        with pytest.raises(RpcError) as ei:
            await p.client.stub(ReflectionService, timeout=5).ListServices()
        assert ei.value.status is Status.UNIMPLEMENTED
        assert await p.client.health() == "SERVING"
