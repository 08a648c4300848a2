"""gen-python on a service with every kind and the awkward types: the generated stub calls the real
service (in memory), and mypy --strict accepts typed use and rejects a wrong argument."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Literal

from pydantic import BaseModel, Field

import kcprpc
from kcprpc import rpc
from kcprpc.idl import export_service
from kcprpc.idl.breaking import check
from kcprpc.idl.gen import generate_python
from kcprpc.testing import pair

ROOT = Path(__file__).resolve().parents[2]


class Part(BaseModel):
    """A part."""

    label: str = Field(min_length=1, max_length=12)
    kind: Literal["bolt", "nut"] = "bolt"
    blob: bytes = b""
    size: float | None = None
    tags: dict[str, int] = {}


@kcprpc.event("shop.restocked")
class Restocked(BaseModel):
    parts: list[Part]


class Depot(kcprpc.Service, name="depot.v1.Depot"):
    """Every kind of method."""

    __rpc_events__ = (Restocked,)

    async def get(self, p: Part) -> Part:
        """Echo a part, upper-cased."""
        return p.model_copy(update={"label": p.label.upper()})

    async def many(self, n: int) -> AsyncIterator[Part]:
        for i in range(n):
            yield Part(label=f"p{i}")

    async def weigh(self, parts: AsyncIterator[Part]) -> float:
        return sum([(p.size or 0.0) async for p in parts])

    async def relabel(self, parts: AsyncIterator[Part]) -> AsyncIterator[str]:
        async for p in parts:
            yield p.label[::-1]

    @rpc.notify(name="drop-it", delivery="reliable")
    async def drop(self, p: Part) -> None:
        self.dropped = p

    async def count(self) -> dict[str, int]:
        return {"n": 1}


def _load(tmp_path: Path, name: str) -> tuple[ModuleType, Path]:
    path = tmp_path / f"{name}.py"
    path.write_text(generate_python(export_service(Depot)))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod, path


async def test_generated_stub_calls_every_kind(tmp_path: Path) -> None:
    gen, _ = _load(tmp_path, "depot_gen_calls")
    assert generate_python(export_service(Depot)) == generate_python(export_service(Depot))
    depot = Depot()
    async with pair([depot]) as p:
        stub = p.client.stub(gen.Depot)
        got = await stub.get(gen.Part(label="ab", kind="nut", blob=b"\x00\xff", size=1.5, tags={"a": 1}))
        assert (
            isinstance(got, gen.Part) and got.label == "AB" and got.blob == b"\x00\xff" and got.kind == "nut"
        )
        assert [x.label async for x in stub.many(3)] == ["p0", "p1", "p2"]

        async def parts() -> AsyncIterator[object]:
            for s in (1.0, 2.5):
                yield gen.Part(label="x", size=s)

        assert await stub.weigh(parts()) == 3.5
        assert [x async for x in stub.relabel(parts())] == ["x", "x"]
        await stub.drop_it(gen.Part(label="gone"))
        assert await stub.count() == {"n": 1}
        assert depot.dropped.label == "gone"  # reliable notify: arrived before the next call's reply
    again = export_service(gen.Depot)
    assert again["methods"]["drop-it"]["delivery"] == "reliable"
    assert not [c for c in check(export_service(Depot), again) if c.breaking]


def test_generated_code_type_checks(tmp_path: Path) -> None:
    _, path = _load(tmp_path, "depot_gen_types")
    (tmp_path / "good.py").write_text(
        "from __future__ import annotations\n"
        "from collections.abc import AsyncIterator\n"
        "import kcprpc\n"
        "from depot_gen_types import Depot, Part\n\n\n"
        "async def use(client: kcprpc.Client) -> str:\n"
        "    depot = client.stub(Depot)\n"
        "    p = await depot.get(Part(label='a'))\n"
        "    n: float = await depot.weigh(depot_parts())\n"
        "    return p.label + str(n)\n\n\n"
        "async def depot_parts() -> AsyncIterator[Part]:\n"
        "    yield Part(label='b')\n"
    )
    (tmp_path / "bad.py").write_text(
        "import kcprpc\nfrom depot_gen_types import Depot\n\n\n"
        "async def use(client: kcprpc.Client) -> None:\n"
        "    await client.stub(Depot).get('not a part')\n"
    )
    cfg = tmp_path / "mypy.ini"
    cfg.write_text("[mypy]\nstrict = True\n\n[mypy-msgpack.*]\nignore_missing_imports = True\n")

    def mypy(*files: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", str(cfg), "--no-incremental", *files],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
            env={"MYPYPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip

    r = mypy(path.name, "good.py")
    assert r.returncode == 0, r.stdout
    r = mypy(path.name, "bad.py")
    assert r.returncode == 1 and 'Argument 1 to "get" of "Depot" has incompatible type "str"' in r.stdout
