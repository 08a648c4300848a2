"""Export -> generate -> call: a client made only from the game's interface document plays against
the real game server over loopback KCP, with typed calls and typed events."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import ValidationError

import kcprpc
from kcprpc.idl import dumps, export_service, load_document
from kcprpc.idl.breaking import check
from kcprpc.idl.gen import generate_python
from kcprpc.idl.registry import TARGETS

ROOT = Path(__file__).resolve().parents[2]


def _import(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


async def test_export_generate_call_round_trip(tmp_path: Path) -> None:
    from examples.game.service import KEY, GameService, MatchState, make_server
    from kcprpc.state import client_state

    doc_path = tmp_path / "game.json"
    doc_path.write_text(dumps(export_service(GameService)))
    out = tmp_path / "game_client_models.py"
    r = subprocess.run(
        [sys.executable, "-m", "kcprpc", "idl", "gen-python", str(doc_path), "-o", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out.read_text() == generate_python(load_document(doc_path))  # deterministic
    gen = _import(out, "game_client_models_rt")
    assert "examples" not in out.read_text()  # nothing of the server's package

    server, world = make_server("127.0.0.1", 0)
    host, port = await server.start()
    try:
        async with kcprpc.connect(host, port, key=KEY) as client:
            game = client.stub(gen.Game, timeout=5.0)
            with pytest.raises(kcprpc.RpcError) as ei:
                await game.move(gen.MoveRequest(dx=1, dy=1))
            assert ei.value.status is kcprpc.Status.FAILED_PRECONDITION
            with pytest.raises(ValidationError):  # the generated model carries the constraints
                gen.JoinRequest(room="", name="x")
            view = client_state(client, MatchState, "state:lobby")  # the match's state: kcprpc.state
            lines: asyncio.Queue[object] = asyncio.Queue()
            states: asyncio.Queue[object] = asyncio.Queue()
            client.on(gen.ChatLine, lines.put_nowait)
            view.on_state(states.put_nowait)
            reply = await game.join(gen.JoinRequest(room="lobby", name="gen"))
            assert isinstance(reply, gen.JoinReply) and reply.room == "lobby" and reply.tick_hz == 20
            assert reply.state == view.name
            moved = await game.move(gen.MoveRequest(dx=2, dy=-3))
            assert isinstance(moved, gen.MoveReply) and (moved.x, moved.y) == (reply.x + 2, reply.y - 3)

            await game.say(gen.ChatRequest(text="gg"))  # a typed event back, on the chat lane
            line = await asyncio.wait_for(lines.get(), 5)
            assert isinstance(line, gen.ChatLine) and (line.player_id, line.text) == (reply.player_id, "gg")

            async def applied() -> None:
                seq = 0
                while view.extra is None or view.extra < 1:  # unreliable: resend until acked
                    seq += 1
                    await game.position(gen.PositionUpdate(seq=seq, x=10.0, y=20.0))
                    await asyncio.wait_for(states.get(), 5)  # paced by the 20 Hz states

            await asyncio.wait_for(applied(), 10)
            assert view.state is not None and view.state.players[str(reply.player_id)].x == 10.0
            assert world.positions_applied >= 1
            await game.leave()
    finally:
        await server.shutdown(grace=0.5)


def test_generated_stubs_export_the_same_contract(tmp_path: Path) -> None:
    """For every checked-in document: generate, import, export the stub again: nothing breaks."""
    for i, name in enumerate(sorted(TARGETS)):
        doc = load_document(ROOT / "idl" / f"{name}.json")
        path = tmp_path / f"gen_{i}.py"
        path.write_text(generate_python(doc))
        mod = _import(path, f"kcprpc_gen_contract_{i}")
        stubs = [
            v for v in vars(mod).values()
            if isinstance(v, type) and issubclass(v, kcprpc.Service) and v.__module__ == mod.__name__
        ]  # fmt: skip
        assert len(stubs) == 1, name
        again = export_service(stubs[0])
        changes = check(doc, again)
        assert not [c for c in changes if c.breaking], (name, changes)
        assert set(again["methods"]) == set(doc["methods"])
        assert again["events"].keys() == doc["events"].keys() and again["topics"] == doc["topics"]
